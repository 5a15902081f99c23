"""Batches of laid-out examples and the training loss (next step's text and codes, where they are targets)."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    user_spans: list[tuple[int, int, int, list[int]]] = field(default_factory=list)   # (row, start, end, text ids)
    user_ear: torch.Tensor | None = None    # [B, S, D]: the Whisper ear's features at user frames, zeros elsewhere

    def to(self, device, non_blocking: bool = False) -> "Batch":
        ear = None if self.user_ear is None else self.user_ear.to(device, non_blocking=non_blocking)
        return Batch(*(t.to(device, non_blocking=non_blocking)
                       for t in (self.text, self.audio, self.text_target, self.audio_target)), self.user_spans, ear)


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
    spans = [(i, a, b, ids) for i, s in enumerate(items) for a, b, ids in s.user_spans if ids and b <= length]
    ear = None
    dims = {f.shape[1] for s in items for _, f in s.user_ear}
    if dims:
        if len(dims) > 1:
            raise ValueError(f"user ear features of different widths in one batch: {sorted(dims)}")
        ear = np.zeros((b, length, dims.pop()), np.float32)
        for i, s in enumerate(items):
            for a, f in s.user_ear:
                ear[i, a:a + len(f)] = f[: length - a]
        ear = torch.from_numpy(ear)
    return Batch(torch.from_numpy(text), torch.from_numpy(audio), torch.from_numpy(tt), torch.from_numpy(at), spans, ear)


@dataclass
class LossParts:
    loss: torch.Tensor
    text_loss: float
    audio_loss: float
    text_acc: float               # next-token accuracy on text targets
    audio_acc: float              # accuracy on audio targets (all codebooks)
    audio_acc_first: float        # accuracy on codebook 0 targets
    hearing_loss: float = float("nan")   # the auxiliary CTC loss on the user's frames (when weighted in)


def lm_loss(model, batch: Batch, text_weight: float = 1.0, hearing_weight: float = 0.0,
            answer_noise: float = 0.0) -> LossParts:
    """The training loss of `model` (plain or wrapped in DDP, whose forward must see the whole loss); with
    `answer_noise`, the model reads the answers' codes with that share of them wrong (`with_noisy_answers`)."""
    size = getattr(model, "module", model).config.codebook_size       # (DDP wraps the model in .module)
    audio = with_noisy_answers(batch, answer_noise, size) if answer_noise > 0 else batch.audio
    return model(batch.text, audio, targets=batch, text_weight=text_weight, hearing_weight=hearing_weight)


def with_noisy_answers(batch: Batch, rate: float, codebook_size: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """The batch's codes as the model reads them, each answer code (an audio target, not the END mark) replaced by a
    random code with probability `rate`; the targets stay the true codes. Teacher forcing shows the model only right
    codes, while in generation it reads its own mistakes and drifts from the words (the shipped voice says even its
    training answers with 61% WER); codes read wrong teach it to say the next one from the words and the codes around
    it. Measured in docs/speechlm.md ("More answers, and answers read wrong")."""
    audio = batch.audio
    where = batch.audio_target & (audio < codebook_size)
    where &= torch.rand(audio.shape, generator=generator, device=audio.device) < rate
    random_codes = torch.randint(0, codebook_size, audio.shape, generator=generator, device=audio.device)
    return torch.where(where, random_codes, audio)


def hearing_loss(model, hidden: torch.Tensor, spans: list[tuple[int, int, int, list[int]]]) -> torch.Tensor:
    """CTC of the user's words on the model's outputs at the user's own frames: the text head's text
    ids plus a learned blank. It makes each frame's state say which words it holds, so that the answer
    can read them; it costs nothing at inference (the frames' outputs are otherwise unused)."""
    v = model.config.text_vocab_size
    rows = [hidden[b, a:e] for b, a, e, _ in spans]                                  # each [T, H]
    flat = torch.cat(rows)
    logits = torch.cat([model.text_head(flat)[:, :v], flat @ model.hearing_blank[:, None]], -1)
    logp = logits.float().log_softmax(-1)
    lengths = torch.tensor([r.shape[0] for r in rows])
    padded = torch.nn.utils.rnn.pad_sequence(list(logp.split(lengths.tolist())))    # [T, N, V + 1]
    targets = torch.tensor([i for *_, ids in spans for i in ids], device=hidden.device)
    target_lengths = torch.tensor([len(ids) for *_, ids in spans])
    return F.ctc_loss(padded, targets, lengths, target_lengths, blank=v, zero_infinity=True)


def loss_from_hidden(model, hidden: torch.Tensor, batch: Batch, text_weight: float = 1.0,
                     hearing_weight: float = 0.0) -> LossParts:
    """Cross-entropy of step s's heads against step s + 1's ids, over target positions only.

    Every head takes part in every loss (times 0 when a batch has no target for it), so that DDP sees
    a gradient for each parameter at each step."""
    hear = hearing_loss(model, hidden, batch.user_spans) if hearing_weight and batch.user_spans else None
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
        # (max's indices: argmax is 2 to 5 times slower on a CPU, in bfloat16 the most)
        text_acc = float((tl.float().max(-1).indices == ty).float().mean()) if tl is not None else float("nan")
        if al is not None:
            hits = (al.float().max(-1).indices == ay) & m
            audio_acc = float(hits.sum() / m.sum())
            audio_acc_first = float(hits[:, 0].sum() / m[:, 0].sum().clamp(min=1))
        else:
            audio_acc = audio_acc_first = float("nan")
    loss = text_weight * text_loss + audio_loss
    if hear is not None:
        loss = loss + hearing_weight * hear
    else:                         # DDP: every parameter takes part in every step's loss
        loss = loss + model.hearing_blank.sum() * 0
    return LossParts(loss, float(text_loss.detach()), float(audio_loss.detach()), text_acc, audio_acc, audio_acc_first,
                     float(hear.detach()) if hear is not None else float("nan"))
