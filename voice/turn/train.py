"""`voice train turn` and `voice eval turn`: the end-of-turn model on the paused-turn set.

Training examples are put together from the set's pieces (`voice.turn.data`), each followed by a
silence of random length (the decision happens somewhere in it):

- over: the whole question; the question said with its pause (prefix, pause, rest);
- not over: the prefix alone (the user is pausing); an opening hesitation ("So, um,").

Augmentation: speed and pitch together (30%, 0.9-1.12x: other voices), gain, background noise (a
microphone is never digitally silent), 8 kHz telephone band, leading silence or a shorter context. Training is resumable (trainer.pt), shows loss,
accuracy and ETA, and keeps the checkpoint with the best validation accuracy.

The evaluation plays the turn-taking rule the VAD head runs (`TurnPolicy`): the model is asked at
`pause_ms` of silence and again every `recheck_ms` until `max_silence_ms`, which ends the turn
whatever it says. A turn is ended prematurely when any check during the user's real pause says
"over"; an end's latency is the silence at the first check that says "over".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from voice.turn import decision_threshold
from voice.turn.data import SAMPLE_RATE_HZ, is_more, load_records, original_id, read_piece
from voice.turn.transcript import TEXT_WEIGHTS, TextTurnModel

OVER, NOT_OVER = 1, 0


@dataclass(frozen=True)
class TurnPolicy:
    """When the VAD head asks the model, and when a silence ends the turn regardless."""

    pause_ms: float = 200.0
    recheck_ms: float = 96.0          # three 32 ms VAD windows
    max_silence_ms: float = 1500.0
    threshold: float = 0.5
    speculate: float = 0.0            # P(over) at which the answer starts, held until the end is decided (0: never)
    speculate_ms: float = 0.0         # with speculate: the model is also asked at this silence, only whether to start
    late_ms: float = 0.0              # from this silence on, late_threshold decides when it is lower (0: never)
    late_threshold: float = 0.5

    @property
    def speculates(self) -> bool:
        """Whether answers start before the decision (a speculation threshold below the decision's)."""
        return 0 < self.speculate < self.threshold

    @property
    def start_threshold(self) -> float:
        """P(over) at which an answer starts: the speculation threshold when it is below the decision's."""
        return self.speculate if self.speculates else self.threshold

    def threshold_at(self, t_s: float) -> float:
        """The decision threshold at a check after `t_s` seconds of silence."""
        return decision_threshold(self.threshold, t_s * 1000, self.late_ms, self.late_threshold)

    def decides_at(self, t_s: float) -> bool:
        """Whether the check after `t_s` seconds of silence may end the turn (the early one only starts answers)."""
        return t_s >= self.pause_ms / 1000 - 1e-9

    def says_over(self, times: list[float], ps: list[float]) -> list[bool]:
        return [self.decides_at(t) and p >= self.threshold_at(t) for t, p in zip(times, ps)]

    def starts(self, times: list[float], ps: list[float]) -> list[bool]:
        """At which checks an answer starts (speculatively, or at the decision)."""
        return [p >= min(self.start_threshold, self.threshold_at(t)) if self.decides_at(t)
                else self.speculates and p >= self.speculate        # the VAD asks early only when it speculates
                for t, p in zip(times, ps)]

    def first_decision(self, times: list[float]) -> int | None:
        """The index of the first check that may end the turn."""
        return next((i for i, t in enumerate(times) if self.decides_at(t)), None)

    def end_and_start_s(self, times: list[float], ps: list[float]) -> tuple[float, float]:
        """A finished turn's silence (s) at the decided end (or the fallback) and at the answer's start."""
        end = next((t for t, over in zip(times, self.says_over(times, ps)) if over), self.max_silence_ms / 1000)
        return end, next((t for t, start in zip(times, self.starts(times, ps)) if start), end)

    def check_times_s(self, up_to_s: float | None = None) -> list[float]:
        """Silences (s) at which the model is asked, up to the fallback (or `up_to_s`)."""
        last = self.max_silence_ms / 1000 if up_to_s is None else min(up_to_s, self.max_silence_ms / 1000)
        times, t = [], self.pause_ms / 1000
        if 0 < self.speculate_ms < self.pause_ms and self.speculate_ms / 1000 < last - 1e-9:
            times.append(round(self.speculate_ms / 1000, 4))
        while t < last - 1e-9:
            times.append(round(t, 4))
            t += self.recheck_ms / 1000
        return times


def add_voice_variants(records: list[dict], audio: dict[str, np.ndarray], keys: tuple[str, ...], n: int,
                       seed: int = 0, progress: bool = True) -> None:
    """Put `n` other voices of every record's pieces (`record[key]` for each of `keys` it has) into `audio` as
    "PIECE#v" (v = 1..n): Praat's vocal-tract and pitch change (`voice.data.voice_variants`), drawn from the
    record's id so that every piece of one record, and every run, gets the same voice; tempo unchanged."""
    from tqdm import tqdm

    from voice.data.voice_variants import change_voice, draw_variant

    for record in tqdm(records, desc=f"{n} voice variants", unit="record", disable=not progress):
        pieces = [record[k] for k in keys if k in record]
        for v in range(1, n + 1):
            rng = np.random.default_rng([seed, v, int(hashlib.sha256(record["id"].encode()).hexdigest()[:8], 16)])
            params = draw_variant(rng)
            params["duration"] = 1.0       # tempo is augmented on the fly already
            for key in pieces:
                audio[f"{key}#{v}"] = change_voice(audio[key], SAMPLE_RATE_HZ, **params)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SAMPLE_RATE_HZ)), np.float32)


