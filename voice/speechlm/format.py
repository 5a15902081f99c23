"""Sequence format: an example (context, turns, task) as parallel streams, one LM step per codec frame.

Every step carries one text-stream id (text or special) and one code per codebook (or none). A
block starts with its marker on the text stream:

    <|context|> t t t ...                        the context sentence (date and time), as text
    <|user_speech|> f0 f1 ... fT-1               user audio: frame t's K codes at step t (aligned)
    <|user_text|> t t t ...                      user text (task text -> text)
    <|assistant_speech|> a0 a1 ... <|end_of_text|> pad pad ... <|end_of_turn|>
                         . . f0 f1 f2 ...  fT-1 END                 (codebook 0; codebook k lags d_k steps)
    <|assistant_text|> a0 a1 ... <|end_of_text|>
    <|transcribe|> t t t ... <|end_of_text|>     after a user speech block: its transcript

In an assistant speech block the words run ahead of the audio that says them (an inner monologue):
audio frame f of codebook k sits at block step 1 + lead + f + d_k; codebook 0 says END (the "no code"
class) one step after the last frame. Targets: the answer's text up to <|end_of_text|>, and every
code of the answer audio plus codebook 0's END; nothing of the user's turns.

With `Layout.text_align = "words"` the words are written where their audio starts instead of all first:
word w's ids from block step 1 + (its start frame), text_lead steps before the audio that says it, pads
between (they are targets too: the model learns when to write), <|end_of_text|> after the last word.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from voice.speechlm.vocab import Vocab

TASKS = ("s2s", "t2t", "s2t", "t2s")
TEXT_ALIGNS = ("ahead", "words")


@dataclass(frozen=True)
class Layout:
    """Where the answer audio sits relative to its text: the codebook delays and the text lead."""

    delays: tuple[int, ...]       # steps codebook k lags codebook 0 (delay pattern); delays[0] == 0
    text_lead: int = 2            # steps the answer's text starts before its audio
    heard_codebooks: int = 0      # codebooks of the user's speech the model reads (0: all; the finer ones carry the voice)
    # "ahead": the answer's words are written first, one per step, then its audio; "words": each word is written
    # where its audio starts (text_lead steps before it), pads between, as Moshi's inner monologue
    text_align: str = "ahead"

    def __post_init__(self) -> None:
        if self.text_align not in TEXT_ALIGNS:
            raise ValueError(f"text_align must be one of {TEXT_ALIGNS}, got {self.text_align!r}")

    @property
    def max_delay(self) -> int:
        return max(self.delays)


@dataclass
class Turn:
    """One turn: who speaks, the words, and (for speech) the codes [K, T]."""

    role: str                                  # "user" | "assistant"
    text: str
    codes: np.ndarray | None = None            # int [K, T]; None for a text turn
    ear: np.ndarray | None = None              # user speech: the Whisper ear's features [T, D] (models that read them)
    word_starts: list[int] | None = None       # speech: the frame where each white-space word starts (voice data align)
    heard: list[tuple[int, str]] | None = None # user speech: its hearing encoder's words, each at the frame it is
                                               # complete (voice.speechlm.heard); written in the text stream


@dataclass
class Example:
    """A training or inference sequence before it is laid out in steps."""

    task: str                                  # one of TASKS
    context: str
    turns: list[Turn] = field(default_factory=list)


@dataclass
class Steps:
    """Parallel streams of one example. `text` [S]; `audio` [K, S] (codebook index, or vocab.audio_none);
    `text_target` [S] and `audio_target` [K, S]: where the step's id is a training target."""

    text: np.ndarray
    audio: np.ndarray
    text_target: np.ndarray
    audio_target: np.ndarray
    # the user's speech and its words: (first frame step, end step, text ids) per user turn that has
    # a transcript (the auxiliary hearing loss reads it; nothing else does)
    user_spans: list[tuple[int, int, list[int]]] = field(default_factory=list)
    # the Whisper ear's features of each user turn: (first frame step, features [T, D])
    user_ear: list[tuple[int, np.ndarray]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.text.shape[0])

    def cut(self, n: int) -> "Steps":
        """The first n steps (user spans that do not fit are dropped)."""
        return Steps(self.text[:n], self.audio[:, :n], self.text_target[:n], self.audio_target[:, :n],
                     [sp for sp in self.user_spans if sp[1] <= n],
                     [(a, f[: n - a]) for a, f in self.user_ear if a < n])


