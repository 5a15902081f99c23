"""Diagnostic: the voice on answers it was trained on beside answers it never saw.

The model says N assistant answers of the train split and N of the test split from their text (the t2s task,
`voice.speechlm.evaluate.evaluate_speaking`: nothing heard, nothing to think), drawn at random with a fixed seed;
Whisper tiny.en hears the decoded audio. A voice that says its training answers far better than new ones has
memorised them (more answers are the lever); one that says both badly has not learned to follow the words.
Usage (corpus data/corpus/v2, tokenized):

    .venv/bin/python scripts/speaking_seen_and_new.py models/speechlm 40
"""

import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

from voice.codec.evaluate import load_whisper
from voice.codec.loader import load_codec
from voice.speechlm.cli import load_text_ids
from voice.speechlm.data import load_dialogues
from voice.speechlm.evaluate import evaluate_speaking
from voice.speechlm.generate import Sampling, SpeechGenerator
from voice.speechlm.model import SpeechLM


def main(checkpoint: Path, n: int, threads: int = 1, corpus: Path = Path("data/corpus/v2")) -> dict:
    torch.set_num_threads(threads)
    model = SpeechLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    text = load_text_ids(checkpoint)
    k = model.config.num_codebooks
    codec = load_codec("compact", k)
    gen = SpeechGenerator(model, max_sessions=4, sampling=Sampling(), tokenize=text.encode, think=False)
    whisper = load_whisper()
    out = {}
    for split in ("train", "test"):
        dialogues = load_dialogues(corpus, model.config.codec_id, (split,), k)
        random.Random(0).shuffle(dialogues)
        rows = evaluate_speaking(gen, codec, whisper, dialogues, text, n)
        out[split] = {"n": len(rows), "wer": round(float(np.mean([r["wer"] for r in rows])), 3),
                      "every_word_heard": sum(r["wer"] == 0 for r in rows),
                      "examples": [{"asked": r["text"], "heard": r["heard"].strip()} for r in rows[:4]]}
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]), *(int(a) for a in sys.argv[3:4])), indent=1))
