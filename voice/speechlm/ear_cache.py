"""`voice data ear`: cache the Whisper ear's features of a corpus's utterances, like the codec's token cache.

`<corpus>/ear/<ear id>/<shard>/<utterance id>.npy` holds float16 [frames, 384] (one row per 20 ms,
computed chunk by chunk exactly as `EarStream` does while a user speaks), with an `index.jsonl`.
Resumable: utterances already cached are skipped, and the index is written even when interrupted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from voice.codec.tokenize import _read_index     # the ear's index.jsonl has the token cache's format
from voice.speechlm.whisper_ear import EarConfig


def ear_id(config: EarConfig) -> str:
    """A folder name that changes whenever the features would."""
    return f"whisper-tiny.en-int8-c{config.chunk}x{config.context}"


def load_ear_index(corpus: Path, config: EarConfig) -> dict:
    return _read_index(Path(corpus) / "ear" / ear_id(config))


def load_features(corpus: Path, row: dict) -> np.ndarray:
    return np.load(Path(corpus) / row["path"]).astype(np.float32)


def cache_ear_features(corpus: Path, config: EarConfig = EarConfig(), splits: tuple[str, ...] = ("train", "validation", "test"),
                       roles: tuple[str, ...] = ("user",), threads: int = 2, limit: int | None = None) -> dict:
    """Encode every utterance of `splits` and `roles` once; later calls only add what is missing."""
    import soundfile as sf
    from tqdm import tqdm

    from voice.data.manifest import read_manifest
    from voice.speechlm.whisper_ear import SAMPLE_RATE_HZ, WhisperEar

    corpus = Path(corpus)
    folder = corpus / "ear" / ear_id(config)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ear.json").write_text(json.dumps({"model": "whisper tiny.en (CTranslate2, int8)", "chunk": config.chunk,
                                                 "context": config.context}, indent=1))
    index = _read_index(folder)
    records = [r for r in read_manifest(corpus) if r["split"] in splits and r["role"] in roles][:limit]
    ear = WhisperEar(threads=threads, config=config)
    encoded = 0
    try:
        for record in tqdm(records, desc=f"ear {ear_id(config)}"):
            if record["id"] in index and (corpus / index[record["id"]]["path"]).exists():
                continue
            audio, rate = sf.read(str(corpus / record["wav"]), dtype="float32")
            if rate != SAMPLE_RATE_HZ:
                raise ValueError(f"{record['wav']}: {rate} Hz, the ear reads {SAMPLE_RATE_HZ} Hz")
            if audio.ndim > 1:
                audio = audio.mean(1)
            feats = ear.encode_turn(audio)
            relative = f"ear/{ear_id(config)}/{Path(record['wav']).parent.name}/{record['id']}.npy"
            (corpus / relative).parent.mkdir(parents=True, exist_ok=True)
            np.save(corpus / relative, feats.astype(np.float16))
            index[record["id"]] = {"id": record["id"], "path": relative, "frames": int(len(feats))}
            encoded += 1
    finally:
        tmp = folder / "index.jsonl.tmp"
        tmp.write_text("".join(json.dumps(row) + "\n" for row in index.values()))
        tmp.replace(folder / "index.jsonl")
    return {"ear_id": ear_id(config), "folder": str(folder), "utterances": len(index), "encoded_now": encoded}


def _run(args) -> int:
    config = EarConfig(chunk=args.chunk, context=args.context)
    roles = ("user", "assistant") if args.roles == "both" else (args.roles,)
    result = cache_ear_features(Path(args.corpus), config, tuple(args.splits.split(",")), roles, args.threads, args.limit)
    print(json.dumps(result))
    return 0


def register(subparsers, registered: dict) -> None:
    from voice.cli import command_group

    data = command_group(subparsers, registered, "data", "build and check the corpus")
    p = data.add_parser("ear", help="cache the Whisper ear's features of a corpus's user turns (resumable)")
    p.add_argument("--corpus", default="data/corpus/v2")
    p.add_argument("--splits", default="train,validation,test", help="comma-separated splits")
    p.add_argument("--roles", default="user", choices=["user", "assistant", "both"])
    p.add_argument("--chunk", type=int, default=EarConfig.chunk, help="frames (20 ms) per encoder chunk")
    p.add_argument("--context", type=int, default=EarConfig.context, help="frames of earlier audio each chunk's window sees")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="at most this many utterances (a first look)")
    p.set_defaults(func=_run)
