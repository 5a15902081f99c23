"""Live terminal status for `voice talk`: state, both transcripts, each turn's latency."""

from __future__ import annotations

import sys
from typing import IO

STATES = ("connecting", "listening", "thinking", "speaking")


class StatusDisplay:
    """On a terminal one status line is redrawn in place and finished lines scroll above it;
    elsewhere (pipes, logs) only changes are printed, one per line."""

    def __init__(self, stream: IO[str] | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.state = "connecting"
        self.partial = ""
        self.muted_note = ""

    def set_state(self, state: str, note: str = "") -> None:
        if state == self.state and note == self.muted_note:
            return
        self.state, self.muted_note = state, note
        if self.tty:
            self._redraw()
        else:
            self._line(f"[{state}]{' ' + note if note else ''}")

    def user(self, text: str, final: bool) -> None:
        self._text("you", text, final)

    def assistant(self, text: str, final: bool) -> None:
        self._text("assistant", text, final)

    def turn(self, turn_id: int, v2v_ms: float | None, detail: str = "") -> None:
        v2v = f"{v2v_ms:.0f} ms" if v2v_ms is not None else "n/a (no audible answer)"
        self._line(f"turn {turn_id}: voice-to-voice {v2v}{'  ' + detail if detail else ''}")

    def info(self, text: str) -> None:
        self._line(text)

    def warning(self, text: str) -> None:
        """A line printed even with `quiet` (something the user must fix, such as a mistyped option)."""
        quiet, self.quiet = self.quiet, False
        try:
            self._line(f"warning: {text}")
        finally:
            self.quiet = quiet

    def _text(self, who: str, text: str, final: bool) -> None:
        if final:
            self.partial = ""
            self._line(f"{who}: {text}")
        elif self.tty:
            self.partial = f"{who}: {text}"
            self._redraw()

    def _line(self, text: str) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write("\r\033[K" + text + "\n")
            self._redraw()
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _redraw(self) -> None:
        if self.quiet:
            return
        note = f" ({self.muted_note})" if self.muted_note else ""
        tail = f"  {self.partial}" if self.partial else ""
        self.stream.write(f"\r\033[K[{self.state}]{note}{tail}"[:200])
        self.stream.flush()

    def close(self) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\r\033[K")
            self.stream.flush()
