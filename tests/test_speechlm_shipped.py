"""The speech LM that ships in models/speechlm: its card's facts, its codec, a streamed answer to real speech."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

MODEL = Path(__file__).resolve().parents[1] / "models" / "speechlm"


@pytest.fixture(scope="module")
def shipped():
    import torch

    from voice.speechlm.cli import load_text_ids
    from voice.speechlm.model import SpeechLM

    return SpeechLM.from_pretrained(MODEL, dtype=torch.float32).eval(), load_text_ids(MODEL)


def test_the_card_names_the_weights_that_ship() -> None:
    card = (MODEL / "MODEL_CARD.md").read_text()
    digest = hashlib.sha256((MODEL / "model.safetensors").read_bytes()).hexdigest()
    assert digest in card, "MODEL_CARD.md must quote the sha256 of model.safetensors"
    assert (MODEL / "model.safetensors").stat().st_size < 40 * 2**20
    assert re.search(r"voice eval lm", card), "the card quotes its evaluation command"


def test_it_reads_the_shipped_codec_and_its_text_ids(shipped) -> None:
    from voice.codec.loader import load_codec
    from voice.codec.tokenize import cache_id

    model, text = shipped
    codec = load_codec("compact", model.config.num_codebooks)
    assert model.config.codec_id == cache_id(load_codec("compact"))
    assert text.size == model.config.text_vocab_size
    assert text.decode(text.encode("What is 12 times 3?")) == "What is 12 times 3?"
    assert codec.num_codebooks == model.config.num_codebooks


def test_a_real_recording_gets_a_streamed_answer_that_ends(shipped) -> None:
    import soundfile as sf

    from tests.conftest import SPEECH_DIR
    from tests.test_speechlm import _answer
    from voice.codec.loader import load_codec
    from voice.speechlm.generate import Sampling, SpeechGenerator

    model, text = shipped
    codec = load_codec("compact", model.config.num_codebooks)
    audio, rate = sf.read(str(SPEECH_DIR / "sb_example1_birch_canoe.wav"), dtype="float32")
    codes = codec.encode(audio[: rate * 3], rate)
    gen = SpeechGenerator(model, max_sessions=1, sampling=Sampling(max_frames=250), tokenize=text.encode)
    session = gen.open()
    gen.feed_text(session, "context", text.encode("It is Wednesday, 2 December 2026, 15:30."))
    assert rate == 16000
    pcm = audio[: rate * 3] if model.config.reads_ear else None    # what the Whisper ear hears, beside the codes
    for i in range(0, codes.shape[1], 2):                     # prefilled as the user speaks
        gen.feed_user_speech(session, codes[:, i:i + 2], pcm=None if pcm is None else pcm[i * 320:(i + 2) * 320])
    words, answer = _answer(gen, session, max_steps=400)      # ends by END or the frame cap
    assert not session.answering, "the answer must end (END or the frame cap)"
    gen.close(session)
    assert isinstance(text.decode(words), str)
    assert answer.shape[0] == model.config.num_codebooks and 0 < answer.shape[1] <= 250
    assert answer.min() >= 0 and answer.max() < model.config.codebook_size
