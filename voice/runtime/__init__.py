"""Pipeline runtime: stages joined by bounded queues, out-of-band interrupt, and a tracer."""

from voice.runtime.pipeline import Pipeline
from voice.runtime.stage import Stage, StageContext
from voice.runtime.tracer import Tracer

__all__ = ["Pipeline", "Stage", "StageContext", "Tracer"]
