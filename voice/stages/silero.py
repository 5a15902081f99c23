"""Silero VAD v5+ through ONNX Runtime: one shared model, per-session recurrent state."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

WINDOW_SAMPLES = 512      # silero v5+ takes exactly 512 samples at 16 kHz per call
CONTEXT_SAMPLES = 64      # samples of the previous window it is fed again
SAMPLE_RATE_HZ = 16000


@dataclass
class SileroState:
    """Per-session recurrent state of the model."""

    state: np.ndarray = field(default_factory=lambda: np.zeros((2, 1, 128), np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros((1, CONTEXT_SAMPLES), np.float32))


class SileroVadModel:
    """The silero-vad ONNX model shipped inside the `silero-vad` wheel (thread-safe to share)."""

    def __init__(self, path: str | None = None) -> None:
        import onnxruntime

        if path is None:
            import silero_vad

            path = os.path.join(os.path.dirname(silero_vad.__file__), "data", "silero_vad.onnx")
        if not os.path.exists(path):
            raise FileNotFoundError(f"silero VAD model not found at {path}; reinstall the silero-vad package")
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        self.path = path
        self._session = onnxruntime.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        self._sr = np.array(SAMPLE_RATE_HZ, dtype=np.int64)

    def probability(self, st: SileroState, window: np.ndarray) -> float:
        """Speech probability of one 512-sample window at 16 kHz; updates `st`."""
        if window.shape != (WINDOW_SAMPLES,):
            raise ValueError(f"silero VAD takes exactly {WINDOW_SAMPLES} samples, got {window.shape}")
        x = np.concatenate([st.context, window[None, :].astype(np.float32)], axis=1)  # [1, 576]
        out, st.state = self._session.run(None, {"input": x, "state": st.state, "sr": self._sr})
        st.context = x[:, -CONTEXT_SAMPLES:]
        return float(out[0, 0])


_lock = threading.Lock()


@lru_cache(maxsize=1)
def _shared_model() -> SileroVadModel:
    return SileroVadModel()


def shared_model() -> SileroVadModel:
    """The process-wide model (loaded once; sessions share the weights, not the state)."""
    with _lock:
        return _shared_model()
