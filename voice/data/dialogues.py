"""Dialogues for the closed-domain assistant: phrasing splits and seeded generation of multi-turn dialogues."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from voice.data.answers import check_answer  # noqa: F401  (re-exported: dialogues own the answer contract)
from voice.data.intents import Context, Filled
from voice.data.phrasings import FOLLOWUPS, OPENING_INTENTS, PHRASINGS, SAMPLERS, followup_allowed

SPLITS = ("train", "validation", "test")
# The phrasing split does not depend on the build seed: corpora built with different seeds share their
# held-out phrasings, so a model trained on one is never tested on its own training phrasings.
PHRASING_SPLIT_SEED = 20261125
TEST_PHRASING_FRACTION = 0.2
VALIDATION_PHRASING_FRACTION = 0.1
TURN_COUNT_WEIGHTS = {1: 0.55, 2: 0.35, 3: 0.10}  # dialogue length in user turns
FOLLOWUP_PROBABILITY = 0.6  # chance that a later turn refers to the previous answer


@dataclass(frozen=True)
class Turn:
    """One utterance of a dialogue."""

    role: str  # "user" | "assistant"
    text: str
    intent: str
    expected: str  # canonical answer, for `check_answer`
    phrasing: str  # "<intent>/<index>" of the user template; "" for assistant turns


@dataclass(frozen=True)
class Dialogue:
    dialogue_id: str
    split: str
    context: str  # date/time text given to the model before the dialogue
    turns: tuple[Turn, ...]


def phrasing_splits() -> dict[str, str]:
    """Map every phrasing id to its split; every kind of question keeps at least one training phrasing."""
    rng = random.Random(PHRASING_SPLIT_SEED)
    result: dict[str, str] = {}
    for intent, templates in PHRASINGS.items():
        order = list(range(len(templates)))
        rng.shuffle(order)
        train_per_kind: dict[str, int] = {}
        for kind, _ in templates:
            train_per_kind[kind] = train_per_kind.get(kind, 0) + 1
        quota = {"test": max(1, round(TEST_PHRASING_FRACTION * len(templates))),
                 "validation": max(1, round(VALIDATION_PHRASING_FRACTION * len(templates)))}
        assigned = {"test": 0, "validation": 0}
        for index in order:
            kind = templates[index][0]
            split = next((s for s in ("test", "validation") if assigned[s] < quota[s]), None)
            if split is None or train_per_kind[kind] <= 1:
                result[f"{intent}/{index}"] = "train"
                continue
            train_per_kind[kind] -= 1
            assigned[split] += 1
            result[f"{intent}/{index}"] = split
    return result


def phrasings_for(split: str, splits: dict[str, str] | None = None) -> dict[str, list[int]]:
    """Template indices per intent that belong to `split`."""
    splits = splits or phrasing_splits()
    out: dict[str, list[int]] = {intent: [] for intent in PHRASINGS}
    for pid, s in splits.items():
        if s == split:
            intent, index = pid.rsplit("/", 1)
            out[intent].append(int(index))
    for intent in out:
        out[intent].sort()
    return out


def random_datetime(rng: random.Random) -> dt.datetime:
    """A moment between 2024 and 2027, minute resolution."""
    start = dt.datetime(2024, 1, 1)
    return start + dt.timedelta(minutes=rng.randrange(4 * 365 * 24 * 60))


def _pick_intent(rng: random.Random, previous: Filled | None) -> str:
    if previous is not None and rng.random() < FOLLOWUP_PROBABILITY:
        allowed = [f for f in FOLLOWUPS if followup_allowed(f, previous)]
        if allowed:
            return rng.choice(allowed)
    return rng.choice(OPENING_INTENTS)


def generate_dialogue(rng: random.Random, dialogue_id: str, split: str, allowed: dict[str, list[int]]) -> Dialogue:
    """One dialogue of 1-3 exchanges whose user phrasings all come from `allowed` (the split's templates)."""
    now = random_datetime(rng)
    n_turns = rng.choices(list(TURN_COUNT_WEIGHTS), weights=list(TURN_COUNT_WEIGHTS.values()))[0]
    previous: Filled | None = None
    turns: list[Turn] = []
    for _ in range(n_turns):
        intent = _pick_intent(rng, previous)
        index = rng.choice(allowed[intent])
        kind, template = PHRASINGS[intent][index]
        filled = SAMPLERS[intent](rng, kind, Context(now, previous))
        user_text = template.format(**filled.slots)
        user_text = user_text[0].upper() + user_text[1:]
        pid = f"{intent}/{index}"
        turns.append(Turn("user", user_text, intent, filled.expected, pid))
        turns.append(Turn("assistant", filled.answer, intent, filled.expected, ""))
        previous = filled
    return Dialogue(dialogue_id, split, Context(now).text, tuple(turns))


def generate_dialogues(seed: int, split_counts: dict[str, int]) -> list[Dialogue]:
    """Dialogues for each split, deterministic for `seed`; interleaved so any prefix mixes splits and intents."""
    splits = phrasing_splits()
    rng = random.Random(seed)
    labels = [s for s in SPLITS for _ in range(split_counts.get(s, 0))]
    rng.shuffle(labels)
    allowed = {s: phrasings_for(s, splits) for s in SPLITS}
    return [generate_dialogue(rng, f"d{i:06d}", split, allowed[split]) for i, split in enumerate(labels)]
