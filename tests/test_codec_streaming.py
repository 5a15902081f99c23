"""Streaming codec: chunked encode/decode equals one whole pass, for EnCodec 24 kHz and the compact codec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voice.codec.codec import StreamingCodec
from voice.codec.compact import CompactCodec, CompactCodecConfig

FRAMES = 16


def _randomize_codebooks(quantizer, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    for layer in quantizer.vq.layers:  # untrained codebooks are all zero: every code would be 0
        book = layer._codebook
        book.embed.data.copy_(torch.randn(book.embed.shape, generator=generator) * 0.3)
        book.inited.fill_(1)


@pytest.fixture(scope="module")
def encodec_24khz():
    from encodec import EncodecModel

    torch.manual_seed(0)
    model = EncodecModel.encodec_model_24khz(pretrained=False)  # causal SEANet with LSTMs, random weights
    _randomize_codebooks(model.quantizer)
    return model.eval()


@pytest.fixture(scope="module")
def compact():
    torch.manual_seed(0)
    config = CompactCodecConfig(encoder_filters=8, decoder_dim=32, decoder_hidden=64, decoder_layers=2,
                                num_codebooks=4, encoder_lstm_layers=1)
    model = CompactCodec(config).eval()
    _randomize_codebooks(model.quantizer)
    return model


def _codecs(encodec_24khz, compact):
    model = encodec_24khz
    yield "encodec_24khz", StreamingCodec(model.encoder, model.quantizer, model.decoder, sample_rate_hz=24000,
                                          hop_length=320, num_codebooks=4), model.decoder
    yield "compact", compact.streaming(), compact.decoder


def _signal(codec: StreamingCodec, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(FRAMES * codec.hop_length) / codec.sample_rate_hz
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)
    return (tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def _whole_codes(codec: StreamingCodec, audio: np.ndarray) -> np.ndarray:
    """Reference: the package's own whole-signal forward pass, no streaming code involved."""
    with torch.no_grad():
        emb = codec.encoder(torch.from_numpy(audio)[None, None])
        return codec.quantizer.vq.encode(emb, n_q=codec.num_codebooks)[:, 0].numpy()


def _chunked_codes(codec: StreamingCodec, audio: np.ndarray, sizes) -> np.ndarray:
    state, out, start = codec.new_state(), [], 0
    for size in sizes:
        out.append(codec.encode_step(state, audio[start: start + size]))
        start += size
    assert start >= len(audio)
    out.append(codec.flush_encode(state))
    return np.concatenate(out, axis=1)


def _random_sizes(total: int, seed: int) -> list[int]:
    rng, sizes = np.random.default_rng(seed), []
    while sum(sizes) < total:
        sizes.append(int(rng.integers(1, 900)))
    return sizes


