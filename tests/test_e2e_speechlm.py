"""The `e2e` pipeline with a tiny real speech LM: the stage alone, through a real server, errors, barge-in."""

from __future__ import annotations

import asyncio


import numpy as np
import pytest

from tests.conftest import SPEECH_DIR, assert_barge_in, hello_error, run, serve
from tests.test_e2e_codec_echo import _through, _turn_frames
from conftest import FIXED_RULES
from voice.audio import read_wav
from voice.frames import AssistantAudio, AssistantText, Codes, ErrorFrame, SpeechStopped, TurnEnd

TEXTS = ["Today is Monday, May 4, 2026. The time is 3:30 PM.", "It is sunny and warm."]


def _save_tiny_speechlm(folder, codec_id: str | None = None, seed: int = 0, max_len: int = 1024,
                        num_codebooks: int | None = None, hearing: dict | None = None) -> None:
    import torch

    from voice.codec.loader import load_codec
    from voice.codec.tokenize import cache_id
    from voice.speechlm.cli import load_tokenizer
    from voice.speechlm.model import SpeechLM, SpeechLMConfig
    from voice.speechlm.text import choose_ids

    codec = load_codec("compact")
    books = codec.codebook_vectors()[:num_codebooks]
    tokenizer = load_tokenizer("smollm2")
    kept = choose_ids(tokenizer, TEXTS, common=400)
    k, n, d = books.shape
    cfg = SpeechLMConfig(text_vocab_size=len(kept), text_token_ids=kept, num_codebooks=k, codebook_size=n, codec_dim=d,
                         codec_id=codec_id or cache_id(codec), hidden_size=48, intermediate_size=96,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max_len, delays=[0] + [1] * (k - 1), text_lead=2, hearing=hearing)
    torch.manual_seed(seed)
    SpeechLM(cfg, codebooks=books).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speechlm")
    _save_tiny_speechlm(folder)
    return folder


@pytest.fixture
def e2e_env(tiny_lm, monkeypatch):
    monkeypatch.setenv("VOICE_SPEECHLM", str(tiny_lm))
    return tiny_lm


def _stages(options: dict | None = None, models=None):
    from voice import pipelines

    return pipelines.get("e2e").build(options or {}, models or pipelines.ModelCache())


def _answer(frames, k: int, max_frames: int) -> str:
    """Checks one answer's frames; returns its text."""
    kinds = [type(f).__name__ for f in frames]
    assert kinds[-2:] == ["AssistantText", "TurnEnd"] and frames[-2].final, kinds
    stopped = kinds.index("SpeechStopped")
    codes = [f for f in frames if isinstance(f, Codes) and f.role == "assistant"]
    # the first chunk: the decoder's lookahead plus one frame (the compact codec's: 2), then steps of 2
    assert codes and codes[0].codes.shape[1] == min(2, sum(c.codes.shape[1] for c in codes))
    assert all(c.codes.shape[1] <= 2 for c in codes[1:])
    assert all(c.codes.shape[0] == k and c.codes.min() >= 0 and c.codes.max() < 1024 for c in codes)
    assert 0 < sum(c.codes.shape[1] for c in codes) <= max_frames
    assert all(kinds.index(type(c).__name__) > stopped for c in codes)
    deltas = [f.text for f in frames if isinstance(f, AssistantText) and not f.final]
    assert deltas and all(deltas)
    return "".join(deltas)


