"""Data the package carries: real human recordings for tests, benchmarks and codec evaluation."""

from __future__ import annotations

import os
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent
SPEECH_DIR = ASSETS_DIR / "speech"


def speech_dir() -> Path:
    """The folder of real recordings: $VOICE_SPEECH_DIR when set (to add recordings of your own, in the
    same manifest format), else the 21 recordings the package carries (voice/assets/speech)."""
    env = os.environ.get("VOICE_SPEECH_DIR")
    return Path(env).expanduser() if env else SPEECH_DIR
