"""Codec input checks: wrong shape, rate, dtype, NaN/inf audio and out-of-range codes give clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voice.codec.codec import to_mono_rate
from voice.codec.compact import CompactCodec, CompactCodecConfig


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    config = CompactCodecConfig(encoder_filters=8, decoder_dim=32, decoder_hidden=64, decoder_layers=1,
                                num_codebooks=2)
    return CompactCodec(config).eval().streaming()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_audio_is_rejected(codec, bad):
    audio = np.zeros(640, np.float32)
    audio[100] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        codec.encode_step(codec.new_state(), audio)
    with pytest.raises(ValueError, match="NaN or infinite"):
        codec.encode(audio, 16000)


def test_stereo_chunk_is_rejected_but_whole_audio_is_converted(codec):
    stereo = np.zeros((2, 48000), np.float32)
    with pytest.raises(ValueError, match="mono"):
        codec.encode_step(codec.new_state(), stereo)
    codes = codec.encode(stereo, 48000)  # downmixed and resampled to 16 kHz: 1 s = 50 frames
    assert codes.shape == (2, 50)


def test_wrong_rate_and_dtype_are_rejected(codec):
    with pytest.raises(ValueError, match="resample"):
        codec.encode_step(codec.new_state(), np.zeros(480, np.float32), sample_rate_hz=24000)
    with pytest.raises(ValueError, match="int16"):
        codec.encode_step(codec.new_state(), np.zeros(480, np.int16))


@pytest.mark.parametrize("codes, message", [
    (np.full((2, 3), 1024), "out of range"),
    (np.full((2, 3), -1), "out of range"),
    (np.zeros((3, 3), np.int64), r"\[K=2, T\]"),
    (np.zeros((2, 3), np.float32), "integers"),
    (np.zeros(3, np.int64), r"\[K=2, T\]"),
])
def test_bad_codes_are_rejected(codec, codes, message):
    with pytest.raises(ValueError, match=message):
        codec.decode_step(codec.new_state(), codes)


def test_to_mono_rate_converts_layouts_and_rates():
    stereo_last = np.ones((24000, 2), np.float32) * 0.5
    out = to_mono_rate(stereo_last, 24000, 16000)
    assert out.shape == (16000,) and abs(float(out[8000]) - 0.5) < 1e-3
    int_audio = (np.ones(1600) * 16384).astype(np.int16)
    assert abs(float(to_mono_rate(int_audio, 16000, 16000)[0]) - 0.5) < 1e-6
    with pytest.raises(ValueError):
        to_mono_rate(np.zeros((2, 2, 10), np.float32), 16000, 16000)


def test_num_codebooks_beyond_the_model_is_rejected():
    model = CompactCodec(CompactCodecConfig(encoder_filters=8, decoder_dim=32, decoder_hidden=64,
                                            decoder_layers=1, num_codebooks=2))
    with pytest.raises(ValueError, match="num_codebooks"):
        model.streaming(num_codebooks=3)
