"""The `--events` JSONL log: every message in and out, stamped with the client's monotonic clock."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any


class EventLog:
    """One JSON object per line: {"t": s since session start, "dir": "in"|"out"|"client", "event": {...}}.

    Binary audio is summarised as {"type": "audio", "samples": N, ...}. "client" lines are the
    client's own measurements (one `v2v` per turn, a closing `summary`).
    """

    def __init__(self, path: str | Path | None, start_s: float | None = None) -> None:
        self.start_s = time.monotonic() if start_s is None else start_s
        self._fh: IO[str] | None = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "w", encoding="utf-8")
        self.lines = 0

    def write(self, direction: str, event: dict[str, Any], t_s: float | None = None) -> None:
        if self._fh is None:
            return
        t = (time.monotonic() if t_s is None else t_s) - self.start_s
        self._fh.write(json.dumps({"t": round(t, 6), "dir": direction, "event": event}) + "\n")
        self.lines += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Load a log written by `EventLog` (for tests and analysis)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
