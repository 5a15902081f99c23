"""Thinking in text: a session keeps its dialogue as text in a second slot, and its spoken answers say the words
that slot writes, as the same model would answer the question typed the way its ears read it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_speechlm import codes, tiny_model, tokenize
from tests.test_speechlm_heard import _ear_model, _spelling_head
from voice.speechlm.generate import NoFreeSlotError, Sampling, SpeechGenerator

SAMPLING = Sampling(max_text_tokens=6, max_frames=12)
FRAMES = 23


def _model_and_turns(n: int = 2):
    """A tiny ear model whose encoder spells words, and n user turns (codes, ear rows)."""
    from voice.speechlm.whisper_ear import FEATURE_DIM

    model = _ear_model(1)
    turns = [(codes(3, FRAMES, 5 + i), np.random.default_rng(7 + i).standard_normal((FRAMES, FEATURE_DIM)).astype(np.float32))
             for i in range(n)]
    _spelling_head(model.ear_encoder, torch.from_numpy(turns[0][1]).T[None])
    return model, turns


def _answer(gen: SpeechGenerator, session, steps: int | None = None) -> tuple[list[int], list[np.ndarray]]:
    out, words, frames = gen.begin_answer(session), [], []
    while True:
        words += out.text_ids
        if out.frames is not None:
            frames.append(out.frames)
        if out.done or (steps is not None and len(frames) >= steps):
            return words, frames
        out = gen.step([session])[0]


def test_the_spoken_answer_says_what_the_text_mode_answers_to_the_words_read() -> None:
    model, [(user, rows), _] = _model_and_turns()
    gen = SpeechGenerator(model, max_sessions=1, sampling=SAMPLING, tokenize=tokenize)
    assert gen.think                                              # the default for a model that reads heard text
    s = gen.open()
    gen.feed_text(s, "context", tokenize("it is noon."))
    gen.feed_user_speech(s, user, features=rows)
    said, frames = _answer(gen, s)
    assert s.spelled and frames                                    # it read words and spoke
    # the same model in text mode, nothing heard: the context, then the question typed as the ears read it
    ref = SpeechGenerator(model, max_sessions=1, sampling=SAMPLING, tokenize=tokenize, think=False)
    r = ref.open()
    ref.feed_text(r, "context", tokenize("it is noon."))
    ref.feed_text(r, "user_text", tokenize(" ".join(s.spelled)))
    typed = ref.generate_text(r, "assistant_text", max_tokens=SAMPLING.max_text_tokens)
    assert said == typed and said
    assert gen.decoder.lengths[s.thought.slot] == ref.decoder.lengths[r.slot]   # the thought holds that dialogue
    # without thinking, the speech block writes its own words
    own = SpeechGenerator(model, max_sessions=1, sampling=SAMPLING, tokenize=tokenize, think=False)
    o = own.open()
    own.feed_text(o, "context", tokenize("it is noon."))
    own.feed_user_speech(o, user, features=rows)
    assert o.thought is None and _answer(own, o)[1]


def test_thinking_sessions_step_together_as_they_step_alone() -> None:
    model, turns = _model_and_turns()
    alone = []
    for user, rows in turns:
        gen = SpeechGenerator(model, max_sessions=1, sampling=SAMPLING, tokenize=tokenize)
        s = gen.open()
        gen.feed_user_speech(s, user, features=rows)
        words, frames = _answer(gen, s)
        alone.append((words, np.concatenate(frames, 1)))
    gen = SpeechGenerator(model, max_sessions=2, sampling=SAMPLING, tokenize=tokenize)
    sessions = [gen.open() for _ in turns]
    for s, (user, rows) in zip(sessions, turns):
        gen.feed_user_speech(s, user, features=rows)
    outs = [gen.begin_answer(s) for s in sessions]
    words, frames = [[] for _ in turns], [[] for _ in turns]
    while not all(o.done for o in outs):
        for i, o in enumerate(outs):
            words[i] += o.text_ids
            if o.frames is not None:
                frames[i].append(o.frames)
        outs = gen.step(sessions)
    for i, (w, f) in enumerate(alone):
        got = np.concatenate(frames[i], 1)
        assert words[i] == w and np.array_equal(got[:, : f.shape[1]], f[:, : got.shape[1]])


def test_a_barge_in_keeps_the_words_heard_in_the_thought_and_a_rewind_forgets_the_turn() -> None:
    model, [(user, rows), (user2, rows2)] = _model_and_turns()
    gen = SpeechGenerator(model, max_sessions=1, sampling=Sampling(max_text_tokens=6, max_frames=30), tokenize=tokenize)
    s = gen.open()
    gen.feed_user_speech(s, user, features=rows)
    words, _ = _answer(gen, s, steps=3)
    start = s.thought.answer_start
    assert gen.end_answer(s, keep_frames=1) == 1
    lay = gen.layout
    kept = min(len(s.answer.text_ids), lay.text_lead + 1 + lay.max_delay)
    assert gen.decoder.lengths[s.thought.slot] == start + 1 + kept and not s.thought.thinking
    # a mark before the next turn; the turn and its answer, then back: both slots as they were
    mark = gen.mark(s)
    lengths = (gen.decoder.lengths[s.slot], gen.decoder.lengths[s.thought.slot])
    gen.feed_user_speech(s, user2, features=rows2)
    _answer(gen, s, steps=2)
    gen.rewind(s, mark)
    assert (gen.decoder.lengths[s.slot], gen.decoder.lengths[s.thought.slot]) == lengths
    assert s.thought.pending == mark.thought[1] and not s.user_open
    # nothing heard of an answer: it goes from the thought, marker and all
    gen.feed_user_speech(s, user2, features=rows2)
    _answer(gen, s, steps=2)
    start = s.thought.answer_start
    assert gen.end_answer(s, keep_frames=0) == 0
    assert gen.decoder.lengths[s.thought.slot] == start and s.thought.pending == []


def test_a_thinking_session_takes_two_slots_and_a_model_that_reads_no_words_cannot_think() -> None:
    model, _ = _model_and_turns()
    gen = SpeechGenerator(model, max_sessions=1, tokenize=tokenize)
    s = gen.open()
    assert {s.slot, s.thought.slot} == {0, 1}
    with pytest.raises(NoFreeSlotError):
        gen.open()
    gen.close(s)
    assert gen.open().thought is not None
    with pytest.raises(ValueError, match="reads no heard text"):
        SpeechGenerator(tiny_model(0), max_sessions=1, think=True)
    assert SpeechGenerator(tiny_model(0), max_sessions=1).think is False


def test_a_session_of_a_thinking_generator_may_choose_not_to_think() -> None:
    """`open(think=False)`: one slot, no thought, the speech block writes its own words, as a generator
    that does not think; a generator that does not think opens no session that does."""
    model, [(user, rows), _] = _model_and_turns()
    gen = SpeechGenerator(model, max_sessions=1, sampling=SAMPLING, tokenize=tokenize)
    quick = gen.open(think=False)
    assert quick.thought is None and len(gen.free) == 1
    with pytest.raises(NoFreeSlotError):
        gen.open()                        # a thinking session needs two slots; one is left
    gen.close(gen.open(think=False))      # enough for another that does not think
    own = SpeechGenerator(model, max_sessions=1, sampling=SAMPLING, tokenize=tokenize, think=False)
    ref = own.open()
    for g, s in ((gen, quick), (own, ref)):
        g.feed_text(s, "context", tokenize("it is noon."))
        g.feed_user_speech(s, user, features=rows)
    (words, frames), (own_words, own_frames) = _answer(gen, quick), _answer(own, ref)
    assert words == own_words and np.array_equal(np.concatenate(frames, 1), np.concatenate(own_frames, 1))
    with pytest.raises(ValueError, match="does not think in text"):
        own.open(think=True)


def test_given_words_are_said_as_given() -> None:
    model = tiny_model(3)
    gen = SpeechGenerator(model, max_sessions=1, sampling=Sampling(max_frames=20))
    s = gen.open()
    gen.feed_user_speech(s, codes(3, 9, 1))
    given = tokenize("so it is")
    out, words = gen.begin_answer(s, words=given), []
    while not out.done:
        words += out.text_ids
        out = gen.step([s])[0]
    assert words == given


def test_a_thinking_session_says_the_words_a_speak_block_gives_instead_of_thinking_its_own() -> None:
    model, _ = _model_and_turns()
    gen = SpeechGenerator(model, max_sessions=1, sampling=Sampling(max_text_tokens=16, max_frames=40), tokenize=tokenize)
    assert gen.think
    s = gen.open()
    gen.feed_text(s, "context", [])
    given = tokenize("so it is")
    gen.feed_text(s, "speak", given)
    said, _ = _answer(gen, s)
    assert said == given                        # the text -> speech task: the words asked for, not the thought's
    assert s.thought.given is None              # taken once: the next answer is thought again
