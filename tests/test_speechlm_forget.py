"""A long conversation forgets its oldest turns: the cache cut and computed again (`SlotDecoder.splice`), and a
session that forgot answers exactly as a fresh one fed only what it kept (`SpeechGenerator.forget_turns`)."""

from __future__ import annotations

import numpy as np
import torch

from tests.test_speechlm import codes, tiny_model, tokenize
from tests.test_speechlm_think import SAMPLING, _answer, _model_and_turns
from voice.speechlm.generate import SpeechGenerator
from voice.speechlm.kvcache import SlotDecoder


def test_a_spliced_slot_holds_the_cache_of_a_slot_fed_the_new_sequence_from_the_start() -> None:
    model = tiny_model(3)
    dec = SlotDecoder(model, slots=2, max_len=64)
    torch.manual_seed(0)
    old, new_head, tail = torch.randn(9, 48), torch.randn(4, 48), torch.randn(6, 48)
    dec.forward([0], torch.cat([old, tail])[None])
    dec.splice(0, 0, 9, new_head)                    # the first 9 positions become 4 others
    dec.forward([1], torch.cat([new_head, tail])[None])
    assert dec.lengths == [10, 10]
    torch.testing.assert_close(dec.k[:, 0, :, :10], dec.k[:, 1, :, :10], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dec.v[:, 0, :, :10], dec.v[:, 1, :, :10], atol=1e-5, rtol=1e-5)
    step = torch.randn(1, 1, 48)
    torch.testing.assert_close(dec.forward([0], step), dec.forward([1], step), atol=1e-5, rtol=1e-5)
    dec.splice(0, 3, 5)                               # a span cut out, nothing in its place
    assert dec.lengths[0] == 9
    for bad in [(0, 2, 12), (0, 5, 3), (0, -1, 2)]:
        try:
            dec.splice(*bad)
        except ValueError:
            continue
        raise AssertionError(f"splice{bad} was accepted")


def _conversation(gen: SpeechGenerator, turns, answered: int):
    """A session: the context, then `answered` turns with their answers, then the next turn heard (open)."""
    s = gen.open()
    gen.feed_text(s, "context", tokenize("it is noon."))
    for user, rows in turns[:answered]:
        gen.feed_user_speech(s, user, features=rows)
        _answer(gen, s)
    gen.feed_user_speech(s, *turns[answered][:1], features=turns[answered][1])
    return s


def test_a_thinking_session_that_forgot_its_oldest_turns_answers_as_one_fed_only_what_it_kept() -> None:
    model, turns = _model_and_turns(3)
    gen = SpeechGenerator(model, max_sessions=2, sampling=SAMPLING, tokenize=tokenize)
    s = _conversation(gen, turns, answered=2)
    assert len(s.turns) == 3 and s.thought is not None
    before = gen.length(s)
    splice = gen.forget_turns(s, keep_steps=1, context=tokenize("it is one."))   # nothing fits: all but the last go
    assert splice is not None and splice.cut == before - (gen.length(s) - splice.head)
    assert len(s.turns) == 1 and s.turns[0][0] == splice.head == 1 + len(tokenize("it is one."))
    # a fresh session: the new context sentence, then the same turn
    ref = gen.open()
    gen.feed_text(ref, "context", tokenize("it is one."))
    gen.feed_user_speech(ref, turns[2][0], features=turns[2][1])
    assert gen.length(s) == gen.length(ref)
    assert gen.decoder.lengths[s.thought.slot] == gen.decoder.lengths[ref.thought.slot]
    mine, theirs = _answer(gen, s), _answer(gen, ref)
    assert mine[0] == theirs[0] and mine[0]                      # the same words
    np.testing.assert_array_equal(np.concatenate(mine[1], 1), np.concatenate(theirs[1], 1))


def test_forgetting_keeps_as_many_latest_turns_as_fit_and_moves_marks_and_answers() -> None:
    model, turns = _model_and_turns(4)
    gen = SpeechGenerator(model, max_sessions=1, sampling=SAMPLING, tokenize=tokenize)
    s = gen.open()
    gen.feed_text(s, "context", tokenize("it is noon."))
    for user, rows in turns[:3]:
        gen.feed_user_speech(s, user, features=rows)
        _answer(gen, s)
    mark = gen.mark(s)                                 # the next turn starts here (a retract comes back to it)
    gen.feed_user_speech(s, turns[3][0], features=turns[3][1])
    starts, length, inputs = list(s.turns), gen.length(s), gen.decoder.inputs[s.slot].clone()
    fed = gen.decoder.lengths[s.slot]                  # the turn's last frames wait for the ear's lookahead
    head = 1 + len(tokenize("it is one."))
    keep = head + length - starts[2][0]                # the last two turns fit, three do not
    splice = gen.forget_turns(s, keep_steps=keep, context=tokenize("it is one."))
    assert splice.cut == starts[2][0] and gen.length(s) == keep
    assert [t[0] for t in s.turns] == [head, head + starts[3][0] - starts[2][0]]
    # what follows the new context block is the kept turns' steps, unchanged, from the marker of the first
    torch.testing.assert_close(gen.decoder.inputs[s.slot, head:head + fed - starts[2][0]], inputs[starts[2][0]:fed])
    assert s.thought.answer_start is None or s.thought.answer_start >= head
    # the mark taken before moved with it: rewinding forgets the open turn, the two kept ones stay
    moved = splice.moved(mark)
    assert moved.length == mark.length - splice.cut + head
    gen.rewind(s, moved)
    assert gen.length(s) == moved.length and [t[0] for t in s.turns] == [head]
    assert gen.decoder.lengths[s.thought.slot] == moved.thought[0]
    gen.feed_user_speech(s, turns[3][0], features=turns[3][1])
    assert _answer(gen, s)[1]
    # nothing earlier to forget; and never in the middle of an answer
    one = _conversation(SpeechGenerator(model, max_sessions=1, sampling=SAMPLING, tokenize=tokenize), turns, 0)
    assert len(one.turns) == 1
    assert SpeechGenerator.forget_turns(gen, s, keep_steps=1, context=[]) is not None     # s had two turns
    gen.begin_answer(s)
    assert s.answering and gen.forget_turns(s, keep_steps=1, context=[]) is None


def test_a_session_without_a_thought_forgets_its_oldest_turns_too() -> None:
    model = tiny_model(4)
    gen = SpeechGenerator(model, max_sessions=2, sampling=SAMPLING)
    s, ref = gen.open(), gen.open()
    gen.feed_text(s, "context", [1, 2, 3])
    for seed in (1, 2):
        gen.feed_user_speech(s, codes(3, 8, seed))
        _answer(gen, s)
    gen.feed_user_speech(s, codes(3, 8, 3))
    assert gen.forget_turns(s, keep_steps=1, context=[4, 5]).thought_cut is None
    gen.feed_text(ref, "context", [4, 5])
    gen.feed_user_speech(ref, codes(3, 8, 3))
    mine, theirs = _answer(gen, s), _answer(gen, ref)
    assert mine[0] == theirs[0]
    np.testing.assert_array_equal(np.concatenate(mine[1], 1), np.concatenate(theirs[1], 1))
