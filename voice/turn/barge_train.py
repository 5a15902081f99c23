"""`voice train barge` and `voice eval barge`: the barge-in model on the barge-in set.

While the assistant speaks, the VAD asks this model, once the user has spoken `barge_in_check_ms`
(from the speech's onset) and at every 32 ms window after, whether the sound is the user taking
the turn. Examples (`training_batch`):

- yes: an interruption (the question, or "Wait," "Stop." ... before it), cut 0.12-0.8 s after
  its start;
- no: a backchannel ("uh-huh", "yeah", "okay" ...), a noise burst (cough, knock, clap, door,
  breath, click), or the assistant's own answer coming back through the microphone.

Half of them sound over the assistant's echo (a microphone without echo cancellation hears it
under everything), most over a noise floor. The evaluation asks the model as the VAD does: an
interruption's latency is the speech heard at the first check that says yes; a false
interruption is any check that says yes during a backchannel, a noise or an echo.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from voice.turn.barge_data import NOISE_KINDS, as_echo, echo_rows, noise_burst, trim_leading_silence
from voice.turn.data import load_records, read_piece
from voice.turn.train import (add_voice_variants, augment, decision_ms, model_config, probabilities_by_owner, set_threads,
                              train_loop)

PIECES = ("interrupt_wav", "backchannel_wav")
CHECK_S = 0.16         # speech heard at the first check (the VAD's barge_in_check_ms, counted from the onset)
RECHECK_S = 0.032      # then at every window (barge_in_recheck_ms)
MAX_CHECK_S = 1.0      # the evaluation stops asking here (the VAD's fallback is later)


class BargeStore:
    """One split of the barge-in set in memory, with the corpus's assistant answers of that split."""

    def __init__(self, barge_dir: Path, corpus: Path, split: str | tuple[str, ...], limit: int = 0,
                 max_echoes: int = 300, voices: frozenset[str] | None = None,
                 exclude: frozenset[str] = frozenset()) -> None:
        """The records of `split` (or several), only those of `voices` when given and none of `exclude`; the
        echo examples come from the first split's assistant answers."""
        splits = (split,) if isinstance(split, str) else tuple(split)
        self.records = [r for s in splits for r in load_records(barge_dir, s)
                        if "interrupt_wav" in r and "backchannel_wav" in r
                        and (voices is None or r["voice"] in voices) and r["voice"] not in exclude]
        if limit:
            self.records = self.records[:limit]
        if not self.records:
            raise ValueError(f"no {split} records in {barge_dir}")
        # timed from the speech's onset, as the VAD times it (flite's clips open with up to 300 ms of silence)
        self.audio = {r[k]: trim_leading_silence(read_piece(barge_dir, r[k])) for r in self.records for k in PIECES}
        echoes = echo_rows(corpus, splits[0])[: limit or max_echoes]
        if not echoes:
            raise ValueError(f"no {splits[0]} assistant answers in {corpus} for the echo examples")
        self.echoes = [read_piece(corpus, rel) for rel in echoes]
        self.variants = 0

    def add_voice_variants(self, n: int, seed: int = 0, progress: bool = True) -> None:
        """`n` Praat voice changes of every record's interruption and backchannel (one voice per record)."""
        add_voice_variants(self.records, self.audio, PIECES, n, seed, progress)
        self.variants = n

    def piece(self, record: dict, key: str, variant: int = 0) -> np.ndarray:
        return self.audio[f"{record[key]}#{variant}" if variant else record[key]]


def _crop_speech(piece: np.ndarray, heard_s: float) -> np.ndarray:
    return piece[: int(heard_s * 16000)]


def _background(store: BargeStore, rng: np.random.Generator, n: int) -> np.ndarray:
    """What the microphone hears besides the user: the assistant's echo half of the time, else nothing."""
    if rng.random() < 0.5:
        return np.zeros(n, np.float32)
    echo = as_echo(store.echoes[rng.integers(len(store.echoes))], rng)
    if len(echo) < n:
        echo = np.concatenate([echo, np.zeros(n - len(echo), np.float32)])
    start = rng.integers(0, len(echo) - n + 1)
    return echo[start: start + n]


