"""The speech LM in a process of its own (voice/e2e/speechlm_process.py): the same answers as on a worker thread,
barge-in and retract through the pipe, a dying process, a real server."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.conftest import SPEECH_DIR, assert_barge_in, run, serve
from tests.test_e2e_codec_echo import _turn_frames
from tests.test_e2e_speechlm import e2e_env, tiny_lm  # noqa: F401 (fixtures: a tiny speech LM, VOICE_SPEECHLM)
from voice.audio import read_wav
from voice.frames import AssistantText, Codes, TurnEnd

OPTIONS = {"max_answer_s": 2.0, "now": "2026-05-03T16:33"}


@pytest.fixture(scope="module")
def process_models():
    """One model cache whose speech LM runs in a child process (started once, at the module's first build)."""
    from voice import pipelines

    models = pipelines.ModelCache({"speechlm_process": True, "torch_threads": 1})
    yield models
    models.close()


class _Played:
    """A session's answer to `answer_played_s` (what the client played of the interrupted answer)."""

    def __init__(self, played_s: float | None) -> None:
        self.played_s = played_s

    def answer_played_s(self, turn_id: int) -> float | None:
        return self.played_s


def _stages(models, options=OPTIONS):
    from voice import pipelines

    encode, lm, _ = pipelines.get("e2e").build(dict(options), models)
    return encode, lm


async def _turn(encode, lm, audio, rate, turn: int, stop_after_codes: int | None = None) -> list:
    """One user turn through the encoder and the speech LM stage; its answer's frames (all of them, or up to
    `stop_after_codes` chunks of codes: then the stage's work is cancelled, as `Pipeline.interrupt` does)."""
    frames = []
    for frame in _turn_frames(audio, rate, turn=turn):
        async for coded in encode.process(frame):
            gen = lm.process(coded)
            async for out in gen:
                frames.append(out)
                chunks = sum(isinstance(f, Codes) for f in frames)
                if stop_after_codes is not None and chunks >= stop_after_codes:
                    await gen.aclose()
                    return frames
    return frames


def _said(frames) -> tuple[str, np.ndarray]:
    text = "".join(f.text for f in frames if isinstance(f, AssistantText))
    codes = [f.codes for f in frames if isinstance(f, Codes) and f.role == "assistant"]
    return text, (np.concatenate(codes, 1) if codes else np.zeros((0, 0), np.int64))


def _same(a, b) -> None:
    assert [type(f).__name__ for f in a] == [type(f).__name__ for f in b]
    (ta, ca), (tb, cb) = _said(a), _said(b)
    assert ta == tb
    np.testing.assert_array_equal(ca, cb)


async def _state(lm) -> dict:
    """The conversation's `context_state()` on the worker, once what was sent before is done (either stage)."""
    if hasattr(lm, "state"):
        return await lm.state()
    return await lm.service.call(lm.context_state)


def _conversation(models, interrupt: str | None, played_s: float | None = None) -> list:
    """Turn 1 (cut after 3 chunks of codes when `interrupt` is "reset" or "retract"), then turn 2, in one
    session: the frames of each, and the context's state at the end."""
    first, rate = read_wav(SPEECH_DIR / "sb_example2_culprit.wav")
    second, _ = read_wav(SPEECH_DIR / "ps_cards_004.wav")

    async def go():
        encode, lm = _stages(models)
        lm.bind(_Played(played_s))
        await lm.start()
        out1 = await _turn(encode, lm, first, rate, 1, stop_after_codes=3 if interrupt else None)
        if interrupt == "reset":
            lm.reset()
            encode.reset()
        elif interrupt == "retract":
            lm.retract(1)
            encode.reset()
        elif interrupt == "new_conversation":
            lm.new_conversation()
            encode.new_conversation()
        out2 = await _turn(encode, lm, second, rate, 2)
        end = await _state(lm)
        await lm.close()
        return [out1, out2, end]
    return run(go())


def test_the_process_answers_a_conversation_as_the_worker_thread_does(process_models, e2e_env):
    """Two turns in one session: the same words and codes, frame for frame, as the thread-mode stage (the shipped
    sampling is deterministic), and the stage in the server is the forwarding one."""
    from voice import pipelines
    from voice.e2e.speechlm_process import RemoteSpeechLMStage

    assert isinstance(_stages(process_models)[1], RemoteSpeechLMStage)
    here = _conversation(pipelines.ModelCache(), None)
    there = _conversation(process_models, None)
    for a, b in zip(here[:2], there[:2]):
        _same(a, b)
        assert isinstance(b[-1], TurnEnd) and _said(b)[0]
    assert here[2] == there[2] and there[2]["context_steps"] > 100
    # the child reports the CPU it used (two turns of answers: well above nothing) for the server's load monitor
    (cpu_s,) = process_models.process_cpu().values()
    assert cpu_s > 0.5, cpu_s


@pytest.mark.parametrize("interrupt,played_s", [("reset", 0.1), ("reset", None), ("retract", None)])
def test_an_interrupt_or_a_retract_leaves_the_same_context_as_on_the_worker_thread(process_models, e2e_env,
                                                                                   interrupt, played_s):
    """Turn 1's answer is cut after its third chunk; the next turn's answer shows what the context kept: the
    played 0.1 s (5 frames) of it, every frame made (played unknown), or nothing of turn 1 (retract). The child
    made more of the answer than the server read before the cut: it must keep no more than the worker thread."""
    from voice import pipelines

    here = _conversation(pipelines.ModelCache(), interrupt, played_s)
    there = _conversation(process_models, interrupt, played_s)
    _same(here[0], there[0])
    a, b = here[2]["last_cut"], there[2]["last_cut"]
    if played_s is None and interrupt == "reset":
        # "every frame made": the child made more than the server read before the cut reached it
        assert a is None and b is None and there[2]["context_steps"] >= here[2]["context_steps"]
        return
    _same(here[1], there[1])                                    # the same next answer...
    assert here[2]["context_steps"] == there[2]["context_steps"]          # ... and context
    if interrupt == "reset":      # (the child may have made a step more than the server read before the cut)
        assert (a.turn, a.start, a.frames_kept, a.length_after) == (b.turn, b.start, 5, b.length_after)


def test_a_new_conversation_answers_the_next_turn_as_a_sessions_first(process_models, e2e_env):
    """After `new_conversation` (the client's "New conversation") turn 2 is answered word for word and code for
    code as the first turn of a fresh session, and leaves the same context: nothing of turn 1 stays, in either
    mode."""
    from voice import pipelines

    second, rate = read_wav(SPEECH_DIR / "ps_cards_004.wav")

    async def alone(models):
        encode, lm = _stages(models)
        lm.bind(_Played(None))
        await lm.start()
        out = await _turn(encode, lm, second, rate, 2)
        end = await _state(lm)
        await lm.close()
        return [out, end]

    for models in (pipelines.ModelCache(), process_models):
        after = _conversation(models, "new_conversation")
        first = run(alone(models))
        _same(after[1], first[0])
        assert after[2]["context_steps"] == first[1]["context_steps"] > 50
        kept = _conversation(models, None)            # without it, turn 1 is in the context
        assert kept[2]["context_steps"] > after[2]["context_steps"] + 50


def test_sessions_close_and_free_their_conversations(process_models, e2e_env, monkeypatch):
    """More sessions than the generator's slots, one after another: each close frees its slot in the child."""
    pcm, rate = read_wav(SPEECH_DIR / "sb_example2_culprit.wav")

    async def one(turn: int):
        encode, lm = _stages(process_models, {**OPTIONS, "max_answer_s": 0.3})
        out = await _turn(encode, lm, pcm[: rate], rate, turn)
        await lm.close()
        return out
    service = _stages(process_models)[1].service
    for i in range(service.max_sessions + 2):
        out = run(one(i + 1))
        assert not [f for f in out if f.kind == "ErrorFrame"] and isinstance(out[-1], TurnEnd)


def test_a_dead_process_ends_its_sessions_and_the_next_session_gets_a_new_one(tiny_lm, e2e_env):
    from voice import pipelines

    models = pipelines.ModelCache({"speechlm_process": True, "torch_threads": 1})
    pcm, rate = read_wav(SPEECH_DIR / "sb_example2_culprit.wav")
    try:
        encode, lm = _stages(models)
        first = lm.service

        async def killed():
            await lm.start()
            first.process.kill()
            first.process.join(10)
            await asyncio.sleep(0.2)        # the pipe's reader sees the end
            with pytest.raises(RuntimeError, match="speech LM process"):
                await _turn(encode, lm, pcm, rate, 1)
            await lm.close()                # no hang, no error
        run(killed())
        assert not first.alive
        encode, lm = _stages(models)
        assert lm.service is not first and lm.service.alive
        out = run(_turn(encode, lm, pcm, rate, 1))
        assert isinstance(out[-1], TurnEnd) and _said(out)[0]
        run(lm.close())
    finally:
        models.close()


def test_a_server_with_the_speech_lm_in_its_own_process_answers_and_is_interrupted(e2e_env):
    """Through a real server (`speechlm_process=True`, as `voice serve`): the first answer is cut by the second
    question (no audio of it after the clear), the second is answered; the server stops its child."""
    from voice.client import VoiceClient

    first, rate = read_wav(SPEECH_DIR / "ps_cards_005.wav")
    second, _ = read_wav(SPEECH_DIR / "ps_cards_004.wav")

    async def talk(srv):
        client = VoiceClient(srv.url, rate, pipeline="e2e", options={"max_answer_s": 8.0})
        await client.connect()
        gap = np.zeros(int(0.9 * rate), np.float32)
        await client.stream(np.concatenate([first, gap, second, gap]))
        await client.wait_for(lambda e: e["type"] == "turn_end" and e["turn"] == 2, 30.0, include_past=True)
        await client.close()
        key = next(k for k in srv.models.loaded() if k.startswith("speechlm-process:"))
        return client, srv.models.get(key, None)

    c, service = serve(talk, pipeline="echo", warmup=False, speechlm_process=True)
    assert_barge_in(c)
    assert [a for a in c.log.audio if a.turn_id == 2]
    assert "".join(e["text"] for e in c.log.of_type("assistant_text") if e["turn"] == 2)
    assert not service.alive and not service.process.is_alive()      # stopped with the server


def test_a_speech_lm_that_cannot_load_is_a_clear_hello_error_and_is_not_started_again(tmp_path, monkeypatch):
    """No model: the server still starts (its warm-up logs why), and each e2e hello gets the child's reason;
    the failed child is not started again for every hello."""
    from voice.client import VoiceClient

    monkeypatch.setenv("VOICE_SPEECHLM", str(tmp_path / "none"))

    async def hellos(srv):
        messages = []
        for _ in range(2):
            client = VoiceClient(srv.url, 16000, "e2e", {})
            with pytest.raises(ConnectionError) as err:
                await client.connect()
            await client.close()
            messages.append(str(err.value))
        key = next(k for k in srv.models.loaded() if k.startswith("speechlm-process:"))
        return messages, srv.models.get(key, None)

    (first, second), service = serve(hellos, pipeline="echo", pipelines=("echo", "e2e"), warmup_all=True,
                                     speechlm_process=True)
    assert f"no speech LM at {tmp_path / 'none'}: train one (docs/speechlm.md)" in first and second == first
    assert not service.alive and not service.ended and not service.process.is_alive()
