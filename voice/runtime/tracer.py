"""Tracer: timestamps every frame that crosses a stage boundary and derives per-turn stage timings."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from voice.frames import Frame, SpeechStopped, now_s


@dataclass(frozen=True)
class TraceEvent:
    t_s: float       # monotonic time the frame crossed the boundary
    stage: str       # the stage that emitted it ("input" for frames entering the pipeline)
    kind: str        # frame class name
    turn_id: int


class Tracer:
    """Records (time, stage, frame kind, turn) for every frame a stage emits.

    Stages never time themselves; per-turn timings come from these records, so both pipelines
    are measured the same way. Memory is bounded: only the last `max_turns` turns are kept.
    """

    def __init__(self, max_turns: int = 64) -> None:
        self.max_turns = max_turns
        self._events: dict[int, list[TraceEvent]] = defaultdict(list)

    def record(self, stage: str, frame: Frame, t_s: float | None = None) -> None:
        events = self._events[frame.turn_id]
        events.append(TraceEvent(now_s() if t_s is None else t_s, stage, frame.kind, frame.turn_id))
        if len(self._events) > self.max_turns:
            del self._events[min(self._events)]
        if len(events) > 10_000:  # a very long turn: keep the first records, which hold the timings
            del events[5_000:]

    def events(self, turn_id: int) -> list[TraceEvent]:
        return list(self._events.get(turn_id, ()))

    def end_of_turn_s(self, turn_id: int) -> float | None:
        for ev in self._events.get(turn_id, ()):
            if ev.kind == SpeechStopped.__name__:
                return ev.t_s
        return None

    def turn_timings_ms(self, turn_id: int) -> dict[str, float]:
        """For each (stage, frame kind) first seen after the end of the user's turn: ms after it."""
        t0 = self.end_of_turn_s(turn_id)
        if t0 is None:
            return {}
        out: dict[str, float] = {}
        for ev in self._events.get(turn_id, ()):
            if ev.t_s < t0 or ev.kind == SpeechStopped.__name__:
                continue
            key = f"{ev.stage}.{ev.kind}"
            if key not in out:
                out[key] = round((ev.t_s - t0) * 1000.0, 2)
        return out

    def forget(self, turn_id: int) -> None:
        self._events.pop(turn_id, None)
