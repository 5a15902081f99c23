"""Encode a corpus into codec codes for the speech LM, cached under <corpus>/tokens/<codec id>/."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def cache_id(codec) -> str:
    """A folder name that changes whenever the codes would: codec identity and number of codebooks."""
    name = getattr(codec, "cache_id", None) or codec.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{name}-k{codec.num_codebooks}")


def load_tokens(corpus: Path, codec_id: str, utterance_id: str) -> np.ndarray:
    """Cached codes of one utterance as int64 [K, T]."""
    index = _read_index(Path(corpus) / "tokens" / codec_id)
    if utterance_id not in index:
        raise KeyError(f"{utterance_id} is not tokenized with {codec_id}")
    return np.load(Path(corpus) / index[utterance_id]["path"]).astype(np.int64)


def _read_index(folder: Path) -> dict:
    path = folder / "index.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["id"]: row for row in rows}


def tokenize_corpus(source: str, corpus: Path, num_codebooks: int | None = None,
                    splits: tuple[str, ...] = ("train", "validation", "test"), limit: int | None = None) -> dict:
    """Encode every utterance of `splits` once; later calls only encode utterances not cached yet."""
    import soundfile as sf
    from tqdm import tqdm

    from voice.codec.loader import load_codec
    from voice.data.manifest import read_manifest, tokens_path

    codec = load_codec(source, num_codebooks)
    codec_id = cache_id(codec)
    folder = corpus / "tokens" / codec_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "codec.json").write_text(json.dumps({"source": source, **codec.describe(),
                                                   "cache_id": codec_id}, indent=1))
    index = _read_index(folder)
    records = [r for r in read_manifest(corpus) if r["split"] in splits][:limit]
    encoded = 0
    try:
        for record in tqdm(records, desc=f"tokenize {codec_id}"):
            if record["id"] in index and (corpus / index[record["id"]]["path"]).exists():
                continue
            audio, rate = sf.read(str(corpus / record["wav"]), dtype="float32", always_2d=True)
            codes = codec.encode(audio.T, rate)  # [K, T]
            relative = tokens_path(record, codec_id)
            (corpus / relative).parent.mkdir(parents=True, exist_ok=True)
            np.save(corpus / relative, codes.astype(np.int16))
            index[record["id"]] = {"id": record["id"], "path": relative, "frames": int(codes.shape[1])}
            encoded += 1
    finally:  # keep what was done, so an interrupted run resumes
        tmp = folder / "index.jsonl.tmp"
        tmp.write_text("".join(json.dumps(row) + "\n" for row in index.values()))
        tmp.replace(folder / "index.jsonl")
    frames = sum(row["frames"] for row in index.values())
    return {"codec_id": codec_id, "tokens_dir": str(folder), "utterances": len(index), "encoded_now": encoded,
            "cached": len(records) - encoded, "frames": frames,
            "hours": round(frames / codec.frame_rate_hz / 3600, 3), "codec": codec.describe()}
