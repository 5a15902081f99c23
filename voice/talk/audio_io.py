"""Audio in and out for `voice talk`: a WAV file paced like a microphone, the microphone, the speakers."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np

from voice.audio import MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ, StreamingResampler, read_wav, resample

log = logging.getLogger(__name__)
SEND_RATE_HZ = 16000   # what a file is converted to before it is streamed


class DeviceError(RuntimeError):
    """An audio device (or PortAudio itself) could not be used."""


def import_sounddevice():
    try:
        import sounddevice as sd
    except OSError as exc:   # PortAudio missing
        raise DeviceError(f"PortAudio is not available ({exc}); install it (Debian: apt install libportaudio2)") from None
    return sd


def parse_device(value: str | None) -> int | str | None:
    """`--input-device 3` or `--input-device "USB Audio"`."""
    if value is None or value == "":
        return None
    return int(value) if value.isdigit() else value


def list_devices() -> str:
    sd = import_sounddevice()
    return str(sd.query_devices())


class FileSource:
    """Streams a WAV file (any rate, any channels; mixed to mono, converted to 16 kHz) in real time."""

    def __init__(self, path: str | Path, chunk_ms: float = 20.0) -> None:
        pcm, rate = read_wav(path)
        if len(pcm) == 0:
            raise ValueError(f"{path} holds no audio")
        self.pcm = resample(pcm, rate, SEND_RATE_HZ) if rate != SEND_RATE_HZ else pcm   # [N]
        self.source_rate_hz = rate
        self.sample_rate_hz = SEND_RATE_HZ
        self.chunk = max(1, int(SEND_RATE_HZ * chunk_ms / 1000))
        self.origin_s: float | None = None   # monotonic time of sample 0

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / self.sample_rate_hz

    async def chunks(self) -> AsyncIterator[np.ndarray]:
        self.origin_s = time.monotonic()
        for i in range(0, len(self.pcm), self.chunk):
            chunk = self.pcm[i:i + self.chunk]
            delay = self.origin_s + (i + len(chunk)) / self.sample_rate_hz - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            yield chunk

    def close(self) -> None:
        pass


class MicSource:
    """The microphone through sounddevice, yielded in real time.

    Chunks go from PortAudio's thread into a bounded deque; the reader paces itself to the
    wall clock, so a virtual device that runs faster than real time (ALSA's null device)
    cannot flood the server: its surplus is dropped, oldest first.
    """

    def __init__(self, device: int | str | None = None, chunk_ms: float = 20.0, max_queue_s: float = 1.0) -> None:
        sd = import_sounddevice()
        self.sample_rate_hz = self._pick_rate(sd, device)
        self.chunk = max(1, int(self.sample_rate_hz * chunk_ms / 1000))
        self._queue: deque[np.ndarray] = deque(maxlen=max(2, int(max_queue_s * 1000 / chunk_ms)))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._wake_pending = False
        self.origin_s: float | None = None
        self.overflows = 0
        try:
            self._stream = sd.InputStream(samplerate=self.sample_rate_hz, channels=1, dtype="float32",
                                          blocksize=self.chunk, device=device, callback=self._callback)
        except Exception as exc:
            raise DeviceError(f"cannot open the input device {device if device is not None else '(default)'}: {exc}") from None

    @staticmethod
    def _pick_rate(sd, device) -> int:
        try:
            sd.check_input_settings(device=device, channels=1, samplerate=SEND_RATE_HZ, dtype="float32")
            return SEND_RATE_HZ
        except Exception:
            try:
                info = sd.query_devices(device, "input")
            except Exception as exc:
                raise DeviceError(f"cannot use the input device {device if device is not None else '(default)'}: {exc}") from None
            rate = int(info["default_samplerate"])
            return min(MAX_SAMPLE_RATE_HZ, max(MIN_SAMPLE_RATE_HZ, rate))

    def _callback(self, indata, frames: int, time_info: Any, status: Any) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.overflows += 1
        self._queue.append(indata[:, 0].copy())
        if not self._wake_pending and self._loop is not None and self._wake is not None:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._set_wake)

    def _set_wake(self) -> None:
        self._wake_pending = False
        assert self._wake is not None
        self._wake.set()

    async def chunks(self) -> AsyncIterator[np.ndarray]:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        self._stream.start()
        sent = 0
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            chunk = self._queue.popleft()
            if self.origin_s is None:
                self.origin_s = time.monotonic() - len(chunk) / self.sample_rate_hz
            delay = self.origin_s + (sent + len(chunk)) / self.sample_rate_hz - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            self._stream.stop()
            self._stream.close()
        except Exception as exc:
            log.debug("closing the input stream: %s", exc)


class PlaybackBuffer:
    """Thread-safe FIFO of samples between the network and the audio callback; `clear()` empties it."""

    def __init__(self, max_s: float, sample_rate_hz: int) -> None:
        self.max_samples = int(max_s * sample_rate_hz)
        self._chunks: deque[np.ndarray] = deque()
        self._count = 0
        self._lock = threading.Lock()
        self.played_samples = 0
        self.dropped_samples = 0
        self.underruns = 0

    def push(self, pcm: np.ndarray) -> None:
        with self._lock:
            self._chunks.append(np.asarray(pcm, np.float32))
            self._count += len(pcm)
            while self._count > self.max_samples and self._chunks:   # overflow: drop the oldest
                old = self._chunks.popleft()
                self._count -= len(old)
                self.dropped_samples += len(old)

    def pull(self, n: int) -> np.ndarray:
        out = np.zeros(n, np.float32)
        with self._lock:
            filled = 0
            while filled < n and self._chunks:
                head = self._chunks[0]
                take = min(n - filled, len(head))
                out[filled:filled + take] = head[:take]
                filled += take
                if take == len(head):
                    self._chunks.popleft()
                else:
                    self._chunks[0] = head[take:]
            self._count -= filled
            self.played_samples += filled
            if 0 < filled < n:
                self.underruns += 1
        return out

    def clear(self) -> int:
        with self._lock:
            dropped, self._count = self._count, 0
            self._chunks.clear()
            self.dropped_samples += dropped
        return dropped

    @property
    def buffered_samples(self) -> int:
        return self._count


class Speaker:
    """Plays answer audio (at the server's rate) through sounddevice, resampling if the device needs it."""

    def __init__(self, sample_rate_hz: int, device: int | str | None = None, max_buffer_s: float = 60.0) -> None:
        sd = import_sounddevice()
        self.rate_in = sample_rate_hz
        try:
            sd.check_output_settings(device=device, channels=1, samplerate=sample_rate_hz, dtype="float32")
            self.device_rate_hz = sample_rate_hz
        except Exception:
            try:
                self.device_rate_hz = int(sd.query_devices(device, "output")["default_samplerate"])
            except Exception as exc:
                raise DeviceError(f"cannot use the output device {device if device is not None else '(default)'}: {exc}") from None
        self._resampler = StreamingResampler(sample_rate_hz, self.device_rate_hz) if self.device_rate_hz != sample_rate_hz else None
        self.buffer = PlaybackBuffer(max_buffer_s, self.device_rate_hz)
        try:
            self._stream = sd.OutputStream(samplerate=self.device_rate_hz, channels=1, dtype="float32",
                                           device=device, callback=self._callback)
            self._stream.start()
        except Exception as exc:
            raise DeviceError(f"cannot open the output device {device if device is not None else '(default)'}: {exc}") from None
        self.latency_s = float(self._stream.latency)

    def _callback(self, outdata, frames: int, time_info: Any, status: Any) -> None:
        outdata[:, 0] = self.buffer.pull(frames)

    def play(self, pcm: np.ndarray) -> None:
        self.buffer.push(self._resampler.process(pcm) if self._resampler else pcm)

    def clear(self) -> int:
        return self.buffer.clear()

    @property
    def playing(self) -> bool:
        return self.buffer.buffered_samples > 0

    def close(self) -> None:
        try:
            self._stream.stop()
            self._stream.close()
        except Exception as exc:
            log.debug("closing the output stream: %s", exc)
