"""The echo pipeline: after the user's turn ends, play the turn back. The transport + VAD latency floor."""

from __future__ import annotations

from typing import AsyncIterator

import numpy as np

from voice.frames import AssistantAudio, Frame, SpeechStarted, SpeechStopped, TurnEnd, UserAudio
from voice.pipelines import ModelCache, PipelineDef, register
from voice.runtime.stage import Stage

SAMPLE_RATE_HZ = 16000


class EchoStage(Stage):
    """Buffers the turn's audio (pre-roll included) and replays it up to `tail_ms` after speech ended."""

    name = "echo"

    def __init__(self, chunk_ms: float = 40.0, tail_ms: float = 150.0) -> None:
        super().__init__()
        self.chunk_samples = int(SAMPLE_RATE_HZ * chunk_ms / 1000)
        self.tail_ms = tail_ms
        self.reset()

    def reset(self) -> None:
        self._turn = -1
        self._chunks: list[np.ndarray] = []
        self._start_s = 0.0

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if isinstance(frame, SpeechStarted):
            self._turn, self._chunks = frame.turn_id, []
        elif isinstance(frame, UserAudio) and frame.turn_id == self._turn:
            if not self._chunks:
                self._start_s = frame.stream_s
            self._chunks.append(frame.pcm)
        elif isinstance(frame, SpeechStopped) and frame.turn_id == self._turn:
            audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
            end = int((frame.stream_s - self._start_s + self.tail_ms / 1000) * SAMPLE_RATE_HZ)
            audio = audio[: max(0, end)]
            self.reset()
            for i in range(0, len(audio), self.chunk_samples):
                yield AssistantAudio(turn_id=frame.turn_id, pcm=audio[i:i + self.chunk_samples],
                                     sample_rate_hz=SAMPLE_RATE_HZ)
            yield TurnEnd(turn_id=frame.turn_id)


register(PipelineDef(
    name="echo",
    description="plays each user turn back after it ends (transport + VAD latency floor)",
    build=lambda options, models: [EchoStage()],
    output_sample_rate_hz=lambda options, models: SAMPLE_RATE_HZ,
))
