"""Training examples from a corpus and its token cache: the four tasks of the speech LM in one mix."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from voice.speechlm.format import Example, Layout, Steps, Turn, layout_example
from voice.speechlm.vocab import Vocab

log = logging.getLogger(__name__)

# Share of each task in the training mix (spoken answers are what the product needs; the others teach
# the model to hear, to speak and to think in text).
DEFAULT_MIX = {"s2s": 0.45, "t2t": 0.15, "s2t": 0.25, "t2s": 0.15}


@dataclass
class Dialogue:
    """One corpus dialogue: its context and turns (with cached codes) and what the test is about."""

    dialogue_id: str
    split: str
    context: str
    turns: list[Turn]
    intents: list[str]
    expected: list[str]
    voice: str                     # the user's voice
    # other voices saying the user's turns (voice codec tokenize --user-variants): per variant, the
    # codes of every user turn, in order; a training example takes the original or one of them
    user_variants: list[list[np.ndarray]] = field(default_factory=list)


def load_dialogues(corpus: Path, codec_id: str, splits: tuple[str, ...] = ("train",),
                   num_codebooks: int | None = None, variants: bool = False, ear=None,
                   word_timings: bool = False) -> list[Dialogue]:
    """Dialogues of `splits` whose every utterance is in the token cache `tokens/<codec_id>`; with
    `variants`, also the cached voice variants of their user turns (training splits only); with `ear`
    (an `EarConfig`), each user turn's Whisper-ear features from `voice data ear`'s cache; with
    `word_timings`, each assistant turn's word starts from `voice data align`'s cache."""
    from voice.codec.tokenize import load_variant_index
    from voice.data.manifest import read_manifest

    folder = Path(corpus) / "tokens" / codec_id
    index_path = folder / "index.jsonl"
    if not index_path.exists():
        raise FileNotFoundError(f"no token cache at {folder}: run `voice codec tokenize --corpus {corpus}` first")
    index = {r["id"]: r for r in map(json.loads, index_path.read_text().splitlines()) if r}
    by_dialogue: dict[str, list[dict]] = defaultdict(list)
    for record in read_manifest(corpus):
        if record["split"] in splits:
            by_dialogue[record["dialogue_id"]].append(record)
    if variants and set(splits) & {"validation", "test"}:
        raise ValueError("voice variants are for training splits only")
    if variants and ear is not None:
        raise ValueError("voice variants have no Whisper-ear features (their audio is not kept): use one or the other")
    variant_index = load_variant_index(corpus, codec_id) if variants else {}
    ear_index = {}
    if ear is not None:
        from voice.speechlm.ear_cache import ear_id, load_ear_index

        ear_index = load_ear_index(corpus, ear)
        if not ear_index:
            raise FileNotFoundError(f"no Whisper-ear cache {ear_id(ear)} in {corpus}: run `voice data ear --corpus {corpus} "
                                    f"--chunk {ear.chunk} --context {ear.context}` first")
    timings = {}
    if word_timings:
        from voice.speechlm.word_align import load_word_timings

        timings = load_word_timings(corpus)
        if not timings:
            raise FileNotFoundError(f"no word timings in {corpus}: run `voice data align --corpus {corpus}` first")
    dialogues, missing = [], 0
    for did, records in by_dialogue.items():
        records.sort(key=lambda r: (r["turn_index"], r["role"] != "user"))
        if any(r["id"] not in index or (ear is not None and r["role"] == "user" and r["id"] not in ear_index)
               or (word_timings and r["role"] == "assistant"
                   and (r["id"] not in timings or timings[r["id"]]["words"] != r["text"].split()))
               for r in records):
            missing += 1
            continue
        turns = []
        for r in records:
            codes = np.load(Path(corpus) / index[r["id"]]["path"]).astype(np.int64)
            feats = np.load(Path(corpus) / ear_index[r["id"]]["path"]) if r["id"] in ear_index else None
            starts = timings[r["id"]]["starts"] if r["id"] in timings and r["role"] == "assistant" else None
            turns.append(Turn(r["role"], r["text"], codes[:num_codebooks] if num_codebooks else codes, feats, starts))
        users = [r for r in records if r["role"] == "user"]
        dialogues.append(Dialogue(did, records[0]["split"], records[0].get("context") or "", turns,
                                  [r.get("intent") or "" for r in users], [str(r.get("expected") or "") for r in users],
                                  users[0]["voice"] if users else "",
                                  _user_variants(corpus, users, variant_index, num_codebooks) if variants else []))
    if missing:
        log.warning("%d dialogues skipped: not every utterance is tokenized with %s%s%s", missing, codec_id,
                    " and heard by the Whisper ear" if ear is not None else "",
                    " and word-aligned" if word_timings else "")
    return dialogues


def _user_variants(corpus: Path, users: list[dict], index: dict, num_codebooks: int | None) -> list[list[np.ndarray]]:
    """Per variant number that every user turn has: the codes of all user turns in that voice."""
    common = set.intersection(*(set(row["variant"] for row in index.get(r["id"], [])) for r in users)) if users else set()
    out = []
    for v in sorted(common):
        codes = []
        for r in users:
            row = next(x for x in index[r["id"]] if x["variant"] == v)
            c = np.load(Path(corpus) / row["path"]).astype(np.int64)
            codes.append(c[:num_codebooks] if num_codebooks else c)
        out.append(codes)
    return out


def in_some_voice(dialogue: Dialogue, rng: np.random.Generator) -> list[Turn]:
    """The dialogue's turns with the user speaking in its original voice or one of its variants."""
    choice = int(rng.integers(len(dialogue.user_variants) + 1))
    if choice == 0:
        return list(dialogue.turns)
    codes = iter(dialogue.user_variants[choice - 1])
    return [replace(t, codes=next(codes)) if t.role == "user" else t for t in dialogue.turns]