class PieceStore:
    """The set's pieces of one split, read once and kept in memory."""

    def __init__(self, turns_dir: Path, split: str | tuple[str, ...], limit: int = 0, short_dir: Path | None = None,
                 voices: frozenset[str] | None = None, exclude: frozenset[str] = frozenset(),
                 originals_only: bool = False) -> None:
        """The records of `split` (or several), only those of `voices` when given and none of `exclude`, nor
        the extra voices' copies of an excluded voice's questions (`voice data turns --extra-voices`); with
        `originals_only`, none of the training extras of `--more-cuts` and `--answers` (what is evaluated)."""
        splits = (split,) if isinstance(split, str) else tuple(split)
        records = [r for s in splits for r in load_records(turns_dir, s) if not (originals_only and is_more(r))]
        excluded = {r["id"] for r in records if r["voice"] in exclude}
        self.records = [r for r in records if (voices is None or r["voice"] in voices) and r["voice"] not in exclude
                        and original_id(r["id"]) not in excluded]
        if limit:
            self.records = self.records[:limit]
        if not self.records:
            raise ValueError(f"no {split} records in {turns_dir}")
        self.audio: dict[str, np.ndarray] = {}
        for r in self.records:
            for key in ("full_wav", "prefix_wav", "rest_wav", "opening_wav"):
                if key in r:
                    self.audio[r[key]] = read_piece(turns_dir, r[key])
        if short_dir is not None and (Path(short_dir) / "manifest.jsonl").exists():
            for s in splits:
                self._add_short_replies(Path(short_dir), s)
        self.variants = 0
        self.inner_pauses = False       # --inner-pauses: also cut pieces at their inner pauses ("not over")
        self._inner: dict[str, list[int]] = {}

    def inner_cuts(self, record: dict, name: str) -> list[int]:
        """Where the pauses inside the record's piece `name` start, in samples (cached per piece)."""
        key = record[f"{name}_wav"]
        if key not in self._inner:
            self._inner[key] = inner_pauses(self.audio[key])
        return self._inner[key]

    def add_voice_variants(self, n: int, seed: int = 0, progress: bool = True) -> None:
        """`n` other voices for every record (Praat's vocal-tract and pitch change, `voice.data.voice_variants`),
        the same voice for all of a record's pieces so that prefix, pause and rest stay one speaker."""
        add_voice_variants(self.records, self.audio, ("full_wav", "prefix_wav", "rest_wav", "opening_wav", "short_wav"),
                           n, seed, progress)
        self.variants = n

    def _add_short_replies(self, barge_dir: Path, split: str) -> None:
        """A whole turn can be one word ("yes", "okay"): the barge-in set's acknowledgements, said in the
        same voice as the record's question, are over too (same ids, same split)."""
        by_id = {r["id"]: r for r in self.records}
        for b in load_records(barge_dir, split):
            if b["id"] in by_id and b.get("backchannel_text") in SHORT_REPLIES:
                key = f"short:{b['backchannel_wav']}"
                self.audio[key] = read_piece(barge_dir, b["backchannel_wav"])
                by_id[b["id"]]["short_wav"] = key

    def piece(self, record: dict, name: str, variant: int = 0) -> np.ndarray:
        key = record[f"{name}_wav"]
        return self.audio[f"{key}#{variant}" if variant else key]


# Acknowledgements that are a whole turn when the assistant is silent ("hmm", "oh", "ah" may be a
# hesitation and are left out).
SHORT_REPLIES = frozenset(("uh-huh", "mm-hmm", "yeah", "okay", "right", "sure", "I see", "yes", "mhm", "got it",
                           "yeah yeah", "okay okay", "oh right"))


def inner_pauses(audio: np.ndarray, rate: int = SAMPLE_RATE_HZ, min_gap_s: float = 0.12, edge_s: float = 0.15,
                 below_peak_db: float = 40.0) -> list[int]:
    """Sample positions where a pause inside `audio` starts: at least `min_gap_s` of 10 ms frames
    `below_peak_db` under the loudest, with at least `edge_s` of the piece on either side (a
    synthesizer's pause at a comma or before a filler; a stop consonant's closure is shorter)."""
    frame = rate // 100
    n = len(audio) // frame
    if n < 3:
        return []
    rms = np.sqrt(np.mean(np.square(audio[: n * frame].reshape(n, frame), dtype=np.float64), axis=1) + 1e-12)
    quiet = 20 * np.log10(rms) < 20 * np.log10(rms.max()) - below_peak_db
    cuts, i = [], 0
    while i < n:
        if not quiet[i]:
            i += 1
            continue
        j = i
        while j < n and quiet[j]:
            j += 1
        if (j - i) / 100 >= min_gap_s and i / 100 >= edge_s and (n - j) / 100 >= edge_s:
            cuts.append(i * frame)
        i = j
    return cuts


