"""File helpers for long-running jobs: atomic writes (no partial files) and checkpoint verification."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


class CheckpointError(RuntimeError):
    """A model checkpoint that is missing, unreadable or not the file its model card names."""


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part.

    The data goes to a temporary file in the same directory, is flushed to disk, then replaces
    `path` with `os.replace` (atomic on POSIX). A crash or SIGTERM mid-write leaves at most the
    temporary file's name behind for the moment it exists; it is removed on any error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """`atomic_write` of `obj` as JSON (UTF-8, trailing newline)."""
    return atomic_write(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def sha256_of(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def verify_checkpoint(path: str | Path, sha256: str | None) -> Path:
    """Check that a checkpoint exists and (if `sha256` is given) has that digest. Raises CheckpointError.

    Call it where a pipeline warms up, so that a missing, truncated or corrupt file stops the
    server at start-up with a message naming the file, rather than failing mid-session.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} is missing (prepare the models first, e.g. `voice models prepare`)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    if sha256 is None:
        return path
    expected = sha256.strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise CheckpointError(f"the sha256 given for {path} is not a 64-digit hex digest: {sha256!r}")
    try:
        actual = sha256_of(path)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from exc
    if actual != expected:
        raise CheckpointError(f"checkpoint {path} is corrupt or not the expected file: sha256 {actual[:16]}... "
                              f"!= {expected[:16]}... from its model card (size {path.stat().st_size} bytes); "
                              "download or copy it again")
    return path


def save_trainer_state(path: str | Path, model, opt, step: int, history: list, best: float) -> None:
    """Where a resumable training run stands (weights, optimizer, step, history, best score), written atomically."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"state": model.state_dict(), "opt": opt.state_dict(), "step": step, "history": history,
                "best": best}, buf)
    atomic_write(path, buf.getvalue())


def load_trainer_state(path: str | Path, model, opt) -> tuple[int, list, float]:
    """Restore what `save_trainer_state` wrote into `model` and `opt`; returns (step, history, best)."""
    import torch

    blob = torch.load(path, weights_only=False)
    model.load_state_dict(blob["state"])
    opt.load_state_dict(blob["opt"])
    return blob["step"], blob["history"], blob["best"]
