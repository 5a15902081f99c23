"""The Whisper ear: chunk-by-chunk features equal the whole turn's (real Whisper tiny.en), the LM reads
them at the user's frames only, and the streaming generator reproduces the whole forward pass whether
it is given the features or the audio, in any chunking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voice.speechlm.whisper_ear import FEATURE_DIM, FRAME_SAMPLES, EarConfig, EarStream, WhisperEar, fit_frames

EAR = EarConfig(chunk=5, context=7)      # small chunks: a short test turn crosses several


@pytest.fixture(scope="module")
def ear() -> WhisperEar:
    return WhisperEar(threads=1, config=EAR)


def _speech(frames: int, seed: int = 0) -> np.ndarray:
    """Speech-like audio (a harmonic tone with a moving pitch, in noise) of `frames` 20 ms frames and a bit."""
    rng = np.random.default_rng(seed)
    n = frames * FRAME_SAMPLES + 77
    t = np.arange(n) / 16000
    f0 = 120 + 40 * np.sin(2 * np.pi * 1.3 * t)
    tone = sum(np.sin(2 * np.pi * h * np.cumsum(f0) / 16000) / h for h in range(1, 6))
    return (0.2 * tone + 0.01 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("sizes", [[320] * 40, [1000, 77, 5000, 3], [13000], [0, 4000, 0, 9100]])
def test_streamed_features_equal_the_whole_turn(ear, sizes) -> None:
    audio = _speech(41)
    whole = ear.encode_turn(audio)
    assert whole.shape == (41, FEATURE_DIM)
    stream, parts, at = EarStream(ear), [], 0
    for n in sizes + [len(audio)]:
        parts.append(stream.push(audio[at:at + n]))
        assert all(len(p) % EAR.chunk == 0 for p in parts), "only whole chunks before the end"
        at += n
    parts.append(stream.finish())
    assert np.array_equal(np.concatenate(parts), whole)


def test_a_chunk_sees_its_context_and_not_the_future(ear) -> None:
    audio = _speech(30)
    whole = ear.encode_turn(audio)
    later = audio.copy()
    later[20 * FRAME_SAMPLES:] = 0                  # change only what comes after frame 20 (chunks 0-3 end there)
    assert np.array_equal(ear.encode_turn(later)[:20], whole[:20])
    assert not np.allclose(ear.encode_turn(later)[20:], whole[20:])
    alone = ear.encode(audio[10 * FRAME_SAMPLES:15 * FRAME_SAMPLES])   # chunk 2 without its context differs
    assert not np.allclose(alone, whole[10:15])


def test_fit_frames_cuts_or_pads() -> None:
    f = np.ones((4, 3), np.float32)
    assert fit_frames(f, 2).shape == (2, 3)
    padded = fit_frames(f, 6)
    assert padded.shape == (6, 3) and padded[4:].sum() == 0 and padded[:4].sum() == 12


def _ear_lm(seed: int = 0):
    from tests.test_speechlm import tiny_config
    from voice.speechlm.model import SpeechLM

    torch.manual_seed(seed)
    cfg = tiny_config(hearing={"kind": "ear", "dim": FEATURE_DIM, "chunk": EAR.chunk, "context": EAR.context})
    model = SpeechLM(cfg, codebooks=torch.randn(cfg.num_codebooks, cfg.codebook_size, cfg.codec_dim)).eval()
    with torch.no_grad():                # a random adapter whose output is large enough to matter
        for p in model.hearing_proj.parameters():
            p.normal_(0, 0.5)
    return model


def _feats(frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((frames, FEATURE_DIM)).astype(np.float32)


def test_the_lm_reads_the_ear_at_user_frames_only(tmp_path) -> None:
    from tests.test_speechlm import codes, tokenize
    from voice.speechlm.batch import collate, lm_loss
    from voice.speechlm.format import Example, Turn, layout_example
    from voice.speechlm.model import SpeechLM

    model = _ear_lm()
    assert model.config.reads_ear and model.config.ear_config == EAR and model.hearing is None
    example = Example("s2s", "it is noon.", [Turn("user", "hi", codes(3, 9, 1), _feats(11, 1)),    # 2 rows too many
                                             Turn("assistant", "hello.", codes(3, 12, 2)),
                                             Turn("user", "bye", codes(3, 5, 3), _feats(3, 2)),     # 2 rows short
                                             Turn("assistant", "bye now.", codes(3, 7, 4))])
    steps = layout_example(example, model.config.vocab, model.config.layout, tokenize)
    batch = collate([steps, steps.cut(30)], model.config.vocab)
    ear = batch.user_ear
    assert ear.shape == (2, len(steps), FEATURE_DIM)
    (a1, f1), (a2, f2) = steps.user_ear
    assert torch.equal(ear[0, a1:a1 + 9], torch.from_numpy(_feats(11, 1)[:9]))
    assert torch.equal(ear[0, a2:a2 + 3], torch.from_numpy(_feats(3, 2))) and ear[0, a2 + 3:a2 + 5].abs().sum() == 0
    outside = torch.ones(len(steps), dtype=torch.bool)
    outside[a1:a1 + 9] = outside[a2:a2 + 5] = False
    assert ear[0, outside].abs().sum() == 0
    assert ear[1, 30:].abs().sum() == 0                                  # the cut example keeps only its steps
    model.train()
    lm_loss(model, batch).loss.backward()
    assert model.hearing_proj[1].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():                     # zeros (no features) add nothing, whatever the adapter's biases
        plain = model(batch.text, batch.audio)
        zero = model(batch.text, batch.audio, user_ear=torch.zeros_like(ear))
        heard = model(batch.text, batch.audio, user_ear=ear)
    assert torch.allclose(plain[1], zero[1]) and not torch.allclose(plain[1], heard[1])
    with pytest.raises(ValueError, match="Whisper ear"):
        model(batch.text, batch.audio, user_spans=batch.user_spans)
    model.save_pretrained(tmp_path)
    again = SpeechLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert again.config.ear_config == EAR
    with torch.no_grad():
        assert torch.allclose(again(batch.text, batch.audio, user_ear=ear)[1], heard[1], atol=1e-5)


def _generate_turn(model, context, user, chunks, **given) -> torch.Tensor:
    """Feed a context and one user turn in `chunks` (features or audio sliced alike), open the answer:
    the hidden state of the answer's marker step."""
    from voice.speechlm.generate import SpeechGenerator

    v = model.config.vocab
    gen = SpeechGenerator(model, max_sessions=1, ear=given.pop("ear", None))
    session = gen.open()
    gen.feed_text(session, "context", context)
    at = 0
    for i, n in enumerate(chunks):
        piece = {}
        if "features" in given:
            rows = given["features"]
            piece["features"] = rows[round(at * len(rows) / user.shape[1]):round((at + n) * len(rows) / user.shape[1])]
        if "pcm" in given:
            a = given["pcm"]
            piece["pcm"] = a[at * FRAME_SAMPLES:(at + n) * FRAME_SAMPLES] if i < len(chunks) - 1 else a[at * FRAME_SAMPLES:]
        gen.feed_user_speech(session, user[:, at:at + n], **piece)
        at += n
    gen.close_user_turn(session)
    return gen._feed(session, [v.special("assistant_speech")], [[v.audio_none] * 3])[-1]


