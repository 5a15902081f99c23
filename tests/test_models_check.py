"""`voice models check`: the set-up's import check names the package that does not load."""

from __future__ import annotations

from voice.cli import main
from voice.models.check import CHECKS, Check, failed, run_checks


def _broken() -> str:
    raise OSError("Could not load this library: libtorchaudio.so (undefined symbol: torch_exception_get_what)")


def test_a_failing_check_is_reported_with_its_package(capsys) -> None:
    checks = (Check("fine", "fine-pkg", lambda: "loads"), Check("torchaudio", "torchaudio, the matching release", _broken),
              Check("extra", "extra-pkg", _broken, optional=True))
    results = run_checks(checks)
    bad = failed(results)
    assert [c.name for c, _ in bad] == ["torchaudio"]
    assert "undefined symbol" in bad[0][1]
    printed = capsys.readouterr().out
    assert "fine" in printed and "FAILED" in printed and "missing (optional)" in printed


def test_the_checks_cover_what_the_issue_names() -> None:
    names = {c.name for c in CHECKS}
    assert {"torch", "torchaudio", "encodec", "transformers", "silero-vad", "whisper-tiny.en", "piper-joe",
            "smollm2", "llama-cpp-python", "codec"} <= names


def test_voice_models_check_passes_on_this_machine(capsys) -> None:
    assert main(["models", "check", "--skip", "kokoro"]) == 0
    assert "FAILED" not in capsys.readouterr().out