def example(store: BargeStore, rng: np.random.Generator, context: int, label: int,
            kind: str | None = None, heard_s: float | None = None) -> tuple[np.ndarray, str]:
    """One example of `label` (1: interruption) heard for `heard_s`; returns (audio, kind)."""
    record = store.records[rng.integers(len(store.records))]
    variant = int(rng.integers(store.variants + 1)) if store.variants else 0
    if label == 1:
        kind = "interrupt"
        sound = _crop_speech(store.piece(record, "interrupt_wav", variant), heard_s or rng.uniform(0.12, 0.8))
    else:
        kind = kind or rng.choice(["backchannel", "backchannel", "noise", "echo"])
        if kind == "backchannel":
            piece = store.piece(record, "backchannel_wav", variant)
            sound = _crop_speech(np.concatenate([piece, np.zeros(4800, np.float32)]),
                                 heard_s or rng.uniform(0.12, len(piece) / 16000 + 0.3))
        elif kind == "noise":
            sound = noise_burst(NOISE_KINDS[rng.integers(len(NOISE_KINDS))], rng)
            sound = _crop_speech(sound, heard_s or rng.uniform(0.04, len(sound) / 16000 + 0.1))
        else:   # the assistant's own voice, loud enough to pass the VAD
            echo = as_echo(store.echoes[rng.integers(len(store.echoes))], rng) * np.float32(rng.uniform(2, 6))
            start = rng.integers(0, max(1, len(echo) - 16000))
            sound = np.clip(echo[start: start + int((heard_s or rng.uniform(0.2, 1.5)) * 16000)], -1, 1)
    lead = np.zeros(max(0, context - len(sound)), np.float32)
    audio = np.concatenate([lead, sound])[-context:]
    audio = audio + _background(store, rng, len(audio))
    return audio.astype(np.float32), kind


def training_batch(store: BargeStore, rng: np.random.Generator, size: int, context: int) -> tuple[np.ndarray, np.ndarray]:
    from voice.turn.model import fit_context

    xs, ys = [], []
    for _ in range(size):
        label = int(rng.random() < 0.5)
        audio, _ = example(store, rng, context, label)
        xs.append(fit_context(augment(audio, rng), context))   # a change of speed changes the length
        ys.append(label)
    return np.stack(xs), np.asarray(ys, np.float32)


def check_times(length_s: float, check_s: float = CHECK_S, recheck_s: float = RECHECK_S) -> list[float]:
    """When the VAD asks about a sound of `length_s`: at `check_s` of speech, then every `recheck_s`."""
    times, t = [], check_s
    while t <= min(length_s, MAX_CHECK_S) + 1e-9:
        times.append(round(t, 4))
        t += recheck_s
    return times or [round(check_s, 4)]


def parse_schedules(text: str) -> list[tuple[float, float]]:
    """'200:96,160:32' -> [(0.2, 0.096), (0.16, 0.032)]: the first check and the interval after it, in ms."""
    out = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        first, _, every = item.partition(":")
        try:
            check_s, recheck_s = float(first) / 1000, float(every or RECHECK_S * 1000) / 1000
        except ValueError:
            raise ValueError(f"a schedule is FIRST_MS:EVERY_MS, got {item!r}") from None
        if not (0 < check_s <= MAX_CHECK_S and recheck_s > 0):
            raise ValueError(f"a schedule needs 0 < FIRST_MS <= {MAX_CHECK_S * 1000:.0f} and EVERY_MS > 0, got {item!r}")
        out.append((check_s, recheck_s))
    return out


def evaluate(model, store: BargeStore, threshold: float = 0.5, seed: int = 0, cache: dict | None = None) -> dict:
    """Per kind and voice: interruptions caught and how fast, false interruptions."""
    return summarize(*check_probabilities(model, store, seed, cache), threshold)


def check_probabilities(model, store: BargeStore, seed: int = 0, cache: dict | None = None,
                        schedules: list[tuple[float, float]] | None = None) -> tuple[list, dict]:
    """The evaluation's cases (record, kind, check times, echo under it, length) and P(interruption) at each check.

    The check times are those of every schedule in `schedules` (first check, interval; default the
    VAD's), merged; `summarize(..., schedule=...)` reads one schedule's checks from them."""
    schedules = schedules or [(CHECK_S, RECHECK_S)]

    def times_of(length_s: float) -> list[float]:
        return sorted({t for check_s, recheck_s in schedules for t in check_times(length_s, check_s, recheck_s)})

    rng = np.random.default_rng(seed)
    context = model.config.context_samples
    rows, clips, owners = [], [], []
    for i, record in enumerate(store.records):
        cases = [("interrupt", store.audio[record["interrupt_wav"]]), ("backchannel", store.audio[record["backchannel_wav"]]),
                 ("noise", noise_burst(NOISE_KINDS[i % len(NOISE_KINDS)], rng))]
        echo = as_echo(store.echoes[i % len(store.echoes)], rng) * np.float32(4.0)
        cases.append(("echo", np.clip(echo[: 16000], -1, 1)))
        with_echo = i % 2 == 1     # every other record: the assistant's voice under the user's
        for kind, sound in cases:
            background = None
            if with_echo and kind != "echo":
                background = as_echo(store.echoes[(i + 7) % len(store.echoes)], rng)
            for t in times_of(len(sound) / 16000):
                audio = np.concatenate([np.zeros(context, np.float32), sound[: int(t * 16000)]])[-context:]
                if background is not None:
                    bg = np.concatenate([background, np.zeros(context, np.float32)])[:context]
                    audio = audio + bg
                clips.append(audio)
                owners.append(len(rows))
            rows.append((record, kind, times_of(len(sound) / 16000), with_echo, len(sound) / 16000))
    return rows, probabilities_by_owner(model, clips, owners, "eval barge", cache=cache)


