"""Streaming generation: sessions share one model and one slot cache; answer steps of sessions are batched.

A session prefills its context and the user's frames while the user speaks (`feed_text`,
`feed_user_speech`), then `begin_answer` and `step` run the answer block of `voice.speechlm.format`:
each step hands out the new text of the inner monologue and every audio frame that just became
complete (all K codebooks known, so the decoder can play it), until codebook 0 says the audio ended.
`end_answer` ends an answer early (a barge-in) and can roll the context back to the frames the user
heard.

**Thinking in text** (`think`, the default for a model that reads heard text). The same model answers a
question it has read far better when it is typed than when it is spoken (docs/speechlm.md, "Thinking in
text"), so each session also keeps its dialogue as text in a second cache slot, its *thought*: the context,
each user turn as the words its ears read of it (`user_text`), each answer's words (`assistant_text`). The
spoken answer's words are the thought's: at every answer step one batched forward pass runs the answer's
step and the thought's, the thought writes the next word as text, and the answer block writes that word
in its text stream where it would have written its own; the model makes only the audio. The first word
comes in the same step as before, so the first frame is not later; a step costs one more row in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from voice.speechlm.heard import HeardQueue
from voice.speechlm.hearing import HearingStream, PackedHearing, Speller
from voice.speechlm.kvcache import SlotDecoder
from voice.speechlm.lexicon import WordSnapper
from voice.speechlm.model import SpeechLM
from voice.speechlm.whisper_ear import FEATURE_DIM, EarStream, WhisperEar, fit_frames


@dataclass(frozen=True)
class Sampling:
    """temperature 0 = greedy; top_k 0 = the whole distribution. The audio codes may be sampled otherwise than
    the words (audio_temperature, audio_top_k; None = as the words)."""

    temperature: float = 0.0
    top_k: int = 0
    audio_temperature: float | None = None
    audio_top_k: int | None = None
    max_text_tokens: int = 64      # an answer's words end here at the latest
    max_frames: int = 750          # an answer's audio ends here at the latest (15 s at 50 Hz)
    # once the words are written, their audio ends by frames_margin + frames_per_token * text tokens at the
    # latest: every answer of the corpus's train split fits (12 * tokens + 55 frames at most; docs/speechlm.md,
    # "Streaming inference"); a weak model otherwise babbles on to max_frames. 0 turns the bound off.
    frames_per_token: float = 12.0
    frames_margin: int = 60
    # a word-aligned model (Layout.text_align "words") writes <|end_of_text|> after its last word's first ids, so
    # its audio ends by this many frames after that step at the latest (the train split's 2,310 answers need 23
    # at the median and 64 at most; docs/speechlm.md, "Word-aligned inner monologue"). 0 turns the bound off.
    frames_after_words: int = 75


@dataclass
class StepOutput:
    """What one step produced for one session."""

    text_ids: list[int] = field(default_factory=list)      # new words of the inner monologue
    frames: np.ndarray | None = None                         # complete frames [K, n] (None if none yet)
    done: bool = False                                       # the answer is over


@dataclass
class _Thought:
    """A session's dialogue as text, in its own cache slot (the generator's `think` mode)."""

    slot: int
    pending: list[int] = field(default_factory=list)   # ids that go in with the thought's next forward pass
    answer_start: int | None = None     # cache position of the last answer's <|assistant_text|> marker
    fed_words: int = 0                  # of that answer's words, those in the cache
    last: int | None = None             # the word just written, fed at the next step (while thinking)
    given: list[int] | None = None      # words to say given by a <|speak|> block: the next answer says them

    @property
    def thinking(self) -> bool:
        return self.last is not None


@dataclass(frozen=True)
class ContextMark:
    """Where a session's context stood (`SpeechGenerator.mark`): `rewind` goes back to it."""

    length: int
    pending_text: int | None
    answer: object
    thought: tuple | None = None        # (length, pending, answer_start, fed_words) of the thought slot


