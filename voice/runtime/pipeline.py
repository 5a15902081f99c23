"""A pipeline: inline head stages, then queued stages run as tasks joined by bounded queues."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Sequence

from voice.frames import ErrorFrame, Frame
from voice.runtime.stage import Stage
from voice.runtime.tracer import Tracer

log = logging.getLogger(__name__)


class Pipeline:
    """Runs `stages` in order. Leading stages with `inline = True` run inside `push` itself.

    The rest run as one task each; stage i reads queue i and writes queue i+1 (all bounded, so
    a slow stage pushes back on its producer). The last queue is `output`, read by the session.
    `interrupt()` cancels the queued stages' work in flight, drains every queue, resets those
    stages and restarts them; the inline head keeps its state (it is listening to the user).
    """

    def __init__(self, stages: Sequence[Stage], queue_size: int = 64, tracer: Tracer | None = None,
                 on_stage_error: Callable[[Stage, BaseException], Awaitable[None]] | None = None,
                 head_observer: Callable[[Frame], None] | None = None) -> None:
        n_inline = 0
        while n_inline < len(stages) and stages[n_inline].inline:
            n_inline += 1
        if any(s.inline for s in stages[n_inline:]):
            raise ValueError("inline stages must come first in a pipeline")
        self.head: list[Stage] = list(stages[:n_inline])
        self.stages: list[Stage] = list(stages[n_inline:])
        self.queue_size = queue_size
        self.tracer = tracer or Tracer()
        self.queues: list[asyncio.Queue[Frame]] = [asyncio.Queue(queue_size) for _ in range(len(self.stages) + 1)]
        self._tasks: list[asyncio.Task | None] = [None] * len(self.stages)
        self._on_stage_error = on_stage_error
        self._head_observer = head_observer
        self._interrupt_lock = asyncio.Lock()
        self._started = False
        self.generation = 0   # +1 at each interrupt or retract: output read before it is stale

    @property
    def output(self) -> asyncio.Queue[Frame]:
        return self.queues[-1]

    @property
    def all_stages(self) -> list[Stage]:
        return self.head + self.stages

    async def start(self) -> None:
        for stage in self.all_stages:
            await stage.start()
        for i in range(len(self.stages)):
            self._tasks[i] = asyncio.create_task(self._run_stage(i), name=f"stage:{self.stages[i].name}")
        self._started = True

    async def push(self, frame: Frame) -> None:
        """Feed one frame in: through the inline head now, then into the first queue (may wait)."""
        self.tracer.record("input", frame)
        frames = [frame]
        for stage in self.head:
            produced: list[Frame] = []
            for f in frames:
                async for out in stage.process(f):
                    self.tracer.record(stage.name, out)
                    if self._head_observer is not None:
                        self._head_observer(out)
                    produced.append(out)
            frames = produced
        for f in frames:
            if not f.for_session:     # frames for the session alone (it sees them through head_observer)
                await self.queues[0].put(f)

    async def _run_stage(self, i: int) -> None:
        stage, inq, outq = self.stages[i], self.queues[i], self.queues[i + 1]
        while True:
            frame = await inq.get()
            try:
                async for out in stage.process(frame):
                    self.tracer.record(stage.name, out)
                    await outq.put(out)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failing stage ends its session cleanly, never the server
                log.exception("stage %s failed", stage.name)
                error = ErrorFrame(turn_id=frame.turn_id, code="stage_failed",
                                   message=f"{stage.name}: {type(exc).__name__}: {exc}")
                try:
                    outq.put_nowait(error)   # never wait here: the session must learn of it at once
                except asyncio.QueueFull:
                    _drain(outq)
                    outq.put_nowait(error)
                if self._on_stage_error is not None:
                    await self._on_stage_error(stage, exc)
                return

    async def interrupt(self) -> None:
        """Cancel work in flight, drain every queue, reset the queued stages, restart them."""
        await self._restart(lambda stage: stage.reset())

    async def retract(self, turn_id: int) -> None:
        """As `interrupt`, for a speculative end of `turn_id` taken back: the stages' `retract` instead of `reset`."""
        await self._restart(lambda stage: stage.retract(turn_id))

    async def new_conversation(self) -> None:
        """As `interrupt`, and every stage forgets the dialogue so far (its `new_conversation`)."""
        await self._restart(lambda stage: stage.new_conversation())

    async def _restart(self, forget: Callable[[Stage], None]) -> None:
        async with self._interrupt_lock:
            self.generation += 1
            await self._cancel_tasks()
            for q in self.queues:
                _drain(q)
            for stage in self.stages:
                forget(stage)
            if self._started:
                for i in range(len(self.stages)):
                    self._tasks[i] = asyncio.create_task(self._run_stage(i), name=f"stage:{self.stages[i].name}")

    async def _cancel_tasks(self) -> None:
        tasks = [t for t in self._tasks if t is not None and not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        await self._cancel_tasks()
        self._started = False
        for stage in self.all_stages:
            try:
                await stage.close()
            except Exception:
                log.exception("closing stage %s failed", stage.name)

    def queue_depths(self) -> list[int]:
        return [q.qsize() for q in self.queues]


def _drain(q: asyncio.Queue) -> int:
    n = 0
    while True:
        try:
            q.get_nowait()
            n += 1
        except asyncio.QueueEmpty:
            return n
