"""Frames: the small immutable messages that flow between pipeline stages."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np


def now_s() -> float:
    """Monotonic clock used for every timestamp inside the server."""
    return time.monotonic()


@dataclass(frozen=True)
class Frame:
    """Base frame: which user turn it belongs to and when it was made (monotonic seconds)."""

    turn_id: int = 0
    created_s: float = field(default_factory=now_s, compare=False)

    for_session: ClassVar[bool] = False   # True: only the session reads it; the pipeline does not queue it

    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class UserAudio(Frame):
    """Microphone audio, float32 mono in [-1, 1] at `sample_rate_hz`; `stream_s` = start on the input timeline."""

    pcm: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    sample_rate_hz: int = 16000
    stream_s: float = 0.0

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sample_rate_hz


@dataclass(frozen=True)
class AssistantAudio(Frame):
    """Answer audio to send to the client, float32 mono in [-1, 1] at `sample_rate_hz`."""

    pcm: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32), repr=False)
    sample_rate_hz: int = 16000

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sample_rate_hz


@dataclass(frozen=True)
class SpeechStarted(Frame):
    """VAD: the user started speaking at `stream_s` on the input timeline. `resumed`: the same turn sent
    again from its start, after a speculative end that the user's speech took back."""

    stream_s: float = 0.0
    resumed: bool = False


@dataclass(frozen=True)
class SpeechStopped(Frame):
    """VAD: the user's turn ended; speech stopped at `stream_s` (detected end-of-turn silence later)."""

    stream_s: float = 0.0
    speech_start_s: float = 0.0
    reason: str = "silence"       # silence | model (the end-of-turn model) | max_silence | max_turn
    end_probability: float | None = None   # the end-of-turn model's P(over) when it decided
    speculative: bool = False     # the turn may be over: answer now, but the session holds the answer
                                  # until a `TurnConfirmed` (or the VAD takes it back: `StageContext.retract`)


@dataclass(frozen=True)
class TurnConfirmed(Frame):
    """VAD: the turn that a speculative `SpeechStopped` ended really is over (why: `reason`, as in
    `SpeechStopped`); the session releases the answer it held. It never reaches the queued stages."""

    for_session: ClassVar[bool] = True

    stream_s: float = 0.0
    speech_start_s: float = 0.0
    reason: str = "model"
    end_probability: float | None = None


@dataclass(frozen=True)
class Codes(Frame):
    """Codec tokens `[K, T]` (int64) at `frame_rate_hz`, from the user (`role="user"`) or the assistant."""

    codes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64), repr=False)
    frame_rate_hz: float = 50.0
    role: str = "user"


@dataclass(frozen=True)
class Transcript(Frame):
    """What the user said, as recognised: partial while speaking, final at the end of the turn."""

    text: str = ""
    final: bool = False


@dataclass(frozen=True)
class AssistantText(Frame):
    """Text the assistant produces: each frame is a delta to append; a last frame with `final=True`
    (usually with empty text) marks the end of the answer."""

    text: str = ""
    final: bool = False


@dataclass(frozen=True)
class TurnEnd(Frame):
    """The assistant finished its answer to `turn_id` (all its audio has been emitted)."""

    interrupted: bool = False


@dataclass(frozen=True)
class Metric(Frame):
    """A named measurement a stage wants reported (e.g. `llm_tokens_per_s`)."""

    name: str = ""
    value: float = 0.0


@dataclass(frozen=True)
class ErrorFrame(Frame):
    """A stage failed; `code` is one of the protocol's error codes."""

    code: str = "internal_error"
    message: str = ""
