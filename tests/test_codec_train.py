"""Codec training: a tiny run trains, saves sharded checkpoints, resumes, and tokenizes a tiny corpus."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from voice.codec.compact import CompactCodecConfig
from voice.codec.dataset import AudioPool, CropSampler
from voice.codec.evaluate import normalize_text
from voice.codec.train import TrainConfig, load_checkpoint

TINY = CompactCodecConfig(encoder_filters=4, decoder_dim=16, decoder_hidden=32, decoder_layers=1, num_codebooks=2,
                          codebook_size=16, latent_dim=16)


def _pools(seconds: float = 3.0) -> dict:
    rng = np.random.default_rng(0)
    t = np.arange(int(16000 * seconds)) / 16000
    voiced = (0.3 * np.sin(2 * np.pi * 150 * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
    return {"assistant": AudioPool(voiced, seconds), "user": AudioPool(voiced[::-1].copy(), seconds)}


def test_crop_sampler_shapes_and_levels():
    sampler = CropSampler(_pools(), segment_samples=640, assistant_share=0.5)
    batch = sampler.batch(4)
    assert batch.shape == (4, 1, 640) and batch.dtype == np.float32
    assert np.abs(batch).max() <= 0.99 + 1e-6


def test_speed_augmentation_shifts_pitch_by_the_chosen_ratio():
    from voice.codec.dataset import speed_ratios

    assert speed_ratios(0.8, 1.25) == [13, 14, 15, 17, 18, 19, 20]
    with pytest.raises(ValueError):
        speed_ratios(0.2, 1.0)
    t = np.arange(16000 * 4) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    pools = {"assistant": AudioPool(tone, 4.0), "user": AudioPool(tone, 4.0)}
    sampler = CropSampler(pools, 16000, 0.5, speed_range=(1.25, 1.25), speed_prob=1.0)
    crop = sampler.batch(1)[0, 0]
    peak_hz = np.argmax(np.abs(np.fft.rfft(crop))) * 16000 / len(crop)
    assert abs(peak_hz - 250) <= 2  # 200 Hz played 20/16 times faster
    plain = CropSampler(pools, 16000, 0.5).batch(1)[0, 0]
    assert abs(np.argmax(np.abs(np.fft.rfft(plain))) * 16000 / len(plain) - 200) <= 2


@pytest.mark.parametrize("audio_format", ["flac", "opus"])
def test_packed_pools_load_back(tmp_path, audio_format):
    from voice.codec.dataset import load_pools, pack_pools

    pools = _pools(3.0)
    info = pack_pools(pools, tmp_path / "pack", 16000, audio_format=audio_format)
    assert info["format"] == audio_format
    loaded = load_pools([tmp_path / "pack"], 16000)
    for group, pool in pools.items():
        back = loaded[group].audio
        assert abs(len(back) - len(pool.audio)) <= 16000 // 50  # the container may pad a little
        n = min(len(back), len(pool.audio))
        snr = 10 * np.log10(np.sum(pool.audio[:n] ** 2) / np.sum((pool.audio[:n] - back[:n]) ** 2))
        assert snr > (60 if audio_format == "flac" else 12), snr
    with pytest.raises(ValueError):
        pack_pools(pools, tmp_path / "bad", 16000, audio_format="mp4")


@pytest.mark.slow
def test_tiny_training_run_saves_and_resumes(tmp_path):
    from voice.codec.trainer import Trainer

    torch.set_num_threads(1)
    config = TrainConfig(steps=3, batch_size=2, segment_frames=8, warmup_steps=1, adversarial_from_step=2,
                         disc_filters=4)
    trainer = Trainer(tmp_path / "run", TINY, config)
    sampler = CropSampler(_pools(), 8 * TINY.hop_length, 0.5)
    stats = trainer.run(sampler, progress=False)
    assert trainer.step == 3 and "disc" in stats and np.isfinite(stats["mel"])
    payload, tensors = load_checkpoint(tmp_path / "run")
    assert payload["step"] == 3 and any(k.startswith("opt_g.") for k in tensors)
    resumed = Trainer(tmp_path / "run", CompactCodecConfig(), TrainConfig(**{**config.__dict__, "steps": 5}))
    assert resumed.step == 3 and resumed.model_config == TINY and resumed.restored_optimizer
    resumed.run(sampler, progress=False)
    assert load_checkpoint(tmp_path / "run")[0]["step"] == 5
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) >= 0


@pytest.mark.slow
def test_tokenize_tiny_corpus_is_cached(tmp_path):
    import soundfile as sf

    from voice.codec.compact import CompactCodec
    from voice.codec.loader import export_run
    from voice.codec.tokenize import load_tokens, tokenize_corpus
    from voice.codec.train import _prefixed, save_checkpoint

    model = CompactCodec(TINY)
    for layer in model.quantizer.vq.layers:
        layer._codebook.embed.data.normal_()
        layer._codebook.inited.fill_(1)
    ckpt = model.checkpoint()
    save_checkpoint(tmp_path / "run", {"step": 1, "model_config": ckpt["config"]}, _prefixed("model.", ckpt["state_dict"]))
    export_run(tmp_path / "run", tmp_path / "codec.pt")
    corpus = tmp_path / "corpus"
    (corpus / "wav" / "00000").mkdir(parents=True)
    rows = []
    for i in range(2):
        sf.write(str(corpus / "wav" / "00000" / f"u{i}.wav"), _pools(0.5 + i)["assistant"].audio, 16000)
        rows.append({"id": f"u{i}", "wav": f"wav/00000/u{i}.wav", "split": "train", "role": "user"})
    (corpus / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    first = tokenize_corpus(str(tmp_path / "codec.pt"), corpus)
    again = tokenize_corpus(str(tmp_path / "codec.pt"), corpus)
    assert first["encoded_now"] == 2 and again["encoded_now"] == 0 and first["frames"] == 25 + 75
    assert load_tokens(corpus, first["codec_id"], "u1").shape == (2, 75)


def test_normalize_text_treats_number_words_and_digits_alike():
    assert normalize_text("Three kilograms is 3,000 grams.") == normalize_text("3 kilograms is three thousand grams")
    assert normalize_text("That's twenty-five!") == "that's 25"


def test_eval_report_pieces_with_a_stub_recognizer(tmp_path):
    """WER bookkeeping and the speed test, with a stand-in recognizer (Whisper itself is too slow here)."""
    import soundfile as sf

    from voice.codec.compact import CompactCodec
    from voice.codec.evaluate import format_report, intelligibility, streaming_rtf

    class Segment:
        def __init__(self, text):
            self.text = text

    class StubWhisper:  # hears "what day is it" in everything
        def transcribe(self, audio, **kwargs):
            return [Segment("What day is it?")], None

    codec = CompactCodec(TINY).eval().streaming()
    path = tmp_path / "a.wav"
    sf.write(str(path), _pools(0.5)["assistant"].audio, 22050)  # another rate: converted on the way
    items = [{"set": "corpus_user", "path": path, "text": "what day is it", "voice": "x"},
             {"set": "corpus_user", "path": path, "text": "what time is it now", "voice": "y"}]
    report = intelligibility(codec, items, StubWhisper())["corpus_user"]
    assert report["utterances"] == 2 and report["wer_original"] == report["wer_resynth"] == round(100 * 2 / 9, 2)  # time->day, -now
    assert report["by_voice"]["x"]["wer_original"] == 0 and report["by_voice"]["y"]["wer_original"] == 40
    speed = streaming_rtf(codec, _pools(1.0)["assistant"].audio, chunk_frames=2)
    assert speed["rtf"] > 0 and speed["chunk_frames"] == 2 and speed["audio_s"] == 1.0
    text = format_report({"codec": codec.describe(), "lookahead_ms": 40.0, "parameters": 1,
                          "intelligibility": {"corpus_user": report}, "streaming": speed})
    assert "WER original" in text and "RTF" in text
    assert any(line.strip().startswith("y ") for line in text.splitlines())  # the per-voice line


def test_eval_sets_filter_the_corpus_items(tmp_path):
    from voice.codec.evaluate import corpus_items, evaluate_codec

    rows = [{"id": f"u{i}", "wav": f"wav/u{i}.wav", "split": "test", "role": role, "text": "hi", "voice": "v"}
            for i, role in enumerate(["assistant", "user"] * 3)]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [i["set"] for i in corpus_items(tmp_path, 3)] == ["corpus_assistant", "corpus_user", "corpus_assistant"]
    assert [i["set"] for i in corpus_items(tmp_path, 3, ("corpus_user",))] == ["corpus_user"] * 3
    with pytest.raises(ValueError, match="unknown evaluation sets"):
        evaluate_codec("compact", tmp_path, None, sets=("corpus_users",))
