"""Light, seeded augmentation of user speech: gain, background noise at a given SNR, mild synthetic reverb."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    probability: float = 0.25  # share of user utterances augmented (assistant audio never is)
    gain_db: tuple[float, float] = (-8.0, 3.0)  # uniform range
    snr_db: tuple[float, float] = (15.0, 35.0)  # white/pink noise level relative to the speech
    reverb_probability: float = 0.4  # of augmented utterances
    rt60_s: tuple[float, float] = (0.1, 0.35)  # decay time of the synthetic room


def _pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """1/f noise by shaping white noise in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    scale = 1.0 / np.sqrt(np.maximum(np.arange(len(spectrum)), 1.0))
    noise = np.fft.irfft(spectrum * scale, n)
    return noise / (np.std(noise) + 1e-9)


def _room_impulse(rng: np.random.Generator, rt60_s: float, sample_rate_hz: int) -> np.ndarray:
    """Exponentially decaying noise tail after a direct-path impulse (a plausible small room)."""
    n = int(rt60_s * sample_rate_hz)
    t = np.arange(n) / sample_rate_hz
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60_s) * 0.3
    tail[0] = 1.0
    return tail / np.sqrt(np.sum(tail**2))


def augment(audio: np.ndarray, sample_rate_hz: int, seed: int, config: AugmentConfig) -> tuple[np.ndarray, dict]:
    """Augmented int16 audio and a description of what was done ({} when left clean)."""
    rng = np.random.default_rng(seed)
    if rng.random() >= config.probability or len(audio) == 0:
        return audio, {}
    x = audio.astype(np.float32) / 32768.0  # [T]
    info: dict = {}
    if rng.random() < config.reverb_probability:
        rt60 = float(rng.uniform(*config.rt60_s))
        wet = np.convolve(x, _room_impulse(rng, rt60, sample_rate_hz))[: len(x)]
        x = wet * (np.max(np.abs(x)) / (np.max(np.abs(wet)) + 1e-9))
        info["rt60_s"] = round(rt60, 3)
    snr = float(rng.uniform(*config.snr_db))
    noise = _pink_noise(rng, len(x)) if rng.random() < 0.5 else rng.standard_normal(len(x))
    speech_rms = float(np.sqrt(np.mean(x**2)) + 1e-9)
    x = x + noise.astype(np.float32) * speech_rms / (10 ** (snr / 20)) / (np.std(noise) + 1e-9)
    gain = float(rng.uniform(*config.gain_db))
    x = x * 10 ** (gain / 20)
    info.update(snr_db=round(snr, 1), gain_db=round(gain, 1))
    peak = float(np.max(np.abs(x)))
    if peak > 0.99:  # keep clear of clipping
        x = x * (0.99 / peak)
    return np.round(x * 32767.0).astype(np.int16), info
