"""VoiceClient exposes the hello options the server did not use (`ready.ignored_options`, issue 16)."""

from __future__ import annotations

from tests.conftest import serve
from voice.client import VoiceClient


def test_client_exposes_the_options_the_server_ignored():
    async def go(srv):
        seen = {}
        for name, options in (("typo", {"end_silence_msec": 300, "end_silence_ms": 400, "tts": "x"}),
                              ("clean", {"end_silence_ms": 400})):
            client = VoiceClient(srv.url, pipeline="echo", options=options)
            assert client.ignored_options == []          # nothing known before the handshake
            try:
                ready = await client.connect(10)
            finally:
                await client.close()
            seen[name] = (client.ignored_options, ready["ignored_options"])
        return seen

    seen = serve(go, pipeline="echo")
    assert seen["typo"] == (["end_silence_msec", "tts"], ["end_silence_msec", "tts"])
    assert seen["clean"] == ([], [])
