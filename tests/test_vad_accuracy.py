"""The VAD stage on the real recordings: boundaries within 100 ms of the reviewed energy reference."""

from __future__ import annotations

import asyncio
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from conftest import SPEECH_DIR
from voice.audio import read_wav, resample
from voice.bench.reference import load_reference_table
from voice.frames import SpeechStarted, SpeechStopped, UserAudio
from voice.stages.vad import VadConfig, VadStage

REFERENCE = Path(__file__).parent / "data" / "speech_boundaries.json"
TOLERANCE_S = 0.100
# A microphone stream has audio before the user talks; silero's recurrent state needs a few
# windows of it. Without lead-in, clips whose speech starts in the first 30 ms (sb_*) start late.
LEAD_S = 0.5
TAIL_S = 1.5            # longer than any end_silence_ms used here plus silero's hangover
# One turn per clip: longer than the longest pause in any clip (librispeech, 810 ms) plus
# silero's hangover, so that start and end of the whole utterance are compared. The turn
# splitting at the default 500 ms is tested separately below.
# These tests measure Silero and the energy edges under the fixed rules (a silence ends the turn,
# a duration of speech interrupts); the turn-taking models are tested in test_turn.py.
FIXED_RULES = VadConfig(turn_detection="silence", barge_in_detection="duration")
ONE_TURN = VadConfig(end_silence_ms=1000.0, turn_detection="silence", barge_in_detection="duration")

# Measured misses of the 100 ms bound (ms past the reference), reported to the lead; strict, so
# a VAD change that fixes them makes these tests fail until the entry is removed.
KNOWN_MISSES = {
    ("ps_cards_004.wav", "end"): "-176 ms: the final /v/ of 'five' fades within 6 dB of the noise floor; the energy"
                                 " refinement ends the turn at the vowel's end",
    ("ps_goforward.wav", "end"): "+121 ms: a mic pop after the final /s/ keeps both silero and the energy high",
}


def reference() -> dict:
    if not REFERENCE.exists():
        pytest.skip("tests/data/speech_boundaries.json missing")
    return load_reference_table(REFERENCE)


def padded(pcm: np.ndarray, rate_hz: int) -> np.ndarray:
    return np.concatenate([np.zeros(int(LEAD_S * rate_hz), np.float32), pcm,
                           np.zeros(int(TAIL_S * rate_hz), np.float32)])


async def _events(pcm: np.ndarray, rate_hz: int, config: VadConfig, chunk_samples: int) -> list[tuple[str, float]]:
    vad = VadStage(rate_hz, config)
    out = []
    for i in range(0, len(pcm), chunk_samples):
        frame = UserAudio(pcm=pcm[i:i + chunk_samples], sample_rate_hz=rate_hz, stream_s=i / rate_hz)
        async for f in vad.process(frame):
            if isinstance(f, (SpeechStarted, SpeechStopped)):
                out.append(("start" if isinstance(f, SpeechStarted) else "end", round(f.stream_s - LEAD_S, 4)))
    return out


def vad_events(pcm: np.ndarray, rate_hz: int, config: VadConfig = ONE_TURN, chunk_ms: float = 20.0) -> list[tuple[str, float]]:
    """(kind, seconds on the clip's own timeline) of every SpeechStarted / SpeechStopped."""
    chunk = max(1, int(rate_hz * chunk_ms / 1000))
    return asyncio.run(_events(padded(pcm, rate_hz), rate_hz, config, chunk))


@lru_cache(maxsize=None)
def clip(name: str) -> tuple[np.ndarray, int]:
    return read_wav(SPEECH_DIR / name)


@lru_cache(maxsize=None)
def one_turn_events(name: str) -> tuple:
    return tuple(vad_events(*clip(name)))


def speech_names() -> list[str]:
    return sorted(p.name for p in SPEECH_DIR.glob("*.wav")) if SPEECH_DIR.is_dir() else []


def _cases():
    for name in speech_names():
        for which in ("start", "end"):
            marks = []
            if (name, which) in KNOWN_MISSES:
                marks = [pytest.mark.xfail(strict=True, reason=KNOWN_MISSES[(name, which)])]
            yield pytest.param(name, which, marks=marks, id=f"{name}-{which}")


def test_reference_covers_every_recording(speech_dir):
    assert sorted(reference()) == speech_names()


@pytest.mark.parametrize("name,which", list(_cases()))
def test_boundary_within_100ms(name, which):
    ref = reference()[name]
    events = one_turn_events(name)
    assert [k for k, _ in events] == ["start", "end"], f"expected one turn, got {events}"
    detected = events[0][1] if which == "start" else events[1][1]
    expected = ref.start_s if which == "start" else ref.end_s
    assert abs(detected - expected) <= TOLERANCE_S, f"{which}: VAD {detected:.3f} s, reference {expected:.3f} s"


LONG_PAUSE_CLIP = "lh_librispeech_2412-153948-0000.wav"   # 810 ms pause after 'native country'


def _long_pause_turns() -> tuple[list, tuple, tuple]:
    ref = reference()[LONG_PAUSE_CLIP]
    events = vad_events(*clip(LONG_PAUSE_CLIP), config=FIXED_RULES)
    before, after = max(zip(ref.segments, ref.segments[1:]), key=lambda p: p[1][0] - p[0][1])
    return events, before, after


