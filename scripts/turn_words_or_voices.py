"""Are the end-of-turn model's errors on the test split the test voices' or the test phrasings'?

Says the test split's prefixes and whole questions again in six training voices (same text, speed and
pitch; evaluation only, nothing is trained on it) and compares the shipped model's P(over) at its first
check (200 ms of silence, threshold 0.95) with the test voices' own pieces, per voice.

    .venv/bin/python scripts/turn_words_or_voices.py [N_QUESTIONS]   # default 120; data/turns/v2 first
(docs/turn-taking.md, "The words, not the voices").
"""
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from voice.data.voices import Synthesizer, get_voice
from voice.turn.data import load_records, read_piece, trim_silence, SAMPLE_RATE_HZ
from voice.turn.model import DecisionModel
from voice.turn.train import probabilities, silence

turns = Path("data/turns/v2")
limit = int(sys.argv[1]) if len(sys.argv) > 1 else 120
voices = ["espeak:en-us+m3", "espeak:en+f4", "flite:kal16", "flite:slt", "festival:cmu_us_slt_arctic_hts",
          "espeak:en-gb-x-rp+m1"]
recs = [r for r in load_records(turns, "test") if "prefix_wav" in r][:limit]
model, _ = DecisionModel.load("models/turn", "turn.pt")
model.eval()
syn = Synthesizer()
clips, meta = [], []
for i, r in enumerate(recs):
    for piece, text in (("prefix", r["prefix_text"]), ("full", r["text"])):
        clips.append(np.concatenate([read_piece(turns, r[f"{piece}_wav"]), silence(0.2)]))
        meta.append(("test voice", piece, r["voice"], r["kind"]))
        v = voices[i % len(voices)]
        a = syn.synthesize(text, get_voice(v), SAMPLE_RATE_HZ, r["speed"], r["pitch_semitones"])
        a = trim_silence(a.astype(np.float32) / 32768.0)
        clips.append(np.concatenate([a, silence(0.2)]))
        meta.append(("train voice", piece, v, r["kind"]))
ps = probabilities(model, clips)
g = defaultdict(list)
for (who, piece, voice, kind), p in zip(meta, ps):
    wrong = p >= 0.95 if piece == "prefix" else p < 0.95
    g[(who, piece)].append(wrong)
    g[(who, piece, voice)].append(wrong)
for k in sorted(g, key=str):
    print(k, f"n={len(g[k])}", f"wrong at 0.95: {100 * np.mean(g[k]):.1f}%")
