"""Property-based tests of the protocol parser: any input gets a documented ProtocolError or a valid message."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voice.audio import MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ
from voice.protocol import CLIENT_MESSAGE_TYPES, ERRORS, Hello, ProtocolError, parse_hello, parse_text
from voice.stages.vad import VadConfig

PIPELINES = ["echo", "cascade"]
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=4)
                           | st.dictionaries(st.text(max_size=10), kids, max_size=4), max_leaves=20)
hello_like = st.fixed_dictionaries({"type": st.just("hello")}, optional={
    "version": st.integers(-3, 3) | json_values,
    "sample_rate": st.integers(0, 100000) | st.floats(allow_nan=True, allow_infinity=True) | json_values,
    "pipeline": st.sampled_from(PIPELINES + ["", "nope"]) | json_values,
    "options": st.dictionaries(st.sampled_from(["threshold", "end_silence_ms", "min_speech_ms", "max_turn_s", "x"]),
                               json_values | st.integers(-10**500, 10**500), max_size=4) | json_values,
})
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _documented(err: ProtocolError) -> None:
    assert err.code in ERRORS and err.message
    event = err.event()
    assert json.loads(json.dumps(event)) == event             # always serialisable


@FAST
@given(st.text(max_size=200) | json_values.map(json.dumps))
def test_parse_text_never_raises_anything_else(text):
    try:
        msg = parse_text(text)
    except ProtocolError as err:
        _documented(err)
        return
    assert isinstance(msg, dict) and msg["type"] in CLIENT_MESSAGE_TYPES


@FAST
@given(hello_like)
def test_parse_hello_accepts_only_valid_hellos(msg):
    text = json.dumps(msg)                                    # as it would arrive (NaN/Infinity included)
    try:
        hello = parse_hello(parse_text(text), PIPELINES, "echo")
        VadConfig.from_options(hello.options)
    except ProtocolError as err:
        _documented(err)
        return
    except (TypeError, ValueError, OverflowError):
        return                                                # the session maps these to bad_options
    assert isinstance(hello, Hello) and hello.pipeline in PIPELINES and hello.version == 1
    assert isinstance(hello.sample_rate_hz, int) and MIN_SAMPLE_RATE_HZ <= hello.sample_rate_hz <= MAX_SAMPLE_RATE_HZ
    assert isinstance(hello.options, dict)


@FAST
@given(st.dictionaries(st.sampled_from(["threshold", "end_silence_ms", "pre_roll_ms", "max_turn_s"]),
                       st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**400, 10**400)))
def test_vad_options_are_finite_or_rejected(options):
    try:
        cfg = VadConfig.from_options(options)
    except (ValueError, OverflowError):
        return
    for name in options:
        assert math.isfinite(getattr(cfg, name)) and getattr(cfg, name) >= 0


@FAST
@given(st.binary(max_size=64))
def test_binary_before_hello_or_odd_lengths_are_reported(data):
    from voice.audio import pcm16_to_float

    try:
        pcm = pcm16_to_float(data)
    except ValueError:
        assert len(data) % 2 == 1
        return
    assert len(pcm) == len(data) // 2 and (abs(pcm) <= 1.0).all()


class FakeSocket:
    """Just enough of a websockets connection for a Session: scripted input, recorded output."""

    def __init__(self, messages: list) -> None:
        self._messages = list(messages)
        self.sent: list = []
        self.close_code: int | None = None
        self.transport = self

    def __aiter__(self):
        return self

    async def __anext__(self):
        import asyncio

        await asyncio.sleep(0)
        if not self._messages or self.close_code is not None:
            raise StopAsyncIteration
        return self._messages.pop(0)

    async def send(self, message) -> None:
        self.sent.append(message)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.close_code is None:
            self.close_code = code

    def abort(self) -> None:
        self.close_code = self.close_code or 1006


weird_number = st.sampled_from([10**309, -10**400, -1, 0, 1, 1e308, float("nan"), float("inf"), -0.0, True]) | \
    st.integers(-10**400, 10**400) | st.floats(allow_nan=True, allow_infinity=True)
valid_hello_odd_options = st.builds(
    lambda rate, opts: json.dumps({"type": "hello", "sample_rate": rate, "pipeline": "echo", "options": opts}),
    st.sampled_from([8000, 16000, 44100, 48000]),
    st.dictionaries(st.sampled_from(["threshold", "end_silence_ms", "min_speech_ms", "pre_roll_ms", "max_turn_s"]),
                    weird_number, min_size=1, max_size=3))
client_message = (valid_hello_odd_options | hello_like.map(json.dumps) | st.sampled_from(['{"type":"ping","t":1}', '{"type":"interrupt"}',
                  '{"type":"bye"}', "{}", "nonsense", '{"type":"hello","sample_rate":16000}'])
                  | st.binary(max_size=700) | st.text(max_size=30))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_hello_odd_options | client_message, st.lists(client_message, max_size=6))
def test_any_message_sequence_ends_with_a_documented_close(first, rest):
    """A whole session over arbitrary messages: only documented errors, never an internal error."""
    import asyncio

    messages = [first, *rest]
    from voice import pipelines
    from voice.server.session import Session

    ws = FakeSocket(messages)
    session = Session(ws, pipelines.ModelCache(), ["echo"], "echo")
    asyncio.run(asyncio.wait_for(session.run(), 20))
    events = [json.loads(m) for m in ws.sent if isinstance(m, str)]
    codes = [e["code"] for e in events if e["type"] == "error"]
    assert all(c in ERRORS for c in codes) and "internal_error" not in codes, codes
    fatal = [c for c in codes if ERRORS[c].close_code is not None]
    assert ws.close_code == (ERRORS[fatal[0]].close_code if fatal else 1000), (codes, ws.close_code)
