"""The barge-in set (`voice data barge`): what a user says over the assistant, and what should not stop it.

While the assistant speaks, the microphone hears things that are not a bid for the turn. For every
user utterance taken from a corpus (same voice, speed, pitch and split) this synthesises:

- `interrupt`: a real interruption, the question itself or the question after "Wait," "Stop."
  "Sorry," "No," ... (should stop the assistant);
- `backchannel`: a short acknowledgement, "uh-huh", "yeah", "okay", "mm-hmm" ... (should not).

Noises (coughs, knocks, claps, a door, breath) are made on the fly by `noise_burst`, seeded, and
the assistant's own voice coming back through the microphone is one of the corpus's assistant
answers (`echo_wav`, relative to the corpus), played quieter and with a room. The barge-in model
(`voice train barge`) trains on all of them and the bench's barge-in set plays the test split's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voice.turn.data import SAMPLE_RATE_HZ, _say, _seed, _write, run_shards, shard_rows, user_rows

BACKCHANNELS = ("uh-huh", "mm-hmm", "yeah", "okay", "right", "sure", "I see", "yes", "mhm", "oh", "ah",
                "got it", "hmm", "yeah yeah", "okay okay", "oh right")
INTERRUPT_OPENINGS = ("", "", "Wait, ", "Stop. ", "Sorry, ", "No, ", "Hold on. ", "Actually, ", "Excuse me, ",
                      "No no, ", "Hang on, ")
NOISE_KINDS = ("cough", "knock", "clap", "door", "breath", "click")
FORMAT = "voice-barge"


@dataclass(frozen=True)
class BargeBuildConfig:
    corpus: str
    seed: int = 0
    shard_size: int = 50
    limit_per_split: int = 0
    train_every: int = 2        # every Nth training utterance (the rest adds little but time)

    def identity(self) -> dict:
        return {"corpus": str(Path(self.corpus).resolve().name), "seed": self.seed, "format": FORMAT,
                "limit_per_split": self.limit_per_split, "train_every": self.train_every}


def _build_shard(task: tuple) -> list[dict]:
    records = []
    for out, base, row, config in shard_rows(task):
        rng = random.Random(_seed(config.seed, f"barge/{row['id']}"))
        rec = {k: row[k] for k in ("id", "split", "voice", "speaker", "intent", "text", "speed", "pitch_semitones")}
        interrupt_text = rng.choice(INTERRUPT_OPENINGS) + row["text"]
        backchannel_text = rng.choice(BACKCHANNELS)
        for name, text in (("interrupt", interrupt_text), ("backchannel", backchannel_text)):
            audio = _say(text, row)
            if len(audio):
                _write(out, f"{base}_{name}.wav", audio)
                rec.update({f"{name}_text": text, f"{name}_wav": f"{base}_{name}.wav"})
        records.append(rec)
    return records


def echo_rows(corpus: Path, split: str) -> list[str]:
    """The corpus's assistant answers of a split (relative WAV paths): the voice that may come back."""
    import json

    out = []
    for line in (corpus / "manifest.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("role") == "assistant" and r.get("split") == split:
            out.append(r["wav"])
    return out


def build_barge(config: BargeBuildConfig, out: Path, workers: int = 0, progress: bool = True) -> dict:
    rows = user_rows(Path(config.corpus), config.limit_per_split)
    rows = [r for i, r in enumerate(rows) if r["split"] != "train" or i % config.train_every == 0]
    records = run_shards(rows, out, _build_shard, config, "barge-in set", workers, progress)
    summary: dict = {}
    for r in records:
        s = summary.setdefault(r["split"], {"utterances": 0, "interrupts": 0, "backchannels": 0, "voices": set()})
        s["utterances"] += 1
        s["interrupts"] += "interrupt_wav" in r
        s["backchannels"] += "backchannel_wav" in r
        s["voices"].add(r["voice"])
    for s in summary.values():
        s["voices"] = len(s["voices"])
    return summary


# ---- made on the fly ---------------------------------------------------------------------------

def trim_leading_silence(audio: np.ndarray, threshold: float = 0.01, keep_ms: float = 10.0,
                         rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """`audio` from `keep_ms` before its first sample above `threshold` (about -40 dBFS) on: the speech as the
    VAD times it. The pieces are already trimmed 45 dB below their peak (`trim_silence`), but flite's noise floor
    (about -55 dBFS) passes that, so its clips still open with up to 300 ms of near-silence, which would count as
    heard speech in a training crop or in the evaluation's "200 ms after the start". Silence stays as it is."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio
    return audio[max(0, int(loud[0]) - int(keep_ms * rate_hz / 1000)):]


def noise_burst(kind: str, rng: np.random.Generator, rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """A short non-speech sound of `kind` (NOISE_KINDS), 40-600 ms, peak about -6..-20 dBFS."""
    def env(n: int, attack_s: float, decay_s: float) -> np.ndarray:
        t = np.arange(n) / rate_hz
        return np.minimum(1.0, t / max(attack_s, 1e-4)) * np.exp(-t / max(decay_s, 1e-4))

    def band(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
        spec = np.fft.rfft(x)
        f = np.fft.rfftfreq(len(x), 1 / rate_hz)
        spec[(f < lo) | (f > hi)] = 0
        return np.fft.irfft(spec, len(x))

    if kind == "cough":      # one to three bursts of broadband noise shaped like a vowel-less exhale
        parts = []
        for _ in range(rng.integers(1, 4)):
            n = int(rng.uniform(0.12, 0.25) * rate_hz)
            burst = band(rng.standard_normal(n), rng.uniform(200, 500), rng.uniform(2500, 6000)) * env(n, 0.01, 0.06)
            parts += [burst, np.zeros(int(rng.uniform(0.05, 0.15) * rate_hz))]
        x = np.concatenate(parts)
    elif kind == "knock":    # a few damped low resonances
        parts = []
        for _ in range(rng.integers(1, 4)):
            n = int(0.12 * rate_hz)
            t = np.arange(n) / rate_hz
            f0 = rng.uniform(120, 400)
            parts += [np.sin(2 * np.pi * f0 * t) * np.exp(-t / 0.02) + 0.3 * rng.standard_normal(n) * np.exp(-t / 0.004),
                      np.zeros(int(rng.uniform(0.08, 0.2) * rate_hz))]
        x = np.concatenate(parts)
    elif kind == "clap":
        n = int(0.08 * rate_hz)
        x = band(rng.standard_normal(n), 800, 7000) * env(n, 0.001, 0.012)
    elif kind == "door":     # a thud then a rattle
        n = int(rng.uniform(0.3, 0.6) * rate_hz)
        t = np.arange(n) / rate_hz
        x = np.sin(2 * np.pi * rng.uniform(50, 90) * t) * np.exp(-t / 0.08) + 0.2 * band(rng.standard_normal(n), 1000, 5000) * np.exp(-t / 0.15)
    elif kind == "breath":
        n = int(rng.uniform(0.3, 0.6) * rate_hz)
        x = band(rng.standard_normal(n), 300, 3000) * np.sin(np.pi * np.arange(n) / n) * 0.4
    elif kind == "click":
        n = int(0.04 * rate_hz)
        x = rng.standard_normal(n) * env(n, 0.0005, 0.003)
    else:
        raise ValueError(f"unknown noise kind {kind!r}; choose one of {', '.join(NOISE_KINDS)}")
    x = x / (np.abs(x).max() + 1e-9) * 10 ** (rng.uniform(-20, -6) / 20)
    return x.astype(np.float32)


def as_echo(answer: np.ndarray, rng: np.random.Generator, rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """The assistant's answer as a microphone hears it from a loudspeaker: quieter, delayed, in a room."""
    from voice.data.augment import _room_impulse

    rir = _room_impulse(rng, float(rng.uniform(0.15, 0.4)), rate_hz)
    n = len(answer) + len(rir) - 1
    size = 1 << (n - 1).bit_length()       # by FFT: a direct convolution of seconds with a room is slow
    wet = np.fft.irfft(np.fft.rfft(answer, size) * np.fft.rfft(rir, size), size)[: len(answer)]
    delay = np.zeros(int(rng.uniform(0.01, 0.08) * rate_hz), np.float32)
    gain = 10 ** (rng.uniform(-26, -8) / 20)
    return (np.concatenate([delay, wet]) * gain).astype(np.float32)
