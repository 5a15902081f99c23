"""Batches of laid-out examples and the training loss (next step's text and codes, where they are targets)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from voice.speechlm.format import Steps
from voice.speechlm.vocab import Vocab


@dataclass
class Batch:
    text: torch.Tensor            # [B, S]
    audio: torch.Tensor           # [B, K, S]
    text_target: torch.Tensor     # [B, S] bool
    audio_target: torch.Tensor    # [B, K, S] bool

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device) for t in (self.text, self.audio, self.text_target, self.audio_target)))


def collate(items: list[Steps], vocab: Vocab) -> Batch:
    """Right-pad to the longest (a causal model needs no mask for padding at the end)."""
    length = max(len(s) for s in items)
    b, k = len(items), vocab.num_codebooks
    text = np.full((b, length), vocab.special("pad"), np.int64)
    audio = np.full((b, k, length), vocab.audio_none, np.int64)
    tt = np.zeros((b, length), bool)
    at = np.zeros((b, k, length), bool)
    for i, s in enumerate(items):
        n = min(len(s), length)
        text[i, :n], audio[i, :, :n] = s.text[:n], s.audio[:, :n]
        tt[i, :n], at[i, :, :n] = s.text_target[:n], s.audio_target[:, :n]
    return Batch(torch.from_numpy(text), torch.from_numpy(audio), torch.from_numpy(tt), torch.from_numpy(at))


@dataclass
class LossParts:
    loss: torch.Tensor
    text_loss: float
    audio_loss: float
    text_acc: float               # next-token accuracy on text targets
    audio_acc: float              # accuracy on audio targets (all codebooks)
    audio_acc_first: float        # accuracy on codebook 0 targets


def lm_loss(model, batch: Batch, text_weight: float = 1.0) -> LossParts:
    """The training loss of `model` (plain or wrapped in DDP, whose forward must see the whole loss)."""
    return model(batch.text, batch.audio, targets=batch, text_weight=text_weight)


def loss_from_hidden(model, hidden: torch.Tensor, batch: Batch, text_weight: float = 1.0) -> LossParts:
    """Cross-entropy of step s's heads against step s + 1's ids, over target positions only.

    Every head takes part in every loss (times 0 when a batch has no target for it), so that DDP sees
    a gradient for each parameter at each step."""
    hidden = hidden[:, :-1]                                                       # [B, S-1, H]
    mask_text = batch.text_target[:, 1:]
    ty = batch.text[:, 1:][mask_text]
    if ty.numel():
        tl = model.text_head(hidden[mask_text])                                   # [M, V]
        text_loss = F.cross_entropy(tl, ty)
    else:
        tl, text_loss = None, model.text_head(hidden[:, :1]).sum() * 0
    am = batch.audio_target[:, :, 1:]                                             # [B, K, S-1]
    rows = am.any(1)                                                              # steps with any audio target
    if rows.any():
        _, al = model.heads(hidden[rows], text=False)                            # [R, K, N + 1]
        ay = batch.audio[:, :, 1:].permute(0, 2, 1)[rows]                         # [R, K]
        m = am.permute(0, 2, 1)[rows]                                             # [R, K]
        audio_loss = F.cross_entropy(al[m], ay[m])
    else:
        al, audio_loss = None, model.heads(hidden[:, :1], text=False)[1].sum() * 0
    with torch.no_grad():
        text_acc = float((tl.argmax(-1) == ty).float().mean()) if tl is not None else float("nan")
        if al is not None:
            hits = (al.argmax(-1) == ay) & m
            audio_acc = float(hits.sum() / m.sum())
            audio_acc_first = float(hits[:, 0].sum() / m[:, 0].sum().clamp(min=1))
        else:
            audio_acc = audio_acc_first = float("nan")
    loss = text_weight * text_loss + audio_loss
    return LossParts(loss, float(text_loss.detach()), float(audio_loss.detach()), text_acc, audio_acc, audio_acc_first)
