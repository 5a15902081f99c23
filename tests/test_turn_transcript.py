"""The words before a pause: Whisper's tail transcript, the text end-of-turn model, its fusion, and the VAD's use of it."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import Future

import numpy as np
import pytest

from voice.frames import SpeechStopped, UserAudio
from voice.stages.vad import VadConfig, VadStage
from voice.turn.transcript import (TextTurnModel, clean_transcript, fit_fusion, logit, sigmoid, tail_audio,
                                   text_features, train_text_model)


def test_clean_transcript_cuts_whispers_loop_and_keeps_real_text():
    assert clean_transcript("What is the capital of France? What") == "What is the capital of France?"
    assert clean_transcript("Repeat after me. Repeat after Me.") == "Repeat after me."
    assert clean_transcript("Add 17 and 20, Add 17,") == "Add 17 and 20"
    assert clean_transcript("at 17 and 20. 17 and 2020") == "at 17 and 20."
    for text in ("set a timer for", "What is the capital of?", "yes", "one one", "", "Count from 1 to 5."):
        assert clean_transcript(text) == text


def test_text_features_name_the_ending_not_the_sentence():
    feats = text_features("What is the capital of?")
    assert {"end:question", "w1:of", "c1:function", "c1end:function|question", "w2:capital of"} <= set(feats)
    assert "c1:filler" in text_features("Set a timer for, um,")
    assert "c1:number" in text_features("What is 20")
    assert "end:ellipsis" in text_features("Tell me the...")
    assert text_features("") == ["empty", "end:none"]


def test_tail_audio_is_the_last_seconds_and_the_silence_heard():
    speech = np.ones(16000 * 5, np.float32)
    tail = tail_audio(speech)
    assert len(tail) == 32000 + 1024 and tail[:32000].all() and not tail[32000:].any()


def _toy_set():
    over = ["What is the capital of France?", "Set a timer for ten minutes.", "How do you spell cat?",
            "What is 12 plus 3?", "yes", "okay", "Tell me a joke."] * 3
    not_over = ["What is the capital of", "Set a timer for", "How do you spell", "What is 12 plus",
                "So, um,", "Repeat after me:", "Tell me a"] * 3
    return over + not_over, [1] * len(over) + [0] * len(not_over)


def test_text_model_learns_endings_and_saves(tmp_path):
    texts, labels = _toy_set()
    model = train_text_model(texts, labels)
    assert model.probability("What is the population of") < 0.5 < model.probability("What is the population of Peru?")
    model.fusion = {"audio": 1.0, "text": 0.5, "bias": 0.0}
    model.save(tmp_path / "text_turn.json")
    again = TextTurnModel.load(tmp_path)
    assert again.weights == model.weights and again.fusion == model.fusion
    assert again.probability("Tell me the capital of") == pytest.approx(model.probability("Tell me the capital of"))
    (tmp_path / "text_turn.json").write_text("{not json")
    with pytest.raises(ValueError):
        TextTurnModel.load(tmp_path)
    (tmp_path / "text_turn.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError):
        TextTurnModel.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        TextTurnModel.load(tmp_path / "missing")


def test_fusion_weighs_the_text_when_the_audio_is_unsure():
    texts, labels = _toy_set()
    model = train_text_model(texts, labels)
    rng = np.random.default_rng(0)
    p_audio = [float(np.clip(0.5 + rng.normal(0, 0.15), 0.01, 0.99)) for _ in labels]   # audio: a coin toss
    model.fusion = fit_fusion(model, p_audio, texts, labels)
    assert model.fusion["text"] > 0.5 and abs(model.fusion["audio"]) < model.fusion["text"]
    assert model.fuse(0.6, "What is the capital of") < 0.5 < model.fuse(0.6, "What is the capital of Chad?")
    assert model.fuse(0.37, None) == 0.37        # no transcript: the audio alone
    assert sigmoid(logit(0.3)) == pytest.approx(0.3)


class TextDetector:
    """Audio says 0.9 (over) always; the transcript future completes when the test says so; the
    fused P is 0.1 when the words end on "of", else the audio's."""

    threshold = 0.5
    audio_threshold = 0.5
    context_samples = 16000 * 3
    text_model = "words"

    def __init__(self, text: str = "what is the capital of", fail: bool = False) -> None:
        self.text, self.fail = text, fail
        self.futures: list[Future] = []
        self.calls: list[str | None] = []
        self.release = threading.Event()

    def start_transcript(self, speech):
        fut: Future = Future()
        self.futures.append(fut)

        def finish():
            self.release.wait(5)
            if not fut.set_running_or_notify_cancel():   # the VAD dropped it (the turn ended)
                return
            if self.fail:
                fut.set_exception(RuntimeError("whisper broke"))
            else:
                fut.set_result(self.text)
        threading.Thread(target=finish, daemon=True).start()
        return fut

    def probability(self, audio, text=None):
        self.calls.append(text)
        return 0.1 if text is not None and text.endswith("of") else 0.9


