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


def test_the_generator_reads_what_it_hears_snapped_unless_told_not_to() -> None:
    from tests.test_speechlm import codes, tokenize
    from voice.speechlm.generate import SpeechGenerator

    model = _codes_model(1)
    user = codes(3, 23, 5)
    _spelling_head(model.speller, torch.from_numpy(user[:2])[None])
    model.config.heard_words = ["ab", "ba", "bab"]

    def spelled(snap_heard: bool):
        gen = SpeechGenerator(model, max_sessions=1, tokenize=tokenize, snap_heard=snap_heard)
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
    write_words(tmp_path / "lm", words, 0.4)
    loaded = SpeechLM.from_pretrained(tmp_path / "lm", dtype=torch.float32)
    assert loaded.config.heard_words == words and loaded.config.heard_snap == 0.4
    for name, p in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name].numpy(), p.numpy())
