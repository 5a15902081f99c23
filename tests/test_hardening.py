"""Bad input and hostile clients against a real server: each gets its documented error, others go on."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from typing import AsyncIterator

import numpy as np
import pytest
from websockets.asyncio.client import connect

from voice import pipelines
from voice.audio import read_wav
from voice.client import VoiceClient
from voice.frames import AssistantAudio, Frame, SpeechStarted, SpeechStopped
from voice.runtime.stage import Stage
from voice.server.app import ServerConfig, VoiceServer
from voice.server.limits import SessionLimits
from tests.conftest import exchange, run, serve
from websockets.exceptions import ConnectionClosed

HELLO = {"type": "hello", "version": 1, "sample_rate": 16000, "pipeline": "echo"}
HELLO_TEXT = json.dumps(HELLO)


async def with_healthy_session(srv: VoiceServer, attack) -> tuple:
    """Run `attack(url)` while a healthy echo session stays open; return its result and a pong from the healthy one."""
    healthy = VoiceClient(srv.url, 16000, pipeline="echo")
    await healthy.connect()
    try:
        result = await attack(srv.url)
        await healthy.send_json({"type": "ping", "t": 7})
        pong = await healthy.wait_for(lambda e: e["type"] == "pong", 5, include_past=True)
    finally:
        await healthy.close()
    return result, pong


async def settle(srv: VoiceServer, timeout_s: float = 5.0) -> None:
    """Wait until the server has forgotten every session."""
    for _ in range(int(timeout_s / 0.02)):
        if not srv.sessions:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"sessions still open: {list(srv.sessions)}")


RAW_CASES = [
    ("NaN option", HELLO_TEXT.replace("}", ', "options": {"threshold": NaN}}'), "bad_options", 1007),
    ("Infinity option", HELLO_TEXT.replace("}", ', "options": {"end_silence_ms": Infinity}}'), "bad_options", 1007),
    ("huge int option", HELLO_TEXT.replace("}", ', "options": {"min_speech_ms": ' + "9" * 400 + "}}"), "bad_options", 1007),
    ("infinite rate", HELLO_TEXT.replace("16000", "1e999"), "bad_sample_rate", 1007),
    ("negative rate", HELLO_TEXT.replace("16000", "-16000"), "bad_sample_rate", 1007),
    # before the hello, text that is not JSON ends the session (issue 16)
    ("deep nesting", '{"type": "hello", "options": ' + "[" * 50000 + "]" * 50000 + "}", "not_ready", 1002),
]


@pytest.mark.parametrize("name,text,code,close", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_hostile_hello_values(name, text, code, close):
    async def attack(url):
        return await exchange(url, [text], wait_s=0.5)

    (events, close_code), pong = serve(lambda srv: with_healthy_session(srv, attack))
    assert [e["code"] for e in events if e["type"] == "error"][:1] == [code]
    assert close_code == close and pong["t"] == 7


def test_frame_over_the_transport_limit_is_closed_1009():
    async def attack(url):
        return await exchange(url, [HELLO, b"\x00" * (5 << 20)], wait_s=2)

    (events, close_code), pong = serve(lambda srv: with_healthy_session(srv, attack))
    assert close_code == 1009 and pong["t"] == 7


def test_extreme_audio_never_produces_nan(speech_dir):
    """Full-scale square waves, DC at the rail and digital silence, then a real turn: finite echo, no error."""
    speech, rate = read_wav(speech_dir / "ps_cards_002.wav")
    n = rate // 2
    rail = np.full(n, -1.0, np.float32)
    nyquist = np.where(np.arange(n) % 2 == 0, 1.0, -1.0).astype(np.float32)
    clipped = np.clip(speech * 50, -1, 1)                 # heavily clipped real speech

    async def main(srv):
        c = VoiceClient(srv.url, rate, pipeline="echo")
        await c.connect()
        await c.send_raw(b"\x00\x80" * n)                  # -32768 exactly
        await c.send_raw(b"")                              # an empty frame is harmless
        for part in (rail, nyquist, np.zeros(n, np.float32), clipped, np.zeros(rate, np.float32)):
            await c.stream(part, realtime=False)
        await c.wait_for(lambda e: e["type"] == "turn_end", 15, include_past=True)
        await c.close()
        return c

    c = serve(main)
    assert not c.log.of_type("error")
    echoed = np.concatenate([a.pcm for a in c.log.audio])
    assert len(echoed) > 0 and np.isfinite(echoed).all()


def test_control_message_flood_is_rate_limited():
    async def main(srv):
        c = VoiceClient(srv.url, 16000, pipeline="echo")
        await c.connect()
        for i in range(300):
            await c.send_json({"type": "ping", "t": i})
        await asyncio.sleep(1.5)                            # the bucket refills
        await c.send_json({"type": "ping", "t": "after"})
        await c.wait_for(lambda e: e.get("t") == "after", 5, include_past=True)
        await c.close()
        return c

    c = serve(main)
    pongs = c.log.of_type("pong")
    limited = [e for e in c.log.of_type("error") if e["code"] == "rate_limited"]
    assert 1 <= len(limited) <= 3                           # told at most once a second
    assert 35 <= len(pongs) - 1 <= 80                       # the burst (+ refill), not 300
    assert c.close_code is None or c.close_code == 1000


def test_a_flood_of_tiny_frames_is_closed_1008():
    async def attack(url):
        return await exchange(url, [HELLO] + [b"\x00\x00"] * 1500, wait_s=2)

    (events, close_code), pong = serve(lambda srv: with_healthy_session(srv, attack),
                                       limits=SessionLimits(audio_per_s=100, audio_burst=1000))
    assert [e["code"] for e in events if e["type"] == "error"] == ["too_many_messages"]
    assert close_code == 1008 and pong["t"] == 7


def test_sessions_have_a_maximum_duration():
    async def main(srv):
        c = VoiceClient(srv.url, 16000, pipeline="echo")
        await c.connect()
        await asyncio.wait_for(c._recv_task, 5)
        return c

    c = serve(main, limits=SessionLimits(max_session_s=0.7))
    assert c.log.of_type("error")[0]["code"] == "session_too_long" and c.close_code == 1008


class FirehoseStage(Stage):
    """Test-only: from the first speech on, yields answer audio forever (faster than any client reads)."""

    name = "firehose"
    produced = 0

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if isinstance(frame, SpeechStarted):
            chunk = (np.random.default_rng(0).standard_normal(1600) * 0.1).astype(np.float32)   # 100 ms
            while True:
                FirehoseStage.produced += 1
                yield AssistantAudio(turn_id=frame.turn_id, pcm=chunk, sample_rate_hz=16000)
                await asyncio.sleep(0)


class ExplodeStage(Stage):
    """Test-only: raises at the end of every turn."""

    name = "explode"

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if isinstance(frame, SpeechStopped):
            raise RuntimeError("boom at the end of the turn")
        yield frame


@pytest.fixture
def test_pipelines():
    names = {"test_firehose": FirehoseStage, "test_explode": ExplodeStage}
    for name, cls in names.items():
        pipelines.register(pipelines.PipelineDef(name, "test only", lambda o, m, cls=cls: [cls()], lambda o, m: 16000))
    yield
    for name in names:
        pipelines._REGISTRY.pop(name, None)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def test_a_client_that_never_reads_cannot_grow_server_memory(test_pipelines, speech_dir):
    speech, rate = read_wav(speech_dir / "ps_cards_002.wav")
    pcm16 = (np.clip(speech, -1, 1) * 32767).astype("<i2").tobytes()

    async def main(srv):
        FirehoseStage.produced = 0
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.connect(("127.0.0.1", srv.port))
        rss0 = rss_mb()
        async with connect(srv.url, sock=sock, max_queue=1, compression=None, close_timeout=0.5) as ws:
            await ws.send(json.dumps({**HELLO, "pipeline": "test_firehose"}))
            await ws.recv()                                     # ready; then never read again
            try:
                for i in range(0, len(pcm16), 640):
                    await ws.send(pcm16[i:i + 640])
            except ConnectionClosed:
                pass
            samples = []
            for _ in range(40):                                 # until the send timeout ends it
                samples.append((FirehoseStage.produced, rss_mb() - rss0))
                if not srv.sessions:
                    break
                await asyncio.sleep(0.1)
        await settle(srv)
        return samples

    samples = serve(main, limits=SessionLimits(send_timeout_s=1.5))
    produced = [p for p, _ in samples]
    assert produced[-1] > 300                 # it did flood us...
    assert produced[-1] < 3000                # ...but was stopped by the bounded queues (about 256 + 2 x 64 + socket)
    assert len(samples) < 40                  # the session was closed by the send timeout
    assert max(mb for _, mb in samples) < 60  # an unbounded outbox would hold ~3 MB per 1000 chunks, forever


def test_stage_failure_ends_only_that_session(test_pipelines, speech_dir):
    speech, rate = read_wav(speech_dir / "ps_cards_002.wav")
    turn = np.concatenate([speech, np.zeros(rate, np.float32)])

    async def one(url, pipeline):
        c = VoiceClient(url, rate, pipeline=pipeline)
        await c.connect()
        try:
            await c.stream(turn)
        except ConnectionClosed:
            pass                    # the failing session is closed while its turn's tail is still sent
        await c.wait_for(lambda e: e["type"] in ("turn_end", "_closed"), 10, include_past=True)
        if pipeline == "test_explode":
            await asyncio.wait_for(c._recv_task, 5)
        await c.close()
        return c

    async def main(srv):
        return await asyncio.gather(one(srv.url, "test_explode"), one(srv.url, "echo"))

    bad, good = serve(main)
    errors = bad.log.of_type("error")
    assert [e["code"] for e in errors] == ["stage_failed"] and "explode" in errors[0]["message"]
    assert bad.close_code == 1011
    assert good.log.of_type("turn_end") and good.log.audio and not good.log.of_type("error")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_abrupt_disconnect_mid_answer_leaks_nothing(speech_dir):
    speech, rate = read_wav(speech_dir / "ps_librivox_sense_0890.wav")       # 5.3 s: a long answer
    pcm16 = (np.clip(np.concatenate([speech, np.zeros(rate, np.float32)]), -1, 1) * 32767).astype("<i2").tobytes()

    async def once(srv):
        async with connect(srv.url, compression=None) as ws:
            await ws.send(json.dumps(HELLO))
            for i in range(0, len(pcm16), 640):
                await ws.send(pcm16[i:i + 640])
            while True:                                        # until the answer is on its way
                m = await asyncio.wait_for(ws.recv(), 10)
                if isinstance(m, str) and json.loads(m)["type"] == "audio_start":
                    break
            ws.transport.abort()                               # vanish mid-answer, no close frame
        await settle(srv)

    async def main(srv):
        await once(srv)                                        # warm-up: first-use allocations
        tasks0, fds0 = len(asyncio.all_tasks()), _fds()
        for _ in range(3):
            await once(srv)
        await asyncio.sleep(0.2)
        return tasks0, fds0, len(asyncio.all_tasks()), _fds()

    tasks0, fds0, tasks1, fds1 = serve(main)
    assert tasks1 == tasks0 and fds1 == fds0


def test_long_sessions_do_not_accumulate_per_turn_state(speech_dir):
    """Turn after turn, the session keeps no per-turn records once the turn is reported (flat memory)."""
    speech, rate = read_wav(speech_dir / "ps_cards_004.wav")
    turn = np.concatenate([speech, np.zeros(rate, np.float32)])

    async def main(srv):
        c = VoiceClient(srv.url, rate, pipeline="echo")
        await c.connect()
        session = next(iter(srv.sessions.values()))
        sizes = []
        for i in range(4):
            await c.stream(turn, realtime=False)
            await c.wait_for(lambda e: e["type"] == "turn_end" and e["turn"] == i + 1, 10, include_past=True)
            sizes.append((len(session.tracer._events), sum(len(v) for v in session.tracer._events.values()),
                          len(session._first_audio_sent), len(session._endpointing_ms)))
        await c.close()
        return sizes

    sizes = serve(main)
    assert all(turns <= 2 and n_first == 0 and n_end == 0 for turns, _, n_first, n_end in sizes), sizes
    assert sizes[-1][1] <= sizes[0][1] + 50, sizes     # records do not pile up turn after turn


def test_loop_lag_monitor_sees_a_starved_loop():
    import time

    from voice.server.limits import LoopLagMonitor

    async def main():
        mon = LoopLagMonitor(interval_s=0.05, smoothing=0.5)
        task = asyncio.create_task(mon.run())
        await asyncio.sleep(0.3)
        idle = mon.lag_ms
        for _ in range(6):                   # CPU-bound work hogging the loop, as when the server is starved
            time.sleep(0.15)
            await asyncio.sleep(0)
        busy = mon.lag_ms
        task.cancel()
        return idle, busy

    idle, busy = run(main())
    assert idle < 50 and busy > 60, (idle, busy)


def test_an_overloaded_server_refuses_new_sessions_with_1013():
    async def main(srv):
        srv._lag_task.cancel()               # freeze the measurement: pretend the loop runs 900 ms behind
        srv.lag.lag_ms = 900.0
        events, close_code = await exchange(srv.url, [HELLO], wait_s=2)
        srv.lag.lag_ms = 0.0
        c = VoiceClient(srv.url, 16000, pipeline="echo")
        ready = await c.connect()
        await c.close()
        return events, close_code, ready

    events, close_code, ready = serve(main)
    assert events[0]["code"] == "server_full" and "overloaded" in events[0]["message"] and close_code == 1013
    assert ready["type"] == "ready"
