"""`voice train lm` and `voice eval lm` end to end on a test-sized corpus: train, resume, DDP on gloo, evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from voice.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lm") / "corpus"
    assert main(["data", "build", "--small", "--out", str(out), "--no-progress"]) == 0
    assert main(["codec", "tokenize", "--corpus", str(out)]) == 0
    return out


def _history(run: Path) -> list[dict]:
    return json.loads((run / "checkpoint" / "history.json").read_text())


def test_train_resumes_and_evaluates(corpus: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    args = ["train", "lm", "--corpus", str(corpus), "--preset", "tiny", "--out", str(run), "--typed-batch", "3",
            "--answer-noise", "0.1"]
    assert main([*args, "--steps", "10"]) == 0
    assert [h["step"] for h in _history(run)] == [10]
    import torch

    recipe = torch.load(run / "checkpoint" / "trainer.pt", weights_only=False)["train_config"]
    assert recipe["answer_noise"] == 0.1
    assert main([*args, "--steps", "20"]) == 0                    # resumes at 10, goes on to 20
    history = _history(run)
    assert [h["step"] for h in history] == [10, 20]
    assert {"val_loss", "val_text_acc", "val_audio_acc", "typed_loss"} <= set(history[-1])
    assert "3 new typed dialogues per step" in capsys.readouterr().out
    assert main(["eval", "lm", str(run / "checkpoint"), "--corpus", str(corpus), "--limit", "2",
                 "--hearing-limit", "2", "--speed", "--json", "--worst", str(tmp_path / "worst"),
                 "--real-speech", "--real-limit", "1", "--text-limit", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["answers"]["n"] == 2 and report["hearing"]["n"] == 2
    typed = report["typed"]
    assert typed["n"] == 3 and sum(g["n"] for g in typed["per_intent"].values()) == 3
    assert all({"question", "text", "expected", "ok"} <= set(w) for w in typed["wrong"])
    assert {r["sessions"] for r in report["speed"]} == {1, 4}
    one = report["speed"][0]                 # the first frame over several turns: the median and its spread
    assert one["first_frame_ms_min"] <= one["first_frame_ms"] <= one["first_frame_ms_max"] and one["first_frame_turns"] >= 1
    assert all(r["torch_threads"] == 1 for r in report["speed"])      # timed as voice serve runs it
    assert (tmp_path / "worst" / "worst.json").exists()
    assert len(report["real_speech"]) == 1 and {"file", "text", "heard"} <= set(report["real_speech"][0])


def test_the_brain_trains_alone_on_typed_dialogues_then_the_full_mix_starts_from_it(corpus: Path, tmp_path: Path,
                                                                                     capsys) -> None:
    brain, full = tmp_path / "brain", tmp_path / "full"
    base = ["train", "lm", "--corpus", str(corpus), "--preset", "tiny"]
    with pytest.raises(SystemExit, match="--typed-batch"):
        main([*base, "--out", str(tmp_path / "none"), "--typed-only", "--steps", "2"])
    assert main([*base, "--out", str(brain), "--typed-only", "--typed-batch", "4", "--steps", "10"]) == 0
    out = capsys.readouterr().out
    assert "4 new typed dialogues per step and nothing else" in out
    history = _history(brain)
    assert history[-1]["step"] == 10 and not np.isnan(history[-1]["val_text_acc"])   # text targets: validated
    assert np.isnan(history[-1]["val_audio_acc"])         # validated on typed dialogues: no audio targets
    assert main([*base, "--out", str(full), "--init", str(brain / "checkpoint"), "--steps", "4"]) == 0
    assert f"starting from {brain / 'checkpoint'}" in capsys.readouterr().out
    assert not np.isnan(_history(full)[-1]["val_audio_acc"])
    # a new kind of model (here other delays) takes the brain's text ids and every weight that fits
    stair = tmp_path / "stair"
    assert main([*base, "--out", str(stair), "--init", str(brain / "checkpoint"), "--delays", "0,1,2,3,4,5,6,7",
                 "--steps", "2"]) == 0
    assert f"a new model from {brain / 'checkpoint'}: " in capsys.readouterr().out
    made = json.loads((stair / "checkpoint" / "config.json").read_text())
    assert made["delays"] == list(range(8))
    assert made["text_token_ids"] == json.loads((brain / "checkpoint" / "config.json").read_text())["text_token_ids"]


def test_a_checkpoint_for_another_codec_is_refused(corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "lm", "--corpus", str(corpus), "--preset", "tiny", "--out", str(run), "--steps", "2"]) == 0
    config = json.loads((run / "checkpoint" / "config.json").read_text())
    config["codec_id"] = "some-other-codec-k8"
    (run / "checkpoint" / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match="some-other-codec-k8"):
        main(["eval", "lm", str(run / "checkpoint"), "--corpus", str(corpus), "--limit", "1", "--hearing-limit", "0"])


def test_ddp_on_two_cpu_processes(corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "voice.cli", "train", "lm", "--corpus", str(corpus), "--preset", "tiny", "--out", str(run),
           "--steps", "6", "--eval-every", "6", "--save-every", "6", "--threads", "1", "--device", "cpu",
           "--typed-batch", "2"]   # the typed batch's backward runs under no_sync, the corpus batch's syncs both
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [h["step"] for h in _history(run)] == [6]


def test_base_starts_from_smollm2_weights() -> None:
    """--base: SmolLM2-135M's layers and text embedding rows are copied; specials and audio parts are new."""
    import torch
    from transformers import AutoModelForCausalLM

    from voice.codec.loader import load_codec
    from voice.models import resolve_model
    from voice.speechlm.cli import load_tokenizer
    from voice.speechlm.text import TextIds
    from voice.speechlm.train import build_model

    where = resolve_model("smollm2", kind="causal_lm").location
    tokenizer = load_tokenizer(where)
    codec = load_codec("compact", 4)
    model = build_model({}, TextIds(tokenizer), codec, "compact-test-k4", 4, [0, 1, 1, 1], 2, base=where)
    text_lm = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32)
    assert model.config.num_hidden_layers == text_lm.config.num_hidden_layers == 30
    n = len(tokenizer)
    torch.testing.assert_close(model.backbone.embed_tokens.weight[:n], text_lm.model.embed_tokens.weight[:n])
    torch.testing.assert_close(model.backbone.layers[7].mlp.down_proj.weight, text_lm.model.layers[7].mlp.down_proj.weight)
    assert model.backbone.embed_tokens.weight.shape[0] == model.config.vocab.text_stream_size
    torch.testing.assert_close(model.codebooks[:, :1024], torch.stack(
        [codec.quantizer.vq.layers[k]._codebook.embed for k in range(4)]))
    # the copied text LM still knows its words: its next-token guess survives inside the speech LM
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want = text_lm(ids).logits[0, -1].argmax()
        hidden = model.backbone(inputs_embeds=model.backbone.embed_tokens(ids)).last_hidden_state
        got = model.text_head(hidden)[0, -1, :n].argmax()
    assert int(got) == int(want)


