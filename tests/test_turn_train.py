"""The turn-taking sets, training and evaluation end to end on a tiny corpus (slow: synthesis and training)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from voice.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    from voice.data.build import BuildConfig, build

    root = tmp_path_factory.mktemp("turns")
    corpus = root / "corpus"
    build(BuildConfig(out_dir=str(corpus), seed=3, dialogues={"train": 6, "validation": 3, "test": 3}, shard_size=3),
          progress=False)
    turns, barge = root / "turns", root / "barge"
    assert main(["data", "turns", "--corpus", str(corpus), "--out", str(turns), "--workers", "1", "--no-progress"]) == 0
    assert main(["data", "barge", "--corpus", str(corpus), "--out", str(barge), "--workers", "1", "--no-progress"]) == 0
    return {"corpus": corpus, "turns": turns, "barge": barge}


def test_paused_turn_set_keeps_the_splits_and_its_pieces(sets):
    from voice.turn.data import load_records, read_piece

    corpus_rows = [json.loads(line) for line in (sets["corpus"] / "manifest.jsonl").read_text().splitlines()]
    users = {r["id"]: r for r in corpus_rows if r["role"] == "user"}
    records = load_records(sets["turns"])
    assert {r["id"] for r in records} == set(users)
    for r in records:
        assert (r["split"], r["voice"], r["text"]) == (users[r["id"]]["split"], users[r["id"]]["voice"], users[r["id"]]["text"])
        full = read_piece(sets["turns"], r["full_wav"])
        assert 0.2 < len(full) / 16000 < 10
        if "prefix_wav" in r:
            assert len(read_piece(sets["turns"], r["prefix_wav"])) < len(full) + 16000
            assert 0.3 <= r["pause_s"] <= 1.2


def test_a_rebuild_reuses_every_shard(sets, capsys):
    before = (sets["turns"] / "manifest.jsonl").read_text()
    assert main(["data", "turns", "--corpus", str(sets["corpus"]), "--out", str(sets["turns"]), "--workers", "1",
                 "--no-progress"]) == 0
    assert (sets["turns"] / "manifest.jsonl").read_text() == before
    assert main(["data", "turns", "--corpus", str(sets["corpus"]), "--out", str(sets["turns"]), "--seed", "5",
                 "--no-progress"]) == 1
    assert "other settings" in capsys.readouterr().err


def test_train_resume_and_evaluate_the_end_of_turn_model(sets, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--turns", str(sets["turns"]), "--out", str(out), "--batch", "4", "--eval-every", "2", "--channels", "16",
              "--hidden", "16", "--threads", "1"]
    assert main(["train", "turn", "--steps", "2", "--voice-variants", "1", "--inner-pauses", *common]) == 0
    assert (out / "turn.pt").exists() and (out / "trainer.pt").exists()
    assert main(["train", "turn", "--steps", "4", *common]) == 0
    assert "resumed at step 2" in capsys.readouterr().out
    assert main(["eval", "turn", str(out), "--turns", str(sets["turns"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    groups = report["groups"]
    assert groups["all"]["n"] >= 3 and 0 <= groups["all"]["accuracy_first_check"] <= 1
    assert any(k.startswith("voice:") for k in groups) and report["decision"]["p50_ms"] > 0


def test_whisper_front_end_trains_on_a_resumable_pool(sets, tmp_path, capsys):
    """--frontend whisper: the pool of encoded examples is made once and kept across a restart; the
    validation's front-end rows are computed once; the saved model evaluates from audio."""
    out = tmp_path / "ear"
    common = ["--turns", str(sets["turns"]), "--out", str(out), "--batch", "4", "--eval-every", "2", "--channels", "16",
              "--hidden", "16", "--threads", "1", "--frontend", "whisper", "--pool", "10", "--context-s", "1.5", "--row-mask"]
    assert main(["train", "turn", "--steps", "2", *common]) == 0
    assert json.loads((out / "pool" / "done.json").read_text())["done"] == 10
    rows = np.load(out / "pool" / "rows.npy", mmap_mode="r")
    assert rows.shape == (10, 75, 384) and np.abs(np.asarray(rows[-1], np.float32)).sum() > 0
    assert main(["train", "turn", "--steps", "4", *common]) == 0
    printed = capsys.readouterr().out
    assert "resumed at step 2" in printed and "pool of 10 examples" in printed
    assert main(["eval", "turn", str(out), "--turns", str(sets["turns"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["groups"]["all"]["n"] >= 3 and report["decision"]["p50_ms"] > 0


def test_train_and_evaluate_the_barge_in_model(sets, tmp_path, capsys):
    out = tmp_path / "barge"
    assert main(["train", "barge", "--barge", str(sets["barge"]), "--corpus", str(sets["corpus"]), "--out", str(out),
                 "--steps", "2", "--batch", "4", "--eval-every", "2", "--channels", "16", "--hidden", "16",
                 "--threads", "1"]) == 0
    assert main(["eval", "barge", str(out), "--barge", str(sets["barge"]), "--corpus", str(sets["corpus"]), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"kind:interrupt", "kind:backchannel", "kind:noise", "kind:echo"} <= set(report["groups"])


def test_held_out_voices_are_not_trained_on_and_are_the_validation(sets, tmp_path, capsys):
    from voice.turn.train import PieceStore

    train = PieceStore(sets["turns"], "train")
    voice = train.records[0]["voice"]
    kept = PieceStore(sets["turns"], "train", exclude=frozenset({voice}))
    held = PieceStore(sets["turns"], ("train", "validation"), voices=frozenset({voice}))
    assert kept.records and all(r["voice"] != voice for r in kept.records)
    assert {r["voice"] for r in held.records} == {voice}
    assert len(held.records) >= sum(r["voice"] == voice for r in train.records)
    out = tmp_path / "held"
    assert main(["train", "turn", "--turns", str(sets["turns"]), "--out", str(out), "--steps", "1", "--batch", "2",
                 "--channels", "8", "--hidden", "8", "--threads", "1", "--holdout-voices", voice]) == 0
    assert f"validation: the held-out voices {voice}" in capsys.readouterr().out
    assert main(["eval", "turn", str(out), "--turns", str(sets["turns"]), "--split", "validation", "--voices", voice,
                 "--json"]) == 0
    groups = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["groups"]
    assert [k for k in groups if k.startswith("voice:")] == [f"voice:{voice}"]


def test_barge_in_training_holds_voices_out_and_hears_voice_variants(sets, tmp_path, capsys):
    from voice.turn.barge_train import BargeStore, example

    train = BargeStore(sets["barge"], sets["corpus"], "train")
    voice = train.records[0]["voice"]
    kept = BargeStore(sets["barge"], sets["corpus"], "train", exclude=frozenset({voice}))
    held = BargeStore(sets["barge"], sets["corpus"], ("validation", "train"), voices=frozenset({voice}))
    assert kept.records and all(r["voice"] != voice for r in kept.records)
    assert {r["voice"] for r in held.records} == {voice}
    kept.add_voice_variants(1, progress=False)
    record = kept.records[0]
    changed, original = kept.piece(record, "interrupt_wav", 1), kept.piece(record, "interrupt_wav")
    assert changed.dtype == np.float32 and not np.allclose(changed[:1000], original[:1000])
    kinds = {example(kept, np.random.default_rng(i), 24000, i % 2)[1] for i in range(40)}
    assert "interrupt" in kinds and len(kinds) >= 3
    out = tmp_path / "held-barge"
    assert main(["train", "barge", "--barge", str(sets["barge"]), "--corpus", str(sets["corpus"]), "--out", str(out),
                 "--steps", "1", "--batch", "4", "--eval-every", "1", "--channels", "8", "--hidden", "8",
                 "--threads", "1", "--holdout-voices", voice, "--voice-variants", "1"]) == 0
    assert f"validation: the held-out voices {voice}" in capsys.readouterr().out
    assert main(["eval", "barge", str(out), "--barge", str(sets["barge"]), "--corpus", str(sets["corpus"]),
                 "--split", "validation", "--voices", voice, "--json"]) == 0
    groups = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["groups"]
    assert {k[len("voice:"):].rsplit(":", 1)[0] for k in groups if k.startswith("voice:")} == {voice}


def test_voice_variants_keep_one_speaker_per_question(sets):
    from voice.turn.train import PieceStore

    store = PieceStore(sets["turns"], "train")
    store.add_voice_variants(2, progress=False)
    record = next(r for r in store.records if "prefix_wav" in r)
    for v in (1, 2):
        changed = store.piece(record, "full", v)
        assert changed.dtype == np.float32 and abs(len(changed) - len(store.piece(record, "full"))) < 1600
        assert not np.allclose(changed[:1000], store.piece(record, "full")[:1000])
    assert store.variants == 2


def test_bench_sets_from_the_turn_taking_sets(sets):
    from voice.bench.sets import barge_in_mix, load_set

    paused = load_set("paused-turns", turns_dir=sets["turns"])
    for item in paused:
        (start, end), = item.pauses
        assert 0 < start < end < len(item.pcm) / 16000
        assert np.abs(item.pcm[int(start * 16000) + 10: int(end * 16000) - 10]).max() == 0   # the pause is silent
    mix = barge_in_mix(sets["barge"], sets["corpus"], n=8)
    assert [i.barge_kind for i in mix[:4]] == ["interrupt", "backchannel", "noise", "echo"]
    assert all(len(i.pcm) > 0 for i in mix)


def test_the_offline_evaluation_counts_speculative_starts_and_answers_taken_back():
    """Hand-made probabilities: when an answer starts (speculatively or at the decision), how many pauses
    started one and dropped it, and when a pipeline of 1 s would be ready."""
    from voice.turn.train import NOT_OVER, OVER, TurnPolicy, ready_ms, summarize

    record = {"voice": "v", "kind": "filler"}
    times = [0.2, 0.296, 0.392]
    rows = [(record, "full", OVER, times), (record, "full", OVER, times),
            (record, "prefix", NOT_OVER, times), (record, "prefix", NOT_OVER, times), (record, "prefix", NOT_OVER, times)]
    probs = {0: [0.4, 0.5, 0.9],     # over: likely at 200 ms, decided at 392 ms
             1: [0.1, 0.1, 0.1],     # over: never decided, the 1.5 s silence ends it
             2: [0.5, 0.2, 0.1],     # a pause rated likely: started, then taken back
             3: [0.9, 0.1, 0.1],     # a pause decided over: premature (not taken back: it was answered)
             4: [0.1, 0.1, 0.1]}
    off = summarize(rows, probs, TurnPolicy(threshold=0.8))["all"]
    on = summarize(rows, probs, TurnPolicy(threshold=0.8, speculate=0.3))["all"]
    assert off["premature_rate"] == on["premature_rate"] == round(1 / 3, 4)
    assert off["taken_back_rate"] == 0.0 and on["taken_back_rate"] == round(1 / 3, 4)
    assert (off["start_p50_ms"], on["start_p50_ms"]) == (946.0, 850.0)   # starts: 392 / 1500 against 200 / 1500
    assert ready_ms(rows, probs, TurnPolicy(threshold=0.8), 1000.0) == pytest.approx((1946.0, 2444.6))
    assert ready_ms(rows, probs, TurnPolicy(threshold=0.8, speculate=0.3), 1000.0) == pytest.approx((1850.0, 2435.0))
    # a speculation threshold at or above the decision's is no speculation
    assert summarize(rows, probs, TurnPolicy(threshold=0.8, speculate=0.8))["all"] == off


def test_barge_in_pieces_are_timed_from_the_speech_onset():
    from voice.turn.barge_data import trim_leading_silence

    speech = (0.3 * np.sin(np.arange(3200) / 5 + 1.0)).astype(np.float32)    # loud from its first sample
    clip = np.concatenate([np.zeros(4000, np.float32), speech])             # 250 ms of silence first
    trimmed = trim_leading_silence(clip)
    assert len(trimmed) == len(speech) + 160                                  # 10 ms kept before the onset
    np.testing.assert_array_equal(trimmed[160:], speech)
    np.testing.assert_array_equal(trim_leading_silence(speech), speech)       # nothing to trim
    silent = np.zeros(800, np.float32)
    assert trim_leading_silence(silent) is silent                             # silence stays as it is


def test_extra_voices_say_the_train_questions_again_and_a_held_out_voices_copies_are_not_trained_on(sets, tmp_path):
    from voice.turn.data import load_records, original_id
    from voice.turn.train import PieceStore

    out = tmp_path / "extra"
    assert main(["data", "turns", "--corpus", str(sets["corpus"]), "--out", str(out), "--workers", "1", "--no-progress",
                 "--extra-voices", "festival:ked_diphone"]) == 0
    records = load_records(out)
    base = {r["id"]: r for r in load_records(sets["turns"])}
    copies = [r for r in records if r["id"] not in base]
    assert copies and {r["voice"] for r in copies} == {"festival:ked_diphone"}
    assert len(copies) == sum(r["split"] == "train" for r in base.values())     # each train question, once more
    for r in copies:
        assert r["split"] == "train" and r["text"] == base[original_id(r["id"])]["text"]
    voice = next(r["voice"] for r in records if r["split"] == "train")
    kept = PieceStore(out, "train", exclude=frozenset({voice}))
    held_ids = {r["id"] for r in records if r["voice"] == voice}
    assert kept.records and not any(original_id(r["id"]) in held_ids for r in kept.records)
    assert main(["data", "turns", "--corpus", str(sets["corpus"]), "--out", str(tmp_path / "bad"), "--no-progress",
                 "--extra-voices", "flite:rms"]) == 1          # a test voice is never an extra one


def test_more_cuts_and_answers_add_train_examples_only_and_are_never_evaluated(sets, tmp_path):
    """`--more-cuts 2 --answers`: each train question paused at other places (its own whole question shared), its
    dialogue's answer said whole and paused in the user's voice; validation and test as without them, and the
    stores that are evaluated (`originals_only`) leave the extras out."""
    from voice.turn.data import is_more, load_records, original_id
    from voice.turn.train import PieceStore, example_kinds

    out = tmp_path / "more"
    assert main(["data", "turns", "--corpus", str(sets["corpus"]), "--out", str(out), "--workers", "1", "--no-progress",
                 "--more-cuts", "2", "--answers"]) == 0
    records = load_records(out)
    base = {r["id"]: r for r in load_records(sets["turns"])}
    assert {r["id"] for r in records if not is_more(r)} == set(base)
    corpus = [json.loads(line) for line in (sets["corpus"] / "manifest.jsonl").read_text().splitlines()]
    answers = {(r["dialogue_id"], r["turn_index"]): r["text"] for r in corpus if r["role"] == "assistant"}
    cuts = [r for r in records if "~c" in r["id"]]
    said = [r for r in records if r["id"].endswith("~a")]
    assert cuts and said and all(r["split"] == "train" for r in cuts + said)
    for r in cuts:
        own = base[original_id(r["id"])]
        assert r["text"] == own["text"] and r["full_wav"] == own["full_wav"] and r["voice"] == own["voice"]
        assert r["prefix_text"].rstrip(",") != own.get("prefix_text", "").rstrip(",")
        assert "prefix_wav" in r and ("prefix", 0) in example_kinds(r)
    for r in said:
        own = base[original_id(r["id"])]
        dialogue, index = own["id"].split("_")
        assert r["text"] == answers[(dialogue, int(index) + 1)] and r["voice"] == own["voice"]
    trained = PieceStore(out, "train")
    assert any(is_more(r) for r in trained.records)
    evaluated = PieceStore(out, ("train", "validation"), originals_only=True)
    assert not any(is_more(r) for r in evaluated.records)
    assert main(["data", "turns", "--corpus", str(sets["corpus"]), "--out", str(tmp_path / "bad"), "--no-progress",
                 "--more-cuts", "-1"]) == 2


def test_inner_pauses_are_the_gaps_inside_a_piece_not_its_edges_or_a_closure():
    from voice.turn.train import inner_pauses

    t = np.arange(8000) / 16000
    voiced = (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)            # 0.5 s
    gap, closure = np.zeros(3200, np.float32), np.zeros(960, np.float32)        # 200 ms, 60 ms
    piece = np.concatenate([voiced, gap, voiced, closure, voiced, np.zeros(4800, np.float32)])
    assert inner_pauses(piece) == [8000]              # the 200 ms gap; not the closure, not the trailing silence
    assert inner_pauses(np.concatenate([gap, voiced])) == []     # a leading silence is not inside
    assert inner_pauses(voiced[:320]) == []
