"""The hearing encoder: reads the user's codec codes and gives the speech LM features that carry words.

A speech LM that reads raw acoustic codes through a causal decoder learns its training sentences
and hears almost nothing new (docs/speechlm.md, "Hearing"); a small CTC recognizer over the same
codes reads words from voices it never heard far better (DESIGN.md's probe). So the user's speech
first goes through this encoder, trained on its own with a character CTC loss
(`voice train hearing`), then frozen; the LM adds a projection of its features to the user's
frames (`voice train lm --hearing-encoder`).

Shape: the codec's dequantised latent (the sum of the frame's codebook vectors, a fixed
embedding), or (`input_dim` > 0) the Whisper ear's features of the same 20 ms frames (an "ear
encoder", `voice train hearing --ear`) -> two convolutions of kernel 5 that look `lookahead` frames ahead in all -> a
unidirectional GRU. One feature per codec frame, causal but for the lookahead, so it streams:
`HearingStream` gives frame t's feature once frame t + lookahead has arrived, and at the end of the
turn pads with zeros exactly as the whole-turn forward does (tested chunk by chunk).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

CHARS = " 'abcdefghijklmnopqrstuvwxyz0123456789"   # CTC labels 1..len(CHARS); 0 is the blank


def normalize_chars(text: str) -> str:
    """Lower case, only CHARS, single spaces: what the CTC head spells."""
    text = re.sub(r"[^ 'a-z0-9]+", " ", text.lower().replace("-", " "))
    return re.sub(r" +", " ", text).strip()


def char_ids(text: str) -> list[int]:
    return [CHARS.index(c) + 1 for c in normalize_chars(text)]


class Speller:
    """Best-path CTC decoding frame by frame (collapse repeats, drop blanks): `push(labels)` -> [(frame, word)]
    for each word complete in them (the frame where its following space is spelled); `finish()` -> the last
    word's, at the frame count. `snap(word) -> word` rewrites each word as it completes; a snapper that chooses
    by the CTC's posteriors (`snap.reads_posteriors`, voice.speechlm.lexicon) also gets the log-posteriors of the
    word's frames (`push(labels, logprobs)`, [frames, labels]: from the frame of the space before it, if any)."""

    def __init__(self, snap=None) -> None:
        self.frames = 0          # frames pushed so far
        self._last = 0           # the previous frame's label (repeats collapse)
        self._word: list[str] = []
        self._snap = snap or (lambda word: word)     # each word as it completes (voice.speechlm.lexicon.WordSnapper)
        self._scored = getattr(snap, "reads_posteriors", False)
        self._rows: list = []    # the current word's frames' log-posteriors (a snapper by the CTC's posteriors)
        self._lead = False       # those frames begin with the space before the word

    def push(self, labels, logprobs=None) -> list[tuple[int, str]]:
        done = []
        rows = logprobs if self._scored and logprobs is not None else None
        for i, label in enumerate(int(x) for x in labels):
            if rows is not None:
                self._rows.append(rows[i])
            if label != self._last and label != 0:
                char = CHARS[label - 1]
                if char == " ":
                    if self._word:
                        done.append((self.frames, self._snapped(self._rows[:-1])))
                    self._word = []
                    self._rows, self._lead = self._rows[-1:], True
                else:
                    self._word.append(char)
            self._last = label
            self.frames += 1
        return done

    def finish(self) -> list[tuple[int, str]]:
        word = self._snapped(self._rows) if self._word else None
        self._word, self._rows = [], []
        return [(self.frames, word)] if word else []

    def _snapped(self, rows: list) -> str:
        word = "".join(self._word)
        if not self._scored or not rows:
            return self._snap(word)
        import torch

        return self._snap(word, torch.stack([torch.as_tensor(r) for r in rows]), self._lead)


def ctc_greedy(ids: list[int]) -> str:
    """Best-path decoding of a whole turn: its words, one space between."""
    speller = Speller()
    return " ".join(word for _, word in speller.push(ids) + speller.finish())


