"""Bad input: each case gets its documented error code and close code; other sessions keep working."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect

from conftest import FIXED_RULES
from voice.client import VoiceClient
from voice.protocol import ERRORS, PROTOCOL_VERSION, ProtocolError, parse_hello, parse_text
from voice.server.app import ServerConfig, VoiceServer
from tests.conftest import exchange, run

HELLO = {"type": "hello", "version": PROTOCOL_VERSION, "sample_rate": 16000, "pipeline": "echo"}


CASES = [
    # (name, messages, expected error code, expected close code or None if the session goes on)
    ("not json", [HELLO, "this is not json"], "invalid_json", None),
    ("json array", [HELLO, "[1, 2]"], "invalid_json", None),
    ("unknown type", [HELLO, {"type": "dance"}], "unknown_type", None),
    ("no type", [HELLO, {"kind": "hello"}], "invalid_message", None),
    ("odd-length pcm", [HELLO, b"\x00\x01\x02"], "bad_audio", None),
    ("second hello", [HELLO, HELLO], "duplicate_hello", None),
    ("audio before hello", [b"\x00\x00" * 160], "not_ready", 1002),
    ("interrupt before hello", [{"type": "interrupt"}], "not_ready", 1002),
    ("new conversation before hello", [{"type": "new_conversation"}], "not_ready", 1002),
    # before the hello, anything but a valid hello ends the session (issue 16, protocol item 1)
    ("not json before hello", ["this is not json"], "not_ready", 1002),
    ("json array before hello", ["[1, 2]"], "not_ready", 1002),
    ("hello without type", [{k: v for k, v in HELLO.items() if k != "type"}], "not_ready", 1002),
    ("unknown type before hello", [{"type": "dance"}], "not_ready", 1002),
    ("version not an int", [{**HELLO, "version": "1"}], "version_mismatch", 1002),
    ("version a float", [{**HELLO, "version": 1.0}], "version_mismatch", 1002),
    ("version mismatch", [{**HELLO, "version": 99}], "version_mismatch", 1002),
    ("rate too low", [{**HELLO, "sample_rate": 4000}], "bad_sample_rate", 1007),
    ("rate too high", [{**HELLO, "sample_rate": 96000}], "bad_sample_rate", 1007),
    ("rate not a number", [{**HELLO, "sample_rate": "fast"}], "bad_sample_rate", 1007),
    ("rate a float", [{**HELLO, "sample_rate": 16000.0}], "bad_sample_rate", 1007),     # item 2
    ("rate missing", [{k: v for k, v in HELLO.items() if k != "sample_rate"}], "bad_sample_rate", 1007),
    ("bad vad option", [{**HELLO, "options": {"threshold": 7}}], "bad_options", 1007),
    ("unknown pipeline", [{**HELLO, "pipeline": "telepathy"}], "unknown_pipeline", 1008),
    ("frame over 1 MiB", [HELLO, b"\x00" * ((1 << 20) + 2)], "message_too_big", 1009),
]


@pytest.mark.parametrize("name,messages,code,close", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_documented_error_and_server_keeps_serving(name, messages, code, close):
    async def main():
        srv = VoiceServer(ServerConfig(port=0, vad_defaults=FIXED_RULES))
        await srv.start()
        try:
            # a healthy session is open the whole time and must keep working
            healthy = VoiceClient(srv.url, 16000, pipeline="echo")
            await healthy.connect()
            events, close_code = await exchange(srv.url, messages)
            await healthy.send_json({"type": "ping", "t": 1})
            pong = await healthy.wait_for(lambda e: e["type"] == "pong", 5, include_past=True)
            await healthy.close()
            return events, close_code, pong
        finally:
            await srv.stop()

    events, close_code, pong = run(main())
    errors = [e for e in events if e["type"] == "error"]
    assert errors and errors[0]["code"] == code and errors[0]["message"]
    assert close_code == close
    assert ERRORS[code].close_code == close     # matches the documented table
    assert pong["t"] == 1


def test_session_goes_on_after_a_recoverable_error(speech_dir):
    from voice.audio import read_wav

    pcm, rate = read_wav(speech_dir / "tf_speech_commands_yes.wav")

    async def main():
        srv = VoiceServer(ServerConfig(port=0, vad_defaults=FIXED_RULES))
        await srv.start()
        try:
            c = VoiceClient(srv.url, rate, pipeline="echo")
            await c.connect()
            await c.send_raw("garbage")
            await c.send_raw(b"\x01")
            await c.stream(np.concatenate([pcm, np.zeros(rate, np.float32)]), realtime=False)
            await c.wait_for(lambda e: e["type"] == "turn_end", 10, include_past=True)
            await c.close()
            return c
        finally:
            await srv.stop()

    c = run(main())
    assert [e["code"] for e in c.log.of_type("error")] == ["invalid_json", "bad_audio"]
    assert c.log.audio, "the session still echoed the turn after the errors"


def test_parser_rejects_every_malformed_hello_field():
    ok = parse_hello(dict(HELLO), ["echo"], "echo")
    assert ok.sample_rate_hz == 16000 and ok.pipeline == "echo"
    assert parse_hello({"type": "hello", "sample_rate": 8000}, ["echo"], "echo").pipeline == "echo"
    for bad, code in [({"sample_rate": True}, "bad_sample_rate"), ({"sample_rate": float("nan")}, "bad_sample_rate"),
                      ({"sample_rate": 16000.5}, "bad_sample_rate"), ({"sample_rate": 16000.0}, "bad_sample_rate"),
                      ({"version": "1"}, "version_mismatch"),
                      ({"options": []}, "bad_options")]:
        with pytest.raises(ProtocolError) as err:
            parse_hello({**HELLO, **bad}, ["echo"], "echo")
        assert err.value.code == code
    with pytest.raises(ProtocolError):
        parse_text("9" * 100)
    with pytest.raises(ProtocolError) as err:
        parse_text("[" * 100000)
    assert err.value.code == "invalid_json"


@pytest.mark.parametrize("option, value", [("pre_roll_ms", 2.95e20), ("max_turn_s", 1e6), ("end_silence_ms", 10_001)])
def test_vad_options_past_their_bounds_are_bad_options(option, value):
    """Found by the fuzzer: a huge pre_roll_ms overflowed a deque size and ended the session as internal_error."""
    from tests.conftest import hello_error

    message = hello_error("echo", {option: value})
    assert "bad_options" in message and option in message
