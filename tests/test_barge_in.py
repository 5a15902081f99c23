"""Barge-in through a real server: speech during the answer clears it everywhere; a cough does not."""

from __future__ import annotations

import numpy as np

from conftest import FIXED_RULES
from voice.audio import read_wav
from voice.client import VoiceClient
from voice.server.app import ServerConfig, VoiceServer
from tests.conftest import assert_barge_in, run


async def session(pcm: np.ndarray, rate: int, options: dict | None = None) -> VoiceClient:
    srv = VoiceServer(ServerConfig(port=0, vad_defaults=FIXED_RULES))
    await srv.start()
    try:
        c = VoiceClient(srv.url, rate, pipeline="echo", options=options or {})
        await c.connect()
        await c.stream(pcm)
        await c.stream(np.zeros(int(1.5 * rate), np.float32))
        await c.close()
        return c
    finally:
        await srv.stop()


def test_speaking_during_the_answer_interrupts_it(speech_dir):
    first, rate = read_wav(speech_dir / "ps_librivox_sense_0890.wav")      # 5.3 s: a long echo
    second, rate2 = read_wav(speech_dir / "ps_cards_005.wav")
    assert rate == rate2 == 16000
    gap = np.zeros(int(0.9 * rate), np.float32)        # end of turn, then speak over the echo
    c = run(session(np.concatenate([first, gap, second]), rate))
    kinds = [e["type"] for _, e in c.log.events]
    assert "clear" in kinds, kinds
    assert_barge_in(c)      # cut while being made or while playing; nothing of it after the clear; turn 2 answered


def test_a_cough_during_the_answer_does_not_interrupt(speech_dir):
    first, rate = read_wav(speech_dir / "ps_librivox_sense_0890.wav")
    cough = read_wav(speech_dir / "ps_cards_005.wav")[0]
    # a 250 ms burst of real speech: long enough for the VAD, shorter than barge_in_min_speech_ms (400)
    start = np.flatnonzero(np.abs(cough) > 0.05)[0]
    burst = cough[start:start + int(0.25 * rate)]
    gap = np.zeros(int(0.9 * rate), np.float32)
    c = run(session(np.concatenate([first, gap, burst]), rate, options={"min_speech_ms": 100}))
    assert "clear" not in [e["type"] for _, e in c.log.events]
    assert c.log.of_type("turn_end")[0]["interrupted"] is False
