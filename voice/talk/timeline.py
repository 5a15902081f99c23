"""The answer on the input's timeline: virtual playback, `clear`, true speech ends and v2v latency."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voice.audio import first_non_silent_index


@dataclass(frozen=True)
class Placed:
    start: int          # first sample on the output timeline (server output rate)
    turn_id: int
    pcm: np.ndarray     # float32 [N]


class AnswerTimeline:
    """Places answer audio where a player that starts at once would have played it.

    Time is seconds on the input timeline (client monotonic time minus the stream origin).
    A chunk that arrives at `t_s` starts at `max(t_s, end of the previous chunk)`, so a burst
    sent faster than real time queues up behind itself, as in a playback buffer. `clear(t_s)`
    drops everything not yet played at `t_s`. `first_audible_s(turn)` is when the turn's first
    non-silent sample plays (None if it never did).
    """

    def __init__(self, sample_rate_hz: int, silence_threshold: float = 0.01) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.silence_threshold = silence_threshold
        self.chunks: list[Placed] = []
        self.cursor = 0                   # one past the last sample queued
        self.cleared_samples = 0          # answer samples dropped by clear events

    def add(self, t_s: float, turn_id: int, pcm: np.ndarray) -> None:
        start = max(self.cursor, int(round(max(0.0, t_s) * self.sample_rate_hz)))
        self.chunks.append(Placed(start, turn_id, np.asarray(pcm, np.float32)))
        self.cursor = start + len(pcm)

    def clear(self, t_s: float) -> int:
        """Drop what would still be unplayed at `t_s`; returns the number of samples dropped."""
        cut = int(round(max(0.0, t_s) * self.sample_rate_hz))
        if cut >= self.cursor:
            return 0
        dropped, kept = 0, []
        for c in self.chunks:
            if c.start >= cut:
                dropped += len(c.pcm)
            elif c.start + len(c.pcm) > cut:
                dropped += c.start + len(c.pcm) - cut
                kept.append(Placed(c.start, c.turn_id, c.pcm[: cut - c.start]))
            else:
                kept.append(c)
        self.chunks, self.cursor = kept, cut
        self.cleared_samples += dropped
        return dropped

    @property
    def end_s(self) -> float:
        """When the queued answer audio will have finished playing."""
        return self.cursor / self.sample_rate_hz

    def first_audible_s(self, turn_id: int) -> float | None:
        for c in self.chunks:
            if c.turn_id == turn_id:
                i = first_non_silent_index(c.pcm, self.silence_threshold)
                if i is not None:
                    return (c.start + i) / self.sample_rate_hz
        return None

    def played_s(self, turn_id: int) -> float:
        """Seconds of the turn's answer that were (or will be) played."""
        return sum(len(c.pcm) for c in self.chunks if c.turn_id == turn_id) / self.sample_rate_hz

    def render(self, min_samples: int = 0) -> np.ndarray:
        out = np.zeros(max(min_samples, self.cursor), np.float32)  # [N]
        for c in self.chunks:
            out[c.start:c.start + len(c.pcm)] += c.pcm
        return out


def speech_segments(pcm: np.ndarray, sample_rate_hz: int, frame_ms: float = 10.0,
                    merge_gap_ms: float = 300.0, min_speech_ms: float = 100.0) -> list[tuple[float, float]]:
    """Speech segments (start_s, end_s) of a recording from frame energy.

    A frame is speech when its level is at least 12 dB above the noise floor (10th percentile
    of the frames that are not digital silence) and within 30 dB of the loudest frame. Gaps shorter than `merge_gap_ms`
    are bridged (pauses between words); segments shorter than `min_speech_ms` are dropped.
    """
    hop = max(1, int(sample_rate_hz * frame_ms / 1000))
    n = len(pcm) // hop
    if n == 0:
        return []
    frames = pcm[: n * hop].reshape(n, hop).astype(np.float64)           # [n, hop]
    level_db = 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12)       # [n]
    audible = level_db[level_db > -90.0]
    floor_db = np.percentile(audible, 10) if len(audible) else -90.0
    threshold = max(floor_db + 12.0, level_db.max() - 30.0)
    active = np.flatnonzero(level_db > threshold)
    if len(active) == 0:
        return []
    segments: list[list[int]] = [[int(active[0]), int(active[0])]]
    gap = merge_gap_ms / frame_ms
    for i in active[1:]:
        if i - segments[-1][1] <= gap:
            segments[-1][1] = int(i)
        else:
            segments.append([int(i), int(i)])
    frame_s = hop / sample_rate_hz
    return [(a * frame_s, (b + 1) * frame_s) for a, b in segments if (b + 1 - a) * frame_ms >= min_speech_ms]


def true_speech_end_s(segments: list[tuple[float, float]], vad_end_s: float, window_s: float = 1.0) -> float | None:
    """The end of the energy segment nearest to where the VAD said speech stopped (within `window_s`)."""
    ends = [end for _, end in segments if abs(end - vad_end_s) <= window_s]
    return min(ends, key=lambda e: abs(e - vad_end_s)) if ends else None
