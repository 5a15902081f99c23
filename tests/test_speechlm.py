"""The speech LM: format round trips, cached steps equal the full pass, batching, bad ids, overfit + stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voice.speechlm.batch import collate, lm_loss
from voice.speechlm.format import Example, Layout, Turn, layout_example, read_steps
from voice.speechlm.generate import Sampling, SpeechGenerator
from voice.speechlm.kvcache import ContextFullError, SlotDecoder
from voice.speechlm.model import SpeechLM, SpeechLMConfig
from voice.speechlm.vocab import SPECIALS, Vocab

CHARS = " abcdefghijklmnopqrstuvwxyz0123456789.,?'"


def tokenize(text: str) -> list[int]:
    return [CHARS.index(c) for c in text.lower() if c in CHARS]


def detokenize(ids: list[int]) -> str:
    return "".join(CHARS[i] for i in ids)


def tiny_config(**kw) -> SpeechLMConfig:
    base = dict(text_vocab_size=len(CHARS), num_codebooks=3, codebook_size=16, codec_dim=8, hidden_size=48,
                intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=256, delays=[0, 1, 1], text_lead=2)
    base.update(kw)
    return SpeechLMConfig(**base)


def tiny_model(seed: int = 0, **kw) -> SpeechLM:
    torch.manual_seed(seed)
    cfg = tiny_config(**kw)
    return SpeechLM(cfg, codebooks=torch.randn(cfg.num_codebooks, cfg.codebook_size, cfg.codec_dim)).eval()


def codes(k: int, t: int, seed: int, n: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, (k, t))


def s2s_example() -> Example:
    return Example("s2s", "it is noon.", [Turn("user", "hi", codes(3, 9, 1)),
                                          Turn("assistant", "hello.", codes(3, 12, 2)),
                                          Turn("user", "bye", codes(3, 5, 3)),
                                          Turn("assistant", "bye now.", codes(3, 7, 4))])


@pytest.mark.parametrize("layout", [Layout((0, 1, 1), 2), Layout((0, 1, 2), 0), Layout((0, 0, 0), 5)])
def test_format_round_trips_every_task(layout: Layout) -> None:
    vocab = Vocab(len(CHARS), 3, 16)
    examples = [s2s_example(),
                Example("t2t", "ctx", [Turn("user", "what is 2 plus 2?"), Turn("assistant", "4.")]),
                Example("s2t", "", [Turn("user", "one two", codes(3, 6, 5))]),
                Example("t2s", "", [Turn("user", "say this"), Turn("assistant", "say this", codes(3, 8, 6))])]
    for ex in examples:
        steps = layout_example(ex, vocab, layout, tokenize)
        back = read_steps(steps, vocab, layout, detokenize)
        assert back.task == ex.task and back.context == ex.context
        assert len(back.turns) == len(ex.turns)
        for a, b in zip(ex.turns, back.turns):
            carried = not (ex.task == "s2s" and a.role == "user")   # s2s carries the user's audio, not words
            assert a.role == b.role and b.text == (a.text if carried else "")
            if a.codes is not None:
                np.testing.assert_array_equal(a.codes, b.codes)


def test_answer_text_runs_ahead_of_its_audio() -> None:
    vocab, layout = Vocab(len(CHARS), 3, 16), Layout((0, 1, 1), 2)
    steps = layout_example(Example("s2s", "", [Turn("assistant", "ok", codes(3, 4, 0))]), vocab, layout, tokenize)
    start = list(steps.text).index(vocab.special("assistant_speech"))
    assert list(steps.text[start + 1:start + 4]) == [*tokenize("ok"), vocab.special("end_of_text")]
    assert steps.audio[0, start + 1 + 2] != vocab.audio_none and steps.audio[0, start + 2] == vocab.audio_none
    assert steps.audio[1, start + 3] == vocab.audio_none and steps.audio[1, start + 4] != vocab.audio_none
    assert steps.audio_target[0, start + 1 + 2 + 4]          # END after the last frame is a target
    assert steps.text[-1] == vocab.special("end_of_turn")
    assert not steps.text_target[:start + 1].any()           # nothing before the answer is a target


def test_vocab_layout_is_one_id_space() -> None:
    v = Vocab(49152, 8, 1024)
    assert v.special("pad") == 49152 and v.audio_base == 49152 + len(SPECIALS)
    assert v.size == v.audio_base + 8 * 1024
    assert v.split_audio_id(v.audio_id(7, 1023)) == (7, 1023)
    with pytest.raises(ValueError):
        v.audio_id(8, 0)
    with pytest.raises(KeyError):
        v.special("nope")


def test_cached_steps_equal_the_full_forward_pass() -> None:
    model = tiny_model()
    steps = layout_example(s2s_example(), model.config.vocab, model.config.layout, tokenize)
    text = torch.from_numpy(steps.text)[None]
    audio = torch.from_numpy(steps.audio)[None]
    with torch.no_grad():
        full_text, full_audio = model(text, audio)
    dec = SlotDecoder(model, slots=2)
    cut = 17
    hidden = [dec.forward([1], model.embed(text[:, :cut], audio[:, :, :cut]))]
    for i in range(cut, text.shape[1]):
        hidden.append(dec.forward([1], model.embed(text[:, i:i + 1], audio[:, :, i:i + 1])))
    step_text, step_audio = model.heads(torch.cat(hidden, 1))
    torch.testing.assert_close(step_text, full_text, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(step_audio, full_audio, atol=1e-4, rtol=1e-4)


def test_batched_steps_equal_single_session_steps() -> None:
    model = tiny_model(1)
    v = model.config.vocab
    rng = np.random.default_rng(0)
    prefixes = [rng.integers(0, len(CHARS), n) for n in (5, 11, 8)]
    batched, single = SlotDecoder(model, 4), SlotDecoder(model, 4)
    for slot, p in zip((0, 2, 3), prefixes):       # slots out of order, different lengths
        for dec in (batched, single):
            t = torch.from_numpy(p)[None]
            dec.forward([slot], model.embed(t, torch.full((1, 3, len(p)), v.audio_none)))
    for n in (1, 1, 2, 1, 3, 1):      # one step per row (each attends alone), several (gathered and masked)
        t = torch.from_numpy(rng.integers(0, len(CHARS), (3, n)))
        a = torch.from_numpy(rng.integers(0, 17, (3, 3, n)))
        together = batched.forward([0, 2, 3], model.embed(t, a))
        apart = torch.cat([single.forward([s], model.embed(t[i:i + 1], a[i:i + 1])) for i, s in enumerate((0, 2, 3))])
        torch.testing.assert_close(together, apart, atol=1e-5, rtol=1e-5)


def test_float16_packed_weights_step_as_float32_does(monkeypatch) -> None:
    """A model stored in float16 (as the shipped one): the decoder's products and heads read fbgemm's float16
    packing of its weights, and give what the float32 products give, up to the order of the sums."""
    model = tiny_model(5)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    assert SlotDecoder(tiny_model(5), 1).layers[0].qkv.packed is None   # float32 weights float16 would round
    packed = SlotDecoder(model, 2)
    if packed.layers[0].qkv.packed is None:
        pytest.skip("this PyTorch has no fbgemm (not an x86 build)")
    monkeypatch.setattr("voice.speechlm.kvcache.pack_fp16", lambda matrix: None)
    plain = SlotDecoder(model, 2)
    assert plain.layers[0].qkv.packed is None and plain.text_head.packed is None
    rng = np.random.default_rng(1)
    v = model.config.vocab
    for n in (9, 1, 1, 3, 1):     # a prefill, single steps, a few steps at once
        t = torch.from_numpy(rng.integers(0, len(CHARS), (1, n)))
        x = model.embed(t, torch.full((1, 3, n), v.audio_none))
        hp, hf = packed.forward([1], x), plain.forward([1], x)
        torch.testing.assert_close(hp, hf, atol=1e-5, rtol=1e-5)
        with torch.no_grad():
            torch.testing.assert_close(packed.text_logits(hp), model.text_head(hf), atol=1e-5, rtol=1e-5)
            for k in range(4):
                torch.testing.assert_close(packed.audio_logits(hp, k), model.audio_logits(hf, k), atol=1e-5, rtol=1e-5)


def test_out_of_range_ids_and_a_full_context_are_rejected() -> None:
    model = tiny_model()
    v = model.config.vocab
    with pytest.raises(ValueError, match="text-stream ids"):
        model(torch.tensor([[v.text_stream_size]]), torch.zeros(1, 3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="codes must be"):
        model(torch.tensor([[0]]), torch.full((1, 3, 1), v.audio_none + 1))
    gen = SpeechGenerator(model, max_sessions=1, max_len=40)
    session = gen.open()
    with pytest.raises(ValueError, match="codes must be"):
        gen.feed_user_speech(session, np.full((3, 2), 16))
    with pytest.raises(ValueError, match="codes must be"):
        gen.feed_user_speech(session, np.zeros((2, 5), int))
    with pytest.raises(ContextFullError):
        gen.feed_user_speech(session, np.zeros((3, 60), int))
    with pytest.raises(ValueError):
        layout_example(Example("s2s", "", [Turn("user", "", np.full((3, 4), -1))]), v, model.config.layout, tokenize)


def _overfit(model: SpeechLM, example: Example, steps: int = 300) -> None:
    batch = collate([layout_example(example, model.config.vocab, model.config.layout, tokenize)], model.config.vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        parts = lm_loss(model, batch)
        opt.zero_grad()
        parts.loss.backward()
        opt.step()
    model.eval()
    assert parts.text_acc == 1.0 and parts.audio_acc == 1.0, parts


def _answer(gen: SpeechGenerator, session, max_steps: int = 200):
    words, frames = [], []
    out = gen.begin_answer(session)
    for _ in range(max_steps):
        words += out.text_ids
        if out.frames is not None:
            frames.append(out.frames)
        if out.done:
            break
        out = gen.step([session])[0]
    return words, np.concatenate(frames, 1) if frames else np.zeros((3, 0), int)


def test_a_tiny_model_overfits_one_dialogue_and_the_stream_reproduces_it() -> None:
    model = tiny_model(2)
    example = s2s_example()
    _overfit(model, example)
    gen = SpeechGenerator(model, max_sessions=2, sampling=Sampling())
    session = gen.open()
    gen.feed_text(session, "context", tokenize(example.context))
    user = example.turns[0].codes
    gen.feed_user_speech(session, user[:, :4])        # prefilled while the user speaks
    gen.feed_user_speech(session, user[:, 4:])
    words, frames = _answer(gen, session)
    assert detokenize(words) == example.turns[1].text
    np.testing.assert_array_equal(frames, example.turns[1].codes)
    # the follow-up turn goes on from the same cache (the first answer's end_of_turn goes in first)
    gen.feed_user_speech(session, example.turns[2].codes)
    words, frames = _answer(gen, session)
    assert detokenize(words) == example.turns[3].text
    np.testing.assert_array_equal(frames, example.turns[3].codes)


@pytest.mark.parametrize("delays", [[0, 1, 1], [0, 1, 2], [0, 2, 1]])
def test_a_step_reads_only_the_audio_head_rows_it_needs_and_samples_the_same(delays, monkeypatch) -> None:
    model = tiny_model(4, delays=delays)
    hidden = torch.randn(2, model.config.hidden_size)
    with torch.no_grad():
        full = model.heads(hidden[:, None], text=False)[1][:, 0]
        decoder = SlotDecoder(model, 1)
        for k in range(4):
            torch.testing.assert_close(model.audio_logits(hidden, k), full[:, :k])
            torch.testing.assert_close(decoder.audio_logits(hidden, k), full[:, :k])

    def answer(every_row: bool):
        gen = SpeechGenerator(model, max_sessions=1, sampling=Sampling(temperature=0.9, top_k=5, max_frames=30))
        if every_row:      # the reference: every codebook's logits at every step
            monkeypatch.setattr(gen.decoder, "audio_logits", lambda h, k: model.heads(h[:, None], text=False)[1][:, 0])
        session = gen.open()
        gen.feed_user_speech(session, codes(3, 6, 5))
        out = _answer(gen, session)
        monkeypatch.undo()
        return out

    (words, frames), (ref_words, ref_frames) = answer(False), answer(True)
    assert words == ref_words and frames.shape[1] > 0
    np.testing.assert_array_equal(frames, ref_frames)


def test_codes_can_be_sampled_while_the_words_stay_greedy() -> None:
    gen = SpeechGenerator(tiny_model(2), max_sessions=1, sampling=Sampling(audio_temperature=2.0, audio_top_k=3), seed=1)
    logits = torch.tensor([0.0, 3.0, 2.5, 2.0, -1.0, 1.0])
    words = {gen._sample(logits) for _ in range(200)}
    codes = [gen._sample(logits, audio=True) for _ in range(400)]
    assert words == {1}                                 # temperature 0: the likeliest, always
    assert set(codes) == {1, 2, 3}                      # the three likeliest, each drawn
    assert codes.count(1) > codes.count(3)
    gen.sampling = Sampling(temperature=1.0, top_k=2, audio_temperature=0.0)
    assert {gen._sample(logits, audio=True) for _ in range(50)} == {1}
    assert {gen._sample(logits) for _ in range(200)} == {1, 2}


def test_batched_generation_matches_one_session_at_a_time() -> None:
    model = tiny_model(3)
    example = s2s_example()
    _overfit(model, example, 200)

    def start(gen):
        s = gen.open()
        gen.feed_text(s, "context", tokenize(example.context))
        gen.feed_user_speech(s, example.turns[0].codes)
        return s

    gen = SpeechGenerator(model, max_sessions=3, sampling=Sampling(temperature=0.8, top_k=4), seed=5)
    alone = _answer(gen, start(gen))
    gen = SpeechGenerator(model, max_sessions=3, sampling=Sampling(), seed=5)
    a, b = start(gen), start(gen)
    outs = [gen.begin_answer(a), gen.begin_answer(b)]
    results = {0: ([], []), 1: ([], [])}
    for _ in range(200):
        for i, o in enumerate(outs):
            results[i][0].extend(o.text_ids)
            if o.frames is not None:
                results[i][1].append(o.frames)
        if all(o.done for o in outs):
            break
        outs = gen.step([a, b])
    for words, frames in results.values():
        assert detokenize(words) == example.turns[1].text
        np.testing.assert_array_equal(np.concatenate(frames, 1), example.turns[1].codes)
    assert alone[1].shape[0] == 3      # sampling runs too (temperature and top-k), whatever it says


def _record_steps(model: SpeechLM) -> list[tuple[int, list[int]]]:
    """Spy on `model.embed`: every step a generator feeds, (text id, audio ids), in the order the cache holds them
    (one session per generator while it records). `del model.embed` stops it."""
    steps: list[tuple[int, list[int]]] = []
    embed = model.embed

    def spy(text, audio):
        for row in range(text.shape[0]):
            steps.extend((int(t), [int(c) for c in a]) for t, a in zip(text[row], audio[row].T))
        return embed(text, audio)
    model.embed = spy
    return steps


def never_ends(model: SpeechLM) -> SpeechLM:
    """Codebook 0's END gets a logit of 0 (its row zeroed), so a random model's answer runs to its frame cap
    (END would win only if all 16 random logits were negative)."""
    with torch.no_grad():
        model.audio_head.weight[model.config.codebook_size] = 0.0
    return model


def _frames_of(outs) -> int:
    return sum(o.frames.shape[1] for o in outs if o.frames is not None)


def _speak(gen: SpeechGenerator, session, steps: int) -> list:
    outs = [gen.begin_answer(session)]
    while len(outs) <= steps and not outs[-1].done:
        outs += gen.step([session])
    return outs


def test_end_answer_keeps_the_played_frames_and_goes_on_like_a_context_fed_from_scratch() -> None:
    """A barge-in after n played frames: the cache holds the answer block up to the step where frame n - 1 is
    complete (text lead + n + max delay steps after the marker), then <|end_of_turn|>; what follows gives the
    same logits and the same answer as a fresh session fed that history step by step."""
    model = never_ends(tiny_model(5))
    v, lay = model.config.vocab, model.config.layout
    gen = SpeechGenerator(model, max_sessions=2, sampling=Sampling(max_text_tokens=6), max_len=200)
    assert gen.max_len == 200
    fed = _record_steps(model)
    s = gen.open()
    gen.feed_text(s, "context", tokenize("it is noon."))
    gen.feed_user_speech(s, codes(3, 9, 1))
    start = gen.length(s)                                    # the answer's marker goes here
    outs = _speak(gen, s, 30)
    made, before = _frames_of(outs), gen.length(s)
    assert made >= 20 and before == start + 31
    keep = 7
    assert gen.end_answer(s, keep_frames=keep) == keep
    assert gen.length(s) == start + lay.text_lead + keep + lay.max_delay + 1
    assert not s.answering
    history = fed[: gen.length(s)]
    del model.embed
    # what the context keeps: the marker, the words written by then, and codebook k of frames 0 .. n - 1 +
    # max_delay - d_k (every codebook of the kept frames, codebook 0 of max_delay frames more)
    block, frames = history[start:], np.concatenate([o.frames for o in outs if o.frames is not None], 1)
    assert block[0][0] == v.special("assistant_speech")
    for k, d in enumerate(lay.delays):
        assert [a[k] for _, a in block[1 + lay.text_lead + d:]] == frames[k, :keep + lay.max_delay - d].tolist()
    # the next user turn and its answer, in this session and in one fed the same steps from scratch
    user = codes(3, 6, 7)
    gen.feed_user_speech(s, user)
    ref = gen.open()
    none = [v.audio_none] * 3
    gen.feed_steps(ref, [t for t, _ in history] + [v.special("end_of_turn")],
                   [list(c) for c in zip(*[a for _, a in history], none)])
    gen.feed_user_speech(ref, user)
    assert gen.length(s) == gen.length(ref) == start + lay.text_lead + keep + lay.max_delay + 1 + 1 + 1 + 6
    probe_t, probe_a = torch.tensor([[v.special("assistant_speech")]]), torch.full((1, 3, 1), v.audio_none)
    logits = [model.heads(gen.decoder.forward([x.slot], model.embed(probe_t, probe_a)))
              for x in (s, ref)]
    for a, b in zip(*logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    gen.decoder.truncate(s.slot, gen.length(s) - 1)           # forget the probe again
    gen.decoder.truncate(ref.slot, gen.length(ref) - 1)
    mine, theirs = _speak(gen, s, 12), _speak(gen, ref, 12)
    assert [o.text_ids for o in mine] == [o.text_ids for o in theirs]
    assert _frames_of(mine) == _frames_of(theirs) > 0
    np.testing.assert_array_equal(np.concatenate([o.frames for o in mine if o.frames is not None], 1),
                                  np.concatenate([o.frames for o in theirs if o.frames is not None], 1))


def test_end_answer_after_the_answer_ended_and_its_edge_cases() -> None:
    model = never_ends(tiny_model(6))
    v, lay = model.config.vocab, model.config.layout
    gen = SpeechGenerator(model, max_sessions=1, sampling=Sampling(max_text_tokens=4, max_frames=12))

    def answered():
        s = gen.open()
        gen.feed_text(s, "context", tokenize("hi."))
        gen.feed_user_speech(s, codes(3, 5, 2))
        start = gen.length(s)
        outs = _speak(gen, s, 100)
        assert outs[-1].done and _frames_of(outs) == 12      # ended by itself (the frame cap)
        return s, start, gen.length(s)

    # the answer had ended (its audio still playing at the client): it is cut all the same, only shorter after that
    s, start, full = answered()
    assert gen.end_answer(s, keep_frames=5) == 5 and gen.length(s) == start + lay.text_lead + 5 + lay.max_delay + 1
    assert gen.end_answer(s, keep_frames=9) == 5 and gen.length(s) == start + lay.text_lead + 5 + lay.max_delay + 1
    assert gen.end_answer(s, keep_frames=3) == 3 and gen.length(s) == start + lay.text_lead + 3 + lay.max_delay + 1
    assert s.pending_text == v.special("end_of_turn")
    # once the next block began, the answer is history: nothing to cut
    gen.feed_user_speech(s, codes(3, 2, 3))
    length = gen.length(s)
    assert gen.end_answer(s, keep_frames=0) is None and gen.length(s) == length
    gen.close(s)
    # every frame played (or played unknown): the context keeps the answer as it was made
    s, start, full = answered()
    assert gen.end_answer(s, keep_frames=50) == 12 and gen.length(s) == full
    assert gen.end_answer(s) == 12 and gen.length(s) == full
    gen.close(s)
    # nothing played: the answer block goes away, the user's turn stays unanswered and the next one opens a new block
    s, start, full = answered()
    assert gen.end_answer(s, keep_frames=0) == 0 and gen.length(s) == start and s.pending_text is None
    gen.feed_user_speech(s, codes(3, 2, 4))
    assert gen.length(s) == start + 1 + 2
    # a user turn cut before its answer: closed, the next speech opens a new block
    gen.close_user_turn(s)
    gen.feed_user_speech(s, codes(3, 2, 5))
    assert gen.length(s) == start + 3 + 1 + 2
    # no free slot: a named RuntimeError
    from voice.speechlm.generate import NoFreeSlotError

    with pytest.raises(NoFreeSlotError) as err:
        gen.open()
    assert isinstance(err.value, RuntimeError)


def test_save_and_load_with_transformers(tmp_path) -> None:
    model = tiny_model(4, codec_id="compact-test-k3")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "config.json").exists()
    loaded = SpeechLM.from_pretrained(tmp_path).eval()
    assert loaded.config.codec_id == "compact-test-k3" and loaded.config.delays == [0, 1, 1]
    t, a = torch.tensor([[1, 2, 3]]), torch.tensor([[[0, 1, 16]] * 3])
    with torch.no_grad():
        for x, y in zip(model(t, a), loaded(t, a)):
            torch.testing.assert_close(x, y)
    torch.testing.assert_close(loaded.codebooks, model.codebooks)
    assert loaded.text_head.weight.data_ptr() == loaded.backbone.embed_tokens.weight.data_ptr()


def test_kept_text_ids_write_every_text_and_read_it_back() -> None:
    from voice.speechlm.cli import load_tokenizer
    from voice.speechlm.text import TextIds, choose_ids

    tokenizer = load_tokenizer("smollm2")
    kept = choose_ids(tokenizer, ["What is the capital of Pakistan?", "Islamabad."], common=300)
    text = TextIds(tokenizer, kept)
    assert text.size == len(kept) < 400
    for s in ["What is the capital of Pakistan?", "Zanzibar, quixotically: émigré naïve 😀 12:45"]:
        ids = text.encode(s)
        assert max(ids) < text.size and text.decode(ids) == s
    assert len(text.encode(" Pakistan")) == 1                     # a training word stays one id
    assert len(text.encode(" Zanzibar")) > len(tokenizer(" Zanzibar", add_special_tokens=False)["input_ids"])
    full = TextIds(tokenizer)
    assert full.size == len(tokenizer) and full.decode(full.encode("Islamabad.")) == "Islamabad."


def test_the_model_hears_only_its_heard_codebooks_in_training_and_in_streaming() -> None:
    model = tiny_model(heard_codebooks=1)
    v, lay = model.config.vocab, model.config.layout
    user = codes(3, 6, 7)
    steps = layout_example(Example("s2t", "", [Turn("user", "hi", user)]), v, lay, tokenize)
    frames = steps.text == v.special("pad")
    assert np.array_equal(steps.audio[0, frames], user[0])
    assert (steps.audio[1:, frames] == v.audio_none).all()            # the finer codebooks are not read
    gen = SpeechGenerator(model, max_sessions=1)
    session = gen.open()
    gen.feed_text(session, "context", [])
    gen.feed_user_speech(session, user)
    streamed = gen.generate_text(session, "transcribe", max_tokens=5)
    gen.close(session)
    other = user.copy()
    other[1:] = codes(2, 6, 8)                                       # other fine codes: the same transcript
    session = gen.open()
    gen.feed_text(session, "context", [])
    gen.feed_user_speech(session, other)
    assert gen.generate_text(session, "transcribe", max_tokens=5) == streamed


def test_the_hearing_loss_reads_the_user_frames_and_their_words() -> None:
    model = tiny_model(2)
    v, lay = model.config.vocab, model.config.layout
    steps = layout_example(s2s_example(), v, lay, tokenize)
    assert [(b - a, ids) for a, b, ids in steps.user_spans] == [(9, tokenize("hi")), (5, tokenize("bye"))]
    for a, b, _ in steps.user_spans:                       # the spans are exactly the user's frames
        assert steps.text[a - 1] == v.special("user_speech") and (steps.text[a:b] == v.special("pad")).all()
        assert (steps.audio[0, a:b] != v.audio_none).all()
    assert len(steps.cut(steps.user_spans[1][1] - 1).user_spans) == 1
    batch = collate([steps, layout_example(Example("s2t", "", [Turn("user", "go", codes(3, 4, 5))]), v, lay, tokenize)], v)
    assert [s[0] for s in batch.user_spans] == [0, 0, 1]
    model.train()
    plain = lm_loss(model, batch)
    heard = lm_loss(model, batch, hearing_weight=0.5)
    assert np.isnan(plain.hearing_loss) and np.isfinite(heard.hearing_loss) and heard.hearing_loss > 0
    torch.testing.assert_close(heard.loss, plain.loss + 0.5 * heard.hearing_loss, atol=1e-3, rtol=1e-4)
    heard.loss.backward()
    assert model.hearing_blank.grad is not None and model.hearing_blank.grad.abs().sum() > 0


def test_the_audio_ends_within_the_bound_its_words_allow() -> None:
    """A model that never says END stops at frames_margin + frames_per_token * text tokens once its words are
    written (the frame cap when the bound is off)."""
    model = never_ends(tiny_model(6))
    for sampling, expected in ((Sampling(max_text_tokens=3, max_frames=60, frames_per_token=2, frames_margin=5), 11),
                               (Sampling(max_text_tokens=3, max_frames=60, frames_per_token=0), 60)):
        gen = SpeechGenerator(model, max_sessions=1, sampling=sampling)
        s = gen.open()
        gen.feed_text(s, "context", tokenize("hi."))
        gen.feed_user_speech(s, codes(3, 5, 2))
        outs = _speak(gen, s, 200)
        assert outs[-1].done and sum(len(o.text_ids) for o in outs) == 3
        assert _frames_of(outs) == expected
        gen.close(s)
