"""What a bench run compares: named variants, each a pipeline with its own hello options.

`--pipelines echo,cascade` gives one variant per pipeline, named after it. `--variant
same-brain=cascade:llm_backend=speechlm,max_new_tokens=32` adds the cascade again under the name
`same-brain` with those options on top of the global `--option`s. Every spec is checked here,
before a server starts or a turn runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

VARIANT_FORM = "NAME=PIPELINE[:KEY=VALUE,...]"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*\Z")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class Variant:
    """One column of the report: `name` runs `pipeline` with `options` over the global ones."""

    name: str
    pipeline: str
    options: dict = field(default_factory=dict)  # its own hello options; they override --option

    def describe(self) -> str:
        """`same-brain = cascade with llm_backend=speechlm` (just `echo` for a plain pipeline)."""
        head = self.name if self.name == self.pipeline else f"{self.name} = {self.pipeline}"
        return f"{head} with {format_options(self.options)}" if self.options else head


def format_options(options: dict) -> str:
    """`key=value, ...` with whole numbers written without a decimal point."""
    def value(v) -> str:
        return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
    return ", ".join(f"{k}={value(v)}" for k, v in options.items())


def parse_options(pairs: Iterable[str], where: str = "--option") -> dict:
    """KEY=VALUE strings to hello options; numbers become floats. Raises ValueError naming `where`."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not _KEY.match(key):
            raise ValueError(f"{where} wants KEY=VALUE (KEY a name such as end_silence_ms), got {pair!r}")
        if key in out:
            raise ValueError(f"option {key!r} given twice in {where}")
        out[key] = float(value) if value.replace(".", "", 1).lstrip("-").isdigit() else value
    return out


def parse_variant(spec: str, known: Iterable[str]) -> Variant:
    """`NAME=PIPELINE[:KEY=VALUE,...]` to a Variant; a value may hold `=` and `:` but not `,`."""
    known = tuple(known)
    where = f"--variant {spec!r}"
    name, sep, rest = spec.partition("=")
    pipeline, colon, opts = rest.partition(":")
    if not sep or not name or ":" in name or not pipeline:
        raise ValueError(f"{where}: wants {VARIANT_FORM}, e.g. same-brain=cascade:llm_backend=speechlm")
    if not _NAME.match(name):
        raise ValueError(f"{where}: bad variant name {name!r}; use letters, digits and - _ . +")
    if name in known:
        raise ValueError(f"{where}: {name!r} is a pipeline's name; give the variant its own (e.g. {name}-2)")
    _check_pipeline(pipeline, known, where)
    if colon and not opts:
        raise ValueError(f"{where}: no options after ':' (drop the ':' or add KEY=VALUE,...)")
    return Variant(name, pipeline, parse_options(opts.split(",") if opts else [], where))


def make_variants(pipelines: str | None, specs: Iterable[str], known: Iterable[str]) -> tuple[Variant, ...]:
    """The run's variants: the `--pipelines` list (None: echo, unless variants are given), then the `--variant`s.

    Raises ValueError on an unknown pipeline, a malformed spec, a name used twice or an empty run.
    """
    known, specs = tuple(known), list(specs)
    if pipelines is None:
        pipelines = "" if specs else "echo"
    out = []
    for p in (p.strip() for p in pipelines.split(",")):
        if p:
            _check_pipeline(p, known, "--pipelines")
            out.append(Variant(p, p))
    out += [parse_variant(s, known) for s in specs]
    if not out:
        raise ValueError("no pipelines to run: give --pipelines and/or --variant")
    seen: set[str] = set()
    for v in out:
        if v.name in seen:
            raise ValueError(f"{v.name!r} is named twice in --pipelines / --variant; each needs its own name")
        seen.add(v.name)
    return tuple(out)


def _check_pipeline(pipeline: str, known: tuple[str, ...], where: str) -> None:
    if pipeline not in known:
        hint = f" (name a variant with --variant {VARIANT_FORM})" if "=" in pipeline else ""
        raise ValueError(f"unknown pipeline {pipeline!r} in {where}; available: {', '.join(sorted(known))}{hint}")
