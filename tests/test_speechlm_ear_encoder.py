"""The ear encoder: a CTC-trained encoder of the Whisper ear's rows (`voice train hearing --ear`) that a
speech LM reads, frozen, beside the rows. It streams chunk by chunk like the whole turn, it learns to
spell, the LM reads it at the user's frames only, and the generator reproduces the whole forward pass
in any chunking of the rows (`tests/test_speechlm_ear.py`, with `encoder=True`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voice.fp16_gemm import fbgemm_available
from voice.speechlm.hearing import HearingConfig, HearingEncoder, HearingStream, PackedHearing
from voice.speechlm.whisper_ear import FEATURE_DIM

EAR = {"kind": "ear", "dim": FEATURE_DIM, "chunk": 5, "context": 7}


def _encoder(seed: int = 0, hidden: int = 32) -> HearingEncoder:
    torch.manual_seed(seed)
    return HearingEncoder(HearingConfig(num_codebooks=0, hidden=hidden, codec_id="ear-test", input_dim=FEATURE_DIM)).eval()


def _rows(frames: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((frames, FEATURE_DIM)).astype(np.float32)


def _float16_exact(enc: HearingEncoder) -> HearingEncoder:
    """Its weights rounded to float16 (as the shipped speech LM stores them), so that they can be packed."""
    with torch.no_grad():
        for p in enc.parameters():
            p.copy_(p.half().float())
    return enc


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("sizes", [[19], [1] * 19, [4, 0, 9, 6], [2, 17]])
def test_streamed_rows_give_the_whole_turns_features(sizes, packed) -> None:
    """Any chunking gives the whole turn's features, through the torch modules or the float16-packed weights."""
    enc, rows = _float16_exact(_encoder()), _rows(19, 1)
    pack = PackedHearing.of(enc) if packed else None
    if packed and not fbgemm_available():
        pytest.skip("this PyTorch has no fbgemm (not x86)")
    assert (pack is not None) == packed
    with torch.no_grad():
        whole = enc(torch.from_numpy(rows).T[None], torch.tensor([19]))[0]
    stream, got, at = HearingStream(enc, pack), [], 0
    for n in sizes:
        got.append(stream.push(rows[at:at + n]))
        at += n
    got.append(stream.finish())
    assert torch.allclose(torch.cat(got), whole, atol=1e-5)


def test_weights_that_float16_does_not_hold_are_not_packed() -> None:
    """A float32 encoder (one being trained) streams through its torch modules: packing would round it."""
    assert PackedHearing.of(_encoder()) is None
    if fbgemm_available():
        assert PackedHearing.of(_float16_exact(_encoder())) is not None


