"""Reference speech boundaries of clean clips from frame energy (independent of any VAD model)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferenceConfig:
    frame_ms: float = 20.0             # energy window
    hop_ms: float = 5.0                # boundary resolution
    band_low_hz: float = 150.0         # speech band measured (rumble below, hiss above are ignored)
    band_high_hz: float = 7000.0
    floor_percentile: float = 2.0      # noise floor = this percentile of the frame levels
    peak_percentile: float = 99.5      # speech peak = this percentile (ignores single clicks)
    max_range_db: float = 60.0         # floor is raised to peak - this (digital silence is not a floor)
    low_fraction: float = 0.2          # boundary threshold: floor + this share of (peak - floor) ...
    low_min_db: float = 9.0            # ... but at least this far above the floor
    high_fraction: float = 0.5         # a segment must reach floor + this share of (peak - floor) ...
    high_min_db: float = 15.0          # ... and at least this far above the floor
    bridge_ms: float = 30.0            # a weak tail (final fricative) dipping below low this briefly stays attached
    min_gap_ms: float = 150.0          # shorter dips (stop closures, word joins) do not split a segment
    min_segment_ms: float = 50.0       # shorter bursts are clicks, not speech


@dataclass(frozen=True)
class SpeechBoundaries:
    """Where speech is in one clip (seconds from its first sample)."""

    start_s: float
    end_s: float
    segments: tuple[tuple[float, float], ...]
    floor_db: float          # dBFS of the noise floor
    peak_db: float           # dBFS of the speech peak
    low_db: float            # boundary threshold used (dBFS)
    high_db: float           # core threshold used (dBFS)
    duration_s: float
    sample_rate_hz: int

    def longest_pause_s(self) -> float:
        gaps = [b[0] - a[1] for a, b in zip(self.segments, self.segments[1:])]
        return max(gaps, default=0.0)

    def to_json(self) -> dict:
        d = asdict(self)
        d["segments"] = [list(s) for s in self.segments]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "SpeechBoundaries":
        fields = {k: d[k] for k in cls.__dataclass_fields__}
        fields["segments"] = tuple(tuple(s) for s in d["segments"])
        return cls(**fields)


def frame_levels_db(pcm: np.ndarray, sample_rate_hz: int, frame_ms: float = 20.0, hop_ms: float = 5.0,
                    band_hz: tuple[float, float] = (150.0, 7000.0)) -> np.ndarray:
    """Level in dBFS of the speech band of Hann frames of `frame_ms` every `hop_ms` (frame i centred at i * hop).

    Limiting the band keeps rumble, DC bumps and hiss out of the floor, so weak fricatives stand out.
    """
    pcm = np.asarray(pcm, dtype=np.float64).reshape(-1)
    hop = max(1, int(round(sample_rate_hz * hop_ms / 1000)))
    win = max(hop, int(round(sample_rate_hz * frame_ms / 1000)))
    n = max(1, int(np.ceil(len(pcm) / hop)))
    padded = np.concatenate([np.zeros(win // 2), pcm, np.zeros(win)])
    idx = np.arange(n)[:, None] * hop + np.arange(win)[None, :]          # [n, win]
    window = np.hanning(win)
    spec = np.abs(np.fft.rfft(padded[idx] * window, axis=1)) ** 2         # [n, bins]
    freqs = np.fft.rfftfreq(win, 1.0 / sample_rate_hz)
    top = min(band_hz[1], 0.45 * sample_rate_hz)
    band = (freqs >= band_hz[0]) & (freqs <= top)
    mean_square = 2.0 * spec[:, band].sum(axis=1) / (win * np.sum(window ** 2))  # Parseval, one-sided
    return 10.0 * np.log10(mean_square + 1e-12)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of the True runs of a boolean array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _merge(runs: list[tuple[int, int]], max_gap_frames: int) -> list[tuple[int, int]]:
    """Join [start, end) runs separated by fewer than `max_gap_frames` frames."""
    merged: list[tuple[int, int]] = []
    for a, b in runs:
        if merged and a - merged[-1][1] < max_gap_frames:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


def find_speech(pcm: np.ndarray, sample_rate_hz: int, config: ReferenceConfig | None = None) -> SpeechBoundaries:
    """Speech segments of a clean clip by energy with hysteresis; raises ValueError if there is none.

    Runs of frames above the low (boundary) threshold are joined across dips shorter than
    `bridge_ms`; a joined run is speech if it reaches the high (core) threshold somewhere.
    Speech runs closer than `min_gap_ms` are merged, and those shorter than `min_segment_ms` dropped. Thresholds are relative to the clip's own floor and peak.
    """
    cfg = config or ReferenceConfig()
    if sample_rate_hz <= 0:
        raise ValueError("sample rate must be positive")
    if len(pcm) == 0:
        raise ValueError("empty audio")
    hop_s = max(1, int(round(sample_rate_hz * cfg.hop_ms / 1000))) / sample_rate_hz  # the hop actually used
    db = frame_levels_db(pcm, sample_rate_hz, cfg.frame_ms, cfg.hop_ms, (cfg.band_low_hz, cfg.band_high_hz))  # [frames]
    peak = float(np.percentile(db, cfg.peak_percentile))
    floor = max(float(np.percentile(db, cfg.floor_percentile)), peak - cfg.max_range_db)
    span = peak - floor
    low = floor + max(cfg.low_min_db, cfg.low_fraction * span)
    high = floor + max(cfg.high_min_db, cfg.high_fraction * span)
    if high > peak:
        raise ValueError(f"no speech found: peak {peak:.1f} dBFS is within {cfg.high_min_db} dB of the floor {floor:.1f}")
    runs = _merge(_runs(db >= low), int(cfg.bridge_ms / cfg.hop_ms))
    cores = [(a, b) for a, b in runs if db[a:b].max() >= high]
    merged = _merge(cores, int(np.ceil(cfg.min_gap_ms / cfg.hop_ms)))
    segs = [(a, b) for a, b in merged if (b - a) * hop_s >= cfg.min_segment_ms / 1000]
    if not segs:
        raise ValueError("no speech found: only bursts shorter than min_segment_ms")
    duration_s = len(pcm) / sample_rate_hz
    # frame i is centred at i*hop: a run [a, b) covers (a - 0.5) * hop .. (b - 0.5) * hop
    to_s = [(round(max(0.0, (a - 0.5) * hop_s), 4), round(min(duration_s, (b - 0.5) * hop_s), 4)) for a, b in segs]
    return SpeechBoundaries(start_s=to_s[0][0], end_s=to_s[-1][1], segments=tuple(to_s),
                            floor_db=round(floor, 2), peak_db=round(peak, 2), low_db=round(low, 2),
                            high_db=round(high, 2), duration_s=round(duration_s, 4), sample_rate_hz=sample_rate_hz)


def boundaries_of_file(path: str | Path, config: ReferenceConfig | None = None) -> SpeechBoundaries:
    from voice.audio import read_wav

    pcm, rate = read_wav(path)
    return find_speech(pcm, rate, config)


def write_reference_table(speech_dir: str | Path, out_path: str | Path, review_path: str | Path | None = None,
                          config: ReferenceConfig | None = None) -> dict:
    """Boundaries of every WAV in `speech_dir` as JSON, with a manual review's overrides and notes applied.

    Each file keeps the tool's own values under "tool"; "start_s" / "end_s" are the reviewed ones.
    """
    cfg = config or ReferenceConfig()
    files = sorted(Path(speech_dir).glob("*.wav"))
    if not files:
        raise FileNotFoundError(f"no .wav files in {speech_dir}")
    reviews = json.loads(Path(review_path).read_text())["files"] if review_path else {}
    unknown = set(reviews) - {f.name for f in files}
    if unknown:
        raise ValueError(f"review names files not in {speech_dir}: {sorted(unknown)}")
    out = {}
    for f in files:
        b = boundaries_of_file(f, cfg).to_json()
        review = reviews.get(f.name, {})
        entry = dict(b, tool={"start_s": b["start_s"], "end_s": b["end_s"]})
        for key in ("start_s", "end_s"):
            if key in review:
                entry[key] = float(review[key])
                entry["reviewed"] = True
        entry["note"] = review.get("note", "")
        out[f.name] = entry
    table = {"tool": "voice.bench.reference.find_speech", "config": asdict(cfg),
             "review": Path(review_path).name if review_path else None, "files": out}
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(json.dumps(table, indent=1) + "\n")
    return table


def load_reference_table(path: str | Path) -> dict[str, SpeechBoundaries]:
    """file name -> reviewed boundaries, from a table written by `write_reference_table`."""
    data = json.loads(Path(path).read_text())
    return {name: SpeechBoundaries.from_json(d) for name, d in data["files"].items()}
