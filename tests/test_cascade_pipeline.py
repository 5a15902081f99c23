"""The cascade behind a real server: one spoken turn end to end, barge-in, clear errors for bad backends."""

from __future__ import annotations

import asyncio
import sys

import numpy as np
import pytest

from conftest import FIXED_RULES, hello_error, run
from voice.audio import first_non_silent_index, read_wav
from voice.client import VoiceClient
from voice.pipelines import ModelCache
from voice.server.app import ServerConfig, VoiceServer

MODELS = ModelCache()   # weights shared by this module's servers
LONG = {"instructions": "You are a storyteller. Tell a long, detailed story of many sentences.", "max_new_tokens": 200}


async def _server() -> VoiceServer:
    srv = VoiceServer(ServerConfig(port=0, vad_defaults=FIXED_RULES, pipeline="cascade", warmup=False))
    srv.models = MODELS
    await srv.start()
    return srv


def _speech(speech_dir, name: str, lead_s: float = 0.3, tail_s: float = 1.0) -> np.ndarray:
    pcm, rate = read_wav(speech_dir / name)
    assert rate == 16000
    return np.concatenate([np.zeros(int(lead_s * 16000), np.float32), pcm, np.zeros(int(tail_s * 16000), np.float32)])


def test_one_spoken_turn_end_to_end(speech_dir) -> None:
    async def go():
        srv = await _server()
        try:
            async with VoiceClient(srv.url, 16000, "cascade", {"tts": "espeak", "now": "2026-05-03T16:33"}) as c:
                assert c.output_rate_hz == 22050
                await c.stream(_speech(speech_dir, "sb_timit_spk1_snt5.wav"))
                end = await c.wait_for(lambda e: e["type"] == "turn_end", 60, include_past=True)
                return c.log, end
        finally:
            await srv.stop()
    log, end = run(go())
    final = [e for e in log.of_type("transcript") if e["final"]]
    assert final and "sunday" in final[0]["text"].lower()
    answer = "".join(e["text"] for e in log.of_type("assistant_text"))
    assert answer.strip() and not end["interrupted"]
    audio = np.concatenate([a.pcm for a in log.audio])
    assert first_non_silent_index(audio) is not None and len(audio) > 0.3 * 22050
    timings = end["timings_ms"]
    assert timings["asr.Transcript"] < timings["llm.AssistantText"] < timings["ws_out.AssistantAudio"]


async def _ask_long(c: VoiceClient, speech: np.ndarray, turn: int) -> None:
    await c.stream(speech)
    await c.wait_for(lambda e: e["type"] == "audio_start" and e["turn"] == turn, 90, include_past=True)


def test_barge_in_cancels_llm_and_tts_at_once(speech_dir) -> None:
    question = _speech(speech_dir, "ps_goforward.wav")
    interrupter = _speech(speech_dir, "sb_example1_birch_canoe.wav", lead_s=0.0, tail_s=1.0)

    async def go():
        srv = await _server()
        try:
            async with VoiceClient(srv.url, 16000, "cascade", {"tts": "piper", **LONG}) as c:
                llm = MODELS.get("llm:smollm2", lambda: None)
                # 1. client interrupt while the answer plays
                await _ask_long(c, question, 1)
                await c.interrupt()
                clear1 = await c.wait_for(lambda e: e["type"] == "clear", 10)
                t_clear1 = _time_of(c, clear1)
                await asyncio.sleep(0.5)
                assert llm.active == 0                     # generation stopped
                assert not [a for a in c.log.audio if a.t_s > t_clear1]  # no assistant audio after the clear
                # 2. the user talks over the answer (VAD barge-in)
                await _ask_long(c, question, 2)
                await c.stream(interrupter)
                clear2 = await c.wait_for(lambda e: e["type"] == "clear" and e["reason"] == "barge_in", 30,
                                          include_past=True)
                assert 2 in clear2["turns"]
                t_clear2 = _time_of(c, clear2)
                assert not [a for a in c.log.audio if a.t_s > t_clear2 and a.turn_id == 2]
                await c.wait_for(lambda e: e["type"] == "turn_end" and e["turn"] == 3, 90, include_past=True)
                session = next(iter(srv.sessions.values()))
                conversation = session.pipeline.stages[1].conversation
                said = "".join(e["text"] for e in c.log.of_type("assistant_text") if e["turn"] == 2)
                kept = conversation.assistant_text(2)
                # 3. "New conversation": the exchanges are forgotten, the session goes on
                assert len(conversation.messages("system")) > 1
                await c.new_conversation()
                await c.wait_for(lambda e: e["type"] == "conversation_reset", 10)
                assert [e["reason"] for e in c.log.of_type("clear")][-1] == "new_conversation"
                assert conversation.messages("system") == [{"role": "system", "content": "system"}]
                return kept, said
        finally:
            await srv.stop()
    kept, generated = run(go(), timeout_s=300)
    # only the part of answer 2 that was played before the barge-in stays in the context
    assert kept and len(kept) < len(" ".join(generated.split()))
    assert " ".join(generated.split()).startswith(kept)


def _time_of(c: VoiceClient, event: dict) -> float:
    return next(t for t, e in c.log.events if e is event)


@pytest.mark.parametrize("options,needle", [
    ({"tts": "piper"}, "pip install piper-tts"),
    ({"tts": "espeak", "llm": "no-such-model"}, "not a local path, a known model"),
    ({"asr": "kaldi"}, "option asr must be one of"),
])
def test_bad_backend_is_a_clear_error(monkeypatch, options: dict, needle: str) -> None:
    monkeypatch.setitem(sys.modules, "piper", None)   # as if piper-tts were not installed
    message = hello_error("cascade", {"asr": "pocketsphinx", **options})   # a server with its own empty ModelCache
    assert "bad_options" in message and needle in message
