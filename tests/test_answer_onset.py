"""An answer's leading silence is not sent: the filter chunk by chunk against the whole answer, and at a real server."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SPEECH_DIR, play_turn, serve
from voice.audio import first_non_silent_index, read_wav
from voice.server.answer_onset import KEEP_S, MAX_HOLD_S, SOUND_THRESHOLD, AnswerOnset

RATE = 16000


def _answer(silence_s: float, sound_s: float = 0.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    quiet = rng.normal(0, 0.002, int(silence_s * RATE))          # a noise floor well under the threshold
    sound = 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(sound_s * RATE)) / RATE)
    return np.concatenate([quiet, sound]).astype(np.float32)


def _run(onset: AnswerOnset, pieces: list[np.ndarray]) -> tuple[np.ndarray, float]:
    sent, skipped = [], 0.0
    for p in pieces:
        out, s = onset.push(p)
        skipped += s
        if out is not None:
            sent.append(out)
    held = onset.flush()
    if held is not None:
        sent.append(held)
    return (np.concatenate(sent) if sent else np.zeros(0, np.float32)), skipped


@pytest.mark.parametrize("chunk", [1, 7, 160, 640, 3001])
def test_chunk_by_chunk_equals_the_whole_answer(chunk):
    pcm = _answer(0.35)
    whole, whole_skipped = _run(AnswerOnset(RATE), [pcm])
    parts, parts_skipped = _run(AnswerOnset(RATE), [pcm[i:i + chunk] for i in range(0, len(pcm), chunk)])
    np.testing.assert_array_equal(parts, whole)
    assert parts_skipped == pytest.approx(whole_skipped)


def test_the_silence_before_the_first_sound_is_dropped_but_a_little():
    pcm = _answer(0.35)
    sound_at = first_non_silent_index(pcm, SOUND_THRESHOLD)
    sent, skipped = _run(AnswerOnset(RATE), [pcm[i:i + 640] for i in range(0, len(pcm), 640)])
    assert first_non_silent_index(sent, SOUND_THRESHOLD) == round(KEEP_S * RATE)
    assert skipped == pytest.approx((sound_at - round(KEEP_S * RATE)) / RATE)
    np.testing.assert_array_equal(sent, pcm[sound_at - round(KEEP_S * RATE):])
    # an answer that starts with its sound loses nothing
    loud = _answer(0.0)
    assert np.array_equal(_run(AnswerOnset(RATE), [loud])[0], loud)


def test_an_answer_that_never_sounds_or_waits_too_long_is_sent_as_it_came():
    quiet = _answer(0.6, sound_s=0.0)
    onset = AnswerOnset(RATE)
    assert onset.push(quiet[:4000]) == (None, 0.0) and onset.push(quiet[4000:]) == (None, 0.0)
    np.testing.assert_array_equal(onset.flush(), quiet)       # at the end of the answer
    late = _answer(MAX_HOLD_S + 0.3)
    sent, skipped = _run(AnswerOnset(RATE), [late[i:i + 640] for i in range(0, len(late), 640)])
    np.testing.assert_array_equal(sent, late)
    assert skipped == 0.0


def test_the_echo_answer_starts_with_its_sound_at_a_real_server():
    """The echo pipeline replays the turn from its pre-roll; the client receives it from the first sound on."""
    pcm, rate = read_wav(SPEECH_DIR / "tf_speech_commands_yes.wav")

    async def go(srv):
        return await play_turn(srv.url, np.concatenate([np.zeros(rate, np.float32), pcm]), rate, "echo")

    client = serve(go)
    audio = np.concatenate([a.pcm for a in client.log.audio if a.turn_id == 1])
    first = first_non_silent_index(audio, SOUND_THRESHOLD)
    assert first is not None and first <= round(KEEP_S * client.output_rate_hz)
    spoken = pcm[first_non_silent_index(pcm, SOUND_THRESHOLD):]
    assert len(audio) >= 0.9 * len(spoken)          # the sound itself is all there
