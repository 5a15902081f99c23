"""Speculative start (issue 14, item 3): at a pause the end-of-turn model rates likely, the answer is
started and held; a confirmed end releases it, speech that goes on takes it back without a trace."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os

import numpy as np
import pytest

from tests.conftest import SPEECH_DIR, run, serve
from voice import pipelines
from voice.audio import read_wav
from voice.client import VoiceClient
from voice.frames import (AssistantAudio, AssistantText, Frame, SpeechStarted, SpeechStopped, TurnConfirmed,
                          TurnEnd, UserAudio)
from voice.runtime.stage import Stage
from voice.stages.vad import VadConfig, VadStage

RATE_HZ = 16000


class SteadyDetector:
    """An end-of-turn model that rates every pause the same: P(over) = `p` (its own threshold 0.8)."""

    threshold = 0.8
    context_samples = RATE_HZ * 4

    def __init__(self, p: float) -> None:
        self.p = p

    def probability(self, audio: np.ndarray) -> float:
        return self.p


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    pcm, rate = read_wav(SPEECH_DIR / "ps_cards_005.wav")
    assert rate == RATE_HZ
    return pcm


def gap(s: float) -> np.ndarray:
    return np.zeros(int(s * RATE_HZ), np.float32)


def paused_turn(speech: np.ndarray, pause_s: float = 0.7, tail_s: float = 2.5) -> tuple[np.ndarray, float]:
    """Silence, speech, a pause, the same speech again, silence; and when the second part starts."""
    pcm = np.concatenate([gap(0.5), speech, gap(pause_s), speech, gap(tail_s)])
    return pcm, 0.5 + len(speech) / RATE_HZ + pause_s


class Retracts:
    """A StageContext that records the VAD's retracts (the user is alone: no answer plays)."""

    def __init__(self) -> None:
        self.turns: list[int] = []
        self.frames_before: list[int] = []
        self.out: list[Frame] = []

    def assistant_active(self) -> bool:
        return False

    async def retract(self, turn_id: int) -> None:
        self.turns.append(turn_id)
        self.frames_before.append(len(self.out))


def _vad_frames(config: VadConfig, detector, pcm: np.ndarray, ctx: Retracts | None = None) -> Retracts:
    """The VAD's frames for `pcm`; without the late threshold (tests/test_turn.py has its own), so a steady
    P(over) under the decision threshold waits for the long silence."""
    ctx = ctx or Retracts()
    vad = VadStage(RATE_HZ, dataclasses.replace(config, turn_late_ms=0.0), turn_detector=detector)
    vad.bind(ctx)

    async def go():
        for i in range(0, len(pcm), 320):
            async for f in vad.process(UserAudio(pcm=pcm[i:i + 320], sample_rate_hz=RATE_HZ, stream_s=i / RATE_HZ)):
                ctx.out.append(f)
    asyncio.run(go())
    return ctx


def _turn_audio(frames: list[Frame]) -> np.ndarray:
    return np.concatenate([f.pcm for f in frames if isinstance(f, UserAudio)])