def summarize(rows: list, per_row: dict, threshold: float, schedule: tuple[float, float] | None = None) -> dict:
    """Per kind and voice at `threshold`; with `schedule` (first check, interval), only that schedule's checks."""
    groups: dict[str, dict] = defaultdict(lambda: {"n": 0, "yes": 0, "latencies_ms": []})
    for i, (record, kind, all_times, with_echo, length_s) in enumerate(rows):
        asked = set(check_times(length_s, *schedule)) if schedule else None
        times, says = [], []
        for t, p in zip(all_times, per_row[i]):
            if asked is None or t in asked:
                times.append(t)
                says.append(p >= threshold)
        for key in (f"kind:{kind}", f"voice:{record['voice']}:{kind}", f"echo_under:{with_echo}:{kind}"):
            g = groups[key]
            g["n"] += 1
            g["yes"] += int(any(says))
            if kind == "interrupt" and any(says):
                g["latencies_ms"].append(1000 * next(t for t, s in zip(times, says) if s))
    out = {}
    for key, g in sorted(groups.items()):
        lat = g["latencies_ms"]
        out[key] = {"n": g["n"], "interrupts_rate": round(g["yes"] / g["n"], 4),
                    "latency_p50_ms": round(float(np.percentile(lat, 50)), 1) if lat else None,
                    "latency_p95_ms": round(float(np.percentile(lat, 95)), 1) if lat else None}
    caught = out.get("kind:interrupt", {}).get("interrupts_rate", 0.0)
    false = [out[k]["interrupts_rate"] for k in ("kind:backchannel", "kind:noise", "kind:echo") if k in out]
    out["summary"] = {"caught": caught, "false_interruption": round(float(np.mean(false)), 4) if false else None,
                      "threshold": threshold}
    if schedule:
        out["summary"]["schedule_ms"] = [round(1000 * schedule[0], 1), round(1000 * schedule[1], 1)]
    return out


def format_report(result: dict, speed: dict | None = None) -> str:
    s = result["summary"]
    lines = [f"threshold {s['threshold']:.2f}: interruptions caught {s['caught']:.1%}, false interruptions "
             f"{s['false_interruption']:.1%} (mean of backchannels, noises, echo)",
             f"{'group':46s} {'n':>5s} {'says yes':>9s} {'p50 ms':>7s} {'p95 ms':>7s}"]
    for key, r in result.items():
        if key == "summary":
            continue
        lines.append(f"{key:46s} {r['n']:5d} {100 * r['interrupts_rate']:8.1f}% "
                     f"{'-' if r['latency_p50_ms'] is None else int(r['latency_p50_ms']):>7} "
                     f"{'-' if r['latency_p95_ms'] is None else int(r['latency_p95_ms']):>7}")
    if speed:
        lines.append(f"one decision on one core: p50 {speed['p50_ms']} ms, p95 {speed['p95_ms']} ms")
    return "\n".join(lines)


def _train(args: argparse.Namespace) -> int:
    barge, corpus = Path(args.barge), Path(args.corpus)
    held = frozenset(v.strip() for v in args.holdout_voices.split(",") if v.strip())
    train_store = BargeStore(barge, corpus, "train", args.limit, exclude=held)
    if args.voice_variants:
        train_store.add_voice_variants(args.voice_variants, args.seed)
    if held:   # validate on voices never trained on: all their records, training and validation phrasings
        val_store = BargeStore(barge, corpus, ("validation", "train"), args.limit, voices=held)
    else:
        val_store = BargeStore(barge, corpus, "validation", args.limit)
    print(f"[barge] {len(train_store.records)} train / {len(val_store.records)} validation utterances"
          + (f" (validation: the held-out voices {', '.join(sorted(held))})" if held else ""), flush=True)

    cache: dict = {}

    def validate(model) -> tuple[float, dict]:
        r = evaluate(model, val_store, cache=cache)["summary"]
        return r["caught"] - 2 * r["false_interruption"], {"val_caught": r["caught"], "val_false": r["false_interruption"]}

    return train_loop(args, model_config(args), lambda rng, size, context: training_batch(train_store, rng, size, context),
                      validate, "barge", "barge_in.pt")


