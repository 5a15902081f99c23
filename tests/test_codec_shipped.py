"""The compact codec that ships in models/: its card's facts, streaming on real speech, intelligibility."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import SPEECH_DIR, speech_transcripts

# Real recordings (voice/assets/speech) the checks below resynthesize: read speech, several speakers.
CLIPS = ["lh_librispeech_2412-153948-0000.wav", "sb_example1_birch_canoe.wav", "ds_LDC93S1.wav",
         "ps_librivox_sense_0890.wav", "sb_timit_spk1_snt5.wav"]


@pytest.fixture(scope="module")
def codec():
    from voice.codec.loader import load_codec

    return load_codec("compact")


def _clip(name: str) -> np.ndarray:
    import soundfile as sf

    path = SPEECH_DIR / name
    audio, rate = sf.read(str(path), dtype="float32")
    assert rate == 16000
    return audio


def test_shipped_codec_matches_its_model_card(codec):
    facts = codec.describe()
    assert (facts["sample_rate_hz"], facts["frame_rate_hz"], facts["num_codebooks"], facts["codebook_size"]) == \
        (16000, 50.0, 8, 1024)
    assert facts["bitrate_bps"] == 4000 and codec.lookahead_samples == 640


def test_shipped_codec_streams_real_speech_like_the_whole_signal(codec):
    audio = _clip(CLIPS[0])[: 16000 * 4]
    whole_codes = codec.encode(audio, 16000)
    state = codec.new_state()
    codes = [codec.encode_step(state, audio[i: i + 320]) for i in range(0, len(audio), 320)]
    codes.append(codec.flush_encode(state))
    assert np.array_equal(np.concatenate(codes, axis=1), whole_codes)
    whole_pcm = codec.decode(whole_codes)
    state = codec.new_state()
    pieces = [codec.decode_step(state, whole_codes[:, i: i + 2]) for i in range(0, whole_codes.shape[1], 2)]
    streamed = np.concatenate(pieces + [codec.flush_decode(state)])[codec.decoder_delay_samples:]
    assert streamed.shape == whole_pcm.shape and np.abs(streamed - whole_pcm).max() < 1e-4


def test_shipped_codec_keeps_real_speech_intelligible(codec):
    """Whisper tiny.en on resynthesized real recordings: a trained codec stays close to the originals.

    Measured with the shipped checkpoint (2026-11-26): WER 2.6 % on the originals of these
    clips and 6.5 % on their resynthesis; an untrained codec of the same shape gives 100 %.
    """
    from voice.codec.evaluate import _wer, load_whisper, normalize_text, transcribe

    whisper = load_whisper()
    texts = speech_transcripts()
    refs, originals, resynths = [], [], []
    for name in CLIPS:
        audio = _clip(name)
        resynth = codec.decode(codec.encode(audio, 16000))
        assert abs(len(resynth) - len(audio)) < codec.hop_length  # the last partial frame is padded
        refs.append(normalize_text(texts[name]))
        originals.append(normalize_text(transcribe(whisper, audio)))
        resynths.append(normalize_text(transcribe(whisper, resynth)))
    wer_original, wer_resynth = _wer(refs, originals), _wer(refs, resynths)
    assert wer_resynth <= 15.0 and wer_resynth <= wer_original + 10.0, (wer_original, wer_resynth, resynths)