def test_stage_answers_a_turn_and_keeps_the_context_for_a_follow_up(e2e_env):
    encode, lm, decode = _stages({"max_answer_s": 0.5})
    service, k = lm.service, lm.k
    assert lm.hear_frames == 25             # a model without the Whisper ear: pieces of 0.5 s
    first, rate = read_wav(SPEECH_DIR / "sb_example2_culprit.wav")
    out = run(_through([encode, lm], _turn_frames(first, rate, turn=1)))
    assert not [f for f in out if isinstance(f, Codes) and f.role == "user"]      # the user's codes stay inside
    said = _answer(out, k, 25)
    assert said == service.text.decode(service.text.encode(said))
    slot = lm._conv.session.slot
    after_first = service.generator.decoder.lengths[slot]
    second, rate = read_wav(SPEECH_DIR / "ps_cards_004.wav")
    out2 = run(_through([encode, lm], _turn_frames(second, rate, turn=2)))
    _answer(out2, k, 25)
    assert lm._conv.session.slot == slot and service.generator.decoder.lengths[slot] > after_first + 70
    # the answer's codes decode to audio
    played = run(_through([decode], [f for f in out2 if isinstance(f, (Codes, TurnEnd))]))
    assert sum(len(f.pcm) for f in played if hasattr(f, "pcm")) > 0.3 * 16000
    run(lm.close())
    assert len(service.generator.free) == service.max_sessions


def test_the_answers_first_chunk_is_the_fewest_frames_that_decode_to_audio(e2e_env):
    """The decoder lags by its lookahead (the compact codec's: one frame): a first chunk of one frame would
    decode to nothing and playback would wait for the next chunk. The first chunk is lookahead + 1 frames,
    it decodes to one frame of audio, and the chunks after it hold every frame in order."""
    from voice.e2e.speechlm_stage import _Chunks

    encode, lm, decode = _stages()
    codec = lm.service.codec
    assert codec.decoder_delay_samples == codec.hop_length and lm.first_chunk == 2
    first = _Chunks(lm.k, 2, lm.first_chunk)
    frames = np.arange(lm.k * 7).reshape(lm.k, 7)
    got = first.add(frames[:, :1]) + first.add(frames[:, 1:2]) + first.add(frames[:, 2:5]) + first.add(frames[:, 5:])
    got += first.flush()
    assert [c.shape[1] for c in got] == [2, 2, 2, 1]
    assert np.array_equal(np.concatenate(got, 1), frames)
    codes = np.random.default_rng(0).integers(0, 1024, (lm.k, 2))
    out = run(_through([decode], [Codes(turn_id=1, codes=codes, frame_rate_hz=50.0, role="assistant")]))
    audio = [f for f in out if isinstance(f, AssistantAudio)]
    assert len(audio) == 1 and len(audio[0].pcm) == codec.hop_length


def test_a_model_that_hears_through_the_ear_gets_the_turns_audio_with_its_codes(tmp_path, monkeypatch):
    """The stage hands the generator each turn's 16 kHz audio (resampled when the client sends another
    rate) beside its codes; every frame goes into the context by the answer; the next turn starts clean."""
    from voice.speechlm.generate import SpeechGenerator
    from voice.speechlm.whisper_ear import FEATURE_DIM

    _save_tiny_speechlm(tmp_path, hearing={"kind": "ear", "dim": FEATURE_DIM, "chunk": 10, "context": 50})
    monkeypatch.setenv("VOICE_SPEECHLM", str(tmp_path))
    fed = []
    real = SpeechGenerator.feed_user_speech

    def spy(self, session, codes, pcm=None, features=None):
        fed.append((codes.shape[1], None if pcm is None else len(pcm)))
        return real(self, session, codes, pcm=pcm, features=features)

    monkeypatch.setattr(SpeechGenerator, "feed_user_speech", spy)
    encode, lm, _ = _stages({"max_answer_s": 0.3})
    assert lm.reads_ear and lm.hear_frames == 10     # by default the user's frames go in pieces of the ear's chunk
    audio, rate = read_wav(SPEECH_DIR / "ds_LDC93S1.wav")
    assert rate == 16000
    out = run(_through([encode, lm], _turn_frames(audio, rate, turn=1)))
    _answer(out, lm.k, 15)
    frames, samples = sum(f for f, _ in fed), sum(n for _, n in fed)
    assert samples == len(audio) and abs(frames - len(audio) / 320) <= 3, (frames, samples)
    gs, gen = lm._conv.session, lm.service.generator
    assert gs.held is None and gs.ear is None and not gs.user_open    # the turn's frames all went in
    after = gen.decoder.lengths[gs.slot]
    assert after >= 1 + frames
    fed.clear()                             # a second turn at 24 kHz: resampled to 16 kHz for the ear
    from voice.audio import StreamingResampler

    audio24 = StreamingResampler(16000, 24000).process(audio)
    out = run(_through([encode, lm], _turn_frames(audio24, 24000, turn=2)))
    _answer(out, lm.k, 15)
    assert abs(sum(n for _, n in fed) - len(audio)) <= 48
    run(lm.close())