class StepWriter:
    """Appends blocks step by step; `tokenize(str) -> list[int]` gives text ids."""

    def __init__(self, vocab: Vocab, layout: Layout, tokenize) -> None:
        if len(layout.delays) != vocab.num_codebooks or layout.delays[0] != 0:
            raise ValueError(f"delays {layout.delays} must have {vocab.num_codebooks} entries, the first 0")
        self.vocab, self.layout, self.tokenize = vocab, layout, tokenize
        self.text: list[int] = []
        self.text_target: list[bool] = []
        self.audio: list[list[int]] = [[] for _ in range(vocab.num_codebooks)]
        self.audio_target: list[list[bool]] = [[] for _ in range(vocab.num_codebooks)]
        self.user_spans: list[tuple[int, int, list[int]]] = []
        self.user_ear: list[tuple[int, np.ndarray]] = []

    def _step(self, text_id: int, target: bool = False) -> None:
        self.text.append(text_id)
        self.text_target.append(target)
        for k in range(self.vocab.num_codebooks):
            self.audio[k].append(self.vocab.audio_none)
            self.audio_target[k].append(False)

    def text_block(self, marker: str, text: str, target: bool = False, end: bool = False) -> None:
        self._step(self.vocab.special(marker))
        for t in self.tokenize(text):
            self._step(t, target)
        if end:
            self._step(self.vocab.special("end_of_text"), target)

    def user_speech(self, codes: np.ndarray, words: str | None = None, ear: np.ndarray | None = None,
                    heard: list[tuple[int, str]] | None = None) -> None:
        """The user's audio frames; `words` (its transcript, when known) is kept as a user span, `ear`
        (the Whisper ear's features of the same audio, [T', D]) is cut or padded to the frames; `heard` (the
        hearing encoder's words, `voice.speechlm.heard`) is written in the text stream as it is heard, the
        ids still waiting at the turn's end in text-only steps after its last frame."""
        codes = self._check_codes(codes)
        read = self.layout.heard_codebooks or self.vocab.num_codebooks
        self._step(self.vocab.special("user_speech"))
        if words is not None and codes.shape[1]:
            self.user_spans.append((len(self.text), len(self.text) + codes.shape[1], list(self.tokenize(words))))
        if ear is not None and codes.shape[1]:
            from voice.speechlm.whisper_ear import fit_frames

            self.user_ear.append((len(self.text), fit_frames(np.asarray(ear), codes.shape[1])))
        pad = self.vocab.special("pad")
        ids, tail = [pad] * codes.shape[1], []
        if heard is not None:
            from voice.speechlm.heard import heard_steps

            ids, tail = heard_steps(heard, codes.shape[1], self.tokenize, pad)
        for f in range(codes.shape[1]):
            self._step(ids[f])
            for k in range(read):
                self.audio[k][-1] = int(codes[k, f])
        for t in tail:
            self._step(t)

    def assistant_speech(self, text: str, codes: np.ndarray, word_starts: list[int] | None = None) -> None:
        """The answer block: its words (all first, or each at its audio with `Layout.text_align` "words",
        which needs `word_starts`, one frame per white-space word) and its codes in the delay pattern."""
        codes = self._check_codes(codes)
        v, lay = self.vocab, self.layout
        frames = codes.shape[1]
        if lay.text_align == "words":
            text_at = self.aligned_text(text, word_starts, frames)
        else:
            text_at = [*self.tokenize(text), v.special("end_of_text")]
        start = len(self.text)
        # marker, then text; the audio: frame f of codebook k at 1 + lead + f + d_k; END on codebook 0 after it
        length = 1 + max(len(text_at), lay.text_lead + frames + 1 + lay.max_delay) + 1
        self._step(v.special("assistant_speech"))
        for i in range(1, length - 1):
            self._step(text_at[i - 1] if i - 1 < len(text_at) else v.special("pad"), target=i - 1 < len(text_at))
        self._step(v.special("end_of_turn"))
        for k, d in enumerate(lay.delays):
            first = start + 1 + lay.text_lead + d
            for f in range(frames):
                self.audio[k][first + f] = int(codes[k, f])
                self.audio_target[k][first + f] = True
        self.audio_target[0][start + 1 + lay.text_lead + frames] = True   # END: audio_none after the last frame

    def aligned_text(self, text: str, word_starts: list[int] | None, frames: int) -> list[int]:
        """The text stream of a word-aligned answer block from its step 1 on: word w's ids from step 1 + its
        start frame (text_lead steps before its audio), or right after the word before if that is still being
        written; pads between; <|end_of_text|> right after the last word."""
        words = text.split()
        if word_starts is None:
            raise ValueError("a word-aligned layout needs the answer's word timings: run `voice data align` on the corpus")
        if len(word_starts) != len(words):
            raise ValueError(f"{len(word_starts)} word starts for {len(words)} words of {text!r}")
        pad, out = self.vocab.special("pad"), []
        for j, word in enumerate(words):
            at = max(len(out), min(max(0, int(word_starts[j])), max(0, frames - 1)))
            out += [pad] * (at - len(out))
            out += self.tokenize(word if j == 0 else " " + word)
        return out + [self.vocab.special("end_of_text")]

    def _check_codes(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] < self.vocab.num_codebooks:
            raise ValueError(f"codes must be [K>={self.vocab.num_codebooks}, T], got {codes.shape}")
        codes = codes[: self.vocab.num_codebooks]
        if codes.size and (codes.min() < 0 or codes.max() >= self.vocab.codebook_size):
            raise ValueError(f"codes outside 0..{self.vocab.codebook_size - 1}")
        return codes

    def steps(self) -> Steps:
        return Steps(np.asarray(self.text, np.int64), np.asarray(self.audio, np.int64).reshape(self.vocab.num_codebooks, -1),
                     np.asarray(self.text_target, bool),
                     np.asarray(self.audio_target, bool).reshape(self.vocab.num_codebooks, -1), list(self.user_spans),
                     list(self.user_ear))