def test_a_likely_end_starts_the_answer_and_speech_that_goes_on_takes_it_back(speech):
    pcm, second_s = paused_turn(speech)
    ctx = _vad_frames(VadConfig(turn_speculate_threshold=0.3, turn_speculate_ms=0), SteadyDetector(0.5), pcm)
    out = ctx.out
    kinds = [type(f).__name__ for f in out if not isinstance(f, UserAudio)]
    assert kinds == ["SpeechStarted", "SpeechStopped", "SpeechStarted", "SpeechStopped", "TurnConfirmed"], kinds
    first_stop, last_stop = [f for f in out if isinstance(f, SpeechStopped)]
    assert first_stop.speculative and first_stop.end_probability == 0.5 and first_stop.reason == "model"
    assert last_stop.speculative and out[-1].reason == "max_silence" and out[-1].stream_s == last_stop.stream_s
    assert all(f.turn_id == 1 for f in out)              # one turn: the pause did not split it
    # one retract, when the second part began; then the turn again from its start, sample for sample
    assert ctx.turns == [1]
    cut = ctx.frames_before[0]
    resumed = out[cut]
    assert isinstance(resumed, SpeechStarted) and resumed.resumed and resumed.stream_s == out[0].stream_s
    before = _turn_audio(out[:cut])
    replay_end = cut + 1 + sum(isinstance(f, UserAudio) for f in out[:cut])
    replay = out[cut + 1: replay_end]
    assert all(isinstance(f, UserAudio) for f in replay)
    assert np.array_equal(_turn_audio(replay), before)
    assert [f.stream_s for f in replay] == [f.stream_s for f in out[:cut] if isinstance(f, UserAudio)]
    loud = np.flatnonzero(np.abs(speech) > 0.05)
    assert abs(first_stop.stream_s - (0.5 + loud[-1] / RATE_HZ)) < 0.15
    # then the speech that went on
    assert second_s + loud[0] / RATE_HZ - 0.4 < out[replay_end].stream_s < second_s + loud[0] / RATE_HZ + 0.1


def test_a_held_answer_is_confirmed_by_the_long_silence(speech):
    pcm = np.concatenate([gap(0.5), speech, gap(2.5)])
    ctx = _vad_frames(VadConfig(turn_speculate_threshold=0.3, turn_speculate_ms=0, turn_max_silence_ms=900.0),
                      SteadyDetector(0.5), pcm)
    heads = [f for f in ctx.out if not isinstance(f, UserAudio)]
    assert [type(f).__name__ for f in heads] == ["SpeechStarted", "SpeechStopped", "TurnConfirmed"]
    stop, confirmed = heads[1], heads[2]
    assert stop.speculative and confirmed.reason == "max_silence" and ctx.turns == []
    assert confirmed.stream_s == stop.stream_s and confirmed.turn_id == stop.turn_id == 1


@pytest.mark.parametrize("config", [VadConfig(turn_speculate_threshold=0.0), VadConfig(turn_speculate_threshold=0.8),
                                    VadConfig(turn_speculate_threshold=0.6)])
def test_no_speculation_when_off_or_not_below_the_decision_threshold(speech, config):
    """0 turns it off; a threshold at or above the model's decision (0.8) never speculates; below P it does not either."""
    pcm, _ = paused_turn(speech)
    ctx = _vad_frames(config, SteadyDetector(0.5), pcm)
    stops = [f for f in ctx.out if isinstance(f, (SpeechStopped, TurnConfirmed))]
    assert ctx.turns == [] and [type(f).__name__ for f in stops] == ["SpeechStopped"] and not stops[0].speculative
    assert stops[0].reason == "max_silence"


class TimedDetector(SteadyDetector):
    """A steady model that notes how much audio it heard at each question (the VAD hands it the recent windows)."""

    def __init__(self, p: float) -> None:
        super().__init__(p)
        self.calls = 0

    def probability(self, audio: np.ndarray) -> float:
        self.calls += 1
        return self.p


def test_the_model_is_asked_early_whether_to_start_and_still_decides_at_the_pause():
    """A sure end: asked once at turn_speculate_ms (the answer starts, held), decided at turn_pause_ms (released);
    without the early question the end comes as one SpeechStopped at the decision."""
    speech, rate = read_wav(SPEECH_DIR / "ps_forever_input_2.wav")     # no pause inside it
    assert rate == RATE_HZ
    pcm = np.concatenate([gap(0.5), speech, gap(1.0)])
    ctx = _vad_frames(VadConfig(turn_speculate_threshold=0.3), detector := TimedDetector(0.9), pcm)
    heads = [f for f in ctx.out if not isinstance(f, UserAudio)]
    assert [type(f).__name__ for f in heads] == ["SpeechStarted", "SpeechStopped", "TurnConfirmed"]
    stop, confirmed = heads[1], heads[2]
    assert stop.speculative and stop.end_probability == 0.9 and confirmed.reason == "model" and ctx.turns == []
    assert confirmed.stream_s == stop.stream_s and detector.calls == 2
    # the early question came at least 96 ms into the silence, the decision 200 ms into it: windows apart
    at = {id(f): i for i, f in enumerate(ctx.out)}
    windows_between = sum(isinstance(f, UserAudio) for f in ctx.out[at[id(stop)]:at[id(confirmed)]])
    assert 1 <= windows_between <= round((0.200 - 0.096) / 0.032) + 1

    ctx = _vad_frames(VadConfig(turn_speculate_threshold=0.3, turn_speculate_ms=0), detector := TimedDetector(0.9), pcm)
    heads = [f for f in ctx.out if not isinstance(f, UserAudio)]
    assert [type(f).__name__ for f in heads] == ["SpeechStarted", "SpeechStopped"] and not heads[1].speculative
    assert detector.calls == 1


