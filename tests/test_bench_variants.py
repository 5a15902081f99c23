"""`voice bench --variant NAME=PIPELINE:KEY=VALUE,...`: one pipeline under several option sets in one run."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from conftest import SPEECH_DIR
from voice.bench.variants import Variant, make_variants, parse_options, parse_variant
from voice.cli import main

KNOWN = ("echo", "cascade", "e2e", "codec-echo")


def test_parse_variant_with_options():
    v = parse_variant("same-brain=cascade:llm_backend=speechlm,max_new_tokens=32", KNOWN)
    assert v == Variant("same-brain", "cascade", {"llm_backend": "speechlm", "max_new_tokens": 32.0})
    assert v.describe() == "same-brain = cascade with llm_backend=speechlm, max_new_tokens=32"


def test_parse_variant_values_may_hold_colons_and_equals():
    v = parse_variant("clock=echo:now=2026-05-03T16:33,instructions=a=b", KNOWN)
    assert v.pipeline == "echo" and v.options == {"now": "2026-05-03T16:33", "instructions": "a=b"}


def test_parse_variant_without_options():
    assert parse_variant("echo-again=echo", KNOWN) == Variant("echo-again", "echo", {})


@pytest.mark.parametrize("spec, message", [
    ("cascade:llm_backend=speechlm", "NAME=PIPELINE"),       # no name
    ("=cascade", "NAME=PIPELINE"),                            # empty name
    ("x=", "NAME=PIPELINE"),                                  # no pipeline
    ("x=cascad:llm_backend=speechlm", "unknown pipeline 'cascad'"),
    ("x=cascade:", "no options after ':'"),
    ("x=cascade:llm_backend", "KEY=VALUE"),                   # malformed option
    ("x=cascade:llm_backend=speechlm,,tts=flite", "KEY=VALUE"),
    ("x=cascade:=speechlm", "KEY=VALUE"),                     # empty key
    ("x=cascade:llm_backend=a,llm_backend=b", "twice"),
    ("a b=echo", "variant name"),
    ("a/b=echo", "variant name"),
    ("cascade=cascade:llm_backend=llamacpp", "is a pipeline's name"),
])
def test_parse_variant_rejects_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_variant(spec, KNOWN)
    assert repr(spec) in str(err.value) or spec.split("=")[0] in str(err.value)


def test_parse_options():
    assert parse_options(["end_silence_ms=300", "llm=models/a.gguf", "x=-2"]) == {
        "end_silence_ms": 300.0, "llm": "models/a.gguf", "x": -2.0}
    for bad in (["oops"], ["=3"], [" a=1"]):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            parse_options(bad)


def test_make_variants_plain_pipelines_then_variants():
    vs = make_variants("echo,e2e, cascade", ["same-brain=cascade:llm_backend=speechlm"], KNOWN)
    assert [(v.name, v.pipeline, v.options) for v in vs] == [
        ("echo", "echo", {}), ("e2e", "e2e", {}), ("cascade", "cascade", {}),
        ("same-brain", "cascade", {"llm_backend": "speechlm"})]


def test_make_variants_defaults():
    assert make_variants(None, [], KNOWN) == (Variant("echo", "echo", {}),)
    assert [v.name for v in make_variants(None, ["a=echo", "b=echo"], KNOWN)] == ["a", "b"]


@pytest.mark.parametrize("pipes, specs, message", [
    ("echo,echo", [], "'echo' is named twice"),
    (None, ["a=echo", "a=echo:end_silence_ms=300"], "'a' is named twice"),
    ("echo,nope", [], "unknown pipeline 'nope'"),
    ("", [], "no pipelines"),
    (None, ["x=nope"], "unknown pipeline 'nope'"),
])
def test_make_variants_rejects(pipes, specs, message):
    with pytest.raises(ValueError, match=message):
        make_variants(pipes, specs, KNOWN)


def test_bench_refuses_a_bad_variant_before_running(tmp_path, caplog):
    """A bad spec ends the command with status 2 and a clear message; no server starts, no file is written."""
    out = tmp_path / "reports"
    with caplog.at_level(logging.ERROR):
        assert main(["bench", "--variant", "same-brain=cascad:llm_backend=speechlm", "--out", str(out)]) == 2
    assert "unknown pipeline 'cascad'" in caplog.text
    with caplog.at_level(logging.ERROR):
        assert main(["bench", "--pipelines", "echo", "--variant", "b=echo:end_silence_ms", "--out", str(out)]) == 2
    assert "KEY=VALUE" in caplog.text
    assert not out.exists()


def test_bench_two_echo_variants_in_one_run(tmp_path, capsys):
    """Two variants of echo, each with its own end_silence_ms over a global one, and a typo the server ignores."""
    speech = tmp_path / "speech"
    speech.mkdir()
    shutil.copy(SPEECH_DIR / "tf_speech_commands_yes.wav", speech)
    out = tmp_path / "reports"
    rc = main(["bench", "--variant", "short=echo:end_silence_ms=300", "--variant", "typo=echo:end_silence_msec=300",
               "--option", "end_silence_ms=700", "--option", "turn_detection=silence", "--speech-dir", str(speech),
               "--out", str(out), "--no-warmup"])
    assert rc == 0
    files = sorted(out.glob("*.json"))
    assert len(files) == 1 and files[0].name.endswith("_short-typo_shared-speech.json"), files
    report = json.loads(files[0].read_text())
    meta, summary, turns = report["meta"], report["summary"], report["turns"]
    assert meta["config"]["pipelines"] == ["short", "typo"]
    assert meta["config"]["options"] == {"end_silence_ms": 700.0, "turn_detection": "silence"}
    assert meta["config"]["variants"] == {"short": {"pipeline": "echo", "options": {"end_silence_ms": 300.0}},
                                          "typo": {"pipeline": "echo", "options": {"end_silence_msec": 300.0}}}
    assert [(t["variant"], t["pipeline"]) for t in turns] == [("short", "echo"), ("typo", "echo")]
    short, typo = turns
    # the variant's own end_silence_ms overrides the global one; the typo leaves the global 700 ms in force
    assert short["end_silence_ms"] == 300 and typo["end_silence_ms"] == 700
    assert 250 <= short["endpointing_ms"] < 500, short
    assert typo["endpointing_ms"] >= 650, typo
    assert short["v2v_ms"] + 200 < typo["v2v_ms"]
    assert short["ignored_options"] == [] and typo["ignored_options"] == ["end_silence_msec"]
    assert summary["short"]["pipeline"] == "echo" and summary["typo"]["pipeline"] == "echo"
    assert summary["short"]["options"] == {"end_silence_ms": 300.0, "turn_detection": "silence"}
    assert summary["typo"]["options"] == {"end_silence_ms": 700.0, "turn_detection": "silence", "end_silence_msec": 300.0}
    assert summary["short"]["ignored_options"] == [] and summary["typo"]["ignored_options"] == ["end_silence_msec"]
    md = next(out.glob("*.md")).read_text()
    assert "## short" in md and "## typo" in md
    assert "typo = echo with end_silence_msec=300" in md
    assert "ignored by the server: end_silence_msec" in md
    printed = capsys.readouterr().out
    assert "typo = echo with end_silence_msec=300" in printed and "ignored by the server: end_silence_msec" in printed
