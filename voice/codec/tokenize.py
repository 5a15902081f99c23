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


def variant_path(record: dict, codec_id: str, variant: int) -> str:
    """Where the codes of a voice variant of `record` are cached (relative to the corpus root)."""
    shard = Path(record["wav"]).parent.name
    return f"tokens/{codec_id}/variants/{shard}/{record['id']}.v{variant}.npy"


def load_variant_index(corpus: Path, codec_id: str) -> dict[str, list[dict]]:
    """utterance id -> its cached voice variants (rows of variants.jsonl)."""
    path = Path(corpus) / "tokens" / codec_id / "variants.jsonl"
    out: dict[str, list[dict]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                out.setdefault(row["id"], []).append(row)
    return out


def tokenize_user_variants(source: str, corpus: Path, variants: int, splits: tuple[str, ...] = ("train",),
                           limit: int | None = None, seed: int = 0, check: int = 0) -> dict:
    """Encode `variants` new-voice versions (voice.data.voice_variants) of every user utterance of
    `splits`; resumable. Only training splits should get them: held-out voices stay held out.
    `check` > 0: Whisper WER of that many variants against the corpus text, beside their originals'."""
    import soundfile as sf
    from tqdm import tqdm

    from voice.codec.loader import load_codec
    from voice.data.manifest import read_manifest
    from voice.data.voice_variants import change_voice, draw_variant

    if variants < 1:
        raise ValueError("variants must be at least 1")
    if set(splits) & {"validation", "test"}:
        raise ValueError("voice variants are for training splits only (held-out voices stay held out)")
    codec = load_codec(source)
    codec_id = cache_id(codec)
    folder = Path(corpus) / "tokens" / codec_id
    folder.mkdir(parents=True, exist_ok=True)
    done = {(row["id"], row["variant"]) for rows in load_variant_index(corpus, codec_id).values() for row in rows}
    records = [r for r in read_manifest(corpus) if r["split"] in splits and r["role"] == "user"][:limit]
    checked: list[tuple[str, np.ndarray, np.ndarray, int]] = []
    encoded = 0
    with open(folder / "variants.jsonl", "a") as index:
        for n, record in enumerate(tqdm(records, desc=f"voice variants x{variants} {codec_id}")):
            todo = [v for v in range(variants) if (record["id"], v) not in done]
            if not todo and len(checked) >= check:
                continue
            audio, rate = sf.read(str(Path(corpus) / record["wav"]), dtype="float32", always_2d=True)
            mono = audio[:, 0]
            for v in range(variants):
                rng = np.random.default_rng([seed, n, v])     # the same variant on every run
                params = draw_variant(rng)
                if (record["id"], v) in done:
                    if len(checked) < check:
                        checked.append((record["text"], mono, change_voice(mono, rate, **params), rate))
                    continue
                varied = change_voice(mono, rate, **params)
                if len(checked) < check:
                    checked.append((record["text"], mono, varied, rate))
                codes = codec.encode(varied[None], rate)
                relative = variant_path(record, codec_id, v)
                (Path(corpus) / relative).parent.mkdir(parents=True, exist_ok=True)
                np.save(Path(corpus) / relative, codes.astype(np.int16))
                index.write(json.dumps({"id": record["id"], "variant": v, "path": relative,
                                        "frames": int(codes.shape[1]), **params}) + "\n")
                index.flush()
                encoded += 1
    out = {"codec_id": codec_id, "utterances": len(records), "variants": variants, "encoded_now": encoded}
    if checked:
        out["check"] = _whisper_check(checked)
    return out


def _whisper_check(items: list[tuple[str, np.ndarray, np.ndarray, int]]) -> dict:
    """Whisper tiny.en WER of originals and their variants against the text: do the variants keep the words?"""
    import jiwer

    from voice.codec.evaluate import load_whisper, transcribe
    from voice.data.answers import normalize_text

    whisper = load_whisper()
    refs, orig, varied = [], [], []
    for text, a, b, rate in items:
        if rate != 16000:
            raise ValueError(f"the Whisper check reads 16 kHz corpus audio, not {rate} Hz")
        refs.append(normalize_text(text))
        orig.append(normalize_text(transcribe(whisper, a)))
        varied.append(normalize_text(transcribe(whisper, b)))
    return {"n": len(items), "wer_original": round(float(jiwer.wer(refs, orig)), 3),
            "wer_variants": round(float(jiwer.wer(refs, varied)), 3)}