def whole_turn(v, context: list[int], user: np.ndarray, feats: np.ndarray):
    """The steps `_generate_turn` feeds, laid out at once: text [1, S], audio [1, K, S], the ear's rows
    [1, S, D] at the user's frames (fewer rows than frames: zeros after them) and the turn's first step."""
    none = [v.audio_none] * user.shape[0]
    n = user.shape[1]
    text = [v.special("context"), *context, v.special("user_speech")] + [v.special("pad")] * n + [v.special("assistant_speech")]
    audio = [none] * (len(context) + 2) + user.T.tolist() + [none]
    ear = torch.zeros(1, len(text), FEATURE_DIM)
    start = len(context) + 2
    ear[0, start:start + len(feats)] = torch.from_numpy(feats)
    return torch.tensor([text]), torch.tensor([audio]).permute(0, 2, 1), ear, start


@pytest.mark.parametrize("encoder", [False, True])
@pytest.mark.parametrize("chunks", [[17], [1] * 17, [3, 5, 9], [10, 0, 7]])
def test_the_generator_streams_the_ear_like_the_whole_forward(chunks, encoder) -> None:
    """With `encoder`, the model also reads an ear encoder's features of the rows (its lookahead holds frames back)."""
    from tests.test_speechlm import codes, tokenize
    from tests.test_speechlm_ear_encoder import ear_encoder_lm

    model = ear_encoder_lm(1) if encoder else _ear_lm(1)
    v = model.config.vocab
    context, user, feats = tokenize("it is noon."), codes(3, 17, 5), _feats(16, 7)     # one row short: padded
    hidden = _generate_turn(model, context, user, chunks, features=feats)
    t, a, ear, start = whole_turn(v, context, user, feats)
    with torch.no_grad():
        ref_text, ref_audio = model(t, a, user_ear=ear, user_spans=[(0, start, start + 17, [1])])
        got_text, got_audio = model.heads(hidden[None, None])
        plain_text, _ = model(t, a)
    assert torch.allclose(got_audio[0, 0], ref_audio[0, -1], atol=1e-4)
    assert torch.allclose(got_text[0, 0], ref_text[0, -1], atol=1e-4)
    assert not torch.allclose(plain_text[0, -1], ref_text[0, -1], atol=1e-3)


