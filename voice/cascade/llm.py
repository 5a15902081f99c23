"""LLM stage: the final transcript -> streamed answer text, with the dialogue so far as context."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable

from voice.cascade.config import CascadeConfig
from voice.cascade.conversation import DEFAULT_INSTRUCTIONS, Conversation, system_prompt
from voice.cascade.deps import require_module
from voice.frames import AssistantText, Frame, Metric, Transcript
from voice.pipelines import ModelCache
from voice.runtime.stage import Stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generation:
    text: str
    new_tokens: int
    seconds: float
    cancelled: bool


class LlmBackend:
    """Generates an answer to chat `messages`, calling `on_text` with each new piece of text.

    Blocking (the stage runs it in a worker thread); must return promptly once `cancel` is set.
    """

    name = "llm"

    def system_message(self, now: dt.datetime, instructions: str) -> str:
        """The system message this model was made for: the instructions and the clock sentence."""
        return system_prompt(now, instructions)

    def generate(self, messages: list[dict[str, str]], max_new_tokens: int, on_text: Callable[[str], None],
                 cancel: threading.Event) -> Generation:
        raise NotImplementedError


def set_torch_threads(torch, threads: int | None = None) -> None:
    """Half the cores by default (one on 2 cores): the TTS synthesises the previous clause while the LLM writes."""
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 2) // 2))


def load_causal_lm(ref: str, threads: int | None = None):
    """(model, tokenizer) for a causal LM reference resolved by voice.models, in float32 on the CPU."""
    require_module("transformers", "pip install transformers safetensors", "LLM backend 'transformers'")
    torch = require_module("torch", "pip install torch", "LLM backend 'transformers'")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from voice.models import resolve_model

    resolved = resolve_model(ref, kind="causal_lm")
    set_torch_threads(torch, threads)
    start_s = time.monotonic()
    tokenizer = AutoTokenizer.from_pretrained(resolved.location)
    model = AutoModelForCausalLM.from_pretrained(resolved.location, dtype=torch.float32).eval()
    log.info("loaded LLM %s from %s (%s) in %.1f s", ref, resolved.location, resolved.source, time.monotonic() - start_s)
    return model, tokenizer


def _streamer_class():
    from transformers import StoppingCriteria, TextStreamer

    class CallbackStreamer(TextStreamer):
        """Hands each finalised piece of text (whole words) to a callback."""

        def __init__(self, tokenizer, on_text: Callable[[str], None]) -> None:
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.on_text = on_text

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                self.on_text(text)

    class CancelCriterion(StoppingCriteria):
        """Stops generation at the next token once `cancel` is set."""

        def __init__(self, cancel: threading.Event) -> None:
            self.cancel = cancel

        def __call__(self, input_ids, scores, **kwargs) -> bool:
            return self.cancel.is_set()

    return CallbackStreamer, CancelCriterion


class TransformersLlm(LlmBackend):
    """Any `transformers` causal LM with a chat template; greedy decoding, streamed word by word.

    No repetition penalty: it also penalises copying from the prompt, and SmolLM2 then gets the
    time in the system prompt wrong (measured: "12:59 AM" with 1.1, "4:33 PM" without).
    """

    name = "transformers"

    def __init__(self, model, tokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.active = 0   # generations running now (tests check that cancel stops them)
        self._active_lock = threading.Lock()

    def _inputs(self, messages: list[dict[str, str]]):
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                      return_dict=True)
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"
        return self.tokenizer(text, return_tensors="pt")

    def generate(self, messages, max_new_tokens, on_text, cancel) -> Generation:
        import torch

        streamer_cls, cancel_cls = _streamer_class()
        inputs = self._inputs(messages)
        pieces: list[str] = []

        def collect(text: str) -> None:
            pieces.append(text)
            on_text(text)

        start_s = time.monotonic()
        with self._active_lock:
            self.active += 1
        try:
            with torch.inference_mode():
                out = self.model.generate(
                    **inputs, max_new_tokens=max_new_tokens, do_sample=False,
                    streamer=streamer_cls(self.tokenizer, collect), stopping_criteria=[cancel_cls(cancel)],
                    pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        finally:
            with self._active_lock:
                self.active -= 1
        n_new = int(out.shape[1] - inputs["input_ids"].shape[1])
        return Generation("".join(pieces), n_new, time.monotonic() - start_s, cancel.is_set())


def gguf_path(ref: str) -> str:
    """The GGUF file of a causal LM reference (a .gguf path or a known model whose bundle is GGUF)."""
    from voice.models import bundle_path, find_spec

    path = Path(ref).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return str(path)
    spec = find_spec(ref)
    bundle = bundle_path(spec) if spec is not None else None
    if bundle is not None and bundle.suffix == ".gguf":
        return str(bundle)
    raise ValueError(f"llm_backend llamacpp needs a GGUF model (a .gguf path or smollm2), not {ref!r}")


class LlamaCppLlm(LlmBackend):
    """A GGUF model through llama.cpp (llama-cpp-python): greedy, streamed token by token.

    Measured here for SmolLM2-135M Q4_1 (docs/cascade.md): first token 50 ms and 66 tokens/s on
    one thread, against 230 ms and 17 tokens/s for transformers in float32. One llama.cpp context
    is shared by the sessions of a server, so their generations take turns (a lock).
    """

    name = "llamacpp"

    def __init__(self, path: str, threads: int | None = None) -> None:
        llama_cpp = require_module("llama_cpp", "pip install llama-cpp-python", "LLM backend 'llamacpp'")
        start_s = time.monotonic()
        self.llm = llama_cpp.Llama(model_path=path, n_ctx=2048, verbose=False,
                                   n_threads=threads or max(1, (os.cpu_count() or 2) // 2))
        self._lock = threading.Lock()
        self.active = 0
        log.info("loaded GGUF %s with llama.cpp in %.1f s", path, time.monotonic() - start_s)

    def generate(self, messages, max_new_tokens, on_text, cancel) -> Generation:
        pieces: list[str] = []
        start_s = time.monotonic()
        with self._lock:
            self.active += 1
            try:
                stream = self.llm.create_chat_completion(messages, max_tokens=max_new_tokens, temperature=0.0,
                                                         stream=True)
                for chunk in stream:
                    if cancel.is_set():
                        break
                    text = chunk["choices"][0]["delta"].get("content")
                    if text:
                        pieces.append(text)
                        on_text(text)
            finally:
                self.active -= 1
        return Generation("".join(pieces), len(pieces), time.monotonic() - start_s, cancel.is_set())


def make_llm(config: CascadeConfig, models: ModelCache) -> LlmBackend:
    """The session's LLM backend, loaded once per model by `models`; ValueError for a model it cannot use."""
    if config.llm_backend == "speechlm":
        from voice.cascade.speechlm_llm import make_speechlm_llm

        return make_speechlm_llm(config.llm, models)
    if config.llm_backend == "llamacpp":
        return models.get(f"llm:llamacpp:{config.llm}", lambda: LlamaCppLlm(gguf_path(config.llm)))
    return models.get(f"llm:{config.llm}", lambda: TransformersLlm(*load_causal_lm(config.llm)))


