"""Typed dialogues: endless text -> text examples of freshly generated training dialogues.

The brain of the speech LM (copying the time from the context, sums, spellings, capitals, units)
is the same whether the question is heard or typed, and typed examples need no speech: the corpus
generator (`voice.data.dialogues`) writes new ones for nothing, with new numbers, words, moments and
follow-ups each time. They use the **training phrasings only** (the phrasing split is fixed, so the
wordings held out for validation and test stay held out). `voice train lm --typed-batch N` adds a
batch of N of them to every optimizer step, beside the corpus's mix of the four tasks.
"""

from __future__ import annotations

import random

import numpy as np

from voice.speechlm.format import Example, Layout, Steps, Turn, layout_example
from voice.speechlm.vocab import Vocab


def typed_dialogue(rng: random.Random, allowed: dict[str, list[int]], split: str = "train") -> Example:
    """One new dialogue of `split`'s phrasings (`allowed`) as a t2t example (context, then user and assistant text turns)."""
    from voice.data.dialogues import generate_dialogue

    d = generate_dialogue(rng, "typed", split, allowed)
    return Example("t2t", d.context, [Turn(t.role, t.text) for t in d.turns])


def typed_texts(n: int, seed: int = 0) -> list[str]:
    """The texts of n typed dialogues (for choosing a from-scratch model's text ids)."""
    from voice.data.dialogues import phrasings_for

    rng, allowed = random.Random(seed), phrasings_for("train")
    out = []
    for _ in range(n):
        example = typed_dialogue(rng, allowed)
        out += [example.context, *(t.text for t in example.turns)]
    return out


class TypedDialogueStream:
    """Like `ExampleStream`, but every example is a new typed training dialogue (task t2t).

    Draws through `self.rng` (a numpy generator), which data workers re-seed as they do an ExampleStream's."""

    def __init__(self, vocab: Vocab, layout: Layout, tokenize, max_steps: int = 512, seed: int = 0,
                 spelled: float = 0.0, noise: float = 0.0, split: str = "train", snap=None) -> None:
        """`split`: whose phrasings (train; validation only to validate, the test split's never).
        `spelled`: the share of dialogues whose user turns are written as a hearing encoder spells them (lower
        case, no punctuation, `noise` as in `ExampleStream`'s heard text, then `snap` as in its `heard_snap`): a
        model that reads heard text (voice.speechlm.heard) learns to answer questions written that way."""
        from voice.data.dialogues import phrasings_for

        self.vocab, self.layout, self.tokenize, self.max_steps = vocab, layout, tokenize, max_steps
        if split not in ("train", "validation"):
            raise ValueError(f"typed dialogues use the train or validation phrasings, not {split!r}")
        self.split, self.allowed = split, phrasings_for(split)
        self.rng = np.random.default_rng(seed)
        self.spelled, self.noise, self.snap = spelled, noise, snap

    def sample(self) -> tuple[str, Steps]:
        example = typed_dialogue(random.Random(int(self.rng.integers(2 ** 62))), self.allowed, self.split)
        if self.spelled > 0 and self.rng.random() < self.spelled:
            example.turns = [Turn(t.role, as_spelled(t.text, float(self.rng.uniform(0, self.noise)), self.rng, self.snap))
                             if t.role == "user" else t for t in example.turns]
        steps = layout_example(example, self.vocab, self.layout, self.tokenize)
        return "t2t", steps.cut(self.max_steps) if len(steps) > self.max_steps else steps


def as_spelled(text: str, rate: float, rng: np.random.Generator, snap=None) -> str:
    """`text` as the hearing encoder's CTC head writes it (`normalize_chars`), with spelling mistakes at `rate`
    (then snapped by `snap`, `voice.speechlm.heard.spoil_and_snap`)."""
    from voice.speechlm.heard import spoil_and_snap
    from voice.speechlm.hearing import normalize_chars

    return " ".join(w for _, w in spoil_and_snap([(0, w) for w in normalize_chars(text).split()], rate, rng, snap))