@dataclass(frozen=True)
class Splice:
    """The oldest turns of a session went (`SpeechGenerator.forget_turns`): positions before `cut` became a new
    context block of `head` steps, those after it moved up (per slot; the thought's None without a thought)."""

    cut: int
    head: int
    thought_cut: int | None = None
    thought_head: int | None = None

    def position(self, pos: int | None) -> int | None:
        """Where a position of the speech slot went (None: it was in the span that went, or was None)."""
        return None if pos is None or pos < self.cut else pos - self.cut + self.head

    def thought_position(self, pos: int | None) -> int | None:
        """Where a position of the thought slot went (None: it went, or there is no thought)."""
        if pos is None or self.thought_cut is None or pos < self.thought_cut:
            return None
        return pos - self.thought_cut + self.thought_head

    def moved(self, mark: ContextMark) -> ContextMark:
        """`mark`, taken before the splice, where it points now; a mark inside the span that went points just after
        the new context block, with nothing pending."""
        length = self.position(mark.length)
        if length is None:
            length, pending, answer = self.head, None, None
        else:
            pending, answer = mark.pending_text, mark.answer
            if isinstance(answer, _Answer):
                start = self.position(answer.start)
                answer = None if start is None else replace(answer, start=start)
        thought = mark.thought
        if thought is not None and self.thought_cut is not None:
            t_length, t_pending, t_start, fed = thought
            t_length = self.thought_position(t_length)
            thought = ((self.thought_head, [], None, 0) if t_length is None
                       else (t_length, t_pending, self.thought_position(t_start), fed))
        return ContextMark(length, pending, answer, thought)


class NoFreeSlotError(RuntimeError):
    """Every cache slot holds a session (`SpeechGenerator.open`)."""


@dataclass
class _Answer:
    start: int = 0                      # cache position of the block's first step (the marker)
    step: int = 0                       # block step of the pending input (0 = the marker); steps fed = step
    text_ids: list[int] = field(default_factory=list)
    text_done: bool = False
    text_end: int = 0                   # block step of <|end_of_text|>, once written
    frames_end: int | None = None       # number of frames, once codebook 0 said END
    codes: list[list[int]] = field(default_factory=list)   # per codebook, per frame
    frames_out: int = 0                 # frames handed out so far
    frames_kept: int | None = None      # after a rollback: the frames the context still holds
    words: list[int] | None = None      # the words to say, given (begin_answer(words=...)): written, not sampled
    done: bool = False


@dataclass
class Session:
    """One conversation's place in the shared cache."""

    slot: int
    pending_text: int | None = None           # a step decided but not fed yet (the answer's end_of_turn)
    user_open: bool = False                   # a user speech block has started
    answer: _Answer | None = None             # the answer being made, or the last one until the next block starts
    hearing: HearingStream | None = None      # the user turn's hearing-encoder stream (models with one)
    held: np.ndarray | None = None            # user frames [K, n] waiting for their features (the encoder's lookahead)
    ear: EarStream | None = None              # the user turn's Whisper-ear stream (models that read the ear, given audio)
    ear_rows: np.ndarray | None = None        # ear features [m, D] not yet matched with frames
    enc_pushed: int = 0                       # of those rows, how many the ear encoder has read already
    speller: Speller | None = None            # the encoder's spelling of the turn (models that read heard text)
    heard: HeardQueue | None = None           # its words waiting for text-stream steps
    spelled: list[str] = field(default_factory=list)   # the words spelled of the last user turn (kept after it)
    thought: _Thought | None = None           # the dialogue as text (the generator's `think` mode)
    # where each user turn starts: (position of its first marker, the thought slot's length then or None)
    turns: list[tuple[int, int | None]] = field(default_factory=list)

    def clear_user(self) -> None:
        """Forget the user turn's streams and held frames."""
        self.hearing = self.held = self.ear = self.ear_rows = self.speller = self.heard = None
        self.enc_pushed = 0

    @property
    def answering(self) -> bool:
        return self.answer is not None and not self.answer.done


