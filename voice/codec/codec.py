"""`StreamingCodec`: the one interface the rest of the project uses for any codec source."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from voice.codec.streaming import ModuleStates, step_module
from voice.fp16_gemm import pack_fp16

logger = logging.getLogger(__name__)


@dataclass
class CodecState:
    """Per-session streaming state: encoder and decoder module states and sample/frame counters."""

    encoder: ModuleStates = field(default_factory=ModuleStates)
    decoder: ModuleStates = field(default_factory=ModuleStates)
    samples_in: int = 0  # samples given to encode_step so far
    frames_in: int = 0  # frames given to decode_step so far


def check_pcm(pcm, sample_rate_hz: int | None, expected_rate_hz: int) -> np.ndarray:
    """Validate one chunk of mono float audio; returns float32 [T]. Raises ValueError on bad input."""
    array = np.asarray(pcm)
    if array.ndim != 1:
        raise ValueError(f"encode_step takes mono audio [T]; got shape {array.shape} (downmix first, "
                         "or use StreamingCodec.encode, which converts channels and rate)")
    if sample_rate_hz is not None and int(sample_rate_hz) != expected_rate_hz:
        raise ValueError(f"audio at {sample_rate_hz} Hz given to a {expected_rate_hz} Hz codec; resample it first")
    if not np.issubdtype(array.dtype, np.floating):
        if np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"audio must be float in [-1, 1], got {array.dtype} (divide int16 by 32768)")
        raise ValueError(f"audio must be float, got {array.dtype}")
    array = array.astype(np.float32, copy=False)
    if not np.all(np.isfinite(array)):
        raise ValueError("audio contains NaN or infinite samples")
    return array


def to_mono_rate(pcm, sample_rate_hz: int, target_rate_hz: int) -> np.ndarray:
    """Convert whole audio [T] or [C, T] / [T, C] at any rate to mono float32 [T] at `target_rate_hz`."""
    array = np.asarray(pcm)
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max + 1)
    array = array.astype(np.float32, copy=False)
    if array.ndim == 2:
        array = array.mean(axis=0 if array.shape[0] <= 8 and array.shape[0] < array.shape[1] else 1)
    if array.ndim != 1:
        raise ValueError(f"audio must be [T] or [channels, T]; got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("audio contains NaN or infinite samples")
    if sample_rate_hz <= 0:
        raise ValueError(f"bad sample rate {sample_rate_hz}")
    if sample_rate_hz != target_rate_hz:
        import torchaudio.functional as AF

        array = AF.resample(torch.from_numpy(array), sample_rate_hz, target_rate_hz).numpy()
    return array


class StreamingCodec:
    """Causal neural codec with per-session state: PCM chunks -> codes [K, T] -> PCM chunks.

    Wraps an encoder, a residual vector quantizer (`encodec.quantization.ResidualVectorQuantizer`)
    and a decoder whose modules `voice.codec.streaming.step_module` can run chunk by chunk.
    """

    def __init__(self, encoder: nn.Module, quantizer: nn.Module, decoder: nn.Module, *, sample_rate_hz: int,
                 hop_length: int, num_codebooks: int, decoder_delay_samples: int = 0, name: str = "codec",
                 start_delay_frames: int = 0):
        self.encoder, self.quantizer, self.decoder = encoder.eval(), quantizer.eval(), decoder.eval()
        self.sample_rate_hz = int(sample_rate_hz)
        self.hop_length = int(hop_length)  # samples per frame
        self.frame_rate_hz = self.sample_rate_hz / self.hop_length
        if not 1 <= num_codebooks <= quantizer.n_q:
            raise ValueError(f"num_codebooks must be in 1..{quantizer.n_q}, got {num_codebooks}")
        self.num_codebooks = int(num_codebooks)
        self.codebook_size = int(quantizer.bins)
        self.decoder_delay_samples = int(decoder_delay_samples)  # decoded stream lags the input by this much
        self.start_delay_frames = int(start_delay_frames)  # frames held back once at the start (reflect pads)
        self.name = name
        self.cache_id: str | None = None  # set by the loader: identifies the weights for token caches
        self.fp16_weights = True  # float16-packed codebooks where float16 holds them exactly (voice.fp16_gemm)

    # ---- facts for the LM and the latency report -------------------------------------------------
    @property
    def lookahead_samples(self) -> int:
        """Algorithmic latency: input sample n comes back out after sample n + this many have gone in."""
        return self.hop_length + self.decoder_delay_samples

    @property
    def bitrate_bps(self) -> float:
        return self.frame_rate_hz * self.num_codebooks * float(np.log2(self.codebook_size))

    @property
    def token_rate_hz(self) -> float:
        """Codes per second if every codebook entry were one LM token (flattened)."""
        return self.frame_rate_hz * self.num_codebooks

    def describe(self) -> dict:
        return {"name": self.name, "sample_rate_hz": self.sample_rate_hz, "frame_rate_hz": self.frame_rate_hz,
                "num_codebooks": self.num_codebooks, "codebook_size": self.codebook_size,
                "bitrate_bps": self.bitrate_bps, "token_rate_hz": self.token_rate_hz,
                "lookahead_samples": self.lookahead_samples, "start_delay_frames": self.start_delay_frames}

    # ---- streaming ------------------------------------------------------------------------------
    def new_state(self) -> CodecState:
        return CodecState()

    @torch.inference_mode()
    def encode_step(self, state: CodecState, pcm, sample_rate_hz: int | None = None) -> np.ndarray:
        """Feed mono float32 PCM [T] (any length); returns the codes of the frames completed, int64 [K, T_new]."""
        array = check_pcm(pcm, sample_rate_hz, self.sample_rate_hz)
        state.samples_in += len(array)
        x = torch.from_numpy(array.copy())[None, None]  # [1, 1, T]
        emb = step_module(self.encoder, x, state.encoder, "encoder")  # [1, D, T_frames]
        if emb.shape[-1] == 0:
            return np.zeros((self.num_codebooks, 0), np.int64)
        return self._quantize(emb)

    def _quantize(self, emb: torch.Tensor) -> np.ndarray:
        """Residual VQ encode, the package's arithmetic with the codebook norms cached: [1, D, T] -> [K, T]."""
        books = self._codebooks()
        if not books["plain"]:
            return self.quantizer.vq.encode(emb, n_q=self.num_codebooks)[:, 0].numpy().astype(np.int64)
        residual = emb.transpose(1, 2).reshape(-1, emb.shape[1])  # [T, D]
        codes = []
        for embed, embed_t, embed_sq, packed in books["books"]:
            # |e|^2 - 2 x.e: the squared distance without the per-row constant |x|^2 (float16-packed -2e where
            # float16 holds the entries exactly: the same sums, one row at a time, so any chunking gives the same)
            if packed is not None:
                distances = packed.matmul(residual, embed_sq[0])
            else:
                distances = torch.addmm(embed_sq, residual, embed_t, alpha=-2.0)
            index = distances.argmin(dim=-1)  # [T]
            residual = residual - torch.nn.functional.embedding(index, embed)
            codes.append(index)
        return torch.stack(codes).numpy().astype(np.int64)

    def _codebooks(self) -> dict:
        """Cached codebook views, rebuilt when a codebook is replaced, moved or changed in place (not via `.data`).

        plain: no input/output projections (else the package's own encode/decode run); books: per codebook
        (entries [N, D], entries transposed and contiguous [D, N], where MKL's matrix-vector product is ~2x faster,
        squared norms [1, N], -2 x entries packed in float16 where it holds them exactly, else None); table: all
        entries [K * N, D]; offsets: [K, 1] first row of each codebook in it.
        """
        cache = getattr(self, "_books", None)
        if cache is not None and all(c.embed is e and (e._version, e.data_ptr()) == v for c, e, v in cache["key"]):
            return cache
        layers = [self.quantizer.vq.layers[i] for i in range(self.num_codebooks)]
        embeds = [l._codebook.embed for l in layers]
        self._books = {
            "key": [(l._codebook, e, (e._version, e.data_ptr())) for l, e in zip(layers, embeds)],
            "plain": all(isinstance(l.project_in, nn.Identity) and isinstance(l.project_out, nn.Identity)
                         for l in self.quantizer.vq.layers),
            "books": [(e, e.t().contiguous(), e.pow(2).sum(1)[None],
                       pack_fp16(-2.0 * e) if self.fp16_weights else None) for e in embeds],
            "table": torch.cat(embeds), "offsets": torch.arange(len(embeds))[:, None] * self.codebook_size}
        return self._books

    def codebook_vectors(self) -> torch.Tensor:
        """A copy of every codebook's entries [K, N, D]: what the speech LM reads codes through."""
        return self._codebooks()["table"].detach().float().view(self.num_codebooks, self.codebook_size, -1).clone()

    def _dequantize(self, tokens: torch.Tensor) -> torch.Tensor:
        """codes [K, T] -> summed codebook vectors [1, D, T] (one gather instead of K lookups)."""
        books = self._codebooks()
        if not books["plain"]:
            return self.quantizer.vq.decode(tokens[:, None])
        return torch.nn.functional.embedding(tokens + books["offsets"], books["table"]).sum(0).t()[None]

    def flush_encode(self, state: CodecState) -> np.ndarray:
        """End of input: zero-pad the last partial frame and return its codes [K, T_new]."""
        partial = state.samples_in % self.hop_length
        if partial == 0:
            return np.zeros((self.num_codebooks, 0), np.int64)
        return self.encode_step(state, np.zeros(self.hop_length - partial, np.float32))

    def check_codes(self, codes) -> torch.Tensor:
        array = np.asarray(codes)
        if array.ndim != 2 or array.shape[0] != self.num_codebooks:
            raise ValueError(f"codes must be [K={self.num_codebooks}, T]; got shape {array.shape}")
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"codes must be integers, got {array.dtype}")
        if array.size and (array.min() < 0 or array.max() >= self.codebook_size):
            raise ValueError(f"codes out of range [0, {self.codebook_size}): min {array.min()}, max {array.max()}")
        return torch.from_numpy(array.astype(np.int64))

    @torch.inference_mode()
    def decode_step(self, state: CodecState, codes) -> np.ndarray:
        """Feed codes [K, T]; returns the PCM they complete, float32 [T * hop] (delayed by decoder_delay_samples)."""
        tokens = self.check_codes(codes)
        state.frames_in += tokens.shape[1]
        if tokens.shape[1] == 0:
            return np.zeros(0, np.float32)
        emb = self._dequantize(tokens)  # [1, D, T]
        pcm = step_module(self.decoder, emb, state.decoder, "decoder")  # [1, 1, T * hop]
        return pcm[0, 0].numpy().astype(np.float32)

    @torch.inference_mode()
    def flush_decode(self, state: CodecState) -> np.ndarray:
        """End of codes: the last `decoder_delay_samples` of audio still held by the decoder (may be empty)."""
        flush = getattr(self.decoder, "stream_flush", None)
        if flush is None:
            return np.zeros(0, np.float32)
        return flush(state.decoder, "decoder")[0, 0].numpy().astype(np.float32)

    # ---- whole signals --------------------------------------------------------------------------
    def encode(self, pcm, sample_rate_hz: int) -> np.ndarray:
        """Whole audio (any rate, mono or multichannel) -> codes [K, T]; T = ceil(samples / hop)."""
        audio = to_mono_rate(pcm, sample_rate_hz, self.sample_rate_hz)
        state = self.new_state()
        first = self.encode_step(state, audio)
        return np.concatenate([first, self.flush_encode(state)], axis=1)

    def decode(self, codes) -> np.ndarray:
        """Codes [K, T] -> PCM float32 [T * hop], aligned with the encoded input (decoder delay removed)."""
        state = self.new_state()
        pcm = np.concatenate([self.decode_step(state, codes), self.flush_decode(state)])
        return pcm[self.decoder_delay_samples:]
