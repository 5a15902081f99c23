"""The llama.cpp LLM backend: the same GGUF answers through llama.cpp, streams, and stops on cancel."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import pytest

from conftest import cancel_after_first_token
from voice.cascade.config import CascadeConfig
from voice.cascade.conversation import Conversation, system_prompt
from voice.cascade.llm import LlamaCppLlm, LlmStage, gguf_path, make_llm
from voice.frames import AssistantText, Transcript
from voice.pipelines import ModelCache

CONFIG = CascadeConfig(llm_backend="llamacpp")


@pytest.fixture(scope="module")
def llm() -> LlamaCppLlm:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by scripts/setup.sh")
    return make_llm(CONFIG, ModelCache())


def test_streams_an_answer_from_the_bundled_gguf(llm) -> None:
    messages = [{"role": "system", "content": system_prompt(dt.datetime(2026, 5, 3, 16, 33))},
                {"role": "user", "content": "What is the capital of France?"}]
    pieces: list[str] = []
    gen = llm.generate(messages, 24, pieces.append, threading.Event())
    assert len(pieces) >= 3 and "".join(pieces) == gen.text and "Paris" in gen.text
    assert not gen.cancelled


def test_answers_the_time_from_the_system_prompt(llm) -> None:
    stage = LlmStage(llm, Conversation(), CascadeConfig(llm_backend="llamacpp", now="2026-05-03T16:33"))

    async def go():
        return [f async for f in stage.process(Transcript(turn_id=1, text="What time is it?", final=True))]

    text = "".join(f.text for f in asyncio.run(go()) if isinstance(f, AssistantText))
    assert "4:33" in text


def test_cancel_stops_generation(llm) -> None:
    generation, stop_s, alive = cancel_after_first_token(llm, 300)
    assert not alive and stop_s < 1.0
    assert generation.cancelled and generation.new_tokens < 200 and llm.active == 0


def test_a_non_gguf_model_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="needs a GGUF model"):
        gguf_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(ValueError, match="llm_backend must be one of"):
        CascadeConfig.from_options({"llm_backend": "vllm"}, env={})