@dataclass(frozen=True)
class HearingConfig:
    num_codebooks: int = 8         # codebooks read (a prefix of the codec's)
    codebook_size: int = 1024
    codec_dim: int = 128
    hidden: int = 256
    gru_layers: int = 2
    kernel: int = 5                # each convolution sees kernel // 2 frames back and ahead
    codec_id: str = ""             # the codes' codec (or, for an ear encoder, the ear's cache id)
    input_dim: int = 0             # 0: reads codes; > 0: reads feature rows of this width (the Whisper ear's)

    @property
    def reads_features(self) -> bool:
        return self.input_dim > 0

    @property
    def in_channels(self) -> int:
        return self.input_dim or self.codec_dim

    @property
    def lookahead(self) -> int:
        """Frames after frame t that its feature depends on (two convolutions)."""
        return 2 * (self.kernel // 2)


class HearingEncoder(nn.Module):
    """codes [B, K, T] (or feature rows [B, D, T]) -> features [B, T, H]; `ctc_logits` adds the character head."""

    def __init__(self, config: HearingConfig, codebooks: torch.Tensor | None = None) -> None:
        super().__init__()
        self.config = c = config
        table = torch.zeros(c.num_codebooks, c.codebook_size, c.codec_dim)
        if codebooks is not None:
            table.copy_(codebooks[: c.num_codebooks])
        self.register_buffer("codebooks", table)
        self.conv1 = nn.Conv1d(c.in_channels, c.hidden, c.kernel)
        self.conv2 = nn.Conv1d(c.hidden, c.hidden, c.kernel)
        self.gru = nn.GRU(c.hidden, c.hidden, c.gru_layers, batch_first=True)
        self.head = nn.Linear(c.hidden, len(CHARS) + 1)

    def latent(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K', T] (K' >= K) -> the codec's dequantised latent [B, D, T]; an ear encoder's
        feature rows [B, D, T] pass as they are."""
        if self.config.reads_features:
            if codes.dim() != 3 or codes.shape[1] != self.config.input_dim or not codes.is_floating_point():
                raise ValueError(f"the ear encoder reads float features [B, {self.config.input_dim}, T], got "
                                 f"{codes.dtype} {tuple(codes.shape)}")
            return codes
        k = self.config.num_codebooks
        if codes.shape[1] < k:
            raise ValueError(f"the hearing encoder reads {k} codebooks, got {codes.shape[1]}")
        z = sum(self.codebooks[i][codes[:, i]] for i in range(k))                 # [B, T, D]
        return z.transpose(1, 2)

    def _conv(self, conv: nn.Conv1d, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        pad = self.config.kernel // 2
        if mask is not None:
            x = x * mask                                   # what lies past a turn's end is zeros, as when streaming
        return F.gelu(conv(F.pad(x, (pad, pad))))

    def forward(self, codes: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        mask = None
        if lengths is not None:
            mask = (torch.arange(codes.shape[2], device=codes.device)[None] < lengths[:, None])[:, None].float()
        x = self._conv(self.conv1, self.latent(codes), mask)
        x = self._conv(self.conv2, x, mask)
        return self.gru(x.transpose(1, 2))[0]

    def ctc_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def save(self, path: Path, extra: dict | None = None) -> None:
        torch.save({"config": asdict(self.config), "state": self.state_dict(), **(extra or {})}, path)

    @classmethod
    def load(cls, path: Path) -> "HearingEncoder":
        """A hearing.pt (`voice train hearing`), or a speech LM's folder: the frozen encoder it carries."""
        if Path(path).is_dir():
            return cls.from_speech_lm(Path(path))
        blob = torch.load(path, map_location="cpu", weights_only=False)
        model = cls(HearingConfig(**blob["config"]))
        model.load_state_dict(blob["state"])
        return model.eval()

    @classmethod
    def from_speech_lm(cls, folder: Path) -> "HearingEncoder":
        """The hearing encoder inside a saved speech LM (`config.json`'s "hearing", weights `hearing.*`), so a
        new LM can be trained on the same ears without the encoder's own training run."""
        import json

        from safetensors import safe_open

        config = json.loads((folder / "config.json").read_text()).get("hearing")
        if not config or config.get("kind") == "ear":
            raise ValueError(f"{folder} holds no hearing encoder of codes")
        with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:   # its tensors alone
            state = {k.removeprefix("hearing."): weights.get_tensor(k).float()
                     for k in weights.keys() if k.startswith("hearing.")}
        model = cls(HearingConfig(**config))
        model.load_state_dict(state)
        return model.eval()


class PackedHearing:
    """A hearing encoder's convolutions and GRU through float16-packed weights (`voice.fp16_gemm`), for
    `HearingStream`: a chunk of a few frames multiplies them by every weight matrix, and the GRU each
    step's one row by its recurrent ones, which MKL's float32 GEMM reads slowly (a 0.2 s chunk: 4.4 ms
    of which conv1 1.2 and the GRU 1.7); fbgemm reads the float16 packing faster. `of(encoder)` is None
    unless float16 holds every weight exactly (the shipped speech LM is stored in float16) and fbgemm
    is there; the stream then runs the torch modules. Made for inference: weights changed later
    (training) are not seen, so a generator packs its model's encoder when it is made."""

    def __init__(self, encoder: HearingEncoder, convs: dict, grus: list) -> None:
        self.enc = encoder
        self.convs = convs        # {conv module: (its packing, its bias)}
        self.grus = grus          # per GRU layer: (input packing, its bias, recurrent packing, its bias)

    @classmethod
    def of(cls, encoder: HearingEncoder) -> "PackedHearing | None":
        from voice.fp16_gemm import pack_fp16

        gru = encoder.gru
        if not gru.bias:
            return None
        convs = {conv: (pack_fp16(conv.weight.reshape(conv.out_channels, -1)), conv.bias.detach())
                 for conv in (encoder.conv1, encoder.conv2)}
        grus = [(pack_fp16(getattr(gru, f"weight_ih_l{i}")), getattr(gru, f"bias_ih_l{i}").detach(),
                 pack_fp16(getattr(gru, f"weight_hh_l{i}")), getattr(gru, f"bias_hh_l{i}").detach())
                for i in range(gru.num_layers)]
        if any(w is None for w, _ in convs.values()) or any(w is None for layer in grus for w in layer[::2]):
            return None
        return cls(encoder, convs, grus)

    def conv(self, conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        """The encoder's `conv` on x [1, C, T >= kernel] -> gelu of its output [1, C_out, T - kernel + 1]."""
        k = conv.kernel_size[0]
        cols = x[0].unfold(-1, k, 1).transpose(0, 1).reshape(x.shape[2] - k + 1, -1)   # [T', C * k], channel-major
        packed, bias = self.convs[conv]
        return F.gelu(packed.matmul(cols, bias)).T[None]

    def gru(self, x: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The GRU (torch's equations) on x [T, H] from `state` [layers, 1, H] (None: zeros) -> (out [T, H], state)."""
        h_size = self.enc.gru.hidden_size
        if state is None:
            state = x.new_zeros(len(self.grus), 1, h_size)
        last = []
        for i, (w_ih, b_ih, w_hh, b_hh) in enumerate(self.grus):
            gates_in = w_ih.matmul(x, b_ih)                                            # [T, 3H]: r, z, n
            h, rows = state[i], []
            for t in range(x.shape[0]):
                gates_h = w_hh.matmul(h, b_hh)                                         # [1, 3H]
                rz = torch.sigmoid(gates_in[t: t + 1, : 2 * h_size] + gates_h[:, : 2 * h_size])
                r, z = rz[:, :h_size], rz[:, h_size:]
                n = torch.tanh(gates_in[t: t + 1, 2 * h_size:] + r * gates_h[:, 2 * h_size:])
                h = n + z * (h - n)                                                    # (1 - z) n + z h
                rows.append(h)
            x = torch.cat(rows)
            last.append(h)
        return x, torch.stack(last)


class HearingStream:
    """One user turn, chunk by chunk: `push(codes [K, n])` (an ear encoder: `push(rows [n, D])`) -> the
    features now complete [m, H];
    `finish()` -> the rest (the last `lookahead` frames, padded with zeros like the whole-turn forward).
    `packed`: the encoder's `PackedHearing` (the same features, faster)."""

    def __init__(self, encoder: HearingEncoder, packed: PackedHearing | None = None) -> None:
        self.enc, self.packed = encoder, packed
        self.pad = encoder.config.kernel // 2
        h, d = encoder.config.hidden, encoder.config.in_channels
        self._x1 = torch.zeros(1, d, self.pad)         # conv1's input not yet consumed (left context first)
        self._x2 = torch.zeros(1, h, self.pad)         # conv2's input
        self._state = None                            # the GRU's hidden state

    @torch.no_grad()
    def _run(self, conv: nn.Conv1d, buf: torch.Tensor, new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([buf, new], 2)
        k = conv.kernel_size[0]
        if x.shape[2] < k:
            return x, x[:, :, :0].new_zeros(1, conv.out_channels, 0)
        out = F.gelu(conv(x)) if self.packed is None else self.packed.conv(conv, x)
        return x[:, :, x.shape[2] - (k - 1):], out

    @torch.no_grad()
    def _gru(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] == 0:
            return x.new_zeros(0, self.enc.config.hidden)
        if self.packed is not None:
            out, self._state = self.packed.gru(x[0].T.contiguous(), self._state)
            return out
        out, self._state = self.enc.gru(x.transpose(1, 2), self._state)
        return out[0]

    def _latent(self, codes) -> torch.Tensor:
        if self.enc.config.reads_features:
            x = torch.as_tensor(np.asarray(codes, np.float32)).reshape(-1, self.enc.config.input_dim).T[None]
        else:
            x = torch.as_tensor(codes, dtype=torch.long)[None]
        return self.enc.latent(x)

    @torch.no_grad()
    def push(self, codes) -> torch.Tensor:
        self._x1, y1 = self._run(self.enc.conv1, self._x1, self._latent(codes))
        self._x2, y2 = self._run(self.enc.conv2, self._x2, y1)
        return self._gru(y2)

    @torch.no_grad()
    def finish(self, codes=None) -> torch.Tensor:
        """The rest; with `codes` (the turn's last ones), the same as `push(codes)` then `finish()` in one pass
        (the convolutions are local and the GRU goes on from its state), which is what a turn's end waits for."""
        zeros1 = self._x1.new_zeros(1, self._x1.shape[1], self.pad)
        new = zeros1 if codes is None or np.asarray(codes).size == 0 else torch.cat([self._latent(codes), zeros1], 2)
        self._x1, y1 = self._run(self.enc.conv1, self._x1, new)
        y1 = torch.cat([y1, y1.new_zeros(1, y1.shape[1], self.pad)], 2)
        self._x2, y2 = self._run(self.enc.conv2, self._x2, y1)
        return self._gru(y2)
