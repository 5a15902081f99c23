"""Typed dialogues: new t2t examples of training phrasings only, laid out like the corpus's t2t examples."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from tests.test_speechlm import detokenize, tokenize
from voice.data.dialogues import phrasing_splits, phrasings_for
from voice.data.phrasings import PHRASINGS
from voice.speechlm.format import Layout, read_steps
from voice.speechlm.typed import TypedDialogueStream, typed_dialogue, typed_texts
from voice.speechlm.vocab import Vocab


def _matches(template: str, text: str) -> bool:
    pattern = re.escape(template[0].upper() + template[1:])
    pattern = re.sub(r"\\\{[a-z_]+\\\}", ".+", pattern)
    return re.fullmatch(pattern, text) is not None


def test_typed_dialogues_use_training_phrasings_only_and_vary() -> None:
    splits = phrasing_splits()
    held_out = [t for pid, s in splits.items() if s != "train"
                for t in [PHRASINGS[pid.rsplit("/", 1)[0]][int(pid.rsplit("/", 1)[1])][1]]]
    trained = [PHRASINGS[pid.rsplit("/", 1)[0]][int(pid.rsplit("/", 1)[1])][1] for pid, s in splits.items() if s == "train"]
    allowed = {i: [int(pid.rsplit("/", 1)[1]) for pid, s in splits.items() if s == "train" and pid.startswith(i + "/")]
               for i in PHRASINGS}
    rng = random.Random(5)
    questions = [t.text for _ in range(300) for t in typed_dialogue(rng, allowed).turns if t.role == "user"]
    assert len(set(questions)) > 250                               # new numbers, words and moments every time
    for q in questions:
        assert any(_matches(t, q) for t in trained), q
        # a held-out wording may coincide with a trained one only where both templates match
        assert not any(_matches(t, q) for t in held_out) or any(_matches(t, q) for t in trained)


def test_the_stream_lays_out_typed_dialogues_as_t2t_examples() -> None:
    vocab, layout = Vocab(256, 3, 16), Layout((0, 1, 1), 2)
    stream = TypedDialogueStream(vocab, layout, tokenize, seed=3)
    seen = set()
    for _ in range(20):
        task, steps = stream.sample()
        example = read_steps(steps, vocab, layout, detokenize)
        assert task == "t2t" and example.task == "t2t" and example.context.startswith("today is")
        assert [t.role for t in example.turns][:2] == ["user", "assistant"]
        assert steps.text_target.any() and not steps.audio_target.any()
        seen.add(example.turns[0].text)
    assert len(seen) >= 15                 # questions without slots ("What time is it?") may repeat
    a, b = TypedDialogueStream(vocab, layout, tokenize, seed=3), TypedDialogueStream(vocab, layout, tokenize, seed=3)
    assert np.array_equal(a.sample()[1].text, b.sample()[1].text)


def test_typed_texts_are_deterministic() -> None:
    assert typed_texts(5, seed=1) == typed_texts(5, seed=1) != typed_texts(5, seed=2)


def test_a_validation_stream_uses_validation_phrasings_and_never_the_test_split() -> None:
    splits = phrasing_splits()
    validation = [PHRASINGS[pid.rsplit("/", 1)[0]][int(pid.rsplit("/", 1)[1])][1] for pid, x in splits.items()
                  if x == "validation"]
    vocab, layout = Vocab(256, 3, 16), Layout((0, 1, 1), 2)
    stream = TypedDialogueStream(vocab, layout, tokenize, seed=4, split="validation")
    assert stream.allowed == phrasings_for("validation")
    task, steps = stream.sample()
    assert task == "t2t" and steps.text_target.any()
    rng = random.Random(4)
    questions = [t.text for _ in range(100) for t in typed_dialogue(rng, stream.allowed, "validation").turns
                 if t.role == "user"]
    for q in questions:
        assert any(_matches(t, q) for t in validation), q
    with pytest.raises(ValueError, match="test"):
        TypedDialogueStream(vocab, layout, tokenize, split="test")
