"""`voice talk`: its parts (timeline, playback buffer, speech ends, event log) and whole runs against a real server."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import FIXED_RULES
from voice.audio import first_non_silent_index, read_wav, resample
from voice.cli import main as cli_main
from voice.talk import parse_options
from voice.talk.audio_io import PlaybackBuffer
from voice.talk.eventlog import EventLog, read_events
from voice.talk.status import StatusDisplay
from voice.talk.timeline import AnswerTimeline, speech_segments, true_speech_end_s

ROOT = Path(__file__).resolve().parents[1]
from tests.conftest import SPEECH_DIR  # noqa: E402

SPEECH = SPEECH_DIR


# ---- parts ----------------------------------------------------------------------------------
def test_timeline_queues_bursts_and_clear_drops_the_unplayed_part():
    tl = AnswerTimeline(1000)
    tl.add(1.0, 1, np.zeros(100, np.float32))             # silence first: not audible
    tl.add(1.0, 1, np.full(500, 0.5, np.float32))         # arrives with it, queues behind it
    assert tl.first_audible_s(1) == pytest.approx(1.1)
    assert tl.end_s == pytest.approx(1.6)
    assert tl.clear(1.3) == 300                            # 0.3 s still unplayed at 1.3 s
    assert tl.end_s == pytest.approx(1.3)
    tl.add(2.0, 2, np.full(10, 0.5, np.float32))           # later audio starts at its arrival
    out = tl.render(3000)
    assert len(out) == 3000 and np.count_nonzero(out) == 200 + 10
    assert tl.first_audible_s(2) == pytest.approx(2.0)
    assert tl.clear(5.0) == 0


def test_clear_before_anything_audible_leaves_no_answer():
    tl = AnswerTimeline(1000)
    tl.add(0.0, 1, np.concatenate([np.zeros(200), np.ones(100)]).astype(np.float32))
    tl.clear(0.1)
    assert tl.first_audible_s(1) is None and tl.cleared_samples == 200


def test_speech_segments_find_the_true_end_of_speech():
    rate = 16000
    rng = np.random.default_rng(0)
    pcm = rng.normal(0, 0.001, 4 * rate).astype(np.float32)                    # noise floor about -60 dBFS
    t = np.arange(rate) / rate
    pcm[rate:2 * rate] += 0.3 * np.sin(2 * np.pi * 220 * t)                    # "speech" 1.0-2.0 s
    pcm[int(2.2 * rate):int(2.6 * rate)] += 0.2 * np.sin(2 * np.pi * 300 * t[:int(0.4 * rate)])  # after a short pause
    segments = speech_segments(pcm, rate)
    assert len(segments) == 1                                                  # the 0.2 s pause is bridged
    start, end = segments[0]
    assert start == pytest.approx(1.0, abs=0.02) and end == pytest.approx(2.6, abs=0.02)
    assert true_speech_end_s(segments, 2.55) == end
    assert true_speech_end_s(segments, 3.9) is None                            # nothing near the VAD's end


def test_speech_end_of_a_real_recording_is_near_silero():
    pcm, rate = read_wav(SPEECH / "ps_goforward.wav")
    (start, end), = speech_segments(pcm, rate)
    assert 0.1 < start < 0.4 and 2.3 < end < 2.75     # "go forward ten meters" in a 2.79 s file


def test_playback_buffer_pull_clear_and_overflow():
    buf = PlaybackBuffer(max_s=1.0, sample_rate_hz=100)
    buf.push(np.arange(60, dtype=np.float32))
    buf.push(np.arange(60, dtype=np.float32))              # 120 > 100: the oldest chunk goes
    assert buf.buffered_samples == 60 and buf.dropped_samples == 60
    out = buf.pull(80)                                     # underrun: zeros after the data
    assert np.array_equal(out[:60], np.arange(60)) and not out[60:].any() and buf.underruns == 1
    buf.push(np.ones(30, np.float32))
    assert buf.clear() == 30 and buf.buffered_samples == 0 and not buf.pull(10).any()


def test_options_event_log_and_status(tmp_path):
    assert parse_options(["end_silence_ms=400", "voice=joe", "x=true"]) == {"end_silence_ms": 400, "voice": "joe", "x": True}
    with pytest.raises(ValueError):
        parse_options(["novalue"])
    log = EventLog(tmp_path / "e.jsonl", start_s=10.0)
    log.write("out", {"type": "hello"}, 10.5)
    log.write("in", {"type": "audio", "samples": 3}, 11.0)
    log.close()
    assert read_events(tmp_path / "e.jsonl") == [{"t": 0.5, "dir": "out", "event": {"type": "hello"}},
                                                 {"t": 1.0, "dir": "in", "event": {"type": "audio", "samples": 3}}]
    out = io.StringIO()
    status = StatusDisplay(out)
    status.set_state("listening")
    status.set_state("listening")
    status.user("hello", final=False)          # partials only on a terminal
    status.user("hello there", final=True)
    status.turn(1, 512.3)
    assert out.getvalue().splitlines() == ["[listening]", "you: hello there", "turn 1: voice-to-voice 512 ms"]


# ---- whole runs against a real server -------------------------------------------------------
class ThreadServer:
    """A real VoiceServer on its own event loop thread, so the CLI can run its own asyncio.run."""

    def __init__(self, pipeline: str = "echo") -> None:
        from voice.server.app import ServerConfig, VoiceServer

        self.server = VoiceServer(ServerConfig(port=0, vad_defaults=FIXED_RULES, pipeline=pipeline))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "ThreadServer":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(120)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def server():
    with ThreadServer("echo") as srv:
        yield srv


@pytest.fixture(scope="module")
def stereo_44k(tmp_path_factory) -> Path:
    """A real command, padded, at 44.1 kHz in stereo: the client must convert it."""
    pcm, rate = read_wav(SPEECH / "ps_goforward.wav")
    pcm = np.concatenate([np.zeros(rate // 2, np.float32), pcm, np.zeros(rate // 2, np.float32)])
    pcm = resample(pcm, rate, 44100)
    path = tmp_path_factory.mktemp("talk") / "goforward_44k_stereo.wav"
    import soundfile as sf

    sf.write(str(path), np.stack([pcm, pcm * 0.5], axis=1), 44100, subtype="PCM_16")
    return path


def test_talk_file_to_file_with_events(server, stereo_44k, tmp_path, capsys):
    out_wav, events_path = tmp_path / "answer.wav", tmp_path / "events.jsonl"
    t0 = time.monotonic()
    rc = cli_main(["talk", "--url", server.url, "--pipeline", "echo", "--input", str(stereo_44k),
                   "--output", str(out_wav), "--events", str(events_path)])
    wall_s = time.monotonic() - t0
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "turn 1: voice-to-voice" in printed and "from the end of speech in the file" in printed
    events = read_events(events_path)
    ts = [e["t"] for e in events]
    assert ts == sorted(ts)
    assert events[0]["dir"] == "out" and events[0]["event"]["type"] == "hello" and events[0]["event"]["sample_rate"] == 16000
    assert events[1]["event"]["type"] == "ready" and events[-1]["event"]["type"] == "bye"
    sent = sum(e["event"]["samples"] for e in events if e["dir"] == "out" and e["event"]["type"] == "audio")
    received = sum(e["event"]["samples"] for e in events if e["dir"] == "in" and e["event"]["type"] == "audio")
    in_s = read_wav(stereo_44k)[0].shape[0] / 44100
    assert in_s + 1.0 <= sent / 16000 <= wall_s          # the file plus a tail of silence, at real-time pace
    (v2v,) = [e["event"] for e in events if e["dir"] == "client" and e["event"]["type"] == "v2v"]
    stopped = next(e["event"] for e in events if e["event"]["type"] == "speech_stopped")
    assert v2v["end_source"] == "file" and v2v["vad_end_s"] == stopped["t"]
    # silence mode: the answer comes end_silence_ms (500) after the VAD's end, plus transport and a window;
    # the file's end of speech is later than the VAD's here (the fading tail of "meters", about 0.4 s)
    assert 0.5 <= v2v["v2v_vad_ms"] / 1000 < 2.5
    assert 0.0 < v2v["v2v_ms"] / 1000 < v2v["v2v_vad_ms"] / 1000
    # the answer WAV: on the input timeline, as long as what was streamed, silent until the answer
    answer, rate = read_wav(out_wav)
    assert rate == 16000 and len(answer) == pytest.approx(sent, abs=1)
    first = first_non_silent_index(answer)
    assert first / rate == pytest.approx(v2v["answer_s"], abs=0.002)
    assert first / rate - v2v["speech_end_s"] == pytest.approx(v2v["v2v_ms"] / 1000, abs=0.002)
    assert np.count_nonzero(answer) == pytest.approx(received, abs=received * 0.05 + 200)
    assert v2v["speech_end_s"] < first / rate


def test_talk_warns_once_about_options_the_server_ignored(server, stereo_44k, capsys):
    """A typo in --option does not refuse the session: the server lists it in ready.ignored_options and
    voice talk says so in one line, even with --quiet; with known options it says nothing."""
    base = ["talk", "--url", server.url, "--pipeline", "echo", "--input", str(stereo_44k), "--no-play",
            "--duration", "0.2", "--quiet"]
    assert cli_main(base + ["--option", "end_silence_msec=400", "--option", "tts=x", "--option",
                            "end_silence_ms=400"]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if "ignored" in line]
    assert warnings == ["warning: the server ignored the hello option(s) end_silence_msec, tts "
                        "(not read by the VAD or the echo pipeline: a typo?)"]
    assert cli_main(base + ["--option", "end_silence_ms=400"]) == 0
    assert "ignored" not in capsys.readouterr().out


def test_talk_reports_an_unreachable_server(stereo_44k, capsys):
    rc = cli_main(["talk", "--url", "ws://127.0.0.1:9/ws", "--input", str(stereo_44k), "--no-play"])
    assert rc == 1
    assert "cannot reach the server at ws://127.0.0.1:9/ws" in capsys.readouterr().out


def test_talk_reports_a_missing_file(server, tmp_path, capsys):
    assert cli_main(["talk", "--url", server.url, "--input", str(tmp_path / "nope.wav")]) == 1
    assert "does not exist" in capsys.readouterr().out


# ---- the sounddevice path on ALSA's null device ----------------------------------------------
@pytest.fixture()
def null_audio_env(tmp_path) -> dict:
    pytest.importorskip("sounddevice")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text("pcm.!default { type null }\nctl.!default { type hw card 0 }\n")
    return {**os.environ, "HOME": str(home), "PYTHONUNBUFFERED": "1"}


def _talk_process(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "voice.cli", "talk", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_microphone_session_on_a_null_device_stops_cleanly_on_ctrl_c(server, null_audio_env, tmp_path):
    events_path = tmp_path / "mic.jsonl"
    proc = _talk_process(["--url", server.url, "--events", str(events_path)], null_audio_env)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "[listening]" in first, first + proc.stdout.read()
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "0 turn(s)" in out
    events = read_events(events_path)
    hello = events[0]["event"]
    assert hello["type"] == "hello" and 8000 <= hello["sample_rate"] <= 48000
    sent_s = sum(e["event"]["samples"] for e in events if e["event"]["type"] == "audio") / hello["sample_rate"]
    assert 1.0 < sent_s < events[-1]["t"] + 0.1            # paced to real time, although the null device is not
    assert events[-1]["event"]["type"] == "bye"


def test_file_played_on_a_null_output_device(server, null_audio_env, stereo_44k, tmp_path):
    events_path = tmp_path / "play.jsonl"
    proc = _talk_process(["--url", server.url, "--input", str(stereo_44k), "--play", "--events", str(events_path)],
                         null_audio_env)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    (v2v,) = [e["event"] for e in read_events(events_path) if e["event"]["type"] == "v2v"]
    assert v2v["output_latency_ms"] > 0 and v2v["v2v_ms"] is not None


def test_a_missing_output_device_is_a_clear_error(server, null_audio_env, stereo_44k):
    proc = _talk_process(["--url", server.url, "--input", str(stereo_44k), "--play", "--output-device", "no such speaker"],
                         null_audio_env)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "cannot use the output device no such speaker" in out, out