def test_a_loaded_server_is_not_asked_for_an_early_start():
    """The session says the server has no cores to spare: the model is asked at the decision only."""
    speech, _ = read_wav(SPEECH_DIR / "ps_forever_input_2.wav")
    pcm = np.concatenate([gap(0.5), speech, gap(1.0)])

    class Loaded(Retracts):
        def may_speculate_early(self) -> bool:
            return False
    ctx = _vad_frames(VadConfig(turn_speculate_threshold=0.3), detector := TimedDetector(0.9), pcm, Loaded())
    stops = [f for f in ctx.out if isinstance(f, (SpeechStopped, TurnConfirmed))]
    assert [type(f).__name__ for f in stops] == ["SpeechStopped"] and not stops[0].speculative and detector.calls == 1


def test_the_cpu_monitor_sees_a_busy_core_and_an_idle_one():
    """The monitor's share follows the CPU the process got (on a shared machine a spinning thread may get less
    than a whole core, so the share is compared with what it got over the last half of the window)."""
    from voice.server.limits import CpuLoadMonitor
    import threading
    import time

    async def measure(busy: bool) -> tuple[float, float]:
        monitor = CpuLoadMonitor(interval_s=0.05, smoothing=0.5, cores=1)
        stop = threading.Event()

        def spin():
            while not stop.is_set():
                sum(range(1000))
        worker = threading.Thread(target=spin) if busy else None
        if worker:
            worker.start()
        task = asyncio.create_task(monitor.run())
        await asyncio.sleep(0.3)
        t, cpu = time.monotonic(), time.process_time()
        await asyncio.sleep(0.3)
        got = (time.process_time() - cpu) / (time.monotonic() - t)
        task.cancel()
        stop.set()
        if worker:
            worker.join()
        return monitor.share, got
    share, got = asyncio.run(measure(True))
    assert got > 0.3 and share > 0.6 * min(1.0, got), (share, got)
    share, got = asyncio.run(measure(False))
    assert share < 0.3 and share < got + 0.2, (share, got)


def test_the_cpu_monitor_adds_what_its_model_processes_report():
    """The speech LM's process reports its CPU seconds (`ModelCache.process_cpu`): the monitor adds what each
    used between two readings; one that appears or restarts between them adds nothing, never less than nothing."""
    from voice.server.limits import CpuLoadMonitor
    import time

    since = lambda: time.monotonic() - started[0]
    busy = lambda: {1: 2.0 * since()}                             # a child that keeps two cores busy
    joins = lambda: {1: 0.0} if since() < 0.12 else {1: 0.0, 2: 50.0}
    restarts = lambda: {1: 50.0} if since() < 0.12 else {1: 0.5}
    started = [0.0]

    async def share(others) -> float:
        started[0] = time.monotonic()
        monitor = CpuLoadMonitor(interval_s=0.05, smoothing=0.5, cores=2, others=others)
        task = asyncio.create_task(monitor.run())
        await asyncio.sleep(0.4)
        task.cancel()
        return monitor.share
    assert asyncio.run(share(busy)) > 0.8
    assert asyncio.run(share(joins)) < 0.3
    assert asyncio.run(share(restarts)) < 0.3


