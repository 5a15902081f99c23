"""One client session: protocol handling, the VAD head plus a pipeline, and the outgoing stream."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any, Callable

import numpy as np
from websockets.exceptions import ConnectionClosed

from voice import pipelines
from voice.audio import float_to_pcm16, pcm16_to_float
from voice.frames import (AssistantAudio, AssistantText, ErrorFrame, Frame, Metric, SpeechStarted,
                          SpeechStopped, Transcript, TurnConfirmed, TurnEnd, UserAudio, now_s)
from voice.protocol import (CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR, CLOSE_NORMAL, CLOSE_POLICY, PROTOCOL_VERSION,
                            AskedOptions, Hello, ProtocolError, parse_hello, parse_text)
from voice.runtime.pipeline import Pipeline
from voice.runtime.tracer import Tracer
from voice.server.answer_onset import AnswerOnset
from voice.server.limits import SessionLimits, TokenBucket
from voice.stages.vad import VadConfig, VadStage, load_barge_in_detector, load_turn_detector

log = logging.getLogger(__name__)
__all__ = ["Close", "Session", "SessionLimits"]


class Close(Exception):
    """Ends the session with a close code; `handshake_s` caps the wait for the client's close reply
    (None: the connection's close timeout)."""

    def __init__(self, code: int, reason: str, handshake_s: float | None = None) -> None:
        super().__init__(reason)
        self.code, self.reason, self.handshake_s = code, reason, handshake_s


class Session:
    """Owns one connection's state. `run()` returns when the connection ends."""

    def __init__(self, ws, models: pipelines.ModelCache, pipeline_names: list[str], default_pipeline: str,
                 limits: SessionLimits | None = None, vad_defaults: dict | None = None,
                 spare_cores: Callable[[], bool] | None = None) -> None:
        self.ws = ws
        self._spare_cores = spare_cores       # the server's: whether work that may be thrown away is affordable
        self.vad_defaults = dict(vad_defaults or {})   # the server's VAD options, under the hello's own
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
        self._last_audio_sent_s = 0.0         # seconds of that turn's audio sent
        self._last_audio_cut_s: float | None = None   # seconds of it played when an interrupt cleared it
        self._first_audio_sent: set[int] = set()
        self._onsets: dict[int, AnswerOnset] = {}   # per answer: its leading silence, held until the first sound
        self._tasks: list[asyncio.Task] = []
        self._pending_head: list[dict] = []   # VAD events to send once the current push returns
        # speculative starts: a turn's output held until the VAD confirms its end (None: an interrupt
        # cancelled it meanwhile); the turns confirmed in the current push, to release after it
        self._held: dict[int, list[Frame] | None] = {}
        self._speculated_s: dict[int, float] = {}
        self._taken_back: dict[int, int] = {}  # answers started speculatively and taken back, per turn
        self._to_release: list[int] = []
        self._output_lock = asyncio.Lock()    # one output frame at a time: a release or a retract never interleaves
        self._endpointing_ms: dict[int, float] = {}
        self._ended: asyncio.Future[Close] | None = None
        self._control_bucket = TokenBucket(self.limits.control_per_s, self.limits.control_burst)
        self._audio_bucket = TokenBucket(self.limits.audio_per_s, self.limits.audio_burst)
        self._rate_error_s = float("-inf")
        self._hello_received = False
        self.close_code: int | None = None

    # ---- StageContext -------------------------------------------------------------------
    def assistant_active(self) -> bool:
        return bool(self._answering) or now_s() < self._playback_end_s

    def may_speculate_early(self) -> bool:
        return self._spare_cores is None or self._spare_cores()

    def answer_played_s(self, turn_id: int) -> float | None:
        """Seconds of the answer to `turn_id` the client has played: the audio sent minus what is still ahead
        of the playback clock (`_playback_end_s`), or, once an interrupt cleared it, what had been played
        then. Audio still in transit counts as played (the estimate errs by the transport delay)."""
        if turn_id != self._last_audio_turn:
            return 0.0 if turn_id > self._last_audio_turn else None
        if self._last_audio_cut_s is not None:
            return self._last_audio_cut_s
        return max(0.0, self._last_audio_sent_s - max(0.0, self._playback_end_s - now_s()))

    async def interrupt(self, reason: str, new_conversation: bool = False) -> None:
        """Stop the answer everywhere: pipeline work, queued output, and the client's playback buffer.
        With `new_conversation` the stages also forget the dialogue so far (`Pipeline.new_conversation`)."""
        if self.pipeline is None:
            return
        unfinished = sorted(self._answering)
        playing = [self._last_audio_turn] if now_s() < self._playback_end_s and self._last_audio_turn else []
        turns = sorted(set(unfinished + playing))
        self._cancelled_upto = max([self._cancelled_upto, *turns])
        if self._last_audio_turn in turns:       # what the stages' reset learns was played (answer_played_s)
            self._last_audio_cut_s = self.answer_played_s(self._last_audio_turn)
        for turn in self._held:               # answers started speculatively: nothing more of them will come
            self._held[turn] = None
        await (self.pipeline.new_conversation() if new_conversation else self.pipeline.interrupt())
        self._drain_outbox()
        self._playback_end_s = 0.0
        self._answering.clear()
        await self._send_event({"type": "clear", "reason": reason, "turns": turns})
        for turn in unfinished:
            await self._send_event(self._turn_end_event(turn, interrupted=True))

    async def retract(self, turn_id: int) -> None:
        """The VAD takes back a speculative end of `turn_id`: cancel the answer started for it and drop
        what of it was held, without a trace for the client (no `clear`, no events)."""
        if self.pipeline is None:
            return
        async with self._output_lock:
            await self.pipeline.retract(turn_id)
            self._held.pop(turn_id, None)
            self._speculated_s.pop(turn_id, None)
            self._taken_back[turn_id] = self._taken_back.get(turn_id, 0) + 1
            self.tracer.forget(turn_id)   # the turn's timings start again at its real end
        log.debug("session %s: speculative answer to turn %d taken back", self.session_id, turn_id)

    # ---- main loop ----------------------------------------------------------------------
    def end(self, close: Close, event: dict | None = None) -> None:
        """Ask the session to end (from any task): send `event` if given, then close with `close`."""
        if self._ended is None or self._ended.done():
            return
        if event is not None:
            self._send_nowait(json.dumps(event))
        self._ended.set_result(close)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._ended = loop.create_future()
        self._tasks.append(asyncio.create_task(self._writer(), name=f"writer:{self.session_id}"))
        receiver = asyncio.create_task(self._receive(), name=f"receive:{self.session_id}")
        timers = [loop.call_later(self.limits.hello_timeout_s, self._hello_deadline),
                  loop.call_later(self.limits.max_session_s, self._session_deadline)]
        close = Close(CLOSE_GOING_AWAY, "server_shutdown")
        try:
            close = await self._ended
        finally:
            for timer in timers:
                timer.cancel()
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
            await self._shutdown(close)

    async def _receive(self) -> None:
        """Read client messages until the connection ends or a fatal error; then `end()` the session."""
        try:
            async for message in self.ws:
                try:
                    await self._on_message(message)
                except ProtocolError as err:
                    if err.close_code is not None:
                        self.end(Close(err.close_code, err.code), err.event())
                        return
                    await self._send_event(err.event())
                except Close as c:
                    self.end(c)
                    return
            self.end(Close(CLOSE_NORMAL, "closed"))
        except ConnectionClosed as exc:  # the connection broke; nothing to tell the client
            log.info("session %s: connection ended: %s", self.session_id, exc)
            self.end(Close(CLOSE_NORMAL, "closed"))
        except Exception as exc:
            log.exception("session %s: internal error", self.session_id)
            self.end(Close(CLOSE_INTERNAL_ERROR, "internal_error"),
                     {"type": "error", "code": "internal_error", "message": f"server error ({type(exc).__name__})"})

    def _hello_deadline(self) -> None:
        if not self._hello_received:
            self.end(Close(CLOSE_POLICY, "hello_timeout"), ProtocolError(
                "hello_timeout", f"no hello within {self.limits.hello_timeout_s:g} s").event())

    def _session_deadline(self) -> None:
        self.end(Close(CLOSE_POLICY, "session_too_long"), ProtocolError(
            "session_too_long", f"sessions last at most {self.limits.max_session_s:g} s; reconnect").event())

    async def _on_message(self, message: bytes | str) -> None:
        if len(message) > self.limits.max_message_bytes:
            raise ProtocolError("message_too_big", f"message of {len(message)} bytes exceeds {self.limits.max_message_bytes}")
        if isinstance(message, bytes):
            if not self._audio_bucket.allow():
                raise ProtocolError("too_many_messages", f"more than {self.limits.audio_per_s:g} binary messages "
                                    f"per second (bursts of {self.limits.audio_burst}); send 10-100 ms chunks")
            await self._on_audio(message)
            return
        if not self._control_bucket.allow():
            self._rate_limited()
            return
        msg = self._parse_text(message)
        kind = msg["type"]
        if kind == "hello":
            await self._on_hello(msg)
        elif self.hello is None:
            raise ProtocolError("not_ready", f"send hello before {kind!r}")
        elif kind == "interrupt":
            await self.interrupt("client")
        elif kind == "new_conversation":
            await self.interrupt("new_conversation", new_conversation=True)
            await self._send_event({"type": "conversation_reset"})
        elif kind == "ping":
            await self._send_event({"type": "pong", "t": msg.get("t")})
        elif kind == "bye":
            raise Close(CLOSE_NORMAL, "bye")

    def _parse_text(self, message: str) -> dict[str, Any]:
        """A text message as a JSON object; before the hello, anything else is `not_ready` (close 1002)."""
        try:
            return parse_text(message)
        except ProtocolError as err:
            if self.hello is None and err.close_code is None:
                raise ProtocolError("not_ready", f"the first message must be a hello ({err.message})") from None
            raise

    def _rate_limited(self) -> None:
        """Drop a control message over the rate; tell the client at most once a second."""
        now = time.monotonic()
        if now - self._rate_error_s >= 1.0:
            self._rate_error_s = now
            raise ProtocolError("rate_limited", f"more than {self.limits.control_per_s:g} control messages per "
                                "second; messages are being dropped")

    async def _on_hello(self, msg: dict[str, Any]) -> None:
        if self.hello is not None:
            raise ProtocolError("duplicate_hello", "this session already said hello")
        hello = parse_hello(msg, self.pipeline_names, self.default_pipeline)
        self._hello_received = True           # a slow pipeline build must not trip the hello timeout
        options = AskedOptions(hello.options)  # what the VAD and the pipeline never ask for is ignored
        defn = pipelines.get(hello.pipeline)
        defaults = {**defn.vad_defaults, **self.vad_defaults}   # the pipeline's, under the server's
        try:
            vad_config = VadConfig.from_options(options)      # marks the VAD's options as used
            if defaults:
                own = {k: dict.__getitem__(options, k) for k in dict.keys(options)}
                vad_config = VadConfig.from_options({**defaults, **own})
        except (TypeError, ValueError, OverflowError) as exc:
            raise ProtocolError("bad_options", str(exc)[:200]) from None
        turn_detector = barge_in_detector = None   # loaded once per process, in a thread the first time
        if vad_config.turn_detection == "model":
            turn_detector = await asyncio.to_thread(load_turn_detector)
        if vad_config.barge_in_detection == "model":
            barge_in_detector = await asyncio.to_thread(load_barge_in_detector)
        try:
            # in a thread: loading a model named in the options must not stall other sessions
            built = await asyncio.to_thread(defn.build, options, self.models)
        except (TypeError, ValueError, OverflowError) as exc:   # pipelines reject bad options with ValueError
            raise ProtocolError("bad_options", str(exc)[:200]) from None
        stages = [VadStage(hello.sample_rate_hz, vad_config, turn_detector=turn_detector,
                           barge_in_detector=barge_in_detector), *built]
        for stage in stages:
            stage.bind(self)
        self.output_rate_hz = defn.output_sample_rate_hz(options, self.models)
        ignored = options.ignored()
        if ignored:
            log.warning("session %s: pipeline %s ignores the options %s", self.session_id, hello.pipeline, ignored)
        self.pipeline = Pipeline(stages, queue_size=self.limits.queue_size, tracer=self.tracer,
                                 on_stage_error=self._on_stage_error, head_observer=self.on_head_frame)
        await self.pipeline.start()
        self.hello = hello
        self._tasks.append(asyncio.create_task(self._reader(), name=f"reader:{self.session_id}"))
        await self._send_event({"type": "ready", "version": PROTOCOL_VERSION, "session_id": self.session_id,
                                "pipeline": hello.pipeline, "input_sample_rate": hello.sample_rate_hz,
                                "sample_rate": self.output_rate_hz, "ignored_options": ignored,
                                "turn_detection": stages[0].config.turn_detection,
                                "barge_in_detection": stages[0].config.barge_in_detection,
                                "speculative_start": stages[0].speculates,
                                "turn_threshold": stages[0].turn_threshold,
                                "turn_text": stages[0].hears_words})

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
        turns, self._to_release = self._to_release, []
        for turn in turns:
            await self._release(turn)

    async def _release(self, turn: int) -> None:
        """The VAD confirmed the end of a turn answered speculatively: send what was held, in order."""
        async with self._output_lock:
            held = self._held.pop(turn, [])
            if held is None:        # an interrupt cancelled the answer while it was held
                self._answering.discard(turn)
                await self._send_event(self._turn_end_event(turn, interrupted=True))
                return
            for frame in held:
                await self._on_output(frame)

    # ---- outgoing -----------------------------------------------------------------------
    async def _reader(self) -> None:
        """Turns the pipeline's output frames into protocol messages."""
        assert self.pipeline is not None
        try:
            while True:
                frame = await self.pipeline.output.get()
                generation = self.pipeline.generation
                async with self._output_lock:
                    if generation == self.pipeline.generation:   # else: read before a retract or an interrupt
                        await self._on_output(frame)
        except Exception as exc:
            log.exception("session %s: output failed", self.session_id)
            self.end(Close(CLOSE_INTERNAL_ERROR, "internal_error"),
                     {"type": "error", "code": "internal_error", "message": f"server error ({type(exc).__name__})"})

    async def _on_output(self, frame: Frame) -> None:
        if frame.turn_id in self._held:       # answered speculatively: held until the end is confirmed
            held = self._held[frame.turn_id]
            if held is not None:
                held.append(frame)
            return
        if isinstance(frame, AssistantAudio):
            if frame.turn_id <= self._cancelled_upto or len(frame.pcm) == 0:
                return
            pcm = frame.pcm if frame.sample_rate_hz == self.output_rate_hz else _resample(frame, self.output_rate_hz)
            onset = self._onsets.get(frame.turn_id)
            if onset is None:
                onset = self._onsets[frame.turn_id] = AnswerOnset(self.output_rate_hz)
            pcm, skipped_s = onset.push(pcm)
            if pcm is not None:
                await self._send_answer_audio(frame, pcm, skipped_s)
        elif isinstance(frame, AssistantText):
            if frame.turn_id > self._cancelled_upto:
                await self._send_event({"type": "assistant_text", "turn": frame.turn_id, "text": frame.text, "final": frame.final})
        elif isinstance(frame, Transcript):
            await self._send_event({"type": "transcript", "turn": frame.turn_id, "text": frame.text, "final": frame.final})
        elif isinstance(frame, TurnEnd):
            if frame.turn_id > self._cancelled_upto:
                silent = self._onsets.pop(frame.turn_id, None)
                held = silent.flush() if silent is not None else None
                if held is not None:          # an answer that never sounded goes out as it came
                    silence = AssistantAudio(turn_id=frame.turn_id, pcm=held, sample_rate_hz=self.output_rate_hz)
                    await self._send_answer_audio(silence, held, 0.0)
                self._answering.discard(frame.turn_id)
                await self._send_event(self._turn_end_event(frame.turn_id, frame.interrupted))
        elif isinstance(frame, Metric):
            await self._send_event({"type": "metric", "turn": frame.turn_id, "name": frame.name, "value": frame.value})
        elif isinstance(frame, ErrorFrame) and frame.code != "stage_failed":   # that one ends the session
            await self._send_event({"type": "error", "code": frame.code, "message": frame.message})

    async def _send_answer_audio(self, frame: AssistantAudio, pcm: np.ndarray, skipped_s: float) -> None:
        """Send answer audio of `frame.turn_id` (`skipped_s` of its leading silence dropped before it)."""
        if frame.turn_id not in self._first_audio_sent:
            self._first_audio_sent.add(frame.turn_id)
            self.tracer.record("ws_out", frame)
            await self._send_event({"type": "audio_start", "turn": frame.turn_id, "sample_rate": self.output_rate_hz})
        if frame.turn_id != self._last_audio_turn:
            self._last_audio_turn, self._last_audio_sent_s, self._last_audio_cut_s = frame.turn_id, 0.0, None
        await self._send(float_to_pcm16(pcm))
        self._playback_end_s = max(self._playback_end_s, now_s()) + len(pcm) / self.output_rate_hz
        # the dropped silence counts as played (it took no time): answer_played_s stays on the answer's timeline
        self._last_audio_sent_s += skipped_s + len(pcm) / self.output_rate_hz

    def on_head_frame(self, frame: Frame) -> None:
        """Called by the pipeline for every frame the VAD head emits."""
        if isinstance(frame, SpeechStarted):
            if not frame.resumed:             # a turn sent again after a retract: the client knows it already
                self._pending_head.append({"type": "speech_started", "turn": frame.turn_id, "t": frame.stream_s})
        elif isinstance(frame, SpeechStopped) and frame.speculative:
            self._held[frame.turn_id] = []
            self._speculated_s[frame.turn_id] = frame.created_s
        elif isinstance(frame, (SpeechStopped, TurnConfirmed)):
            self._answering.add(frame.turn_id)
            self._endpointing_ms[frame.turn_id] = self._endpointing_of(frame)
            event = {"type": "speech_stopped", "turn": frame.turn_id, "t": frame.stream_s,
                     "start": frame.speech_start_s, "reason": frame.reason}
            if frame.end_probability is not None:
                event["p_end"] = frame.end_probability
            if isinstance(frame, TurnConfirmed):
                started_s = self._speculated_s.pop(frame.turn_id, frame.created_s)
                event["answer_started_ms"] = round((started_s - frame.created_s) * 1000, 1)   # negative: before
                self._to_release.append(frame.turn_id)
            self._pending_head.append(event)

    def _turn_end_event(self, turn: int, interrupted: bool) -> dict:
        event = {"type": "turn_end", "turn": turn, "interrupted": interrupted,
                 "timings_ms": self.tracer.turn_timings_ms(turn), "endpointing_ms": self._endpointing_ms.pop(turn, None),
                 "answers_taken_back": self._taken_back.pop(turn, 0)}
        # the timings are reported: drop the turn's trace (and the between-turns input records, turn 0),
        # so that a long session's memory stays flat instead of filling the tracer up to its cap
        self.tracer.forget(turn)
        self.tracer.forget(0)
        self._first_audio_sent.discard(turn)
        self._onsets.pop(turn, None)
        return event

    def _endpointing_of(self, stopped: SpeechStopped | TurnConfirmed) -> float | None:
        """Milliseconds from the end of speech to its detection.

        The audio the VAD waited for after the last speech sample (on the input timeline, up to
        the end of the chunk being pushed) plus the time from reading that chunk to the detection;
        or, if longer, the time from reading the last speech sample to the detection (the server
        fell behind the audio meanwhile). Never the arrival times alone: after a stall (the
        barge-in's own interrupt, a busy CPU) the chunks that piled up are read at once, and the
        silence would seem to have taken less than `end_silence_ms`.
        """
        if not self._arrival:
            return None
        chunk_end_s, chunk_read_s = self._arrival[-1]
        waited_s = chunk_end_s - stopped.stream_s + stopped.created_s - chunk_read_s
        read_s = self._arrival_of(stopped.stream_s)
        behind_s = stopped.created_s - read_s if read_s is not None else 0.0
        return round(max(waited_s, behind_s) * 1000, 1)

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

    def _send_nowait(self, message: str | Close) -> None:
        """Queue a message without waiting (the session is ending): drop queued audio to make room."""
        if self.outbox.full():
            self._drain_outbox()
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("session %s: outbox full of events; %s dropped", self.session_id, type(message).__name__)

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
        """Send the outbox in order; a write that makes no progress for `send_timeout_s` ends the session."""
        while True:
            message = await self.outbox.get()
            if isinstance(message, Close):
                return
            try:
                await asyncio.wait_for(self.ws.send(message), self.limits.send_timeout_s)
            except asyncio.TimeoutError:
                log.warning("session %s: the client read nothing for %.1f s; dropping the connection",
                            self.session_id, self.limits.send_timeout_s)
                self.ws.transport.abort()
                self.end(Close(CLOSE_POLICY, "send_timeout"))
                return
            except ConnectionClosed:
                self.end(Close(CLOSE_NORMAL, "closed"))
                return

    async def _on_stage_error(self, stage, exc: BaseException) -> None:
        self.end(Close(CLOSE_INTERNAL_ERROR, "stage_failed"), {
            "type": "error", "code": "stage_failed",
            "message": f"stage {stage.name} failed ({type(exc).__name__}); the session ends"})

    async def _shutdown(self, close: Close) -> None:
        """Stop the pipeline, flush what is queued (bounded in time), then close the socket."""
        for t in self._tasks[1:]:
            t.cancel()
        await asyncio.gather(*self._tasks[1:], return_exceptions=True)
        if self.pipeline is not None:
            await self.pipeline.stop()
        writer = self._tasks[0]
        if not writer.done():
            self._send_nowait(close)
            try:
                await asyncio.wait_for(writer, timeout=min(2.0, self.limits.send_timeout_s))
            except (asyncio.TimeoutError, Exception):
                pass   # wait_for cancelled the writer
        await asyncio.gather(writer, return_exceptions=True)
        discard = asyncio.create_task(self._discard_incoming())   # so the client's close reply is read
        try:
            await asyncio.wait_for(self.ws.close(close.code, close.reason), close.handshake_s)
        except Exception:   # no reply in time (a client that reads nothing), or the socket broke
            self.ws.transport.abort()
        discard.cancel()
        await asyncio.gather(discard, return_exceptions=True)
        self.close_code = close.code

    async def _discard_incoming(self) -> None:
        try:
            async for _ in self.ws:
                pass
        except Exception:
            pass


def _resample(frame: AssistantAudio, rate: int) -> np.ndarray:
    from voice.audio import resample

    return resample(frame.pcm, frame.sample_rate_hz, rate)
