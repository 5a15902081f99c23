"""Shared fixtures: real recordings, a real in-process server on a loopback port."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
from voice.assets import SPEECH_DIR  # the real recordings the package carries  # noqa: E402


def speech_files() -> list[Path]:
    return sorted(SPEECH_DIR.glob("*.wav"))


def speech_transcripts() -> dict[str, str]:
    out = {}
    with open(SPEECH_DIR / "manifest.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            name = row.get("file") or row.get("filename") or row.get("path") or next(iter(row.values()))
            out[Path(name).name] = row.get("transcript", "")
    return out


@pytest.fixture
def speech_dir() -> Path:
    assert SPEECH_DIR.is_dir(), f"{SPEECH_DIR} is missing: the recordings are part of the checkout"
    return SPEECH_DIR


def run(coro, timeout_s: float = 120.0):
    """Run a coroutine in a fresh event loop with a hard timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


# Tests of the transport, the protocol and the pipelines run the VAD's fixed rules (a silence of
# end_silence_ms ends a turn, barge_in_min_speech_ms of speech interrupts), so that their timing does
# not hang on what a trained model says; the turn-taking models are tested in test_turn*.py and in
# test_server.py's model-mode turn.
FIXED_RULES = {"turn_detection": "silence", "barge_in_detection": "duration"}


def serve(coro_fn, **config):
    """Run `coro_fn(server)` against a real server on a loopback port started with `config`."""
    from voice.server.app import ServerConfig, VoiceServer

    config.setdefault("vad_defaults", FIXED_RULES)

    async def main():
        srv = VoiceServer(ServerConfig(port=0, **config))
        await srv.start()
        try:
            return await coro_fn(srv)
        finally:
            await srv.stop()
    return run(main())


async def exchange(url: str, messages: list, wait_s: float = 1.0) -> tuple[list[dict], int | None]:
    """Send raw messages; the JSON events received and the close code (None if still open after `wait_s`)."""
    events: list[dict] = []
    ws = await connect(url, max_size=None, compression=None)
    close_code = None
    try:
        for m in messages:
            await ws.send(json.dumps(m) if isinstance(m, dict) else m)
    except Exception:
        pass                       # the server closed while we were still sending
    try:
        while True:
            msg = await asyncio.wait_for(ws.recv(), wait_s)
            if isinstance(msg, str):
                events.append(json.loads(msg))
    except asyncio.TimeoutError:
        pass
    except Exception:
        close_code = ws.close_code
    try:
        await ws.close()
    except Exception:
        pass
    return events, close_code


async def play_turn(url: str, pcm, rate: int, pipeline: str = "echo", timeout_s: float = 10.0):
    """One user turn from a real client (the audio, then 0.8 s of silence); the client once the turn ended."""
    import numpy as np

    from voice.client import VoiceClient

    client = VoiceClient(url, rate, pipeline=pipeline)
    await client.connect()
    await client.stream(np.concatenate([pcm, np.zeros(int(0.8 * rate), np.float32)]))
    await client.wait_for(lambda e: e["type"] == "turn_end", timeout_s, include_past=True)
    await client.close()
    return client


def assert_barge_in(client) -> float:
    """Checks a client's log after speech cut the answer to turn 1 (turn 2 barged in); returns the clear's time.

    The clear names turn 1; turn 1 was either cut while being made (`turn_end` interrupted, after the clear)
    or while playing (its `turn_end` came before the clear); none of its audio arrives after the clear; the
    barge-in turn is answered in full."""
    events = client.log.events
    clear_t, clear = next((t, e) for t, e in events if e["type"] == "clear")
    assert clear["reason"] == "barge_in" and clear["turns"] == [1]
    ended = [(t, e) for t, e in events if e["type"] == "turn_end" and e["turn"] == 1]
    assert len(ended) == 1 and (ended[0][1]["interrupted"] or ended[0][0] < clear_t)
    assert not [a for a in client.log.audio if a.turn_id == 1 and a.t_s > clear_t]
    assert any(e["turn"] == 2 and not e["interrupted"] for e in client.log.of_type("turn_end"))
    return clear_t


def hello_error(pipeline: str, options: dict) -> str:
    """The error a server (with nothing warmed up) answers to a hello naming `pipeline` with `options`."""
    from voice.client import VoiceClient

    async def go(srv):
        client = VoiceClient(srv.url, 16000, pipeline, options)
        with pytest.raises(ConnectionError) as err:
            await client.connect()
        await client.close()
        return str(err.value)
    return serve(go, pipeline="echo", warmup=False)


def cancel_after_first_token(llm, max_new_tokens: int):
    """Start a long generation, cancel it at its first token; (generation, seconds to stop, worker still alive)."""
    import threading
    import time

    cancel, first, result = threading.Event(), threading.Event(), {}
    messages = [{"role": "user", "content": "Tell me a long story about a dragon."}]
    worker = threading.Thread(target=lambda: result.update(
        g=llm.generate(messages, max_new_tokens, lambda text: first.set(), cancel)))
    worker.start()
    assert first.wait(30.0), "no first token within 30 s"
    cancel.set()
    t0 = time.monotonic()
    worker.join(5.0)
    return result.get("g"), time.monotonic() - t0, worker.is_alive()

