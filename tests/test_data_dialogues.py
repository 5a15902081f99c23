"""Dialogue generation, phrasing splits and answer checking for the synthetic corpus."""

from __future__ import annotations

from collections import Counter

import pytest

from voice.data.answers import check_answer, normalize_text, number_to_words
from voice.data.dialogues import SPLITS, generate_dialogues, phrasing_splits, phrasings_for
from voice.data.phrasings import PHRASINGS


def test_every_intent_has_ten_phrasings_with_some_held_out():
    splits = phrasing_splits()
    for intent, templates in PHRASINGS.items():
        assert len(templates) >= 10, intent
        per_split = Counter(splits[f"{intent}/{i}"] for i in range(len(templates)))
        assert per_split["test"] >= 1 and per_split["validation"] >= 1 and per_split["train"] >= 7, (intent, per_split)


def test_every_kind_of_question_keeps_a_training_phrasing():
    train = phrasings_for("train")
    for intent, templates in PHRASINGS.items():
        kinds = {kind for kind, _ in templates}
        assert kinds == {templates[i][0] for i in train[intent]}, intent


def test_generation_is_deterministic_and_splits_use_their_own_phrasings():
    counts = {"train": 300, "validation": 60, "test": 60}
    a, b = generate_dialogues(5, counts), generate_dialogues(5, counts)
    assert a == b
    assert a != generate_dialogues(6, counts)
    assert Counter(d.split for d in a) == Counter(counts)
    splits = phrasing_splits()
    for d in a:
        for t in d.turns:
            if t.role == "user":
                assert splits[t.phrasing] == d.split


def test_dialogues_cover_all_intents_and_have_follow_ups():
    dialogues = generate_dialogues(1, {"train": 2000})
    intents = Counter(t.intent for d in dialogues for t in d.turns if t.role == "user")
    assert set(intents) == set(PHRASINGS)
    multi = [d for d in dialogues if len(d.turns) > 2]
    assert 0.3 < len(multi) / len(dialogues) < 0.6
    assert all(d.context.startswith("Today is ") for d in dialogues)


def test_follow_up_math_uses_the_previous_answer():
    seen = 0
    for d in generate_dialogues(2, {"train": 3000}):
        for prev, user, answer in zip(d.turns[1::2], d.turns[2::2], d.turns[3::2]):
            if user.intent == "followup_math":
                a, word, b, _, r = answer.text.rstrip(".").split()
                assert a in prev.expected.split()  # "that" is the previous answer
                assert b in user.text.rstrip("?.").split()
                assert int(r) == {"plus": int(a) + int(b), "minus": int(a) - int(b), "times": int(a) * int(b)}[word]
                assert answer.expected == r
                seen += 1
    assert seen > 50


def test_generated_answers_pass_their_own_check_and_wrong_ones_fail():
    dialogues = generate_dialogues(3, {"train": 1500})
    answers = [t for d in dialogues for t in d.turns if t.role == "assistant"]
    assert all(check_answer(t.intent, t.expected, t.text) for t in answers)
    wrong = 0
    checkable = [t for t in answers if t.intent not in ("smalltalk", "unknown")]
    for t, other in zip(checkable, checkable[1:]):
        if t.intent == other.intent and normalize_text(t.expected) not in normalize_text(other.text):
            wrong += 1
            assert not check_answer(t.intent, t.expected, other.text), (t, other)
    assert wrong > 100


@pytest.mark.parametrize("intent,expected,answer,ok", [
    ("add", "12", "Seven plus five is twelve.", True),
    ("add", "12", "7 + 5 = 12", True),
    ("add", "12", "That's thirteen.", False),
    ("add", "21", "It's twenty-one.", True),
    ("time", "9:05 PM", "It is nine oh five p.m.", True),
    ("time", "9:05 PM", "It's 9:05.", True),
    ("time", "9:05 PM", "It's 9:05 AM.", False),
    ("subtract", "3", "10 - 7 = 3", True),
    ("time", "9:05 PM", "It's 9:15 PM.", False),
    ("date", "November 25, 2026", "Today is Wednesday, November 25th 2026", False),
    ("date", "November 25, 2026", "Today is Wednesday, November twenty five, twenty twenty six.", True),
    ("spell", "cat", "C-A-T.", True),
    ("spell", "cat", "Cat is spelled c, a, t.", True),
    ("spell", "cat", "It is spelled C A R.", False),
    ("unknown", "unknown", "Sorry, I don't know that.", True),
    ("unknown", "unknown", "Paris.", False),
    ("calendar", "no", "No, Tuesday is a weekday.", True),
    ("calendar", "yes", "No, Tuesday is a weekday.", False),
    ("smalltalk", "thanks", "You're welcome!", True),
    ("units", "7000 milliliters", "7 liters is 7,000 milliliters.", True),
    ("capital", "Paris", "The capital of France is Lyon.", False),
])
def test_check_answer(intent, expected, answer, ok):
    assert check_answer(intent, expected, answer) is ok


def test_number_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(115) == "one hundred fifteen"
    assert number_to_words(7000) == "seven thousand"
    assert normalize_text("In 1998 and 2005.") == "in nineteen ninety eight and two thousand five"


def test_splits_constant():
    assert SPLITS == ("train", "validation", "test")
