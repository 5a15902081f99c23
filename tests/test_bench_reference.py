"""The energy reference tool on synthetic signals with known speech boundaries, and the committed table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from voice.bench.reference import find_speech, load_reference_table, write_reference_table

TABLE = Path(__file__).parent / "data" / "speech_boundaries.json"


def tone_bursts(rate_hz: int, bursts: list[tuple[float, float]], duration_s: float = 3.0, level: float = 0.2,
                noise_dbfs: float = -60.0, seed: int = 0) -> np.ndarray:
    """Harmonic 'vowels' (150 Hz + 4 harmonics) at `level` over white noise, in the given [start, end) spans."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * rate_hz)) / rate_hz
    x = rng.normal(0, 10 ** (noise_dbfs / 20), len(t))
    voice = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6))
    for a, b in bursts:
        m = (t >= a) & (t < b)
        x[m] += level * voice[m]
    return x.astype(np.float32)


@pytest.mark.parametrize("rate_hz", [8000, 16000, 44100])
def test_single_burst_boundaries(rate_hz):
    b = find_speech(tone_bursts(rate_hz, [(0.50, 1.70)]), rate_hz)
    assert abs(b.start_s - 0.50) <= 0.011 and abs(b.end_s - 1.70) <= 0.011, b
    assert len(b.segments) == 1 and b.floor_db < -55 and b.peak_db > -25


def test_long_gap_splits_short_gap_merges():
    rate = 16000
    b = find_speech(tone_bursts(rate, [(0.3, 0.8), (0.9, 1.2), (1.7, 2.4)]), rate)
    assert len(b.segments) == 2, b.segments           # the 100 ms dip is inside a word; 500 ms is a pause
    assert abs(b.segments[0][1] - 1.2) <= 0.011 and abs(b.segments[1][0] - 1.7) <= 0.011
    assert abs(b.longest_pause_s() - 0.5) <= 0.02
    assert abs(b.start_s - 0.3) <= 0.011 and abs(b.end_s - 2.4) <= 0.011


def test_click_and_rumble_are_not_speech():
    rate = 16000
    x = tone_bursts(rate, [(1.0, 2.0)])
    x[int(0.3 * rate):int(0.32 * rate)] += 0.5               # a 20 ms click
    t = np.arange(len(x)) / rate
    x += (0.05 * np.sin(2 * np.pi * 40 * t) * (t > 2.3)).astype(np.float32)  # 40 Hz rumble after the speech
    b = find_speech(x, rate)
    assert abs(b.start_s - 1.0) <= 0.011 and abs(b.end_s - 2.0) <= 0.011, b


def test_weak_tail_stays_attached():
    """A final fricative 30 dB below the vowel (high-frequency noise) belongs to the speech."""
    rate = 16000
    x = tone_bursts(rate, [(0.5, 1.5)])
    rng = np.random.default_rng(1)
    n = int(0.12 * rate)
    hiss = rng.normal(0, 0.2 * 10 ** (-30 / 20), n)
    hiss = np.diff(hiss, prepend=0.0)                           # tilt towards high frequencies
    x[int(1.5 * rate):int(1.5 * rate) + n] += hiss.astype(np.float32)
    b = find_speech(x, rate)
    assert abs(b.end_s - 1.62) <= 0.02, b


def test_no_speech_is_an_error():
    with pytest.raises(ValueError, match="no speech"):
        find_speech(np.random.default_rng(0).normal(0, 1e-3, 16000).astype(np.float32), 16000)
    with pytest.raises(ValueError, match="empty"):
        find_speech(np.zeros(0, np.float32), 16000)


def test_committed_table_matches_the_tool(tmp_path, speech_dir):
    """The committed table is reproducible: rerunning the tool with the review file gives the same numbers."""
    review = TABLE.with_name("speech_boundaries_review.json")
    fresh = write_reference_table(speech_dir, tmp_path / "t.json", review)
    committed = json.loads(TABLE.read_text())
    assert fresh["files"] == committed["files"]
    table = load_reference_table(TABLE)
    assert all(0 <= b.start_s < b.end_s <= b.duration_s for b in table.values())
    reviewed = [n for n, d in committed["files"].items() if d.get("reviewed")]
    assert sorted(reviewed) == ["fw_stereo_diarization_right.wav", "ps_goforward.wav"]