class LlmStage(Stage):
    """In: final Transcript. Out: the transcript (passed on), AssistantText pieces as they are
    generated, then AssistantText(final=True, text="") (the TTS stage ends the turn). Owns the session's Conversation: adds the
    user's turn; the TTS stage reports what of the answer was spoken. An interrupt cancels the
    generation at the next token."""

    name = "llm"

    def __init__(self, backend: LlmBackend, conversation: Conversation, config: CascadeConfig) -> None:
        super().__init__()
        self.backend, self.conversation, self.config = backend, conversation, config
        self._cancel = threading.Event()

    def reset(self) -> None:
        self._cancel.set()

    def retract(self, turn_id: int) -> None:
        """A speculative answer taken back: stop it, and neither the user's words nor the answer stay in the context."""
        self._cancel.set()
        self.conversation.forget(turn_id)

    def new_conversation(self) -> None:
        """Stop the answer and forget every exchange: the next turn is the conversation's first."""
        self._cancel.set()
        self.conversation.clear()

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        yield frame
        if not (isinstance(frame, Transcript) and frame.final and frame.text.strip()):
            return
        self.conversation.add_user(frame.turn_id, frame.text)
        prompt = self.backend.system_message(self.config.clock(), self.config.instructions or DEFAULT_INSTRUCTIONS)
        messages = self.conversation.messages(prompt)
        async for out in self._generate(frame.turn_id, messages):
            yield out

    async def _generate(self, turn_id: int, messages: list[dict[str, str]]) -> AsyncIterator[Frame]:
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        cancel = self._cancel = threading.Event()
        job = asyncio.ensure_future(asyncio.to_thread(
            self.backend.generate, messages, self.config.max_new_tokens,
            lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text), cancel))
        job.add_done_callback(lambda _: pieces.put_nowait(None))
        try:
            while (piece := await pieces.get()) is not None:
                yield AssistantText(turn_id=turn_id, text=piece)
            result: Generation = job.result()
        finally:
            cancel.set()   # an interrupt cancelled this task: stop the worker thread at its next token
        log.debug("turn %d: %d tokens in %.2f s: %r", turn_id, result.new_tokens, result.seconds, result.text)
        yield AssistantText(turn_id=turn_id, text="", final=True)
        if result.seconds > 0:
            yield Metric(turn_id=turn_id, name="llm_tokens_per_s", value=round(result.new_tokens / result.seconds, 2))
