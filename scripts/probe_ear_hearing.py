"""Probe: how well do the Whisper ear's features hear new voices? A character-CTC head on them.

Reads `voice data ear`'s cache of a corpus's user turns, trains a small CTC recognizer (input
projection, optionally a 2-layer GRU, a character head) on the train split for `--minutes` of wall
time, prints validation CER and WER every 200 steps, then CER and WER per voice on the validation
split (training voices, new phrasings) and on the test split (new voices). Compare with the
codec-code hearing encoder (`voice eval hearing`): docs/speechlm.md, "The Whisper ear".

    .venv/bin/python scripts/probe_ear_hearing.py --minutes 8            # the GRU probe
    .venv/bin/python scripts/probe_ear_hearing.py --head linear --minutes 8
    .venv/bin/python scripts/probe_ear_hearing.py --steps 1000 --chunk 1500 --context 0   # whole turns
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from voice.data.manifest import read_manifest
from voice.speechlm.ear_cache import load_ear_index, load_features
from voice.speechlm.hearing import CHARS, char_ids, ctc_greedy
from voice.speechlm.hearing_train import Utterance, error_rates
from voice.speechlm.whisper_ear import FEATURE_DIM, EarConfig


class Probe(nn.Module):
    def __init__(self, head: str, hidden: int = 256) -> None:
        super().__init__()
        self.inp = nn.Linear(FEATURE_DIM, hidden)
        self.gru = nn.GRU(hidden, hidden, 2, batch_first=True) if head == "gru" else None
        self.out = nn.Linear(hidden, len(CHARS) + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.inp(x))
        if self.gru is not None:
            h = self.gru(h)[0]
        return self.out(h)


def collate(items: list[Utterance]):
    lengths = torch.tensor([len(u.codes) for u in items])
    x = torch.zeros(len(items), int(lengths.max()), FEATURE_DIM)
    for i, u in enumerate(items):
        x[i, : len(u.codes)] = torch.from_numpy(u.codes)
    return x, lengths, [torch.tensor(char_ids(u.text)) for u in items]


def transcribe(model: Probe, items: list[Utterance]) -> list[str]:
    out = []
    with torch.no_grad():
        for i in range(0, len(items), 32):
            x, lengths, _ = collate(items[i:i + 32])
            best = model(x).argmax(-1)
            out += [ctc_greedy(best[j, : int(lengths[j])].tolist()) for j in range(len(lengths))]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", default="data/corpus/v2")
    p.add_argument("--head", default="gru", choices=["gru", "linear"])
    p.add_argument("--chunk", type=int, default=EarConfig.chunk)
    p.add_argument("--context", type=int, default=EarConfig.context)
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: only --minutes)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    corpus = Path(args.corpus)
    index = load_ear_index(corpus, EarConfig(args.chunk, args.context))
    if not index:
        raise SystemExit(f"no ear cache in {corpus}: run `voice data ear --corpus {corpus}` first")
    sets: dict[str, list[Utterance]] = {"train": [], "validation": [], "test": []}
    for r in read_manifest(corpus):
        if r["role"] == "user" and r["id"] in index and r["split"] in sets:
            sets[r["split"]].append(Utterance(load_features(corpus, index[r["id"]]), r["text"], r["voice"]))
    print(json.dumps({k: len(v) for k, v in sets.items()}), flush=True)
    model = Probe(args.head)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    rng, train, step, start = np.random.default_rng(0), sets["train"], 0, time.monotonic()
    while time.monotonic() - start < args.minutes * 60 and not (args.steps and step >= args.steps):
        x, lengths, labels = collate([train[i] for i in rng.choice(len(train), args.batch, replace=False)])
        logp = model(x).log_softmax(-1).transpose(0, 1)
        loss = F.ctc_loss(logp, torch.cat(labels), lengths, torch.tensor([len(y) for y in labels]), zero_infinity=True)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 200 == 0:
            model.eval()
            r = error_rates(sets["validation"], transcribe(model, sets["validation"]))
            model.train()
            print(json.dumps({"step": step, "minutes": round((time.monotonic() - start) / 60, 1),
                              "loss": round(loss.item(), 3), "val_cer": r["cer"], "val_wer": r["wer"]}), flush=True)
    model.eval()
    for split in ("validation", "test"):
        hyps = transcribe(model, sets[split])
        print(split, json.dumps(error_rates(sets[split], hyps)))
        for u, h in list(zip(sets[split], hyps))[:6]:
            print(f"  {u.text!r} -> {h!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
