"""Cascade configuration: backends and limits from the hello's options over server-side defaults."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, fields, replace
from typing import Callable

ASR_BACKENDS = ("whisper", "pocketsphinx")
TTS_BACKENDS = ("piper", "flite", "espeak")
LLM_BACKENDS = ("transformers", "llamacpp", "speechlm")
# the model each LLM backend answers with when `llm` is not named; "speechlm" = the server's speech LM
# (VOICE_SPEECHLM, else models/speechlm: the e2e pipeline's model)
DEFAULT_LLM = {"transformers": "smollm2", "llamacpp": "smollm2", "speechlm": "speechlm"}
ENV_PREFIX = "VOICE_CASCADE_"   # server-side defaults, e.g. VOICE_CASCADE_TTS=flite


@dataclass(frozen=True)
class CascadeConfig:
    asr: str = "whisper"              # "whisper" | "pocketsphinx"
    llm: str = "smollm2"              # known name, local path (dir or .gguf) or hub name of a causal LM;
                                      # speechlm backend: a speech LM folder or "speechlm" (the server's)
    llm_backend: str = "transformers"  # "transformers" | "llamacpp" (GGUF models only; 4x faster here)
                                       # | "speechlm" (the speech LM's text mode: the e2e path's brain)
    tts: str = "piper"                # "piper" | "flite" | "espeak"
    asr_model: str = "whisper-tiny.en"  # faster-whisper model reference (whisper backend)
    asr_beam_size: int = 1            # whisper beam; 5 measured 0.5 points better WER for +0.4 s per turn
    tts_voice: str = ""               # piper: model reference (default piper-joe); flite: slt; espeak: en-us
    asr_partials: bool = False        # whisper: partial transcripts while the user speaks, by re-decoding
                                      # the turn so far (a full decode each; pocketsphinx always streams)
    partial_interval_s: float = 1.0   # whisper: at most one partial decode per interval
    max_new_tokens: int = 64          # cap on the answer length (a voice answer is a sentence)
    max_exchanges: int = 6            # dialogue turns kept in the LLM's context
    now: str = ""                     # fixed clock for the system prompt (ISO 8601); "" = the real time
    instructions: str = ""            # replaces the default system instructions ("" = default)
    min_clause_words: int = 4         # TTS: a clause boundary (, ; :) ends a chunk only after this many words

    @classmethod
    def from_options(cls, options: dict, env: dict[str, str] | None = None) -> "CascadeConfig":
        """Environment defaults (VOICE_CASCADE_<FIELD>) overridden by hello options; ValueError on bad values.

        A source that switches `llm_backend` to another backend without naming `llm` gets that
        backend's default model (DEFAULT_LLM): a server's GGUF default does not follow a hello to
        `speechlm`."""
        env = os.environ if env is None else env
        cfg = cls()
        for source in ({f.name: env[ENV_PREFIX + f.name.upper()] for f in fields(cls)
                        if ENV_PREFIX + f.name.upper() in env}, options):
            backend = cfg.llm_backend
            cfg = replace(cfg, **{f.name: _convert(f.name, source[f.name], type(getattr(cfg, f.name)))
                                  for f in fields(cls) if f.name in source})
            if cfg.llm_backend != backend and "llm" not in source:
                cfg = replace(cfg, llm=DEFAULT_LLM.get(cfg.llm_backend, cfg.llm))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.asr not in ASR_BACKENDS:
            raise ValueError(f"option asr must be one of {', '.join(ASR_BACKENDS)}, not {self.asr!r}")
        if self.tts not in TTS_BACKENDS:
            raise ValueError(f"option tts must be one of {', '.join(TTS_BACKENDS)}, not {self.tts!r}")
        if self.llm_backend not in LLM_BACKENDS:
            raise ValueError(f"option llm_backend must be one of {', '.join(LLM_BACKENDS)}, not {self.llm_backend!r}")
        if not self.llm.strip():
            raise ValueError("option llm must name a causal LM (e.g. smollm2, a path or a hub name)")
        if not 1 <= self.asr_beam_size <= 10:
            raise ValueError("option asr_beam_size must be between 1 and 10")
        if not 1 <= self.max_new_tokens <= 1024:
            raise ValueError("option max_new_tokens must be between 1 and 1024")
        if not 0 <= self.max_exchanges <= 64:
            raise ValueError("option max_exchanges must be between 0 and 64")
        if self.partial_interval_s < 0.2:
            raise ValueError("option partial_interval_s must be at least 0.2")
        self.clock()

    def clock(self) -> dt.datetime:
        """The time the assistant believes it is."""
        return hello_clock(self.now)()


def hello_clock(now) -> "Callable[[], dt.datetime]":
    """The clock a hello's `now` option asks for: the real time ("" or absent), or that fixed ISO 8601 time."""
    if not now:
        return dt.datetime.now
    try:
        fixed = dt.datetime.fromisoformat(str(now))
    except ValueError:
        raise ValueError(f"option now must be an ISO 8601 date-time such as 2026-05-03T16:33, not {now!r}") from None
    return lambda: fixed


def _convert(name: str, value, kind: type):
    if kind is bool:
        if isinstance(value, str):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(f"option {name} must be true or false")
            return value.lower() in ("1", "true", "yes")
        return bool(value)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"option {name} must be a {kind.__name__}, not {value!r}") from None
