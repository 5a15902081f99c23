"""`voice train turn-text`: the text end-of-turn model and its fusion with the audio model.

1. Every example of the paused-turn set (`voice.turn.train.example_kinds`: whole questions, one-word
   turns, prefixes, questions said with their pause, opening hesitations) is transcribed as the VAD
   transcribes it at a pause (`voice.turn.transcript.tail_audio`, Whisper tiny.en, greedy). The
   transcripts are kept in `<turns>/tail_transcripts.jsonl` (resumable; `voice eval turn` reuses them).
2. The text model is fitted on the training voices' transcripts (the held-out voices left out).
3. The fusion weights (audio logit, text logit, bias) are fitted on the held-out voices, on the audio
   model's P(over) at every check the VAD would make, and a threshold sweep shows what the
   fused model does there against the audio model alone.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from voice.turn.train import OVER, PieceStore, TurnPolicy, check_probabilities, example_kinds, speech_of, summarize

CACHE = "tail_transcripts.jsonl"


def example_key(record: dict, kind: str) -> str:
    return f"{record['id']}|{kind}"


_EAR = None


def _init_worker() -> None:
    global _EAR
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from voice.speechlm.whisper_ear import WhisperEar

    _EAR = WhisperEar(threads=1)


def _transcribe(item: tuple[str, np.ndarray]) -> tuple[str, str]:
    from voice.turn.transcript import transcribe_tail

    key, speech = item
    return key, transcribe_tail(_EAR, speech)


def transcripts_for(store: PieceStore, turns_dir: Path, workers: int = 2, progress: bool = True) -> dict[str, str]:
    """The tail transcript of every example of `store`, from `<turns_dir>/tail_transcripts.jsonl` or made now
    (in `workers` processes, appended as they come: an interrupted run resumes where it stopped)."""
    from tqdm import tqdm

    from voice.turn.transcript import MAX_TOKENS, TAIL_S, TRAILING_SILENCE_S, WINDOW_S

    path = Path(turns_dir) / CACHE
    header = {"format": "voice-tail-transcripts", "tail_s": TAIL_S, "max_tokens": MAX_TOKENS,
              "trailing_silence_s": TRAILING_SILENCE_S, "window_s": WINDOW_S, "version": 1}
    done: dict[str, str] = {}
    if path.exists():
        lines = path.read_text().splitlines()
        if lines and json.loads(lines[0]) == header:
            for line in lines[1:]:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:   # a line cut by an interruption
                    continue
                done[row["key"]] = row["text"]
        else:
            path.unlink()
    if not path.exists():
        path.write_text(json.dumps(header) + "\n")
    todo = [(example_key(r, k), r, k) for r in store.records for k, _ in example_kinds(r)
            if example_key(r, k) not in done]
    if todo:
        items = ((key, speech_of(store, r, k)) for key, r, k in todo)
        bar = tqdm(total=len(todo), desc="tail transcripts", unit="example", disable=not progress)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(max(1, workers), initializer=_init_worker) as pool, path.open("a") as out:
            for key, text in pool.imap(_transcribe, items, chunksize=8):
                done[key] = text
                out.write(json.dumps({"key": key, "text": text}) + "\n")
                out.flush()
                bar.update(1)
        bar.close()
    return done


def fused_probabilities(rows: list, per_row: dict, text_model, texts: dict[str, str]) -> dict[int, list[float]]:
    """The audio model's P(over) at every check, fused with the example's tail transcript."""
    return {i: [text_model.fuse(p, texts[example_key(record, kind)]) for p in per_row[i]]
            for i, (record, kind, _label, _times) in enumerate(rows)}


def sweep_lines(rows: list, per_row: dict, policy: TurnPolicy, thresholds: list[float], label: str) -> list[str]:
    lines = []
    for t in thresholds:
        r = summarize(rows, per_row, replace(policy, threshold=t))["all"]
        lines.append(f"{label:>12s} {t:9.2f} {100 * r['premature_rate']:8.1f}% {r['end_silence_p50_ms']:8.0f} "
                     f"{r['end_silence_p95_ms']:8.0f} {r['ended_by_fallback']:11d} "
                     f"{100 * r['accuracy_first_check']:8.1f}%")
    return lines


def _train(args: argparse.Namespace) -> int:
    from voice.turn.model import DecisionModel
    from voice.turn.train import set_threads
    from voice.turn.transcript import TEXT_WEIGHTS, fit_fusion, train_text_model

    set_threads(args.threads)
    turns = Path(args.turns)
    short = Path(args.short_replies) if args.short_replies else None
    held = frozenset(v.strip() for v in args.holdout_voices.split(",") if v.strip())
    if not held:
        print("error: --holdout-voices is needed: the fusion is fitted on voices neither model trained on")
        return 2
    train_store = PieceStore(turns, "train", args.limit, short, exclude=held)
    val_store = PieceStore(turns, ("train", "validation"), args.limit, short, voices=held, originals_only=True)
    print(f"[turn-text] {len(train_store.records)} train questions; fusion on {len(val_store.records)} questions "
          f"of the held-out voices {', '.join(sorted(held))}", flush=True)
    texts = transcripts_for(train_store, turns, args.workers, not args.no_progress)
    texts.update(transcripts_for(val_store, turns, args.workers, not args.no_progress))

    examples = [(example_key(r, k), y) for r in train_store.records for k, y in example_kinds(r)]
    model = train_text_model([texts[k] for k, _ in examples], [y for _, y in examples], l2=args.l2)
    train_acc = np.mean([(model.probability(texts[k]) >= 0.5) == bool(y) for k, y in examples])
    val_examples = [(example_key(r, k), y) for r in val_store.records for k, y in example_kinds(r)]
    val_acc = np.mean([(model.probability(texts[k]) >= 0.5) == bool(y) for k, y in val_examples])
    print(f"[turn-text] text alone: {len(model.weights)} features; right {100 * train_acc:.1f}% on the training "
          f"examples, {100 * val_acc:.1f}% on the held-out voices' ({len(val_examples)})", flush=True)

    audio_model, _ = DecisionModel.load(Path(args.audio_model))
    policy = TurnPolicy()
    rows, per_row = check_probabilities(audio_model, val_store, policy, progress=not args.no_progress)
    p_audio, check_texts, labels = [], [], []
    for i, (record, kind, label, _times) in enumerate(rows):
        for p in per_row[i]:
            p_audio.append(p)
            check_texts.append(texts[example_key(record, kind)])
            labels.append(label)
    model.fusion = fit_fusion(model, p_audio, check_texts, labels)
    print(f"[turn-text] fusion: {json.dumps(model.fusion)}", flush=True)
    fused = fused_probabilities(rows, per_row, model, texts)
    thresholds = [float(x) for x in args.sweep.split(",")]
    print(f"{'model':>12s} {'threshold':>9s} {'premature':>9s} {'end p50':>8s} {'end p95':>8s} {'by fallback':>11s} "
          f"{'acc@1st':>9s}")
    for line in sweep_lines(rows, per_row, policy, thresholds, "audio") + sweep_lines(rows, fused, policy,
                                                                                     thresholds, "audio+text"):
        print(line)
    model.info = {"audio_model": str(args.audio_model), "turns": str(turns), "holdout_voices": sorted(held),
                  "train_examples": len(examples), "fusion_examples": len(val_examples),
                  "text_accuracy_train": round(float(train_acc), 4), "text_accuracy_holdout": round(float(val_acc), 4)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / TEXT_WEIGHTS)
    print(f"[turn-text] saved {out / TEXT_WEIGHTS}")
    return 0


def register(subparsers, registered: dict) -> None:
    from voice.cli import command_group

    train = command_group(subparsers, registered, "train", "train a model")
    p = train.add_parser("turn-text", help="the end-of-turn model's second opinion: the words before the pause")
    p.add_argument("--turns", default="data/turns/v2", help="paused-turn set (voice data turns)")
    p.add_argument("--short-replies", default="data/barge/v1", help="barge-in set for the one-word turns ('' for none)")
    p.add_argument("--audio-model", default="models/turn", help="the audio end-of-turn model it is fused with")
    p.add_argument("--holdout-voices", default="flite:slt,espeak:en-gb-x-gbclan+m2",
                   help="training voices the text model does not train on; the fusion is fitted on them (the "
                        "audio model must have been trained without them too)")
    p.add_argument("--out", default="runs/turn/text", help="folder for text_turn.json")
    p.add_argument("--l2", type=float, default=1e-3, help="L2 penalty of the text model")
    p.add_argument("--sweep", default="0.5,0.7,0.8,0.9,0.95", help="thresholds shown on the held-out voices")
    p.add_argument("--limit", type=int, default=0, help="records per split (0: all)")
    p.add_argument("--workers", type=int, default=2, help="transcribing processes")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_train)
