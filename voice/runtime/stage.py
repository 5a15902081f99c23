"""The stage interface: consume frames, produce frames, own per-session state, reset on interrupt."""

from __future__ import annotations

from typing import AsyncIterator, Awaitable, Callable, Protocol

from voice.frames import Frame


class StageContext(Protocol):
    """What a stage may ask of the session that runs it."""

    session_id: str

    def assistant_active(self) -> bool:
        """True while the assistant is answering: from the end of a user turn until its audio has played."""

    async def interrupt(self, reason: str) -> None:
        """Out-of-band interrupt: cancel work in flight, drain queues, reset stages, clear the client."""

    async def retract(self, turn_id: int) -> None:
        """Take back a speculative end of `turn_id` (the user went on): cancel the answer started for it,
        drop what of it is held, and have the queued stages forget it (`Stage.retract`)."""

    def may_speculate_early(self) -> bool:
        """Whether the server can spare the work of an answer started early that may be taken back (the VAD's
        early question, `turn_speculate_ms`): False while its cores are busy."""

    def answer_played_s(self, turn_id: int) -> float | None:
        """Seconds of the answer to `turn_id` the client has played (estimated by the session; after an
        interrupt, what it had played when its buffer was cleared). 0.0 when none of it was sent, None
        when unknown (an older turn). A stage's `reset` may ask it to keep only what the user heard."""


class Stage:
    """Base class. Subclasses override `process` (an async generator) and, if stateful, `reset`.

    Frames a stage does not handle should be passed through (`yield frame`) so that later stages
    and the session still see them. A stage with `inline = True` runs in the caller of
    `Pipeline.push` (never queued behind slower stages); the VAD is such a stage so that it can
    always hear a barge-in.
    """

    name: str = "stage"
    inline: bool = False

    def __init__(self) -> None:
        self.ctx: StageContext | None = None

    def bind(self, ctx: StageContext) -> None:
        self.ctx = ctx

    async def start(self) -> None:
        """Per-session setup (called once before the first frame)."""

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        yield frame

    def reset(self) -> None:
        """Forget the turn in progress (called after an interrupt cancelled this stage's work)."""

    def retract(self, turn_id: int) -> None:
        """The end of `turn_id` was speculative and the user went on: its work was cancelled, and the
        turn comes again from its start (`SpeechStarted`, then all its audio so far). Forget the turn
        without a trace: nothing of it or of its answer may stay in a context. Default: `reset`."""
        self.reset()

    def new_conversation(self) -> None:
        """The client asked for a new conversation (its work was cancelled as by an interrupt): forget the
        dialogue so far too, so that the next turn is answered as the first. Default: `reset` (a stage that
        keeps no dialogue has nothing more to forget)."""
        self.reset()

    async def close(self) -> None:
        """Release per-session resources."""


class FunctionStage(Stage):
    """A stateless stage from a plain async function `frame -> list of frames` (handy in tests)."""

    def __init__(self, name: str, fn: Callable[[Frame], Awaitable[list[Frame]]]) -> None:
        super().__init__()
        self.name = name
        self._fn = fn

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        for out in await self._fn(frame):
            yield out