@pytest.mark.parametrize("hear_frames", [2, 25])
def test_the_users_frames_go_to_the_model_in_pieces_and_the_rest_at_the_turns_end(e2e_env, monkeypatch, hear_frames):
    """One call to the shared worker per `hear_frames` frames while the user speaks (not one per codec
    step), every frame in by the answer, and the same context whatever the piece size."""
    from voice.speechlm.generate import SpeechGenerator

    fed = []
    real = SpeechGenerator.feed_user_speech

    def spy(self, session, codes, pcm=None, features=None):
        fed.append(codes.shape[1])
        return real(self, session, codes, pcm=pcm, features=features)

    monkeypatch.setattr(SpeechGenerator, "feed_user_speech", spy)
    encode, lm, _ = _stages({"max_answer_s": 0.3, "hear_frames": hear_frames})
    audio, rate = read_wav(SPEECH_DIR / "sb_example2_culprit.wav")
    frames_in = len(audio) * 50 // rate
    out = run(_through([encode, lm], _turn_frames(audio, rate, turn=1)))
    _answer(out, lm.k, 15)
    assert abs(sum(fed) - frames_in) <= 3, (sum(fed), frames_in)
    assert all(n >= hear_frames for n in fed[:-1]) and fed[-1] <= max(hear_frames, 2) + 1
    assert len(fed) <= frames_in // hear_frames + 2
    run(lm.close())


def test_an_interrupted_answer_stops_at_once_and_the_next_turn_is_answered(e2e_env):
    """Pipeline.interrupt (what a barge-in runs) mid-answer: nothing more of it, the conversation goes on."""
    from voice.runtime.pipeline import Pipeline

    encode, lm, decode = _stages({"max_answer_s": 8.0})   # the tiny model never says END by itself: 400 frames
    pcm, rate = read_wav(SPEECH_DIR / "ps_cards_004.wav")

    async def go():
        pipeline = Pipeline([encode, lm, decode])
        await pipeline.start()
        try:
            for frame in _turn_frames(pcm, rate, turn=1):
                await pipeline.push(frame)
            while not isinstance(await pipeline.output.get(), AssistantAudio):
                pass
            await pipeline.interrupt()
            await lm.service.call(lambda: None)              # the reset's work on the worker is done
            gs = lm._conv.session
            state = (gs.answering, gs.user_open, lm.service.generator.decoder.lengths[gs.slot])
            await asyncio.sleep(0.2)
            late = [pipeline.output.get_nowait() for _ in range(pipeline.output.qsize())]
            for frame in _turn_frames(pcm, rate, turn=2):
                await pipeline.push(frame)
            out = []
            while not out or not isinstance(out[-1], TurnEnd):
                out.append(await pipeline.output.get())
            kept = lm._conv.session is gs and lm.service.generator.decoder.lengths[gs.slot] > state[2] + 78 + 400
            return kept, state, late, out
        finally:
            await pipeline.stop()

    kept, (answering, user_open, length), late, out = run(go())
    assert not answering and not user_open and not late
    assert kept                                # turn 2 and its answer follow turn 1 in the same context
    assert length < 78 + 40 + 400              # context + turn + a full answer: the answer stopped early
    assert lm._conv.session is None and len(lm.service.generator.free) == lm.service.max_sessions   # closed
    audio = [f for f in out if isinstance(f, AssistantAudio)]
    assert all(f.turn_id == 2 for f in out) and sum(len(f.pcm) for f in audio) > 7 * 16000
    assert [f for f in out if isinstance(f, AssistantText) and f.final]


