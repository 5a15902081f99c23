"""A lean decoder for inference: the SpeechLM's Llama layers run step by step over a KV cache with slots.

`transformers` runs the model for training and saving; a CPU step of a small model there costs
milliseconds of Python around the arithmetic. This module reads the same weights and runs the same
arithmetic (RMSNorm, rotary attention with grouped KV heads, SwiGLU) with one preallocated cache of
`slots` sequences, so that the steps of several sessions at different lengths go through one
forward pass. `tests/test_speechlm.py` checks it against the model's full forward pass. Its matrix
products and the two heads read fbgemm's float16 packing of the weights where float16 holds them
exactly (the shipped model is stored in float16; `voice/fp16_gemm.py`): the same results up to the
order of the sums; an answer step of one session took 2.8-3.3 ms instead of 4.5-6.8 (2026-12-07).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from voice.fp16_gemm import pack_fp16
from voice.speechlm.model import SpeechLM


class _Projection:
    """x [..., in] @ W [in, out], through W's float16 packing where float16 holds W exactly."""

    def __init__(self, weight_t: torch.Tensor) -> None:
        self.weight_t = weight_t.detach().contiguous()
        self.packed = pack_fp16(self.weight_t.t())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            return x @ self.weight_t
        return self.packed.matmul(x.reshape(-1, x.shape[-1]).float(), None).view(*x.shape[:-1], -1)


@dataclass(frozen=True)
class _Layer:
    norm1: torch.Tensor
    qkv: _Projection            # [H, (nq + 2 nkv) hd]: q, k and v projections side by side
    o: _Projection              # [nq hd, H]
    norm2: torch.Tensor
    gate_up: _Projection        # [H, 2 I]
    down: _Projection           # [I, H]


class ContextFullError(ValueError):
    """A sequence would grow past the model's context (max_position_embeddings)."""


