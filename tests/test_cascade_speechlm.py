"""`llm_backend=speechlm`: the speech LM's text mode (t2t) as the cascade's LLM, with a tiny real random model."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import numpy as np
import pytest

from tests.conftest import hello_error, run
from tests.test_e2e_speechlm import _save_tiny_speechlm
from conftest import FIXED_RULES
from voice.cascade.config import CascadeConfig
from voice.cascade.conversation import Conversation, clock_text
from voice.cascade.llm import LlmStage, make_llm
from voice.frames import AssistantText, Transcript
from voice.pipelines import ModelCache

NOW = dt.datetime(2026, 5, 3, 16, 33)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speechlm")
    _save_tiny_speechlm(folder)
    return folder


@pytest.fixture(scope="module")
def models():
    return ModelCache()


def _llm(folder, models: ModelCache | None = None):
    return make_llm(CascadeConfig(llm_backend="speechlm", llm=str(folder)), models or ModelCache())


def _t2t(folder, blocks: list[tuple[str, str]], max_tokens: int) -> str:
    """The reference: a fresh generator fed the t2t blocks by hand (voice.speechlm.format), then its text answer."""
    import torch

    from voice.speechlm.cli import load_text_ids
    from voice.speechlm.generate import SpeechGenerator
    from voice.speechlm.model import SpeechLM

    text = load_text_ids(folder)
    gen = SpeechGenerator(SpeechLM.from_pretrained(folder, dtype=torch.float32), max_sessions=1)
    session = gen.open()
    for marker, words in blocks:
        end = [gen.vocab.special("end_of_text")] if marker == "assistant_text" else []
        gen.feed_text(session, marker, text.encode(words) + end)
    return text.decode(gen.generate_text(session, "assistant_text", max_tokens))


def _fed(llm) -> int:
    """Steps the last generation put in the generator's one slot (prompt, answer marker, answer)."""
    return llm.generator.decoder.lengths[0]


def test_answers_in_t2t_mode_from_the_context_sentence_and_the_dialogue(tiny_lm, models) -> None:
    llm = _llm(tiny_lm, models)
    assert _llm(tiny_lm, models) is llm                     # one generator per model folder
    assert llm.system_message(NOW, "Be brief.") == clock_text(NOW)   # the speech LM knows no instructions
    messages = [{"role": "system", "content": clock_text(NOW)}, {"role": "user", "content": "What time is it?"},
                {"role": "assistant", "content": "It is sunny and warm."}, {"role": "user", "content": "Thanks!"}]
    end, enc = llm.generator.vocab.special("end_of_text"), llm.text.encode
    blocks = [("context", enc(clock_text(NOW))), ("user_text", enc("What time is it?")),
              ("assistant_text", enc("It is sunny and warm.") + [end]), ("user_text", enc("Thanks!"))]
    assert llm.blocks(messages, 12) == blocks               # the t2t layout of voice.speechlm.format
    pieces: list[str] = []
    gen = llm.generate(messages, 12, pieces.append, threading.Event())
    assert gen.text and "".join(pieces) == gen.text and 0 < gen.new_tokens <= 12 and not gen.cancelled
    assert _fed(llm) == sum(1 + len(ids) for _, ids in blocks) + 1 + gen.new_tokens   # every block went in
    assert gen.text == _t2t(tiny_lm, [("context", clock_text(NOW)), ("user_text", "What time is it?"),
                                      ("assistant_text", "It is sunny and warm."), ("user_text", "Thanks!")], 12)


def test_a_cancelled_generation_says_nothing(tiny_lm, models) -> None:
    llm, cancel, pieces = _llm(tiny_lm, models), threading.Event(), []
    cancel.set()
    gen = llm.generate([{"role": "user", "content": "Hello"}], 12, pieces.append, cancel)
    assert gen.cancelled and not pieces and llm.active == 0


def test_a_long_dialogue_starts_fresh_with_the_latest_turns(tmp_path) -> None:
    _save_tiny_speechlm(tmp_path, max_len=96)
    llm = _llm(tmp_path)
    long_turn = "Please tell me the weather in every city of the country you know of today. " * 3
    messages = [{"role": "system", "content": clock_text(NOW)}]
    for i in range(6):
        messages += [{"role": "user", "content": f"Question number {i}: what is {i} plus {i}?"},
                     {"role": "assistant", "content": f"It is {2 * i}, as far as I know."}]
    messages.append({"role": "user", "content": "And what is seven plus seven?"})
    blocks = llm.blocks(messages, 16)
    assert blocks[0] == ("context", llm.text.encode(clock_text(NOW)))
    assert blocks[-1] == ("user_text", llm.text.encode("And what is seven plus seven?"))
    assert blocks[1][0] == "user_text" and len(blocks) < 2 + 12     # the oldest exchanges went
    assert llm.steps(blocks) + 1 + 16 <= 96
    assert llm.generate(messages, 16, lambda text: None, threading.Event()).text is not None
    # one user turn alone longer than the context: its last words are kept
    blocks = llm.blocks(messages[:1] + [{"role": "user", "content": long_turn}], 16)
    assert [m for m, _ in blocks] == ["context", "user_text"] and llm.steps(blocks) + 1 + 16 <= 96
    assert blocks[1][1] == llm.text.encode(long_turn)[-len(blocks[1][1]):]
    llm.generate(messages[:1] + [{"role": "user", "content": long_turn}], 16, lambda text: None, threading.Event())


