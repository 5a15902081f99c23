"""Audio helpers: PCM16 <-> float32 conversion, a streaming resampler, WAV reading and silence tests."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

MIN_SAMPLE_RATE_HZ = 8000
MAX_SAMPLE_RATE_HZ = 48000


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit PCM bytes -> float32 in [-1, 1). Raises ValueError on odd length."""
    if len(data) % 2:
        raise ValueError(f"PCM16 data must have an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(pcm: np.ndarray) -> bytes:
    """float32 in [-1, 1] -> little-endian PCM16 bytes (clipped; NaN becomes 0)."""
    x = np.nan_to_num(np.asarray(pcm, dtype=np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def rms_dbfs(pcm: np.ndarray) -> float:
    if len(pcm) == 0:
        return -120.0
    return 20.0 * math.log10(max(float(np.sqrt(np.mean(np.square(pcm, dtype=np.float64)))), 1e-6))


def first_non_silent_index(pcm: np.ndarray, threshold: float = 0.01) -> int | None:
    """Index of the first sample whose magnitude exceeds `threshold` (about -40 dBFS), or None."""
    hits = np.flatnonzero(np.abs(pcm) > threshold)
    return int(hits[0]) if len(hits) else None


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a WAV (any channel count) -> mono float32, sample rate. Clear errors for broken files."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise ValueError(f"cannot read audio file {path}: {exc}") from exc
    return data.mean(axis=1).astype(np.float32), int(rate)


def write_wav(path: str | Path, pcm: np.ndarray, sample_rate_hz: int) -> None:
    import soundfile as sf

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(pcm, -1, 1), sample_rate_hz, subtype="PCM_16")


def speed_perturb(audio: np.ndarray, factor: float, rate_hz: int = 16000) -> np.ndarray:
    """`audio` played `factor` times as fast (and higher) at the same sample rate: resampled from
    rate_hz * factor to rate_hz (Kaldi's speed perturbation; training data only)."""
    import torch
    import torchaudio.functional as AF

    if factor == 1.0:
        return audio
    wave = torch.from_numpy(np.ascontiguousarray(audio, np.float32))
    return AF.resample(wave, int(round(rate_hz * factor)), rate_hz).numpy()


def resample(pcm: np.ndarray, in_rate_hz: int, out_rate_hz: int) -> np.ndarray:
    """Whole-signal resampling with the same filter as the streaming resampler."""
    r = StreamingResampler(in_rate_hz, out_rate_hz)
    return np.concatenate([r.process(pcm), r.flush()])


@lru_cache(maxsize=32)
def _phase_filters(in_rate: int, out_rate: int, zero_crossings: int) -> tuple[np.ndarray, int]:
    """Windowed-sinc weights for every output phase: ([phases, taps], half-width in input samples)."""
    g = math.gcd(in_rate, out_rate)
    phases = out_rate // g
    cutoff = min(1.0, out_rate / in_rate) * 0.97  # a little below Nyquist against aliasing
    half = int(math.ceil(zero_crossings / cutoff))
    offsets = np.arange(-half + 1, half + 1)                       # [taps]
    frac = (np.arange(phases) * in_rate % out_rate) / out_rate     # [phases]
    d = frac[:, None] - offsets[None, :]                           # [phases, taps]
    window = np.kaiser(2 * half + 1, 8.0)[np.clip(np.round(d + half).astype(int), 0, 2 * half)]
    weights = cutoff * np.sinc(cutoff * d) * window
    weights /= weights.sum(axis=1, keepdims=True)
    return weights.astype(np.float32), half


class StreamingResampler:
    """Band-limited (windowed-sinc) resampling of a stream, chunk by chunk.

    Output sample k sits at input position k * in / out, computed in exact integer arithmetic,
    so any chunking of the input gives bit-identical output to one whole pass. The signal is
    taken as silent before its start; `flush()` pads silence after its end. Latency: `half`
    input samples of lookahead (8 zero crossings, 0.25-1.5 ms).
    """

    def __init__(self, in_rate_hz: int, out_rate_hz: int, zero_crossings: int = 8) -> None:
        if in_rate_hz <= 0 or out_rate_hz <= 0:
            raise ValueError("sample rates must be positive")
        self.in_rate, self.out_rate = int(in_rate_hz), int(out_rate_hz)
        self.weights, self.half = _phase_filters(self.in_rate, self.out_rate, zero_crossings)
        self.phases = self.weights.shape[0]
        self._buf = np.zeros(self.half, np.float32)  # input history, absolute index of buf[0]:
        self._buf_start = -self.half
        self._next_out = 0

    def process(self, pcm: np.ndarray) -> np.ndarray:
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
        if self.in_rate == self.out_rate:
            return pcm.copy()
        self._buf = np.concatenate([self._buf, pcm])
        end = self._buf_start + len(self._buf)           # one past the last input index held
        # output k needs input up to floor(k*in/out) + half, which must be < end
        k_max = ((end - 1 - self.half) * self.out_rate) // self.in_rate
        if (k_max * self.in_rate) // self.out_rate + self.half >= end:
            k_max -= 1
        if k_max < self._next_out:
            return np.zeros(0, np.float32)
        ks = np.arange(self._next_out, k_max + 1, dtype=np.int64)
        base = (ks * self.in_rate) // self.out_rate                          # [N]
        idx = base[:, None] + np.arange(-self.half + 1, self.half + 1)[None, :] - self._buf_start  # [N, taps]
        w = self.weights[ks % self.phases]                                  # [N, taps]
        out = np.einsum("nt,nt->n", self._buf[idx], w).astype(np.float32)
        self._next_out = k_max + 1
        keep_from = (self._next_out * self.in_rate) // self.out_rate - self.half + 1
        drop = keep_from - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start = keep_from
        return out

    def flush(self) -> np.ndarray:
        """Emit the samples still held back by the filter's lookahead (pads silence)."""
        if self.in_rate == self.out_rate:
            return np.zeros(0, np.float32)
        total_in = self._buf_start + len(self._buf)
        n_out_total = (total_in * self.out_rate + self.in_rate - 1) // self.in_rate
        out = self.process(np.zeros(2 * self.half + 2, np.float32))
        return out[: max(0, n_out_total - (self._next_out - len(out)))]
