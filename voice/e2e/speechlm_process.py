"""The speech LM in a process of its own (`voice serve`'s default for the `e2e` pipeline).

On 2 cores, four e2e sessions kept the speech LM's worker thread 87% busy, and its calls ran 2-3x
slower than alone: the worker, the codec's threads and the event loop (VAD, websockets) took turns
with Python's one lock between the many small torch operations of a step (docs/e2e.md, "Four
sessions on 2 cores"). Here the shared `SpeechLMService` and one real `SpeechLMStage` per session
run in a child process with its own interpreter and lock; the server keeps a `RemoteSpeechLMStage`
in each session's pipeline that forwards the frames the stage reads (the turn's `SpeechStarted`,
audio, codes and `SpeechStopped`) and yields what the child's stage answers.

Protocol (tuples over one `multiprocessing` pipe, in order):

- server -> child: `("open", sid, settings)`, `("frame", sid, epoch, frame)`, `("reset", sid, epoch,
  played_s)`, `("retract", sid, epoch, turn_id)`, `("new_conversation", sid, epoch)`, `("state", sid, epoch)`,
  `("close", sid)`, `("quit",)`.
- child -> server: `("ready", info)` or `("failed", message)` once at start; then `("out", sid, epoch,
  frame)`, `("error", sid, epoch, message)`, `("state", sid, epoch, SpeechLMStage.context_state())`,
  `("closed", sid)`, and `("cpu", 0, seconds)` every `CPU_REPORT_S` (the CPU it has used, for the server's
  load monitor).

`epoch` counts a session's interrupts: after a reset or a retract the server drops whatever the
child made before it, and the child drops frames of an older epoch, as `Pipeline.interrupt` drains
its queues. A reset carries how much of the last answer the client played (`answer_played_s`, asked
on the server where the session lives), so the child's stage keeps that much of it in the context.
When the child dies, every session using it ends with an error and the next one starts a new child.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import signal
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator

from voice.frames import Codes, Frame, SpeechStarted, SpeechStopped, TurnEnd, UserAudio
from voice.e2e.speechlm_stage import check_think
from voice.runtime.stage import Stage

log = logging.getLogger(__name__)

START_TIMEOUT_S = 600.0     # loading torch, the model and the Whisper ear on a busy 2-core machine
CLOSE_TIMEOUT_S = 10.0
CPU_REPORT_S = 0.25           # how often the child tells the server the CPU seconds it has used


class SpeechLMProcess:
    """The child process that holds the speech LM, and the server's end of its pipe.

    Made at once: the child loads the model meanwhile (about 5 s on 2 cores), so a server can warm its
    other pipelines beside it; `wait_ready()` waits for it (ValueError when it could not load).
    `info`: what the server's stages need to know of the model (`reads_ear`, `think`, `num_codebooks`);
    `codec`: the codec that decodes its codes (in the server, which streams the audio)."""

    def __init__(self, folder: Path, shown: str, max_sessions: int, codec, torch_threads: int = 1,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        ctx = multiprocessing.get_context("spawn")        # never fork a process with torch's and asyncio's threads
        self._conn, child_end = ctx.Pipe()
        self.process = ctx.Process(target=_child_main, name="speechlm", daemon=True,
                                   args=(child_end, str(folder), shown, max_sessions, torch_threads,
                                         logging.getLogger().getEffectiveLevel()))
        self.process.start()
        child_end.close()
        self.max_sessions = max_sessions
        self._send_lock = threading.Lock()
        self._routes: dict[int, Any] = {}
        self._ids = itertools.count(1)
        self.alive = True                        # until it failed to load, or ended
        self._client_codec = codec
        self.info: dict = {}
        self.codec = None
        self._failure: str | None = None
        self._ready = threading.Event()
        self.cpu_s = 0.0                         # the child's CPU seconds so far, as it last reported them
        threading.Thread(target=self._run_pipe, args=(shown, start_timeout_s), name="speechlm-pipe",
                         daemon=True).start()

    @property
    def ended(self) -> bool:
        """The child served and has ended (a server starts a new one; one that could not load stays failed)."""
        return self._ready.is_set() and self._failure is None and not self.alive

    def wait_ready(self) -> "SpeechLMProcess":
        """Once the child has loaded the model: this; ValueError saying why when it could not."""
        self._ready.wait()
        if self._failure is not None:
            raise ValueError(self._failure)
        return self

    def _run_pipe(self, shown: str, timeout_s: float) -> None:
        try:
            self.info, self.codec = self._wait_ready(shown, timeout_s)
        except Exception as exc:
            self._failure = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            self.alive = False
            self.shutdown()
            return
        finally:
            self._ready.set()
        self._read()

    def _wait_ready(self, shown: str, timeout_s: float) -> tuple[dict, Any]:
        try:
            if not self._conn.poll(timeout_s):
                raise ValueError(f"the speech LM process did not load {shown} in {timeout_s:g} s")
            kind, payload = self._conn.recv()
        except (EOFError, OSError):
            self.process.join(5)
            kind, payload = "failed", (f"the speech LM process ended while loading {shown} "
                                       f"(exit code {self.process.exitcode})")
        if kind != "ready":
            raise ValueError(payload)
        from voice.e2e.e2e_pipeline import decoder_for

        return payload, decoder_for(self._client_codec, payload["num_codebooks"])

    # -- the pipe ------------------------------------------------------------------------------
    def send(self, message: tuple) -> None:
        if not self.alive:
            raise RuntimeError(f"the speech LM process has ended (exit code {self.process.exitcode})")
        with self._send_lock:
            self._conn.send(message)

    def register(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> int:
        """A new session id; what the child sends for it goes into `queue` (from the pipe's reader thread)."""
        sid = next(self._ids)
        self._routes[sid] = lambda msg: loop.call_soon_threadsafe(queue.put_nowait, msg)
        return sid

    def unregister(self, sid: int) -> None:
        self._routes.pop(sid, None)

    def _read(self) -> None:
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                break
            if msg[0] == "cpu":
                self.cpu_s = msg[2]
                continue
            self._route(msg[1], msg)
        self.alive = False
        self.process.join(5)
        why = f"the speech LM process ended (exit code {self.process.exitcode})"
        if self._routes:
            log.error("%s; its %d session(s) end", why, len(self._routes))
        for sid in list(self._routes):
            self._route(sid, ("dead", sid, None, why))

    def _route(self, sid: int, msg: tuple) -> None:
        route = self._routes.get(sid)
        if route is not None:
            try:
                route(msg)
            except RuntimeError:         # the session's event loop has closed
                self.unregister(sid)

    def shutdown(self) -> None:
        if self.alive and self._ready.is_set():
            try:
                self.send(("quit",))
            except (OSError, RuntimeError):
                pass
        elif self.process.is_alive():
            self.process.terminate()           # still loading (or failed): nothing to finish
        self.process.join(CLOSE_TIMEOUT_S)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(CLOSE_TIMEOUT_S)
        self.alive = False


class RemoteSpeechLMStage(Stage):
    """The server's side of one session's `SpeechLMStage` in the child process (same frames in and out).

    `settings` are `SpeechLMStage`'s keyword arguments, with `now` (the hello's fixed clock, "" for the
    real time) for `clock`."""

    name = "speechlm"

    def __init__(self, service: SpeechLMProcess, **settings) -> None:
        super().__init__()
        check_think(settings.get("think"), service.info["think"])
        self.service, self.settings = service, settings
        self.reads_ear = bool(service.info["reads_ear"])
        self.sid: int | None = None
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._epoch = 0
        self._turn = -1            # the user turn being heard (as the child's stage keeps it)
        self._answered: int | None = None   # the last turn answered: the one whose audio the client may be playing
        self.last_cut = None       # what the last interrupt left of an answer (`AnswerCut`), as of the last `state()`

    async def start(self) -> None:
        self._open()

    def _open(self) -> None:
        if self.sid is None:
            self.sid = self.service.register(asyncio.get_running_loop(), self._inbox)
            self.service.send(("open", self.sid, self.settings))

    def _send(self, frame: Frame) -> None:
        self._open()
        self.service.send(("frame", self.sid, self._epoch, frame))

    def _drain(self) -> None:
        """What the child sent while no answer was read: an error or its end raise, the rest is stale."""
        while not self._inbox.empty():
            self._check(self._inbox.get_nowait())

    def _check(self, msg: tuple) -> tuple | None:
        """`msg` when it is of this epoch; None for what was made before an interrupt (or a late "closed")."""
        if msg[0] == "dead":
            raise RuntimeError(msg[3])
        if len(msg) < 4 or msg[2] != self._epoch:
            return None
        if msg[0] == "error":
            raise RuntimeError(f"speech LM process: {msg[3]}")
        if msg[0] == "state":
            self.last_cut = msg[3]["last_cut"]
        return msg

    async def state(self) -> dict:
        """The child's `SpeechLMStage.context_state()` once every frame, reset and retract sent before has been
        dealt with (for tests and logs; not while an answer is being read)."""
        self._open()
        self.service.send(("state", self.sid, self._epoch))
        while True:
            msg = self._check(await self._inbox.get())
            if msg is not None and msg[0] == "state":
                return msg[3]

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        self._drain()                   # an error the child met while hearing ends the session now
        if isinstance(frame, SpeechStarted):
            self._turn = frame.turn_id
            self._send(frame)
        elif isinstance(frame, UserAudio):
            if self.reads_ear and frame.turn_id == self._turn:
                self._send(frame)
        elif isinstance(frame, Codes) and frame.role == "user":
            if frame.turn_id == self._turn:
                self._send(frame)
            return
        elif isinstance(frame, SpeechStopped) and frame.turn_id == self._turn:
            yield frame
            self._send(frame)
            self._turn, self._answered = -1, frame.turn_id
            async for out in self._answer(frame.turn_id):
                yield out
            return
        yield frame

    async def _answer(self, turn: int) -> AsyncIterator[Frame]:
        while True:
            msg = self._check(await self._inbox.get())
            if msg is None or msg[0] != "out":
                continue
            out = msg[3]
            yield out
            if isinstance(out, TurnEnd) and out.turn_id == turn:
                return

    def reset(self) -> None:
        played = None
        if self.ctx is not None and self._answered is not None:
            played = self.ctx.answer_played_s(self._answered)
        self._restart(("reset", self.sid, self._epoch + 1, played))

    def retract(self, turn_id: int) -> None:
        self._restart(("retract", self.sid, self._epoch + 1, turn_id))

    def new_conversation(self) -> None:
        self._restart(("new_conversation", self.sid, self._epoch + 1))

    def _restart(self, message: tuple) -> None:
        self._epoch, self._turn = message[2], -1
        if self.sid is not None and self.service.alive:
            self.service.send(message)

    async def close(self) -> None:
        if self.sid is None:
            return
        sid, self.sid = self.sid, None
        try:
            if self.service.alive:
                self.service.send(("close", sid))
                await asyncio.wait_for(self._closed(), CLOSE_TIMEOUT_S)
        except (RuntimeError, OSError, asyncio.TimeoutError) as exc:
            log.warning("speech LM process: session %d not closed cleanly: %s", sid, exc)
        finally:
            self.service.unregister(sid)

    async def _closed(self) -> None:
        while True:
            kind = (await self._inbox.get())[0]
            if kind in ("closed", "dead"):
                return


# ---- the child process ---------------------------------------------------------------------------

_STATE = object()       # in a child session's queue: report `context_state()` there


class _PlayedContext:
    """The child's stage asks its context how much of the answer was played: the server told it with the reset."""

    def __init__(self) -> None:
        self.played_s: float | None = None

    def answer_played_s(self, turn_id: int) -> float | None:
        return self.played_s


class _ChildSession:
    """One session's `SpeechLMStage` in the child: its frames go through it in order on one task."""

    def __init__(self, host: "_ChildHost", sid: int, stage) -> None:
        self.host, self.sid, self.stage = host, sid, stage
        self.ctx = _PlayedContext()
        stage.bind(self.ctx)
        self.epoch = 0
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task = asyncio.create_task(self._consume(None, None, 0, self.queue))

    def restart(self, epoch: int, forget) -> None:
        """An interrupt: the work in flight is cancelled, frames not yet read are dropped, the stage forgets."""
        old, self.epoch, self.queue = self.task, epoch, asyncio.Queue()
        old.cancel()
        self.task = asyncio.create_task(self._consume(old, forget, epoch, self.queue))

    async def _consume(self, old, forget, epoch: int, queue: asyncio.Queue) -> None:
        if old is not None:
            await asyncio.gather(old, return_exceptions=True)
        if forget is not None:
            forget()
        while True:
            frame = await queue.get()
            if frame is _STATE:                    # after everything before it, on the worker after its calls
                state = await self.host.service.call(self.stage.context_state)
                self.host.send(("state", self.sid, epoch, state))
                continue
            try:
                async for out in self.stage.process(frame):
                    if out is not frame:           # the server's stage passed its input on itself
                        self.host.send(("out", self.sid, epoch, out))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("speech LM stage of session %d failed", self.sid)
                self.host.send(("error", self.sid, epoch, f"{type(exc).__name__}: {exc}"))
                return

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.stage.close()


class _ChildHost:
    """The child's event loop: one `_ChildSession` per server session, the shared service's worker under them."""

    def __init__(self, conn, service) -> None:
        self.conn, self.service = conn, service
        self.sessions: dict[int, _ChildSession] = {}
        self._closing: set[asyncio.Task] = set()
        self._send_lock = threading.Lock()

    def send(self, message: tuple) -> None:
        with self._send_lock:
            try:
                self.conn.send(message)
            except (OSError, ValueError):      # the server has gone: the reader thread ends the loop
                pass

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        ended = loop.create_future()
        threading.Thread(target=self._read, args=(loop, ended), name="speechlm-pipe", daemon=True).start()
        report = loop.create_task(self._report_cpu())
        await ended
        report.cancel()
        for session in list(self.sessions.values()):
            await session.close()
        self.service.shutdown()

    async def _report_cpu(self) -> None:
        """The CPU seconds this process has used, to the server every CPU_REPORT_S: its load monitor counts
        them (a reading from the child itself: no listing of processes, no /proc, on the server's loop)."""
        while True:
            self.send(("cpu", 0, time.process_time()))
            await asyncio.sleep(CPU_REPORT_S)

    def _read(self, loop: asyncio.AbstractEventLoop, ended: asyncio.Future) -> None:
        while True:
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                break
            if msg[0] == "quit":
                break
            loop.call_soon_threadsafe(self._dispatch, msg)
        loop.call_soon_threadsafe(lambda: ended.done() or ended.set_result(None))

    def _dispatch(self, msg: tuple) -> None:
        kind, sid = msg[0], msg[1]
        if kind == "open":
            try:
                self.sessions[sid] = _ChildSession(self, sid, self._stage(msg[2]))
            except Exception as exc:
                self.send(("error", sid, 0, f"{type(exc).__name__}: {exc}"))
            return
        session = self.sessions.get(sid)
        if session is None:
            if kind == "close":
                self.send(("closed", sid))
            return
        if kind in ("frame", "state"):            # (sent after any reset before it: of its epoch)
            session.queue.put_nowait(msg[3] if kind == "frame" else _STATE)
        elif kind == "reset":
            played = msg[3]

            def forget() -> None:
                session.ctx.played_s = played
                session.stage.reset()
            session.restart(msg[2], forget)
        elif kind == "retract":
            session.restart(msg[2], lambda: session.stage.retract(msg[3]))
        elif kind == "new_conversation":
            session.restart(msg[2], session.stage.new_conversation)
        elif kind == "close":
            del self.sessions[sid]
            task = asyncio.get_running_loop().create_task(self._close(session))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _close(self, session: _ChildSession) -> None:
        try:
            await session.close()
        finally:
            self.send(("closed", session.sid))

    def _stage(self, settings: dict):
        from voice.cascade.config import hello_clock
        from voice.e2e.speechlm_stage import SpeechLMStage

        settings = dict(settings)
        clock = hello_clock(settings.pop("now", ""))
        return SpeechLMStage(self.service, clock=clock, **settings)


def _child_main(conn, folder: str, shown: str, max_sessions: int, torch_threads: int, log_level: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C reaches the whole group: the server stops, then says quit
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s speechlm-process %(name)s: %(message)s")
    try:
        import torch

        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        from voice.codec.loader import load_codec
        from voice.e2e.e2e_pipeline import load_service
        from voice.e2e.pipeline import DEFAULT_CODEC

        service = load_service(Path(folder), shown, max_sessions, load_codec(DEFAULT_CODEC))
    except Exception as exc:
        conn.send(("failed", str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"))
        conn.close()
        return
    gen = service.generator
    conn.send(("ready", {"reads_ear": bool(gen.cfg.reads_ear), "think": bool(gen.think),
                         "num_codebooks": int(gen.vocab.num_codebooks)}))
    asyncio.run(_ChildHost(conn, service).run())
