"""`voice lm export`: a training checkpoint as a shippable model folder (float16 weights, tokenizer, config).

The folder loads with `SpeechLM.from_pretrained(folder, dtype=torch.float32)` like the training
checkpoint, without the optimizer state; `--split-mb` also writes it as a tar cut into parts (how
a GPU machine sends a checkpoint back under its per-file limit).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

from voice.speechlm.lexicon import SNAP_DISTANCE


def export_checkpoint(checkpoint: Path, out: Path) -> dict:
    """Write `checkpoint` (a training checkpoint folder) to `out` with float16 weights; returns a summary."""
    import torch

    from voice.speechlm.cli import load_tokenizer
    from voice.speechlm.model import SpeechLM

    model = SpeechLM.from_pretrained(checkpoint, dtype=torch.float32)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.to(torch.float16).save_pretrained(tmp)
    load_tokenizer(str(checkpoint)).save_pretrained(tmp)
    history = Path(checkpoint) / "history.json"
    if history.exists():
        shutil.copy(history, tmp / "history.json")
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    weights = out / "model.safetensors"
    return {"out": str(out), "parameters": sum(p.numel() for p in model.parameters()),
            "weights_mb": round(weights.stat().st_size / 2**20, 1),
            "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "step": json.loads(history.read_text())[-1]["step"] if history.exists() else None}


def split_tar(folder: Path, prefix: Path, part_mb: float) -> list[Path]:
    """`folder` as a tar archive cut into parts of at most `part_mb` MB: prefix.00, prefix.01, ..."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname=folder.name)
    data, size, parts = buffer.getvalue(), int(part_mb * 2**20), []
    for i in range(0, len(data), size):
        part = prefix.with_name(f"{prefix.name}.{i // size:02d}")
        part.write_bytes(data[i:i + size])
        parts.append(part)
    return parts


def _export(args) -> int:
    summary = export_checkpoint(Path(args.checkpoint), Path(args.out))
    if args.split_mb:
        summary["parts"] = [str(p) for p in split_tar(Path(args.out), Path(args.out).with_suffix(".tar"), args.split_mb)]
    print(json.dumps(summary, indent=1))
    return 0


def _words(args) -> int:
    from voice.speechlm.lexicon import training_words, write_words

    words = training_words(Path(args.corpus))
    write_words(Path(args.checkpoint), words, args.distance, args.by)
    print(f"{args.checkpoint}: snaps heard words to the {len(words)} words of {args.corpus}'s train split "
          f"(by {args.by}; distance at most {args.distance})")
    return 0


def register(subparsers, registered: dict) -> None:
    from voice.cli import command_group

    lm = command_group(subparsers, registered, "lm", "speech LM utilities")
    p = lm.add_parser("export", help="a training checkpoint as a shippable float16 model folder")
    p.add_argument("checkpoint", help="a training checkpoint folder (runs/lm/NAME/checkpoint)")
    p.add_argument("--out", default="models/speechlm", help="the model folder to write")
    p.add_argument("--split-mb", type=float, default=0.0, help="also write OUT.tar.00, .01, ... of at most this size")
    p.set_defaults(func=_export)
    p = lm.add_parser("words", help="store the train split's words in a model that reads heard text, to snap what it "
                                    "hears to them (voice.speechlm.lexicon)")
    p.add_argument("checkpoint", help="a checkpoint or model folder (config.json is rewritten)")
    p.add_argument("--corpus", default="data/corpus/v2")
    p.add_argument("--distance", type=float, default=SNAP_DISTANCE,
                   help="snap a word to the nearest known one when at most this share of its letters differ")
    p.add_argument("--by", choices=["spelling", "ctc"], default="spelling",
                   help="choose the known word nearest by letters, or likeliest under the encoder's CTC posteriors")
    p.set_defaults(func=_words)
