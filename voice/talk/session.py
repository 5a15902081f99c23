"""One `voice talk` session: stream a file or the microphone, play or record the answer, measure v2v."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voice.audio import write_wav
from voice.client import DEFAULT_URL, ReceivedAudio, VoiceClient
from voice.talk.audio_io import FileSource, MicSource, Speaker
from voice.talk.eventlog import EventLog
from voice.talk.status import StatusDisplay
from voice.talk.timeline import AnswerTimeline, speech_segments, true_speech_end_s

log = logging.getLogger(__name__)
ECHO_GUARDS = ("off", "raise", "half-duplex")


class TalkError(RuntimeError):
    """A failure the user should read (server unreachable, session refused, connection lost)."""


@dataclass(frozen=True)
class TalkConfig:
    url: str = DEFAULT_URL
    pipeline: str | None = None              # None: the server's default
    input_path: Path | None = None           # None: the microphone
    output_path: Path | None = None          # answer WAV on the input's timeline
    events_path: Path | None = None          # JSONL log of every message
    play: bool = True                        # play the answer on the speakers
    input_device: int | str | None = None
    output_device: int | str | None = None
    echo_guard: str = "off"                  # off | raise (longer barge-in) | half-duplex (mute mic while speaking)
    barge_in_ms: float = 1200.0              # barge_in_min_speech_ms sent with echo_guard="raise"
    guard_tail_ms: float = 300.0             # half-duplex: the mic stays muted this long after playback ends
    options: dict[str, Any] = field(default_factory=dict)   # extra hello options (VAD settings...)
    chunk_ms: float = 20.0                   # audio sent per message
    min_tail_s: float = 1.0                  # after a file ends, stream at least this much silence
    max_tail_s: float = 30.0                 # ... and at most this much while waiting for answers
    duration_s: float | None = None          # stop after this long (None: until Ctrl-C or the file's end)
    connect_timeout_s: float = 10.0

    def hello_options(self) -> dict[str, Any]:
        options = dict(self.options)
        if self.echo_guard == "raise":
            options.setdefault("barge_in_min_speech_ms", self.barge_in_ms)
        return options


@dataclass
class TurnResult:
    turn_id: int
    vad_end_s: float                 # speech_stopped's t on the input timeline
    true_end_s: float | None         # end of speech measured in the input file (None with a microphone)
    answer_s: float | None           # first non-silent answer sample on the input timeline
    output_latency_ms: float         # the speaker stream's latency (0 when not playing)
    interrupted: bool = False
    user_text: str = ""
    assistant_text: str = ""

    @property
    def end_source(self) -> str:
        return "file" if self.true_end_s is not None else "vad"

    @property
    def v2v_ms(self) -> float | None:
        """True end of speech (or the VAD's, with a microphone) to the first audible answer sample."""
        if self.answer_s is None:
            return None
        end = self.true_end_s if self.true_end_s is not None else self.vad_end_s
        return round((self.answer_s - end) * 1000 + self.output_latency_ms, 1)

    @property
    def v2v_vad_ms(self) -> float | None:
        return None if self.answer_s is None else round((self.answer_s - self.vad_end_s) * 1000 + self.output_latency_ms, 1)

    def as_event(self) -> dict[str, Any]:
        return {"type": "v2v", "turn": self.turn_id, "v2v_ms": self.v2v_ms, "v2v_vad_ms": self.v2v_vad_ms,
                "end_source": self.end_source, "speech_end_s": self.true_end_s, "vad_end_s": self.vad_end_s,
                "answer_s": None if self.answer_s is None else round(self.answer_s, 4),
                "output_latency_ms": self.output_latency_ms, "interrupted": self.interrupted}


@dataclass
class TalkResult:
    ready: dict[str, Any]
    turns: list[TurnResult]
    streamed_s: float                # input timeline length (the file plus the silence after it)
    cleared_s: float                 # answer audio dropped by clear events
    sent_samples: int


class _LoggedClient(VoiceClient):
    """VoiceClient that writes every outgoing message to the event log."""

    def __init__(self, *args: Any, events: EventLog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events = events

    async def send_json(self, message: dict) -> None:
        self.events.write("out", message)
        await super().send_json(message)

    async def send_raw(self, message: bytes | str) -> None:
        if isinstance(message, bytes):
            self.events.write("out", {"type": "audio", "samples": len(message) // 2})
        else:
            self.events.write("out", {"type": "text", "chars": len(message)})
        await super().send_raw(message)


class TalkSession:
    """Runs one session; `run()` returns a TalkResult or raises TalkError / DeviceError / ValueError."""

    def __init__(self, config: TalkConfig, display: StatusDisplay | None = None) -> None:
        if config.echo_guard not in ECHO_GUARDS:
            raise ValueError(f"echo_guard must be one of {', '.join(ECHO_GUARDS)}")
        self.cfg = config
        self.display = display or StatusDisplay(quiet=True)
        self.events = EventLog(config.events_path)
        self.client: _LoggedClient | None = None
        self.source: FileSource | MicSource | None = None
        self.speaker: Speaker | None = None
        self.timeline: AnswerTimeline | None = None
        self.turns: dict[int, TurnResult] = {}
        self.outstanding: set[int] = set()   # turns whose speech stopped and whose turn_end has not come
        self.speech_open = False
        self.sent_samples = 0
        self._stop: asyncio.Event | None = None
        self._closed_reason: str | None = None
        self._segments_cache: list[tuple[float, float]] | None = None

    def request_stop(self) -> None:
        """Ask the session to end cleanly (Ctrl-C)."""
        if self._stop is not None:
            self._stop.set()

    # ---- run ----------------------------------------------------------------------------
    async def run(self) -> TalkResult:
        self._stop = asyncio.Event()
        cfg = self.cfg
        self.source = FileSource(cfg.input_path, cfg.chunk_ms) if cfg.input_path else MicSource(cfg.input_device, cfg.chunk_ms)
        try:
            ready = await self._connect(self.source.sample_rate_hz)
            rate = int(ready["sample_rate"])
            self.timeline = AnswerTimeline(rate)
            if cfg.play:
                self.speaker = Speaker(rate, cfg.output_device)
            self.display.set_state("listening")
            await self._run_until_stopped()
            if self._closed_reason:
                raise TalkError(self._closed_reason)
            return self._finish(ready)
        finally:
            self.source.close()
            if self.speaker is not None:
                self.speaker.close()
            if self.client is not None:
                await self.client.close()
            self.events.close()
            self.display.close()

    async def _connect(self, sample_rate_hz: int) -> dict:
        cfg = self.cfg
        self.client = _LoggedClient(cfg.url, sample_rate_hz, cfg.pipeline, cfg.hello_options(), events=self.events,
                                    on_event=self._on_event, on_audio=self._on_audio)
        from websockets.exceptions import WebSocketException

        try:
            ready = await self.client.connect(cfg.connect_timeout_s)
        except (OSError, TimeoutError, WebSocketException) as exc:
            if type(exc) is ConnectionError and "refused the session" in str(exc):
                raise TalkError(str(exc)) from None
            raise TalkError(f"cannot reach the server at {cfg.url} ({exc or type(exc).__name__}); "
                            "is `voice serve` running there?") from None
        if self.client.ignored_options:   # a typo in --option would otherwise go unnoticed
            self.display.warning(f"the server ignored the hello option(s) {', '.join(self.client.ignored_options)} "
                                 f"(not read by the VAD or the {ready.get('pipeline', '?')} pipeline: a typo?)")
        return ready

    async def _run_until_stopped(self) -> None:
        assert self._stop is not None
        sender = asyncio.create_task(self._send_loop())
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({sender, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, stopper):
                task.cancel()
            results = await asyncio.gather(sender, stopper, return_exceptions=True)
        exc = results[0]
        if isinstance(exc, Exception) and not isinstance(exc, asyncio.CancelledError):
            if self.client is not None and self.client.close_code is not None:
                raise TalkError(f"the server closed the connection ({self.client.close_code} {self.client.close_reason})")
            raise exc

    async def _send_loop(self) -> None:
        assert self.source is not None and self.client is not None
        rate = self.source.sample_rate_hz
        async for chunk in self.source.chunks():
            await self._send(chunk)
            if self.cfg.duration_s is not None and self.sent_samples / rate >= self.cfg.duration_s:
                return
        if isinstance(self.source, FileSource):
            await self._send_tail(rate, self.source.duration_s)

    async def _send_tail(self, rate: int, file_s: float) -> None:
        """Stream silence after the file until every answer has been heard (or max_tail_s)."""
        assert self.source is not None and self.source.origin_s is not None
        step = self.source.chunk
        while True:
            pos_s = self.sent_samples / rate
            waited_s = pos_s - file_s
            if waited_s >= self.cfg.min_tail_s and not self._busy(pos_s):
                return
            if waited_s >= self.cfg.max_tail_s:
                log.warning("stopped waiting for the answer %.0f s after the input ended", waited_s)
                return
            delay = self.source.origin_s + (self.sent_samples + step) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._send(np.zeros(step, np.float32))

    async def _send(self, chunk: np.ndarray) -> None:
        assert self.client is not None and self.source is not None
        pos_s = self.sent_samples / self.source.sample_rate_hz
        guarded = self.cfg.echo_guard == "half-duplex" and self._audible(pos_s, self.cfg.guard_tail_ms / 1000)
        await self.client.send_audio(np.zeros_like(chunk) if guarded else chunk)
        self.sent_samples += len(chunk)
        self._update_state(pos_s, guarded)

    # ---- state --------------------------------------------------------------------------
    def _audible(self, pos_s: float, tail_s: float = 0.0) -> bool:
        """Is answer audio playing at `pos_s` (or did it stop less than `tail_s` ago)?"""
        playing = self.speaker is not None and self.speaker.playing
        return playing or (self.timeline is not None and self.timeline.end_s + tail_s > pos_s)

    def _busy(self, pos_s: float) -> bool:
        return self.speech_open or bool(self.outstanding) or self._audible(pos_s)

    def _update_state(self, pos_s: float, guarded: bool) -> None:
        if self._audible(pos_s):
            state = "speaking"
        elif self.outstanding:
            state = "thinking"
        else:
            state = "listening"
        self.display.set_state(state, "mic muted: half-duplex" if guarded else "")

    def _pos_of(self, t_s: float) -> float:
        origin = self.source.origin_s if self.source is not None else None
        return t_s - origin if origin is not None else 0.0

    # ---- incoming -----------------------------------------------------------------------
    def _on_audio(self, item: ReceivedAudio) -> None:
        self.events.write("in", {"type": "audio", "samples": len(item.pcm), "turn": item.turn_id}, item.t_s)
        if self.timeline is not None:
            self.timeline.add(self._pos_of(item.t_s), item.turn_id, item.pcm)
        if self.speaker is not None:
            self.speaker.play(item.pcm)

    def _on_event(self, t_s: float, event: dict) -> None:
        kind = event.get("type")
        if kind != "_closed":
            self.events.write("in", event, t_s)
        turn = int(event.get("turn", 0) or 0)
        if kind == "speech_started":
            self.speech_open = True
        elif kind == "speech_stopped":
            self.speech_open = False
            self.outstanding.add(turn)
            self.turns[turn] = TurnResult(turn, float(event["t"]), None, None, self._output_latency_ms())
        elif kind == "transcript":
            self.display.user(str(event.get("text", "")), bool(event.get("final")))
            if event.get("final") and turn in self.turns:
                self.turns[turn].user_text = str(event.get("text", ""))
        elif kind == "assistant_text":
            self._on_assistant_text(turn, event)
        elif kind == "clear":
            self._on_clear(t_s, event)
        elif kind == "turn_end":
            self._on_turn_end(turn, event)
        elif kind == "error":
            self.display.info(f"server error {event.get('code')}: {event.get('message')}")
        elif kind == "_closed":
            if self._stop is not None and not self._stop.is_set():
                self._closed_reason = f"the server closed the connection ({event.get('code')} {event.get('reason') or ''})".strip()
                self._stop.set()

    def _on_assistant_text(self, turn: int, event: dict) -> None:
        text = str(event.get("text", ""))
        if turn in self.turns:
            self.turns[turn].assistant_text += text
        self.display.assistant(text, bool(event.get("final")))

    def _on_clear(self, t_s: float, event: dict) -> None:
        dropped = self.timeline.clear(self._pos_of(t_s)) if self.timeline is not None else 0
        if self.speaker is not None:
            dropped = self.speaker.clear()
        self.events.write("client", {"type": "cleared", "reason": event.get("reason"), "samples": dropped}, t_s)

    def _on_turn_end(self, turn: int, event: dict) -> None:
        self.outstanding.discard(turn)
        result = self.turns.get(turn)
        if result is None:
            return
        result.interrupted = bool(event.get("interrupted"))
        self._measure(result)
        self.events.write("client", result.as_event())
        detail = "interrupted" if result.interrupted else ""
        self.display.turn(turn, result.v2v_ms, detail)

    def _output_latency_ms(self) -> float:
        return round(self.speaker.latency_s * 1000, 1) if self.speaker is not None else 0.0

    def _measure(self, result: TurnResult) -> None:
        assert self.timeline is not None
        result.answer_s = self.timeline.first_audible_s(result.turn_id)
        if isinstance(self.source, FileSource):
            segments = self._segments()
            result.true_end_s = true_speech_end_s(segments, result.vad_end_s)

    def _segments(self) -> list[tuple[float, float]]:
        if self._segments_cache is None:
            assert isinstance(self.source, FileSource)
            self._segments_cache = speech_segments(self.source.pcm, self.source.sample_rate_hz)
        return self._segments_cache

    # ---- results ------------------------------------------------------------------------
    def _finish(self, ready: dict) -> TalkResult:
        assert self.source is not None and self.timeline is not None
        for result in self.turns.values():
            self._measure(result)   # again: a later clear may have removed audio
        streamed_s = self.sent_samples / self.source.sample_rate_hz
        if self.cfg.output_path is not None:
            rate = self.timeline.sample_rate_hz
            write_wav(self.cfg.output_path, self.timeline.render(int(round(streamed_s * rate))), rate)
        turns = [self.turns[k] for k in sorted(self.turns)]
        measured = [t.v2v_ms for t in turns if t.v2v_ms is not None]
        summary = {"type": "summary", "turns": len(turns), "v2v_ms": measured,
                   "v2v_p50_ms": float(np.median(measured)) if measured else None, "streamed_s": round(streamed_s, 3)}
        self.events.write("client", summary)
        return TalkResult(ready, turns, streamed_s, self.timeline.cleared_samples / self.timeline.sample_rate_hz,
                          self.sent_samples)