class SlotDecoder:
    """Per-slot KV cache over the model's backbone. Not thread-safe: one caller steps it."""

    def __init__(self, model: SpeechLM, slots: int, max_len: int | None = None) -> None:
        cfg = model.config
        self.model = model
        self.nq, self.nkv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.hd = cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.max_len = int(max_len or cfg.max_position_embeddings)
        self.slots = slots
        bb = model.backbone
        with torch.no_grad():
            self.layers = [_Layer(
                l.input_layernorm.weight.detach().clone(),
                _Projection(torch.cat([l.self_attn.q_proj.weight, l.self_attn.k_proj.weight,
                                       l.self_attn.v_proj.weight]).t()),
                _Projection(l.self_attn.o_proj.weight.t()),
                l.post_attention_layernorm.weight.detach().clone(),
                _Projection(torch.cat([l.mlp.gate_proj.weight, l.mlp.up_proj.weight]).t()),
                _Projection(l.mlp.down_proj.weight.t()),
            ) for l in bb.layers]
            self.text_head = _Projection(model.text_head.weight.t())
            rows = model.config.codebook_size + 1  # the audio head's rows per codebook
            self.audio_heads = [_Projection(model.audio_head.weight[: k * rows].t())   # the first k codebooks
                                for k in range(1, model.config.num_codebooks + 1)]
            self.final_norm = bb.norm.weight.detach().clone()
            inv_freq = bb.rotary_emb.inv_freq.detach().float()
            scale = float(getattr(bb.rotary_emb, "attention_scaling", 1.0))
            angles = torch.arange(self.max_len, dtype=torch.float32)[:, None] * inv_freq[None]   # [L, hd/2]
            angles = torch.cat([angles, angles], -1)
            self.cos, self.sin = angles.cos() * scale, angles.sin() * scale                      # [L, hd]
        n_layers = len(self.layers)
        self.k = torch.zeros(n_layers, slots, self.nkv, self.max_len, self.hd)
        self.v = torch.zeros_like(self.k)
        # every position's input embedding, so that a span can be cut out and what follows recomputed (`splice`)
        self.inputs = torch.zeros(slots, self.max_len, cfg.hidden_size)
        self.lengths = [0] * slots

    def reset(self, slot: int) -> None:
        self.lengths[slot] = 0

    def truncate(self, slot: int, length: int) -> None:
        """Forget everything after the first `length` positions of `slot` (e.g. the unplayed part of an answer)."""
        self.lengths[slot] = min(self.lengths[slot], max(0, length))

    @torch.no_grad()
    def splice(self, slot: int, start: int, end: int, x: torch.Tensor | None = None) -> None:
        """Replace positions [start, end) of `slot` by the steps of embeddings x [T, H] (none: cut them out): the
        positions after them move up and are computed again, so the cache is the one a slot fed the new sequence
        from the start would hold (rotary positions included). Costs a forward pass over what follows `start`."""
        length = self.lengths[slot]
        if not 0 <= start <= end <= length:
            raise ValueError(f"splice [{start}, {end}) outside the slot's {length} positions")
        tail = self.inputs[slot, end:length].clone()
        if x is not None and len(x):
            tail = torch.cat([x.to(tail.dtype), tail])
        if start + len(tail) > self.max_len:
            raise ContextFullError(f"sequence of {start + len(tail)} steps exceeds the context of {self.max_len}")
        self.lengths[slot] = start
        if len(tail):
            self.forward([slot], tail[None])

    def _attend_one(self, q: torch.Tensor, layer: int, slot: int) -> torch.Tensor:
        """Attention of one new step of `slot` (q [1, nq, 1, hd], its key already written) over the slot's cache."""
        n = self.lengths[slot] + 1
        return F.scaled_dot_product_attention(q, self.k[layer, slot:slot + 1, :, :n], self.v[layer, slot:slot + 1, :, :n],
                                              enable_gqa=self.nq != self.nkv)

    def text_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The model's `text_head`: hidden [..., H] -> [..., V]."""
        return self.text_head(hidden)

    def audio_logits(self, hidden: torch.Tensor, codebooks: int) -> torch.Tensor:
        """The model's `audio_logits`: hidden [..., H] -> the first `codebooks` codebooks' logits, [..., codebooks,
        N + 1] (a step reads only the rows of the audio head it needs)."""
        rows = self.model.config.codebook_size + 1
        if codebooks == 0:  # while the words lead, no codebook is due
            return hidden.new_zeros(*hidden.shape[:-1], 0, rows)
        return self.audio_heads[codebooks - 1](hidden).unflatten(-1, (codebooks, rows))

    def _rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rotated * sin

    @torch.no_grad()
    def forward(self, slots: list[int], x: torch.Tensor) -> torch.Tensor:
        """Append T steps to each of `slots`: embeddings x [B, T, H] -> final hidden states [B, T, H]."""
        b, t, _ = x.shape
        if len(slots) != b or len(set(slots)) != b:
            raise ValueError("one distinct slot per row")
        starts = torch.tensor([self.lengths[s] for s in slots])
        end = int(starts.max()) + t
        if end > self.max_len:
            raise ContextFullError(f"sequence of {end} steps exceeds the context of {self.max_len}")
        pos = starts[:, None] + torch.arange(t)[None]                                   # [B, T]
        cos, sin = self.cos[pos][:, None], self.sin[pos][:, None]                       # [B, 1, T, hd]
        # one step per row (answer steps): each row attends to its own cache, a view, with no mask; gathering
        # the rows' caches to the longest and masking cost 4-6x more per layer with several long contexts
        per_row = t == 1
        if not per_row:
            keys = torch.arange(end)[None, None, None, :]                               # [1, 1, 1, E]
            mask = keys <= pos[:, None, :, None]                                        # [B, 1, T, E]
            idx = torch.tensor(slots)
            contiguous = slots == list(range(slots[0], slots[0] + b))
        for row, slot in enumerate(slots):
            self.inputs[slot, self.lengths[slot]:self.lengths[slot] + t] = x[row]
        for li, layer in enumerate(self.layers):
            h = layer.qkv(self._rms(x, layer.norm1))                                   # [B, T, (nq+2nkv) hd]
            q, k, v = h.split([self.nq * self.hd, self.nkv * self.hd, self.nkv * self.hd], -1)
            q = self._rotate(q.view(b, t, self.nq, self.hd).transpose(1, 2), cos, sin)  # [B, nq, T, hd]
            k = self._rotate(k.view(b, t, self.nkv, self.hd).transpose(1, 2), cos, sin)
            v = v.view(b, t, self.nkv, self.hd).transpose(1, 2)
            for row, slot in enumerate(slots):
                s0 = self.lengths[slot]
                self.k[li, slot, :, s0:s0 + t] = k[row]
                self.v[li, slot, :, s0:s0 + t] = v[row]
            if per_row:
                att = torch.cat([self._attend_one(q[row:row + 1], li, slot) for row, slot in enumerate(slots)])
            else:
                if contiguous:
                    ks, vs = self.k[li, slots[0]:slots[0] + b, :, :end], self.v[li, slots[0]:slots[0] + b, :, :end]
                else:
                    ks, vs = self.k[li, idx, :, :end], self.v[li, idx, :, :end]
                att = F.scaled_dot_product_attention(q, ks, vs, attn_mask=mask, enable_gqa=self.nq != self.nkv)
            x = x + layer.o(att.transpose(1, 2).reshape(b, t, self.nq * self.hd))
            gate, up = layer.gate_up(self._rms(x, layer.norm2)).chunk(2, -1)
            x = x + layer.down(F.silu(gate) * up)
        for slot in slots:
            self.lengths[slot] += t
        return self._rms(x, self.final_norm)
