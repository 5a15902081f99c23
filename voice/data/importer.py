"""`voice data import`: real recordings with transcripts into the corpus format (16 kHz mono PCM16 + manifest)."""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path

import numpy as np

from voice.data import manifest as mf

log = logging.getLogger(__name__)

AUDIO_KEYS = ("file", "wav", "path", "audio", "audio_path", "filename", "audio_filepath")
TEXT_KEYS = ("transcript", "text", "sentence", "transcription", "normalized_text")
MANIFEST_NAMES = ("manifest.tsv", "manifest.csv", "manifest.jsonl", "metadata.csv", "transcripts.tsv")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


class ImportError_(ValueError):
    """The source cannot be imported (missing files, no transcripts, unknown columns)."""


def _pick(row: dict, keys: tuple[str, ...], what: str, source: Path) -> str:
    for key in keys:
        if row.get(key) not in (None, ""):
            return str(row[key])
    raise ImportError_(f"{source}: no {what} column (looked for {', '.join(keys)}; found {', '.join(row)})")


def _rows_from_manifest(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    text = path.read_text(encoding="utf-8")
    first = text.splitlines()[0] if text else ""
    if path.name == "metadata.csv" and "|" in first:  # LJSpeech: id|text|normalized text, no header
        return [{"file": f"wavs/{p[0]}.wav", "text": p[-1]} for p in (line.split("|") for line in text.splitlines()) if p[0]]
    delimiter = "\t" if path.suffix == ".tsv" or "\t" in first else ","
    return list(csv.DictReader(text.splitlines(), delimiter=delimiter))


def find_pairs(source: str | Path) -> list[tuple[Path, str, str]]:
    """(audio path, transcript, speaker) for every recording in a folder or manifest."""
    source = Path(source)
    if not source.exists():
        raise ImportError_(f"{source} does not exist")
    if source.is_dir():
        manifest = next((source / n for n in MANIFEST_NAMES if (source / n).exists()), None)
        if manifest is None:
            return _pairs_from_sidecars(source)
        source = manifest
    rows = _rows_from_manifest(source)
    if not rows:
        raise ImportError_(f"{source} lists no recordings")
    pairs = []
    for row in rows:
        audio = source.parent / _pick(row, AUDIO_KEYS, "audio file", source)
        if not audio.exists():
            raise ImportError_(f"{source}: audio file {audio} is missing")
        pairs.append((audio, _pick(row, TEXT_KEYS, "transcript", source).strip(), str(row.get("speaker") or "")))
    return pairs


def _pairs_from_sidecars(folder: Path) -> list[tuple[Path, str, str]]:
    audio = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not audio:
        raise ImportError_(f"{folder} holds no audio files ({', '.join(AUDIO_SUFFIXES)}) and no manifest ({', '.join(MANIFEST_NAMES)})")
    pairs = []
    for path in audio:
        txt = path.with_suffix(".txt")
        if not txt.exists():
            raise ImportError_(f"{path} has no transcript {txt.name} (or put a manifest.tsv with file and transcript columns)")
        pairs.append((path, txt.read_text(encoding="utf-8").strip(), ""))
    return pairs


def load_mono_int16(path: Path, sample_rate_hz: int) -> np.ndarray:
    """Any soundfile-readable recording as mono int16 at `sample_rate_hz` (channels averaged)."""
    import soundfile as sf

    from voice.data.voices import sox_convert

    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
    except RuntimeError as exc:
        raise ImportError_(f"cannot read audio {path}: {exc}") from exc
    mono = np.clip(audio.mean(axis=1) * 32768.0, -32768, 32767).astype(np.int16)
    return sox_convert(mono, int(rate), sample_rate_hz)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def import_recordings(source: str | Path, out_dir: str | Path, split: str = "test", name: str = "",
                      sample_rate_hz: int = 16000) -> dict:
    """Import recordings into `out_dir` (a folder of imported corpora); returns the folder's summary."""
    import soundfile as sf
    from tqdm import tqdm

    pairs = find_pairs(source)
    name = _slug(name or Path(source).resolve().name.removesuffix(Path(source).suffix) or "real")
    out = Path(out_dir)
    info_path = out / mf.BUILD_INFO
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    if "config" in info:
        raise ImportError_(f"{out} is a synthetic corpus; import real recordings into their own folder")
    try:
        (out / "manifests").mkdir(parents=True, exist_ok=True)
        (out / "wav" / f"import_{name}").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot write the corpus folder {out}: {exc.strerror or exc}") from exc
    records = []
    for index, (path, text, speaker) in enumerate(tqdm(pairs, desc=f"import {name}", unit="file")):
        if not text:
            raise ImportError_(f"{path}: empty transcript")
        audio = load_mono_int16(path, sample_rate_hz)
        uid = f"{name}_{index:05d}_{_slug(path.stem)}"
        rel = f"wav/import_{name}/{uid}.wav"
        sf.write(str(out / rel), audio, sample_rate_hz, subtype="PCM_16")
        records.append({
            "id": uid, "dialogue_id": uid, "turn_index": 0, "role": "user", "text": text, "intent": None,
            "expected": None, "phrasing": "", "voice": f"real:{name}/{speaker}" if speaker else f"real:{name}",
            "speaker": speaker or name, "speed": 1.0, "pitch_semitones": 0.0, "augment": {}, "split": split,
            "wav": rel, "duration_s": round(len(audio) / sample_rate_hz, 4), "sample_rate_hz": sample_rate_hz,
            "context": "", "tokens": None, "source": "real", "original": str(path),
        })
    mf.write_atomic(out / "manifests" / f"import_{name}.jsonl", mf.dumps(records))
    parts = sorted((out / "manifests").glob("import_*.jsonl"))
    mf.write_atomic(out / mf.MANIFEST, "".join(p.read_text(encoding="utf-8") for p in parts))
    summary = mf.summarize(mf.read_manifest(out))
    sources = dict(info.get("sources", {}))
    sources[name] = {"source": str(Path(source).resolve()), "utterances": len(records), "split": split}
    info = {"format": mf.FORMAT_NAME, "format_version": mf.FORMAT_VERSION, "status": "complete", "sources": sources}
    mf.write_atomic(info_path, json.dumps(info, indent=1, sort_keys=True) + "\n")
    mf.write_atomic(out / mf.SUMMARY, json.dumps(summary, indent=1, sort_keys=True) + "\n")
    log.info("imported %d recordings from %s into %s", len(records), source, out)
    return summary
