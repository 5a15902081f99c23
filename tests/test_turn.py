"""Turn-taking: pause points, the end-of-turn model's plumbing, and how the VAD head decides with it."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import numpy as np
import pytest

from voice.frames import SpeechStopped, TurnConfirmed, UserAudio
from voice.stages.vad import VadConfig, VadStage
from voice.turn.data import TurnBuildConfig, trim_silence, with_extra_voices
from voice.turn.model import Detector, DecisionModel, TurnConfig, fit_context
from voice.turn.pauses import choose_pause, number_words, pause_points
from voice.turn.train import TurnPolicy


def test_number_words():
    assert number_words(0) == ["zero"]
    assert number_words(21) == ["twenty", "one"]
    assert number_words(100) == ["one", "hundred"]
    assert number_words(123) == ["one", "hundred", "and", "twenty", "three"]
    with pytest.raises(ValueError):
        number_words(1000)


def test_pause_points_find_colon_function_word_and_number():
    points = pause_points("Repeat after me: I would like 23 cups.")
    kinds = {p.kind for p in points}
    assert {"colon", "function", "word", "number"} <= kinds
    colon = next(p for p in points if p.kind == "colon")
    assert (colon.prefix, colon.rest) == ("Repeat after me", "I would like 23 cups.")
    number = next(p for p in points if p.kind == "number")
    assert (number.prefix, number.rest) == ("Repeat after me: I would like twenty", "three cups.")
    for p in points:   # the words come back whole, in order
        if p.kind in ("function", "word"):
            assert f"{p.prefix} {p.rest}" == "Repeat after me: I would like 23 cups."


def test_choose_pause_is_seeded_and_skips_one_word_turns():
    assert choose_pause("Pardon?", random.Random(0)) is None
    a = [choose_pause("How much is 10 times 12?", random.Random(s)) for s in range(20)]
    b = [choose_pause("How much is 10 times 12?", random.Random(s)) for s in range(20)]
    assert a == b
    assert any(written.endswith(",") for _, written in a) and any(not written.endswith(",") for _, written in a)


def test_trim_silence_cuts_the_synthesizer_padding():
    rate = 16000
    tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(rate // 2) / rate).astype(np.float32)
    padded = np.concatenate([np.zeros(rate // 4, np.float32), tone, np.zeros(rate, np.float32)])
    trimmed = trim_silence(padded)
    assert abs(len(trimmed) - len(tone)) <= 0.05 * rate
    assert len(trim_silence(np.zeros(rate, np.float32))) == 0


def test_extra_voices_say_each_train_question_once_more_and_leave_the_held_out_splits_alone():
    rows = [{"id": f"d{i}", "split": split, "voice": "flite:kal", "speaker": "kal", "text": f"question {i}"}
            for i, split in enumerate(["train", "train", "train", "validation", "test"])]
    voices = ("espeak:en-us-nyc+m5", "festival:ked_diphone")
    out = with_extra_voices(rows, voices)
    assert out[:5] == rows
    copies = out[5:]
    assert [c["id"] for c in copies] == ["d0~x0", "d1~x1", "d2~x0"]
    assert [c["voice"] for c in copies] == [voices[0], voices[1], voices[0]]
    assert [c["speaker"] for c in copies] == ["espeak/en-us-nyc+m5", "ked", "espeak/en-us-nyc+m5"]
    assert all(c["split"] == "train" and c["text"] == r["text"] for c, r in zip(copies, rows))
    assert with_extra_voices(rows, ()) == rows
    with pytest.raises(ValueError, match="not an extra voice"):
        with_extra_voices(rows, ("flite:rms",))       # a test voice is never an extra one
    assert "extra_voices" not in TurnBuildConfig(corpus="c").identity()    # older sets stay valid
    assert TurnBuildConfig(corpus="c", extra_voices=voices).identity()["extra_voices"] == list(voices)


def test_model_save_load_and_corrupt_file(tmp_path):
    torch = pytest.importorskip("torch")
    model = DecisionModel(TurnConfig(channels=16, hidden=16, gru_layers=1, context_s=1.0)).eval()
    x = torch.randn(2, 16000) * 0.1
    model.save(tmp_path / "m", {"threshold": 0.4})
    again, extra = DecisionModel.load(tmp_path / "m")
    assert extra["threshold"] == 0.4
    with torch.inference_mode():
        assert torch.allclose(model(x), again(x))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "turn.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a turn-taking model"):
        DecisionModel.load(tmp_path / "bad")
    with pytest.raises(FileNotFoundError):
        DecisionModel.load(tmp_path / "none")


def test_whisper_front_end_saves_loads_and_batches(tmp_path):
    """The `whisper` front end: the encoder's rows of a batch equal one window at a time; the trained
    head round-trips through save/load; an unknown front end is refused."""
    torch = pytest.importorskip("torch")
    from conftest import SPEECH_DIR
    from voice.audio import read_wav, resample

    files = sorted(SPEECH_DIR.glob("*.wav"))
    if not files:
        pytest.skip("no recordings")
    pcm, rate = read_wav(files[0])
    pcm = resample(pcm, rate, 16000)[:16000]
    x = torch.from_numpy(np.stack([pcm, 0.3 * pcm[::-1].copy()]))
    model = DecisionModel(TurnConfig(channels=16, hidden=16, gru_layers=1, context_s=1.0, frontend="whisper")).eval()
    batch = model.whisper_features(x)
    assert batch.shape == (2, 50, 384)
    for i in range(2):
        assert torch.allclose(batch[i], model.whisper_features(x[i: i + 1])[0], atol=1e-3)
    model.save(tmp_path / "m")
    again, _ = DecisionModel.load(tmp_path / "m")
    assert again.config.frontend == "whisper"
    with torch.inference_mode():
        assert torch.allclose(model(x), again(x), atol=1e-5)
    with pytest.raises(ValueError, match="front end"):
        TurnConfig(frontend="hubert")


def test_fit_context_pads_and_crops():
    assert fit_context(np.ones(3, np.float32), 5).tolist() == [0, 0, 1, 1, 1]
    assert fit_context(np.arange(8, dtype=np.float32), 3).tolist() == [5, 6, 7]


def test_policy_check_times():
    policy = TurnPolicy(pause_ms=200, recheck_ms=100, max_silence_ms=600)
    assert policy.check_times_s() == [0.2, 0.3, 0.4, 0.5]
    assert policy.check_times_s(0.35) == [0.2, 0.3]


@pytest.mark.parametrize("options, message", [
    ({"turn_detection": "psychic"}, "turn_detection must be one of"),
    ({"turn_pause_ms": -1}, "finite non-negative"),
    ({"turn_max_silence_ms": 20_000}, "at most"),
    ({"turn_pause_ms": 900, "turn_max_silence_ms": 500}, "at least turn_pause_ms"),
])
def test_bad_turn_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        VadConfig.from_options(options)


def test_turn_options_parse():
    cfg = VadConfig.from_options({"turn_detection": "silence", "turn_pause_ms": 250})
    assert (cfg.turn_detection, cfg.turn_pause_ms, cfg.end_wait_ms) == ("silence", 250.0, 500.0)
    assert VadConfig().turn_detection == "model" and VadConfig().end_wait_ms == 1500.0


class FixedDetector:
    """Says the same P(over) every time and remembers what it heard."""

    threshold = 0.5
    context_samples = 16000 * 4

    def __init__(self, p: float) -> None:
        self.p = p
        self.heard: list[int] = []

    def probability(self, audio: np.ndarray) -> float:
        self.heard.append(len(audio))
        return self.p


def _speech_then_silence(speech_s: float = 1.0, silence_s: float = 2.5, rate: int = 16000) -> np.ndarray:
    """Voiced-like audio Silero calls speech (a real recording), then digital silence."""
    from conftest import SPEECH_DIR
    from voice.audio import read_wav, resample

    files = sorted(SPEECH_DIR.glob("*.wav"))
    if not files:
        pytest.skip("no recordings")
    pcm, r = read_wav(files[0])
    pcm = resample(pcm, r, rate)
    lead = np.zeros(rate // 2, np.float32)
    return np.concatenate([lead, pcm, np.zeros(int(silence_s * rate), np.float32)]), 0.5 + len(pcm) / rate


def _stops(config: VadConfig, detector, pcm: np.ndarray) -> list[SpeechStopped | TurnConfirmed]:
    """The decided ends of turns (a speculative start's `SpeechStopped` is not one: its `TurnConfirmed` is)."""
    async def go():
        vad = VadStage(16000, config, turn_detector=detector)
        out = []
        for i in range(0, len(pcm), 320):
            async for f in vad.process(UserAudio(pcm=pcm[i:i + 320], sample_rate_hz=16000, stream_s=i / 16000)):
                if isinstance(f, TurnConfirmed) or (isinstance(f, SpeechStopped) and not f.speculative):
                    out.append((f, (i + 320) / 16000))
        return out
    return asyncio.run(go())


def test_model_says_over_at_the_first_pause_check():
    pcm, _ = _speech_then_silence()
    detector = FixedDetector(0.9)
    stops = _stops(VadConfig(end_silence_ms=2000.0), detector, pcm)
    assert stops, "the turn never ended"
    last, detected_s = stops[-1]
    assert last.reason == "model" and last.end_probability == 0.9
    # decided at the first check: turn_pause_ms (200) of silence, within one 32 ms window and a chunk
    assert 0.2 <= detected_s - last.stream_s <= 0.2 + 0.032 + 0.02 + 1e-6
    assert detector.heard and all(n <= detector.context_samples for n in detector.heard)


def test_model_says_not_over_and_the_long_silence_ends_the_turn():
    pcm, _ = _speech_then_silence(silence_s=3.0)
    detector = FixedDetector(0.1)
    stops = _stops(VadConfig(turn_max_silence_ms=1200.0), detector, pcm)
    last, detected_s = stops[-1]
    assert last.reason == "max_silence" and last.end_probability is None
    assert 1.2 <= detected_s - last.stream_s <= 1.2 + 0.032 + 0.02 + 1e-6
    # asked at 200 ms of silence and every 96 ms after, until the fallback
    assert 9 <= len(detector.heard) <= 12


def test_a_late_threshold_ends_an_unsure_turn_before_the_long_silence():
    """P(over) 0.6 never reaches the model's 0.9 (the fallback ends the turn); with turn_late_ms 600 and
    turn_late_threshold 0.5 the first check at or after 600 ms of silence ends it, by the model."""
    pcm, _ = _speech_then_silence(silence_s=3.0)
    unsure = FixedDetector(0.6)
    unsure.threshold = 0.9
    last, detected_s = _stops(VadConfig(turn_max_silence_ms=1500.0, turn_speculate_threshold=0, turn_late_ms=0),
                          unsure, pcm)[-1]
    assert last.reason == "max_silence"
    late = FixedDetector(0.6)
    late.threshold = 0.9
    last, detected_s = _stops(VadConfig(turn_max_silence_ms=1500.0, turn_late_ms=600.0, turn_late_threshold=0.5,
                                        turn_speculate_threshold=0),
                              late, pcm)[-1]
    assert last.reason == "model" and last.end_probability == 0.6
    # checks at 200, 296, 392, 488, 584, 680 ms of silence: the first at or after 600 decides
    assert 0.6 <= detected_s - last.stream_s <= 0.68 + 0.032 + 0.02 + 1e-6
    with pytest.raises(ValueError, match="at most"):
        VadConfig.from_options({"turn_late_threshold": 2})


def test_policy_late_threshold_in_the_offline_evaluation():
    from voice.turn.train import NOT_OVER, OVER, summarize

    record = {"voice": "v", "kind": "filler"}
    times = [0.2, 0.4, 0.6, 0.8]
    rows = [(record, "full", OVER, times), (record, "prefix", NOT_OVER, times[:2])]
    probs = {0: [0.1, 0.1, 0.6, 0.6], 1: [0.6, 0.6]}
    policy = TurnPolicy(threshold=0.9, late_ms=600, late_threshold=0.5)
    assert [policy.threshold_at(t) for t in times] == [0.9, 0.9, 0.5, 0.5]
    late = summarize(rows, probs, policy)["all"]
    off = summarize(rows, probs, TurnPolicy(threshold=0.9))["all"]
    assert (off["end_silence_p50_ms"], late["end_silence_p50_ms"]) == (1500.0, 600.0)
    assert off["premature_rate"] == late["premature_rate"] == 0.0   # the pause ended before 600 ms


def test_silence_mode_ignores_the_model():
    pcm, _ = _speech_then_silence()
    detector = FixedDetector(0.9)
    stops = _stops(VadConfig(turn_detection="silence", end_silence_ms=500.0), detector, pcm)
    last, detected_s = stops[-1]
    assert last.reason == "silence" and not detector.heard
    assert 0.5 <= detected_s - last.stream_s <= 0.5 + 0.032 + 0.02 + 1e-6


def test_a_missing_model_falls_back_to_silence(monkeypatch):
    import voice.stages.vad as vad

    monkeypatch.setattr(vad, "load_turn_detector", lambda: None)
    stage = VadStage(16000, VadConfig())
    assert stage.config.turn_detection == "silence" and stage.turn_detector is None


def test_detector_probability_on_any_length():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    det = Detector(DecisionModel(TurnConfig(channels=16, hidden=16, gru_layers=1, context_s=1.0)).eval())
    for n in (0, 100, 16000, 50000):
        p = det.probability(np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1)
        assert 0.0 <= p <= 1.0


class AnsweringContext:
    """The assistant is speaking; interruptions are recorded with the VAD's stream time."""

    def __init__(self) -> None:
        self.vad = None
        self.interrupts: list[float] = []

    def assistant_active(self) -> bool:
        return True

    async def interrupt(self, reason: str) -> None:
        assert reason == "barge_in"
        self.interrupts.append(self.vad.stream_s)


def _barge(config: VadConfig, detector, pcm: np.ndarray) -> tuple[list[float], list]:
    ctx = AnsweringContext()
    vad = VadStage(16000, config, turn_detector=FixedDetector(0.9), barge_in_detector=detector)
    vad.bind(ctx)
    ctx.vad = vad

    async def go():
        out = []
        for i in range(0, len(pcm), 320):
            async for f in vad.process(UserAudio(pcm=pcm[i:i + 320], sample_rate_hz=16000, stream_s=i / 16000)):
                out.append(f)
        return out
    return ctx.interrupts, asyncio.run(go())


def test_barge_in_model_says_yes_at_its_first_check():
    from voice.frames import SpeechStarted

    pcm, _ = _speech_then_silence()
    detector = FixedDetector(0.9)
    interrupts, frames = _barge(VadConfig(), detector, pcm)
    started = next(f for f in frames if isinstance(f, SpeechStarted))
    assert len(interrupts) == 1
    # at the first 32 ms window that ends barge_in_check_ms (160) or more after the speech's onset
    assert 0.16 - 1e-6 <= interrupts[0] - started.stream_s <= 0.16 + 0.032 + 1e-6, (interrupts, started.stream_s)
    assert len(detector.heard) == 1


def test_barge_in_model_says_no_until_the_speech_is_too_long_to_be_a_backchannel():
    pcm, _ = _speech_then_silence()
    detector = FixedDetector(0.1)
    interrupts, frames = _barge(VadConfig(barge_in_max_speech_ms=600.0), detector, pcm)
    assert len(interrupts) == 1 and len(detector.heard) >= 3   # asked at every window from 160 ms on
    never, _ = _barge(VadConfig(barge_in_max_speech_ms=10_000.0), FixedDetector(0.1), pcm)
    assert never == []


def test_barge_in_model_is_asked_again_at_its_interval():
    pcm, _ = _speech_then_silence()
    counts = {}
    for every in (32.0, 96.0, 0.0):
        detector = FixedDetector(0.1)
        interrupts, _ = _barge(VadConfig(barge_in_max_speech_ms=600.0, barge_in_recheck_ms=every), detector, pcm)
        assert len(interrupts) == 1          # the longest speech interrupts whatever the model says
        counts[every] = len(detector.heard)
    # from 200 to 600 ms of speech: every window (13 checks), every third (5), once
    assert counts[32.0] >= 12 and 4 <= counts[96.0] <= 5 and counts[0.0] == 1, counts


def test_barge_in_from_the_onset_asks_at_200_ms_of_speech_by_energy():
    from voice.frames import SpeechStarted

    pcm, _ = _speech_then_silence()
    at = {}
    for onset in (0.0, 1.0):
        interrupts, frames = _barge(VadConfig(barge_in_check_ms=200.0, barge_in_from_onset=onset), FixedDetector(0.9), pcm)
        started = next(f for f in frames if isinstance(f, SpeechStarted))
        at[onset] = interrupts[0] - started.stream_s
    # from the onset: the first 32 ms window that ends 200 ms or more after it; never later than by Silero's windows
    assert 0.2 - 1e-6 <= at[1.0] <= 0.2 + 0.032 + 1e-6, at
    assert at[1.0] <= at[0.0] + 1e-6, at
    with pytest.raises(ValueError, match="barge_in_from_onset"):
        VadConfig.from_options({"barge_in_from_onset": 0.5})


def test_the_barge_in_evaluation_reads_each_schedule_from_one_pass():
    from voice.turn.barge_train import check_times, parse_schedules, summarize

    assert check_times(0.5, 0.2, 0.096) == [0.2, 0.296, 0.392, 0.488]
    assert check_times(0.3) == [0.16, 0.192, 0.224, 0.256, 0.288]          # the VAD's default: 160 ms, every window
    assert check_times(0.1, 0.16, 0.032) == [0.16]            # a sound shorter than the first check: asked once
    assert parse_schedules("200:96, 160:32") == [(0.2, 0.096), (0.16, 0.032)]
    for bad in ("200:0", "x:32", "0:32", "2000:32"):
        with pytest.raises(ValueError):
            parse_schedules(bad)
    both = sorted(set(check_times(0.5, 0.2, 0.096)) | set(check_times(0.5, 0.16, 0.032)))
    record = {"voice": "v"}
    # an interruption the model hears from 0.25 s on, a backchannel it takes for one at 0.2 s only
    rows = [(record, "interrupt", both, False, 0.5), (record, "backchannel", both, False, 0.5)]
    probs = {0: [0.95 if t >= 0.25 else 0.1 for t in both], 1: [0.95 if t == 0.2 else 0.1 for t in both]}
    slow = summarize(rows, probs, 0.9, (0.2, 0.096))
    fast = summarize(rows, probs, 0.9, (0.16, 0.032))
    assert slow["kind:interrupt"]["latency_p50_ms"] == 296.0 and slow["kind:backchannel"]["interrupts_rate"] == 1.0
    assert fast["kind:interrupt"]["latency_p50_ms"] == 256.0 and fast["kind:backchannel"]["interrupts_rate"] == 0.0
    assert fast["summary"]["schedule_ms"] == [160.0, 32.0]
    from voice.cli import main
    assert main(["eval", "barge", "--schedules", "0:32"]) == 2        # a clear error, before anything loads


def test_a_missing_barge_in_model_falls_back_to_duration(monkeypatch):
    import voice.stages.vad as vad

    monkeypatch.setattr(vad, "load_barge_in_detector", lambda: None)
    stage = VadStage(16000, VadConfig(), turn_detector=FixedDetector(0.5))
    assert stage.config.barge_in_detection == "duration" and stage.barge_in_detector is None


@pytest.mark.parametrize("condition", ["clean", "telephone_8k", "clipped", "endless_silence"])
def test_the_shipped_models_always_end_a_real_turn(condition):
    """Bad input: 8 kHz telephone audio, clipping, a microphone left open: the turn still ends, by the
    model or at turn_max_silence_ms, never later."""
    from conftest import SPEECH_DIR
    from voice.audio import read_wav, resample
    from voice.stages.vad import load_barge_in_detector, load_turn_detector

    detector = load_turn_detector()
    assert detector is not None and load_barge_in_detector() is not None, "models/turn must ship"
    pcm, rate = read_wav(SPEECH_DIR / "ps_cards_005.wav")
    pcm = resample(pcm, rate, 16000)
    rate = 16000
    if condition == "telephone_8k":
        pcm, rate = resample(pcm, 16000, 8000), 8000
    elif condition == "clipped":
        pcm = np.clip(pcm * 20.0, -1.0, 1.0).astype(np.float32)
    tail_s = 60.0 if condition == "endless_silence" else 2.0
    audio = np.concatenate([np.zeros(rate // 2, np.float32), pcm, np.zeros(int(tail_s * rate), np.float32)])

    async def go():
        vad = VadStage(rate, VadConfig(), turn_detector=detector)
        out = []
        step = rate // 50
        for i in range(0, len(audio), step):
            async for f in vad.process(UserAudio(pcm=audio[i:i + step], sample_rate_hz=rate, stream_s=i / rate)):
                if isinstance(f, SpeechStopped):
                    out.append((f, (i + step) / rate))
        return out
    stops = asyncio.run(go())
    assert stops, "the turn never ended"
    last, detected_s = stops[-1]
    assert last.reason in ("model", "max_silence")
    assert detected_s - last.stream_s <= VadConfig().turn_max_silence_ms / 1000 + 0.032 + 0.02 + 1e-6
    assert len(stops) <= 3    # ended, and not split into many turns by the open microphone


def test_the_offline_evaluation_replays_the_early_speculation_check():
    """`speculate_ms`: one more check before the first decision that only starts answers, never ends a turn."""
    from voice.turn.train import NOT_OVER, OVER, summarize

    policy = TurnPolicy(threshold=0.8, speculate=0.3, speculate_ms=96.0)
    times = policy.check_times_s(0.4)
    assert times == [0.096, 0.2, 0.296, 0.392]
    assert TurnPolicy(threshold=0.8, speculate_ms=96.0).check_times_s(0.05) == []   # a pause shorter than the check
    record = {"voice": "v", "kind": "filler"}
    rows = [(record, "full", OVER, times), (record, "prefix", NOT_OVER, times), (record, "prefix", NOT_OVER, times)]
    probs = {0: [0.95, 0.5, 0.9, 0.9],    # over: started at 96 ms (not ended there), decided at 296
             1: [0.95, 0.1, 0.1, 0.1],    # a pause rated over at 96 ms only: started, taken back, not premature
             2: [0.1, 0.1, 0.1, 0.1]}
    r = summarize(rows, probs, policy)["all"]
    assert (r["start_p50_ms"], r["end_silence_p50_ms"]) == (96.0, 296.0)
    assert r["premature_rate"] == 0.0 and r["taken_back_rate"] == 0.5
    assert r["accuracy_first_check"] == round(2 / 3, 4)     # the first decision is at 200 ms: 0.5 for the finished turn
    off = summarize(rows, probs, replace(policy, speculate=0.0))["all"]   # no speculation: the early check is not asked
    assert (off["start_p50_ms"], off["taken_back_rate"]) == (296.0, 0.0)
