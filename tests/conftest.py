"""Shared fixtures: real recordings, a real in-process server on a loopback port."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEECH_DIR = ROOT.parent / "shared" / "speech"


def speech_files() -> list[Path]:
    return sorted(SPEECH_DIR.glob("*.wav"))


def speech_transcripts() -> dict[str, str]:
    out = {}
    with open(SPEECH_DIR / "manifest.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            name = row.get("file") or row.get("filename") or row.get("path") or next(iter(row.values()))
            out[Path(name).name] = row.get("transcript", "")
    return out


@pytest.fixture
def speech_dir() -> Path:
    if not SPEECH_DIR.is_dir():
        pytest.skip("../shared/speech is not present")
    return SPEECH_DIR


def run(coro, timeout_s: float = 120.0):
    """Run a coroutine in a fresh event loop with a hard timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout_s))