class SpeechGenerator:
    """The model, its tokenizer and a slot cache for `max_sessions` sessions."""

    def __init__(self, model: SpeechLM, max_sessions: int = 4, sampling: Sampling = Sampling(),
                 max_len: int | None = None, seed: int = 0, ear: WhisperEar | None = None, tokenize=None,
                 snap_heard: bool = True, snap_by: str | None = None, think: bool | None = None) -> None:
        """`tokenize(str) -> ids` (the model's `TextIds.encode`): needed by a model that reads heard text. `snap_heard`:
        a model that reads heard text and knows its training words (`heard_words`) reads each heard word snapped to
        the nearest of them (voice.speechlm.lexicon); False: as spelled. `snap_by`: "spelling" or "ctc" (default: the
        model's `heard_snap_by`). `think`: each session thinks its answers in text (module doc; two cache slots a
        session); default: a model that reads heard text does."""
        if model.config.heard_text and tokenize is None:
            raise ValueError("this speech LM reads its encoder's spelling as text: give the generator its tokenizer")
        self.think = bool(model.config.heard_text) if think is None else bool(think)
        if self.think and not model.config.heard_text:
            raise ValueError("a generator thinks in text from the words its model reads: this model reads no heard text")
        self.tokenize = tokenize
        self.snap = None
        if model.config.heard_text and model.config.heard_words and snap_heard:
            self.snap = WordSnapper(model.config.heard_words, model.config.heard_snap,
                                    snap_by or getattr(model.config, "heard_snap_by", "spelling"))
        self.model = model.eval()
        self._ear = ear                 # the Whisper ear (made when first needed), for a model that reads it
        self.cfg = model.config
        self.vocab, self.layout = self.cfg.vocab, self.cfg.layout
        self.decoder = SlotDecoder(model, max_sessions * (2 if self.think else 1), max_len)
        # the hearing encoder's streams read its float16-packed weights, as the decoder does
        encoder = model.hearing if model.hearing is not None else model.ear_encoder
        self._hearing_packed = None if encoder is None else PackedHearing.of(encoder)
        self.sampling = sampling
        self.free = list(range(self.decoder.slots))
        self.rng = torch.Generator().manual_seed(seed)
        none = self.vocab.audio_none
        self._none_audio = [none] * self.vocab.num_codebooks
        # the text stream may write words or end its text; other specials are never sampled
        self._text_mask = torch.full((self.vocab.text_stream_size,), float("-inf"))
        self._text_mask[: self.vocab.text_size] = 0.0
        self._text_mask[self.vocab.special("end_of_text")] = 0.0
        self._words_mask = self._text_mask.clone()     # a text answer (the thought's) writes no pads
        self._aligned = self.layout.text_align == "words"
        if self._aligned:                   # a word-aligned answer writes pads between its words
            self._text_mask[self.vocab.special("pad")] = 0.0

    # -- sessions -------------------------------------------------------------------------------
    @property
    def max_len(self) -> int:
        """Steps a session's context holds at most."""
        return self.decoder.max_len

    def length(self, session: Session) -> int:
        """Steps in the session's context now (fed, plus user frames held for the hearing encoder's
        lookahead; a pending end of block not included)."""
        held = session.held.shape[1] if session.held is not None else 0
        return self.decoder.lengths[session.slot] + held

    def open(self, think: bool | None = None) -> Session:
        """A new session in a free slot (two when thinking), its context empty; `NoFreeSlotError` when every slot
        is taken. `think`: whether this session thinks in text (default: the generator's `think`; a generator
        that does not think has no session that does)."""
        think = self.think if think is None else bool(think)
        if think and not self.think:
            raise ValueError("this generator does not think in text (think=False, or its model reads no heard text)")
        if len(self.free) < (2 if think else 1):
            raise NoFreeSlotError("no free session slot")
        slot = self.free.pop(0)
        self.decoder.reset(slot)
        session = Session(slot)
        if think:
            session.thought = _Thought(self.free.pop(0))
            self.decoder.reset(session.thought.slot)
        return session

    def close(self, session: Session) -> None:
        for slot in (session.slot, *((session.thought.slot,) if session.thought is not None else ())):
            if slot not in self.free:
                self.free.append(slot)
        self.free.sort()

    def mark(self, session: Session) -> ContextMark:
        """Where the session's context stands now, between blocks (no user turn open): `rewind` comes back here."""
        t = session.thought
        return ContextMark(self.decoder.lengths[session.slot], session.pending_text, session.answer,
                           None if t is None else (self.decoder.lengths[t.slot], list(t.pending), t.answer_start,
                                                   t.fed_words))

    def rewind(self, session: Session, mark: ContextMark) -> None:
        """Back to `mark` (taken on this session): what came after it is forgotten, a user turn in progress too."""
        self.decoder.truncate(session.slot, mark.length)
        session.turns = [t for t in session.turns if t[0] < mark.length]
        session.pending_text, session.answer, session.user_open = mark.pending_text, mark.answer, False
        session.clear_user()
        t = session.thought
        if t is not None and mark.thought is not None:
            length, t.pending, t.answer_start, t.fed_words = mark.thought[0], list(mark.thought[1]), *mark.thought[2:]
            self.decoder.truncate(t.slot, length)
            t.last = None

    # -- the oldest turns go ----------------------------------------------------------------------
    def _turn_starts(self, session: Session, ahead: int) -> None:
        """A user turn's first marker goes in after `ahead` steps more (the thought has taken what waited for it)."""
        t = session.thought
        session.turns.append((self.decoder.lengths[session.slot] + ahead,
                              None if t is None else self.decoder.lengths[t.slot]))

    def forget_turns(self, session: Session, keep_steps: int, context: list[int]) -> Splice | None:
        """Make the context shorter between blocks or while the user speaks: a new context block (`context`, the text
        ids of the context sentence) and the latest turns, as few of them dropped from the oldest as leave the
        context at most `keep_steps` long (all but the last turn when none do). Every slot is computed again from
        the new block on, as if the session had been fed that from the start (`SlotDecoder.splice`). Returns where
        the positions went (to move a `ContextMark` taken before), or None: there is no earlier turn to drop, or
        an answer is being made."""
        if session.answering:
            return None
        starts, length = session.turns, self.length(session)
        if len(starts) < 2:
            return None
        head = [self.vocab.special("context"), *context]
        keep = next((j for j in range(1, len(starts)) if len(head) + length - starts[j][0] <= keep_steps),
                    len(starts) - 1)
        cut, t_cut = starts[keep]
        x = self._embed(head, [self._none_audio] * len(head))
        self.decoder.splice(session.slot, 0, cut, x)
        t = session.thought
        if t is not None and t_cut is not None:
            self.decoder.splice(t.slot, 0, t_cut, x)
        splice = Splice(cut, len(head), t_cut if t is not None else None, len(head) if t is not None else None)
        session.turns = [(splice.position(a), splice.thought_position(b)) for a, b in starts[keep:]]
        if session.answer is not None:
            start = splice.position(session.answer.start)
            session.answer = None if start is None else replace(session.answer, start=start)
        if t is not None:
            t.answer_start = splice.thought_position(t.answer_start)
        return splice

    # -- the thought ------------------------------------------------------------------------------
    def _think_text(self, session: Session, marker: str, ids: list[int], end: bool = False) -> None:
        """A text block for the session's thought (fed with its next forward pass)."""
        if session.thought is not None:
            session.thought.pending += [self.vocab.special(marker), *ids] + ([self.vocab.special("end_of_text")] if end else [])

    @torch.no_grad()
    def _think_flush(self, session: Session) -> torch.Tensor | None:
        """Feed the thought what waits for it; its last hidden state (None when nothing waited)."""
        t = session.thought
        if t is None or not t.pending:
            return None
        ids, t.pending = t.pending, []
        return self.decoder.forward([t.slot], self._embed(ids, [self._none_audio] * len(ids))[None])[0, -1]

    def _think_begin(self, session: Session) -> list[int]:
        """The thought starts its answer: its first word (none when it says nothing)."""
        t = session.thought
        self._think_text(session, "assistant_text", [])
        t.answer_start = self.decoder.lengths[t.slot] + len(t.pending) - 1
        t.fed_words = 0
        return self._think_word(session, self.decoder.text_logits(self._think_flush(session)))

    def _think_word(self, session: Session, logits: torch.Tensor) -> list[int]:
        """The thought's next word from its text logits: [id], or [] once its answer is over."""
        t = session.thought
        token = self._sample(logits + self._words_mask)
        if token == self.vocab.special("end_of_text") or t.fed_words >= self.sampling.max_text_tokens:
            t.last, t.pending = None, [self.vocab.special("end_of_text")]
            return []
        t.last = token
        return [token]

    def _think_end(self, session: Session, keep_words: int | None) -> None:
        """The answer ended (a barge-in): the thought stops and keeps its first `keep_words` words (all it wrote:
        None); -1: its answer goes, marker and all."""
        t = session.thought
        if t is None or t.answer_start is None:
            return
        t.last = None
        if keep_words is not None and keep_words < 0:
            self.decoder.truncate(t.slot, t.answer_start)
            t.pending, t.answer_start = [], None
            return
        keep = t.fed_words if keep_words is None else min(keep_words, t.fed_words)
        self.decoder.truncate(t.slot, t.answer_start + 1 + keep)
        t.fed_words, t.pending = keep, [self.vocab.special("end_of_text")]

    # -- prefill ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _embed(self, text: list[int], audio: list[list[int]], user: torch.Tensor | None = None) -> torch.Tensor:
        """Steps' embeddings: text ids [T], audio [T][K] (hearing features [T, H_enc]) -> [T, H]."""
        t = torch.tensor(text, dtype=torch.long)[None]                        # [1, T]
        a = torch.tensor(audio, dtype=torch.long).T[None]                     # [1, K, T]
        self.model.check_ids(t, a)
        return (self.model.embed(t, a) if user is None else self.model.embed(t, a, user[None]))[0]

    @torch.no_grad()
    def _feed(self, session: Session, text: list[int], audio: list[list[int]],
              user: torch.Tensor | None = None, head: torch.Tensor | None = None) -> torch.Tensor:
        """Feed steps to one session in one forward pass: text ids [T], audio [T][K] (hearing features
        [T, H_enc]), after the embedded steps `head` [T0, H] (those of `_begin_block`) -> hidden [T0 + T, H]."""
        x = self._embed(text, audio, user) if text else head
        if text and head is not None:
            x = torch.cat([head, x])
        return self.decoder.forward([session.slot], x[None])[0]

    @property
    def ear(self) -> WhisperEar:
        if self._ear is None:
            self._ear = WhisperEar(config=self.cfg.ear_config)
        return self._ear

    def _close_user(self, session: Session) -> torch.Tensor | None:
        """The user's speech block ends: the embeddings [T, H] of the steps that go in now (fed with what
        follows, in one forward pass), or None: frames held for the hearing encoder's lookahead (or for
        their Whisper-ear features), then the spelled words still waiting (a model that reads heard text)."""
        steps = []
        if session.user_open and session.held is not None and session.held.shape[1]:
            held, enc = session.held, None
            if self.cfg.reads_ear:
                rows = session.ear.finish() if session.ear is not None else np.zeros((0, FEATURE_DIM), np.float32)
                rows = fit_frames(np.concatenate([session.ear_rows, rows]), held.shape[1])
                feats = torch.from_numpy(rows)
                if session.hearing is not None:      # the ear encoder: the rest of the rows, then its lookahead
                    enc = session.hearing.finish(rows[session.enc_pushed:])
                    feats = torch.cat([feats, enc[: held.shape[1]]], 1)
            else:
                enc = session.hearing.finish()
                feats = self.model.hearing_read(enc)
            steps.append(self._embed(self._heard_ids(session, enc, held.shape[1]), held.T.tolist(), feats))
        if session.user_open and session.heard is not None:     # the words still waiting: text-only steps
            last = [w for _, w in session.speller.finish()]
            session.spelled += last
            tail = session.heard.tail(last)
            if tail:
                steps.append(self._embed(tail, [self._none_audio] * len(tail)))
        if session.user_open:
            self._think_text(session, "user_text", self.tokenize(" ".join(session.spelled)) if session.spelled else [])
        session.clear_user()
        session.user_open = False
        return torch.cat(steps) if steps else None

    def _begin_block(self, session: Session) -> tuple[torch.Tensor | None, list[int], list[list[int]]]:
        """A new block (not the user's speech) starts: the user's last steps (embedded, `_close_user`),
        then the steps of `_flush`, all fed with the block's first ones."""
        head = self._close_user(session)
        text, audio = self._flush(session)
        return head, text, audio

    def _heard_ids(self, session: Session, enc: torch.Tensor | None, n: int) -> list[int]:
        """The text stream of the next `n` user frames: pads, or (a model that reads heard text) the words its
        encoder spells from those frames' features `enc` [>= n, H_enc], as they are complete."""
        pad = self.vocab.special("pad")
        if session.heard is None:
            return [pad] * n
        first = session.speller.frames
        logits = self.model.speller.ctc_logits(enc[:n])
        done = session.speller.push(logits.argmax(-1).tolist(),
                                    logits.float().log_softmax(-1) if self.snap is not None and self.snap.reads_posteriors else None)
        session.spelled += [word for _, word in done]
        return session.heard.frames(done, first, n)

    def _flush(self, session: Session) -> tuple[list[int], list[list[int]]]:
        """A new block starts: the pending end of the last one goes in first; the last answer becomes history."""
        session.answer = None
        if session.pending_text is None:
            return [], []
        text, session.pending_text = [session.pending_text], None
        return text, [self._none_audio]

    def feed_text(self, session: Session, marker: str, ids: list[int]) -> None:
        """A text block (context, user text): its marker, then the text ids."""
        head, text, audio = self._begin_block(session)
        if marker == "user_text":
            self._think_flush(session)
            self._turn_starts(session, len(text) + (0 if head is None else len(head)))
        text += [self.vocab.special(marker), *ids]
        audio += [self._none_audio] * (1 + len(ids))
        self._feed(session, text, audio, head=head)
        if marker in ("context", "user_text", "assistant_text"):      # the dialogue's text blocks, as they are
            self._think_text(session, marker, ids)
            self._think_flush(session)
        elif marker == "speak" and session.thought is not None:      # the words to say are given: nothing to think
            session.thought.given = list(ids)

    def feed_user_speech(self, session: Session, codes: np.ndarray, pcm: np.ndarray | None = None,
                         features: np.ndarray | None = None) -> None:
        """More frames of the user's turn, codes [K, n] (the block's marker goes in with the first ones).

        A model that reads the Whisper ear also takes the same stretch of the user's 16 kHz audio
        (`pcm`, encoded here chunk by chunk) or its ear `features` [m, D] computed elsewhere (`voice
        data ear`'s cache); frames wait for their features, and the turn's last ones go in when it ends.
        Given neither, the frames wait for the end of the turn and go in without features."""
        codes = np.asarray(codes)
        k = self.vocab.num_codebooks
        if codes.ndim != 2 or codes.shape[0] < k:
            raise ValueError(f"codes must be [{k}, n], got {codes.shape}")
        if codes.size and (codes.min() < 0 or codes[:k].max() >= self.vocab.codebook_size):
            raise ValueError(f"codes must be in 0..{self.vocab.codebook_size - 1}, got {codes.min()}..{codes.max()}")
        text, audio = self._flush(session)
        if not session.user_open:
            self._think_flush(session)          # the thought takes what waits for it while the user speaks
            self._turn_starts(session, len(text))
            text.append(self.vocab.special("user_speech"))
            audio.append(self._none_audio)
            session.user_open = True
            if self.cfg.heard_text:
                session.speller, session.heard = Speller(self.snap), HeardQueue(self.tokenize, self.vocab.special("pad"))
                session.spelled = []
            if self.model.hearing is not None:
                session.hearing, session.held = HearingStream(self.model.hearing, self._hearing_packed), np.zeros((k, 0), np.int64)
            elif self.cfg.reads_ear:
                session.held, session.ear_rows = np.zeros((k, 0), np.int64), np.zeros((0, FEATURE_DIM), np.float32)
                if self.model.ear_encoder is not None:
                    session.hearing, session.enc_pushed = HearingStream(self.model.ear_encoder, self._hearing_packed), 0
        heard = np.array(codes[:k], dtype=np.int64)
        heard[self.layout.heard_codebooks or k:] = self.vocab.audio_none     # codebooks the model does not read
        user = None
        if self.cfg.reads_ear:                   # frames go in once their ear features are known
            if features is not None:
                rows = np.asarray(features, np.float32).reshape(-1, FEATURE_DIM)
            elif pcm is not None:
                if session.ear is None:
                    session.ear = EarStream(self.ear)
                rows = session.ear.push(pcm)
            else:
                rows = np.zeros((0, FEATURE_DIM), np.float32)
            rows = np.concatenate([session.ear_rows, rows])
            held = np.concatenate([session.held, heard], 1)
            n = min(held.shape[1], len(rows))
            feats = torch.from_numpy(rows[:n])
            if session.hearing is not None:     # the ear encoder reads the rows of frames that exist (as in training)
                enc = session.hearing.push(rows[session.enc_pushed:n])   # every feature out is one frame's
                session.enc_pushed = n - len(enc)      # its lookahead holds the last frames back
                n = len(enc)
                feats = torch.cat([feats[:n], enc], 1)
            else:
                enc = None
            heard, session.held, session.ear_rows = held[:, :n], held[:, n:], rows[n:]
            user = torch.cat([torch.zeros(len(text), feats.shape[1]), feats])
        elif session.hearing is not None:          # frames go in once their features are known (lookahead)
            enc = session.hearing.push(codes[: self.model.hearing.config.num_codebooks])
            feats = self.model.hearing_read(enc)
            held = np.concatenate([session.held, heard], 1)
            heard, session.held = held[:, : feats.shape[0]], held[:, feats.shape[0]:]
            user = torch.cat([feats.new_zeros(len(text), feats.shape[1]), feats])
        else:
            enc = None
        text += self._heard_ids(session, enc, heard.shape[1])
        audio += heard.T.tolist()
        if text:
            self._feed(session, text, audio, user)

    def feed_steps(self, session: Session, text: list[int], audio: list[list[int]], words: list[int] | None = None) -> None:
        """Steps laid out elsewhere (a reference history by `voice.speechlm.format.StepWriter`): text [T], audio [K][T].
        `words`: when the steps are an answer, its words (for the session's thought)."""
        head, head_text, head_audio = self._begin_block(session)
        if len(text) or head_text or head is not None:
            self._feed(session, head_text + list(text), head_audio + [list(c) for c in zip(*audio)], head=head)
        if words is not None:
            self._think_text(session, "assistant_text", list(words), end=True)

    @torch.no_grad()
    def generate_text(self, session: Session, marker: str, max_tokens: int = 64) -> list[int]:
        """A text answer after `marker` (assistant_text, transcribe): sampled until <|end_of_text|>."""
        head, text, audio = self._begin_block(session)
        text.append(self.vocab.special(marker))
        audio.append(self._none_audio)
        hidden = self._feed(session, text, audio, head=head)[-1]
        end, out = self.vocab.special("end_of_text"), []
        for _ in range(max_tokens):
            token = self._sample(self.decoder.text_logits(hidden) + self._text_mask)
            if token == end:
                break
            out.append(token)
            hidden = self._feed(session, [token], [self._none_audio])[-1]
        session.pending_text = end      # the block's end, fed with the next block
        return out

    # -- the answer -----------------------------------------------------------------------------
    def begin_answer(self, session: Session, words: list[int] | None = None) -> StepOutput:
        """Start the assistant's spoken answer (the marker step); returns what it produced. `words`: the text ids the
        answer says, written in its text stream as the model would write its own (an answer thought out elsewhere,
        e.g. in text mode), so the model only makes the audio."""
        head, text, audio = self._begin_block(session)
        if words is None and session.thought is not None:      # the thought writes the words, one a step
            given, session.thought.given = session.thought.given, None
            words = given if given is not None else self._think_begin(session)
        text.append(self.vocab.special("assistant_speech"))
        audio.append(self._none_audio)
        start = self.length(session) + len(text) - 1 + (0 if head is None else len(head))
        hidden = self._feed(session, text, audio, head=head)[-1:]
        session.answer = _Answer(start=start, codes=[[] for _ in range(self.vocab.num_codebooks)],
                                 words=None if words is None else list(words))
        return self._decide([session], hidden)[0]

    def end_answer(self, session: Session, keep_frames: int | None = None) -> int | None:
        """End the session's answer now (a barge-in); with `keep_frames`, keep only its first frames in the context.

        The answer stops where it stands and its block is closed by `<|end_of_turn|>` (fed with the next
        block). With `keep_frames` = n (the frames the user heard) the context is rolled back to the
        block's steps 0 .. text_lead + n + max_delay: the step where frame n - 1 became complete, its
        last codebook written (codebook k of frame f sits at block step 1 + text_lead + f + d_k). What
        stays is the marker, the words written up to that step (the text starts text_lead steps before
        the audio, one id per step: a short answer's words are often all written by then) and the kept
        frames' codes; codebook 0 of the max_delay frames after them (d_0 = 0) stays as well: they were
        never heard, but cutting there would drop the finer codebooks of the last heard frames.
        n (at most the frames made) = 0: nothing was heard, so the block goes entirely (no end_of_turn);
        the user's turn stays unanswered and the next one opens a new block. n = every frame made: the
        answer stays as it was made.

        It also works after the answer ended by itself (its audio still playing at the client), as long
        as no block followed it; a rollback only ever shortens it. Returns the frames of the answer the
        context holds (complete ones), or None when there is no answer to end (none begun, or a later
        block started).
        """
        a = session.answer
        if a is None:
            return None
        if not a.done:
            a.done = True
            session.pending_text = self.vocab.special("end_of_turn")
            self._think_end(session, None)
        held = a.frames_kept if a.frames_kept is not None else min(len(c) for c in a.codes)
        if keep_frames is None:
            return held
        n = min(max(0, int(keep_frames)), held)
        if n == 0:
            self.decoder.truncate(session.slot, a.start)
            session.pending_text, session.answer = None, None
            self._think_end(session, -1)
            return 0
        if n == held:
            return held
        # frame held - 1 is complete, so its step (and so the kept ones') is in the cache: no pending step to feed
        kept_steps = self.layout.text_lead + n + self.layout.max_delay
        self.decoder.truncate(session.slot, a.start + kept_steps + 1)
        a.frames_kept = n
        self._think_end(session, min(len(a.text_ids), kept_steps))    # word j sits at block step j + 1
        return n

    def close_user_turn(self, session: Session) -> None:
        """The user's turn ends without an answer (cut before it): the next user speech opens a new block."""
        head = self._close_user(session)
        if head is not None:
            self._feed(session, [], [], head=head)

    @torch.no_grad()
    def step(self, sessions: list[Session]) -> list[StepOutput]:
        """One answer step for each session (one batched forward pass)."""
        active = [s for s in sessions if s.answering]
        if not active:
            return [StepOutput(done=True) for _ in sessions]
        thinking = [s for s in active if s.thought is not None and s.thought.thinking]
        text = torch.tensor([[s.answer.pending[0]] for s in active] + [[s.thought.last] for s in thinking])   # [B, 1]
        audio = torch.tensor([[[c] for c in s.answer.pending[1]] for s in active]
                             + [[[c] for c in self._none_audio] for _ in thinking])                       # [B, K, 1]
        hidden = self.decoder.forward([s.slot for s in active] + [s.thought.slot for s in thinking],
                                      self.model.embed(text, audio))[:, -1]
        if thinking:                                               # the thoughts write the next words first
            logits = self.decoder.text_logits(hidden[len(active):])
            for s, row in zip(thinking, logits):
                s.thought.fed_words += 1
                s.answer.words += self._think_word(s, row)
        outs = dict(zip((id(s) for s in active), self._decide(active, hidden[: len(active)])))
        return [outs.get(id(s), StepOutput(done=True)) for s in sessions]

    def _decide(self, sessions: list[Session], hidden: torch.Tensor) -> list[StepOutput]:
        """From the hidden state of block step s, choose each session's ids for step s + 1."""
        need_text = [not s.answer.text_done and s.answer.words is None for s in sessions]
        audio_logits = self.decoder.audio_logits(hidden, max(self._codebooks_needed(s.answer) for s in sessions))
        text_logits = None
        if any(need_text):
            text_logits = self.decoder.text_logits(hidden) + self._text_mask                # [B, V]
        outs = []
        for row, s in enumerate(sessions):
            outs.append(self._advance(s, text_logits[row] if need_text[row] else None, audio_logits[row]))
        return outs

    def _sampled_frame(self, a: _Answer, delay: int) -> int | None:
        """The frame a codebook of this delay holds at the answer's next step, or None when it samples nothing
        there (its frame has not begun, or the audio has ended before it)."""
        f = a.step - self.layout.text_lead - delay
        return None if f < 0 or (a.frames_end is not None and f >= a.frames_end) else f

    def _codebooks_needed(self, a: _Answer) -> int:
        """How many leading codebooks the answer's next step samples."""
        need = [k for k, d in enumerate(self.layout.delays) if self._sampled_frame(a, d) is not None]
        return max(need) + 1 if need else 0

    def _advance(self, s: Session, text_logits, audio_logits) -> StepOutput:
        a, v, lay, cfg = s.answer, self.vocab, self.layout, self.sampling
        out = StepOutput()
        nxt = a.step + 1
        if a.text_done:
            text_id = v.special("pad")
        else:
            text_id = self._sample(text_logits) if a.words is None else (
                a.words[len(a.text_ids)] if len(a.text_ids) < len(a.words) else v.special("end_of_text"))
            if (text_id == v.special("end_of_text") or len(a.text_ids) >= cfg.max_text_tokens
                    or (a.frames_end is not None and self._aligned)):     # aligned words end with the audio at the latest
                text_id, a.text_done, a.text_end = v.special("end_of_text"), True, nxt
            elif text_id != v.special("pad"):
                a.text_ids.append(text_id)
                out.text_ids.append(text_id)
        audio_ids = []
        for k, d in enumerate(lay.delays):
            f = self._sampled_frame(a, d)            # the frame codebook k holds at step nxt (a.step is still nxt - 1)
            if f is None:
                audio_ids.append(v.audio_none)
                continue
            logits = audio_logits[k]
            if k == 0:
                code = self._sample(logits, audio=True) if f < self._frame_limit(a) else v.audio_none
                if code == v.audio_none:
                    a.frames_end = f
            else:
                code = self._sample(logits[: v.codebook_size], audio=True)
            audio_ids.append(code)
            if code != v.audio_none:
                a.codes[k].append(code)
        complete = min(len(c) for c in a.codes)
        if complete > a.frames_out:
            out.frames = np.array([c[a.frames_out:complete] for c in a.codes], dtype=np.int64)
            a.frames_out = complete
        a.step = nxt
        a.pending = (text_id, audio_ids)
        last = max(a.text_end, lay.text_lead + (a.frames_end or 0) + 1 + lay.max_delay)
        if a.text_done and a.frames_end is not None and a.frames_out >= a.frames_end and nxt > last:
            a.done = out.done = True
            s.pending_text = v.special("end_of_turn")      # the block's last step, fed with the next block
        return out

    def _frame_limit(self, a: _Answer) -> int:
        """The frame at which the answer's audio ends at the latest: max_frames, or sooner once its words are known."""
        cfg = self.sampling
        if self._aligned:       # <|end_of_text|> at block step e sits over frame e - 1
            if not a.text_done or cfg.frames_after_words <= 0:
                return cfg.max_frames
            return min(cfg.max_frames, a.text_end - 1 + cfg.frames_after_words)
        if not a.text_done or cfg.frames_per_token <= 0:
            return cfg.max_frames
        return min(cfg.max_frames, int(cfg.frames_margin + cfg.frames_per_token * max(1, len(a.text_ids))))

    def _sample(self, logits: torch.Tensor, audio: bool = False) -> int:
        cfg = self.sampling
        temperature, top_k = cfg.temperature, cfg.top_k
        if audio:
            temperature = temperature if cfg.audio_temperature is None else cfg.audio_temperature
            top_k = top_k if cfg.audio_top_k is None else cfg.audio_top_k
        if temperature <= 0:
            return int(torch.argmax(logits))
        logits = logits / temperature
        if top_k > 0:
            kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=self.rng))
