"""Diagnostic: a word-aligned speech LM's audio when its text stream is forced to the reference words.

Tells "the voice cannot say the words" from "the text stream writes the wrong words at the wrong
steps": the model says the test split's first N assistant answers from their text (the t2s task) while
every text-stream step is set to the reference word-aligned text (`voice data align`'s word starts), and
Whisper tiny.en hears the decoded audio. Usage (corpus data/corpus/v2, aligned):

    .venv/bin/python scripts/forced_text_speaking.py runs/lm/t2s_words/checkpoint 80
"""

import json
import sys

import numpy as np
import torch

from voice.codec.evaluate import load_whisper
from voice.codec.loader import load_codec
from voice.speechlm.cli import load_text_ids
from voice.speechlm.data import load_dialogues
from voice.speechlm.evaluate import _heard, _wer, answer_turn
from voice.speechlm.format import StepWriter
from voice.speechlm.generate import Sampling, SpeechGenerator
from voice.speechlm.model import SpeechLM


class ForcedText(SpeechGenerator):
    """A generator whose text stream writes `reference` (block step 1 on), whatever the model says."""

    reference: list[int] = []

    def _advance(self, s, text_logits, audio_logits):
        step = s.answer.step + 1
        if text_logits is not None:
            forced = self.reference[step - 1] if step - 1 < len(self.reference) else self.vocab.special("end_of_text")
            text_logits = torch.full_like(text_logits, -1e9)
            text_logits[forced] = 0.0
        return super()._advance(s, text_logits, audio_logits)


def main(checkpoint: str, n: int, corpus: str = "data/corpus/v2") -> None:
    torch.set_num_threads(1)
    model = SpeechLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    if model.config.text_align != "words":
        raise SystemExit(f"{checkpoint} is not word-aligned")
    text = load_text_ids(checkpoint)
    codec, whisper = load_codec("compact", model.config.num_codebooks), load_whisper()
    dialogues = load_dialogues(corpus, model.config.codec_id, ("test",), model.config.num_codebooks, word_timings=True)
    gen = ForcedText(model, 1, Sampling())
    wers = []
    for turn in [t for d in dialogues for t in d.turns if t.role == "assistant"][:n]:
        gen.reference = StepWriter(gen.vocab, gen.layout, text.encode).aligned_text(turn.text, turn.word_starts,
                                                                                    turn.codes.shape[1])
        s = gen.open()
        gen.feed_text(s, "context", text.encode(""))
        gen.feed_text(s, "speak", text.encode(turn.text))
        words, codes, _ = answer_turn(gen, s)
        gen.close(s)
        _, heard = _heard(codec, whisper, codes)
        wers.append(_wer(turn.text, heard))
        print(f"{turn.text} | {text.decode(words)} | {heard}", flush=True)
    print(json.dumps({"n": len(wers), "wer_forced_text": round(float(np.mean(wers)), 4)}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