def test_the_stage_prompts_with_the_context_sentence(tiny_lm, models) -> None:
    llm = _llm(tiny_lm, models)
    config = CascadeConfig(llm_backend="speechlm", llm=str(tiny_lm), now="2026-05-03T16:33", max_new_tokens=10)
    stage = LlmStage(llm, Conversation(), config)

    async def go():
        return [f async for f in stage.process(Transcript(turn_id=1, text="What time is it?", final=True))]

    frames = asyncio.run(go())
    said = "".join(f.text for f in frames if isinstance(f, AssistantText))
    assert said == _t2t(tiny_lm, [("context", clock_text(NOW)), ("user_text", "What time is it?")], 10)
    assert frames[-2].final and frames[-1].name == "llm_tokens_per_s"
    # the context was the clock sentence alone, not the cascade's instructions
    prompt = [("context", llm.text.encode(clock_text(NOW))), ("user_text", llm.text.encode("What time is it?"))]
    assert 1 <= _fed(llm) - llm.steps(prompt) - 1 <= 10


def test_a_hello_choosing_the_backend_gets_the_servers_speech_lm() -> None:
    env = {"VOICE_CASCADE_LLM": "/models/other.gguf", "VOICE_CASCADE_LLM_BACKEND": "llamacpp"}
    assert CascadeConfig.from_options({"llm_backend": "speechlm"}, env=env).llm == "speechlm"
    assert CascadeConfig.from_options({}, env=env).llm == "/models/other.gguf"
    assert CascadeConfig.from_options({"llm_backend": "speechlm", "llm": "/lm"}, env=env).llm == "/lm"
    assert CascadeConfig.from_options({"llm_backend": "llamacpp"}, env=env).llm == "/models/other.gguf"


def test_a_missing_model_is_a_clear_error(tmp_path, monkeypatch) -> None:
    from voice.e2e import e2e_pipeline

    with pytest.raises(ValueError, match=f"^no speech LM at {tmp_path / 'none'}: train one"):
        _llm(tmp_path / "none")
    monkeypatch.delenv("VOICE_SPEECHLM", raising=False)
    if not (e2e_pipeline.ROOT / "models" / "speechlm" / "config.json").exists():
        with pytest.raises(ValueError, match=r"^no speech LM at models/speechlm: train one \(docs/speechlm.md\)$"):
            _llm("speechlm")
    monkeypatch.setenv("VOICE_SPEECHLM", str(tmp_path / "gone"))
    message = hello_error("cascade", {"asr": "pocketsphinx", "tts": "espeak", "llm_backend": "speechlm"})
    assert "bad_options" in message and f"no speech LM at {tmp_path / 'gone'}" in message


def test_a_spoken_question_gets_words_and_audio_through_a_server(tiny_lm, speech_dir) -> None:
    from voice.audio import first_non_silent_index, read_wav
    from voice.client import VoiceClient
    from voice.server.app import ServerConfig, VoiceServer

    pcm, rate = read_wav(speech_dir / "sb_timit_spk1_snt5.wav")
    speech = np.concatenate([np.zeros(int(0.3 * rate), np.float32), pcm, np.zeros(rate, np.float32)])
    options = {"llm_backend": "speechlm", "llm": str(tiny_lm), "tts": "espeak", "now": "2026-05-03T16:33"}

    async def go():
        srv = VoiceServer(ServerConfig(port=0, vad_defaults=FIXED_RULES, pipeline="cascade", warmup=False))
        await srv.start()
        try:
            async with VoiceClient(srv.url, rate, "cascade", options) as c:
                await c.stream(speech)
                end = await c.wait_for(lambda e: e["type"] == "turn_end", 60, include_past=True)
                return c.log, end
        finally:
            await srv.stop()
    log, end = run(go())
    assert [e for e in log.of_type("transcript") if e["final"]]
    answer = "".join(e["text"] for e in log.of_type("assistant_text"))
    assert answer.strip() and not end["interrupted"]
    audio = np.concatenate([a.pcm for a in log.audio])
    assert first_non_silent_index(audio) is not None and len(audio) > 0.3 * 22050
    assert end["timings_ms"]["asr.Transcript"] < end["timings_ms"]["llm.AssistantText"]
