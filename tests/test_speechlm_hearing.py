"""The hearing encoder: chunk-by-chunk features equal the whole turn's, batches with padding equal single
turns, CTC spelling and decoding, and a few training steps that lower the loss on real codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voice.speechlm.hearing import (CHARS, HearingConfig, HearingEncoder, HearingStream, char_ids, ctc_greedy,
                                    normalize_chars)


def _encoder(seed: int = 0, k: int = 2) -> HearingEncoder:
    torch.manual_seed(seed)
    return HearingEncoder(HearingConfig(num_codebooks=k, codebook_size=16, codec_dim=8, hidden=12),
                          torch.randn(k, 16, 8)).eval()


@pytest.mark.parametrize("sizes", [[1] * 37, [3, 5, 1, 7, 21], [37], [2, 2, 33], [0, 4, 0, 33]])
def test_streamed_features_equal_the_whole_turn(sizes) -> None:
    enc = _encoder()
    codes = torch.randint(0, 16, (2, 37))
    whole = enc(codes[None])[0]
    stream, got, i = HearingStream(enc), [], 0
    for n in sizes:
        part = stream.push(codes[:, i:i + n])
        i += n
        assert part.shape[0] <= max(0, i - enc.config.lookahead), "a feature needs its lookahead frames first"
        got.append(part)
    got.append(stream.finish())
    got = torch.cat(got)
    assert got.shape == whole.shape
    assert torch.allclose(got, whole, atol=1e-5)


@pytest.mark.parametrize("last", [0, 1, 6])
def test_finishing_with_the_last_frames_equals_pushing_them_first(last) -> None:
    enc = _encoder(2)
    codes = torch.randint(0, 16, (2, 20))
    whole = enc(codes[None])[0]
    stream = HearingStream(enc)
    head = stream.push(codes[:, : 20 - last])
    got = torch.cat([head, stream.finish(codes[:, 20 - last:])])
    assert torch.allclose(got, whole, atol=1e-5)


def test_a_padded_batch_equals_each_turn_alone() -> None:
    enc = _encoder(1)
    a, b = torch.randint(0, 16, (2, 23)), torch.randint(0, 16, (2, 40))
    batch = torch.zeros(2, 2, 40, dtype=torch.long)
    batch[0, :, :23], batch[1] = a, b
    out = enc(batch, torch.tensor([23, 40]))
    assert torch.allclose(out[0, :23], enc(a[None])[0], atol=1e-5)
    assert torch.allclose(out[1], enc(b[None])[0], atol=1e-5)


def test_it_refuses_fewer_codebooks_than_it_reads() -> None:
    with pytest.raises(ValueError, match="reads 2 codebooks"):
        _encoder()(torch.zeros(1, 1, 5, dtype=torch.long))


def test_spelling_and_greedy_decoding() -> None:
    assert normalize_chars("What's 12 times 3?  Well-known!") == "what's 12 times 3 well known"
    ids = char_ids("ab b")
    assert all(1 <= i <= len(CHARS) for i in ids)
    a, b, space = ids[0], ids[1], ids[2]
    assert ctc_greedy([0, a, a, 0, b, space, 0, b, b, 0]) == "ab b"
    assert ctc_greedy([b, 0, b]) == "bb"           # a blank between repeats keeps both


def test_save_and_load_round_trip(tmp_path) -> None:
    enc = _encoder(2)
    enc.save(tmp_path / "h.pt")
    again = HearingEncoder.load(tmp_path / "h.pt")
    codes = torch.randint(0, 16, (1, 2, 11))
    assert torch.equal(enc(codes), again(codes))


def test_ctc_training_lowers_the_loss_on_real_codes() -> None:
    import soundfile as sf

    from tests.conftest import SPEECH_DIR, speech_transcripts
    from voice.codec.loader import load_codec
    from voice.speechlm.hearing_train import Utterance, collate, ctc_loss

    codec = load_codec("compact")
    items = []
    for name, text in list(speech_transcripts().items())[:3]:
        audio, rate = sf.read(str(SPEECH_DIR / name), dtype="float32", always_2d=True)
        codes = codec.encode(audio[: rate * 3, 0], rate)
        items.append(Utterance(np.asarray(codes), " ".join(text.split()[:8]), "real"))
    torch.manual_seed(0)
    enc = HearingEncoder(HearingConfig(hidden=64, gru_layers=1, codec_id="x"), codec.codebook_vectors())
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    batch = collate(items, 8)
    first = ctc_loss(enc, *batch).item()
    for _ in range(40):
        loss = ctc_loss(enc, *batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first, (first, loss.item())


def _lm_with_hearing(seed: int = 0, hearing_input: str = "features"):
    from dataclasses import asdict

    from tests.test_speechlm import tiny_config

    cfg = tiny_config()
    torch.manual_seed(seed)
    books = torch.randn(cfg.num_codebooks, cfg.codebook_size, cfg.codec_dim)
    enc = HearingEncoder(HearingConfig(num_codebooks=2, codebook_size=cfg.codebook_size, codec_dim=cfg.codec_dim,
                                       hidden=12), books)
    from voice.speechlm.model import SpeechLM

    cfg.hearing, cfg.hearing_input = asdict(enc.config), hearing_input
    model = SpeechLM(cfg, codebooks=books)
    model.hearing.load_state_dict(enc.state_dict())
    return model.eval(), enc


def test_the_lm_reads_each_user_turn_through_the_frozen_encoder(tmp_path) -> None:
    from tests.test_speechlm import s2s_example, tokenize
    from voice.speechlm.batch import collate, lm_loss
    from voice.speechlm.format import layout_example
    from voice.speechlm.model import SpeechLM

    model, enc = _lm_with_hearing()
    steps = layout_example(s2s_example(), model.config.vocab, model.config.layout, tokenize)
    batch = collate([steps], model.config.vocab)
    assert len(batch.user_spans) == 2
    feats = model.user_features(batch.audio, batch.user_spans)
    for _, a, e, _ in batch.user_spans:             # each turn alone, as the streaming generator sees it
        assert torch.allclose(feats[0, a:e], enc(batch.audio[:, :2, a:e])[0], atol=1e-5)
    outside = torch.ones(feats.shape[1], dtype=torch.bool)
    for _, a, e, _ in batch.user_spans:
        outside[a:e] = False
    assert feats[0, outside].abs().sum() == 0
    before = {n: p.clone() for n, p in model.hearing.named_parameters()}
    model.train()
    lm_loss(model, batch).loss.backward()
    assert all(p.grad is None for p in model.hearing.parameters()), "the encoder stays frozen"
    assert model.hearing_proj.weight.grad is not None and model.hearing_proj.weight.grad.abs().sum() > 0
    assert all(torch.equal(p, before[n]) for n, p in model.hearing.named_parameters())
    model.eval()
    model.save_pretrained(tmp_path)
    again = SpeechLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(batch.text, batch.audio, user_spans=batch.user_spans)
        got = again(batch.text, batch.audio, user_spans=batch.user_spans)
    assert torch.allclose(ref[1], got[1], atol=1e-5)


@pytest.mark.parametrize("chunk,hearing_input", [(1, "features"), (3, "features"), (50, "features"), (3, "chars")])
def test_the_generator_streams_a_turn_through_the_encoder_like_the_whole_forward(chunk, hearing_input) -> None:
    from tests.test_speechlm import codes, tokenize
    from voice.speechlm.generate import SpeechGenerator

    model, _ = _lm_with_hearing(3, hearing_input)
    v = model.config.vocab
    context, user = tokenize("it is noon."), codes(3, 17, 5)
    gen = SpeechGenerator(model, max_sessions=1)
    session = gen.open()
    gen.feed_text(session, "context", context)
    for i in range(0, user.shape[1], chunk):
        gen.feed_user_speech(session, user[:, i:i + chunk])
        assert gen.length(session) == 1 + len(context) + 1 + min(i + chunk, user.shape[1])
    gen.close_user_turn(session)
    none = [v.audio_none] * 3
    hidden = gen._feed(session, [v.special("assistant_speech")], [none])
    # the same steps in one forward pass, the user's turn read by the encoder as a whole
    text = [v.special("context"), *context, v.special("user_speech")] + [v.special("pad")] * 17 + [v.special("assistant_speech")]
    audio = [none] * (len(context) + 2) + user.T.tolist() + [none]
    start = len(context) + 2
    t, a = torch.tensor([text]), torch.tensor([audio]).permute(0, 2, 1)
    with torch.no_grad():
        ref_text, ref_audio = model(t, a, user_spans=[(0, start, start + 17)])
        got_text, got_audio = model.heads(hidden[None])
    assert torch.allclose(got_audio[0, -1], ref_audio[0, -1], atol=1e-4)
    assert torch.allclose(got_text[0, -1], ref_text[0, -1], atol=1e-4)
    with torch.no_grad():     # and the features matter: without them the answer's start differs
        plain_text, _ = model(t, a)
    assert not torch.allclose(plain_text[0, -1], ref_text[0, -1], atol=1e-4)


def test_chars_input_reads_the_encoder_posteriors() -> None:
    from tests.test_speechlm import tiny_config
    from voice.speechlm.model import SpeechLM

    model, enc = _lm_with_hearing(4, "chars")
    assert model.hearing_proj.in_features == len(CHARS) + 1
    feats = enc(torch.randint(0, 16, (1, 2, 9)))
    probs = model.hearing_read(feats)
    assert torch.allclose(probs.sum(-1), torch.ones(1, 9)) and torch.allclose(probs, enc.ctc_logits(feats).softmax(-1))
    cfg = tiny_config()
    cfg.hearing, cfg.hearing_input = model.config.hearing, "spectrogram"
    with pytest.raises(ValueError, match="features or chars"):
        SpeechLM(cfg)


def test_an_encoder_for_another_codec_or_more_codebooks_is_refused() -> None:
    from voice.speechlm.train import _hearing_config

    enc = HearingEncoder(HearingConfig(num_codebooks=4, codebook_size=16, codec_dim=8, hidden=12, codec_id="compact-a-k8"))
    assert _hearing_config(enc, "compact-a-k8", 8)["num_codebooks"] == 4
    with pytest.raises(ValueError, match="reads codes of compact-a-k8, not compact-b-k8"):
        _hearing_config(enc, "compact-b-k8", 8)
    with pytest.raises(ValueError, match="reads 4 codebooks; the model hears only 2"):
        _hearing_config(enc, "compact-a-k8", 2)