@pytest.mark.parametrize("chunks", [[23], [2] * 11 + [1], [6, 0, 17]])
def test_audio_through_the_ear_equals_its_cached_features(ear, chunks) -> None:
    from tests.test_speechlm import codes, tokenize

    model = _ear_lm(2)
    audio = _speech(23, 3)
    user = codes(3, 23, 6)
    cached = ear.encode_turn(audio)                       # what `voice data ear` stores
    from_cache = _generate_turn(model, tokenize("hi."), user, [23], features=cached)
    from_audio = _generate_turn(model, tokenize("hi."), user, chunks, pcm=audio, ear=ear)
    assert torch.allclose(from_audio, from_cache, atol=1e-5)


def test_missing_ear_cache_and_variants_are_refused(tmp_path) -> None:
    import json

    from voice.speechlm.data import load_dialogues

    folder = tmp_path / "tokens" / "c-k3"
    folder.mkdir(parents=True)
    (folder / "index.jsonl").write_text("")
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"id": "d0_00", "dialogue_id": "d0", "split": "train"}) + "\n")
    with pytest.raises(FileNotFoundError, match="voice data ear"):
        load_dialogues(tmp_path, "c-k3", ear=EAR)
    with pytest.raises(ValueError, match="voice variants have no Whisper-ear features"):
        load_dialogues(tmp_path, "c-k3", variants=True, ear=EAR)


def test_a_server_whose_whisper_does_not_load_says_why(monkeypatch) -> None:
    import voice.speechlm.generate as generate
    from voice.e2e.speechlm_stage import SpeechLMService

    def broken(*args, **kwargs):
        raise ImportError("No module named 'ctranslate2'")

    monkeypatch.setattr(generate, "WhisperEar", broken)
    with pytest.raises(ValueError, match="Whisper tiny.en's encoder .*did not load: No module named 'ctranslate2'"):
        SpeechLMService(_ear_lm(), None, None, max_sessions=1)


def test_ear_masks_zero_spans_of_a_copy() -> None:
    from voice.speechlm.data import EarMask

    rows = _feats(100, 3) + 5.0                    # no zeros of its own
    mask = EarMask(time_every=25, time_width=10, channel_masks=2, channel_width=48)
    out = mask.apply(rows, np.random.default_rng(0))
    assert out.shape == rows.shape and np.all(rows != 0)            # the cached rows are untouched
    kept = out != 0
    assert np.array_equal(out[kept], rows[kept])                   # only zeros are written
    assert 0 < (~kept).mean() < 0.5
    assert np.array_equal(out, mask.apply(rows, np.random.default_rng(0)))   # seeded
    assert not np.array_equal(out, mask.apply(rows, np.random.default_rng(1)))
    assert mask.apply(np.zeros((0, FEATURE_DIM), np.float32), np.random.default_rng(0)).shape == (0, FEATURE_DIM)


def test_the_example_stream_masks_the_ear_of_spoken_examples_only() -> None:
    from tests.test_speechlm import codes, tokenize
    from voice.speechlm.data import Dialogue, EarMask, ExampleStream
    from voice.speechlm.format import Layout, Turn
    from voice.speechlm.vocab import Vocab

    vocab, layout = Vocab(64, 3, 16), Layout((0, 1, 1), 2)
    rows = _feats(30, 4) + 5.0
    turns = [Turn("user", "hi", codes(3, 30, 1), rows), Turn("assistant", "yo", codes(3, 12, 2))]
    dialogue = Dialogue("d0", "train", "", turns, ["smalltalk"], ["greeting"], "v")
    for task in ("s2s", "s2t", "t2t"):
        plain = ExampleStream([dialogue], vocab, layout, tokenize, {task: 1.0}).sample()[1]
        masked = ExampleStream([dialogue], vocab, layout, tokenize, {task: 1.0}, ear_mask=EarMask()).sample()[1]
        if task == "t2t":
            assert plain.user_ear == masked.user_ear == []
            continue
        (start, seen), (start2, heard) = plain.user_ear[0], masked.user_ear[0]
        assert start == start2 and np.array_equal(seen, rows)
        assert heard.shape == rows.shape and (heard == 0).any() and np.array_equal(heard[heard != 0], rows[heard != 0])
