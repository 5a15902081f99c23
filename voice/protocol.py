"""Protocol v1: message kinds, validation of client messages, error codes and close codes.

See docs/protocol.md for the prose version. Text messages are JSON objects with a "type";
binary messages are PCM16 little-endian mono audio (client rate in, server rate out).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from voice.audio import MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 1 << 20          # 1 MiB: larger messages get `message_too_big` and close 1009
TRANSPORT_MAX_BYTES = 4 << 20        # websockets closes 1009 by itself above this (no error event)

# Close codes (RFC 6455 and the registry)
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013


@dataclass(frozen=True)
class ErrorCode:
    code: str
    close_code: int | None   # None: the session goes on
    meaning: str


ERRORS: dict[str, ErrorCode] = {e.code: e for e in [
    ErrorCode("invalid_json", None, "a text message that is not a JSON object"),
    ErrorCode("unknown_type", None, "a JSON message whose type the server does not know"),
    ErrorCode("invalid_message", None, "a known message with missing or invalid fields"),
    ErrorCode("duplicate_hello", None, "a second hello on the same connection"),
    ErrorCode("bad_audio", None, "binary audio with an odd number of bytes (the frame is dropped)"),
    ErrorCode("rate_limited", None, "too many control messages per second (the message is dropped)"),
    ErrorCode("not_ready", CLOSE_PROTOCOL_ERROR, "audio, or anything but a hello, before the hello (not JSON, no type too)"),
    ErrorCode("version_mismatch", CLOSE_PROTOCOL_ERROR, "the client speaks another protocol version (or sent no integer)"),
    ErrorCode("bad_sample_rate", CLOSE_INVALID_DATA, "no sample rate, or one that is not an integer in 8000-48000 Hz"),
    ErrorCode("bad_options", CLOSE_INVALID_DATA, "hello options with invalid values"),
    ErrorCode("unknown_pipeline", CLOSE_POLICY, "the hello names a pipeline the server does not have"),
    ErrorCode("unauthorized", CLOSE_POLICY, "missing or wrong token, or a disallowed Origin"),
    ErrorCode("session_too_long", CLOSE_POLICY, "the session exceeded the server's maximum duration"),
    ErrorCode("too_many_messages", CLOSE_POLICY, "a flood of binary messages (more per second than any microphone sends)"),
    ErrorCode("hello_timeout", CLOSE_POLICY, "no hello within the server's hello timeout after connecting"),
    ErrorCode("message_too_big", CLOSE_TOO_BIG, "a message over 1 MiB"),
    ErrorCode("stage_failed", CLOSE_INTERNAL_ERROR, "a pipeline stage raised; the session ends"),
    ErrorCode("internal_error", CLOSE_INTERNAL_ERROR, "an unexpected server error; the session ends"),
    ErrorCode("server_full", CLOSE_TRY_AGAIN_LATER, "the server holds its maximum number of sessions"),
]}

CLIENT_MESSAGE_TYPES = ("hello", "interrupt", "new_conversation", "ping", "bye")


class ProtocolError(Exception):
    """A client mistake, reported to the client as an error event (and maybe a close)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        if code not in ERRORS:
            raise ValueError(f"undocumented error code {code}")
        self.code = code
        self.message = message

    @property
    def close_code(self) -> int | None:
        return ERRORS[self.code].close_code

    def event(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": self.message}


@dataclass(frozen=True)
class Hello:
    """The client's opening message."""

    sample_rate_hz: int
    pipeline: str
    version: int = PROTOCOL_VERSION
    options: dict[str, Any] = field(default_factory=dict)


def parse_text(text: str) -> dict[str, Any]:
    """A text message -> its JSON object with a string `type`. Raises ProtocolError."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("invalid_json", f"text messages must be JSON objects: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("invalid_json", "text messages must be JSON objects")
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid_message", "a message needs a string field 'type'")
    if kind not in CLIENT_MESSAGE_TYPES:
        raise ProtocolError("unknown_type", f"unknown message type {kind[:64]!r}; known: {', '.join(CLIENT_MESSAGE_TYPES)}")
    return msg


def parse_hello(msg: dict[str, Any], pipelines: list[str], default_pipeline: str) -> Hello:
    """Validate a hello message (already parsed by `parse_text`). Raises ProtocolError."""
    version = msg.get("version", PROTOCOL_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError("version_mismatch", f"hello.version must be the integer {PROTOCOL_VERSION}, not {str(version)[:32]!r}")
    if version != PROTOCOL_VERSION:
        raise ProtocolError("version_mismatch", f"server speaks protocol version {PROTOCOL_VERSION}, client sent {version}")
    if "sample_rate" not in msg:
        raise ProtocolError("bad_sample_rate", "hello.sample_rate is required: the rate in Hz of the audio the client "
                            f"will send, an integer in {MIN_SAMPLE_RATE_HZ}-{MAX_SAMPLE_RATE_HZ}")
    rate = msg["sample_rate"]
    if not isinstance(rate, int) or isinstance(rate, bool):   # JSON 16000.0 is a float: refused like 16000.5
        raise ProtocolError("bad_sample_rate", f"hello.sample_rate must be an integer number of Hz, not {str(rate)[:32]}")
    if not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
        raise ProtocolError("bad_sample_rate", f"sample_rate {rate} Hz is outside {MIN_SAMPLE_RATE_HZ}-{MAX_SAMPLE_RATE_HZ} Hz")
    pipeline = msg.get("pipeline") or default_pipeline
    if not isinstance(pipeline, str) or pipeline not in pipelines:
        raise ProtocolError("unknown_pipeline", f"unknown pipeline {str(pipeline)[:64]!r}; available: {', '.join(pipelines)}")
    options = msg.get("options")
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise ProtocolError("bad_options", "hello.options must be an object")
    return Hello(sample_rate_hz=rate, pipeline=pipeline, version=version, options=options)


class AskedOptions(dict):
    """Hello options that remember which names were asked for (`in`, `get`, `[]`).

    The VAD and the pipeline read their options by name; what none of them asked for is an
    option this session ignores (a typo, or another pipeline's option), which `ready` lists.
    Iterating marks every option as asked, so a reader that walks them is never second-guessed.
    """

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__(options)
        self.asked: set[str] = set()

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)

    def __getitem__(self, key: str) -> Any:
        self.asked.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __iter__(self):
        self.asked.update(super().keys())
        return super().__iter__()

    def keys(self):
        self.asked.update(super().keys())
        return super().keys()

    def items(self):
        self.asked.update(super().keys())
        return super().items()

    def ignored(self) -> list[str]:
        """The options nobody asked for, sorted."""
        return sorted(k for k in super().keys() if k not in self.asked)
