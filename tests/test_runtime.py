"""Pipeline runtime: ordering, interrupt flushing, backpressure, inline head, stage failure, tracer."""

from __future__ import annotations

import asyncio

import numpy as np

from voice.frames import AssistantText, ErrorFrame, Frame, SpeechStopped, UserAudio
from voice.runtime import Pipeline, Stage, Tracer
from voice.runtime.stage import FunctionStage
from tests.conftest import run


def text(i: int, turn: int = 1) -> AssistantText:
    return AssistantText(turn_id=turn, text=str(i))


class Gate(Stage):
    """Passes frames only while its event is set; counts resets and cancelled work."""

    name = "gate"

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()
        self.resets = 0
        self.cancelled = 0
        self.seen: list[str] = []

    async def process(self, frame):
        self.seen.append(getattr(frame, "text", frame.kind))
        try:
            await self.open.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        yield frame

    def reset(self) -> None:
        self.resets += 1


async def collect(q: asyncio.Queue, n: int, timeout_s: float = 2.0) -> list[Frame]:
    return [await asyncio.wait_for(q.get(), timeout_s) for _ in range(n)]


def test_frames_keep_their_order_through_stages():
    async def main():
        async def double(f):
            return [f, AssistantText(turn_id=f.turn_id, text=f.text + "'")]

        async def upper(f):
            await asyncio.sleep(0.001 * (int(f.text.strip("'")) % 3))  # uneven work
            return [AssistantText(turn_id=f.turn_id, text=f.text.upper())]

        p = Pipeline([FunctionStage("double", double), FunctionStage("upper", upper)], queue_size=4)
        await p.start()
        consumer = asyncio.create_task(collect(p.output, 60))
        for i in range(30):
            await p.push(text(i))
        out = await consumer
        await p.stop()
        return [f.text for f in out]

    got = run(main())
    assert got == [t for i in range(30) for t in (str(i), f"{i}'")]


def test_interrupt_cancels_work_drains_queues_and_resets():
    async def main():
        gate = Gate()
        after = Gate()
        after.open.set()
        p = Pipeline([gate, after], queue_size=8)
        await p.start()
        for i in range(5):
            await p.push(text(i))
        await asyncio.sleep(0.05)
        assert gate.seen == ["0"] and p.queues[0].qsize() == 4   # one in flight, four queued
        await p.interrupt()
        assert gate.cancelled == 1
        assert gate.resets == 1 and after.resets == 1
        assert p.queue_depths() == [0, 0, 0]
        # the pipeline works again after the interrupt, and nothing old leaks out
        gate.open.set()
        await p.push(text(99, turn=2))
        out = await collect(p.output, 1)
        await asyncio.sleep(0.05)
        assert p.output.empty()
        await p.stop()
        return out

    out = run(main())
    assert [f.text for f in out] == ["99"]


def test_backpressure_blocks_the_producer_when_queues_are_full():
    async def main():
        gate = Gate()
        p = Pipeline([gate], queue_size=2)
        await p.start()
        pushed = 0

        async def producer():
            nonlocal pushed
            for i in range(10):
                await p.push(text(i))
                pushed += 1

        task = asyncio.create_task(producer())
        await asyncio.sleep(0.1)
        stuck_at = pushed
        gate.open.set()
        out = await collect(p.output, 10)
        await asyncio.wait_for(task, 2.0)
        await p.stop()
        return stuck_at, out

    stuck_at, out = run(main())
    assert stuck_at == 3   # one frame in the stage, two in its queue; the fourth push waits
    assert [f.text for f in out] == [str(i) for i in range(10)]


def test_inline_head_keeps_running_while_queued_stages_are_busy():
    class Head(Stage):
        name = "head"
        inline = True

        def __init__(self):
            super().__init__()
            self.heard = 0

        async def process(self, frame):
            self.heard += 1
            if self.heard == 1:
                yield frame   # only the first frame goes on to the blocked stage

    async def main():
        head, gate = Head(), Gate()
        p = Pipeline([head, gate], queue_size=1)
        await p.start()
        for i in range(50):
            await asyncio.wait_for(p.push(text(i)), 1.0)
        await p.stop()
        return head.heard

    assert run(main()) == 50


def test_a_failing_stage_emits_an_error_frame_and_reports_it():
    errors = []

    async def boom(frame):
        raise RuntimeError("model exploded")

    async def on_error(stage, exc):
        errors.append((stage.name, str(exc)))

    async def main():
        p = Pipeline([FunctionStage("boom", boom)], on_stage_error=on_error)
        await p.start()
        await p.push(text(1))
        out = await collect(p.output, 1)
        await p.stop()
        return out

    out = run(main())
    assert isinstance(out[0], ErrorFrame) and out[0].code == "stage_failed"
    assert "model exploded" in out[0].message
    assert errors == [("boom", "model exploded")]


def test_tracer_times_every_boundary_relative_to_end_of_turn():
    async def slow(f):
        if isinstance(f, SpeechStopped):
            await asyncio.sleep(0.05)
            return [f, AssistantText(turn_id=f.turn_id, text="hi")]
        return [f]

    async def main():
        tracer = Tracer()
        p = Pipeline([FunctionStage("slow", slow)], tracer=tracer)
        await p.start()
        await p.push(UserAudio(turn_id=3, pcm=np.zeros(512, np.float32)))
        await p.push(SpeechStopped(turn_id=3, stream_s=1.0))
        await collect(p.output, 3)
        await p.stop()
        return tracer

    tracer = run(main())
    timings = tracer.turn_timings_ms(3)
    assert 40 <= timings["slow.AssistantText"] <= 500
    kinds = [(e.stage, e.kind) for e in tracer.events(3)]
    assert ("input", "UserAudio") in kinds and ("slow", "SpeechStopped") in kinds
