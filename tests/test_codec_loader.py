"""Codec loader: EnCodec 24 kHz from a local file and the torch hub cache, compact checkpoints and runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voice.codec.loader import ENCODEC_24KHZ_FILE, export_run, load_codec, split_source


@pytest.fixture(scope="module")
def encodec_checkpoint(tmp_path_factory):
    """A checkpoint file of the pretrained model's architecture, with random weights, written by the test."""
    from encodec import EncodecModel

    torch.manual_seed(0)
    model = EncodecModel.encodec_model_24khz(pretrained=False)
    for layer in model.quantizer.vq.layers:
        layer._codebook.embed.data.normal_()
        layer._codebook.inited.fill_(1)
    folder = tmp_path_factory.mktemp("encodec")
    path = folder / ENCODEC_24KHZ_FILE
    torch.save(model.state_dict(), path)
    return path, model.eval()


def _speechlike(rate: int, seconds: float = 0.4) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def test_split_source():
    assert split_source("encodec_24khz:3") == ("encodec_24khz", 3.0)
    assert split_source("encodec_24khz") == ("encodec_24khz", None)
    assert split_source("/x/y.th:1.5") == ("/x/y.th", 1.5)


def test_encodec_from_local_file_uses_bandwidth_and_matches_the_package(encodec_checkpoint):
    path, model = encodec_checkpoint
    codec = load_codec(f"{path}:3")
    assert codec.num_codebooks == 4 and codec.frame_rate_hz == 75.0 and codec.sample_rate_hz == 24000
    assert codec.codebook_size == 1024 and codec.bitrate_bps == 3000.0
    audio = _speechlike(24000)
    model.set_target_bandwidth(3.0)
    with torch.no_grad():
        expected = model.encode(torch.from_numpy(audio)[None, None])[0][0][0].numpy()
    np.testing.assert_array_equal(codec.encode(audio, 24000), expected)


def test_encodec_from_torch_hub_cache(encodec_checkpoint, tmp_path, monkeypatch):
    path, _model = encodec_checkpoint
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ENCODEC_24KHZ_FILE).write_bytes(path.read_bytes())
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    codec = load_codec("encodec_24khz")
    assert codec.num_codebooks == 2  # 1.5 kbps default
    assert codec.encode(_speechlike(16000), 16000).shape == (2, 30)  # resampled to 24 kHz: 0.4 s = 30 frames


def test_encodec_bad_bandwidth_and_missing_weights(encodec_checkpoint, tmp_path, monkeypatch):
    path, _model = encodec_checkpoint
    with pytest.raises(ValueError, match="kbps"):
        load_codec(f"{path}:5")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_network(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(RuntimeError, match="could not be downloaded"):
        load_codec("encodec_24khz")


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="unknown codec source"):
        load_codec(str(tmp_path / "nope.pt"))


def test_compact_run_exports_and_reloads(tmp_path):
    from voice.codec.compact import CompactCodec, CompactCodecConfig
    from voice.codec.train import _prefixed, save_checkpoint

    torch.manual_seed(0)
    config = CompactCodecConfig(encoder_filters=8, decoder_dim=32, decoder_hidden=64, decoder_layers=1,
                                num_codebooks=4)
    model = CompactCodec(config)
    for layer in model.quantizer.vq.layers:
        layer._codebook.embed.data.normal_()
        layer._codebook.inited.fill_(1)
    checkpoint = model.checkpoint()
    save_checkpoint(tmp_path / "run", {"step": 7, "model_config": checkpoint["config"]},
                    _prefixed("model.", checkpoint["state_dict"]))
    from_run = load_codec(str(tmp_path / "run"))
    info = export_run(tmp_path / "run", tmp_path / "codec.pt", default_num_codebooks=2)
    exported = load_codec(str(tmp_path / "codec.pt"))
    assert exported.num_codebooks == 2 and from_run.num_codebooks == 4 and len(info["sha256"]) == 64
    audio = _speechlike(16000)
    codes = from_run.encode(audio, 16000)
    assert codes.shape == (4, 20)
    exported_codes = exported.encode(audio, 16000)  # float16 storage may flip a rare near-tie, not most codes
    assert (exported_codes == codes[:2]).mean() > 0.9
    assert exported.decode(exported_codes).shape == (20 * 320,)