def test_voice_variants_are_cached_resumably_and_feed_training(corpus: Path, tmp_path: Path, capsys) -> None:
    from voice.codec.tokenize import load_variant_index
    from voice.speechlm.data import load_dialogues

    assert main(["codec", "tokenize", "--corpus", str(corpus), "--user-variants", "2", "--limit", "4"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["encoded_now"] == 8
    assert main(["codec", "tokenize", "--corpus", str(corpus), "--user-variants", "2", "--limit", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["encoded_now"] == 0          # resumed: nothing left to do
    codec_id = first["codec_id"]
    index = load_variant_index(corpus, codec_id)
    assert len(index) == 4 and all(sorted(r["variant"] for r in rows) == [0, 1] for rows in index.values())
    with pytest.raises(ValueError, match="training splits"):
        load_dialogues(corpus, codec_id, ("test",), variants=True)
    dialogues = load_dialogues(corpus, codec_id, ("train",), variants=True)
    varied = [d for d in dialogues if d.user_variants]
    assert varied, "a dialogue whose user turns all have variants carries them"
    users = [t for t in varied[0].turns if t.role == "user"]
    assert all(len(v) == len(users) for v in varied[0].user_variants)
    assert not any(np.array_equal(v[0], users[0].codes) for v in varied[0].user_variants)
    run = tmp_path / "run"
    assert main(["train", "lm", "--corpus", str(corpus), "--preset", "tiny", "--out", str(run), "--steps", "2",
                 "--user-variants", "--mix", '{"s2t": 1}']) == 0


def test_hearing_encoder_trains_resumes_evaluates_and_feeds_the_lm(corpus: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "hearing"
    args = ["train", "hearing", "--corpus", str(corpus), "--out", str(run), "--hidden", "32", "--gru-layers", "1",
            "--batch-frames", "2000", "--eval-every", "3"]
    assert main([*args, "--steps", "3"]) == 0
    assert main([*args, "--steps", "6"]) == 0                          # resumes at 3, goes on to 6
    import torch

    history = torch.load(run / "trainer.pt", weights_only=False)["history"]
    assert [h["step"] for h in history] == [3, 6] and {"val_cer", "val_wer"} <= set(history[-1])
    capsys.readouterr()
    assert main(["eval", "hearing", str(run / "hearing.pt"), "--corpus", str(corpus), "--split", "test", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] > 0 and 0 <= report["cer"] and report["per_voice"]
    lm = tmp_path / "lm"
    assert main(["train", "lm", "--corpus", str(corpus), "--preset", "tiny", "--out", str(lm), "--steps", "2",
                 "--hearing-encoder", str(run / "hearing.pt")]) == 0
    config = json.loads((lm / "checkpoint" / "config.json").read_text())
    assert config["hearing"]["hidden"] == 32
    capsys.readouterr()
    assert main(["eval", "lm", str(lm / "checkpoint"), "--corpus", str(corpus), "--limit", "1",
                 "--hearing-limit", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hearing"]["n"] == 2
    # a new LM can take the encoder out of a saved speech LM (how the GPU script packs the shipped one)
    from voice.speechlm.hearing import HearingEncoder

    trained, carried = HearingEncoder.load(run / "hearing.pt"), HearingEncoder.load(lm / "checkpoint")
    assert trained.state_dict().keys() == carried.state_dict().keys()
    assert all(torch.equal(v, carried.state_dict()[k]) for k, v in trained.state_dict().items())
    again = tmp_path / "lm2"
    assert main(["train", "lm", "--corpus", str(corpus), "--preset", "tiny", "--out", str(again), "--steps", "2",
                 "--hearing-encoder", str(lm / "checkpoint"), "--heard-text"]) == 0
    saved = json.loads((again / "checkpoint" / "config.json").read_text())
    assert saved["hearing"] == config["hearing"] and saved["heard_text"] is True
    assert "reads its spelling" in capsys.readouterr().out
    # it hears its encoder's spelling when it answers and transcribes (voice.speechlm.heard)
    assert main(["eval", "lm", str(again / "checkpoint"), "--corpus", str(corpus), "--limit", "1",
                 "--hearing-limit", "2", "--json"]) == 0
    heard = json.loads(capsys.readouterr().out)["hearing"]
    assert heard["n"] == 2 and 0 <= heard["spelled_wer"] and all("spelled" in row for row in heard["examples"])
    with pytest.raises(SystemExit, match="no --user-variants"):
        main(["train", "lm", "--corpus", str(corpus), "--preset", "tiny", "--out", str(tmp_path / "lm3"), "--steps", "1",
              "--hearing-encoder", str(lm / "checkpoint"), "--heard-text", "--user-variants"])


def test_the_whisper_ear_is_cached_resumably_feeds_training_and_evaluation(corpus: Path, tmp_path: Path, capsys) -> None:
    from voice.speechlm.ear_cache import load_ear_index
    from voice.speechlm.whisper_ear import EarConfig

    ear = ["data", "ear", "--corpus", str(corpus), "--chunk", "10", "--context", "20"]
    capsys.readouterr()
    assert main([*ear, "--limit", "3"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["encoded_now"] == 3
    assert main(ear) == 0                                             # the rest; the first 3 are kept
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    index = load_ear_index(corpus, EarConfig(10, 20))
    assert done["utterances"] == len(index) > 3 and done["encoded_now"] == len(index) - 3
    row = next(iter(index.values()))
    assert np.load(corpus / row["path"]).shape == (row["frames"], 384)
    run = tmp_path / "ear"
    args = ["train", "lm", "--corpus", str(corpus), "--preset", "tiny", "--out", str(run), "--ear",
            "--ear-chunk", "10", "--ear-context", "20", "--ear-mask"]
    assert main([*args, "--steps", "2"]) == 0
    alone = int(capsys.readouterr().out.split("[lm] ")[1].split(" train")[0])
    assert main([*args, "--steps", "4", "--extra-corpus", str(corpus)]) == 0   # resumes, with a second corpus's train split
    said = capsys.readouterr().out
    assert f"[lm] {2 * alone} train" in said and "(masked in training)" in said
    with pytest.raises(SystemExit, match="train with --ear"):
        main(["train", "lm", "--corpus", str(corpus), "--preset", "tiny", "--out", str(tmp_path / "plain"),
              "--ear-mask", "--steps", "1"])
    assert main([*args, "--steps", "6"]) == 0                         # resumes, still hearing through the ear
    config = json.loads((run / "checkpoint" / "config.json").read_text())
    assert config["hearing"] == {"kind": "ear", "dim": 384, "chunk": 10, "context": 20}
    assert [h["step"] for h in _history(run)] == [2, 4, 6]
    capsys.readouterr()
    assert main(["eval", "lm", str(run / "checkpoint"), "--corpus", str(corpus), "--limit", "1", "--hearing-limit", "2",
                 "--speed", "--real-speech", "--real-limit", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["hearing"]["n"] == 2 and {r["sessions"] for r in report["speed"]} == {1, 4}
    assert len(report["real_speech"]) == 1
    from voice.speechlm.hearing import HearingConfig, HearingEncoder

    HearingEncoder(HearingConfig(num_codebooks=2, hidden=8, gru_layers=1)).save(tmp_path / "codes.pt")
    enc_args = ["train", "hearing", "--ear", "--corpus", str(corpus), "--out", str(tmp_path / "earenc"), "--steps", "2",
                "--eval-every", "1", "--hidden", "16", "--gru-layers", "1", "--ear-mask", "--ear-chunk", "10", "--ear-context", "20"]
    assert main(enc_args) == 0                                        # an ear encoder, on the ear's cached rows
    assert main(["eval", "hearing", str(tmp_path / "earenc" / "hearing.pt"), "--corpus", str(corpus), "--split", "train",
                 "--limit", "2", "--json"]) == 0
    said = capsys.readouterr().out
    assert json.loads(said[said.index("{\n"):])["n"] == 2                 # the report after the training's lines
    assert main(["train", "lm", "--corpus", str(corpus), "--preset", "tiny", "--out", str(tmp_path / "withenc"), "--ear",
                 "--ear-chunk", "10", "--ear-context", "20", "--hearing-encoder", str(tmp_path / "earenc" / "hearing.pt"),
                 "--steps", "1", "--heard-text", "--ear-mask"]) == 0
    config = json.loads((tmp_path / "withenc" / "checkpoint" / "config.json").read_text())
    assert config["hearing"]["encoder"]["input_dim"] == 384 and config["heard_text"] is True and config["heard_snap_by"] == "ctc"
    for encoder, said in (("x.pt", "no such file"), (str(tmp_path / "codes.pt"), "an encoder of codes without it")):
        with pytest.raises(SystemExit, match=said):      # the ear takes an ear encoder (voice train hearing --ear) only
            main(["train", "lm", "--corpus", str(corpus), "--preset", "tiny", "--out", str(tmp_path / "both"), "--ear",
                  "--ear-chunk", "10", "--ear-context", "20", "--hearing-encoder", encoder, "--steps", "1"])
    with pytest.raises(SystemExit, match="same --ear-chunk"):          # an ear encoder of other chunks' rows
        main(["train", "lm", "--corpus", str(corpus), "--preset", "tiny", "--out", str(tmp_path / "other"), "--ear",
              "--ear-chunk", "25", "--ear-context", "20", "--hearing-encoder", str(tmp_path / "earenc" / "hearing.pt"),
              "--steps", "1"])



def test_speed_variants_of_the_ear_cache_are_train_split_copies_that_an_ear_encoder_trains_on(corpus: Path, tmp_path: Path,
                                                                                               capsys) -> None:
    from voice.codec.tokenize import _read_index
    from voice.data.manifest import read_manifest
    from voice.speechlm.ear_cache import ear_id, speed_factor, variant_id
    from voice.speechlm.hearing_train import ear_utterances
    from voice.speechlm.whisper_ear import EarConfig

    ear = ["data", "ear", "--corpus", str(corpus), "--chunk", "10", "--context", "20"]
    assert main([*ear, "--speed-variants", "1"]) == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    name = ear_id(EarConfig(10, 20))
    train = [r for r in read_manifest(corpus) if r["split"] == "train" and r["role"] == "user"]
    assert done["speed_variants"] == [{"ear_id": variant_id(name, 1), "utterances": len(train), "encoded_now": len(train)}]
    plain, fast = _read_index(corpus / "ear" / name), _read_index(corpus / "ear" / variant_id(name, 1))
    assert set(fast) == {r["id"] for r in train}                     # never a validation or test turn
    for r in train:                                                   # the copy is as much shorter as it plays faster
        assert abs(fast[r["id"]]["frames"] - plain[r["id"]]["frames"] / speed_factor(r["id"], 1)) <= 2
    assert main([*ear, "--speed-variants", "1"]) == 0                 # resumes: nothing left to do
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["speed_variants"][0]["encoded_now"] == 0
    args = ["train", "hearing", "--ear", "--corpus", str(corpus), "--steps", "1", "--hidden", "16", "--gru-layers", "1",
            "--ear-chunk", "10", "--ear-context", "20"]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert main([*args, "--out", str(tmp_path / "speed"), "--ear-speed-variants", "1"]) == 0
    said = capsys.readouterr().out
    assert f"[hearing] {len(train)} train" in said and f"[hearing] {2 * len(train)} train" in said
    assert {u.voice.split("~")[-1] for u in ear_utterances(corpus, "train", name, 1)} >= {"speed1"}
    with pytest.raises(ValueError, match="only the train split"):
        ear_utterances(corpus, "validation", name, 1)
    with pytest.raises(SystemExit, match="--speed-variants 2"):      # a copy that was never cached
        ear_utterances(corpus, "train", name, 2)
    with pytest.raises(SystemExit, match="train with --ear"):
        main(["train", "hearing", "--corpus", str(corpus), "--out", str(tmp_path / "codes"), "--ear-speed-variants", "1"])


def test_extra_voices_re_speak_the_train_turns_for_the_ear_encoder(corpus: Path, tmp_path: Path, capsys) -> None:
    from voice.codec.tokenize import _read_index
    from voice.data.manifest import read_manifest
    from voice.data.voices import EXTRA_VOICES, VOICES, Synthesizer
    from voice.speechlm.ear_cache import ear_id, extra_voice_id, respoken
    from voice.speechlm.hearing_train import ear_utterances
    from voice.speechlm.whisper_ear import EarConfig

    test_voices = [v for v in VOICES.values() if v.split == "test"]
    for extra in EXTRA_VOICES.values():                               # nothing near a held-out voice
        assert extra.name not in VOICES and all(extra.speaker != v.speaker for v in test_voices)
        assert not any(part in extra.voice_id for part in ("scotland", "029", "+f3", "+m6"))
    train = [r for r in read_manifest(corpus) if r["split"] == "train" and r["role"] == "user"]
    synth = Synthesizer()
    try:
        for voice in EXTRA_VOICES:                                    # every extra voice speaks, the same each time
            audio = respoken(train[0], voice, synth)
            assert audio.dtype == np.float32 and len(audio) > 8000 and np.abs(audio).max() > 0.01
            assert np.array_equal(audio, respoken(train[0], voice, synth))
    finally:
        synth.close()
    ear = ["data", "ear", "--corpus", str(corpus), "--chunk", "10", "--context", "20"]
    voice = "espeak:en-us-nyc+m5"
    assert main([*ear, "--extra-voices", voice]) == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    name = ear_id(EarConfig(10, 20))
    assert done["extra_voices"] == [{"ear_id": extra_voice_id(name, voice), "utterances": len(train),
                                     "encoded_now": len(train)}]
    assert set(_read_index(corpus / "ear" / extra_voice_id(name, voice))) == {r["id"] for r in train}
    assert main([*ear, "--extra-voices", voice]) == 0                 # resumes: nothing left to do
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["extra_voices"][0]["encoded_now"] == 0
    heard = ear_utterances(corpus, "train", name, voices=[voice])
    assert len(heard) == 2 * len(train) and sum(u.voice == voice for u in heard) == len(train)
    assert {u.text for u in heard if u.voice == voice} == {r["text"] for r in train}
    args = ["train", "hearing", "--ear", "--corpus", str(corpus), "--steps", "1", "--hidden", "16", "--gru-layers", "1",
            "--ear-chunk", "10", "--ear-context", "20", "--out", str(tmp_path / "extra")]
    assert main([*args, "--ear-extra-voices", voice]) == 0
    assert f"[hearing] {2 * len(train)} train" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="not an extra voice"):
        main([*args, "--ear-extra-voices", "flite:awb"])              # a test voice is never an extra voice
    with pytest.raises(SystemExit, match="--extra-voices espeak:en-us\\+klatt3"):   # never cached
        ear_utterances(corpus, "train", name, voices=["espeak:en-us+klatt3"])
    with pytest.raises(ValueError, match="only the train split"):
        ear_utterances(corpus, "test", name, voices=[voice])
    with pytest.raises(SystemExit, match="not an extra voice"):
        main([*ear, "--extra-voices", "espeak:en-029+m6"])

def test_a_word_aligned_model_trains_on_aligned_words_and_says_answers(corpus: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "aligned"
    args = ["train", "lm", "--corpus", str(corpus), "--preset", "tiny", "--out", str(run), "--steps", "4",
            "--text-align", "words"]
    with pytest.raises(FileNotFoundError, match="voice data align"):
        main(args)
    assert main(["data", "align", "--corpus", str(corpus), "--no-progress", "--threads", "1"]) == 0
    assert '"failed_count": 0' in capsys.readouterr().out
    assert main(args) == 0
    assert "text words" in capsys.readouterr().out
    assert json.loads((run / "checkpoint" / "config.json").read_text())["text_align"] == "words"
    assert main(["eval", "lm", str(run / "checkpoint"), "--corpus", str(corpus), "--limit", "1", "--hearing-limit", "0",
                 "--speak-limit", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["answers"]["n"] == 1
    assert report["speaking"]["n"] == 2 and {"text", "said", "heard", "wer"} <= set(report["speaking"]["examples"][0])
    # another run starts from its weights with the other layout (--init), a fresh optimizer and its own history
    again = tmp_path / "again"
    assert main(["train", "lm", "--corpus", str(corpus), "--out", str(again), "--steps", "2", "--eval-every", "2",
                 "--save-every", "2", "--init", str(run / "checkpoint"), "--text-align", "ahead"]) == 0
    assert "starting from" in capsys.readouterr().out
    assert json.loads((again / "checkpoint" / "config.json").read_text())["text_align"] == "ahead"
    assert [h["step"] for h in _history(again)] == [2]
    with pytest.raises(SystemExit, match="--init"):      # a speech LM of this project, not a text LM's weights
        main(["train", "lm", "--corpus", str(corpus), "--out", str(tmp_path / "x"), "--init", str(run / "checkpoint"),
              "--base", "smollm2"])
