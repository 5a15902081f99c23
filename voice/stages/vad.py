"""VAD stage: resample the client's audio to 16 kHz, find turns with Silero, detect barge-in."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, fields
from typing import AsyncIterator

import numpy as np

from voice.audio import StreamingResampler
from voice.frames import Frame, SpeechStarted, SpeechStopped, UserAudio
from voice.runtime.stage import Stage
from voice.stages.silero import SAMPLE_RATE_HZ, WINDOW_SAMPLES, SileroState, SileroVadModel, shared_model

log = logging.getLogger(__name__)
WINDOW_S = WINDOW_SAMPLES / SAMPLE_RATE_HZ  # 32 ms


@dataclass(frozen=True)
class VadConfig:
    threshold: float = 0.5              # speech probability that starts (and continues) speech
    neg_threshold_offset: float = 0.15  # below threshold - offset counts as silence (hysteresis)
    min_speech_ms: float = 250.0        # shorter bursts are not a turn (clicks, breaths)
    end_silence_ms: float = 500.0       # silence that ends the user's turn
    pre_roll_ms: float = 192.0          # audio kept from before the detected start
    barge_in_min_speech_ms: float = 400.0  # speech needed to interrupt the assistant (a cough is shorter)
    max_turn_s: float = 60.0            # an endless turn is cut here

    @classmethod
    def from_options(cls, options: dict) -> "VadConfig":
        """Build from hello options (unknown keys ignored, bad values raise ValueError)."""
        kwargs = {}
        for f in fields(cls):
            if f.name in options:
                value = float(options[f.name])
                if not np.isfinite(value) or value < 0:
                    raise ValueError(f"option {f.name} must be a finite non-negative number")
                kwargs[f.name] = value
        cfg = cls(**kwargs)
        if not 0.0 < cfg.threshold < 1.0:
            raise ValueError("option threshold must be between 0 and 1")
        return cfg


class VadStage(Stage):
    """Inline head of every pipeline.

    In: `UserAudio` at the client's rate. Out: `SpeechStarted`, the turn's `UserAudio` at 16 kHz
    in 512-sample windows (pre-roll first), `SpeechStopped` stamped with the time speech ended
    on the input timeline. While the assistant is active, speech of at least
    `barge_in_min_speech_ms` interrupts it before the new turn starts.
    """

    name = "vad"
    inline = True

    def __init__(self, input_rate_hz: int, config: VadConfig | None = None,
                 model: SileroVadModel | None = None) -> None:
        super().__init__()
        self.config = config or VadConfig()
        self.input_rate_hz = input_rate_hz
        self._model = model or shared_model()
        self.turn_id = 0
        self._reset_state()

    def _reset_state(self) -> None:
        self._resampler = StreamingResampler(self.input_rate_hz, SAMPLE_RATE_HZ)
        self._silero = SileroState()
        self._pending = np.zeros(0, np.float32)
        self._window_index = 0
        self._pre_roll: deque[np.ndarray] = deque(maxlen=max(1, round(self.config.pre_roll_ms / 1000 / WINDOW_S)))
        self._triggered = False     # speech seen, turn not yet over
        self._confirmed = False     # SpeechStarted emitted for it
        self._start_s = 0.0
        self._silence_from_s: float | None = None
        self._held: list[np.ndarray] = []   # windows of a speech burst not yet confirmed
        self._held_start_s = 0.0

    def reset(self) -> None:
        self._reset_state()

    @property
    def stream_s(self) -> float:
        return self._window_index * WINDOW_S

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if not isinstance(frame, UserAudio):
            yield frame
            return
        audio = self._resampler.process(frame.pcm)
        self._pending = np.concatenate([self._pending, audio])
        n = len(self._pending) // WINDOW_SAMPLES
        windows, self._pending = self._pending[: n * WINDOW_SAMPLES], self._pending[n * WINDOW_SAMPLES:]
        for window in windows.reshape(n, WINDOW_SAMPLES):
            async for out in self._on_window(window):
                yield out

    async def _on_window(self, window: np.ndarray) -> AsyncIterator[Frame]:
        cfg = self.config
        t_s = self.stream_s
        self._window_index += 1
        p = self._model.probability(self._silero, window)
        is_speech = p >= cfg.threshold
        is_silence = p < cfg.threshold - cfg.neg_threshold_offset

        if not self._triggered:
            if not is_speech:
                self._pre_roll.append(window)
                return
            self._triggered, self._confirmed = True, False
            self._start_s, self._silence_from_s = t_s, None
            self._held_start_s = t_s - len(self._pre_roll) * WINDOW_S
            self._held = list(self._pre_roll) + [window]
            self._pre_roll.clear()
        else:
            if self._confirmed:
                yield self._audio(window, t_s)
            else:
                self._held.append(window)
            if is_speech:
                self._silence_from_s = None
            elif is_silence and self._silence_from_s is None:
                self._silence_from_s = t_s

        end_s = t_s + WINDOW_S
        if self._silence_from_s is not None and end_s - self._silence_from_s >= cfg.end_silence_ms / 1000:
            async for out in self._end_burst(self._silence_from_s):
                yield out
            return
        if not self._confirmed:
            speech_s = end_s - self._start_s
            active = self.ctx is not None and self.ctx.assistant_active()
            needed_ms = max(cfg.min_speech_ms, cfg.barge_in_min_speech_ms if active else 0.0)
            if self._silence_from_s is None and speech_s * 1000 >= needed_ms:
                if active:
                    log.info("barge-in after %.0f ms of speech", speech_s * 1000)
                    await self.ctx.interrupt("barge_in")
                async for out in self._confirm():
                    yield out
        elif end_s - self._start_s >= cfg.max_turn_s:
            log.warning("turn %d reached max_turn_s=%.0f; ending it", self.turn_id, cfg.max_turn_s)
            async for out in self._end_burst(end_s):
                yield out

    async def _confirm(self) -> AsyncIterator[Frame]:
        self.turn_id += 1
        self._confirmed = True
        yield SpeechStarted(turn_id=self.turn_id, stream_s=round(self._start_s, 4))
        for i, w in enumerate(self._held):
            yield self._audio(w, self._held_start_s + i * WINDOW_S)
        self._held = []

    async def _end_burst(self, speech_end_s: float) -> AsyncIterator[Frame]:
        if self._confirmed:
            yield SpeechStopped(turn_id=self.turn_id, stream_s=round(speech_end_s, 4),
                                speech_start_s=round(self._start_s, 4))
        self._triggered, self._confirmed = False, False
        self._silence_from_s = None
        self._pre_roll.clear()
        self._held = []

    def _audio(self, window: np.ndarray, t_s: float) -> UserAudio:
        return UserAudio(turn_id=self.turn_id, pcm=window, sample_rate_hz=SAMPLE_RATE_HZ, stream_s=round(t_s, 4))