def test_a_full_context_starts_again_from_a_fresh_context_sentence(tmp_path, monkeypatch):
    _save_tiny_speechlm(tmp_path, max_len=200)
    monkeypatch.setenv("VOICE_SPEECHLM", str(tmp_path))
    encode, lm, _ = _stages({"max_answer_s": 0.5})
    lengths = []
    for turn, name in enumerate(["ps_cards_004.wav", "ps_cards_002.wav", "sb_example1_birch_canoe.wav"], 1):
        pcm, rate = read_wav(SPEECH_DIR / name)                    # 78, 98 and 163 frames
        _answer(run(_through([encode, lm], _turn_frames(pcm, rate, turn=turn))), lm.k, 25)
        lengths.append(lm.service.generator.decoder.lengths[lm._conv.session.slot])
    assert all(n <= 200 for n in lengths) and lengths[1] < lengths[0] + 98   # turn 2 began a fresh context
    # turn 3 alone (163 frames) is too long: only its last frames went in, and room for its answer was left
    assert lengths[2] < 31 + 163 - 25
    run(lm.close())


def test_a_long_conversation_forgets_its_oldest_turns_and_keeps_the_last(tmp_path, monkeypatch):
    """When the next turn and an answer would not fit, the oldest turns go (the context kept to about half the
    room) and the conversation goes on in the same session: the last turn stays for a follow-up."""
    _save_tiny_speechlm(tmp_path, max_len=300)
    monkeypatch.setenv("VOICE_SPEECHLM", str(tmp_path))
    encode, lm, _ = _stages({"max_answer_s": 0.5})
    gen = lm.service.generator
    pcm, rate = read_wav(SPEECH_DIR / "ps_cards_004.wav")                       # 78 frames
    splices, splice = [], gen.decoder.splice
    gen.decoder.splice = lambda slot, start, end, x=None: (splices.append((slot, start, end)), splice(slot, start, end, x))
    sessions, lengths, turns = [], [], []
    for turn in (1, 2, 3, 4):
        _answer(run(_through([encode, lm], _turn_frames(pcm, rate, turn=turn))), lm.k, 25)
        gs = lm._conv.session
        sessions.append(gs)
        lengths.append(gen.decoder.lengths[gs.slot])
        turns.append([start for start, _ in gs.turns])
    assert all(s is sessions[0] for s in sessions)                               # never a fresh context
    assert all(n <= 300 for n in lengths)
    # turns 3 and 4 each made the oldest turn go: the context is the context sentence, the last turn and this one
    assert [start for _, start, _ in splices] == [0, 0] and {end for _, _, end in splices} == {turns[1][1]}
    assert turns[1:] == [turns[1]] * 3 and turns[1][0] == turns[0][0] and lengths[1:] == [lengths[1]] * 3
    run(lm.close())
    # a context longer than context_s when a turn starts goes down to half of it, though the model's would hold more
    _save_tiny_speechlm(tmp_path, max_len=1024)
    encode, lm, _ = _stages({"max_answer_s": 0.5, "context_s": 4})
    gen, lengths = lm.service.generator, []
    for turn in (1, 2, 3, 4):
        _answer(run(_through([encode, lm], _turn_frames(pcm, rate, turn=turn))), lm.k, 25)
        lengths.append(gen.decoder.lengths[lm._conv.session.slot])
        assert len(lm._conv.session.turns) == min(turn, 2)
    assert lengths[1:] == [lengths[1]] * 3 and lengths[1] > lm.context_steps == 200
    run(lm.close())


