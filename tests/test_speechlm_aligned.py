"""The word-aligned inner monologue: each word written where its audio starts (format, generator, word timings)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_speechlm import (CHARS, _answer, _frames_of, _overfit, _speak, codes, detokenize, never_ends, tiny_model,
                           tokenize)
from voice.speechlm.format import Example, Layout, Turn, layout_example, read_steps
from voice.speechlm.generate import Sampling, SpeechGenerator
from voice.speechlm.vocab import Vocab

ALIGNED = Layout((0, 1, 1), 2, text_align="words")


def _block(steps, vocab):
    start = list(steps.text).index(vocab.special("assistant_speech"))
    return start, steps.text[start:], steps.text_target[start:], steps.audio[:, start:]


def test_each_word_is_written_where_its_audio_starts() -> None:
    vocab = Vocab(len(CHARS), 3, 16)
    answer = Turn("assistant", "it is 12.", codes(3, 20, 0), word_starts=[1, 6, 12])
    steps = layout_example(Example("t2s", "", [Turn("user", "x"), answer]), vocab, ALIGNED, tokenize)
    start, text, target, audio = _block(steps, vocab)
    pad = vocab.special("pad")
    assert list(text[2:4]) == tokenize("it")                   # word 0 (frame 1) at block step 1 + 1
    assert list(text[7:10]) == tokenize(" is")                 # word 1 (frame 6) at 1 + 6
    assert list(text[13:17]) == tokenize(" 12.")
    assert text[17] == vocab.special("end_of_text")
    assert text[1] == pad and list(text[4:7]) == [pad] * 3
    assert target[1:18].all() and not target[18:].any()       # pads up to the end of the words are targets
    assert audio[0, 1 + 2 + 6] == answer.codes[0, 6]           # frame 6's audio: text_lead steps after " is" begins
    back = read_steps(steps, vocab, ALIGNED, detokenize)
    assert back.turns[1].text == "it is 12."
    np.testing.assert_array_equal(back.turns[1].codes, answer.codes)


def test_a_word_that_starts_before_the_last_one_is_written_follows_it() -> None:
    vocab = Vocab(len(CHARS), 3, 16)
    answer = Turn("assistant", "seven nine", codes(3, 10, 1), word_starts=[0, 2])
    _, text, _, _ = _block(layout_example(Example("t2s", "", [Turn("user", "x"), answer]), vocab, ALIGNED, tokenize), vocab)
    assert list(text[1:11]) == tokenize("seven nine")         # no pad between: " nine" waits for "seven"
    assert text[11] == vocab.special("end_of_text")


def test_an_aligned_answer_without_word_timings_is_refused() -> None:
    vocab = Vocab(len(CHARS), 3, 16)
    with pytest.raises(ValueError, match="voice data align"):
        layout_example(Example("t2s", "", [Turn("user", "x"), Turn("assistant", "a b", codes(3, 5, 0))]), vocab, ALIGNED,
                       tokenize)
    with pytest.raises(ValueError, match="2 words"):
        layout_example(Example("t2s", "", [Turn("user", "x"), Turn("assistant", "a b", codes(3, 5, 0), word_starts=[0])]),
                       vocab, ALIGNED, tokenize)
    with pytest.raises(ValueError, match="text_align"):
        Layout((0, 1, 1), 2, text_align="sideways")


def test_a_tiny_aligned_model_overfits_a_dialogue_and_the_stream_reproduces_it() -> None:
    model = tiny_model(7, text_align="words")
    assert model.config.layout.text_align == "words"
    example = Example("s2s", "it is noon.", [Turn("user", "hi", codes(3, 9, 1)),
                                             Turn("assistant", "hello there.", codes(3, 16, 2), word_starts=[2, 8]),
                                             Turn("user", "bye", codes(3, 5, 3)),
                                             Turn("assistant", "bye now.", codes(3, 9, 4), word_starts=[0, 4])])
    _overfit(model, example, steps=400)
    gen = SpeechGenerator(model, max_sessions=1, sampling=Sampling())
    s = gen.open()
    gen.feed_text(s, "context", tokenize(example.context))
    gen.feed_user_speech(s, example.turns[0].codes)
    words, frames = _answer(gen, s)
    assert detokenize(words) == "hello there."
    np.testing.assert_array_equal(frames, example.turns[1].codes)
    gen.feed_user_speech(s, example.turns[2].codes)            # the follow-up goes on from the same cache
    words, frames = _answer(gen, s)
    assert detokenize(words) == "bye now."
    np.testing.assert_array_equal(frames, example.turns[3].codes)


def test_the_words_of_an_aligned_answer_come_out_while_its_audio_does() -> None:
    """Steps hand out the words where they were trained to be: the second word after the first frames."""
    model = tiny_model(8, text_align="words")
    example = Example("t2s", "", [Turn("user", "say"), Turn("assistant", "ab cd", codes(3, 14, 5), word_starts=[0, 8])])
    _overfit(model, example, steps=400)
    gen = SpeechGenerator(model, max_sessions=1, sampling=Sampling())
    s = gen.open()
    gen.feed_text(s, "context", [])
    gen.feed_text(s, "speak", tokenize("say"))
    outs = _speak(gen, s, 60)
    said_at = [i for i, o in enumerate(outs) for _ in o.text_ids]
    frames_before = [_frames_of(outs[:i]) for i in said_at]
    assert detokenize([t for o in outs for t in o.text_ids]) == "ab cd"
    assert frames_before[0] == 0 and frames_before[2] >= 5      # " cd" (frame 8) comes after frames 0..5 are out


def test_an_aligned_answer_that_never_ends_stops_after_its_words() -> None:
    """Once an aligned model has written <|end_of_text|> its audio ends by frames_after_words frames after it;
    and a model whose audio ended closes its words."""
    model = never_ends(tiny_model(6, text_align="words"))
    gen = SpeechGenerator(model, max_sessions=1, sampling=Sampling(max_text_tokens=3, max_frames=80, frames_after_words=7))
    s = gen.open()
    gen.feed_text(s, "context", tokenize("hi."))
    gen.feed_user_speech(s, codes(3, 5, 2))
    outs = _speak(gen, s, 300)
    assert outs[-1].done and sum(len(o.text_ids) for o in outs) <= 3
    answer = s.answer
    assert answer.text_done and _frames_of(outs) == min(80, answer.text_end - 1 + 7)


@pytest.fixture(scope="module")
def aligner():
    from voice.speechlm.word_align import WordAligner

    return WordAligner(threads=1)


def _real_speech(name: str) -> tuple[np.ndarray, str]:
    import csv

    import soundfile as sf

    from voice.assets import SPEECH_DIR
    from voice.audio import resample

    row = next(r for r in csv.DictReader(open(SPEECH_DIR / "manifest.tsv"), delimiter="\t") if r["file"] == name)
    audio, rate = sf.read(str(SPEECH_DIR / name), dtype="float32")
    return (resample(audio, rate, 16000) if rate != 16000 else audio), row["transcript"]


def test_whisper_finds_when_each_word_starts(aligner) -> None:
    """Real speech: starts increase, end within the audio, and move by 50 frames when 1 s of silence goes first."""
    audio, text = _real_speech("ds_LDC93S1.wav")
    starts, ends = aligner.align(audio, text)
    frames = len(audio) // 320
    assert len(starts) == len(text.split()) == len(ends)
    assert all(a <= b for a, b in zip(starts, starts[1:])) and starts[-1] < frames
    assert starts[-1] - starts[0] > frames // 2                 # spread over the audio, not piled at one end
    later, _ = aligner.align(np.concatenate([np.zeros(16000, np.float32), audio]), text)
    shifts = np.array(later) - np.array(starts)
    assert np.abs(shifts - 50).max() <= 3, shifts


def test_the_word_timing_cache_resumes_and_feeds_the_training_examples(tmp_path, aligner, monkeypatch) -> None:
    import soundfile as sf

    from voice.speechlm import word_align

    corpus = tmp_path / "corpus"
    (corpus / "audio").mkdir(parents=True)
    audio, text = _real_speech("ds_LDC93S1.wav")
    sf.write(str(corpus / "audio" / "a.wav"), audio, 16000)
    rows = [{"id": "a", "split": "train", "role": "assistant", "text": text, "wav": "audio/a.wav"},
            {"id": "u", "split": "train", "role": "user", "text": "hello", "wav": "audio/a.wav"}]
    monkeypatch.setattr("voice.data.manifest.read_manifest", lambda c: rows)
    monkeypatch.setattr(word_align, "WordAligner", lambda threads: aligner)
    first = word_align.cache_word_timings(corpus, progress=False)
    assert first["aligned_now"] == 1 and first["utterances"] == 1       # the assistant's turn only
    assert word_align.cache_word_timings(corpus, progress=False)["aligned_now"] == 0
    with open(word_align.align_dir(corpus) / "index.jsonl", "a") as f:  # a line cut by an interrupted run
        f.write('{"id": "b", "wor')
    timings = word_align.load_word_timings(corpus)
    assert set(timings) == {"a"} and timings["a"]["words"] == text.split()
    assert json.loads((word_align.align_dir(corpus) / "index.jsonl").read_text().splitlines()[0])["starts"][1] > 0
