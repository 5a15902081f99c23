"""Barge-in through a real server: speech during the answer clears it everywhere; a cough does not."""

from __future__ import annotations

import numpy as np

from voice.audio import read_wav
from voice.client import VoiceClient
from voice.server.app import ServerConfig, VoiceServer
from tests.conftest import run


async def session(pcm: np.ndarray, rate: int, options: dict | None = None) -> VoiceClient:
    srv = VoiceServer(ServerConfig(port=0))
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
    clear_t, clear = next((t, e) for t, e in c.log.events if e["type"] == "clear")
    assert clear["reason"] == "barge_in" and clear["turns"] == [1]
    # turn 1 is either cut while being generated (turn_end interrupted) or while playing (clear only)
    ended = [(t, e) for t, e in c.log.events if e["type"] == "turn_end" and e["turn"] == 1]
    assert len(ended) == 1 and (ended[0][1]["interrupted"] or ended[0][0] < clear_t)
    # nothing of turn 1 arrives after the clear; the barge-in turn is answered normally
    assert not [a for a in c.log.audio if a.turn_id == 1 and a.t_s > clear_t]
    assert any(e["turn"] == 2 and not e["interrupted"] for e in c.log.of_type("turn_end"))


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
