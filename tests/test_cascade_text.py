"""Cascade text plumbing: clause chunking (chunked == whole), speakable text, conversation, config."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voice.cascade.config import CascadeConfig
from voice.cascade.conversation import Conversation, clock_text, system_prompt
from voice.cascade.tts import ClauseChunker, speakable

ANSWER = ("The capital of France is Paris. It has about two million people, and the Seine runs through it; "
          "many visitors come every year! Is there anything else, my friend, that you would like to know?")


def _chunk_whole(text: str) -> list[str]:
    c = ClauseChunker(min_clause_words=4)
    return c.feed(text) + c.flush()


def test_clauses_cut_at_sentences_and_long_clauses() -> None:
    assert _chunk_whole(ANSWER) == [
        "The capital of France is Paris.", "It has about two million people,", "and the Seine runs through it;",
        "many visitors come every year!", "Is there anything else,", "my friend, that you would like to know?"]


def test_clause_waits_for_whitespace_after_a_sentence_end() -> None:
    c = ClauseChunker()
    assert c.feed("It costs 3.") == []            # could be 3.5: not a boundary yet
    assert c.feed("5 euros. Next") == ["It costs 3.5 euros."]
    assert c.flush() == ["Next"]


def test_long_run_without_punctuation_is_cut() -> None:
    words = " ".join(f"w{i}" for i in range(70)) + " "
    clauses = ClauseChunker(max_words=30).feed(words)
    assert [len(c.split()) for c in clauses] == [30, 30]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(ANSWER)), max_size=25))
def test_chunked_feeding_equals_whole(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(ANSWER)]
    c = ClauseChunker(min_clause_words=4)
    out = []
    for a, b in zip(bounds, bounds[1:]):
        out += c.feed(ANSWER[a:b])
    assert out + c.flush() == _chunk_whole(ANSWER)


def test_speakable_drops_markdown_and_empty_pieces() -> None:
    assert speakable("**Paris** is the `capital`.") == "Paris is the capital."
    assert speakable(" - ** ") == ""


def test_system_prompt_carries_date_and_time() -> None:
    now = dt.datetime(2026, 5, 3, 16, 33)
    assert clock_text(now) == "Today is Sunday, May 3, 2026. The time is 4:33 PM."
    assert clock_text(dt.datetime(2026, 1, 1, 0, 5)).endswith("The time is 12:05 AM.")
    assert "4:33 PM" in system_prompt(now) and "short" in system_prompt(now)


def test_conversation_keeps_only_spoken_text_after_a_cut() -> None:
    conv = Conversation()
    conv.add_user(1, "Tell me about Paris.")
    conv.spoken(1, "Paris is the capital of France.", 10.0, 12.0)
    conv.spoken(1, "It has one two three four five six seven eight.", 12.0, 16.0)
    conv.spoken(1, "The Seine runs through it.", 16.0, 18.0)
    conv.cut(14.0)                       # halfway through the second clause
    conv.spoken(1, "Too late.", 18.0, 19.0)  # nothing is added after a cut
    assert conv.assistant_text(1) == "Paris is the capital of France. It has one two three"
    conv.add_user(2, "And Berlin?")
    msgs = conv.messages("SYSTEM")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[2]["content"] == "Paris is the capital of France. It has one two three"


def test_conversation_cut_after_playback_changes_nothing_and_drops_old_turns() -> None:
    conv = Conversation(max_exchanges=2)
    for turn in (1, 2, 3):
        conv.add_user(turn, f"question {turn}")
        conv.spoken(turn, f"answer {turn}.", turn * 10.0, turn * 10.0 + 1)
    conv.cut(100.0)
    msgs = conv.messages("S")
    assert [m["content"] for m in msgs[1:]] == ["question 2", "answer 2.", "question 3", "answer 3."]


def test_conversation_unspoken_answer_leaves_no_assistant_message() -> None:
    conv = Conversation()
    conv.add_user(1, "hello")
    conv.spoken(1, "Hi there.", 50.0, 51.0)
    conv.cut(49.0)                       # interrupted before the audio started playing
    assert [m["role"] for m in conv.messages("S")] == ["system", "user"]


def test_config_from_options_env_and_errors() -> None:
    cfg = CascadeConfig.from_options({"asr": "pocketsphinx", "max_new_tokens": "32"}, env={"VOICE_CASCADE_TTS": "flite"})
    assert (cfg.asr, cfg.tts, cfg.llm, cfg.max_new_tokens) == ("pocketsphinx", "flite", "smollm2", 32)
    assert CascadeConfig.from_options({"now": "2026-05-03T16:33"}, env={}).clock() == dt.datetime(2026, 5, 3, 16, 33)
    assert CascadeConfig.from_options({"asr_partials": "yes"}, env={}).asr_partials is True
    for bad in ({"asr": "kaldi"}, {"tts": "say"}, {"max_new_tokens": 0}, {"max_new_tokens": "many"},
                {"now": "tomorrow"}, {"asr_partials": "maybe"}, {"llm": " "}):
        with pytest.raises(ValueError):
            CascadeConfig.from_options(bad, env={})
