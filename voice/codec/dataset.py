"""Training audio for the codec: read a corpus (or a packed copy of it) and draw random crops."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

PACK_INFO = "pack.json"
GROUPS = ("assistant", "user")  # the decoder mostly speaks the assistant's voice; the encoder hears everyone


@dataclass
class AudioPool:
    """All training audio of one group as one float32 array at 16 kHz (utterances joined by short gaps)."""

    audio: np.ndarray  # [N]
    seconds: float


def _read_wav(path: Path, sample_rate_hz: int) -> np.ndarray:
    import soundfile as sf

    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != sample_rate_hz:
        from voice.codec.codec import to_mono_rate

        audio = to_mono_rate(audio, rate, sample_rate_hz)
    return audio


def corpus_records(corpus_dir: Path, splits: tuple[str, ...] = ("train",)) -> list[dict]:
    from voice.data.manifest import read_manifest

    return [r for r in read_manifest(corpus_dir) if r["split"] in splits]


def load_corpus_pools(corpus_dirs: list[Path], sample_rate_hz: int, max_seconds: dict | None = None,
                      seed: int = 0) -> dict[str, AudioPool]:
    """Join the train-split utterances of corpora into one pool per role (assistant / user)."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {g: [] for g in GROUPS}
    seconds = {g: 0.0 for g in GROUPS}
    gap = np.zeros(sample_rate_hz // 10, np.float32)
    records = [(Path(d), r) for d in corpus_dirs for r in corpus_records(Path(d))]
    for index in rng.permutation(len(records)):
        root, record = records[index]
        group = "assistant" if record["role"] == "assistant" else "user"
        if max_seconds and seconds[group] >= max_seconds.get(group, float("inf")):
            continue
        path = root / record["wav"]
        if not path.exists():
            continue
        audio = _read_wav(path, sample_rate_hz)
        parts[group] += [audio, gap]
        seconds[group] += len(audio) / sample_rate_hz
    pools = {g: AudioPool(np.concatenate(p) if p else np.zeros(0, np.float32), seconds[g]) for g, p in parts.items()}
    logger.info("training audio: %s", {g: f"{p.seconds / 60:.1f} min" for g, p in pools.items()})
    return pools


def pack_pools(pools: dict[str, AudioPool], out_dir: Path, sample_rate_hz: int) -> dict:
    """Write the pools as 16-bit FLAC (compact, to ship training audio to another machine)."""
    import soundfile as sf

    out_dir.mkdir(parents=True, exist_ok=True)
    info = {"sample_rate_hz": sample_rate_hz, "groups": {}}
    for group, pool in pools.items():
        sf.write(str(out_dir / f"{group}.flac"), np.clip(pool.audio, -1, 1), sample_rate_hz, subtype="PCM_16")
        info["groups"][group] = {"file": f"{group}.flac", "seconds": round(pool.seconds, 1)}
    (out_dir / PACK_INFO).write_text(json.dumps(info, indent=1))
    return info


def load_pools(sources: list[Path], sample_rate_hz: int) -> dict[str, AudioPool]:
    """Pools from corpus folders (with manifest.jsonl) and/or packed folders (with pack.json), merged."""
    merged: dict[str, list[AudioPool]] = {g: [] for g in GROUPS}
    corpora = []
    for source in sources:
        source = Path(source)
        if (source / PACK_INFO).exists():
            info = json.loads((source / PACK_INFO).read_text())
            for group, entry in info["groups"].items():
                audio = _read_wav(source / entry["file"], sample_rate_hz)
                merged[group].append(AudioPool(audio, len(audio) / sample_rate_hz))
        elif (source / "manifest.jsonl").exists():
            corpora.append(source)
        else:
            raise FileNotFoundError(f"{source}: neither a corpus (manifest.jsonl) nor a packed folder ({PACK_INFO})")
    if corpora:
        for group, pool in load_corpus_pools(corpora, sample_rate_hz).items():
            merged[group].append(pool)
    pools = {}
    for group, items in merged.items():
        audio = np.concatenate([p.audio for p in items]) if items else np.zeros(0, np.float32)
        pools[group] = AudioPool(audio, len(audio) / sample_rate_hz)
    if sum(len(p.audio) for p in pools.values()) == 0:
        raise ValueError(f"no training audio found in {[str(s) for s in sources]}")
    return pools


class CropSampler:
    """Random crops [B, 1, segment] from the pools, a fraction `assistant_share` from the assistant's voice."""

    def __init__(self, pools: dict[str, AudioPool], segment_samples: int, assistant_share: float, seed: int = 0):
        self.pools = {g: p for g, p in pools.items() if len(p.audio) > segment_samples}
        if not self.pools:
            raise ValueError("training audio is shorter than one segment")
        self.segment = segment_samples
        self.share = assistant_share if "assistant" in self.pools and "user" in self.pools else None
        self.rng = np.random.default_rng(seed)

    def _one(self) -> np.ndarray:
        if self.share is None:
            group = next(iter(self.pools))
        else:
            group = "assistant" if self.rng.random() < self.share else "user"
        audio = self.pools[group].audio
        for _ in range(8):  # avoid crops that are nearly all silence
            start = int(self.rng.integers(0, len(audio) - self.segment))
            crop = audio[start: start + self.segment]
            if np.sqrt(np.mean(crop ** 2)) > 3e-3:
                break
        gain = 10 ** (self.rng.uniform(-6.0, 3.0) / 20)
        peak = float(np.abs(crop).max()) * gain
        return crop * gain * min(1.0, 0.99 / max(peak, 1e-9))

    def batch(self, batch_size: int) -> np.ndarray:
        return np.stack([self._one() for _ in range(batch_size)])[:, None].astype(np.float32)  # [B, 1, T]
