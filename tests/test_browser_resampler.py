"""The browser's JS resampler (client/resampler.js), run under node: chunked equals whole, and it filters."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

RESAMPLER = Path(__file__).resolve().parents[1] / "client" / "resampler.js"
SCRIPT = """
import { StreamResampler } from %s;
const [inRate, outRate, freq, n, chunk] = %s;
const x = Float32Array.from({ length: n }, (_, i) => 0.5 * Math.sin(2 * Math.PI * freq * i / inRate));
const whole = new StreamResampler(inRate, outRate).process(x);
const r = new StreamResampler(inRate, outRate);
const parts = [];
for (let i = 0; i < n; i += chunk) parts.push(...r.process(x.subarray(i, i + chunk)));
console.log(JSON.stringify({ whole: Array.from(whole), chunked: parts }));
"""


def run_js(in_rate: int, out_rate: int, freq_hz: float, n: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    code = SCRIPT % (json.dumps(RESAMPLER.as_uri()), json.dumps([in_rate, out_rate, freq_hz, n, chunk]))
    out = subprocess.run([node, "--input-type=module", "-e", code], capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(out.stdout)
    return np.array(result["whole"], np.float32), np.array(result["chunked"], np.float32)


@pytest.mark.parametrize("in_rate,out_rate,chunk", [(48000, 16000, 128), (44100, 16000, 128), (16000, 48000, 37),
                                                    (16000, 44100, 320)])
def test_chunked_equals_whole_and_keeps_a_tone(in_rate, out_rate, chunk):
    n = in_rate // 2
    whole, chunked = run_js(in_rate, out_rate, 1000.0, n, chunk)
    np.testing.assert_array_equal(whole, chunked)
    assert abs(len(whole) - n * out_rate / in_rate) <= 40          # only the filter's lookahead is held back
    steady = whole[len(whole) // 4: 3 * len(whole) // 4]
    assert np.sqrt(np.mean(steady ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    spectrum = np.abs(np.fft.rfft(steady * np.hanning(len(steady))))
    assert np.fft.rfftfreq(len(steady), 1 / out_rate)[spectrum.argmax()] == pytest.approx(1000, abs=out_rate / len(steady) * 2)


def test_downsampling_removes_what_would_alias():
    whole, _ = run_js(48000, 16000, 11000.0, 24000, 128)   # above the 8 kHz Nyquist of the output
    steady = whole[2000:-2000]
    assert 20 * np.log10(np.sqrt(np.mean(steady ** 2)) / (0.5 / np.sqrt(2))) < -40