def test_default_end_silence_splits_long_pause(speech_dir):
    """At the default 500 ms the 810 ms pause ends a turn; the next turn starts on the segment edge."""
    events, before, after = _long_pause_turns()
    assert [k for k, _ in events] == ["start", "end", "start", "end"], events
    assert abs(events[2][1] - after[0]) <= TOLERANCE_S


def test_turn_end_at_long_pause_within_100ms(speech_dir):
    events, before, _ = _long_pause_turns()
    assert abs(events[1][1] - before[1]) <= TOLERANCE_S, f"VAD {events[1][1]:.3f} s, reference {before[1]:.3f} s"


@pytest.mark.parametrize("name", ["fw_stereo_diarization_left.wav", "ps_cards_002.wav", "ps_librivox_sense_0890.wav",
                                  "sb_example1_birch_canoe.wav"])
def test_default_end_silence_keeps_short_pauses_in_one_turn(name, speech_dir):
    assert reference()[name].longest_pause_s() < 0.35
    events = vad_events(*clip(name), config=FIXED_RULES)
    assert [k for k, _ in events] == ["start", "end"], events


@pytest.mark.parametrize("rate_hz", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("name", ["sr_english_one_two_three.wav", "ps_tidigits_dhd_2934z.wav", "ps_librivox_sense_0880.wav"])
def test_client_rate_gives_same_boundaries(name, rate_hz, speech_dir):
    pcm, rate = clip(name)
    base = vad_events(resample(pcm, rate, 16000), 16000)
    events = vad_events(resample(pcm, rate, rate_hz), rate_hz)
    assert [k for k, _ in events] == [k for k, _ in base]
    # 8 kHz loses everything above 4 kHz, so allow one 32 ms window of difference
    assert all(abs(a - b) <= 0.032 + 1e-6 for (_, a), (_, b) in zip(events, base)), (events, base)
    ref = reference()[name]
    assert abs(events[0][1] - ref.start_s) <= TOLERANCE_S and abs(events[-1][1] - ref.end_s) <= TOLERANCE_S


@pytest.mark.parametrize("name", ["sr_english_one_two_three.wav", "ps_cards_005.wav"])
def test_chunk_size_does_not_change_boundaries(name, speech_dir):
    pcm, rate = clip(name)
    results = {ms: vad_events(pcm, rate, chunk_ms=ms) for ms in (3.0, 20.0, 37.0, 100.0, 1000.0)}
    whole = asyncio.run(_events(padded(pcm, rate), rate, ONE_TURN, len(padded(pcm, rate))))
    for ms, events in results.items():
        assert events == whole, f"chunk {ms} ms: {events} != whole-input {whole}"


class FakeContext:
    """A session whose assistant is always speaking; records interrupts with the VAD's stream time."""

    session_id = "test"

    def __init__(self) -> None:
        self.vad: VadStage | None = None
        self.interrupts: list[float] = []

    def assistant_active(self) -> bool:
        return True

    async def interrupt(self, reason: str) -> None:
        assert reason == "barge_in"
        self.interrupts.append(self.vad.stream_s - LEAD_S)


def _barge_in(pcm: np.ndarray, rate_hz: int) -> tuple[FakeContext, list]:
    ctx = FakeContext()
    vad = VadStage(rate_hz, FIXED_RULES)
    vad.bind(ctx)
    ctx.vad = vad
    events = asyncio.run(_run_stage(vad, padded(pcm, rate_hz), rate_hz))
    return ctx, events


async def _run_stage(vad: VadStage, pcm: np.ndarray, rate_hz: int) -> list:
    step = int(rate_hz * 0.02)
    out = []
    for i in range(0, len(pcm), step):
        async for f in vad.process(UserAudio(pcm=pcm[i:i + step], sample_rate_hz=rate_hz, stream_s=i / rate_hz)):
            if isinstance(f, (SpeechStarted, SpeechStopped)):
                out.append(f)
    return out


@pytest.mark.parametrize("burst_ms", [150, 250, 300])
def test_barge_in_ignores_cough_length_burst(burst_ms, speech_dir):
    """A burst of real speech (the loudest part of 'yes') no longer than a cough does not interrupt."""
    name = "tf_speech_commands_yes.wav"
    pcm, rate = clip(name)
    a = int(0.48 * rate)
    burst = pcm[a:a + int(burst_ms / 1000 * rate)]
    ctx, events = _barge_in(burst, rate)
    assert ctx.interrupts == [] and events == []


def test_barge_in_on_real_speech_after_min_speech(speech_dir):
    name = "ps_librivox_sense_0890.wav"
    pcm, rate = clip(name)
    ctx, events = _barge_in(pcm, rate)
    ref = reference()[name]
    assert len(ctx.interrupts) == 1, ctx.interrupts
    need_s = FIXED_RULES.barge_in_min_speech_ms / 1000
    started = events[0].stream_s - LEAD_S
    assert isinstance(events[0], SpeechStarted)
    assert need_s - 1e-6 <= ctx.interrupts[0] - started <= need_s + 0.064, (ctx.interrupts, started)
    assert ctx.interrupts[0] - ref.start_s <= need_s + TOLERANCE_S
