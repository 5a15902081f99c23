"""LLM stage with the real SmolLM2: streamed == whole, the clock in the prompt, prompt cancellation."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import pytest

from conftest import cancel_after_first_token
from voice.cascade.config import CascadeConfig
from voice.cascade.conversation import Conversation, system_prompt
from voice.cascade.llm import LlmStage, make_llm
from voice.frames import AssistantText, Transcript
from voice.pipelines import ModelCache

MODELS = ModelCache()


@pytest.fixture(scope="module")
def llm():
    try:
        return make_llm(CascadeConfig(), MODELS)
    except Exception as exc:  # the bundle or its conversion is missing on this machine
        pytest.skip(f"SmolLM2 unavailable: {exc}")


def test_streamed_pieces_equal_one_whole_generation(llm) -> None:
    import torch

    messages = [{"role": "system", "content": system_prompt(dt.datetime(2026, 5, 3, 16, 33))},
                {"role": "user", "content": "What is the capital of France?"}]
    pieces: list[str] = []
    gen = llm.generate(messages, 24, pieces.append, threading.Event())
    assert len(pieces) >= 3 and "".join(pieces) == gen.text
    inputs = llm._inputs(messages)
    with torch.inference_mode():
        out = llm.model.generate(**inputs, max_new_tokens=24, do_sample=False)
    whole = llm.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert gen.text.strip() == whole.strip()
    assert "Paris" in gen.text


def test_answers_the_time_from_the_system_prompt(llm) -> None:
    stage = LlmStage(llm, Conversation(), CascadeConfig(now="2026-05-03T16:33"))

    async def go():
        return [f async for f in stage.process(Transcript(turn_id=1, text="What time is it?", final=True))]
    frames = asyncio.run(go())
    text = "".join(f.text for f in frames if isinstance(f, AssistantText))
    assert frames[0].kind == "Transcript" and isinstance(frames[-2], AssistantText) and frames[-2].final
    assert "4:33" in text


def test_cancel_stops_generation_at_the_next_token(llm) -> None:
    generation, stop_s, alive = cancel_after_first_token(llm, 200)
    assert not alive and stop_s < 1.0
    assert generation.cancelled and generation.new_tokens < 60 and llm.active == 0
