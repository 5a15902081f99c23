"""Heard words snapped to the training words (voice.speechlm.lexicon): the rule, the speller, the generator, the config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.test_speechlm_heard import A, B, SPACE, _codes_model, _spelling_head
from voice.speechlm.hearing import Speller
from voice.speechlm.lexicon import WordSnapper, training_words, write_words


def test_a_word_is_snapped_to_the_nearest_known_word_when_near_enough() -> None:
    snap = WordSnapper(["what", "is", "the", "capital", "of", "cairo", "care", "with"], max_distance=0.5)
    assert snap("capital") == "capital"                 # known
    assert snap("copital") == "capital"                 # 1 edit in 7
    assert snap("witd") == "with"                       # 1 in 4 (what: 3 in 4)
    assert snap("cairp") == "cairo" and snap("cara") == "care"      # the nearest by share of letters
    assert snap("xyzzy") == "xyzzy" and snap("wxyz") == "wxyz"      # nothing near: kept as spelled
    assert snap("17") == "17" and snap("2nd") == "2nd"  # numbers are left alone
    tie = WordSnapper(["bat", "cat"], max_distance=0.5)
    assert tie("hat") == "bat"                          # an exact tie: the more frequent (listed first)
    assert WordSnapper(["cat", "bat"])("hat") == "cat"
    with pytest.raises(ValueError):
        WordSnapper([])


def test_the_speller_snaps_each_word_as_it_completes() -> None:
    labels = [0, A, A, 0, B, SPACE, SPACE, 0, B, 0, B, A, 0]       # "ab", then "bba" at the end
    snap = WordSnapper(["abc", "bb"], max_distance=0.5)
    speller = Speller(snap)
    assert speller.push(labels) == [(5, "abc")]                     # "ab" -> "abc" (1 edit in 3)
    assert speller.finish() == [(13, "bb")]                         # "bba" -> "bb" (1 edit in 3)


def _posteriors(frames: list[dict[str, float]]) -> torch.Tensor:
    """Log-posteriors [T, labels]: each frame's probabilities of some characters ("_": blank), the rest shared."""
    from voice.speechlm.hearing import CHARS

    rows = []
    for frame in frames:
        p = np.full(len(CHARS) + 1, 1e-4)
        for char, prob in frame.items():
            p[0 if char == "_" else CHARS.index(char) + 1] = prob
        rows.append(np.log(p / p.sum()))
    return torch.tensor(np.array(rows), dtype=torch.float32)


def test_a_word_is_snapped_by_the_ctc_posteriors_of_its_frames() -> None:
    words = ["what", "is", "the", "capital", "of", "cat", "cap", "17"]
    snap = WordSnapper(words, by="ctc")
    # best path "cp", nearest by spelling "cap"; but the runners-up ("a", then "t" twice) make "cat" likelier
    frames = _posteriors([{"c": 0.9}, {"_": 0.5, "a": 0.45}, {"p": 0.5, "t": 0.45}, {"_": 0.6, "t": 0.3}])
    assert WordSnapper(words)("cp") == "cap"
    assert snap("cp", frames) == "cat"
    assert snap("17", frames) == "17"                     # numbers are left alone
    assert snap("cp") == "cap"                            # without the frames: by spelling
    # a space before the word: its frames begin with the space the speller saw
    spaced = _posteriors([{" ": 0.9}, {"c": 0.9}, {"_": 0.5, "a": 0.45}, {"p": 0.9}])
    assert snap("cp", spaced, lead_space=True) == "cap"
    # an unknown word the posteriors are sure of is kept; a known word can give way to a likelier known one
    sure = _posteriors([{"x": 0.99}, {"y": 0.99}, {"z": 0.99}, {"w": 0.99}])
    assert snap("xyzw", sure) == "xyzw"
    assert snap("cat", _posteriors([{"c": 0.9}, {"a": 0.9}, {"t": 0.4, "p": 0.55}])) == "cap"
    # too few frames for any known word (and the spelling): by spelling instead
    assert snap("is", _posteriors([{"i": 0.9}])) == "is"
    with pytest.raises(ValueError, match="snap by"):
        WordSnapper(words, by="sound")


