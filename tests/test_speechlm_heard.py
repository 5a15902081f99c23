"""Heard text: the hearing encoder's greedy spelling of the user's words, in the user block's text stream.

The speller streams like the whole turn; words wait in a queue for text steps, and what is still waiting
at the turn's end goes in text-only steps; training's layout and the live generator write the same ids at
the same steps, in any chunking, for an ear encoder and an encoder of codes; and the model's forward over
the laid-out steps equals the generator's cached steps."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from voice.speechlm.heard import HeardQueue, Speller, heard_steps, spell_turn, spoil, spoil_and_snap
from voice.speechlm.hearing import CHARS

SPACE, A, B = CHARS.index(" ") + 1, CHARS.index("a") + 1, CHARS.index("b") + 1


def test_the_speller_writes_each_word_where_it_is_complete() -> None:
    labels = [0, A, A, 0, B, SPACE, SPACE, 0, B, 0, B, A, 0]       # "ab" complete at frame 5; "bba" at the end
    speller = Speller()
    assert speller.push(labels) == [(5, "ab")]
    assert speller.finish() == [(13, "bba")]
    for cut in range(len(labels) + 1):                              # chunk by chunk: the same words and frames
        s = Speller()
        assert s.push(labels[:cut]) + s.push(labels[cut:]) + s.finish() == [(5, "ab"), (13, "bba")]
    s = Speller()
    assert s.push([0, SPACE, 0, SPACE]) == [] and s.finish() == []  # spaces alone make no word


def test_words_wait_for_text_steps_and_the_rest_goes_after_the_last_frame() -> None:
    tokenize = lambda text: [ord(c) for c in text]                  # noqa: E731  one id per character
    pad = -1
    ids, tail = heard_steps([(1, "hi"), (2, "yo")], 5, tokenize, pad)
    assert ids == [pad, ord("h"), ord("i"), ord(" "), ord("y")] and tail == [ord("o")]
    ids, tail = heard_steps([(5, "ok")], 5, tokenize, pad)          # a word complete at the turn's end
    assert ids == [pad] * 5 and tail == [ord("o"), ord("k")]
    queue = HeardQueue(tokenize, pad)
    assert [queue.frame(w) for w in (["a"], [], ["b"], [])] == [ord("a"), pad, ord(" "), ord("b")]
    assert queue.tail() == []


def test_spoiling_keeps_the_frames_and_is_reproducible() -> None:
    heard = [(3, "twelve"), (9, "plus"), (20, "seventeen")]
    assert spoil(heard, 0.0, np.random.default_rng(0)) == heard
    a = spoil(heard, 0.3, np.random.default_rng(1))
    assert a == spoil(heard, 0.3, np.random.default_rng(1)) and a != heard
    assert {f for f, _ in a} <= {3, 9, 20}
    noisy = [spoil(heard, 0.3, np.random.default_rng(s)) for s in range(200)]
    changed = np.mean([sum(x != y for x, y in zip("".join(w for _, w in n), "twelveplusseventeen")) > 0 for n in noisy])
    assert changed > 0.9


def test_spoiled_words_are_snapped_as_the_generator_snaps_them() -> None:
    from voice.speechlm.lexicon import WordSnapper

    heard = [(3, "whats"), (9, "twelve"), (12, "plus"), (20, "7")]
    snap = WordSnapper(["whats", "twelve", "plus", "minus"])
    assert spoil_and_snap(heard, 0.0, np.random.default_rng(0), snap) == heard
    assert spoil_and_snap([(1, "plas"), (2, "qqqqq")], 0.0, np.random.default_rng(0), snap) == [(1, "plus"), (2, "qqqqq")]
    for seed in range(50):
        rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
        spoiled, snapped = spoil(heard, 0.3, rng_a), spoil_and_snap(heard, 0.3, rng_b, snap)
        assert [f for f, _ in snapped] == [f for f, _ in spoiled]            # the same mistakes, then snapped
        assert snapped == [(f, snap(w)) for f, w in spoiled]
    many = [w for seed in range(200) for _, w in spoil_and_snap(heard[:3], 0.3, np.random.default_rng(seed), snap)]
    assert np.mean([w in snap.known for w in many]) > np.mean([w in snap.known for seed in range(200)
                                                                for _, w in spoil(heard[:3], 0.3, np.random.default_rng(seed))])


def _spelling_head(encoder, x: torch.Tensor) -> None:
    """A CTC head that spells only blank, space, 'a' and 'b' from how the features of input `x` vary about their
    mean, so a random encoder makes many short words of it."""
    with torch.no_grad():
        feats = encoder(x)[0]
        mean, std = feats.mean(0), feats.std(0) + 1e-6
        keep = torch.zeros(len(CHARS) + 1, dtype=torch.bool)
        keep[[0, SPACE, A, B]] = True
        g = torch.Generator().manual_seed(0)
        weight = torch.randn(encoder.head.weight.shape, generator=g) / std * 3.0 * keep[:, None]
        encoder.head.weight.copy_(weight)
        encoder.head.bias.copy_(torch.where(keep, -weight @ mean, torch.full((), -100.0)))


def _ear_model(seed: int):
    from tests.test_speechlm import tiny_config
    from tests.test_speechlm_ear_encoder import EAR, _encoder
    from voice.speechlm.model import SpeechLM

    enc = _encoder(seed + 10)
    torch.manual_seed(seed)
    cfg = tiny_config(hearing={**EAR, "encoder": asdict(enc.config)}, heard_text=True)
    model = SpeechLM(cfg, codebooks=torch.randn(cfg.num_codebooks, cfg.codebook_size, cfg.codec_dim)).eval()
    model.ear_encoder.load_state_dict(enc.state_dict())
    return model


def _codes_model(seed: int):
    from tests.test_speechlm import tiny_config
    from voice.speechlm.hearing import HearingConfig, HearingEncoder
    from voice.speechlm.model import SpeechLM

    cfg = tiny_config(heard_text=True)
    torch.manual_seed(seed)
    books = torch.randn(cfg.num_codebooks, cfg.codebook_size, cfg.codec_dim)
    enc = HearingEncoder(HearingConfig(num_codebooks=2, codebook_size=cfg.codebook_size, codec_dim=cfg.codec_dim,
                                       hidden=12), books)
    cfg.hearing = asdict(enc.config)
    model = SpeechLM(cfg, codebooks=books).eval()
    model.hearing.load_state_dict(enc.state_dict())
    return model


@pytest.mark.parametrize("kind", ["ear", "codes"])
@pytest.mark.parametrize("chunks", [[23], [1] * 23, [3, 5, 0, 15], [20, 3]])
def test_the_generator_writes_the_heard_text_as_training_lays_it_out(kind, chunks) -> None:
    from tests.test_speechlm import codes, tokenize
    from voice.speechlm.format import StepWriter
    from voice.speechlm.generate import SpeechGenerator
    from voice.speechlm.whisper_ear import FEATURE_DIM, fit_frames

    model = _ear_model(1) if kind == "ear" else _codes_model(1)
    v, frames = model.config.vocab, 23
    user = codes(3, frames, 5)
    rows = np.random.default_rng(7).standard_normal((frames, FEATURE_DIM)).astype(np.float32) if kind == "ear" else None
    _spelling_head(model.speller, torch.from_numpy(rows).T[None] if kind == "ear" else torch.from_numpy(user[:2])[None])
    heard = spell_turn(model.speller, fit_frames(rows, frames) if kind == "ear" else user)
    assert len(heard) >= 2, heard
    # training's layout of the context and the user's turn, then the answer's marker
    w = StepWriter(v, model.config.layout, tokenize)
    w.text_block("context", "it is noon.")
    w.user_speech(user, "hi", rows, heard)
    steps = w.steps()
    start = 1 + len(tokenize("it is noon.")) + 1
    pad = v.special("pad")
    assert any(t != pad for t in steps.text[start:start + frames]) and len(steps) > start + frames   # words, a tail
    # the generator, chunk by chunk
    gen = SpeechGenerator(model, max_sessions=1, tokenize=tokenize, think=False)   # the speech slot alone
    fed: list[int] = []
    embed = gen._embed      # every step is embedded once, in the order it is fed
    gen._embed = lambda text, audio, user=None: (fed.extend(text), embed(text, audio, user))[1]
    session = gen.open()
    gen.feed_text(session, "context", tokenize("it is noon."))
    at = 0
    for n in chunks:
        gen.feed_user_speech(session, user[:, at:at + n], features=None if rows is None else rows[at:at + n])
        at += n
    gen.close_user_turn(session)
    assert fed == steps.text.tolist()
    hidden = gen._feed(session, [v.special("assistant_speech")], [[v.audio_none] * 3])[-1]
    text = torch.tensor([[*steps.text.tolist(), v.special("assistant_speech")]])
    audio = torch.from_numpy(np.concatenate([steps.audio, np.full((3, 1), v.audio_none)], 1))[None]
    given = {"user_spans": [(0, start, start + frames, [1])]}
    if kind == "ear":
        ear = torch.zeros(1, text.shape[1], FEATURE_DIM)
        ear[0, start:start + frames] = torch.from_numpy(rows)
        given["user_ear"] = ear
    with torch.no_grad():
        ref_text, ref_audio = model(text, audio, **given)
        got_text, got_audio = model.heads(hidden[None, None])
    assert torch.allclose(got_text[0, 0], ref_text[0, -1], atol=1e-4)
    assert torch.allclose(got_audio[0, 0], ref_audio[0, -1], atol=1e-4)


def test_heard_text_needs_an_encoder_and_the_generator_a_tokenizer() -> None:
    from tests.test_speechlm import tiny_config
    from voice.speechlm.generate import SpeechGenerator
    from voice.speechlm.model import SpeechLM

    with pytest.raises(ValueError, match="needs a hearing encoder"):
        SpeechLM(tiny_config(heard_text=True))
    with pytest.raises(ValueError, match="tokenizer"):
        SpeechGenerator(_ear_model(0))


def test_the_heard_tail_reads_back_as_the_users_frames() -> None:
    from tests.test_speechlm import codes, detokenize, tokenize
    from voice.speechlm.format import Example, Turn, layout_example, read_steps

    model = _codes_model(0)
    user = codes(3, 9, 1)
    example = Example("s2s", "it is noon.", [Turn("user", "hi", user, heard=[(4, "ab"), (9, "bab")]),
                                             Turn("assistant", "hello.", codes(3, 12, 2))])
    steps = layout_example(example, model.config.vocab, model.config.layout, tokenize)
    back = read_steps(steps, model.config.vocab, model.config.layout, detokenize)
    assert np.array_equal(back.turns[0].codes, user) and back.turns[1].text == "hello."


def test_typed_dialogues_can_be_written_as_the_encoder_spells() -> None:
    from tests.test_speechlm import detokenize, tiny_config, tokenize
    from voice.speechlm.format import read_steps
    from voice.speechlm.typed import TypedDialogueStream

    cfg = tiny_config()
    users = {}
    for spelled in (0.0, 1.0):
        stream = TypedDialogueStream(cfg.vocab, cfg.layout, tokenize, max_steps=4096, seed=3, spelled=spelled, noise=0.0)
        users[spelled] = [t.text for _ in range(20)
                          for t in read_steps(stream.sample()[1], cfg.vocab, cfg.layout, detokenize).turns if t.role == "user"]
    assert any(ch in "".join(users[0.0]) for ch in "?.,")                                  # typed: punctuation
    assert all(text == text.lower() and not any(ch in text for ch in "?.,") for text in users[1.0])   # spelled
    from voice.speechlm.lexicon import WordSnapper

    known = sorted({w for text in users[1.0] for w in text.split()})
    share_known = {}
    for snap in (None, WordSnapper(known)):                         # misspelled, then snapped: known words again
        stream = TypedDialogueStream(cfg.vocab, cfg.layout, tokenize, max_steps=4096, seed=3, spelled=1.0, noise=0.3,
                                     snap=snap)
        words = [w for _ in range(20) for t in read_steps(stream.sample()[1], cfg.vocab, cfg.layout, detokenize).turns
                 if t.role == "user" for w in t.text.split()]
        share_known[snap is not None] = np.mean([w in known or any(c.isdigit() for c in w) for w in words])
    assert share_known[True] > share_known[False] + 0.2, share_known