def example_kinds(record: dict) -> list[tuple[str, int]]:
    """The examples one record gives: (name, label)."""
    kinds = [("full", OVER)]
    if "short_wav" in record:
        kinds.append(("short", OVER))
    if "prefix_wav" in record:
        kinds += [("prefix", NOT_OVER), ("paused_full", OVER)]
    if "opening_wav" in record:
        kinds.append(("opening", NOT_OVER))
    return kinds


def speech_of(store: PieceStore, record: dict, kind: str, pause_s: float | None = None, variant: int = 0) -> np.ndarray:
    """The user's audio of one example, up to the point where the silence starts."""
    if kind == "paused_full":
        gap = record["pause_s"] if pause_s is None else pause_s
        return np.concatenate([store.piece(record, "prefix", variant), silence(gap), store.piece(record, "rest", variant)])
    return store.piece(record, kind, variant)


# ---- augmentation --------------------------------------------------------------------------------

def _telephone(audio: np.ndarray) -> np.ndarray:
    import torch
    import torchaudio

    x = torch.from_numpy(audio)[None]
    down = torchaudio.functional.resample(x, SAMPLE_RATE_HZ, 8000)
    return torchaudio.functional.resample(down, 8000, SAMPLE_RATE_HZ)[0, : len(audio)].numpy()


def _resample_by(audio: np.ndarray, factor: float) -> np.ndarray:
    """Played `factor` times faster (and higher): a cheap change of voice and tempo (the rate in 100 Hz steps)."""
    from voice.audio import speed_perturb

    return speed_perturb(audio, int(round(SAMPLE_RATE_HZ * factor / 100)) * 100 / SAMPLE_RATE_HZ, SAMPLE_RATE_HZ)