def test_a_model_of_fewer_codebooks_hears_and_speaks_the_first_of_them(tmp_path, monkeypatch):
    _save_tiny_speechlm(tmp_path, num_codebooks=4)       # trained on codes of the 8-codebook codec, K = 4
    monkeypatch.setenv("VOICE_SPEECHLM", str(tmp_path))
    encode, lm, decode = _stages({"max_answer_s": 0.5})
    assert encode.codec.num_codebooks == 8 and lm.k == 4 and decode.codec.num_codebooks == 4
    pcm, rate = read_wav(SPEECH_DIR / "ps_cards_004.wav")
    out = run(_through([encode, lm, decode], _turn_frames(pcm, rate)))
    assert sum(len(f.pcm) for f in out if isinstance(f, AssistantAudio)) >= 0.4 * 16000
    assert isinstance(out[-1], TurnEnd)
    run(lm.close())


def test_a_conversation_beyond_the_generators_slots_gets_a_clear_error(e2e_env, monkeypatch):
    monkeypatch.setenv("VOICE_SPEECHLM_SESSIONS", "1")
    from voice import pipelines

    models = pipelines.ModelCache()
    first, second = _stages({"max_answer_s": 0.2}, models), _stages({"max_answer_s": 0.2}, models)
    pcm, rate = read_wav(SPEECH_DIR / "tf_speech_commands_yes.wav")
    _answer(run(_through(first[:2], _turn_frames(pcm, rate))), first[1].k, 10)
    out = run(_through(second[:2], _turn_frames(pcm, rate)))
    errors = [f for f in out if isinstance(f, ErrorFrame)]
    assert [e.code for e in errors] == ["server_full"] and "at most 1 conversations" in errors[0].message
    assert isinstance(out[-1], TurnEnd) and not any(isinstance(f, Codes) for f in out)
    run(first[1].close())                                   # the first session ends: its slot is free again
    _answer(run(_through(second[:2], _turn_frames(pcm, rate, turn=2))), second[1].k, 10)
    run(second[1].close())


async def _talk(srv, turns: list[np.ndarray], rate: int, options: dict, gap_s: float = 0.9):
    """Speak `turns` to the e2e pipeline of a real server, each followed by `gap_s` of silence, until the last
    turn's `turn_end`; the client, the session's SpeechLMStage and its context length then."""
    from voice.client import VoiceClient
    from voice.e2e.speechlm_stage import SpeechLMStage

    client = VoiceClient(srv.url, rate, pipeline="e2e", options=options)
    await client.connect()
    lm = next(s for s in srv.sessions[client.ready["session_id"]].pipeline.stages if isinstance(s, SpeechLMStage))
    gap = np.zeros(int(gap_s * rate), np.float32)
    await client.stream(np.concatenate([x for pcm in turns for x in (pcm, gap)]))
    await client.wait_for(lambda e: e["type"] == "turn_end" and e["turn"] == len(turns), 30.0, include_past=True)
    length = await lm.service.call(lambda: lm.service.generator.length(lm._conv.session))
    await client.close()
    return client, lm, length


def test_server_answers_a_spoken_turn_with_audio_and_words(e2e_env):
    pcm, rate = read_wav(SPEECH_DIR / "sb_example1_birch_canoe.wav")
    c, _, _ = serve(lambda srv: _talk(srv, [pcm], rate, {"max_answer_s": 1.0}), pipeline="echo", warmup=False)
    assert c.ready["pipeline"] == "e2e" and c.ready["sample_rate"] == 16000 and not c.ready["ignored_options"]
    audio = np.concatenate([a.pcm for a in c.log.audio if a.turn_id == 1])
    assert 0.5 * 16000 <= len(audio) <= 1.2 * 16000 and np.isfinite(audio).all()
    texts = [e for e in c.log.of_type("assistant_text") if e["turn"] == 1]
    assert texts[-1]["final"] and "".join(e["text"] for e in texts)
    end = c.log.of_type("turn_end")[0]
    assert end["turn"] == 1 and end["interrupted"] is False
    assert "speechlm.AssistantText" in end["timings_ms"] and "codec-decode.AssistantAudio" in end["timings_ms"]


