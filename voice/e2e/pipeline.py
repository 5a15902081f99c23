"""The `codec-echo` pipeline: each user turn is encoded to codec tokens while it is spoken and, once it
ends, decoded back and played. It is the end-to-end path with the speech LM replaced by a copy:
you hear what the LM would hear, and `voice bench` measures what the codec adds to the echo floor.

Hello options: `codec` ("compact", the default, or "encodec_24khz[:kbps]"; file paths are not
taken from clients) and `step_frames` (codec frames per encode step, default 2 = 40 ms).
"""

from __future__ import annotations

from typing import AsyncIterator

import numpy as np

from voice.e2e.codec_stages import CodecDecodeStage, CodecEncodeStage, check_step_frames
from voice.frames import Codes, Frame, SpeechStopped, TurnEnd, UserAudio
from voice.pipelines import ModelCache, PipelineDef, register
from voice.runtime.stage import Stage

DEFAULT_CODEC = "compact"
CLIENT_CODECS = ("compact", "encodec_24khz")  # codec sources a hello may name (with ":kbps" for EnCodec)


class CodecEchoStage(Stage):
    """Collects the user turn's codes; at `SpeechStopped` replays them as assistant codes, then `TurnEnd`.

    Like the echo pipeline, the replay stops `tail_ms` after the detected end of speech (the
    end-of-turn silence is not played back).
    """

    name = "codec-echo"

    def __init__(self, frame_rate_hz: float, step_frames: int = 2, tail_ms: float = 150.0) -> None:
        super().__init__()
        self.frame_rate_hz, self.step_frames, self.tail_ms = frame_rate_hz, step_frames, tail_ms
        self.reset()

    def reset(self) -> None:
        self._turn, self._codes, self._start_s = -1, [], None

    async def process(self, frame: Frame) -> AsyncIterator[Frame]:
        if isinstance(frame, UserAudio):
            if frame.turn_id != self._turn:
                self.reset()
                self._turn = frame.turn_id
            if self._start_s is None:
                self._start_s = frame.stream_s
        elif isinstance(frame, Codes) and frame.role == "user" and frame.turn_id == self._turn:
            self._codes.append(frame.codes)
            return
        elif isinstance(frame, SpeechStopped) and frame.turn_id == self._turn:
            codes = np.concatenate(self._codes, axis=1) if self._codes else np.zeros((0, 0), np.int64)
            start = self._start_s if self._start_s is not None else frame.stream_s
            keep = int(np.ceil((frame.stream_s - start + self.tail_ms / 1000) * self.frame_rate_hz))
            codes = codes[:, : max(0, keep)]
            turn = frame.turn_id
            self.reset()
            yield frame
            for i in range(0, codes.shape[1], self.step_frames):
                yield Codes(turn_id=turn, codes=codes[:, i: i + self.step_frames], frame_rate_hz=self.frame_rate_hz,
                            role="assistant")
            yield TurnEnd(turn_id=turn)
            return
        yield frame


def _codec(options: dict, models: ModelCache):
    source = options.get("codec", DEFAULT_CODEC)
    if not isinstance(source, str) or source.split(":", 1)[0] not in CLIENT_CODECS:
        raise ValueError(f"option codec must be one of {', '.join(CLIENT_CODECS)} (EnCodec with :kbps), "
                         f"not {source!r}")

    def load():
        from voice.codec.loader import load_codec

        try:
            return load_codec(source)
        except (OSError, RuntimeError) as exc:  # e.g. EnCodec weights not downloadable here
            raise ValueError(f"codec {source!r} could not be loaded: {exc}") from None
    return models.get(f"codec:{source}", load)


def build(options: dict, models: ModelCache) -> list[Stage]:
    step_frames = check_step_frames(options.get("step_frames", 2))
    codec = _codec(options, models)
    return [CodecEncodeStage(codec, step_frames), CodecEchoStage(codec.frame_rate_hz, step_frames),
            CodecDecodeStage(codec)]


register(PipelineDef(
    name="codec-echo",
    description="plays each user turn back through the streaming codec (the e2e path's audio ends)",
    build=build,
    output_sample_rate_hz=lambda options, models: _codec(options, models).sample_rate_hz,
    warmup=lambda models: _codec({}, models),
))
