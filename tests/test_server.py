"""A real server on a loopback port and the real client streaming real WAVs at real-time pace."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import numpy as np
import pytest

from conftest import FIXED_RULES
from voice.audio import read_wav, resample
from voice.client import VoiceClient
from voice.server.app import ServerConfig, VoiceServer
from tests.conftest import play_turn, run

ECHO_ORDER = ["ready", "speech_started", "speech_stopped", "audio_start", "turn_end"]


async def start_server(**kw) -> VoiceServer:
    srv = VoiceServer(ServerConfig(port=0, vad_defaults=FIXED_RULES, **kw))
    await srv.start()
    return srv


async def echo_turn(url: str, pcm: np.ndarray, rate: int) -> VoiceClient:
    return await play_turn(url, pcm, rate, "echo")


def best_alignment_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak normalised cross-correlation of two signals (1.0 = same waveform at some lag)."""
    n = min(len(a), len(b))
    a, b = a[:n] - a[:n].mean(), b - b.mean()
    corr = np.correlate(b, a, mode="full") if len(b) >= n else np.correlate(a, b, mode="full")
    return float(np.max(np.abs(corr)) / (np.linalg.norm(a) * np.linalg.norm(b[:len(b)]) + 1e-9))


def test_echo_returns_the_turn_with_events_in_order(speech_dir):
    pcm, rate = read_wav(speech_dir / "ps_cards_002.wav")

    async def main():
        srv = await start_server()
        try:
            return await echo_turn(srv.url, pcm, rate)
        finally:
            await srv.stop()

    client = run(main())
    kinds = [e["type"] for _, e in client.log.events if e["type"] in ECHO_ORDER]
    assert kinds == ECHO_ORDER
    echoed = np.concatenate([a.pcm for a in client.log.audio])
    # the echo holds the whole utterance: about as long as the speech, and the same waveform
    stopped = client.log.of_type("speech_stopped")[0]
    assert abs(len(echoed) / 16000 - (stopped["t"] - stopped["start"])) < 0.6
    reference = resample(pcm, rate, 16000)
    assert best_alignment_corr(echoed, reference) > 0.9
    turn_end = client.log.of_type("turn_end")[0]
    assert turn_end["interrupted"] is False and "echo.AssistantAudio" in turn_end["timings_ms"]
    assert 450 <= turn_end["endpointing_ms"] <= 800   # 500 ms end-of-turn silence + one window


def test_two_sessions_at_once_do_not_mix_audio(speech_dir):
    a, ra = read_wav(speech_dir / "sb_example2_culprit.wav")
    b, rb = read_wav(speech_dir / "sr_english_one_two_three.wav")   # 44.1 kHz

    async def main():
        srv = await start_server()
        try:
            return await asyncio.gather(echo_turn(srv.url, a, ra), echo_turn(srv.url, b[: int(0.6 * rb)], rb))
        finally:
            await srv.stop()

    ca, cb = run(main())
    ea = np.concatenate([x.pcm for x in ca.log.audio])
    eb = np.concatenate([x.pcm for x in cb.log.audio])
    ra16, rb16 = resample(a, ra, 16000), resample(b[: int(0.6 * rb)], rb, 16000)
    assert best_alignment_corr(ea, ra16) > 0.9 and best_alignment_corr(eb, rb16) > 0.9
    assert best_alignment_corr(ea, rb16) < 0.5 and best_alignment_corr(eb, ra16) < 0.5
    assert ca.ready["session_id"] != cb.ready["session_id"]


def test_healthz_and_static_files():
    async def main():
        srv = await start_server()
        try:
            base = f"http://127.0.0.1:{srv.port}"

            def get(path):
                try:
                    with urllib.request.urlopen(base + path, timeout=5) as r:
                        return r.status, r.headers.get("Content-Type"), r.read()
                except urllib.error.HTTPError as e:
                    return e.code, e.headers.get("Content-Type"), e.read()

            return [await asyncio.to_thread(get, p) for p in
                    ("/healthz", "/%2e%2e/pyproject.toml", "/../pyproject.toml", "/nope.js")]
        finally:
            await srv.stop()

    health, trav1, trav2, missing = run(main())
    assert health[0] == 200 and health[1] == "application/json"
    body = json.loads(health[2])
    assert body["status"] == "ok" and "echo" in body["pipelines"] and "silero_vad" in body["models_loaded"]
    for status, _, _ in (trav1, trav2, missing):
        assert status == 404


def test_unknown_default_pipeline_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown pipeline"):
        VoiceServer(ServerConfig(port=0, vad_defaults=FIXED_RULES, pipeline="nonexistent"))


