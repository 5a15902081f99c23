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


PACK_FORMATS = {  # name -> (file suffix, soundfile format, subtype)
    "flac": ("flac", "FLAC", "PCM_16"),  # lossless, about 140 kbit/s for 16 kHz speech
    "opus": ("ogg", "OGG", "OPUS"),  # lossy, about 30-40 kbit/s at the default quality: 4x more audio per MB
}


def pack_pools(pools: dict[str, AudioPool], out_dir: Path, sample_rate_hz: int, audio_format: str = "flac",
               opus_compression: float = 0.87) -> dict:
    """Write the pools as FLAC or Ogg/Opus files (compact, to ship training audio to another machine).

    Opus at about 35 kbit/s is far more faithful than the 4 kbit/s codec trained on it (waveform SNR
    about 25 dB), and lets a size-limited transfer carry four times as many hours of speech.
    """
    import soundfile as sf

    if audio_format not in PACK_FORMATS:
        raise ValueError(f"unknown pack format {audio_format!r}: one of {sorted(PACK_FORMATS)}")
    suffix, container, subtype = PACK_FORMATS[audio_format]
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {"sample_rate_hz": sample_rate_hz, "format": audio_format, "groups": {}}
    for group, pool in pools.items():
        path = out_dir / f"{group}.{suffix}"
        extra = {"compression_level": opus_compression} if audio_format == "opus" else {}
        sf.write(str(path), np.clip(pool.audio, -1, 1), sample_rate_hz, format=container, subtype=subtype, **extra)
        info["groups"][group] = {"file": path.name, "seconds": round(pool.seconds, 1), "bytes": path.stat().st_size}
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


SPEED_BASE = 16  # speed factors are n / 16 (resampled by the integer ratio n : 16)


def speed_ratios(low: float, high: float) -> list[int]:
    """Numerators n (speed n / 16) spanning [low, high], excluding 1.0."""
    if not 0.5 <= low <= high <= 2.0:
        raise ValueError(f"speed range must lie within 0.5..2.0, got {low}..{high}")
    return [n for n in range(int(np.ceil(low * SPEED_BASE)), int(np.floor(high * SPEED_BASE)) + 1) if n != SPEED_BASE]


class CropSampler:
    """Random crops [B, 1, segment] from the pools, a fraction `assistant_share` from the assistant's voice.

    With `speed_range`, a fraction `speed_prob` of the crops is played faster or slower (resampled by
    n : 16): pitch and formants shift together, as between speakers with shorter or longer vocal tracts,
    so a few training voices stand in for many.
    """

    def __init__(self, pools: dict[str, AudioPool], segment_samples: int, assistant_share: float, seed: int = 0,
                 speed_range: tuple[float, float] | None = None, speed_prob: float = 0.5):
        self.segment = segment_samples
        self.ratios = speed_ratios(*speed_range) if speed_range else []
        self.speed_prob = speed_prob if self.ratios else 0.0
        self._resamplers = self._make_resamplers(self.ratios)  # sinc kernels built once, not per crop
        longest = segment_samples * (max(self.ratios) / SPEED_BASE if self.ratios else 1.0) + 64
        self.pools = {g: p for g, p in pools.items() if len(p.audio) > longest}
        if not self.pools:
            raise ValueError("training audio is shorter than one segment")
        self.share = assistant_share if "assistant" in self.pools and "user" in self.pools else None
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def _make_resamplers(ratios: list[int]) -> dict:
        if not ratios:
            return {}
        import torchaudio.transforms as T

        return {n: T.Resample(orig_freq=n, new_freq=SPEED_BASE) for n in ratios}

    def _crop(self, piece: np.ndarray, n: int) -> np.ndarray:
        """The first `segment` samples of `piece` played at speed n / 16."""
        if n == SPEED_BASE:
            return piece[: self.segment]
        import torch

        return self._resamplers[n](torch.from_numpy(np.ascontiguousarray(piece))).numpy()[: self.segment]

    def _one(self) -> np.ndarray:
        if self.share is None:
            group = next(iter(self.pools))
        else:
            group = "assistant" if self.rng.random() < self.share else "user"
        audio = self.pools[group].audio
        n = int(self.rng.choice(self.ratios)) if self.rng.random() < self.speed_prob else SPEED_BASE
        span = int(np.ceil(self.segment * n / SPEED_BASE)) + 32  # + the resampling filter's margin
        for _ in range(8):  # avoid crops that are nearly all silence
            start = int(self.rng.integers(0, len(audio) - span))
            crop = self._crop(audio[start: start + span], n)
            if np.sqrt(np.mean(crop ** 2)) > 3e-3:
                break
        gain = 10 ** (self.rng.uniform(-6.0, 3.0) / 20)
        peak = float(np.abs(crop).max()) * gain
        return crop * gain * min(1.0, 0.99 / max(peak, 1e-9))

    def batch(self, batch_size: int) -> np.ndarray:
        return np.stack([self._one() for _ in range(batch_size)])[:, None].astype(np.float32)  # [B, 1, T]
