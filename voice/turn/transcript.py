"""The words before a pause: Whisper's transcript of the last seconds, and a small text model of whether they end a turn.

The audio end-of-turn model (`voice.turn.model`) hears the words and the tune through Whisper's
encoder, but its head was trained on 13 synthetic voices: on new voices it still takes "repeat after
me:" for a finished turn two times in three, and waits on one finished question in five (model
card). The words alone often settle it: "what is the capital of" is not a question yet, "what is the
capital of France" is. LiveKit's turn detector decides from the transcript for that reason.

So at a pause the last `TAIL_S` seconds of the user's speech go through Whisper tiny.en (the same
int8 CTranslate2 model as the audio model's encoder and the cascade's ASR; greedy, at most
`MAX_TOKENS` tokens, `WhisperEar.transcribe`), and a logistic model over a few features of the
transcript's end (its last words, its final punctuation, whether the last word is a function word,
a filler or a number) gives P(over | words). The VAD combines it with the audio model's P(over)
in logit space, with weights fitted on voices neither model trained on (`TextTurnModel.fuse`).

The transcript is made once per pause, as soon as the silence starts, in a worker thread, so it is
ready by the first decision at 200 ms; the decisions that follow in the same silence reuse it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voice.turn.pauses import FILLERS, FUNCTION_WORDS

SAMPLE_RATE_HZ = 16000
TAIL_S = 2.0              # seconds of audio before the pause that are transcribed
MAX_TOKENS = 12           # the transcript of 2 s is rarely longer
WINDOW_S = 3.0            # the tail is padded with silence to this window (Whisper loops less)
TRAILING_SILENCE_S = 0.064   # what the VAD has heard of the silence when it starts the transcript
TEXT_WEIGHTS = "text_turn.json"

_WORD = re.compile(r"[a-z0-9']+")
_FILLER_WORDS = frozenset(w for f in FILLERS for w in f.split()) | {"er", "ah", "mm"}


def tail_audio(speech: np.ndarray) -> np.ndarray:
    """What is transcribed at a pause: the last TAIL_S s of `speech` followed by the silence heard so far."""
    tail = np.asarray(speech, np.float32)[-int(TAIL_S * SAMPLE_RATE_HZ):]
    return np.concatenate([tail, np.zeros(int(TRAILING_SILENCE_S * SAMPLE_RATE_HZ), np.float32)])


def clean_transcript(text: str) -> str:
    """Whisper's transcript of a short window without its loop.

    Given a window much shorter than its 30 s, Whisper often starts the sentence again after it has
    said it ("What is the capital of France? What", "Add 17 and 20, Add 17,"). The text is cut where a
    pair of words that was already said comes again, or where the first word comes again as the last.
    """
    text = text.strip()
    spans = [(m.group(0).lower(), m.start()) for m in _WORD.finditer(text.lower())]
    words = [w for w, _ in spans]
    seen: set[tuple[str, str]] = set()
    for k in range(len(words)):
        pair = tuple(words[k: k + 2])
        again = (len(pair) == 2 and pair in seen) or (k >= 2 and k == len(words) - 1 and words[k] == words[0])
        if k >= 2 and again:
            return text[: spans[k][1]].rstrip(" ,;-")
        if k >= 1:
            seen.add((words[k - 1], words[k]))
    return text


def transcribe_tail(ear, speech: np.ndarray) -> str:
    """The words at the end of `speech` (the user's audio up to the pause) as the VAD transcribes them
    ("" for digital silence, where Whisper would say "you")."""
    tail = tail_audio(speech)
    if not len(tail) or float(np.max(np.abs(tail))) < 1e-3:
        return ""
    return clean_transcript(ear.transcribe(tail, MAX_TOKENS, WINDOW_S))


def _ending(text: str) -> str:
    """The transcript's final punctuation, as a class."""
    t = text.rstrip()
    if not t:
        return "none"
    if t.endswith("...") or t.endswith("\u2026"):
        return "ellipsis"
    last = t[-1]
    return {"?": "question", ".": "period", "!": "bang", ",": "comma", ":": "colon", ";": "colon",
            "-": "dash", "\u2014": "dash"}.get(last, "none")


def _word_class(word: str) -> str:
    if word in _FILLER_WORDS:
        return "filler"
    if word in FUNCTION_WORDS:
        return "function"
    if word.isdigit() or word in {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                                  "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
                                  "hundred"}:
        return "number"
    return "content"


def text_features(text: str) -> list[str]:
    """The transcript's end as named features: what decides whether a sentence is finished, not which one it is."""
    words = _WORD.findall(text.lower())
    end = _ending(text)
    if not words:
        return ["empty", f"end:{end}"]
    last = words[-1]
    cls = _word_class(last)
    feats = [f"end:{end}", f"w1:{last}", f"c1:{cls}", f"c1end:{cls}|{end}", f"n:{min(len(words), 6)}"]
    if len(words) >= 2:
        prev = words[-2]
        feats += [f"w2:{prev} {last}", f"c2:{_word_class(prev)}|{cls}"]
    if len(words) >= 3:
        feats.append(f"w3:{' '.join(words[-3:])}")
    return feats


def logit(p: float) -> float:
    p = min(max(float(p), 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@dataclass
class TextTurnModel:
    """P(the turn is over | the words before the pause), and its fusion with the audio model."""

    weights: dict[str, float]
    bias: float = 0.0
    fusion: dict[str, float] = field(default_factory=lambda: {"audio": 1.0, "text": 0.0, "bias": 0.0})
    info: dict = field(default_factory=dict)

    def text_logit(self, text: str) -> float:
        return self.bias + sum(self.weights.get(f, 0.0) for f in text_features(text))

    def probability(self, text: str) -> float:
        return sigmoid(self.text_logit(text))

    def fuse(self, p_audio: float, text: str | None) -> float:
        """P(over) from the audio model's P and the transcript (None: not ready; the audio model alone decides)."""
        if text is None:
            return float(p_audio)
        f = self.fusion
        return sigmoid(f["audio"] * logit(p_audio) + f["text"] * self.text_logit(text) + f["bias"])

    def save(self, path: Path) -> None:
        from voice.fileutil import atomic_write_json

        atomic_write_json(path, {"format": "voice-text-turn", "version": 1, "tail_s": TAIL_S, "max_tokens": MAX_TOKENS,
                                 "bias": self.bias, "fusion": self.fusion, "info": self.info,
                                 "weights": dict(sorted(self.weights.items(), key=lambda kv: -abs(kv[1])))}, indent=1)

    @classmethod
    def load(cls, path: Path) -> "TextTurnModel":
        path = Path(path)
        if path.is_dir():
            path = path / TEXT_WEIGHTS
        if not path.exists():
            raise FileNotFoundError(f"text end-of-turn model not found at {path}")
        try:
            blob = json.loads(path.read_text())
            if blob.get("format") != "voice-text-turn":
                raise ValueError("not a voice-text-turn file")
            return cls({str(k): float(v) for k, v in blob["weights"].items()}, float(blob["bias"]),
                       {k: float(blob["fusion"][k]) for k in ("audio", "text", "bias")}, blob.get("info", {}))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a text end-of-turn model ({exc})") from exc


def fit_logistic(rows: list[list[float]] | np.ndarray, labels, l2: float = 1e-3, steps: int = 500,
                 balanced: bool = True) -> tuple[np.ndarray, float]:
    """Dense logistic regression (full batch, L-BFGS): weights and bias. Classes weighted equally when `balanced`."""
    import torch

    x = torch.as_tensor(np.asarray(rows, np.float32))
    y = torch.as_tensor(np.asarray(labels, np.float32))
    pos = float(y.mean())
    sample_w = torch.where(y > 0.5, 0.5 / max(pos, 1e-6), 0.5 / max(1 - pos, 1e-6)) if balanced else torch.ones_like(y)
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y, reduction="none") * sample_w).mean()
        loss = loss + l2 * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach()[0])