@pytest.mark.parametrize("client", ["answers the close", "reads nothing"])
def test_sigterm_with_an_idle_session_exits_within_a_second(client):
    """`voice serve` with one idle session: SIGTERM to process exit under 1 s, even when the client
    never answers the closing handshake (a frozen tab, a half-open connection)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from websockets.asyncio.client import connect

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("VOICE_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "voice.cli", "serve", "--port", "0", "--pipelines", "echo"],
                            cwd=Path(__file__).resolve().parents[1], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert "ready at" in line, line
        url = line.split("ready at", 1)[1].strip()

        async def main():
            ws = await connect(url, close_timeout=30)
            await ws.send(json.dumps({"type": "hello", "version": 1, "sample_rate": 16000}))
            assert json.loads(await ws.recv())["type"] == "ready"
            if client == "reads nothing":
                ws.transport.pause_reading()
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            while proc.poll() is None and time.monotonic() - t0 < 10:
                await asyncio.sleep(0.01)
            return time.monotonic() - t0

        exit_s = run(main())
        assert proc.returncode == 0
        assert exit_s < 1.0, f"exit took {exit_s:.2f} s"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_healthz_is_readable_by_allowed_origins_only():
    """The browser client probes /healthz across origins (?server=): allowed Origins may read it."""
    from voice.server.security import SecurityConfig

    async def main(srv):
        def get(origin):
            req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/healthz", headers={"Origin": origin})
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.headers.get("Access-Control-Allow-Origin")
        return [await asyncio.to_thread(get, o) for o in
                ("http://app.example.com", "http://evil.example.com", f"http://127.0.0.1:{srv.port}")]

    from tests.conftest import serve
    allowed, refused, same = serve(main, security=SecurityConfig(allowed_origins=("http://app.example.com",)))
    assert allowed == "http://app.example.com" and refused is None
    assert same is not None


def test_a_server_with_the_shipped_turn_models_ends_a_real_turn_by_model_or_fallback(speech_dir):
    """No VAD defaults: the hello's defaults are the turn-taking models shipped in models/turn."""
    from voice.turn.model import BARGE_IN_WEIGHTS, SHIPPED_DIR, WEIGHTS

    assert (SHIPPED_DIR / WEIGHTS).exists() and (SHIPPED_DIR / BARGE_IN_WEIGHTS).exists()
    pcm, rate = read_wav(speech_dir / "ps_librivox_sense_0890.wav")

    async def main():
        srv = VoiceServer(ServerConfig(port=0))
        await srv.start()
        try:
            client = VoiceClient(srv.url, rate, pipeline="echo")
            ready = await client.connect()
            await client.stream(np.concatenate([pcm, np.zeros(int(2.0 * rate), np.float32)]), realtime=False)
            await client.wait_for(lambda e: e.get("type") == "turn_end", 20.0, include_past=True)
            await client.close()
            return ready, client
        finally:
            await srv.stop()

    ready, client = run(main())
    assert ready["turn_detection"] == "model" and ready["barge_in_detection"] == "model"
    stops = client.log.of_type("speech_stopped")
    assert stops and stops[-1]["reason"] in ("model", "max_silence")
    if stops[-1]["reason"] == "model":
        assert 0.0 <= stops[-1]["p_end"] <= 1.0


def test_voice_serve_runs_torch_on_one_thread_per_call_unless_told():
    """`voice serve` asks torch for one thread per call (a second one made the speech LM's first frame later on
    2 cores, docs/e2e.md "Threads"); --torch-threads sets it, 0 leaves torch's own; a library server leaves it."""
    from voice.cli import build_parser
    from voice.server.cli import build_config

    parse = build_parser().parse_args
    assert build_config(parse(["serve"])).torch_threads == 1
    assert build_config(parse(["serve", "--torch-threads", "2"])).torch_threads == 2
    assert build_config(parse(["serve", "--torch-threads", "0"])).torch_threads == 0
    assert ServerConfig().torch_threads == 0


def test_voice_serve_runs_the_speech_lm_in_a_process_of_its_own_unless_told():
    """`voice serve` runs the e2e speech LM in its own process (docs/e2e.md, "The speech LM's own process");
    --speechlm-in-process keeps it on a worker thread; a library server keeps it in-process."""
    from voice.cli import build_parser
    from voice.server.cli import build_config

    parse = build_parser().parse_args
    assert build_config(parse(["serve"])).speechlm_process is True
    assert build_config(parse(["serve", "--speechlm-in-process"])).speechlm_process is False
    assert ServerConfig().speechlm_process is False
