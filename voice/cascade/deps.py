"""Clear errors for cascade backends whose package or program is missing."""

from __future__ import annotations

import importlib
import shutil
from types import ModuleType


class BackendUnavailable(RuntimeError):
    """A backend cannot run here; the message names what to install."""


def require_module(module: str, install: str, backend: str) -> ModuleType:
    """Import `module` or raise BackendUnavailable naming `install` (e.g. "pip install piper-tts")."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(f"{backend} needs the Python package {module!r} ({exc}); "
                                 f"install it with: {install}") from exc


def require_program(program: str, install: str, backend: str) -> str:
    """Path of the executable `program` or raise BackendUnavailable naming `install`."""
    path = shutil.which(program)
    if path is None:
        raise BackendUnavailable(f"{backend} needs the program {program!r} on PATH; install it with: {install}")
    return path