def _run(detector, config: VadConfig, pcm: np.ndarray, release_at_s: float | None):
    async def go():
        vad = VadStage(16000, config, turn_detector=detector)
        stops = []
        for i in range(0, len(pcm), 320):
            if release_at_s is not None and i / 16000 >= release_at_s:
                detector.release.set()
                await asyncio.sleep(0.05)     # the transcript's thread finishes
            async for f in vad.process(UserAudio(pcm=pcm[i:i + 320], sample_rate_hz=16000, stream_s=i / 16000)):
                if isinstance(f, SpeechStopped) and not f.speculative:
                    stops.append((f, (i + 320) / 16000))
        return stops
    return asyncio.run(go())


def _speech(silence_s: float = 2.0):
    from test_turn import _speech_then_silence

    return _speech_then_silence(silence_s=silence_s)


def test_vad_waits_for_the_transcript_and_the_words_keep_the_turn_open():
    pcm, speech_end_s = _speech()
    detector = TextDetector()
    cfg = VadConfig(turn_speculate_threshold=0, turn_late_ms=0, turn_max_silence_ms=1500.0, turn_text=1)
    # the transcript is ready 100 ms into the pause: the first check (200 ms) fuses it and says "not over"
    stops = _run(detector, cfg, pcm, release_at_s=speech_end_s + 0.1)
    assert detector.futures, "no transcript was started at the pause"
    assert stops and stops[-1][0].reason == "max_silence"
    assert detector.calls and all(c == "what is the capital of" for c in detector.calls)


def test_vad_decides_by_audio_alone_when_the_transcript_is_late():
    pcm, speech_end_s = _speech()
    detector = TextDetector()
    cfg = VadConfig(turn_speculate_threshold=0, turn_late_ms=0, turn_text_wait_ms=100.0, turn_text=1)
    stops = _run(detector, cfg, pcm, release_at_s=None)      # never ready
    last, detected_s = stops[-1]
    assert last.reason == "model" and detector.calls == [None]
    # waited for it from the first check (200 ms) for at most turn_text_wait_ms (and a window)
    assert 0.3 <= detected_s - last.stream_s <= 0.3 + 0.032 + 0.02 + 1e-6
    detector.release.set()


def test_turn_text_0_decides_by_audio_alone_with_its_own_threshold():
    pcm, speech_end_s = _speech()
    detector = TextDetector()
    detector.threshold, detector.audio_threshold = 0.8, 0.95    # fused 0.8; the audio's 0.9 is below 0.95
    cfg = VadConfig(turn_speculate_threshold=0, turn_late_ms=0, turn_text=0)
    stops = _run(detector, cfg, pcm, release_at_s=speech_end_s)
    assert not detector.futures and all(c is None for c in detector.calls)
    assert stops[-1][0].reason == "max_silence"
    with pytest.raises(ValueError):
        VadConfig.from_options({"turn_text": 0.5})


def test_vad_survives_a_failing_transcript():
    pcm, speech_end_s = _speech()
    detector = TextDetector(fail=True)
    stops = _run(detector, VadConfig(turn_speculate_threshold=0, turn_late_ms=0, turn_text=1), pcm,
                 release_at_s=speech_end_s + 0.05)
    assert stops[-1][0].reason == "model" and detector.calls[-1] is None


def test_whisper_transcribes_the_last_words(tmp_path):
    """The real model on real speech: the tail of a recording comes back as words, quickly enough to be
    ready before the first decision (200 ms into the pause) on an idle core."""
    pytest.importorskip("ctranslate2")
    from conftest import SPEECH_DIR
    from voice.audio import read_wav, resample
    from voice.speechlm.whisper_ear import WhisperEar
    from voice.turn.transcript import transcribe_tail

    path = SPEECH_DIR / "lh_librispeech_2412-153948-0000.wav"
    if not path.exists():
        pytest.skip("no recording")
    pcm, rate = read_wav(path)
    pcm = resample(pcm, rate, 16000)
    ear = WhisperEar(threads=1)
    text = transcribe_tail(ear, pcm[: 16000 * 3])   # "If the reader will excuse me, I will say nothing ..."
    assert text and any(w in text.lower() for w in ("reader", "excuse", "say"))
    assert transcribe_tail(ear, np.zeros(1000, np.float32)) == ""


def test_shipped_text_model_loads_and_is_off_by_default():
    import json as _json

    from voice.turn.model import SHIPPED_DIR
    from voice.turn.transcript import TEXT_WEIGHTS

    model = TextTurnModel.load(SHIPPED_DIR)
    assert model.fusion["text"] > 0 and len(model.weights) > 100
    assert model.probability("what is the capital of") < model.probability("what is the capital of France?")
    assert TEXT_WEIGHTS in _json.loads((SHIPPED_DIR / "thresholds.json").read_text())
    assert VadConfig().turn_text == 0.0      # measured, not the default (docs/turn-taking.md)
