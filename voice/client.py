"""`voice.client`: an asyncio client for protocol v1, used by `voice talk`, the bench and the tests."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from voice.audio import float_to_pcm16, pcm16_to_float
from voice.protocol import PROTOCOL_VERSION

log = logging.getLogger(__name__)
DEFAULT_URL = "ws://127.0.0.1:8765/ws"


@dataclass
class ReceivedAudio:
    t_s: float          # monotonic arrival time
    turn_id: int        # the turn named by the last audio_start
    pcm: np.ndarray     # float32 at the server's output rate


@dataclass
class ClientLog:
    """Everything a session received, stamped with the client's monotonic clock."""

    events: list[tuple[float, dict]] = field(default_factory=list)
    audio: list[ReceivedAudio] = field(default_factory=list)

    def of_type(self, kind: str) -> list[dict]:
        return [e for _, e in self.events if e.get("type") == kind]


class VoiceClient:
    """Connect, say hello, stream PCM, receive events and audio (in a background task)."""

    def __init__(self, url: str = DEFAULT_URL, sample_rate_hz: int = 16000, pipeline: str | None = None,
                 options: dict[str, Any] | None = None,
                 on_event: Callable[[float, dict], None] | None = None,
                 on_audio: Callable[[ReceivedAudio], None] | None = None) -> None:
        self.url, self.sample_rate_hz, self.pipeline = url, sample_rate_hz, pipeline
        self.options = options or {}
        self.on_event, self.on_audio = on_event, on_audio
        self.log = ClientLog()
        self.ready: dict | None = None
        # hello options the server did not use (`ready.ignored_options`: a typo, or another pipeline's
        # option); empty until connect() and when every option was used. Show or log a non-empty list.
        self.ignored_options: list[str] = []
        self.output_rate_hz = 16000
        self.close_code: int | None = None
        self.close_reason = ""
        self._ws: ClientConnection | None = None
        self._recv_task: asyncio.Task | None = None
        self._turn = 0
        self._event_waiters: list[tuple[Callable[[dict], bool], asyncio.Future]] = []

    async def connect(self, timeout_s: float = 30.0) -> dict:
        """Open the socket and do the hello / ready handshake; returns the ready event."""
        self._ws = await connect(self.url, max_size=8 << 20, compression=None, open_timeout=timeout_s)
        self._recv_task = asyncio.create_task(self._receive())
        hello = {"type": "hello", "version": PROTOCOL_VERSION, "sample_rate": self.sample_rate_hz,
                 "options": self.options}
        if self.pipeline:
            hello["pipeline"] = self.pipeline
        await self.send_json(hello)
        ready = await self.wait_for(lambda e: e.get("type") in ("ready", "error"), timeout_s)
        if ready["type"] == "error":
            raise ConnectionError(f"server refused the session: {ready.get('code')}: {ready.get('message')}")
        self.ready = ready
        self.output_rate_hz = int(ready["sample_rate"])
        self.ignored_options = sorted(str(k) for k in ready.get("ignored_options") or [])
        return ready

    async def send_json(self, message: dict) -> None:
        assert self._ws is not None, "connect() first"
        await self._ws.send(json.dumps(message))

    async def send_raw(self, message: bytes | str) -> None:
        assert self._ws is not None, "connect() first"
        await self._ws.send(message)

    async def send_audio(self, pcm: np.ndarray) -> None:
        await self.send_raw(float_to_pcm16(pcm))

    async def interrupt(self) -> None:
        await self.send_json({"type": "interrupt"})

    async def new_conversation(self) -> None:
        """Stop the answer and let the server forget the dialogue (it answers `clear`, then `conversation_reset`)."""
        await self.send_json({"type": "new_conversation"})

    async def stream(self, pcm: np.ndarray, chunk_ms: float = 20.0, realtime: bool = True) -> float:
        """Send `pcm` (at the hello's rate) in chunks, paced like a microphone when `realtime`.

        A chunk is sent when a microphone would have finished recording it. Returns the
        monotonic time at which sample 0 would have been captured (the stream's time origin).
        """
        step = max(1, int(self.sample_rate_hz * chunk_ms / 1000))
        t0 = time.monotonic()
        for i in range(0, len(pcm), step):
            chunk = pcm[i:i + step]
            if realtime:
                due = t0 + (i + len(chunk)) / self.sample_rate_hz
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self.send_audio(chunk)
        return t0

    async def wait_for(self, predicate: Callable[[dict], bool], timeout_s: float = 30.0,
                       include_past: bool = False) -> dict:
        """Wait for the next event matching `predicate` (or the first received so far, if `include_past`)."""
        if include_past:
            for _, event in self.log.events:
                if predicate(event):
                    return event
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._event_waiters.append((predicate, fut))
        try:
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self._event_waiters = [(p, f) for p, f in self._event_waiters if f is not fut]

    async def close(self) -> None:
        if self._ws is not None:
            try:
                await self.send_json({"type": "bye"})
            except Exception:
                pass
            await self._ws.close()
        if self._recv_task is not None:
            await asyncio.gather(self._recv_task, return_exceptions=True)

    async def __aenter__(self) -> "VoiceClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _receive(self) -> None:
        assert self._ws is not None
        try:
            async for message in self._ws:
                t = time.monotonic()
                if isinstance(message, bytes):
                    item = ReceivedAudio(t, self._turn, pcm16_to_float(message))
                    self.log.audio.append(item)
                    if self.on_audio:
                        self.on_audio(item)
                    continue
                event = json.loads(message)
                if event.get("type") == "audio_start":
                    self._turn = int(event.get("turn", 0))
                self.log.events.append((t, event))
                if self.on_event:
                    self.on_event(t, event)
                for pred, fut in list(self._event_waiters):
                    if not fut.done() and pred(event):
                        fut.set_result(event)
        except Exception as exc:
            log.debug("receive loop ended: %s", exc)
        finally:
            if self._ws is not None and self._ws.close_code is not None:
                self.close_code, self.close_reason = self._ws.close_code, self._ws.close_reason or ""
            closed = {"type": "_closed", "code": self.close_code, "reason": self.close_reason}
            self.log.events.append((time.monotonic(), closed))
            for pred, fut in self._event_waiters:
                if not fut.done():
                    fut.set_exception(ConnectionError(f"connection closed ({self.close_code} {self.close_reason})"))
