"""Voice variants for training: the same words in another vocal tract, pitch and tempo; seeded."""

from __future__ import annotations

import numpy as np
import pytest

from voice.data.voice_variants import VariantConfig, change_voice, draw_variant


def _vowel(seconds: float = 1.0, rate: int = 16000, f0: float = 120.0) -> np.ndarray:
    """A crude voiced vowel: a glottal pulse train through two formant resonances (700 and 1200 Hz)."""
    n = int(seconds * rate)
    x = np.zeros(n)
    x[:: int(rate / f0)] = 1.0
    for f, bw in ((700.0, 90.0), (1200.0, 110.0)):
        r = np.exp(-np.pi * bw / rate)
        a1, a2 = -2 * r * np.cos(2 * np.pi * f / rate), r * r
        y = np.zeros(n)
        for i in range(n):
            y[i] = x[i] - a1 * (y[i - 1] if i else 0.0) - a2 * (y[i - 2] if i > 1 else 0.0)
        x = y
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def _spectral_centroid(x: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(np.sum(freqs * spectrum) / np.sum(spectrum))


def test_variants_are_drawn_from_the_seed_within_their_ranges() -> None:
    a = draw_variant(np.random.default_rng([0, 5, 1]))
    assert a == draw_variant(np.random.default_rng([0, 5, 1]))
    assert a != draw_variant(np.random.default_rng([0, 5, 2]))
    cfg = VariantConfig()
    for seed in range(50):
        v = draw_variant(np.random.default_rng(seed))
        assert cfg.formant_ratio[0] <= v["formant_ratio"] <= cfg.formant_ratio[1]
        assert cfg.pitch_median_hz[0] <= v["pitch_median_hz"] <= cfg.pitch_median_hz[1]


@pytest.mark.parametrize("ratio", [0.87, 1.17])
def test_a_variant_moves_the_formants_and_keeps_the_length(ratio: float) -> None:
    x = _vowel()
    y = change_voice(x, 16000, formant_ratio=ratio, pitch_median_hz=120.0, pitch_range=1.0, duration=1.0)
    assert abs(len(y) - len(x)) < 0.02 * len(x)
    assert np.max(np.abs(y)) <= 0.99
    shift = _spectral_centroid(y) / _spectral_centroid(x)
    assert (shift > 1.05) if ratio > 1 else (shift < 0.95), shift


def test_duration_and_tiny_inputs() -> None:
    x = _vowel()
    y = change_voice(x, 16000, formant_ratio=1.0, pitch_median_hz=0.0, pitch_range=1.0, duration=1.1)
    assert 1.07 < len(y) / len(x) < 1.13
    short = np.zeros(100, np.float32)
    assert np.array_equal(change_voice(short, 16000, 1.1, 150.0, 1.0, 1.0), short)
