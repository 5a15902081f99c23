"""An answer starts with its first sound: the silence it opens with is not sent to the client.

A pipeline's answer often opens with silence: the echo pipeline replays the turn from its pre-roll
(192 ms before the detected start), a TTS voice or the codec decoder breathes in first. The
client plays what it receives in order, so that silence is heard as latency, although the first
sound had already arrived (the bench's voice-to-voice, which times the arrival of the first
non-silent sample, does not see it; the browser's chart did: docs/benchmarking.md). Per answer,
`AnswerOnset` holds the leading silence until the first sound comes, then drops all of it but
`KEEP_S` before the sound. An answer that stays silent
longer than `MAX_HOLD_S`, or ends without a sound, is sent as it came.
"""

from __future__ import annotations

import numpy as np

from voice.audio import first_non_silent_index

SOUND_THRESHOLD = 0.01   # |sample| above this (about -40 dBFS) is sound, as the clients and the bench count it
KEEP_S = 0.005           # kept before the first sound: the clients' 5 ms fade-in plays over it, not over the sound
MAX_HOLD_S = 1.0         # leading silence held at most this long, then sent as it is


class AnswerOnset:
    """The leading-silence filter of one answer (float PCM at `sample_rate_hz`)."""

    def __init__(self, sample_rate_hz: int, keep_s: float = KEEP_S, max_hold_s: float = MAX_HOLD_S,
                 threshold: float = SOUND_THRESHOLD) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.keep = int(round(keep_s * sample_rate_hz))
        self.max_hold = int(round(max_hold_s * sample_rate_hz))
        self.threshold = threshold
        self._held: list[np.ndarray] = []
        self._held_samples = 0
        self.passing = False          # the first sound was found (or the hold ran out): everything passes

    def push(self, pcm: np.ndarray) -> tuple[np.ndarray | None, float]:
        """(audio to send now or None while it is all silence so far, seconds of silence dropped)."""
        if self.passing:
            return pcm, 0.0
        loud = first_non_silent_index(pcm, self.threshold)
        if loud is None and self._held_samples + len(pcm) <= self.max_hold:
            self._held.append(pcm)
            self._held_samples += len(pcm)
            return None, 0.0
        self.passing = True
        audio = np.concatenate([*self._held, pcm]) if self._held else pcm
        self._held, held = [], self._held_samples
        self._held_samples = 0
        if loud is None:              # held too long: no trimming for this answer
            return audio, 0.0
        start = max(0, held + loud - self.keep)
        return audio[start:], start / self.sample_rate_hz

    def flush(self) -> np.ndarray | None:
        """At the end of an answer that never sounded: the silence held, to send as it came (None: nothing)."""
        if self.passing or not self._held:
            return None
        audio = np.concatenate(self._held)
        self._held, self._held_samples, self.passing = [], 0, True
        return audio