def train_text_model(texts: list[str], labels: list[int], l2: float = 1e-3, min_count: int = 2) -> TextTurnModel:
    """The text model on (transcript, over?) pairs; features seen fewer than `min_count` times are dropped."""
    counts: dict[str, int] = {}
    per_text = [text_features(t) for t in texts]
    for feats in per_text:
        for f in set(feats):
            counts[f] = counts.get(f, 0) + 1
    vocab = sorted(f for f, c in counts.items() if c >= min_count)
    index = {f: i for i, f in enumerate(vocab)}
    x = np.zeros((len(texts), len(vocab)), np.float32)
    for i, feats in enumerate(per_text):
        for f in feats:
            if f in index:
                x[i, index[f]] = 1.0
    w, b = fit_logistic(x, labels, l2=l2)
    return TextTurnModel({f: round(float(w[i]), 5) for f, i in index.items() if abs(w[i]) > 1e-4}, round(b, 5))


def fit_fusion(model: TextTurnModel, p_audio: list[float], texts: list[str], labels: list[int]) -> dict[str, float]:
    """Weights of the audio logit and the text logit (and a bias) that predict `labels` best, on held-out voices."""
    rows = [[logit(p), model.text_logit(t)] for p, t in zip(p_audio, texts)]
    w, b = fit_logistic(rows, labels, l2=1e-4)
    return {"audio": round(float(w[0]), 4), "text": round(float(w[1]), 4), "bias": round(b, 4)}