def test_serving_starts_without_a_speech_lm_and_the_hello_says_why(tmp_path, monkeypatch):
    from voice.server.app import ServerConfig, VoiceServer

    monkeypatch.setenv("VOICE_SPEECHLM", str(tmp_path / "none"))

    async def go():
        srv = VoiceServer(ServerConfig(port=0, vad_defaults=FIXED_RULES, pipelines=("echo", "e2e"), warmup_all=True))
        await srv.start()              # warming e2e up only logs: the other pipelines are served
        await srv.stop()
    run(go())
    message = hello_error("e2e", {})
    assert "bad_options" in message and f"no speech LM at {tmp_path / 'none'}: train one (docs/speechlm.md)" in message


def test_the_default_model_folder_is_named_in_the_error(monkeypatch):
    from voice.e2e import e2e_pipeline

    monkeypatch.delenv("VOICE_SPEECHLM", raising=False)
    if (e2e_pipeline.ROOT / "models" / "speechlm" / "config.json").exists():
        pytest.skip("a speech LM ships in models/speechlm")
    with pytest.raises(ValueError, match=r"^no speech LM at models/speechlm: train one \(docs/speechlm.md\)$"):
        _stages()


@pytest.mark.parametrize("options,needle", [
    ({"model": "/etc"}, "model is chosen by the server"),
    ({"max_answer_s": 0}, "max_answer_s must be a number of seconds"),
    ({"max_answer_s": "long"}, "max_answer_s must be a number of seconds"),
    ({"step_frames": 0}, "step_frames must be an integer in 1..50"),
    ({"hear_frames": 0}, "hear_frames must be a whole number of frames in 1..50"),
    ({"hear_frames": 2.5}, "hear_frames must be a whole number of frames in 1..50"),
    ({"now": "tomorrow"}, "option now must be an ISO 8601 date-time"),
    ({"context_s": 1}, "context_s must be a number of seconds in 2..40"),
    ({"context_s": "16"}, "context_s must be a number of seconds in 2..40"),
    ({"think": 2}, "think must be 0 or 1"),
    ({"think": 0.5}, "think must be 0 or 1"),
    ({"think": "yes"}, "think must be 0 or 1"),
    ({"think": 1}, "this speech LM does not think in text"),     # the test's tiny model reads no heard text
])
def test_bad_options_are_clear_errors(e2e_env, options, needle):
    message = hello_error("e2e", options)
    assert "bad_options" in message and needle in message


def test_a_model_for_another_codec_is_refused_in_the_hello(tmp_path, monkeypatch):
    _save_tiny_speechlm(tmp_path, codec_id="encodec_24khz-k2")
    monkeypatch.setenv("VOICE_SPEECHLM", str(tmp_path))
    message = hello_error("e2e", {})
    assert "bad_options" in message and "reads codes of 'encodec_24khz-k2'" in message


def test_barge_in_stops_the_answer_keeps_what_was_played_and_the_next_turn_is_answered(e2e_env):
    """The answer (8 s of audio, made much faster than it plays) is cut by speech after about a second: it stops
    everywhere, the speech LM's context keeps its steps up to the last frame the client played (not all it
    made), and the barge-in turn is answered in the same conversation."""
    first, rate = read_wav(SPEECH_DIR / "ps_cards_005.wav")
    second, _ = read_wav(SPEECH_DIR / "ps_cards_004.wav")
    c, lm, length = serve(lambda srv: _talk(srv, [first, second], rate, {"max_answer_s": 8.0}),
                          pipeline="echo", warmup=False)
    clear_t = assert_barge_in(c)
    started = next(t for t, e in c.log.events if e["type"] == "audio_start" and e["turn"] == 1)
    heard = sum(len(a.pcm) for a in c.log.audio if a.turn_id == 1) / 16000 * 50    # frames the client got
    cut, lay = lm.last_cut, lm.service.generator.layout
    assert cut is not None and cut.turn == 1, cut
    # the played frames: about the time from the answer's first audio to the clear, never more than was sent
    assert cut.frames_kept <= min(heard, cut.frames_sent) and abs(cut.frames_kept - (clear_t - started) * 50) <= 10, \
        (cut, heard, clear_t - started)
    assert 20 <= cut.frames_kept < cut.frames_sent - 10
    # the context: the history before the answer, the block up to the last played frame (its last codebook)
    assert cut.length_after == cut.start + lay.text_lead + cut.frames_kept + lay.max_delay + 1 < cut.length_before
    # then <|end_of_turn|>, turn 2 and its answer, in the same conversation
    assert length > cut.length_after + 1 + 40 and [a for a in c.log.audio if a.turn_id == 2]


