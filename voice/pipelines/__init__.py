"""Pipeline registry: the server builds `build_stages(name, ...)` and has no per-backend branches."""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from voice.runtime.stage import Stage

log = logging.getLogger(__name__)

# Modules that register pipelines when imported; a missing optional module is skipped.
PIPELINE_MODULES = ("voice.pipelines.echo", "voice.cascade.pipeline", "voice.e2e.pipeline", "voice.e2e.e2e_pipeline")


class ModelCache:
    """Model weights shared by every session of a server: loaded once, by key, thread-safely.

    `options`: how the server wants its models run (`speechlm_process`: the speech LM in a process of its
    own; `torch_threads`: torch's threads per call there)."""

    def __init__(self, options: dict | None = None) -> None:
        self.options = dict(options or {})
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: str, loader: Callable[[], Any], stale: Callable[[Any], bool] | None = None) -> Any:
        """The model under `key`, loaded now if absent or if `stale(model)` says it can no longer serve
        (a model process that has died)."""
        with self._lock:
            if key in self._models and stale is not None and stale(self._models[key]):
                log.warning("model %s can no longer serve: loading it again", key)
                del self._models[key]
            if key not in self._models:
                log.info("loading model %s", key)
                self._models[key] = loader()
            return self._models[key]

    def loaded(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def process_cpu(self) -> dict[int, float]:
        """CPU seconds used so far by the processes models run in beside the server (a model's `cpu_s`), by
        model: the server's load monitor adds them to its own. Read without the lock, which a loader holds for
        the seconds a load takes: the monitor asks from the event loop every 0.25 s (copying the dict's values
        is one step under Python's lock)."""
        models = tuple(self._models.values())
        return {id(m): m.cpu_s for m in models if getattr(m, "alive", False) and hasattr(m, "cpu_s")}

    def close(self) -> None:
        """Stop what runs beside the server (a model's process or worker threads: their `shutdown()`)."""
        with self._lock:
            models = list(self._models.values())
        for model in models:
            if hasattr(model, "shutdown"):
                try:
                    model.shutdown()
                except Exception:
                    log.exception("shutting down a model failed")


@dataclass(frozen=True)
class PipelineDef:
    """A named pipeline: the stages that follow the shared VAD head, and its output rate."""

    name: str
    description: str
    build: Callable[[dict, ModelCache], list[Stage]]        # (hello options, models) -> stages
    output_sample_rate_hz: Callable[[dict, ModelCache], int]
    warmup: Callable[[ModelCache], None] | None = None      # load shared weights at server start
    # start slow loads that need no waiting before any pipeline warms up (the speech LM's own process)
    prestart: Callable[[ModelCache], None] | None = None
    # VAD options this pipeline answers best with, under the server's defaults and the hello's own
    vad_defaults: dict = field(default_factory=dict)


_REGISTRY: dict[str, PipelineDef] = {}
_loaded_modules = False


def register(defn: PipelineDef) -> None:
    _REGISTRY[defn.name] = defn


def _load_modules() -> None:
    global _loaded_modules
    if _loaded_modules:
        return
    for name in PIPELINE_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if not (exc.name and name.startswith(exc.name)):
                log.warning("pipeline module %s unavailable: %s", name, exc)
    _loaded_modules = True


def available() -> dict[str, PipelineDef]:
    _load_modules()
    return dict(_REGISTRY)


def get(name: str) -> PipelineDef:
    defs = available()
    if name not in defs:
        raise KeyError(f"unknown pipeline {name!r}; available: {', '.join(sorted(defs))}")
    return defs[name]
