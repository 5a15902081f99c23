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

`by="ctc"` (`SpeechLMConfig.heard_snap_by`): each spelled word without digits becomes the known word
that the encoder's CTC posteriors over the word's own frames make likeliest (the CTC loss of every
known word over those frames, one batched `ctc_loss`), so a letter the best path dropped but the
posteriors held still counts; the spelled word itself stays only when it is unknown and beats every
known word by more than `CTC_UNKNOWN_PENALTY` (log-likelihood). The `Speller` hands each word its
frames' log-posteriors (from the frame of the space before it). Without them (a caller with labels only)
it snaps by spelling.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path

SNAP_DISTANCE = 0.5
SNAP_BY = ("spelling", "ctc")
CTC_UNKNOWN_PENALTY = 20.0   # log-likelihood an unknown spelled word gives up against the known words (by="ctc")


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
    """`snap(word)`: the word itself when known or numeric, else its nearest known word within `max_distance`.
    `by="ctc"`: `snap(word, logprobs, lead_space)` chooses by the CTC posteriors of the word's frames (module doc)."""

    def __init__(self, words: list[str], max_distance: float = SNAP_DISTANCE, by: str = "spelling") -> None:
        if not words:
            raise ValueError("a word snapper needs at least one word")
        if by not in SNAP_BY:
            raise ValueError(f"snap by {by!r}: one of {', '.join(SNAP_BY)}")
        self.words = list(words)
        self.known = set(words)
        self.max_distance = max_distance
        self.by = by
        self._nearest = lru_cache(maxsize=4096)(self._nearest_known)    # bounded: a long session spells many words
        self._targets: dict[bool, tuple] = {}

    @property
    def reads_posteriors(self) -> bool:
        """Whether it chooses by the CTC's log-posteriors (callers compute them only then)."""
        return self.by == "ctc"

    def __call__(self, word: str, logprobs=None, lead_space: bool = False) -> str:
        if any(c.isdigit() for c in word):
            return word
        if self.reads_posteriors and logprobs is not None and len(logprobs):
            best = self._likeliest(word, logprobs, lead_space)
            if best is not None:
                return best
        return word if word in self.known else self._nearest(word)

    def _likeliest(self, word: str, logprobs, lead_space: bool) -> str | None:
        """The known word (or the unknown spelled `word`, less CTC_UNKNOWN_PENALTY) of highest CTC log-likelihood
        over `logprobs` [T, labels] (with a space first when `lead_space`); None when no word fits in T frames."""
        import torch
        import torch.nn.functional as F

        words, targets, lengths = self._known_targets(lead_space)
        if word not in self.known:
            words = words + [word]
            extra = self._encode(word, lead_space)
            if len(extra) > targets.shape[1]:
                targets = F.pad(targets, (0, len(extra) - targets.shape[1]))
            targets = torch.cat([targets, F.pad(torch.tensor([extra]), (0, targets.shape[1] - len(extra)))])
            lengths = torch.cat([lengths, torch.tensor([len(extra)])])
        x = torch.as_tensor(logprobs, dtype=torch.float32)
        n = len(words)
        with torch.no_grad():
            loss = F.ctc_loss(x[:, None, :].expand(len(x), n, x.shape[-1]), targets, torch.full((n,), len(x)), lengths,
                              blank=0, reduction="none")
        score = -loss
        if word not in self.known:
            score[-1] -= CTC_UNKNOWN_PENALTY
        if not torch.isfinite(score).any():
            return None
        return words[int(score.argmax())]

    def _known_targets(self, lead_space: bool) -> tuple[list[str], "torch.Tensor", "torch.Tensor"]:
        """The known words without digits and their CTC label sequences (padded), built once per `lead_space`."""
        import torch

        if lead_space not in self._targets:
            words = [w for w in self.words if not any(c.isdigit() for c in w)]
            encoded = [self._encode(w, lead_space) for w in words]
            width = max(map(len, encoded))
            self._targets[lead_space] = (words, torch.tensor([e + [0] * (width - len(e)) for e in encoded]),
                                         torch.tensor([len(e) for e in encoded]))
        return self._targets[lead_space]

    @staticmethod
    def _encode(word: str, lead_space: bool) -> list[int]:
        from voice.speechlm.hearing import CHARS, char_ids

        return ([CHARS.index(" ") + 1] if lead_space else []) + char_ids(word)

    def _nearest_known(self, word: str) -> str:
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        best, distance, _ = process.extractOne(word, self.words, scorer=Levenshtein.normalized_distance)
        return best if distance <= self.max_distance else word


def write_words(folder: Path, words: list[str], max_distance: float = SNAP_DISTANCE, by: str = "spelling") -> None:
    """Store the words (the distance, and how words are chosen) in a saved speech LM's config.json."""
    from voice.speechlm.model import SpeechLMConfig

    if by not in SNAP_BY:
        raise SystemExit(f"snap by {by!r}: one of {', '.join(SNAP_BY)}")
    config = SpeechLMConfig.from_pretrained(folder)
    if not config.heard_text:
        raise SystemExit(f"{folder} does not read heard text (heard_text is off): nothing to snap")
    config.heard_words, config.heard_snap, config.heard_snap_by = list(words), max_distance, by
    config.save_pretrained(folder)
