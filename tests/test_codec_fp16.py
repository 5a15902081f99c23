"""float16-packed weights (`pack_fp16_weights`): the same codes and audio as float32, chunked as whole."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import SPEECH_DIR
from voice.codec.compact import CompactCodec, CompactCodecConfig
from voice.codec.streaming import pack_fp16_weights
from voice.fp16_gemm import pack_fp16

FRAMES = 24


def _fp16_exact_codec(pack: bool):
    """A small compact codec whose stored weights (weight norm's g and v included) float16 holds exactly."""
    torch.manual_seed(0)
    config = CompactCodecConfig(encoder_filters=16, decoder_dim=64, decoder_hidden=256, decoder_layers=2,
                                num_codebooks=4)
    model = CompactCodec(config).eval()
    with torch.no_grad():
        emb = model.encoder(torch.randn(1, 1, 16 * config.hop_length) * 0.3)[0].t()  # [T, D]
        for layer in model.quantizer.vq.layers:  # untrained codebooks are all zero: every code would be 0
            # entries at the scale of the encoder's output, so that the codes follow the signal
            layer._codebook.embed.copy_(emb[torch.randint(0, len(emb), (config.codebook_size,))])
            layer._codebook.embed.add_(torch.randn_like(layer._codebook.embed) * emb.std() * 0.3)
            layer._codebook.inited.fill_(1)
            emb = emb * 0.3
        for name, parameter in model.named_parameters():
            if name.endswith("weight_g"):  # a fresh weight norm has g = |v|: make the scale matter
                parameter.mul_(torch.rand(parameter.shape) + 0.5)
            parameter.copy_(parameter.half().float())
        for buffer in model.buffers():
            if buffer.is_floating_point():
                buffer.copy_(buffer.half().float())
    packed = pack_fp16_weights(model, min_weights=4096) if pack else 0
    codec = model.streaming()
    codec.fp16_weights = pack
    return codec, packed


@pytest.fixture(scope="module")
def codecs():
    return _fp16_exact_codec(pack=True), _fp16_exact_codec(pack=False)[0]


def test_packed_matmul_equals_the_float_product():
    torch.manual_seed(1)
    matrix = torch.randn(96, 320).half().float()
    rows, bias, scale = torch.randn(5, 320), torch.randn(96), torch.rand(96) + 0.5
    plain = pack_fp16(matrix)
    assert torch.allclose(plain.matmul(rows, bias), rows @ matrix.t() + bias, atol=1e-4)
    assert torch.allclose(plain.matmul(rows, None), rows @ matrix.t(), atol=1e-4)
    scaled = pack_fp16(matrix, scale)  # a weight-normed layer: the output scaled by g / |v|
    assert torch.allclose(scaled.matmul(rows, bias), rows @ (matrix * scale[:, None]).t() + bias, atol=1e-4)
    big = torch.randn(40, 320)  # each row on its own: a row's result does not depend on the others
    assert torch.equal(plain.matmul(big, bias)[7:9], plain.matmul(big[7:9].contiguous(), bias))


def test_only_weights_float16_holds_exactly_are_packed():
    matrix = torch.randn(64, 64)
    assert pack_fp16(matrix) is None  # float32 values float16 would round: left to the float32 GEMM
    assert pack_fp16(matrix.half().float()) is not None


def test_packing_covers_the_large_layers_and_the_codebooks(codecs):
    (codec, packed), _plain = codecs
    names = [n for n, m in list(codec.encoder.named_modules()) + list(codec.decoder.named_modules())
             if "_stream_fp16" in m.__dict__]
    assert packed == len(names) >= 6 and any("pw1" in n for n in names) and any(".conv" in n for n in names)
    assert not any("dwconv" in n for n in names)  # depthwise convolutions are not GEMMs
    assert all(book[3] is not None for book in codec._codebooks()["books"])


@pytest.mark.parametrize("frames_per_chunk", [1, 2, 7, "random"])
def test_packed_codec_streams_the_float_codecs_codes_and_audio(codecs, frames_per_chunk):
    (codec, _packed), plain = codecs
    rng = np.random.default_rng(2)
    t = np.arange(FRAMES * codec.hop_length) / codec.sample_rate_hz
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    reference = plain.encode(audio, codec.sample_rate_hz)
    assert min(len(np.unique(book)) for book in reference) > 3  # codes that follow the signal in every codebook
    size = codec.hop_length * (int(rng.integers(1, 9)) if frames_per_chunk == "random" else frames_per_chunk)
    state = codec.new_state()
    codes = [codec.encode_step(state, audio[i: i + size]) for i in range(0, len(audio), size)]
    codes = np.concatenate(codes + [codec.flush_encode(state)], axis=1)
    np.testing.assert_array_equal(codes, reference)
    whole = plain.decode(reference)
    state = codec.new_state()
    step = size // codec.hop_length
    pieces = [codec.decode_step(state, reference[:, i: i + step]) for i in range(0, FRAMES, step)]
    streamed = np.concatenate(pieces + [codec.flush_decode(state)])[codec.decoder_delay_samples:]
    assert streamed.shape == whole.shape and np.abs(whole).max() > 1e-3
    assert np.abs(streamed - whole).max() < 1e-4


def test_shipped_codec_packs_and_encodes_real_speech_as_float32():
    import soundfile as sf

    from voice.codec.loader import DEFAULT_COMPACT, load_compact

    fast, plain = load_compact(DEFAULT_COMPACT), load_compact(DEFAULT_COMPACT, fp16_weights=False)
    packed = [m for m in list(fast.encoder.modules()) + list(fast.decoder.modules()) if "_stream_fp16" in m.__dict__]
    assert len(packed) == 20 and all(book[3] is not None for book in fast._codebooks()["books"])
    audio, rate = sf.read(str(SPEECH_DIR / "sb_example1_birch_canoe.wav"), dtype="float32")
    codes = fast.encode(audio, rate)
    np.testing.assert_array_equal(codes, plain.encode(audio, rate))
    assert np.abs(fast.decode(codes) - plain.decode(codes)).max() < 1e-4