def test_the_speller_hands_a_ctc_snapper_each_words_frames_in_any_chunking() -> None:
    from voice.speechlm.hearing import CHARS

    snap = WordSnapper(["cap", "cat", "of", "it"], by="ctc")
    frames = [{"c": 0.9}, {"_": 0.5, "a": 0.45}, {"p": 0.5, "t": 0.45}, {"_": 0.6, "t": 0.3}, {" ": 0.9}, {"_": 0.9},
              {"o": 0.9}, {"f": 0.6, "t": 0.3}, {" ": 0.9}, {"i": 0.8}, {"_": 0.6, "t": 0.35}]
    logprobs = _posteriors(frames)
    labels = logprobs.argmax(-1).tolist()
    assert "".join(CHARS[x - 1] if x else "_" for x in labels) == "c_p_ _of i_"
    whole = Speller(snap)
    words = whole.push(labels, logprobs) + whole.finish()
    assert words == [(4, "cat"), (8, "of"), (11, "it")]            # "cp" and "i" snapped by their frames
    for cut in range(1, len(labels)):                                # frame by frame as the generator pushes
        speller = Speller(snap)
        got = speller.push(labels[:cut], logprobs[:cut]) + speller.push(labels[cut:], logprobs[cut:]) + speller.finish()
        assert got == words, cut
    plain, labels_only = Speller(WordSnapper(["cap", "cat", "of", "it"])), Speller(WordSnapper(["cap", "cat", "of", "it"]))
    assert (plain.push(labels, logprobs) + plain.finish() == labels_only.push(labels) + labels_only.finish()
            == [(4, "cap"), (8, "of"), (11, "it")])                  # by spelling: the nearest words


def test_the_generator_reads_what_it_hears_snapped_unless_told_not_to() -> None:
    from tests.test_speechlm import codes, tokenize
    from voice.speechlm.generate import SpeechGenerator

    model = _codes_model(1)
    user = codes(3, 23, 5)
    _spelling_head(model.speller, torch.from_numpy(user[:2])[None])
    model.config.heard_words = ["ab", "ba", "bab"]

    def spelled(snap_heard: bool, snap_by: str | None = None):
        gen = SpeechGenerator(model, max_sessions=1, tokenize=tokenize, snap_heard=snap_heard, snap_by=snap_by)
        fed: list[int] = []
        embed = gen._embed
        gen._embed = lambda text, audio, user=None: (fed.extend(text), embed(text, audio, user))[1]
        session = gen.open()
        gen.feed_user_speech(session, user)
        gen.close_user_turn(session)
        return gen, session.spelled, fed

    raw_gen, raw, raw_fed = spelled(False)
    gen, snapped, fed = spelled(True)
    assert raw_gen.snap is None and gen.snap is not None
    assert len(raw) >= 2 and snapped == [gen.snap(w) for w in raw]
    assert snapped != raw and (fed != raw_fed)                      # the model reads the snapped words
    assert gen.snap.by == "spelling"                                # the model's own default
    ctc_gen, by_ctc, _ = spelled(True, "ctc")                       # by the posteriors: as over the whole turn at once
    encoder = model.speller
    with torch.no_grad():
        logits = encoder.ctc_logits(encoder(torch.as_tensor(user[: encoder.config.num_codebooks], dtype=torch.long)[None]))[0]
    whole = Speller(ctc_gen.snap)
    expected = whole.push(logits.argmax(-1).tolist(), logits.log_softmax(-1)) + whole.finish()
    assert ctc_gen.snap.by == "ctc" and by_ctc == [w for _, w in expected] and len(by_ctc) == len(raw)
    model.config.heard_words = None
    assert SpeechGenerator(model, max_sessions=1, tokenize=tokenize).snap is None


def test_the_training_words_go_into_a_saved_models_config(tmp_path) -> None:
    from voice.speechlm.model import SpeechLM

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rows = [{"split": "train", "role": "user", "text": "What's the capital of Egypt?"},
            {"split": "train", "role": "user", "text": "What is 2 plus 2?"},
            {"split": "train", "role": "assistant", "text": "Cairo."},
            {"split": "test", "role": "user", "text": "Capital of Peru?"}]
    (corpus / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    words = training_words(corpus)
    assert words[0] == "2"                                          # the most frequent first
    assert set(words) == {"what's", "the", "capital", "of", "egypt", "what", "is", "2", "plus"}   # no test words
    model = _codes_model(2)
    model.save_pretrained(tmp_path / "lm")
    assert SpeechLM.from_pretrained(tmp_path / "lm", dtype=torch.float32).config.heard_snap_by == "spelling"
    write_words(tmp_path / "lm", words, 0.4, "ctc")
    loaded = SpeechLM.from_pretrained(tmp_path / "lm", dtype=torch.float32)
    assert loaded.config.heard_words == words and loaded.config.heard_snap == 0.4 and loaded.config.heard_snap_by == "ctc"
    for name, p in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name].numpy(), p.numpy())
