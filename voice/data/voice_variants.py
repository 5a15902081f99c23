"""New voices from old: seeded vocal-tract and pitch changes of user speech (Praat's "Change gender").

Thirteen synthetic voices are too few for a model to hear voices it never met (docs/speechlm.md,
"Hearing"). Each variant moves the formants (a longer or shorter vocal tract: the cue that tells a
child from a man), the pitch median and range, and the tempo, each drawn independently, so one
utterance becomes several speakers saying the same words. Praat's PSOLA resynthesis does this in a
few milliseconds per second of speech and keeps the words intelligible (checked with Whisper in
`voice codec tokenize --user-variants`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VariantConfig:
    formant_ratio: tuple[float, float] = (0.86, 1.18)     # vocal-tract scale (log-uniform)
    pitch_median_hz: tuple[float, float] = (85.0, 250.0)  # new pitch median (log-uniform)
    pitch_range: tuple[float, float] = (0.6, 1.5)         # intonation range factor
    duration: tuple[float, float] = (0.9, 1.12)           # tempo (duration factor)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def draw_variant(rng: np.random.Generator, config: VariantConfig = VariantConfig()) -> dict:
    """The parameters of one variant voice."""
    return {"formant_ratio": round(_log_uniform(rng, *config.formant_ratio), 3),
            "pitch_median_hz": round(_log_uniform(rng, *config.pitch_median_hz), 1),
            "pitch_range": round(float(rng.uniform(*config.pitch_range)), 3),
            "duration": round(float(rng.uniform(*config.duration)), 3)}


def change_voice(audio: np.ndarray, sample_rate_hz: int, formant_ratio: float, pitch_median_hz: float,
                 pitch_range: float, duration: float) -> np.ndarray:
    """float32 mono audio said by another voice (same words). Silence or unvoiced audio comes back
    with only its formants and tempo changed."""
    import parselmouth
    from parselmouth.praat import call

    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if x.size < sample_rate_hz // 20:          # too short for pitch analysis: leave it as it is
        return x.astype(np.float32)
    sound = parselmouth.Sound(x, sampling_frequency=sample_rate_hz)
    out = call(sound, "Change gender", 60.0, 500.0, formant_ratio, pitch_median_hz, pitch_range, duration)
    y = out.values[0].astype(np.float32)
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    return y * (0.98 / peak) if peak > 0.98 else y
