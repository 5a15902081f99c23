"""Turns through the raw protocol: the orders of events docs/protocol.md promises, and endpointing_ms."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import numpy as np
import pytest

from voice import pipelines
from voice.audio import read_wav
from voice.client import VoiceClient
from voice.frames import AssistantAudio, AssistantText, Frame, SpeechStopped, TurnEnd
from voice.runtime.stage import Stage
from tests.conftest import SPEECH_DIR, serve

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
TONE_HZ, RATE_HZ = 220.0, 16000


class PacedAnswerStage(Stage):
    """Answers each turn with text pieces, each followed by `piece_s` of tone, made `pace` times
    faster than real time (0: all at once, like echo)."""

    name = "paced"

    def __init__(self, pieces: list[str], piece_s: float, pace: float) -> None:
        super().__init__()
        self.pieces, self.piece_s, self.pace = pieces, piece_s, pace

    async def process(self, frame: Frame):
        if not isinstance(frame, SpeechStopped):
            yield frame
            return
        chunk = int(0.1 * RATE_HZ)
        tone = (0.3 * np.sin(2 * np.pi * TONE_HZ * np.arange(chunk) / RATE_HZ)).astype(np.float32)
        for piece in self.pieces:
            yield AssistantText(turn_id=frame.turn_id, text=piece)
            for _ in range(round(self.piece_s / 0.1)):
                yield AssistantAudio(turn_id=frame.turn_id, pcm=tone, sample_rate_hz=RATE_HZ)
                if self.pace:
                    await asyncio.sleep(0.1 / self.pace)
        yield AssistantText(turn_id=frame.turn_id, text="", final=True)
        yield TurnEnd(turn_id=frame.turn_id)


@contextlib.contextmanager
def paced_pipeline(name: str, pieces: list[str], piece_s: float, pace: float):
    """Registers a test pipeline `name` (a PacedAnswerStage) for the duration of the block."""
    pipelines.register(pipelines.PipelineDef(
        name=name, description="test: a paced answer", build=lambda o, m: [PacedAnswerStage(pieces, piece_s, pace)],
        output_sample_rate_hz=lambda o, m: RATE_HZ))
    try:
        yield name
    finally:
        pipelines._REGISTRY.pop(name, None)


def notation(events: list[dict]) -> list[str]:
    """Events in the doc's notation: `speech_started 1`, `turn_end 1 done|interrupted`, `clear [1]`."""
    out = []
    for e in events:
        kind = e["type"]
        if kind in ("speech_started", "speech_stopped", "audio_start"):
            out.append(f"{kind} {e['turn']}")
        elif kind == "turn_end":
            out.append(f"turn_end {e['turn']} {'interrupted' if e['interrupted'] else 'done'}")
        elif kind == "clear":
            out.append(f"clear [{','.join(str(t) for t in e['turns'])}]")
    return out


def documented_orders() -> dict[str, list[str]]:
    """The `name: event, event, ...` lines of the fenced block after the 'orders' marker in protocol.md."""
    text = DOC.read_text()
    marker = text.find("<!-- event orders: checked by tests/test_protocol_turns.py -->")
    assert marker >= 0, "docs/protocol.md does not document the orders of events around a barge-in"
    block = text[marker:].split("```")[1]
    orders = {}
    for line in block.splitlines():
        if ":" in line:
            name, _, seq = line.partition(":")
            orders[name.strip()] = [s.strip() for s in seq.split(",") if s.strip()]
    return orders


async def talk(url: str, pipeline: str, pcm: np.ndarray, options: dict | None = None, tail_s: float = 2.5,
               realtime: bool = True) -> VoiceClient:
    """Stream `pcm` (16 kHz) then `tail_s` of silence in real time; the client's log."""
    c = VoiceClient(url, RATE_HZ, pipeline=pipeline, options=options or {})
    await c.connect()
    await c.stream(pcm, realtime=realtime)
    await c.stream(np.zeros(int(tail_s * RATE_HZ), np.float32))
    await c.close()
    return c


@pytest.fixture(scope="module")
def recordings():
    long, rate = read_wav(SPEECH_DIR / "ps_librivox_sense_0890.wav")   # 5.3 s
    short, rate2 = read_wav(SPEECH_DIR / "ps_cards_005.wav")
    assert rate == rate2 == RATE_HZ
    start = np.flatnonzero(np.abs(short) > 0.05)[0]
    return {"long": long, "short": short, "burst": short[start:start + int(0.25 * RATE_HZ)]}


def gap(s: float) -> np.ndarray:
    return np.zeros(int(s * RATE_HZ), np.float32)


def test_barge_in_after_the_answer_was_sent_in_full(recordings):
    """Echo sends its answer at once: turn_end (done) comes first, the clear names the turn later."""
    pcm = np.concatenate([recordings["long"], gap(0.9), recordings["short"]])
    c = serve(lambda srv: talk(srv.url, "echo", pcm))
    assert notation([e for _, e in c.log.events]) == documented_orders()["answer sent in full, cut while playing"]
    # the barge-in turn's endpointing is the end-of-turn silence or more, never less (issue 16, item 7)
    assert c.log.of_type("turn_end")[-1]["endpointing_ms"] >= 500


def test_barge_in_while_the_answer_is_being_made(recordings):
    """An answer made in real time is cut while being made: clear first, then turn_end interrupted."""
    pcm = np.concatenate([recordings["long"][: int(1.5 * RATE_HZ)], gap(0.9), recordings["short"]])
    with paced_pipeline("paced-test", ["One two.", " Three four."], piece_s=1.5, pace=1.0) as name:
        c = serve(lambda srv: talk(srv.url, name, pcm, tail_s=5.0), pipeline="echo", warmup=False)
    assert notation([e for _, e in c.log.events]) == documented_orders()["answer cut while being made"]


def test_speech_shorter_than_barge_in_min_during_the_answer_is_dropped(recordings):
    """A burst under barge_in_min_speech_ms while the answer plays is no turn; the same burst alone is."""
    during = np.concatenate([recordings["long"], gap(0.9), recordings["burst"]])
    options = {"min_speech_ms": 100}
    c = serve(lambda srv: talk(srv.url, "echo", during, options))
    assert notation([e for _, e in c.log.events]) == documented_orders()["speech under barge_in_min_speech_ms during the answer"]
    alone = serve(lambda srv: talk(srv.url, "echo", np.concatenate([gap(0.5), recordings["burst"]]), options))
    assert notation([e for _, e in alone.log.events]) == ["speech_started 1", "speech_stopped 1", "audio_start 1",
                                                          "turn_end 1 done"]


def test_endpointing_counts_the_silence_even_when_it_arrives_at_once(recordings):
    """Speech in real time, then its silence all at once (as after a stall: the server reads what piled
    up in one go): endpointing_ms still covers the end-of-turn silence the VAD waited for."""
    async def main(srv):
        c = VoiceClient(srv.url, RATE_HZ, pipeline="echo")
        await c.connect()
        await c.stream(np.concatenate([gap(0.3), recordings["short"]]))
        await c.stream(gap(1.0), realtime=False)
        await c.wait_for(lambda e: e["type"] == "turn_end", 10, include_past=True)
        await c.close()
        return c.log.of_type("turn_end")[0]

    turn_end = serve(main)
    assert 500 <= turn_end["endpointing_ms"] <= 700, turn_end
