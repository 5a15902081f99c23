"""The hello through the raw protocol: what `ready` says about the options, and the errors' words."""

from __future__ import annotations

import pytest

from voice.protocol import PROTOCOL_VERSION, AskedOptions
from tests.conftest import exchange, serve

HELLO = {"type": "hello", "version": PROTOCOL_VERSION, "sample_rate": 16000, "pipeline": "echo"}


def first_event(messages: list) -> tuple[dict, int | None]:
    events, close_code = serve(lambda srv: exchange(srv.url, messages, wait_s=0.5), warmup=False)
    return events[0], close_code


@pytest.mark.parametrize("options, ignored", [
    ({}, []),
    ({"end_silence_ms": 600, "threshold": 0.6}, []),
    ({"end_silence_msec": 600, "threshold": 0.6}, ["end_silence_msec"]),   # a typo
    ({"tts": "flite", "zz": 1, "end_silence_ms": 600}, ["tts", "zz"]),      # a cascade option sent to echo
])
def test_ready_lists_the_options_the_session_ignores(options, ignored):
    ready, close_code = first_event([{**HELLO, "options": options}])
    assert ready["type"] == "ready" and close_code is None
    assert ready["ignored_options"] == ignored


def test_an_ignored_option_does_not_change_the_session():
    """The typo'd option has no effect: the default end-of-turn silence applies (VAD options still work)."""
    ready, _ = first_event([{**HELLO, "options": {"end_silence_msec": 10_000_000}}])
    assert ready["type"] == "ready"
    refused, close_code = first_event([{**HELLO, "options": {"end_silence_ms": 10_000_000}}])
    assert refused["code"] == "bad_options" and close_code == 1007


def test_a_missing_sample_rate_is_named_as_required():
    error, close_code = first_event([{k: v for k, v in HELLO.items() if k != "sample_rate"}])
    assert error["code"] == "bad_sample_rate" and close_code == 1007
    assert "sample_rate is required" in error["message"]


def test_text_before_the_hello_says_a_hello_must_come_first():
    error, close_code = first_event(["{not json"])
    assert error["code"] == "not_ready" and close_code == 1002
    assert "first message must be a hello" in error["message"]


def test_asked_options_counts_every_way_of_reading():
    options = AskedOptions({"a": 1, "b": 2, "c": 3, "d": 4})
    assert "a" in options and options.get("b") == 2 and options["c"] == 3
    assert options.ignored() == ["d"]
    assert options.get("absent") is None and "absent" not in options.ignored()
    dict(options.items())
    assert options.ignored() == []          # a reader that walks the options uses them all
