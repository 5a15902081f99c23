"""Streaming codec stages: user audio -> `Codes` while the user speaks, assistant `Codes` -> audio.

These are the two audio ends of the end-to-end path (the speech LM goes between them). Each
stage keeps one `CodecState` per turn and steps the codec every `step_frames` frames (2 frames =
40 ms by default: the compact codec meets RTF 0.2 there with room; see models/codec/MODEL_CARD.md).
Codec work runs in a worker thread so the event loop keeps serving other sessions.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import numpy as np

from voice.audio import StreamingResampler
from voice.frames import AssistantAudio, Codes, Frame, SpeechStarted, SpeechStopped, TurnEnd, UserAudio
from voice.runtime.stage import Stage


def check_step_frames(value) -> int:
    """Frames per codec step: an integer 1..50 (20 ms .. 1 s at 50 Hz)."""
    try:
        steps = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"step_frames must be an integer, got {value!r}") from None
    if not 1 <= steps <= 50 or steps != value:
        raise ValueError(f"step_frames must be an integer in 1..50, got {value!r}")
    return steps


class CodecEncodeStage(Stage):
    """Encodes the current user turn's audio (pre-roll included) into `Codes(role="user")` as it arrives.

    Every frame is passed on, each `UserAudio` before the codes it completed; the turn's last
    codes (the flush at `SpeechStopped`) come before that `SpeechStopped` frame.
    """

    name = "codec-encode"

    def __init__(self, codec, step_frames: int = 2) -> None:
        super().__init__()
        self.codec, self.step_samples = codec, check_step_frames(step_frames) * codec.hop_length
        self.reset()

    def reset(self) -> None:
        self._turn, self._state, self._pending = -1, None, []
        self._resampler: StreamingResampler | None = None
        self._pending_samples = 0

    def _codes(self, codes: np.ndarray) -> Codes:
        return Codes(turn_id=self._turn, codes=codes, frame_rate_hz=self.codec.frame_rate_hz, role="user")

    def _encode_now(self, state, pcm: np.ndarray, flush: bool) -> np.ndarray:
        codes = self.codec.encode_step(state, pcm)
        return np.concatenate([codes, self.codec.flush_encode(state)], axis=1) if flush else codes

    async def _encode(self, pcm: np.ndarray, flush: bool = False) -> np.ndarray:
        return await asyncio.to_thread(self._encode_now, self._state, pcm, flush)

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if isinstance(frame, SpeechStarted):
            self.reset()
            self._turn, self._state = frame.turn_id, self.codec.new_state()
        elif isinstance(frame, UserAudio) and frame.turn_id == self._turn and self._state is not None:
            yield frame  # the audio first, then the codes it completed
            pcm = frame.pcm
            if frame.sample_rate_hz != self.codec.sample_rate_hz:
                if self._resampler is None:
                    self._resampler = StreamingResampler(frame.sample_rate_hz, self.codec.sample_rate_hz)
                pcm = self._resampler.process(pcm)
            self._pending.append(pcm)
            self._pending_samples += len(pcm)
            if self._pending_samples >= self.step_samples:
                audio = np.concatenate(self._pending)
                cut = len(audio) - len(audio) % self.step_samples
                self._pending, self._pending_samples = [audio[cut:]], len(audio) - cut
                codes = await self._encode(audio[:cut])
                if codes.shape[1]:
                    yield self._codes(codes)
            return
        elif isinstance(frame, SpeechStopped) and frame.turn_id == self._turn and self._state is not None:
            rest = np.concatenate(self._pending) if self._pending else np.zeros(0, np.float32)
            codes = await self._encode(rest, flush=True)
            if codes.shape[1]:
                yield self._codes(codes)
            self._state = None
        yield frame


class CodecDecodeStage(Stage):
    """Decodes `Codes(role="assistant")` into `AssistantAudio` as they arrive; `TurnEnd` flushes the tail.

    The decoder's output lags its input by `decoder_delay_samples`; those first samples (before
    the signal) are dropped, so the audio lines up with what was encoded.
    """

    name = "codec-decode"

    def __init__(self, codec) -> None:
        super().__init__()
        self.codec = codec
        self.reset()

    def reset(self) -> None:
        self._turn, self._state, self._drop = -1, None, 0

    def _audio(self, pcm: np.ndarray) -> AssistantAudio | None:
        skip = min(self._drop, len(pcm))
        self._drop -= skip
        pcm = pcm[skip:]
        if not len(pcm):
            return None
        return AssistantAudio(turn_id=self._turn, pcm=pcm, sample_rate_hz=self.codec.sample_rate_hz)

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if isinstance(frame, Codes) and frame.role == "assistant":
            if frame.turn_id != self._turn or self._state is None:
                self._turn, self._state = frame.turn_id, self.codec.new_state()
                self._drop = self.codec.decoder_delay_samples
            state = self._state
            out = self._audio(await asyncio.to_thread(self.codec.decode_step, state, frame.codes))
            if out is not None:
                yield out
            return
        if isinstance(frame, TurnEnd) and frame.turn_id == self._turn and self._state is not None:
            state = self._state
            out = self._audio(await asyncio.to_thread(self.codec.flush_decode, state))
            self._state = None
            if out is not None:
                yield out
        yield frame