def test_it_reads_float_rows_of_its_width_only() -> None:
    enc = _encoder()
    with pytest.raises(ValueError, match="float features"):
        enc(torch.zeros(1, 8, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="float features"):
        enc(torch.zeros(1, FEATURE_DIM + 1, 5))


def test_ctc_training_on_rows_lowers_the_loss(tmp_path) -> None:
    from voice.speechlm.hearing_train import Utterance, collate, ctc_loss, transcribe

    rng = np.random.default_rng(0)
    letters = {c: rng.standard_normal(FEATURE_DIM).astype(np.float32) for c in "abc "}
    texts = ["abc", "cab", "a b", "ba", "cc a"]
    items = [Utterance(np.stack([letters[c] for c in t for _ in range(4)]).T.copy(), t, "v") for t in texts]
    enc = _encoder(hidden=64).train()
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-2)
    losses = []
    for _ in range(200):
        loss = ctc_loss(enc, *collate(items, 0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    enc.eval()
    heard = transcribe(enc, items)
    assert sum(h == t for h, t in zip(heard, texts)) >= 3, (heard, losses[::20])
    enc.save(tmp_path / "ear.pt")
    again = HearingEncoder.load(tmp_path / "ear.pt")
    assert again.config.reads_features and again.config.input_dim == FEATURE_DIM


def ear_encoder_lm(seed: int = 0):
    from dataclasses import asdict

    from tests.test_speechlm import tiny_config
    from voice.speechlm.model import SpeechLM

    enc = _encoder(seed + 10)
    torch.manual_seed(seed)
    cfg = tiny_config(hearing={**EAR, "encoder": asdict(enc.config)})
    model = SpeechLM(cfg, codebooks=torch.randn(cfg.num_codebooks, cfg.codebook_size, cfg.codec_dim)).eval()
    model.ear_encoder.load_state_dict(enc.state_dict())
    with torch.no_grad():                # projections large enough to matter
        model.ear_encoder_proj.weight.normal_(0, 0.5)
        for p in model.hearing_proj.parameters():
            p.normal_(0, 0.5)
    return model


def test_the_lm_reads_the_encoder_at_user_turns_and_saves_it(tmp_path) -> None:
    from tests.test_speechlm import codes, tokenize
    from voice.speechlm.batch import collate, lm_loss
    from voice.speechlm.format import Example, Turn, layout_example
    from voice.speechlm.model import SpeechLM

    model = ear_encoder_lm()
    assert model.config.reads_ear and model.ear_encoder is not None and model.hearing is None
    assert not any(p.requires_grad for p in model.ear_encoder.parameters())
    example = Example("s2s", "it is noon.", [Turn("user", "hi", codes(3, 9, 1), _rows(9, 1)),
                                             Turn("assistant", "hello.", codes(3, 12, 2))])
    steps = layout_example(example, model.config.vocab, model.config.layout, tokenize)
    batch = collate([steps], model.config.vocab)
    model.train()
    lm_loss(model, batch).loss.backward()
    assert model.ear_encoder_proj.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        full = model(batch.text, batch.audio, user_ear=batch.user_ear, user_spans=batch.user_spans)[1]
        model.ear_encoder_proj.weight.mul_(0)
        rows_only = model(batch.text, batch.audio, user_ear=batch.user_ear, user_spans=batch.user_spans)[1]
    assert not torch.allclose(full, rows_only, atol=1e-4)          # the encoder's features change the output
    model = ear_encoder_lm()
    model.save_pretrained(tmp_path)
    again = SpeechLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert torch.equal(again.ear_encoder.conv1.weight, model.ear_encoder.conv1.weight)
    with torch.no_grad():
        a = again(batch.text, batch.audio, user_ear=batch.user_ear, user_spans=batch.user_spans)[1]
        b = model(batch.text, batch.audio, user_ear=batch.user_ear, user_spans=batch.user_spans)[1]
    assert torch.allclose(a, b, atol=1e-5)


def test_an_ear_encoder_of_another_width_or_without_the_ear_is_refused() -> None:
    from dataclasses import asdict

    from tests.test_speechlm import tiny_config
    from voice.speechlm.model import SpeechLM

    wrong = HearingConfig(num_codebooks=0, hidden=16, input_dim=FEATURE_DIM - 1)
    with pytest.raises(ValueError, match="wide rows"):
        SpeechLM(tiny_config(hearing={**EAR, "encoder": asdict(wrong)}))


def test_a_corpus_without_the_ear_cache_is_refused(tmp_path) -> None:
    from voice.speechlm.hearing_train import ear_utterances

    with pytest.raises(SystemExit, match="voice data ear"):
        ear_utterances(tmp_path, "train")


def test_speed_perturbation_plays_faster_and_higher_with_a_factor_fixed_per_utterance() -> None:
    from voice.speechlm.ear_cache import SPEED_RANGE, speed_factor, speed_perturb

    rate = 16000
    t = np.arange(rate) / rate
    tone = np.sin(2 * np.pi * 200 * t).astype(np.float32)
    fast = speed_perturb(tone, 1.1, rate)
    assert abs(len(fast) - rate / 1.1) <= 1                             # 10% shorter
    peak = np.argmax(np.abs(np.fft.rfft(fast))) * rate / len(fast)
    assert abs(peak - 220) < 2                                          # and 10% higher
    assert speed_perturb(tone, 1.0, rate) is tone
    factors = [speed_factor(f"u{i}", 1) for i in range(200)]
    assert all(SPEED_RANGE[0] <= f <= SPEED_RANGE[1] for f in factors) and len(set(factors)) > 10
    assert speed_factor("u1", 1) == speed_factor("u1", 1) != speed_factor("u1", 2)


def test_a_model_made_from_another_keeps_its_own_ear_encoder() -> None:
    """`voice train lm --init OLD --hearing-encoder NEW`: the brain and projections come from OLD, the
    frozen encoder stays NEW's although OLD holds one of the same shape."""
    from voice.speechlm.cli import take_weights

    old, new = ear_encoder_lm(seed=0), ear_encoder_lm(seed=1)
    mine = {k: v.clone() for k, v in new.ear_encoder.state_dict().items()}
    theirs = old.ear_encoder.state_dict()
    assert any(not torch.equal(v, theirs[k]) for k, v in mine.items())     # the two encoders differ
    taken, fresh = take_weights(new, old)
    assert taken > 0 and fresh == []
    assert all(torch.equal(v, mine[k]) for k, v in new.ear_encoder.state_dict().items())
    assert torch.equal(new.ear_encoder_proj.weight, old.ear_encoder_proj.weight)


def test_a_model_of_fewer_codebooks_takes_the_first_codebooks_of_its_init() -> None:
    """`voice train lm --init OLD --num-codebooks 2` from a model of 3: the first 2 codebooks' embeddings and
    head rows come from OLD (the head's rows are codebook by codebook), and so does everything else."""
    from tests.test_speechlm import tiny_model
    from voice.speechlm.cli import take_weights

    old, new = tiny_model(0, num_codebooks=3, delays=[0, 1, 2]), tiny_model(1, num_codebooks=2, delays=[0, 1])
    taken, fresh = take_weights(new, old)
    assert fresh == [] and taken == len(new.state_dict())
    rows = 2 * (old.config.codebook_size + 1)
    assert torch.equal(new.audio_head.weight, old.audio_head.weight[:rows])
    assert torch.equal(new.audio_proj, old.audio_proj[:2]) and torch.equal(new.codebooks, old.codebooks[:2])
    # the first two codebooks' logits of the same hidden state agree
    h = torch.randn(1, 1, old.config.hidden_size)
    torch.testing.assert_close(new.audio_logits(h, 2), old.audio_logits(h, 2))
