"""Registers the `cascade` pipeline: VAD -> ASR -> LLM -> TTS, backends chosen per session."""

from __future__ import annotations

import logging

from voice.cascade.asr import AsrStage, make_asr
from voice.cascade.config import CascadeConfig
from voice.cascade.conversation import Conversation
from voice.cascade.deps import BackendUnavailable
from voice.cascade.llm import LlmStage, make_llm
from voice.cascade.tts import TtsStage, make_tts
from voice.models import ModelNotFoundError
from voice.pipelines import ModelCache, PipelineDef, register
from voice.protocol import ProtocolError
from voice.runtime.stage import Stage

log = logging.getLogger(__name__)
CASCADE_TURN_THRESHOLD = 0.95  # P(over) that ends a cascade turn: never looser than the shipped model's own (0.95)


def _config(options: dict) -> CascadeConfig:
    try:
        return CascadeConfig.from_options(options)
    except ValueError as exc:
        raise ProtocolError("bad_options", str(exc)) from None


def build(options: dict, models: ModelCache) -> list[Stage]:
    """The session's stages. The LLM and TTS stages share one Conversation (what was said)."""
    config = _config(options)
    try:  # cheapest checks first: a missing TTS program or package fails before any weights load
        tts, asr, llm = make_tts(config, models), make_asr(config, models), make_llm(config, models)
    except (BackendUnavailable, ModelNotFoundError) as exc:
        raise ProtocolError("bad_options", str(exc)) from None
    conversation = Conversation(config.max_exchanges)
    return [AsrStage(asr, config.asr_partials, config.partial_interval_s),
            LlmStage(llm, conversation, config),
            TtsStage(tts, conversation, config.min_clause_words)]


def output_sample_rate_hz(options: dict, models: ModelCache) -> int:
    config = _config(options)
    try:
        return make_tts(config, models).sample_rate_hz
    except (BackendUnavailable, ModelNotFoundError) as exc:
        raise ProtocolError("bad_options", str(exc)) from None


def warmup(models: ModelCache) -> None:
    """Load the default backends' weights and run each once, so the first turn is not slow."""
    import numpy as np

    config = CascadeConfig.from_options({})
    asr, llm, tts = make_asr(config, models), make_llm(config, models), make_tts(config, models)
    if hasattr(asr, "model"):
        asr.begin()
        asr.accept(np.zeros(16000, np.float32))
        asr.finish()
    import threading

    llm.generate([{"role": "user", "content": "Hi"}], 2, lambda text: None, threading.Event())
    tts.synthesize("Hello.")
    log.info("cascade warm: %s, %s, %s", config.asr, config.llm, config.tts)


register(PipelineDef(
    name="cascade",
    description="streaming ASR -> LLM -> TTS (whisper|pocketsphinx, any causal LM or the speech LM, piper|flite|espeak)",
    build=build,
    output_sample_rate_hz=output_sample_rate_hz,
    warmup=warmup,
    # the cascade needs about 1.2 s to its first audio, so its answer starts at a likely end anyway
    # (speculative start): a stricter end-of-turn decision costs it no latency and cuts fewer users off
    # (docs/turn-taking.md: with the log-mel model, validation premature ends 7.2% -> 5.6% at 0.9 instead of
    # 0.8, ready p95 1400 -> 1497 ms; the Whisper-front-end model's own threshold is 0.95 already)
    vad_defaults={"turn_threshold": CASCADE_TURN_THRESHOLD},
))
