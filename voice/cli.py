"""The `voice` console script: one subcommand per job, each registered by its own module."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# Each module exposes `register(subparsers)`, adding its subcommand with `set_defaults(func=...)`.
# `func(args)` returns an exit code. Imports are lazy so `voice --help` stays fast.
SUBCOMMAND_MODULES = (
    "voice.server.cli",      # serve
    "voice.talk",            # talk
    "voice.models.cli",      # models (prepare, list)
    "voice.data.cli",        # data (build, import)
    "voice.codec.cli",       # train codec, eval codec
    "voice.speechlm.cli",    # train lm, eval lm
    "voice.speechlm.export", # lm export
    "voice.speechlm.hearing_train",  # train hearing, eval hearing
    "voice.speechlm.ear_cache",      # data ear
    "voice.speechlm.word_align",     # data align
    "voice.turn.train",      # train turn, eval turn
    "voice.turn.text_train", # train turn-text
    "voice.turn.barge_train",  # train barge, eval barge
    "voice.bench.cli",       # bench
    "voice.loadtest",        # loadtest
)


def command_group(subparsers, registered: dict, name: str, help_text: str):
    """Return the sub-subparsers of a shared command such as `train` or `eval`, creating it once."""
    if name not in registered:
        group = subparsers.add_parser(name, help=help_text)
        registered[name] = group.add_subparsers(dest=f"{name}_command", metavar="WHAT")
    return registered[name]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voice", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    registered = {}
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that part of the project is not there yet
            raise
        module.register(subparsers, registered)
    return parser


def single_threaded_numpy_blas() -> None:
    """One OpenBLAS thread for numpy, unless the environment says otherwise; before numpy is imported.

    numpy's matrix products here are small (the Whisper log-mel of the speech LM's ear and of the
    cascade's ASR, 80 x 201 by 201 x frames), and OpenBLAS's own threads, one per core by default,
    wait on each other whenever something else keeps the cores busy: with a data build on both cores
    the speech LM's end of turn (`begin_answer`) took 71 ms with them and 28 ms without; on a quiet
    machine the difference is a few ms (docs/e2e.md, "Threads")."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main(argv: list[str] | None = None) -> int:
    single_threaded_numpy_blas()
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
