"""One client session: protocol handling, the VAD head plus a pipeline, and the outgoing stream."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from voice import pipelines
from voice.audio import float_to_pcm16, pcm16_to_float
from voice.frames import (AssistantAudio, AssistantText, ErrorFrame, Frame, Metric, SpeechStarted,
                          SpeechStopped, Transcript, TurnEnd, UserAudio, now_s)
from voice.protocol import (CLOSE_INTERNAL_ERROR, CLOSE_NORMAL, MAX_MESSAGE_BYTES, PROTOCOL_VERSION,
                            Hello, ProtocolError, parse_hello, parse_text)
from voice.runtime.pipeline import Pipeline
from voice.runtime.tracer import Tracer
from voice.stages.vad import VadConfig, VadStage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionLimits:
    max_message_bytes: int = MAX_MESSAGE_BYTES
    outbox_size: int = 256          # messages waiting for the socket (bounded: a slow reader stalls us)
    queue_size: int = 64            # frames between stages


class Close(Exception):
    """Ends the session with a close code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class Session:
    """Owns one connection's state. `run()` returns when the connection ends."""

    def __init__(self, ws, models: pipelines.ModelCache, pipeline_names: list[str], default_pipeline: str,
                 limits: SessionLimits | None = None) -> None:
        self.ws = ws
        self.models = models
        self.pipeline_names = pipeline_names
        self.default_pipeline = default_pipeline
        self.limits = limits or SessionLimits()
        self.session_id = uuid.uuid4().hex[:12]
        self.hello: Hello | None = None
        self.pipeline: Pipeline | None = None
        self.tracer = Tracer()
        self.outbox: asyncio.Queue[bytes | str | Close] = asyncio.Queue(self.limits.outbox_size)
        self.output_rate_hz = 16000
        self._samples_in = 0                  # client-rate samples received (the input timeline)
        self._arrival: list[tuple[float, float]] = []   # (stream_s, monotonic arrival) every chunk, recent
        self._answering: set[int] = set()     # turns handed to the pipeline and not yet finished
        self._cancelled_upto = 0              # assistant output of turns <= this is dropped
        self._playback_end_s = 0.0            # when the client will have played what we sent
        self._last_audio_turn = 0             # the turn whose audio was sent last
        self._first_audio_sent: set[int] = set()
        self._tasks: list[asyncio.Task] = []
        self._pending_head: list[dict] = []   # VAD events to send once the current push returns
        self._endpointing_ms: dict[int, float] = {}

    # ---- StageContext -------------------------------------------------------------------
    def assistant_active(self) -> bool:
        return bool(self._answering) or now_s() < self._playback_end_s

    async def interrupt(self, reason: str) -> None:
        """Stop the answer everywhere: pipeline work, queued output, and the client's playback buffer."""
        if self.pipeline is None:
            return
        unfinished = sorted(self._answering)
        playing = [self._last_audio_turn] if now_s() < self._playback_end_s and self._last_audio_turn else []
        turns = sorted(set(unfinished + playing))
        self._cancelled_upto = max([self._cancelled_upto, *turns])
        await self.pipeline.interrupt()
        self._drain_outbox()
        self._playback_end_s = 0.0
        self._answering.clear()
        await self._send_event({"type": "clear", "reason": reason, "turns": turns})
        for turn in unfinished:
            await self._send_event(self._turn_end_event(turn, interrupted=True))

    # ---- main loop ----------------------------------------------------------------------
    async def run(self) -> None:
        writer = asyncio.create_task(self._writer(), name=f"writer:{self.session_id}")
        self._tasks.append(writer)
        close = Close(CLOSE_NORMAL, "bye")
        try:
            async for message in self.ws:
                try:
                    await self._on_message(message)
                except ProtocolError as err:
                    await self._send_event(err.event())
                    if err.close_code is not None:
                        close = Close(err.close_code, err.code)
                        break
                except Close as c:
                    close = c
                    break
        except Exception as exc:  # the connection broke; nothing to tell the client
            log.info("session %s: connection ended: %s", self.session_id, exc)
        finally:
            await self._shutdown(close)

    async def _on_message(self, message: bytes | str) -> None:
        if len(message) > self.limits.max_message_bytes:
            raise ProtocolError("message_too_big", f"message of {len(message)} bytes exceeds {self.limits.max_message_bytes}")
        if isinstance(message, bytes):
            await self._on_audio(message)
            return
        msg = parse_text(message)
        kind = msg["type"]
        if kind == "hello":
            await self._on_hello(msg)
        elif self.hello is None:
            raise ProtocolError("not_ready", f"send hello before {kind!r}")
        elif kind == "interrupt":
            await self.interrupt("client")
        elif kind == "ping":
            await self._send_event({"type": "pong", "t": msg.get("t")})
        elif kind == "bye":
            raise Close(CLOSE_NORMAL, "bye")

    async def _on_hello(self, msg: dict[str, Any]) -> None:
        if self.hello is not None:
            raise ProtocolError("duplicate_hello", "this session already said hello")
        hello = parse_hello(msg, self.pipeline_names, self.default_pipeline)
        try:
            vad_config = VadConfig.from_options(hello.options)
        except (TypeError, ValueError) as exc:
            raise ProtocolError("bad_options", str(exc)) from None
        defn = pipelines.get(hello.pipeline)
        stages = [VadStage(hello.sample_rate_hz, vad_config), *defn.build(hello.options, self.models)]
        for stage in stages:
            stage.bind(self)
        self.output_rate_hz = defn.output_sample_rate_hz(hello.options, self.models)
        self.pipeline = Pipeline(stages, queue_size=self.limits.queue_size, tracer=self.tracer,
                                 on_stage_error=self._on_stage_error, head_observer=self.on_head_frame)
        await self.pipeline.start()
        self.hello = hello
        self._tasks.append(asyncio.create_task(self._reader(), name=f"reader:{self.session_id}"))
        await self._send_event({"type": "ready", "version": PROTOCOL_VERSION, "session_id": self.session_id,
                                "pipeline": hello.pipeline, "input_sample_rate": hello.sample_rate_hz,
                                "sample_rate": self.output_rate_hz})

    async def _on_audio(self, data: bytes) -> None:
        if self.hello is None or self.pipeline is None:
            raise ProtocolError("not_ready", "binary audio before hello")
        try:
            pcm = pcm16_to_float(data)
        except ValueError as exc:
            raise ProtocolError("bad_audio", str(exc)) from None
        rate = self.hello.sample_rate_hz
        frame = UserAudio(pcm=pcm, sample_rate_hz=rate, stream_s=self._samples_in / rate)
        self._samples_in += len(pcm)
        self._arrival.append((self._samples_in / rate, frame.created_s))
        if len(self._arrival) > 4096:
            del self._arrival[:2048]
        await self.pipeline.push(frame)
        events, self._pending_head = self._pending_head, []
        for ev in events:
            await self._send_event(ev)

    # ---- outgoing -----------------------------------------------------------------------
    async def _reader(self) -> None:
        """Turns the pipeline's output frames into protocol messages."""
        assert self.pipeline is not None
        while True:
            frame = await self.pipeline.output.get()
            await self._on_output(frame)

    async def _on_output(self, frame: Frame) -> None:
        if isinstance(frame, AssistantAudio):
            if frame.turn_id <= self._cancelled_upto or len(frame.pcm) == 0:
                return
            if frame.turn_id not in self._first_audio_sent:
                self._first_audio_sent.add(frame.turn_id)
                self.tracer.record("ws_out", frame)
                await self._send_event({"type": "audio_start", "turn": frame.turn_id, "sample_rate": self.output_rate_hz})
            self._last_audio_turn = frame.turn_id
            pcm = frame.pcm if frame.sample_rate_hz == self.output_rate_hz else _resample(frame, self.output_rate_hz)
            await self._send(float_to_pcm16(pcm))
            self._playback_end_s = max(self._playback_end_s, now_s()) + len(pcm) / self.output_rate_hz
        elif isinstance(frame, AssistantText):
            if frame.turn_id > self._cancelled_upto:
                await self._send_event({"type": "assistant_text", "turn": frame.turn_id, "text": frame.text, "final": frame.final})
        elif isinstance(frame, Transcript):
            await self._send_event({"type": "transcript", "turn": frame.turn_id, "text": frame.text, "final": frame.final})
        elif isinstance(frame, TurnEnd):
            if frame.turn_id > self._cancelled_upto:
                self._answering.discard(frame.turn_id)
                await self._send_event(self._turn_end_event(frame.turn_id, frame.interrupted))
        elif isinstance(frame, Metric):
            await self._send_event({"type": "metric", "turn": frame.turn_id, "name": frame.name, "value": frame.value})
        elif isinstance(frame, ErrorFrame):
            await self._send_event({"type": "error", "code": frame.code, "message": frame.message})

    def on_head_frame(self, frame: Frame) -> None:
        """Called by the pipeline for every frame the VAD head emits."""
        if isinstance(frame, SpeechStarted):
            self._pending_head.append({"type": "speech_started", "turn": frame.turn_id, "t": frame.stream_s})
        elif isinstance(frame, SpeechStopped):
            self._answering.add(frame.turn_id)
            arrived = self._arrival_of(frame.stream_s)
            if arrived is not None:
                self._endpointing_ms[frame.turn_id] = round((frame.created_s - arrived) * 1000, 1)
            self._pending_head.append({"type": "speech_stopped", "turn": frame.turn_id, "t": frame.stream_s,
                                       "start": frame.speech_start_s})

    def _turn_end_event(self, turn: int, interrupted: bool) -> dict:
        return {"type": "turn_end", "turn": turn, "interrupted": interrupted,
                "timings_ms": self.tracer.turn_timings_ms(turn), "endpointing_ms": self._endpointing_ms.pop(turn, None)}

    def _arrival_of(self, stream_s: float) -> float | None:
        """When the audio at `stream_s` on the input timeline reached the server."""
        for end_s, t in self._arrival:
            if end_s >= stream_s:
                return t
        return None

    async def _send_event(self, event: dict) -> None:
        await self._send(json.dumps(event))

    async def _send(self, message: bytes | str) -> None:
        await self.outbox.put(message)

    def _drain_outbox(self) -> None:
        """Drop queued answer audio (events are kept: the client still needs them)."""
        kept = []
        while not self.outbox.empty():
            m = self.outbox.get_nowait()
            if not isinstance(m, bytes):
                kept.append(m)
        for m in kept:
            self.outbox.put_nowait(m)

    async def _writer(self) -> None:
        while True:
            message = await self.outbox.get()
            if isinstance(message, Close):
                return
            await self.ws.send(message)

    async def _on_stage_error(self, stage, exc: BaseException) -> None:
        await self._send(Close(CLOSE_INTERNAL_ERROR, "stage_failed"))

    async def _shutdown(self, close: Close) -> None:
        for t in self._tasks[1:]:
            t.cancel()
        if self.pipeline is not None:
            await self.pipeline.stop()
        writer = self._tasks[0]
        try:
            self.outbox.put_nowait(Close(close.code, close.reason))
            await asyncio.wait_for(writer, timeout=2.0)
        except (asyncio.QueueFull, asyncio.TimeoutError, Exception):
            writer.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.ws.close(close.code, close.reason)
        except Exception:
            pass


def _resample(frame: AssistantAudio, rate: int) -> np.ndarray:
    from voice.audio import resample

    return resample(frame.pcm, frame.sample_rate_hz, rate)
