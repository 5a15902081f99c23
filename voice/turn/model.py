"""The turn-taking models: a small network that hears the last seconds of the user's audio and answers yes or no.

Two questions are asked of the same network, each trained on its own (models/turn):

- end of turn (`turn.pt`): at a pause, is the user's turn over? A silence alone cannot tell "set
  a timer for ..." from "set a timer for five minutes": both stop. The model hears the words and
  the tune before the pause (a cut after a function word, a filler, the rising "more is coming"
  of a comma);
- barge-in (`barge_in.pt`): while the assistant speaks, is this sound the user taking the turn,
  or a cough, a knock, an "uh-huh", the assistant's own voice coming back?

Shape, with the `mel` front end: 16 kHz audio -> 40 log-mel bands every 10 ms (computed inside the
model, so what trains is what runs) -> per-band normalisation -> two strided convolutions (40 ms per
step) -> a GRU -> its last state and its maximum over time -> one logit. About half a million
parameters; one decision on 3 s of context costs a few ms on one core (`voice eval turn` measures it).

With the `whisper` front end (Pipecat's Smart Turn hears through Whisper's encoder too) the audio
goes through the frozen encoder of the Whisper tiny.en that ships for the cascade (CTranslate2, int8,
`voice.speechlm.whisper_ear.WhisperEar`: one 384-wide row per 20 ms), then LayerNorm, a projection,
one strided convolution (40 ms per step) and the same GRU and head; only those are trained. The
encoder has heard thousands of real voices, the mel front end only the corpus's 13 synthetic ones.
`Detector` is what the VAD head holds: a loaded model, its threshold, and a lock.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SAMPLE_RATE_HZ = 16000
HOP = 160          # 10 ms
WINDOW = 400       # 25 ms
N_FFT = 512
ROOT = Path(__file__).resolve().parents[2]
SHIPPED_DIR = ROOT / "models" / "turn"
WEIGHTS = "turn.pt"           # the end-of-turn model
BARGE_IN_WEIGHTS = "barge_in.pt"


FRONTENDS = ("mel", "whisper")


@dataclass(frozen=True)
class TurnConfig:
    n_mels: int = 40
    channels: int = 128
    hidden: int = 192
    gru_layers: int = 2
    dropout: float = 0.1
    context_s: float = 4.0      # audio heard before the decision point
    frontend: str = "mel"       # "mel": log-mel learned from scratch; "whisper": Whisper tiny.en's frozen encoder

    def __post_init__(self) -> None:
        if self.frontend not in FRONTENDS:
            raise ValueError(f"unknown turn-model front end {self.frontend!r} (one of {', '.join(FRONTENDS)})")

    @property
    def context_samples(self) -> int:
        return int(round(self.context_s * SAMPLE_RATE_HZ))


def _mel_filterbank(n_mels: int) -> torch.Tensor:
    import torchaudio

    return torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, 60.0, 7600.0, n_mels, SAMPLE_RATE_HZ,
                                                 norm="slaney", mel_scale="slaney")


_whisper: dict[int, object] = {}
_whisper_lock = threading.Lock()
whisper_threads = 1     # CTranslate2 threads of the shared encoder (training sets 2; serving keeps 1)


def whisper_encoder():
    """The process-wide Whisper tiny.en encoder of the `whisper` front end (loaded once per thread count)."""
    from voice.speechlm.whisper_ear import WhisperEar

    with _whisper_lock:
        if whisper_threads not in _whisper:
            _whisper[whisper_threads] = WhisperEar(threads=whisper_threads)
        return _whisper[whisper_threads]


class DecisionModel(nn.Module):
    def __init__(self, config: TurnConfig) -> None:
        super().__init__()
        self.config = config
        if config.frontend == "whisper":
            from voice.speechlm.whisper_ear import FEATURE_DIM

            self.norm = nn.LayerNorm(FEATURE_DIM)
            self.conv1 = nn.Linear(FEATURE_DIM, config.channels)
            self.conv2 = nn.Conv1d(config.channels, config.channels, 3, stride=2, padding=1)
        else:
            self.register_buffer("fbank", _mel_filterbank(config.n_mels), persistent=False)
            self.register_buffer("window", torch.hann_window(WINDOW), persistent=False)
            self.norm = nn.BatchNorm1d(config.n_mels)
            self.conv1 = nn.Conv1d(config.n_mels, config.channels, 5, stride=2, padding=2)
            self.conv2 = nn.Conv1d(config.channels, config.channels, 5, stride=2, padding=2)
        self.gru = nn.GRU(config.channels, config.hidden, num_layers=config.gru_layers, batch_first=True,
                          dropout=config.dropout if config.gru_layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(2 * config.hidden, 1)

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, samples] at 16 kHz -> [B, frames, n_mels] log-mel (about -1..1 for speech)."""
        spec = torch.stft(audio, N_FFT, HOP, WINDOW, self.window, center=False, return_complex=True)
        mel = (spec.abs() ** 2).transpose(1, 2) @ self.fbank
        return (torch.log10(mel + 1e-8) + 4.0) / 4.0

    def whisper_features(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, samples] at 16 kHz -> [B, frames, 384]: the frozen encoder's rows (no gradient)."""
        feats = whisper_encoder().encode_batch(audio.detach().cpu().numpy())
        return torch.from_numpy(feats).to(audio.device)

    @property
    def frozen_frontend(self) -> bool:
        """Whether the front end has no trained weights (its rows may be computed once and kept)."""
        return self.config.frontend == "whisper"

    def frontend(self, audio: torch.Tensor) -> torch.Tensor:
        """What the front end hears in `audio` [B, samples]: log-mel rows, or the Whisper encoder's
        (frozen: training can compute them once and keep them, `voice.turn.train.FeaturePool`)."""
        return self.whisper_features(audio) if self.config.frontend == "whisper" else self.features(audio)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Logit that the turn is over, for each row of `audio` [B, samples] (the decision at its end)."""
        return self.classify(self.frontend(audio))

    def classify(self, rows: torch.Tensor) -> torch.Tensor:
        """The trained part: front-end rows [B, frames, dim] -> one logit each."""
        if self.config.frontend == "whisper":
            x = F.gelu(self.conv1(self.norm(rows))).transpose(1, 2)
        else:
            x = F.gelu(self.conv1(self.norm(rows.transpose(1, 2))))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        out, _ = self.gru(x)
        pooled = torch.cat([out[:, -1], out.max(dim=1).values], dim=-1)   # the end, and what was heard before
        return self.head(self.drop(pooled)).squeeze(-1)

    def save(self, directory: Path, extra: dict | None = None, name: str = WEIGHTS) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f"{name}.tmp"
        torch.save({"config": asdict(self.config), "state": self.state_dict(), **(extra or {})}, tmp)
        tmp.replace(directory / name)

    @classmethod
    def load(cls, path: Path, name: str = WEIGHTS) -> tuple["DecisionModel", dict]:
        """Model from a folder (its file `name`) or a file, and the rest of what was saved with it."""
        path = Path(path)
        if path.is_dir():
            path = path / name
        if not path.exists():
            raise FileNotFoundError(f"turn-taking model not found at {path}")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            model = cls(TurnConfig(**blob["config"]))
            model.load_state_dict(blob["state"])
        except Exception as exc:  # a truncated or foreign file
            raise ValueError(f"{path} is not a turn-taking model ({type(exc).__name__}: {exc})") from exc
        model.eval()
        return model, {k: v for k, v in blob.items() if k not in ("config", "state")}


def fit_context(audio: np.ndarray, samples: int) -> np.ndarray:
    """The last `samples` of `audio`, zero-padded at the front when shorter."""
    audio = np.asarray(audio, np.float32)
    if len(audio) >= samples:
        return audio[len(audio) - samples:]
    return np.concatenate([np.zeros(samples - len(audio), np.float32), audio])


class Detector:
    """The loaded model behind a lock (sessions share it), answering one decision at a time.

    With a text model (`voice.turn.transcript.TextTurnModel`, end of turn only) it also transcribes the
    last words before a pause (`start_transcript`, in a worker thread) and fuses them with what the
    audio model hears (`probability(audio, text)`).
    """

    def __init__(self, model: DecisionModel, threshold: float = 0.5, text_model=None,
                 audio_threshold: float | None = None) -> None:
        self.model = model
        self.threshold = threshold              # of what `probability` says: fused with the words when it can
        # of the audio model alone (apart from `threshold` when there is a text model)
        self.audio_threshold = threshold if audio_threshold is None else audio_threshold
        self.text_model = text_model
        self._lock = threading.Lock()

    @property
    def context_samples(self) -> int:
        return self.model.config.context_samples

    def probability(self, audio_16k: np.ndarray, text: str | None = None) -> float:
        """P(the turn is over) given the audio up to now (the last context_s seconds are heard) and, with a
        text model, the transcript of the words before the pause (None: the audio alone decides)."""
        x = torch.from_numpy(fit_context(audio_16k, self.context_samples))[None]
        with self._lock, torch.inference_mode():
            p = float(torch.sigmoid(self.model(x))[0])
        return self.text_model.fuse(p, text) if self.text_model is not None and text is not None else p

    def start_transcript(self, speech_16k: np.ndarray):
        """A future of the transcript of the words at the end of `speech_16k` (None without a text model)."""
        if self.text_model is None:
            return None
        from voice.turn.transcript import transcribe_tail

        return _transcript_pool().submit(transcribe_tail, whisper_encoder(), np.array(speech_16k, np.float32))


_pool = None


def _transcript_pool():
    """One worker thread for the transcripts of every session: they run while the VAD waits for the
    first decision, never on the event loop."""
    global _pool
    from concurrent.futures import ThreadPoolExecutor

    with _whisper_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="turn-transcript")
        return _pool


_shared: dict[str, Detector] = {}
_shared_lock = threading.Lock()


def shared_detector(directory: Path = SHIPPED_DIR, name: str = WEIGHTS) -> Detector:
    """The process-wide detector `name` loaded from `directory` (models/turn by default), loaded once.

    Its threshold is the one `thresholds.json` in the folder gives for `name` (chosen on held-out
    voices, see the model card), else 0.5. The end-of-turn detector also loads the text model
    (`text_turn.json`) when the folder has one, and then takes the threshold given for it.
    """
    from voice.turn.transcript import TEXT_WEIGHTS, TextTurnModel

    key = str((Path(directory) / name).resolve())
    with _shared_lock:
        if key not in _shared:
            model, _ = DecisionModel.load(Path(directory), name)
            card = Path(directory) / "thresholds.json"
            thresholds = json.loads(card.read_text()) if card.exists() else {}
            threshold = float(thresholds.get(name, 0.5))
            text_model = None
            if name == WEIGHTS and (Path(directory) / TEXT_WEIGHTS).exists():
                text_model = TextTurnModel.load(Path(directory) / TEXT_WEIGHTS)
            detector = Detector(model, float(thresholds.get(TEXT_WEIGHTS, threshold)) if text_model else threshold,
                                text_model, audio_threshold=threshold)
            detector.probability(np.zeros(detector.context_samples, np.float32))   # load the front end now, not mid-turn
            _shared[key] = detector
        return _shared[key]
