"""Heard words snapped to the words the model was trained on.

A model that reads heard text (`voice.speechlm.heard`) reads its hearing encoder's greedy CTC
spelling, and on a voice it never heard that spelling is wrong on about half the words, mostly by a
letter or two ("copital", "witd"). The questions use a small vocabulary (478 words in the train
split's user turns), so each spelled word that is not one of them is replaced by the nearest that is,
when it is near enough: normalized Levenshtein distance (edits / the longer word's length) at most
`max_distance`; ties go to the more frequent word. Words with digits are left alone (the CTC spells
numbers as digits). The list of words travels in the model's config (`SpeechLMConfig.heard_words`,
`voice lm words`), so the generator snaps what it hears as it hears it, word by word.

Measured on the ear encoder `earm10c` (docs/speechlm.md, "Heard text"): test split WER
49.7% -> 37.1% at distance 0.5, chosen on the validation split (33.9% -> 28.2%).
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path

SNAP_DISTANCE = 0.5


def training_words(corpus: Path) -> list[str]:
    """Every word of the train split's user turns as the CTC spells them, the most frequent first."""
    from voice.data.manifest import read_manifest
    from voice.speechlm.hearing import normalize_chars

    counts = Counter(w for r in read_manifest(corpus) if r["split"] == "train" and r["role"] == "user"
                     for w in normalize_chars(r["text"]).split())
    if not counts:
        raise SystemExit(f"no user turns in the train split of {corpus}: build the corpus first (voice data build)")
    return [w for w, _ in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))]


class WordSnapper:
    """`snap(word)`: the word itself when known or numeric, else its nearest known word within `max_distance`."""

    def __init__(self, words: list[str], max_distance: float = SNAP_DISTANCE) -> None:
        if not words:
            raise ValueError("a word snapper needs at least one word")
        self.words = list(words)
        self.known = set(words)
        self.max_distance = max_distance
        self._nearest = lru_cache(maxsize=4096)(self._nearest_known)    # bounded: a long session spells many words

    def __call__(self, word: str) -> str:
        if word in self.known or any(c.isdigit() for c in word):
            return word
        return self._nearest(word)

    def _nearest_known(self, word: str) -> str:
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        best, distance, _ = process.extractOne(word, self.words, scorer=Levenshtein.normalized_distance)
        return best if distance <= self.max_distance else word


def write_words(folder: Path, words: list[str], max_distance: float = SNAP_DISTANCE) -> None:
    """Store the words (and the distance) in a saved speech LM's config.json."""
    from voice.speechlm.model import SpeechLMConfig

    config = SpeechLMConfig.from_pretrained(folder)
    if not config.heard_text:
        raise SystemExit(f"{folder} does not read heard text (heard_text is off): nothing to snap")
    config.heard_words, config.heard_snap = list(words), max_distance
    config.save_pretrained(folder)