def test_the_server_tree_cpu_counts_its_child_processes():
    """The load test counts the speech LM's own process as the server's work: a busy child's seconds are in
    the tree's; a child that ends between two readings takes nothing away (its seconds are not negative)."""
    import subprocess
    import sys
    import time

    from voice.server.limits import cpu_used_since, process_tree, tree_cpu

    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert child.pid in process_tree(os.getpid())
        before = tree_cpu(os.getpid())
        time.sleep(0.8)
        assert cpu_used_since(before, tree_cpu(os.getpid())) > 0.3
    finally:
        child.kill()
        child.wait()
    assert cpu_used_since({1: 5.0, 2: 30.0}, {1: 5.5}) == 0.5 and cpu_used_since({1: 5.0}, {1: 5.5, 3: 0.25}) == 0.75


def test_the_early_question_is_asked_again_at_each_pause_and_never_ends_a_turn(speech):
    """A pause the model rates low at the early question and at the decision: no speculation, no end there."""
    pcm, _ = paused_turn(speech)
    ctx = _vad_frames(VadConfig(turn_speculate_threshold=0.3, turn_max_silence_ms=1500.0), TimedDetector(0.2), pcm)
    stops = [f for f in ctx.out if isinstance(f, (SpeechStopped, TurnConfirmed))]
    assert [f.speculative for f in stops] == [False] and stops[0].reason == "max_silence" and ctx.turns == []