def layout_example(example: Example, vocab: Vocab, layout: Layout, tokenize) -> Steps:
    """Lay out one example in steps (see the module docstring)."""
    if example.task not in TASKS:
        raise ValueError(f"unknown task {example.task!r}; known: {', '.join(TASKS)}")
    w = StepWriter(vocab, layout, tokenize)
    w.text_block("context", example.context)
    for turn in example.turns:
        if turn.role == "user":
            if example.task in ("s2s", "s2t"):
                w.user_speech(turn.codes, turn.text, turn.ear, turn.heard)
                if example.task == "s2t":
                    w.text_block("transcribe", turn.text, target=True, end=True)
            elif example.task == "t2s":
                w.text_block("speak", turn.text)
            else:
                w.text_block("user_text", turn.text)
        elif turn.role == "assistant":
            if example.task in ("s2s", "t2s"):
                w.assistant_speech(turn.text, turn.codes, turn.word_starts)
            elif example.task == "t2t":
                w.text_block("assistant_text", turn.text, target=True, end=True)
        else:
            raise ValueError(f"unknown role {turn.role!r}")
    return w.steps()


def read_steps(steps: Steps, vocab: Vocab, layout: Layout, detokenize) -> Example:
    """The inverse of `layout_example`: blocks back to context and turns (task inferred from the markers)."""
    names = [vocab.special_name(int(t)) for t in steps.text]
    starts = [i for i, n in enumerate(names) if n in ("<|context|>", "<|user_speech|>", "<|user_text|>",
                                                       "<|assistant_speech|>", "<|assistant_text|>",
                                                       "<|transcribe|>", "<|speak|>")] + [len(names)]
    context, turns, kinds = "", [], set()
    for a, b in zip(starts, starts[1:]):
        marker = names[a]
        words = [int(t) for t in steps.text[a + 1:b] if vocab.is_text(int(t))]
        kinds.add(marker)
        if marker == "<|context|>":
            context = detokenize(words)
        elif marker == "<|user_speech|>":
            frames = steps.audio[:, a + 1:b]
            n = frames.shape[1]
            while n and frames[0, n - 1] == vocab.audio_none:       # the heard text's tail steps carry no audio
                n -= 1
            turns.append(Turn("user", "", frames[:, :n].copy()))
        elif marker in ("<|user_text|>", "<|speak|>"):
            turns.append(Turn("user", detokenize(words)))
        elif marker == "<|transcribe|>":
            turns[-1].text = detokenize(words)
        elif marker == "<|assistant_text|>":
            turns.append(Turn("assistant", detokenize(words)))
        else:
            turns.append(Turn("assistant", detokenize(words), _answer_codes(steps.audio[:, a:b], vocab, layout)))
    task = ("s2t" if "<|transcribe|>" in kinds else "t2s" if "<|speak|>" in kinds
            else "s2s" if "<|user_speech|>" in kinds else "t2t")
    return Example(task, context, turns)


def _answer_codes(block: np.ndarray, vocab: Vocab, layout: Layout) -> np.ndarray:
    """Undo the delay pattern of one assistant speech block (its marker step first): codes [K, T]."""
    first = 1 + layout.text_lead
    frames = 0
    while first + frames < block.shape[1] and block[0, first + frames] != vocab.audio_none:
        frames += 1
    return np.stack([block[k, first + d:first + d + frames] for k, d in enumerate(layout.delays)])