@pytest.mark.parametrize("frames_per_chunk", [1, 2, 7, "random"])
def test_chunked_encode_gives_identical_codes(encodec_24khz, compact, frames_per_chunk):
    for name, codec, _decoder in _codecs(encodec_24khz, compact):
        audio = _signal(codec)
        if frames_per_chunk == "random":
            sizes = _random_sizes(len(audio), seed=len(name))
        else:
            sizes = [frames_per_chunk * codec.hop_length] * -(-FRAMES // frames_per_chunk)
        whole = _whole_codes(codec, audio)
        chunked = _chunked_codes(codec, audio, sizes)
        assert chunked.shape == (codec.num_codebooks, FRAMES), name
        assert len(np.unique(whole)) > 3, f"{name}: degenerate codes make the test meaningless"
        np.testing.assert_array_equal(chunked, whole, err_msg=name)


@pytest.mark.parametrize("frames_per_chunk", [1, 2, 7, "random"])
def test_chunked_decode_matches_whole(encodec_24khz, compact, frames_per_chunk):
    for name, codec, decoder in _codecs(encodec_24khz, compact):
        codes = _whole_codes(codec, _signal(codec))
        with torch.no_grad():
            whole = decoder(codec.quantizer.vq.decode(torch.from_numpy(codes)[:, None]))[0, 0].numpy()
        if frames_per_chunk == "random":
            rng = np.random.default_rng(3)
            cuts = np.sort(rng.choice(np.arange(1, FRAMES), size=6, replace=False))
            pieces = np.split(codes, cuts, axis=1)
        else:
            pieces = [codes[:, i: i + frames_per_chunk] for i in range(0, FRAMES, frames_per_chunk)]
        state = codec.new_state()
        chunked = np.concatenate([codec.decode_step(state, piece) for piece in pieces])
        assert chunked.shape == whole.shape == (FRAMES * codec.hop_length,), name
        assert np.abs(whole).max() > 1e-3, name
        assert np.abs(chunked - whole).max() < 1e-4, name


def test_sub_frame_chunks_encode_the_same(compact):
    codec = compact.streaming()
    audio = _signal(codec)[: 6 * codec.hop_length]
    sizes = [1] * 40 + [23] * (-(-(len(audio) - 40) // 23))  # single samples, then chunks smaller than a frame
    np.testing.assert_array_equal(_chunked_codes(codec, audio, sizes), _whole_codes(codec, audio))


def test_partial_frame_is_flushed_with_zero_padding(compact):
    codec = compact.streaming()
    audio = _signal(codec)[: 5 * codec.hop_length + 100]
    padded = np.concatenate([audio, np.zeros(codec.hop_length - 100, np.float32)])
    np.testing.assert_array_equal(codec.encode(audio, codec.sample_rate_hz), _whole_codes(codec, padded))


def test_whole_decode_is_aligned_with_input_and_flush_emits_the_delay(compact):
    codec = compact.streaming()
    codes = _whole_codes(codec, _signal(codec))
    state = codec.new_state()
    stream = np.concatenate([codec.decode_step(state, codes), codec.flush_decode(state)])
    assert len(stream) == FRAMES * codec.hop_length + codec.decoder_delay_samples
    assert np.all(stream[: codec.decoder_delay_samples] == 0)  # pre-roll before the first input sample
    np.testing.assert_allclose(codec.decode(codes), stream[codec.decoder_delay_samples:], atol=1e-6)


def test_sessions_do_not_share_state(compact):
    codec = compact.streaming()
    audio = _signal(codec)
    a, b = codec.new_state(), codec.new_state()
    first = codec.encode_step(a, audio[: 4 * codec.hop_length])
    codec.encode_step(b, np.zeros(3 * codec.hop_length, np.float32))
    again = codec.encode_step(codec.new_state(), audio[: 4 * codec.hop_length])
    np.testing.assert_array_equal(first, again)


def test_latency_facts(compact):
    codec = compact.streaming()
    assert codec.frame_rate_hz == 50.0 and codec.hop_length == 320
    assert codec.lookahead_samples == 640  # one frame of encoder framing + one frame of decoder delay
    assert codec.bitrate_bps == 50 * 4 * 10 and codec.token_rate_hz == 200


@pytest.mark.parametrize("kernel,stride,dilation,bias", [(3, 1, 2, True), (8, 4, 1, False), (1, 1, 1, True)])
def test_conv_step_fast_path_matches_whole_conv(kernel, stride, dilation, bias):
    """Few-output steps take the unfold + matmul path; many-output chunks take conv1d: both equal the whole pass."""
    from encodec.modules import SConv1d

    from voice.codec.streaming import ModuleStates, step_module

    torch.manual_seed(0)
    conv = SConv1d(6, 5, kernel, stride=stride, dilation=dilation, causal=True, pad_mode="constant", bias=bias)
    x = torch.randn(1, 6, 40 * stride)
    with torch.inference_mode():
        whole = conv(x)
        for size in (stride, 3 * stride, 20 * stride):
            states = ModuleStates()
            chunked = torch.cat([step_module(conv, x[..., i: i + size], states) for i in range(0, x.shape[-1], size)], -1)
            torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_linear_step_follows_weight_changes():
    from voice.codec.streaming import linear_step

    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 9)  # wide: uses the cached transposed weight
    x = torch.randn(2, 3, 4)
    with torch.inference_mode():
        torch.testing.assert_close(linear_step(linear, x), linear(x))
    with torch.no_grad():
        linear.weight.mul_(2.0)
    with torch.inference_mode():
        torch.testing.assert_close(linear_step(linear, x), linear(x))
    linear.weight = torch.nn.Parameter(torch.randn(9, 4))  # replaced
    with torch.inference_mode():
        torch.testing.assert_close(linear_step(linear, x), linear(x))


def test_fast_elu_matches_elu_everywhere():
    """The streaming step's ELU (exp instead of ATen's unvectorised expm1) equals F.elu to float32 rounding."""
    from voice.codec.streaming import fast_elu

    x = torch.cat([torch.linspace(-30, 10, 100_001), torch.tensor([0.0, -0.0, -1e-8, 1e-8, -88.0, 80.0])])
    with torch.inference_mode():
        torch.testing.assert_close(fast_elu(x.clone()), torch.nn.functional.elu(x), rtol=0, atol=1e-7)
        torch.testing.assert_close(fast_elu(x.clone(), 0.5), torch.nn.functional.elu(x, 0.5), rtol=0, atol=0)
    y = x.clone().requires_grad_()
    fast_elu(y).sum().backward()  # with autograd the module's own ELU runs, so its gradient is exact
    torch.testing.assert_close(y.grad, (x > 0).float() + (x <= 0).float() * torch.exp(x.clamp(max=0)))