def _eval(args: argparse.Namespace) -> int:
    from voice.turn.model import BARGE_IN_WEIGHTS, DecisionModel

    try:
        schedules = parse_schedules(args.schedules) if args.schedules else None
    except ValueError as exc:
        print(f"voice eval barge: --schedules: {exc}", file=sys.stderr)
        return 2
    set_threads(args.threads)
    model, _ = DecisionModel.load(Path(args.model), BARGE_IN_WEIGHTS)
    held = frozenset(v.strip() for v in args.voices.split(",") if v.strip()) or None
    splits = ("validation", "train") if held and args.split == "validation" else args.split
    store = BargeStore(Path(args.barge), Path(args.corpus), splits, args.limit, voices=held)
    rows, probs = check_probabilities(model, store, schedules=schedules)
    result = summarize(rows, probs, args.threshold, schedules[0] if schedules else None)
    speed = decision_ms(model, model.config.context_samples)
    if args.sweep or schedules:
        thresholds = [float(x) for x in args.sweep.split(",")] if args.sweep else [args.threshold]
        print(f"{'first:every':>11s} {'threshold':>9s} {'caught':>7s} {'false':>7s} {'backch.':>7s} {'noise':>7s} "
              f"{'echo':>7s} {'p50 ms':>7s} {'p95 ms':>7s} {'checks':>7s}")
        for schedule in schedules or [(CHECK_S, RECHECK_S)]:
            for t in thresholds:
                r = summarize(rows, probs, t, schedule)
                k = {name: r.get(f"kind:{name}", {}) for name in ("interrupt", "backchannel", "noise", "echo")}
                checks = sum(len(check_times(row[4], *schedule)) for row in rows) / max(1, len(rows))
                print(f"{1000 * schedule[0]:5.0f}:{1000 * schedule[1]:<5.0f} {t:9.2f} {100 * r['summary']['caught']:6.1f}% "
                      f"{100 * r['summary']['false_interruption']:6.1f}% "
                      + " ".join(f"{100 * k[n].get('interrupts_rate', 0):6.1f}%" for n in ("backchannel", "noise", "echo"))
                      + f" {k['interrupt'].get('latency_p50_ms') or 0:7.0f} {k['interrupt'].get('latency_p95_ms') or 0:7.0f}"
                      + f" {checks:7.1f}")
        return 0
    if args.json:
        print(json.dumps({"split": args.split, "groups": result, "decision": speed}))
    else:
        print(f"barge-in model {args.model} on the {args.split} split of {args.barge}")
        print(format_report(result, speed))
    return 0


def register(subparsers, registered: dict) -> None:
    from voice.cli import command_group
    from voice.turn.train import add_model_arguments

    train = command_group(subparsers, registered, "train", "train a model")
    p = train.add_parser("barge", help="train the barge-in model on the barge-in set (resumable)")
    p.add_argument("--barge", default="data/barge/v1", help="barge-in set (voice data barge)")
    p.add_argument("--corpus", default="data/corpus/v2", help="corpus of the assistant answers heard as echo")
    p.add_argument("--out", default="runs/barge/cpu", help="run folder; resumes when it holds trainer.pt")
    p.add_argument("--voice-variants", type=int, default=0,
                   help="also train on N Praat voice changes of every interruption and backchannel (default 0)")
    p.add_argument("--holdout-voices", default="",
                   help="comma-separated training voices left out of training; validation is then all of their "
                        "records (voices never heard, as on the test split) instead of the validation split")
    add_model_arguments(p, context_s=1.5)
    p.set_defaults(func=_train)

    evaluate_parser = command_group(subparsers, registered, "eval", "evaluate a model")
    p = evaluate_parser.add_parser("barge", help="the barge-in model per kind and voice on a split")
    p.add_argument("model", nargs="?", default="models/turn", help="a model folder or barge_in.pt (default: models/turn)")
    p.add_argument("--barge", default="data/barge/v1")
    p.add_argument("--corpus", default="data/corpus/v2")
    p.add_argument("--split", default="test", choices=["test", "validation", "train"])
    p.add_argument("--voices", default="", help="only these voices (comma-separated); with --split validation, "
                   "all their records: the validation of a model trained with --holdout-voices")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--sweep", default="", help="comma-separated thresholds: one summary line per threshold")
    p.add_argument("--schedules", default="",
                   help="comma-separated FIRST_MS:EVERY_MS (e.g. 200:96,160:32): when the model is asked, from the "
                        "speech's onset (default: the VAD's 160:32); one summary line per schedule and threshold")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_eval)
