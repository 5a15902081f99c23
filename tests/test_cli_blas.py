"""The `voice` command keeps numpy's OpenBLAS to one thread unless the environment says otherwise."""

from __future__ import annotations

import subprocess
import sys

PROBE = ("import os, sys; sys.argv = ['voice', '--help']; from voice.cli import main\n"
         "try:\n    main()\nexcept SystemExit:\n    pass\n"
         "print('BLAS', os.environ.get('OPENBLAS_NUM_THREADS'), 'numpy' in sys.modules)")


def _probe(env_value: str | None) -> str:
    import os

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if env_value is not None:
        env["OPENBLAS_NUM_THREADS"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    return next(line for line in out.stdout.splitlines() if line.startswith("BLAS"))


def test_one_blas_thread_is_set_before_numpy_loads_and_the_environment_wins():
    assert _probe(None) == "BLAS 1 True"        # set, and numpy (loaded by the subcommands) came after
    assert _probe("4") == "BLAS 4 True"


def test_numpy_is_not_imported_before_the_setting():
    out = subprocess.run([sys.executable, "-c", "import sys, voice.cli; print('numpy' in sys.modules)"],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False"
