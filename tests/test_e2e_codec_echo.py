"""The codec-echo pipeline: the streaming codec stages chunk by chunk, and through a real server."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import SPEECH_DIR, hello_error, play_turn, run, serve, speech_transcripts
from voice.audio import read_wav
from voice.frames import AssistantAudio, Codes, SpeechStarted, SpeechStopped, TurnEnd, UserAudio


@pytest.fixture(scope="module")
def codec():
    from voice.codec.loader import load_codec

    return load_codec("compact")


async def _through(stages, frames):
    """Push frames through stages in order, as the pipeline would; every frame that comes out."""
    out = list(frames)
    for stage in stages:
        nxt = []
        for frame in out:
            async for produced in stage.process(frame):
                nxt.append(produced)
        out = nxt
    return out


def _turn_frames(audio: np.ndarray, rate: int, chunk_ms: float = 20.0, turn: int = 1):
    step = int(rate * chunk_ms / 1000)
    yield SpeechStarted(turn_id=turn, stream_s=0.0)
    for i in range(0, len(audio), step):
        yield UserAudio(turn_id=turn, pcm=audio[i: i + step], sample_rate_hz=rate, stream_s=i / rate)
    yield SpeechStopped(turn_id=turn, stream_s=len(audio) / rate, speech_start_s=0.0)


@pytest.mark.parametrize("step_frames,chunk_ms", [(1, 20.0), (2, 20.0), (2, 7.0), (5, 32.0)])
def test_codec_echo_stages_equal_the_whole_signal_codec(codec, step_frames, chunk_ms):
    from voice.e2e.pipeline import CodecEchoStage
    from voice.e2e.codec_stages import CodecDecodeStage, CodecEncodeStage

    audio, rate = read_wav(SPEECH_DIR / "sb_example1_birch_canoe.wav")
    stages = [CodecEncodeStage(codec, step_frames), CodecEchoStage(codec.frame_rate_hz, step_frames),
              CodecDecodeStage(codec)]
    out = run(_through(stages, _turn_frames(audio, rate, chunk_ms)))
    kinds = [type(f).__name__ for f in out]
    assert kinds[0] == "SpeechStarted" and kinds[-1] == "TurnEnd" and "SpeechStopped" in kinds
    assert not any(isinstance(f, Codes) for f in out)  # codes stay inside the pipeline
    played = np.concatenate([f.pcm for f in out if isinstance(f, AssistantAudio)])
    expected = codec.decode(codec.encode(audio, rate))
    assert played.shape == expected.shape and np.abs(played - expected).max() < 1e-4


def test_codec_encode_resamples_other_rates_and_decode_resets(codec):
    from voice.e2e.codec_stages import CodecDecodeStage, CodecEncodeStage

    audio, rate = read_wav(SPEECH_DIR / "sr_english_one_two_three.wav")  # 44.1 kHz
    encode = CodecEncodeStage(codec, 2)
    out = run(_through([encode], _turn_frames(audio, rate)))
    codes = np.concatenate([f.codes for f in out if isinstance(f, Codes)], axis=1)
    assert abs(codes.shape[1] - len(audio) / rate * codec.frame_rate_hz) <= 2
    decode = CodecDecodeStage(codec)
    first = run(_through([decode], [Codes(turn_id=3, codes=codes[:, :10], role="assistant")]))
    decode.reset()  # an interrupt: the next answer starts from a fresh decoder state
    again = run(_through([decode], [Codes(turn_id=3, codes=codes[:, :10], role="assistant"), TurnEnd(turn_id=3)]))
    assert np.array_equal(first[0].pcm, again[0].pcm)


def test_codec_echo_server_turn_is_intelligible():
    """A real recording through the server: VAD, codec encode while speaking, decode, playback."""
    from voice.codec.evaluate import _wer, load_whisper, normalize_text, transcribe

    name = "sb_example1_birch_canoe.wav"
    pcm, rate = read_wav(SPEECH_DIR / name)

    client = serve(lambda srv: play_turn(srv.url, pcm, rate, "codec-echo", timeout_s=20), pipeline="codec-echo")
    echoed = np.concatenate([a.pcm for a in client.log.audio])
    stopped = client.log.of_type("speech_stopped")[0]
    assert abs(len(echoed) / 16000 - (stopped["t"] - stopped["start"])) < 0.6
    turn_end = client.log.of_type("turn_end")[0]
    assert turn_end["interrupted"] is False
    hypothesis = normalize_text(transcribe(load_whisper(), echoed))
    assert _wer([normalize_text(speech_transcripts()[name])], [hypothesis]) <= 25.0, hypothesis


@pytest.mark.parametrize("options,needle", [
    ({"codec": "/etc/passwd"}, "option codec must be one of"),
    ({"step_frames": 0}, "step_frames must be an integer in 1..50"),
    ({"step_frames": "two"}, "step_frames must be an integer"),
])
def test_codec_echo_bad_options_are_clear_errors(options, needle):
    message = hello_error("codec-echo", options)
    assert "bad_options" in message and needle in message