def examples_of(dialogue: Dialogue, task: str, rng: np.random.Generator) -> Example:
    """The dialogue as one example of `task` (s2t and t2s take one utterance of the right role)."""
    if dialogue.user_variants and task in ("s2s", "s2t"):
        dialogue = replace(dialogue, turns=in_some_voice(dialogue, rng))
    if task in ("s2s", "t2t"):
        return Example(task, dialogue.context, list(dialogue.turns))
    role = "user" if task == "s2t" else "assistant"
    turns = [t for t in dialogue.turns if t.role == role]
    turn = turns[int(rng.integers(len(turns)))]
    if task == "s2t":
        return Example(task, "", [turn])
    return Example(task, "", [Turn("user", turn.text), turn])


@dataclass(frozen=True)
class EarMask:
    """SpecAugment-style masks on the Whisper ear's rows of a training turn (never at inference).

    Time: one mask per `time_every` frames on average (at least one), each 0..`time_width` frames;
    channels: `channel_masks` bands of 0..`channel_width` of the 384 features. Masked values are 0."""

    time_every: int = 25
    time_width: int = 10
    channel_masks: int = 2
    channel_width: int = 48

    def apply(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rows = np.array(rows, dtype=np.float32)          # a copy: the cached rows stay as they are
        t, d = rows.shape
        for _ in range(max(1, round(t / self.time_every)) if t else 0):
            width = int(rng.integers(self.time_width + 1))
            start = int(rng.integers(max(1, t - width + 1)))
            rows[start:start + width] = 0.0
        for _ in range(self.channel_masks):
            width = int(rng.integers(self.channel_width + 1))
            start = int(rng.integers(max(1, d - width + 1)))
            rows[:, start:start + width] = 0.0
        return rows


def with_masked_ear(turns: list[Turn], mask: EarMask, rng: np.random.Generator) -> list[Turn]:
    return [replace(t, ear=mask.apply(t.ear, rng)) if t.ear is not None else t for t in turns]


class ExampleStream:
    """Endless random examples of the task mix, laid out in steps (cut at `max_steps`); with
    `ear_mask`, the user's Whisper-ear rows are masked afresh in every example; with `heard_noise`, the
    heard text of the user's turns (`Turn.heard`) gets spelling mistakes at up to that rate per character
    (a rate drawn per example), as new voices make the encoder misspell more than the training voices; with
    `heard_snap` (a `voice.speechlm.lexicon.WordSnapper`) those words are then snapped as the generator snaps."""

    def __init__(self, dialogues: list[Dialogue], vocab: Vocab, layout: Layout, tokenize,
                 mix: dict[str, float] | None = None, max_steps: int = 1024, seed: int = 0,
                 ear_mask: EarMask | None = None, heard_noise: float = 0.0, heard_snap=None) -> None:
        if not dialogues:
            raise ValueError("no dialogues to train on")
        self.dialogues, self.vocab, self.layout, self.tokenize = dialogues, vocab, layout, tokenize
        mix = mix or DEFAULT_MIX
        self.tasks = list(mix)
        p = np.array([mix[t] for t in self.tasks], float)
        self.p = p / p.sum()
        self.max_steps = max_steps
        self.rng = np.random.default_rng(seed)
        self.ear_mask = ear_mask
        self.heard_noise = heard_noise
        self.heard_snap = heard_snap

    def sample(self) -> tuple[str, Steps]:
        task = self.tasks[int(self.rng.choice(len(self.tasks), p=self.p))]
        dialogue = self.dialogues[int(self.rng.integers(len(self.dialogues)))]
        example = examples_of(dialogue, task, self.rng)
        if self.ear_mask is not None and task in ("s2s", "s2t"):
            example = replace(example, turns=with_masked_ear(example.turns, self.ear_mask, self.rng))
        if (self.heard_noise > 0 or self.heard_snap is not None) and task in ("s2s", "s2t"):
            from voice.speechlm.heard import spoil_and_snap

            rate = float(self.rng.uniform(0, self.heard_noise))
            example = replace(example, turns=[replace(t, heard=spoil_and_snap(t.heard, rate, self.rng, self.heard_snap))
                                              if t.heard is not None else t for t in example.turns])
        steps = layout_example(example, self.vocab, self.layout, self.tokenize)
        if len(steps) > self.max_steps:
            steps = steps.cut(self.max_steps)
        return task, steps
