"""`voice bench` end to end on echo turns against a real in-process server, and its helpers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXED_RULES, SPEECH_DIR

FIXED = [a for k, v in FIXED_RULES.items() for a in ("--option", f"{k}={v}")]   # the VAD's fixed rules
from voice.bench.runner import Schedule, load_partial
from voice.cli import main

SHORT_CLIPS = ("tf_speech_commands_no.wav", "tf_speech_commands_yes.wav")


def _speech_subset(tmp_path: Path, names: tuple[str, ...]) -> Path:
    d = tmp_path / "speech"
    d.mkdir()
    for n in names:
        shutil.copy(SPEECH_DIR / n, d / n)
    return d


def _report(out: Path) -> dict:
    files = sorted(out.glob("*.json"))
    assert len(files) == 1, files
    stem = files[0].with_suffix("")
    assert stem.with_suffix(".md").exists()
    assert stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return json.loads(files[0].read_text())


def test_bench_echo_end_to_end(tmp_path):
    speech = _speech_subset(tmp_path, SHORT_CLIPS)
    out = tmp_path / "reports"
    rc = main(["bench", "--pipelines", "echo", "--set", "shared-speech", "--speech-dir", str(speech),
               "--out", str(out), "--name", "t", *FIXED])
    assert rc == 0
    report = _report(out)
    meta, summary, turns = report["meta"], report["summary"], report["turns"]
    assert meta["machine"]["cpu_cores"] >= 1 and meta["machine"]["cpu_model"]
    assert len(meta["load_start"]) == 3 and meta["git"]["commit"]
    assert meta["config"]["pipelines"] == ["echo"]
    assert [t["file"] for t in turns] == list(SHORT_CLIPS)
    for t in turns:
        # echo answers after the VAD's end-of-turn silence (500 ms); nothing comes back before it
        assert 350 < t["v2v_ms"] < 2000, t   # 500 ms end silence, counted from the energy-refined end
        assert t["v2v_minus_end_silence_ms"] == pytest.approx(t["v2v_ms"] - 500, abs=0.2)
        assert t["endpointing_ms"] >= 450 and "echo.AssistantAudio" in t["timings_ms"]
        assert t["answer_audio_s"] > 0.3 and t["first_audio_ms"] <= t["v2v_ms"]
    echo = summary["echo"]
    assert echo["pipeline"] == "echo" and echo["options"] == FIXED_RULES and echo["ignored_options"] == []
    assert echo["turns"] == 2 and echo["failures"] == 0
    assert echo["v2v_ms"]["p50"] <= echo["v2v_ms"]["p95"]
    assert echo["target"]["limit_ms"] == 50.0 and isinstance(echo["target"]["met"], bool)
    md = next(out.glob("*.md")).read_text()
    assert "p95" in md and "tf_speech_commands_yes.wav" in md and "load average" in md
    assert not list(out.glob("*.partial.jsonl")), "the partial file is removed once the report is written"


def test_bench_resume_reuses_finished_turns(tmp_path):
    speech = _speech_subset(tmp_path, SHORT_CLIPS)
    out = tmp_path / "reports"
    out.mkdir()
    done = {"pipeline": "echo", "turn": 0, "item": "tf_speech_commands_no", "file": "tf_speech_commands_no.wav",
            "v2v_ms": 612.0, "v2v_minus_end_silence_ms": 112.0, "from_partial": True}
    (out / "t.partial.jsonl").write_text(json.dumps(done) + "\n" + '{"pipeline": "echo", "tu')  # torn last line
    rc = main(["bench", "--pipelines", "echo", "--speech-dir", str(speech), "--out", str(out), "--name", "t",
               "--resume", "--no-warmup"])
    assert rc == 0
    turns = _report(out)["turns"]
    assert turns[0] == {**done, "variant": "echo"}   # a record from before variants: named after its pipeline
    assert turns[1]["file"] == "tf_speech_commands_yes.wav" and "from_partial" not in turns[1]


@pytest.mark.slow
def test_bench_barge_in_times_the_clear(tmp_path):
    """The user talks over a 5 s echo: the clear comes after barge_in_min_speech_ms of their speech."""
    speech = _speech_subset(tmp_path, ("ps_librivox_sense_0890.wav", "ps_tidigits_dhd_2934z.wav"))
    out = tmp_path / "reports"
    rc = main(["bench", "--pipelines", "echo", "--speech-dir", str(speech), "--out", str(out), "--name", "b",
               "--turns", "1", "--barge-in", "--no-warmup", *FIXED])
    assert rc == 0
    turn = _report(out)["turns"][0]
    assert turn["barge_in_item"] == "ps_tidigits_dhd_2934z"
    assert 400 <= turn["barge_in_clear_ms"] < 1500, turn
    assert turn["barge_in_audio_after_clear_ms"] == 0.0, turn      # nothing of the cancelled echo after the clear
    assert turn["v2v_ms"] is not None


@pytest.mark.slow
def test_bench_barge_in_after_the_answer_ended_is_a_new_turn_not_a_wait(tmp_path):
    """The echo of a one-word clip has finished playing before 400 ms of the next clip's speech: no `clear`
    can come, and the bench says so when the speech starts a turn of its own (not after --timeout-s)."""
    speech = _speech_subset(tmp_path, ("ps_librivox_sense_0890.wav", "tf_speech_commands_no.wav"))
    out = tmp_path / "reports"
    rc = main(["bench", "--pipelines", "echo", "--speech-dir", str(speech), "--out", str(out), "--name", "b",
               "--turns", "2", "--barge-in", "--no-warmup", "--timeout-s", "15", *FIXED])
    assert rc == 0
    short = _report(out)["turns"][1]
    assert short["item"] == "tf_speech_commands_no" and short["barge_in_item"] == "ps_librivox_sense_0890"
    assert short["barge_in_error"].startswith("no clear: the answer had finished playing"), short
    assert "barge_in_clear_ms" not in short


def test_bench_rejects_bad_input(tmp_path):
    assert main(["bench", "--pipelines", "echo", "--speech-dir", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert main(["bench", "--pipelines", "echo", "--option", "oops", "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        main(["bench", "--set", "nope"])


def test_schedule_interleaves_pipelines():
    s = Schedule.make(("echo", "cascade"), n_items=2, turns=3)
    assert s.keys == [("echo", 0, 0), ("cascade", 0, 0), ("echo", 1, 1), ("cascade", 1, 1),
                      ("echo", 2, 0), ("cascade", 2, 0)]
    assert len(Schedule.make(("echo",), n_items=5, turns=0).keys) == 5


def test_load_partial_skips_torn_line(tmp_path):
    p = tmp_path / "x.partial.jsonl"
    p.write_text('{"pipeline": "echo", "turn": 3, "v2v_ms": 1}\n'
                 '{"variant": "short", "pipeline": "echo", "turn": 3, "v2v_ms": 2}\n{"pipeline": "ec')
    assert load_partial(p) == {("echo", 3): {"variant": "echo", "pipeline": "echo", "turn": 3, "v2v_ms": 1},
                               ("short", 3): {"variant": "short", "pipeline": "echo", "turn": 3, "v2v_ms": 2}}
    assert load_partial(tmp_path / "missing.jsonl") == {}


def test_corpus_context_gives_the_dialogue_clock():
    from voice.bench.sets import context_clock

    assert context_clock("Today is Tuesday, October 27, 2026. The time is 10:01 PM.") == "2026-10-27T22:01"
    assert context_clock("Today is Friday, May 1, 2026. The time is 12:05 AM.") == "2026-05-01T00:05"
    assert context_clock("no clock here") is None


def test_the_bench_reads_the_sets_where_the_data_commands_write_them():
    """`voice bench --set corpus-test|paused-turns|--barge-in-mix` default to the folders `voice data build|turns|barge`
    write by default (the paused-turn default once pointed at an old folder)."""
    import argparse

    from voice.bench import sets
    from voice.data.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"), {})
    root = sets.ROOT
    for command, folder in (("build", sets.CORPUS_DIR), ("turns", sets.TURNS_DIR), ("barge", sets.BARGE_DIR)):
        args = parser.parse_args(["data", command])
        assert root / args.out == folder, (command, args.out, folder)


def test_played_at_counts_the_silence_a_player_must_play_first():
    from types import SimpleNamespace as Chunk

    from voice.bench.runner import first_sound

    played_at = lambda chunks, rate, threshold: first_sound(chunks, rate, threshold)[1]  # noqa: E731

    rate = 1000
    silence, sound = np.zeros(200, np.float32), np.r_[np.zeros(50), np.ones(10)].astype(np.float32)
    # both chunks at once: the player plays 200 ms of silence and 50 more before the sound
    assert played_at([Chunk(t_s=1.0, pcm=silence), Chunk(t_s=1.0, pcm=sound)], rate, 0.01) == pytest.approx(1.25)
    # the sound arrives late: played on arrival, 50 ms into its chunk
    assert played_at([Chunk(t_s=1.0, pcm=silence), Chunk(t_s=2.0, pcm=sound)], rate, 0.01) == pytest.approx(2.05)
    assert played_at([Chunk(t_s=1.0, pcm=silence)], rate, 0.01) is None


def test_browser_clips_are_matched_to_the_pages_turns_on_the_input_timeline(tmp_path):
    from voice.bench.browser import LEAD_S, fake_microphone, match_turns, records_for
    from voice.bench.reference import find_speech
    from voice.bench.sets import TurnItem

    rate = 16000
    clip = np.r_[np.zeros(rate // 2), 0.3 * np.sin(np.arange(rate) / 5.0), np.zeros(rate // 2)].astype(np.float32)
    items = [TurnItem(f"c{i}", f"c{i}.wav", clip, rate, find_speech(clip, rate)) for i in range(3)]
    spans = fake_microphone(items, tmp_path / "mic.wav", gap_s=2.0)
    assert spans[0].speech_start_s == pytest.approx(LEAD_S + 0.5, abs=0.01)
    assert spans[1].speech_start_s == pytest.approx(spans[0].next_start_s + LEAD_S + 0.5, abs=0.01)
    assert (tmp_path / "mic.wav").stat().st_size > 2 * 48000 * spans[-1].next_start_s * 0.99
    offset = -0.7          # the page's input timeline started 0.7 s into the file
    turn = lambda s, e, ms: {"speechStart": s + offset, "speechEnd": e + offset, "latencyMs": ms}  # noqa: E731
    turns = [turn(spans[0].speech_start_s + 0.02, spans[0].speech_end_s + 0.01, 300),
             # the second clip was split by the VAD: its last turn is the one measured
             turn(spans[1].speech_start_s, spans[1].speech_start_s + 0.4, 250),
             {**turn(spans[1].speech_start_s + 0.6, spans[1].speech_end_s, 320), "underruns": 1, "underrunAtMs": [40]}]
    matched = match_turns(turns, spans)
    assert [len(m) for m in matched] == [1, 2, 0]
    recs = records_for("echo", "echo", items, matched, {"turn_detection": "model"}, session_underruns=2)
    assert [r.get("v2v_ms") for r in recs] == [300.0, 320.0, None]
    assert {r["turn_detection"] for r in recs} == {"model"} and {r["browser_session_underruns"] for r in recs} == {2}
    assert recs[1]["vad_turns"] == 2 and recs[2]["error"] and recs[0]["variant"] == "echo in the browser"
    assert [r.get("browser_underruns") for r in recs] == [0, 1, None]      # the clip whose answer ran dry
    assert [r.get("browser_underrun_at_ms") for r in recs] == [[], [40], None]   # 40 ms into its answer
    # --browser-new-conversation: in the lead silence before each clip after the first, on the same timeline
    from voice.bench.browser import file_position_s, new_conversation_times

    times = new_conversation_times(spans)
    assert len(times) == 2 and all(s.clip_end_s < t < n.speech_start_s for s, t, n in zip(spans, times, spans[1:]))
    assert file_position_s({"samplesSent": 16000, "turns": []}, spans[0].speech_start_s) is None
    at = file_position_s({"samplesSent": int((times[0] + offset) * 16000), "turns": turns}, spans[0].speech_start_s)
    assert at == pytest.approx(times[0] - 0.02, abs=1e-3)     # the first turn started 20 ms after the clip's speech


def test_bench_browser_refuses_what_the_page_cannot_do(tmp_path):
    speech = _speech_subset(tmp_path, SHORT_CLIPS)
    common = ["bench", "--set", "shared-speech", "--speech-dir", str(speech), "--out", str(tmp_path), "--browser"]
    assert main([*common, "--pipelines", "echo", "--option", "end_silence_ms=300"]) == 2
    assert main([*common, "--variant", "short=echo:end_silence_ms=300"]) == 2
    assert main([*common, "--pipelines", "echo", "--barge-in"]) == 2
    assert main([c for c in common if c != "--browser"] + ["--pipelines", "echo", "--browser-new-conversation"]) == 2
    assert main([*common, "--pipelines", "echo", "--chromium", str(tmp_path / "no-such-chromium")]) == 2
