"""The `e2e` pipeline: user audio -> streaming codec tokens -> the speech LM -> codec decoder -> audio.

The model is chosen by the server, never by a client: the folder `models/speechlm` of the
checkout, or the folder named by the environment variable VOICE_SPEECHLM. VOICE_SPEECHLM_SESSIONS
(default 8) is how many conversations the shared generator holds at once. A server that asks for it
(`voice serve`, `voice bench`) runs the speech LM in a process of its own (voice/e2e/speechlm_process.py).
Hello options:
`step_frames` (codec frames per encode step and per decoded chunk, default 2 = 40 ms) and
`max_answer_s` (an answer's audio is cut there; 0.1 to 15 s, default 15), `hear_frames` (the user's
frames go to the speech LM in pieces of this many, 1 to 50; default: the ear's chunk for a model that
hears through the Whisper ear, 0.2 s for the shipped one, else 25 = 0.5 s) and `now` (a fixed
clock for the context sentence, ISO 8601, as the cascade's; the bench's corpus set sends each
dialogue's) and `think` (1: the conversation thinks its answers in text first, the default where the
model reads heard text; 0: the model writes its words as it speaks) and `context_s` (a context longer than
this when a user turn starts drops its oldest turns to half of it; 2 to 40 s, default 16). See docs/e2e.md.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from voice.cascade.config import hello_clock
from voice.e2e.codec_stages import CodecDecodeStage, CodecEncodeStage, check_step_frames
from voice.e2e.pipeline import _codec
from voice.e2e.speechlm_process import RemoteSpeechLMStage, SpeechLMProcess
from voice.e2e.speechlm_stage import CONTEXT_S, SpeechLMService, SpeechLMStage
from voice.pipelines import ModelCache, PipelineDef, register
from voice.runtime.stage import Stage

log = logging.getLogger(__name__)

SPEECHLM_ENV = "VOICE_SPEECHLM"
SESSIONS_ENV = "VOICE_SPEECHLM_SESSIONS"
DEFAULT_SESSIONS = 8
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FOLDER = "models/speechlm"          # relative to the checkout
MAX_ANSWER_S = 15.0


def speechlm_folder() -> tuple[Path, str]:
    """The model folder and how to name it in messages."""
    named = os.environ.get(SPEECHLM_ENV, "").strip()
    if named:
        return Path(named), named
    return ROOT / DEFAULT_FOLDER, DEFAULT_FOLDER


def _sessions() -> int:
    value = os.environ.get(SESSIONS_ENV, "").strip() or str(DEFAULT_SESSIONS)
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise ValueError(f"{SESSIONS_ENV} must be an integer in 1..64, not {value!r}")
    return int(value)


def decoder_for(codec, k: int):
    """The codec that decodes a model's K codebooks: the server's own when it has K, else the compact
    codec's first K."""
    if k == codec.num_codebooks:
        return codec
    from voice.codec.loader import load_codec

    return load_codec("compact", k)


def load_service(folder: Path, shown: str, sessions: int, codec) -> SpeechLMService:
    """The speech LM at `folder` and its codec's decoder, on a worker thread of this process."""
    from voice.codec.tokenize import cache_id
    from voice.speechlm.cli import load_speech_lm

    model, text = load_speech_lm(folder, shown)
    if model.config.codec_id != cache_id(codec):
        raise ValueError(f"the speech LM at {shown} reads codes of {model.config.codec_id!r}, but this server's "
                         f"codec is {cache_id(codec)!r}")
    return SpeechLMService(model, text, decoder_for(codec, model.config.num_codebooks), max_sessions=sessions)


def _service(models: ModelCache) -> SpeechLMService | SpeechLMProcess:
    """The shared speech LM: in a process of its own when the server asks (`ModelCache.options`
    `speechlm_process`, what `voice serve` does; maybe still loading: `wait_ready()`), else on a worker
    thread of this one."""
    folder, shown = speechlm_folder()
    sessions = _sessions()
    codec = _codec({}, models)              # what the encode stage uses: the shipped compact codec
    if models.options.get("speechlm_process"):
        threads = int(models.options.get("torch_threads") or 0)
        return models.get(f"speechlm-process:{folder.resolve()}:{sessions}",
                          lambda: SpeechLMProcess(folder, shown, sessions, codec, torch_threads=threads),
                          stale=lambda service: service.ended)
    return models.get(f"speechlm:{folder.resolve()}:{sessions}", lambda: load_service(folder, shown, sessions, codec))


def _max_answer_s(options: dict) -> float:
    value = options.get("max_answer_s", MAX_ANSWER_S)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.1 <= value <= MAX_ANSWER_S:
        raise ValueError(f"max_answer_s must be a number of seconds in 0.1..{MAX_ANSWER_S:g}, got {value!r}")
    return float(value)


def _hear_frames(options: dict) -> int | None:
    if "hear_frames" not in options:
        return None                         # the stage's default for its model
    value = options["hear_frames"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or not 1 <= value <= 50:
        raise ValueError(f"hear_frames must be a whole number of frames in 1..50, got {value!r}")
    return int(value)


def _context_s(options: dict) -> float:
    value = options.get("context_s", CONTEXT_S)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 2 <= value <= 40:
        raise ValueError(f"context_s must be a number of seconds in 2..40, got {value!r}")
    return float(value)


def _think(options: dict) -> bool | None:
    if "think" not in options:
        return None                         # the generator's default for its model
    value = options["think"]
    if isinstance(value, str) or value not in (0, 1):      # 0, 1, 0.0, 1.0, false, true
        raise ValueError(f"think must be 0 or 1 (or true / false), got {value!r}")
    return bool(value)


def build(options: dict, models: ModelCache) -> list[Stage]:
    if "model" in options:
        raise ValueError(f"the e2e pipeline's model is chosen by the server ({SPEECHLM_ENV}), not by the hello")
    step_frames = check_step_frames(options.get("step_frames", 2))
    max_answer_s = _max_answer_s(options)
    clock = hello_clock(options.get("now", ""))
    codec = _codec({}, models)
    service = _service(models)
    if isinstance(service, SpeechLMProcess):
        service.wait_ready()
    settings = dict(step_frames=step_frames, max_answer_s=max_answer_s, hear_frames=_hear_frames(options),
                    think=_think(options), context_s=_context_s(options))
    if isinstance(service, SpeechLMProcess):
        lm: Stage = RemoteSpeechLMStage(service, now=str(options.get("now") or ""), **settings)
    else:
        lm = SpeechLMStage(service, clock=clock, **settings)
    return [CodecEncodeStage(codec, step_frames), lm, CodecDecodeStage(service.codec)]


def prestart(models: ModelCache) -> None:
    """Start the speech LM's own process (when the server runs it in one) without waiting: it loads while the
    server warms its other pipelines."""
    if models.options.get("speechlm_process"):
        try:
            _service(models)
        except ValueError:
            pass                            # the warm-up says why


def warmup(models: ModelCache) -> None:
    """Load the codec and the speech LM at start-up; a missing or unusable model only logs (other pipelines go on)."""
    _codec({}, models)
    try:
        service = _service(models)
        if isinstance(service, SpeechLMProcess):
            service.wait_ready()
    except ValueError as exc:
        log.warning("pipeline e2e is not usable yet: %s", exc)


register(PipelineDef(
    name="e2e",
    description="the speech LM between the streaming codec stages (hears codec tokens, answers in them)",
    build=build,
    output_sample_rate_hz=lambda options, models: _codec({}, models).sample_rate_hz,
    warmup=warmup,
    prestart=prestart,
))