class SlowAnswerStage(Stage):
    """Answers a turn `delay_s` after its end with the seconds of audio it heard, then a tone; counts its attempts."""

    name = "slow-answer"

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s, self.attempts, self.retracts = delay_s, 0, []
        self.reset()

    def reset(self) -> None:
        self._turn, self._samples = -1, 0

    def retract(self, turn_id: int) -> None:
        self.retracts.append(turn_id)
        self.reset()

    async def process(self, frame: Frame):
        if isinstance(frame, SpeechStarted):
            self._turn, self._samples = frame.turn_id, 0
        elif isinstance(frame, UserAudio) and frame.turn_id == self._turn:
            self._samples += len(frame.pcm)
        elif isinstance(frame, SpeechStopped) and frame.turn_id == self._turn:
            self.attempts += 1
            attempt, heard_s = self.attempts, self._samples / RATE_HZ
            await asyncio.sleep(self.delay_s)
            yield AssistantText(turn_id=frame.turn_id, text=f"attempt {attempt} heard {heard_s:.2f} s")
            tone = (0.2 * np.sin(2 * np.pi * 330 * np.arange(RATE_HZ // 5) / RATE_HZ)).astype(np.float32)
            yield AssistantAudio(turn_id=frame.turn_id, pcm=tone, sample_rate_hz=RATE_HZ)
            yield AssistantText(turn_id=frame.turn_id, text="", final=True)
            yield TurnEnd(turn_id=frame.turn_id)


@contextlib.contextmanager
def slow_answer_server_setup(monkeypatch, detector, delay_s: float = 0.4):
    """A `slow-answer` pipeline and `detector` as the shipped end-of-turn model, for the block."""
    import voice.server.session as session

    stages: list[SlowAnswerStage] = []

    def build(options, models):
        stages.append(SlowAnswerStage(delay_s))
        return stages[-1:]
    pipelines.register(pipelines.PipelineDef(name="slow-answer", description="test: a slow answer", build=build,
                                             output_sample_rate_hz=lambda o, m: RATE_HZ))
    monkeypatch.setattr(session, "load_turn_detector", lambda: detector)
    try:
        yield stages
    finally:
        pipelines._REGISTRY.pop("slow-answer", None)


async def _talk(url: str, pcm: np.ndarray, options: dict) -> VoiceClient:
    c = VoiceClient(url, RATE_HZ, pipeline="slow-answer", options=options)
    await c.connect()
    await c.stream(pcm)
    await c.wait_for(lambda e: e["type"] == "turn_end", 10, include_past=True)
    await c.close()
    return c


def _times(c: VoiceClient, kind: str) -> list[float]:
    return [t for t, e in c.log.events if e["type"] == kind]


MODEL_RULES = {"turn_detection": "model", "barge_in_detection": "duration", "turn_max_silence_ms": 900.0,
               "turn_late_ms": 0.0, "turn_speculate_ms": 0.0}   # a steady P(over) would speculate at the speech's short gaps


def test_through_the_server_a_taken_back_answer_leaves_no_trace(monkeypatch, speech):
    """The pause's speculative answer is dropped: the client sees one turn, one answer, made from the whole turn."""
    loud = np.flatnonzero(np.abs(speech) > 0.05)
    pause_s = max(0.05, 0.6 - (len(speech) - loud[-1] + loud[0]) / RATE_HZ)   # 0.6 s from the last word to the next
    pcm, _ = paused_turn(speech, pause_s=pause_s, tail_s=0.2)
    with slow_answer_server_setup(monkeypatch, SteadyDetector(0.5), delay_s=0.2) as stages:
        c = serve(lambda srv: _talk(srv.url, np.concatenate([pcm, gap(2.0)]),
                                    {"turn_speculate_threshold": 0.3}), vad_defaults=MODEL_RULES, warmup=False)
    kinds = [e["type"] for _, e in c.log.events if e["type"] not in ("metric", "transcript", "_closed")]
    assert kinds == ["ready", "speech_started", "speech_stopped", "assistant_text", "audio_start", "assistant_text",
                     "turn_end"], [e for _, e in c.log.events]
    assert c.log.of_type("ready")[0]["speculative_start"] is True
    stage = stages[0]
    assert stage.retracts == [1] and stage.attempts == 2      # the pause's answer, then the turn's
    text = c.log.of_type("assistant_text")[0]["text"]
    heard_s = float(text.split()[3])
    whole_s = 2 * len(speech) / RATE_HZ + pause_s
    assert text.startswith("attempt 2") and whole_s - 0.1 < heard_s < whole_s + 0.5, text   # the whole turn
    stopped = c.log.of_type("speech_stopped")[0]
    assert stopped["reason"] == "max_silence" and stopped["answer_started_ms"] < -600   # 200 ms to 900 ms
    assert [e for e in c.log.of_type("turn_end")][0]["interrupted"] is False


def test_through_the_server_a_held_answer_plays_as_soon_as_the_end_is_confirmed(monkeypatch, speech):
    """An answer that takes 0.4 s to make: started at the likely end, its audio follows the confirmed end at
    once; without speculation it comes 0.4 s after it."""
    pcm = np.concatenate([gap(0.5), speech, gap(2.0)])
    waits = {}
    for name, threshold in (("speculative", 0.3), ("off", 0.0)):
        with slow_answer_server_setup(monkeypatch, SteadyDetector(0.5), delay_s=0.4):
            c = serve(lambda srv: _talk(srv.url, pcm, {"turn_speculate_threshold": threshold}),
                      vad_defaults=MODEL_RULES, warmup=False)
        stopped, audio = _times(c, "speech_stopped"), _times(c, "audio_start")
        assert len(stopped) == len(audio) == 1
        waits[name] = audio[0] - stopped[0]
        assert c.log.of_type("speech_stopped")[0]["reason"] == "max_silence"
        assert c.log.of_type("ready")[0]["speculative_start"] is (threshold > 0)
    assert waits["speculative"] < 0.15 and waits["off"] >= 0.38, waits


def test_a_retracted_turn_leaves_nothing_in_the_cascades_context():
    """The LLM stage drops the taken-back exchange; the TTS stage's retract cuts nothing that was played."""
    from voice.cascade.config import CascadeConfig
    from voice.cascade.conversation import Conversation
    from voice.cascade.llm import LlmStage
    from voice.cascade.tts import TtsStage
    from voice.frames import now_s

    class Silent:
        sample_rate_hz = 16000

    conv = Conversation()
    tts = TtsStage(Silent(), conv)
    conv.add_user(1, "What time is it?")
    conv.spoken(1, "It is noon.", now_s(), now_s() + 5.0)       # still playing
    conv.add_user(2, "Set a timer for")                         # the pause's speculative turn
    conv.spoken(2, "Sure, for how long?", now_s() + 5.0, now_s() + 6.0)
    LlmStage(None, conv, CascadeConfig.from_options({})).retract(2)
    tts.retract(2)
    assert conv.messages("system") == [{"role": "system", "content": "system"},
                                       {"role": "user", "content": "What time is it?"},
                                       {"role": "assistant", "content": "It is noon."}]


@pytest.mark.slow
def test_the_cascade_answers_the_whole_turn_after_a_taken_back_start(monkeypatch, speech):
    """Whisper, SmolLM2 and espeak behind a real server: the answer started at the pause is taken back; the
    client gets one final transcript, of the whole turn, and the LLM's last prompt holds only that turn."""
    import voice.cascade.conversation as conversation
    import voice.server.session as session

    prompts: list[list[dict]] = []
    real_messages = conversation.Conversation.messages

    def recorded(self, system):
        prompts.append(real_messages(self, system))
        return prompts[-1]
    monkeypatch.setattr(conversation.Conversation, "messages", recorded)
    monkeypatch.setattr(session, "load_turn_detector", lambda: SteadyDetector(0.5))
    second, _ = read_wav(SPEECH_DIR / "sb_timit_spk1_snt5.wav")
    loud = np.flatnonzero(np.abs(speech) > 0.05)
    # a pause long enough for Whisper to finish the first part and the LLM to begin (2 s; 3.5 s ends a turn)
    pcm = np.concatenate([gap(0.3), speech[: loud[-1]], gap(2.0), second, gap(4.0)])

    async def go(srv):
        async with VoiceClient(srv.url, RATE_HZ, "cascade", {"tts": "espeak", "turn_speculate_threshold": 0.3,
                                                           "turn_max_silence_ms": 3500}) as c:
            await c.stream(pcm)
            await c.wait_for(lambda e: e["type"] == "turn_end", 90, include_past=True)
            return c.log
    log = serve(go, vad_defaults=MODEL_RULES, pipeline="cascade", warmup=False)
    finals = [e["text"].lower() for e in log.of_type("transcript") if e["final"]]
    assert len(finals) == 1 and "spades" in finals[0] and "sunday" in finals[0], finals
    assert len(prompts) == 2, prompts            # the pause's answer, then the turn's
    assert "sunday" not in prompts[0][-1]["content"].lower()
    assert [m["role"] for m in prompts[1]] == ["system", "user"] and "sunday" in prompts[1][1]["content"].lower()
    assert len(log.of_type("speech_started")) == 1 and len(log.of_type("turn_end")) == 1
    assert not log.of_type("clear") and log.audio


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from tests.test_e2e_speechlm import _save_tiny_speechlm

    folder = tmp_path_factory.mktemp("speechlm")
    _save_tiny_speechlm(folder)
    return folder


def test_the_speech_lm_forgets_a_taken_back_turn_to_the_last_step(tiny_lm, monkeypatch):
    """e2e: the context after a taken-back start and the whole turn is the context of the whole turn alone:
    same length, same cached keys, up to the answer."""
    from tests.test_e2e_speechlm import _stages
    from voice.pipelines import ModelCache
    from voice.runtime.pipeline import Pipeline

    monkeypatch.setenv("VOICE_SPEECHLM", str(tiny_lm))
    first, _ = read_wav(SPEECH_DIR / "ps_cards_004.wav")
    part_a, part_b = first, read_wav(SPEECH_DIR / "sb_timit_spk1_snt5.wav")[0]

    def frames(turn: int, pcm: np.ndarray, stop: SpeechStopped | None, resumed: bool = False, start_s: float = 0.0):
        out: list[Frame] = [SpeechStarted(turn_id=turn, stream_s=start_s, resumed=resumed)]
        for i in range(0, len(pcm), 512):
            out.append(UserAudio(turn_id=turn, pcm=pcm[i:i + 512], sample_rate_hz=RATE_HZ, stream_s=i / RATE_HZ))
        return out + ([stop] if stop is not None else [])

    async def until_end(pipeline, turn: int, audio_only: bool = False) -> list[Frame]:
        out: list[Frame] = []
        while True:
            out.append(await asyncio.wait_for(pipeline.output.get(), 60))
            if audio_only and isinstance(out[-1], AssistantAudio) or isinstance(out[-1], TurnEnd):
                return out

    async def conversation(speculate: bool):
        encode, lm, decode = _stages({"max_answer_s": 0.5, "now": "2026-05-04T15:30"}, ModelCache())
        gen = lm.service.generator
        pipeline = Pipeline([encode, lm, decode])
        await pipeline.start()
        try:
            for f in frames(1, first, SpeechStopped(turn_id=1, stream_s=len(first) / RATE_HZ)):
                await pipeline.push(f)
            await until_end(pipeline, 1)
            await lm.service.call(lambda: None)
            gs = lm._conv.session
            before = (gen.decoder.lengths[gs.slot], gs.pending_text, gs.answer)
            rewound = None
            whole = np.concatenate([part_a, part_b])
            if speculate:
                for f in frames(2, part_a, SpeechStopped(turn_id=2, stream_s=len(part_a) / RATE_HZ, speculative=True)):
                    await pipeline.push(f)
                await until_end(pipeline, 2, audio_only=True)        # the speculative answer is under way
                await pipeline.retract(2)
                await lm.service.call(lambda: None)
                rewound = (gen.decoder.lengths[gs.slot], gs.pending_text, gs.answer)
                for f in frames(2, whole, SpeechStopped(turn_id=2, stream_s=len(whole) / RATE_HZ), resumed=True):
                    await pipeline.push(f)
            else:
                for f in frames(2, whole, SpeechStopped(turn_id=2, stream_s=len(whole) / RATE_HZ)):
                    await pipeline.push(f)
            out = await until_end(pipeline, 2)
            await lm.service.call(lambda: None)
            assert lm._conv.session is gs and all(f.turn_id == 2 for f in out)
            start = gs.answer.start
            return before, rewound, start, gen.decoder.k[:, gs.slot, :, :start].clone(), out
        finally:
            await pipeline.stop()

    before, rewound, start, keys, out = run(conversation(speculate=True))
    assert rewound == before                      # back to the step where turn 2 began
    _, _, alone_start, alone_keys, _ = run(conversation(speculate=False))
    assert start == alone_start and np.allclose(keys.numpy(), alone_keys.numpy(), atol=1e-5)
    assert any(isinstance(f, AssistantAudio) for f in out)


def test_a_pipelines_vad_defaults_sit_under_the_servers_and_the_hellos(monkeypatch):
    """The cascade decides ends at 0.95 (its answer starts speculatively anyway); the server's defaults and
    the hello's own options go over a pipeline's."""
    import voice.server.session as session
    from tests.conftest import exchange

    assert pipelines.get("cascade").vad_defaults == {"turn_threshold": 0.95}
    monkeypatch.setattr(session, "load_turn_detector", lambda: SteadyDetector(0.5))
    pipelines.register(pipelines.PipelineDef(name="strict-test", description="test", build=lambda o, m: [],
                                             output_sample_rate_hz=lambda o, m: RATE_HZ,
                                             vad_defaults={"turn_threshold": 0.9}))
    hello = {"type": "hello", "sample_rate": RATE_HZ, "pipeline": "strict-test"}
    try:
        def ready(server_defaults: dict, options: dict) -> dict:
            async def go(srv):
                events, _ = await exchange(srv.url, [{**hello, "options": options}], wait_s=0.5)
                return next(e for e in events if e["type"] == "ready")
            return serve(go, vad_defaults=server_defaults, warmup=False)
        assert ready({}, {})["turn_threshold"] == 0.9
        assert ready({"turn_threshold": 0.85}, {})["turn_threshold"] == 0.85
        assert ready({"turn_threshold": 0.85}, {"turn_threshold": 0.7})["turn_threshold"] == 0.7
        assert ready({"turn_detection": "silence"}, {})["turn_threshold"] is None
    finally:
        pipelines._REGISTRY.pop("strict-test", None)