def test_two_sessions_at_once_each_get_the_answer_they_get_alone(e2e_env):
    """Two conversations on one shared model, their answer steps batched: each answer equals its solo answer."""
    from voice import pipelines

    models = pipelines.ModelCache()
    # equally long (1.5 s), so that both turns end, and both answers run, at the same time
    questions = [(pcm[: int(1.5 * rate)], rate) for pcm, rate in
                 (read_wav(SPEECH_DIR / name) for name in ("sb_example2_culprit.wav", "ps_cards_004.wav"))]

    def codes_of(out):
        return np.concatenate([f.codes for f in out if isinstance(f, Codes) and f.role == "assistant"], 1)

    async def ask(stages, audio, rate):
        return await _through(stages, _turn_frames(audio, rate, turn=1))

    alone = []
    for audio, rate in questions:
        encode, lm, _ = _stages({"max_answer_s": 0.5}, models)
        alone.append(run(ask([encode, lm], audio, rate)))
        run(lm.close())
    assert not np.array_equal(codes_of(alone[0]), codes_of(alone[1])), "the two questions must get different answers"

    conversations = [_stages({"max_answer_s": 0.5}, models)[:2] for _ in questions]
    service = conversations[0][1].service
    assert conversations[1][1].service is service                          # one model, one generator

    batches, step = [], service.generator.step

    def counting_step(sessions):
        batches.append(len(sessions))
        return step(sessions)

    async def both():
        return await asyncio.gather(*(ask(stages, audio, rate) for stages, (audio, rate) in zip(conversations, questions)))

    service.generator.step = counting_step
    service.gather_s = 2.0          # the scheduling, not the machine's speed: a loaded CI's event loop can lag 4 ms
    together = run(both())
    del service.generator.step
    assert max(batches) == 2, "the two answers' steps ran batched"
    for solo, joint in zip(alone, together):
        _answer(joint, service.generator.vocab.num_codebooks, 25)
        np.testing.assert_array_equal(codes_of(joint), codes_of(solo))
    for _, lm in conversations:
        run(lm.close())
    assert len(service.generator.free) == service.max_sessions


def test_the_hellos_now_is_the_context_sentences_clock(e2e_env):
    """`now` (the corpus's clock in the bench) is what the conversation's context sentence says, and is read."""
    from voice.cascade.conversation import clock_text

    seen = []
    encode, lm, _ = _stages({"max_answer_s": 0.2, "now": "2026-05-03T16:33"})
    feed_text = lm.service.generator.feed_text
    lm.service.generator.feed_text = lambda session, marker, ids: (seen.append((marker, ids)), feed_text(session, marker, ids))
    pcm, rate = read_wav(SPEECH_DIR / "sb_example2_culprit.wav")
    run(_through([encode, lm], _turn_frames(pcm, rate)))
    del lm.service.generator.feed_text
    run(lm.close())
    import datetime as dt

    assert seen[0] == ("context", lm.service.text.encode(clock_text(dt.datetime(2026, 5, 3, 16, 33))))
