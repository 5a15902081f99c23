"""Per-session dialogue context: user turns from the LLM stage, spoken assistant text from the TTS stage."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field

DEFAULT_INSTRUCTIONS = ("You are Voice, a helpful voice assistant. Your answers are spoken aloud, so answer in "
                        "one short sentence, in plain words, with no lists, symbols or markdown.")


def clock_text(now: dt.datetime) -> str:
    """"Today is Sunday, May 3, 2026. The time is 4:33 PM." (the corpus's context format)."""
    hour = now.hour % 12 or 12
    return (f"Today is {now.strftime('%A, %B')} {now.day}, {now.year}. "
            f"The time is {hour}:{now.minute:02d} {'AM' if now.hour < 12 else 'PM'}.")


def system_prompt(now: dt.datetime, instructions: str = DEFAULT_INSTRUCTIONS) -> str:
    return f"{instructions} {clock_text(now)}"


@dataclass
class _Clause:
    text: str
    start_s: float   # when the client starts playing it (monotonic, estimated at the server)
    end_s: float


@dataclass
class _Exchange:
    turn_id: int
    user: str
    clauses: list[_Clause] = field(default_factory=list)
    cut_at_s: float | None = None   # interrupted here: later audio was never heard

    def assistant_text(self) -> str:
        words: list[str] = []
        for c in self.clauses:
            if self.cut_at_s is None or c.end_s <= self.cut_at_s:
                words += c.text.split()
            elif c.start_s < self.cut_at_s:  # cut inside this clause: keep the share of words played
                share = (self.cut_at_s - c.start_s) / max(c.end_s - c.start_s, 1e-6)
                words += c.text.split()[: int(len(c.text.split()) * share)]
        return " ".join(words)


class Conversation:
    """What the LLM sees of the dialogue: user turns and only the assistant text that was spoken.

    The LLM stage adds user turns and reads `messages()`; the TTS stage reports each clause it
    turned into audio with its estimated playback interval (`spoken`), and on an interrupt
    `cut(at_s)` drops what had not been played by then. "Played" is estimated from what the TTS
    stage emitted and the audio's duration (the server cannot see the client's speaker); audio
    still in network buffers counts as played, so the estimate errs by the transport delay.
    Thread-safe: stages call it from the event loop and from worker threads.
    """

    def __init__(self, max_exchanges: int = 6) -> None:
        self.max_exchanges = max_exchanges
        self._exchanges: list[_Exchange] = []
        self._lock = threading.Lock()

    def add_user(self, turn_id: int, text: str) -> None:
        with self._lock:
            self._exchanges.append(_Exchange(turn_id, text.strip()))
            del self._exchanges[: -self.max_exchanges]

    def spoken(self, turn_id: int, text: str, start_s: float, end_s: float) -> None:
        """The TTS stage emitted audio for `text`, to be played from `start_s` to `end_s`."""
        with self._lock:
            ex = self._find(turn_id)
            if ex is not None and ex.cut_at_s is None and text.strip():
                ex.clauses.append(_Clause(text.strip(), start_s, end_s))

    def forget(self, turn_id: int) -> None:
        """Remove the exchange of `turn_id` (a turn answered speculatively and taken back)."""
        with self._lock:
            self._exchanges = [ex for ex in self._exchanges if ex.turn_id != turn_id]

    def clear(self) -> None:
        """A new conversation: forget every exchange."""
        with self._lock:
            self._exchanges.clear()

    def cut(self, at_s: float) -> None:
        """Interrupt at `at_s`: forget assistant audio not yet played by then (idempotent)."""
        with self._lock:
            for ex in self._exchanges:
                if ex.cut_at_s is None and any(c.end_s > at_s for c in ex.clauses):
                    ex.cut_at_s = at_s

    def assistant_text(self, turn_id: int) -> str:
        with self._lock:
            ex = self._find(turn_id)
            return ex.assistant_text() if ex else ""

    def messages(self, system: str) -> list[dict[str, str]]:
        """Chat messages for the LLM: system, then user / assistant turns (empty answers left out)."""
        out = [{"role": "system", "content": system}]
        with self._lock:
            for ex in self._exchanges:
                out.append({"role": "user", "content": ex.user})
                answer = ex.assistant_text()
                if answer:
                    out.append({"role": "assistant", "content": answer})
        return out

    def _find(self, turn_id: int) -> _Exchange | None:
        for ex in reversed(self._exchanges):
            if ex.turn_id == turn_id:
                return ex
        return None