def augment(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.3:
        audio = _resample_by(audio, float(rng.uniform(0.9, 1.12)))
    x = audio * np.float32(10 ** (rng.uniform(-12, 6) / 20))
    if rng.random() < 0.15:
        x = _telephone(x)
    if rng.random() < 0.7:
        level = 10 ** (rng.uniform(-75, -40) / 20)
        noise = rng.standard_normal(len(x)).astype(np.float32)
        if rng.random() < 0.5:   # pinkish: a running sum of white noise, leaky
            noise = np.cumsum(noise) * 0.05
            noise -= np.convolve(noise, np.ones(256) / 256, mode="same")
            noise /= np.std(noise) + 1e-9
        x = x + noise * level
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def training_batch(store: PieceStore, rng: np.random.Generator, size: int, context: int,
                   with_augment: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """`size` random examples, each the last `context` samples before its decision point."""
    from voice.turn.model import fit_context

    xs, ys = [], []
    for _ in range(size):
        record = store.records[rng.integers(len(store.records))]
        kinds = example_kinds(record)
        if store.inner_pauses:   # a pause inside a piece, the speech going on after it: not over
            kinds += [(f"inner:{name}", NOT_OVER) for name in ("full", "prefix")
                      if f"{name}_wav" in record and store.inner_cuts(record, name)]
        # Over and not over equally often: pick the label first.
        label = OVER if rng.random() < 0.5 else NOT_OVER
        options = [k for k, y in kinds if y == label]
        if not options:
            label, options = OVER, ["full"]
        kind = options[rng.integers(len(options))]
        pause = float(rng.uniform(0.25, 1.3)) if kind == "paused_full" else None
        variant = int(rng.integers(store.variants + 1))
        if kind.startswith("inner:"):    # cut where the pause starts (voice variants keep the timing)
            name = kind.split(":", 1)[1]
            cuts = store.inner_cuts(record, name)
            speech = store.piece(record, name, variant)[: cuts[rng.integers(len(cuts))]]
        else:
            speech = speech_of(store, record, kind, pause, variant)
        lead = silence(float(rng.uniform(0.0, 1.0)))
        audio = np.concatenate([lead, speech, silence(float(rng.uniform(0.12, 1.4)))])
        if with_augment:
            audio = augment(audio, rng)
        xs.append(fit_context(audio, context))
        ys.append(label)
    return np.stack(xs), np.asarray(ys, np.float32)


# ---- evaluation ----------------------------------------------------------------------------------

def _contexts(model, clips: list[np.ndarray]):
    import torch

    from voice.turn.model import fit_context

    return torch.from_numpy(np.stack([fit_context(c, model.config.context_samples) for c in clips]))


def probabilities(model, clips: list[np.ndarray], batch: int = 64, rows: list | None = None,
                  offset: int = 0) -> np.ndarray:
    """P(yes) of every clip. With `rows` (one slot per clip of the whole set, this call's from `offset`,
    filled the first time) a frozen front end's rows are kept and reused, so a validation every few
    hundred steps runs only the head."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(clips), batch):
            chunk = clips[i: i + batch]
            if rows is None:
                logits = model(_contexts(model, chunk))
            else:
                at = slice(offset + i, offset + i + len(chunk))
                if rows[at.start] is None:
                    rows[at] = list(model.frontend(_contexts(model, chunk)).numpy().astype(np.float16))
                logits = model.classify(torch.from_numpy(np.stack(rows[at]).astype(np.float32)))
            out.append(torch.sigmoid(logits).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def probabilities_by_owner(model, clips: list[np.ndarray], owners: list[int], desc: str,
                           progress: bool = False, cache: dict | None = None) -> dict[int, list[float]]:
    """P(yes) of every clip, grouped by its owner (the example whose checks the clips are), in order.
    `cache` (a dict the caller keeps between calls on the same clips) keeps a frozen front end's rows."""
    from tqdm import tqdm

    rows = None
    if cache is not None and model.frozen_frontend:
        rows = cache.setdefault("rows", [None] * len(clips))
    per_owner: dict[int, list[float]] = defaultdict(list)
    bar = tqdm(total=len(clips), desc=desc, unit="clip", disable=not progress)
    for i in range(0, len(clips), 256):
        for owner, p in zip(owners[i: i + 256], probabilities(model, clips[i: i + 256], rows=rows, offset=i)):
            per_owner[owner].append(float(p))
        bar.update(len(clips[i: i + 256]))
    bar.close()
    return per_owner


def evaluate(model, store: PieceStore, policy: TurnPolicy, progress: bool = False, cache: dict | None = None) -> dict:
    """Accuracy at the first check, and the premature-end rate and end latency under `policy`."""
    return summarize(*check_probabilities(model, store, policy, progress, cache), policy)


def check_probabilities(model, store: PieceStore, policy: TurnPolicy, progress: bool = False,
                        cache: dict | None = None) -> tuple[list, dict]:
    """The examples of `store` (record, kind, label, check times) and the model's P(over) at each check."""
    rows = []          # (record, kind, label, check times)
    clips, owners = [], []
    for record in store.records:
        for kind, label in example_kinds(record):
            if label == NOT_OVER and kind == "prefix":
                times = policy.check_times_s(record["pause_s"])   # the pause the bench plays
            elif label == NOT_OVER:
                times = policy.check_times_s(0.6)                 # an opening hesitation
            else:
                times = policy.check_times_s()
            speech = speech_of(store, record, kind)
            for t in times:
                clips.append(np.concatenate([speech, silence(t)]))
                owners.append(len(rows))
            rows.append((record, kind, label, times))
    return rows, probabilities_by_owner(model, clips, owners, "eval turn", progress, cache)


def summarize(rows: list, per_row: dict, policy: TurnPolicy) -> dict:
    """Per group (all, voice, example kind, pause kind): the numbers `format_report` prints."""
    def blank() -> dict:
        return {"n": 0, "correct_first": 0, "over": 0, "not_over": 0, "premature": 0, "missed_first": 0,
                "latencies_ms": [], "starts_ms": [], "taken_back": 0}

    groups: dict[str, dict] = defaultdict(blank)
    for i, (record, kind, label, times) in enumerate(rows):
        ps = per_row[i]
        says_over = policy.says_over(times, ps)
        starts = policy.starts(times, ps)   # the answer starts (speculatively, or at the decision)
        keys = ["all", f"voice:{record['voice']}", f"example:{kind}"]
        if kind in ("prefix", "paused_full"):
            keys.append(f"pause:{record['kind']}")
        i_first = policy.first_decision(times)
        first = says_over[i_first] if i_first is not None else label == OVER
        end, start = policy.end_and_start_s(times, ps) if label == OVER else (None, None)
        for key in keys:
            g = groups[key]
            g["n"] += 1
            g["correct_first"] += int(first == bool(label))
            if label == OVER:
                g["over"] += 1
                g["missed_first"] += int(not first)
                g["latencies_ms"].append(end * 1000)
                g["starts_ms"].append(start * 1000)
            else:
                g["not_over"] += 1
                g["premature"] += int(any(says_over))
                g["taken_back"] += int(any(starts) and not any(says_over))   # started at the pause, then dropped
    result = {}
    for key, g in sorted(groups.items()):
        lat = np.asarray(g["latencies_ms"]) if g["latencies_ms"] else None
        result[key] = {
            "n": g["n"],
            "accuracy_first_check": round(g["correct_first"] / g["n"], 4),
            "premature_rate": round(g["premature"] / g["not_over"], 4) if g["not_over"] else None,
            "missed_first_check_rate": round(g["missed_first"] / g["over"], 4) if g["over"] else None,
            "end_silence_p50_ms": round(float(np.percentile(lat, 50)), 1) if lat is not None else None,
            "end_silence_p95_ms": round(float(np.percentile(lat, 95)), 1) if lat is not None else None,
            "ended_by_fallback": int(np.sum(lat >= policy.max_silence_ms - 1e-6)) if lat is not None else None,
            "start_p50_ms": round(float(np.percentile(g["starts_ms"], 50)), 1) if lat is not None else None,
            "start_p95_ms": round(float(np.percentile(g["starts_ms"], 95)), 1) if lat is not None else None,
            "taken_back_rate": round(g["taken_back"] / g["not_over"], 4) if g["not_over"] else None,
        }
    return result


def ready_ms(rows: list, per_row: dict, policy: TurnPolicy, pipeline_ms: float) -> tuple[float, float]:
    """p50 and p95 over finished turns of when an answer that takes `pipeline_ms` to make is ready to play
    (ms of silence): max(the decided end, its start + pipeline_ms), its start being speculative or the end."""
    ready = []
    for i, (_record, _kind, label, times) in enumerate(rows):
        if label == OVER:
            end, start = policy.end_and_start_s(times, per_row[i])
            ready.append(1000 * max(end, start + pipeline_ms / 1000))
    return float(np.percentile(ready, 50)), float(np.percentile(ready, 95))


def decision_ms(model, context: int, repeats: int = 50) -> dict:
    """Wall time of one decision on one thread (batch 1, full context)."""
    import torch

    import voice.turn.model as turn_model

    threads, ear_threads = torch.get_num_threads(), turn_model.whisper_threads
    set_threads(1)
    x = torch.zeros(1, context)
    x[0, -context // 2:] = torch.randn(context // 2) * 0.05
    try:
        with torch.inference_mode():
            for _ in range(5):
                model(x)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(threads)
        turn_model.whisper_threads = ear_threads
    return {"p50_ms": round(float(np.percentile(times, 50)), 2), "p95_ms": round(float(np.percentile(times, 95)), 2)}


def transcript_ms(store: PieceStore, repeats: int = 30) -> dict:
    """Wall time of the transcript of the words before a pause (`voice.turn.transcript`), on one thread,
    over the first `repeats` whole questions of `store`."""
    from voice.speechlm.whisper_ear import WhisperEar
    from voice.turn.transcript import transcribe_tail

    ear = WhisperEar(threads=1)
    clips = [store.piece(r, "full") for r in store.records[:repeats]]
    transcribe_tail(ear, clips[0])
    times = []
    for clip in clips:
        start = time.perf_counter()
        transcribe_tail(ear, clip)
        times.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": round(float(np.percentile(times, 50)), 1), "p95_ms": round(float(np.percentile(times, 95)), 1)}


def format_report(result: dict, policy: TurnPolicy, speed: dict | None = None) -> str:
    lines = [f"policy: ask at {policy.pause_ms:.0f} ms of silence, again every {policy.recheck_ms:.0f} ms, "
             f"threshold {policy.threshold:.2f}"
             + (f" ({policy.late_threshold:.2f} from {policy.late_ms:.0f} ms)" if policy.late_ms > 0 else "")
             + f", a silence of {policy.max_silence_ms:.0f} ms ends the turn regardless"]
    lines.append(f"{'group':34s} {'n':>5s} {'acc@1st':>8s} {'premature':>9s} {'missed@1st':>10s} "
                 f"{'end p50':>8s} {'end p95':>8s}")
    for key, r in result.items():
        def pct(v):
            return "-" if v is None else f"{100 * v:.1f}%"

        def ms(v):
            return "-" if v is None else f"{v:.0f}"

        lines.append(f"{key:34s} {r['n']:5d} {pct(r['accuracy_first_check']):>8s} {pct(r['premature_rate']):>9s} "
                     f"{pct(r['missed_first_check_rate']):>10s} {ms(r['end_silence_p50_ms']):>8s} "
                     f"{ms(r['end_silence_p95_ms']):>8s}")
    if speed:
        lines.append(f"one decision on one core: p50 {speed['p50_ms']} ms, p95 {speed['p95_ms']} ms")
        if "transcript" in speed:
            lines.append(f"the transcript of a pause (a worker thread, one core; started when the silence starts): "
                         f"p50 {speed['transcript']['p50_ms']} ms, p95 {speed['transcript']['p95_ms']} ms")
    return "\n".join(lines)


# ---- commands ------------------------------------------------------------------------------------

def model_config(args: argparse.Namespace):
    from voice.turn.model import TurnConfig

    return TurnConfig(channels=args.channels, hidden=args.hidden, gru_layers=args.gru_layers, context_s=args.context_s,
                      frontend=args.frontend)


def set_threads(threads: int) -> None:
    """Torch's threads and the Whisper front end's (CTranslate2) for this process."""
    import torch

    import voice.turn.model as turn_model

    torch.set_num_threads(threads)
    turn_model.whisper_threads = threads


class FeaturePool:
    """Training examples heard once through a frozen front end (the `whisper` one), kept on disk.

    The Whisper encoder costs about 20 ms per 3 s example on 2 cores, the head a fraction of that:
    so `size` examples are drawn (`make_batch`, augmentation included, seeded by their index) and
    encoded once, in pieces that survive a restart (`rows.npy`, float16, memory-mapped; `done.json`
    says how many are in), and every training step samples its batch from them.
    """

    def __init__(self, folder: Path, size: int, frames: int, dim: int, mask=None) -> None:
        """`mask` (a `voice.speechlm.data.EarMask`): SpecAugment-style masks on every sampled example."""
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.size, self.mask = folder, size, mask
        shape = (size, frames, dim)
        meta = folder / "done.json"
        state = json.loads(meta.read_text()) if meta.exists() else {}
        fresh = state.get("shape") != list(shape)
        mode = "w+" if fresh else "r+"
        self.rows = np.lib.format.open_memmap(folder / "rows.npy", mode=mode, dtype=np.float16, shape=shape)
        self.labels = np.lib.format.open_memmap(folder / "labels.npy", mode=mode, dtype=np.float32, shape=(size,))
        self.done = 0 if fresh else int(state.get("done", 0))

    def fill(self, model, make_batch, context: int, seed: int, piece: int = 48, progress: bool = True) -> None:
        import torch
        from tqdm import tqdm

        bar = tqdm(total=self.size, initial=self.done, desc="front end", unit="example", disable=not progress)
        with torch.inference_mode():
            while self.done < self.size:
                n = min(piece, self.size - self.done)
                x, y = make_batch(np.random.default_rng([seed, self.done]), n, context)
                self.rows[self.done: self.done + n] = model.frontend(torch.from_numpy(x)).numpy().astype(np.float16)
                self.labels[self.done: self.done + n] = y
                self.rows.flush()
                self.labels.flush()
                self.done += n
                tmp = self.folder / "done.json.tmp"
                tmp.write_text(json.dumps({"shape": list(self.rows.shape), "done": self.done}))
                tmp.replace(self.folder / "done.json")
                bar.update(n)
        bar.close()

    def sample(self, rng: np.random.Generator, size: int, _context: int = 0) -> tuple[np.ndarray, np.ndarray]:
        idx = np.sort(rng.integers(self.done, size=size))
        rows = np.asarray(self.rows[idx], np.float32)
        if self.mask is not None:
            rows = np.stack([self.mask.apply(r, rng) for r in rows])
        return rows, np.asarray(self.labels[idx])


def train_loop(args: argparse.Namespace, config, make_batch, validate, tag: str, weights: str) -> int:
    """Train a `DecisionModel` on `make_batch(rng, size, context)` batches, resumably.

    `validate(model)` returns (score, row): the checkpoint with the best score is saved as
    `args.out/weights`, the row goes to the history and the progress bar.
    """
    import torch
    from tqdm import tqdm

    from voice.fileutil import load_trainer_state, save_trainer_state
    from voice.turn.model import DecisionModel

    set_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = DecisionModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    step, history, best = 0, [], -math.inf
    trainer = out / "trainer.pt"
    if trainer.exists():
        step, history, best = load_trainer_state(trainer, model, opt)
        print(f"[{tag}] resumed at step {step} (best validation score {best:.3f})", flush=True)
    print(f"[{tag}] {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; out {out}", flush=True)
    forward = model
    if model.frozen_frontend and args.pool:
        # The encoder is frozen: hear a pool of examples once, then train the head on them.
        _, frames, dim = model.frontend(torch.zeros(1, config.context_samples)).shape
        mask = None
        if args.row_mask:
            from voice.speechlm.data import EarMask

            mask = EarMask()
        pool = FeaturePool(out / "pool", args.pool, frames, dim, mask)
        pool.fill(model, make_batch, config.context_samples, args.seed)
        make_batch, forward = pool.sample, model.classify
        print(f"[{tag}] training on a pool of {pool.done} examples heard through Whisper's encoder", flush=True)
    rng = np.random.default_rng(args.seed + step)
    start = time.monotonic()
    bar = tqdm(total=args.steps, initial=step, desc=f"train {tag}")
    running: list[float] = []
    while step < args.steps:
        lr = args.lr * min(1.0, (step + 1) / 100) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = make_batch(rng, args.batch, config.context_samples)
        model.train()
        logits = forward(torch.from_numpy(x))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        running = (running + [float(((logits.detach() > 0).float() == torch.from_numpy(y)).float().mean())])[-50:]
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{np.mean(running):.3f}")
        timed_out = args.minutes is not None and time.monotonic() - start > args.minutes * 60
        if step % args.eval_every == 0 or step == args.steps or timed_out:
            model.eval()
            score, row = validate(model)
            row = {"step": step, "loss": round(loss.item(), 4), **row}
            history.append(row)
            bar.write(json.dumps(row))
            if score > best:
                best = score
                model.save(out, {"history": history, "step": step}, name=weights)
            save_trainer_state(trainer, model, opt, step, history, best)
            if timed_out:
                bar.write(f"[{tag}] stopped after {args.minutes} minutes at step {step}")
                break
    bar.close()
    print(json.dumps({"step": step, "best_validation_score": best}))
    return 0


def _train(args: argparse.Namespace) -> int:
    turns = Path(args.turns)
    short = Path(args.short_replies) if args.short_replies else None
    held = frozenset(v.strip() for v in args.holdout_voices.split(",") if v.strip())
    train_store = PieceStore(turns, "train", args.limit, short, exclude=held)
    if args.voice_variants:
        train_store.add_voice_variants(args.voice_variants, args.seed)
    train_store.inner_pauses = args.inner_pauses
    if held:   # validate on voices never trained on: all their questions, training and validation phrasings
        val_store = PieceStore(turns, ("train", "validation"), args.limit, short, voices=held, originals_only=True)
    else:
        val_store = PieceStore(turns, "validation", args.limit, short)
    print(f"[turn] {len(train_store.records)} train / {len(val_store.records)} validation questions"
          + (f" (validation: the held-out voices {', '.join(sorted(held))})" if held else ""), flush=True)
    policy = TurnPolicy()
    cache: dict = {}

    def validate(model) -> tuple[float, dict]:
        r = evaluate(model, val_store, policy, cache=cache)["all"]
        return r["accuracy_first_check"], {
            "val_accuracy": r["accuracy_first_check"], "val_premature": r["premature_rate"],
            "val_end_p50_ms": r["end_silence_p50_ms"], "val_end_p95_ms": r["end_silence_p95_ms"]}

    return train_loop(args, model_config(args), lambda rng, size, context: training_batch(train_store, rng, size, context),
                      validate, "turn", "turn.pt")


def _eval(args: argparse.Namespace) -> int:
    import torch

    from voice.turn.model import DecisionModel

    set_threads(args.threads)
    model, _ = DecisionModel.load(Path(args.model))
    text_model = None
    if args.text:
        text_model = TextTurnModel.load(Path(args.model) if Path(args.model).is_dir() else Path(args.model).parent)
    held = frozenset(v.strip() for v in args.voices.split(",") if v.strip()) or None
    splits = ("train", "validation") if held and args.split == "validation" else args.split
    store = PieceStore(Path(args.turns), splits, args.limit,
                       Path(args.short_replies) if args.short_replies else None, voices=held, originals_only=True)
    speculate = [float(x) for x in str(args.speculate).split(",") if x.strip()] or [0.0]
    late = [tuple(float(v) for v in x.split(":")) for x in str(args.late).split(",") if x.strip()] or [(0.0, 0.5)]
    if any(len(x) != 2 for x in late):
        print("error: --late takes MS:THRESHOLD pairs, e.g. 600:0.5", file=sys.stderr)
        return 2
    policy = TurnPolicy(pause_ms=args.pause_ms, recheck_ms=args.recheck_ms or 1e9, max_silence_ms=args.max_silence_ms,
                        threshold=args.threshold, speculate=speculate[0], speculate_ms=args.speculate_ms,
                        late_ms=late[0][0], late_threshold=late[0][1])
    rows, probs = check_probabilities(model, store, policy, progress=not args.json)
    if text_model is not None:
        from voice.turn.text_train import fused_probabilities, transcripts_for

        texts = transcripts_for(store, Path(args.turns), progress=not args.json)
        probs = fused_probabilities(rows, probs, text_model, texts)
    result = summarize(rows, probs, policy)
    speed = decision_ms(model, model.config.context_samples)
    if text_model is not None:
        speed["transcript"] = transcript_ms(store)
    if args.sweep or len(speculate) > 1 or len(late) > 1:
        # the answer is ready at max(end, start + pipeline_ms): what a pipeline that needs pipeline_ms sees
        print(f"{'threshold':>9s} {'late':>10s} {'speculate':>9s} {'premature':>9s} {'end p50':>8s} {'end p95':>8s} "
              f"{'by fallback':>11s} {'start p50':>9s} {'start p95':>9s} {'taken back':>10s} "
              f"{f'ready@{args.pipeline_ms:.0f} p50':>15s} {'p95':>6s}")
        for t in [float(x) for x in (args.sweep or str(args.threshold)).split(",")]:
            for late_ms, late_threshold in late:
                for sp in speculate:
                    sweep_policy = replace(policy, threshold=t, speculate=sp, late_ms=late_ms, late_threshold=late_threshold)
                    r = summarize(rows, probs, sweep_policy)["all"]
                    ready = ready_ms(rows, probs, sweep_policy, args.pipeline_ms)
                    late_text = f"{late_ms:.0f}:{late_threshold:.2f}" if late_ms > 0 else "off"
                    print(f"{t:9.2f} {late_text:>10s} {sp:9.2f} {100 * r['premature_rate']:8.1f}% "
                          f"{r['end_silence_p50_ms']:8.0f} {r['end_silence_p95_ms']:8.0f} {r['ended_by_fallback']:11d} "
                          f"{r['start_p50_ms']:9.0f} {r['start_p95_ms']:9.0f} {100 * r['taken_back_rate']:9.1f}% "
                          f"{ready[0]:15.0f} {ready[1]:6.0f}")
        return 0
    if args.json:
        print(json.dumps({"split": args.split, "policy": policy.__dict__, "groups": result, "decision": speed}))
    else:
        print(f"end-of-turn model {args.model} on the {args.split} split of {args.turns}")
        print(format_report(result, policy, speed))
    return 0


def add_model_arguments(p: argparse.ArgumentParser, context_s: float) -> None:
    """The options every turn-taking model's training takes."""
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=48)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--gru-layers", type=int, default=2)
    p.add_argument("--context-s", type=float, default=context_s, help=f"seconds heard before the decision ({context_s:g})")
    p.add_argument("--frontend", choices=["mel", "whisper"], default="mel",
                   help="mel: log-mel learned from scratch (default); whisper: Whisper tiny.en's frozen encoder")
    p.add_argument("--pool", type=int, default=24000,
                   help="with --frontend whisper: examples heard once through the encoder and trained on (0: new "
                        "examples every step, about 25x slower; default 24000, 2.8 GB in the run folder)")
    p.add_argument("--row-mask", action="store_true",
                   help="with --frontend whisper and a pool: SpecAugment-style time and channel masks on the encoder's "
                        "rows of every training example, drawn afresh (against learning the pool by heart)")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--limit", type=int, default=0, help="records per split (0: all)")
    p.add_argument("--minutes", type=float, default=None, help="stop and save after this much wall time")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)


def register(subparsers, registered: dict) -> None:
    from voice.cli import command_group

    train = command_group(subparsers, registered, "train", "train a model")
    p = train.add_parser("turn", help="train the end-of-turn model on the paused-turn set (resumable)")
    p.add_argument("--turns", default="data/turns/v2", help="paused-turn set (voice data turns)")
    p.add_argument("--out", default="runs/turn/cpu", help="run folder; resumes when it holds trainer.pt")
    p.add_argument("--short-replies", default="data/barge/v1",
                   help="barge-in set whose acknowledgements ('yes', 'okay') are whole turns too ('' for none)")
    p.add_argument("--voice-variants", type=int, default=0,
                   help="also train on N Praat voice changes of every question (vocal tract and pitch; default 0)")
    p.add_argument("--holdout-voices", default="",
                   help="comma-separated training voices left out of training; validation is then all of their "
                        "questions (voices never heard, as on the test split) instead of the validation split")
    p.add_argument("--inner-pauses", action="store_true",
                   help="also train on the questions and prefixes cut where a pause inside them starts (a comma, "
                        "a filler), labelled not over: the speech goes on after it")
    add_model_arguments(p, context_s=3.0)
    p.set_defaults(func=_train)

    evaluate_parser = command_group(subparsers, registered, "eval", "evaluate a model")
    p = evaluate_parser.add_parser("turn", help="the end-of-turn model per voice and pause kind on a split")
    p.add_argument("model", nargs="?", default="models/turn", help="a model folder or turn.pt (default: models/turn)")
    p.add_argument("--turns", default="data/turns/v2")
    p.add_argument("--short-replies", default="data/barge/v1", help="barge-in set for the one-word turns ('' for none)")
    p.add_argument("--split", default="test", choices=["test", "validation", "train"])
    p.add_argument("--voices", default="", help="only these voices (comma-separated); with --split validation, "
                   "all their questions: the validation of a model trained with --holdout-voices")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--pause-ms", type=float, default=200.0, help="silence at which the model is first asked")
    p.add_argument("--max-silence-ms", type=float, default=1500.0, help="silence that ends the turn regardless")
    p.add_argument("--recheck-ms", type=float, default=96.0, help="asked again this often (0: once)")
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--sweep", default="", help="comma-separated thresholds: one line of the whole split per threshold")
    p.add_argument("--speculate", default="0", help="speculative-start threshold(s), comma-separated: when the answer "
                   "starts, how many answers started at pauses are taken back (0: none)")
    p.add_argument("--speculate-ms", type=float, default=0.0, help="with --speculate: the model is also asked at "
                   "this silence, only whether to start the answer (the VAD's turn_speculate_ms; 0: not)")
    p.add_argument("--late", default="", help="MS:THRESHOLD pairs, comma-separated: from MS of silence on, the lower "
                   "THRESHOLD decides (the VAD's turn_late_ms / turn_late_threshold); several are swept")
    p.add_argument("--pipeline-ms", type=float, default=1200.0,
                   help="for the sweep's ready columns: how long the pipeline takes to its first audio (cascade: ~1200)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--text", action="store_true",
                   help="also the words before each pause: the folder's text model (text_turn.json), as the VAD's "
                        "turn_text 1 (transcripts cached in <turns>/tail_transcripts.jsonl)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_eval)
