"""The project's compact codec: causal SEANet encoder + residual VQ + causal Vocos-style iSTFT decoder."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
from torch import nn

from voice.codec.streaming import ConvState, ModuleStates, linear_step, step_module

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "voice-compact-codec"


@dataclass(frozen=True)
class CompactCodecConfig:
    """Architecture of the compact codec; stored inside every checkpoint."""

    sample_rate_hz: int = 16000  # speech only; the LM and the client run at 16 kHz
    ratios: tuple[int, ...] = (8, 5, 4, 2)  # encoder strides (reversed): hop 320 samples = 50 Hz frames
    encoder_filters: int = 24  # SEANet base width (channels double per stage: 24 -> 384)
    encoder_true_skip: bool = True  # identity shortcuts in the residual blocks (cheaper than 1x1 convs)
    encoder_lstm_layers: int = 0  # SLSTM at the end of the encoder (0 = none; cheaper on CPU)
    latent_dim: int = 128  # encoder output = codebook vector size
    num_codebooks: int = 8  # residual VQ depth trained (any prefix can be used)
    codebook_size: int = 1024  # entries per codebook (10 bits)
    decoder_dim: int = 256  # ConvNeXt width
    decoder_hidden: int = 768  # ConvNeXt MLP width
    decoder_layers: int = 6  # ConvNeXt blocks
    decoder_kernel: int = 7  # causal depthwise kernel (frames)
    n_fft_factor: int = 4  # iSTFT window = n_fft_factor * hop samples
    decoder_delay_frames: int = 1  # output lags input by this many frames (decoder lookahead)

    @property
    def hop_length(self) -> int:
        hop = 1
        for ratio in self.ratios:
            hop *= ratio
        return hop

    @property
    def n_fft(self) -> int:
        return self.n_fft_factor * self.hop_length

    @classmethod
    def from_dict(cls, values: dict) -> "CompactCodecConfig":
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        if "ratios" in known:
            known["ratios"] = tuple(known["ratios"])
        return cls(**known)


class CausalConvNeXtBlock(nn.Module):
    """ConvNeXt block over time with a causal depthwise conv: x + MLP(LN(dwconv(x)))."""

    def __init__(self, dim: int, hidden: int, kernel: int, layer_scale: float):
        super().__init__()
        from encodec.modules import SConv1d

        self.dwconv = SConv1d(dim, dim, kernel, groups=dim, causal=True, pad_mode="constant", norm="none")
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.pw2 = nn.Linear(hidden, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def _pointwise(self, h: torch.Tensor, stream: bool = False) -> torch.Tensor:  # [B, C, T] -> [B, C, T]
        h = self.norm(h.transpose(1, 2))
        h = linear_step(self.pw1, h) if stream else self.pw1(h)
        h = self.act(h)
        h = self.gamma * (linear_step(self.pw2, h) if stream else self.pw2(h))
        return h.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self._pointwise(self.dwconv(x))

    def stream_step(self, x: torch.Tensor, states: ModuleStates, name: str) -> torch.Tensor:
        # the zero-padded causal depthwise conv emits one output per input step, so the residual stays aligned;
        # computed as unfold * kernel: for a few frames this is ~10x faster than conv1d's grouped path on a CPU
        if x.shape[-1] == 0:
            return x
        conv = self.dwconv.conv.conv
        kernel = conv.kernel_size[0]
        state = states.get(f"{name}.dwconv", ConvState)
        if state.buffer is None:
            state.buffer = x.new_zeros(x.shape[0], x.shape[1], kernel - 1)
        buf = torch.cat([state.buffer, x], dim=-1)  # [B, C, kernel - 1 + T]
        state.buffer = buf[..., x.shape[-1]:]
        windows = buf.unfold(-1, kernel, 1)  # [B, C, T, kernel]
        h = (windows * conv.weight[:, 0][None, :, None, :]).sum(-1) + conv.bias[None, :, None]
        return x + self._pointwise(h, stream=True)


@dataclass
class ISTFTState:
    """Overlap-add tail of the iSTFT (signal and window envelope) and samples emitted so far."""

    tail: torch.Tensor | None = None  # [B, n_fft - hop]
    envelope: torch.Tensor | None = None  # [n_fft - hop]
    samples_out: int = 0


class CausalISTFT(nn.Module):
    """Inverse STFT by overlap-add that emits `hop` final samples per frame (frame t's window starts at t * hop)."""

    def __init__(self, n_fft: int, hop_length: int, delay_samples: int):
        super().__init__()
        self.n_fft, self.hop_length, self.delay_samples = n_fft, hop_length, delay_samples
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def _fold(self, frames: torch.Tensor) -> torch.Tensor:  # [B, n_fft, T] -> [B, (T - 1) * hop + n_fft]
        length = (frames.shape[-1] - 1) * self.hop_length + self.n_fft
        out = nn.functional.fold(frames, (1, length), (1, self.n_fft), stride=(1, self.hop_length))
        return out[:, 0, 0]

    def _envelope(self, count: int) -> torch.Tensor:
        """Summed squared windows of `count` frames, [(count - 1) * hop + n_fft] (cached for small counts)."""
        cache = self.__dict__.setdefault("_envelopes", {})
        key = (count, self.window.device)
        if key not in cache:
            envelope = self._fold(self.window.square()[None, :, None].expand(1, -1, count))[0]
            if count > 16:
                return envelope
            cache[key] = envelope
        return cache[key]

    def forward(self, spec: torch.Tensor, state: ISTFTState) -> torch.Tensor:
        """spec complex [B, n_fft // 2 + 1, T] -> float [B, T * hop]; the first `delay_samples` of a stream are 0."""
        count = spec.shape[-1]
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=1) * self.window[:, None]  # [B, n_fft, T]
        signal = self._fold(frames)
        envelope = self._envelope(count)
        if state.tail is not None:
            keep = state.tail.shape[-1]
            signal = torch.cat([signal[:, :keep] + state.tail, signal[:, keep:]], dim=-1)
            envelope = torch.cat([envelope[:keep] + state.envelope, envelope[keep:]])
        n_out = count * self.hop_length
        state.tail, state.envelope = signal[:, n_out:], envelope[n_out:]
        out = signal[:, :n_out] / envelope[:n_out].clamp_min(1e-2)
        return self._mute_preroll(out, state)

    def _mute_preroll(self, out: torch.Tensor, state: ISTFTState) -> torch.Tensor:
        start = state.samples_out
        state.samples_out += out.shape[-1]
        if start < self.delay_samples:
            mask = (torch.arange(start, state.samples_out, device=out.device) >= self.delay_samples).to(out.dtype)
            out = out * mask
        return out

    def flush(self, state: ISTFTState) -> torch.Tensor:
        """The delayed samples still in the tail (their later windows never come), [B, delay]."""
        if state.tail is None:
            return torch.zeros(1, 0)
        n = self.delay_samples
        out = state.tail[:, :n] / state.envelope[:n].clamp_min(1e-2)
        state.tail, state.envelope = state.tail[:, n:], state.envelope[n:]
        return self._mute_preroll(out, state)


class CausalVocosDecoder(nn.Module):
    """Codes' embeddings [B, D, T] -> ConvNeXt (causal) -> log-magnitude and phase per frame -> iSTFT audio."""

    def __init__(self, config: CompactCodecConfig):
        super().__init__()
        from encodec.modules import SConv1d

        c = config
        self.embed = SConv1d(c.latent_dim, c.decoder_dim, c.decoder_kernel, causal=True, pad_mode="constant",
                             norm="none")
        self.norm = nn.LayerNorm(c.decoder_dim, eps=1e-6)
        self.blocks = nn.ModuleList(CausalConvNeXtBlock(c.decoder_dim, c.decoder_hidden, c.decoder_kernel,
                                                        1.0 / c.decoder_layers) for _ in range(c.decoder_layers))
        self.final_norm = nn.LayerNorm(c.decoder_dim, eps=1e-6)
        self.head = nn.Linear(c.decoder_dim, c.n_fft + 2)
        self.istft = CausalISTFT(c.n_fft, c.hop_length, c.decoder_delay_frames * c.hop_length)

    def _spectrum(self, h: torch.Tensor, stream: bool = False) -> torch.Tensor:  # [B, C, T] -> complex [B, F, T]
        h = self.final_norm(h.transpose(1, 2))
        h = (linear_step(self.head, h) if stream else self.head(h)).transpose(1, 2)
        log_mag, phase = h.chunk(2, dim=1)
        mag = torch.exp(log_mag).clamp(max=100.0)
        return torch.polar(mag, phase)

    def _trunk(self, emb: torch.Tensor, run) -> torch.Tensor:
        h = run(self.embed, emb, "embed")
        h = self.norm(h.transpose(1, 2)).transpose(1, 2)
        for index, block in enumerate(self.blocks):
            h = run(block, h, f"blocks.{index}")
        return h

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """Whole sequence: [B, D, T] -> [B, 1, T * hop] (a stream that lags the input by the decoder delay)."""
        h = self._trunk(emb, lambda module, x, _name: module(x))
        return self.istft(self._spectrum(h), ISTFTState())[:, None]

    def stream_step(self, emb: torch.Tensor, states: ModuleStates, name: str) -> torch.Tensor:
        if emb.shape[-1] == 0:
            return emb.new_zeros(emb.shape[0], 1, 0)
        h = self._trunk(emb, lambda module, x, sub: step_module(module, x, states, f"{name}.{sub}"))
        return self.istft(self._spectrum(h, stream=True), states.get(f"{name}.istft", ISTFTState))[:, None]

    def stream_flush(self, states: ModuleStates, name: str) -> torch.Tensor:
        return self.istft.flush(states.get(f"{name}.istft", ISTFTState))[:, None]


class CompactCodec(nn.Module):
    """Encoder + RVQ + decoder, trainable end to end; `streaming()` gives the inference interface."""

    def __init__(self, config: CompactCodecConfig):
        super().__init__()
        from encodec.modules import SEANetEncoder
        from encodec.quantization import ResidualVectorQuantizer

        self.config = config
        self.encoder = SEANetEncoder(channels=1, dimension=config.latent_dim, n_filters=config.encoder_filters,
                                     ratios=list(config.ratios), causal=True, pad_mode="constant",
                                     true_skip=config.encoder_true_skip, lstm=config.encoder_lstm_layers)
        self.quantizer = ResidualVectorQuantizer(dimension=config.latent_dim, n_q=config.num_codebooks,
                                                 bins=config.codebook_size)
        self.decoder = CausalVocosDecoder(config)

    def forward(self, audio: torch.Tensor, num_codebooks: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """audio [B, 1, T] (T a multiple of hop) -> (decoded stream [B, 1, T], commitment loss)."""
        emb = self.encoder(audio)  # [B, D, T / hop]
        quantized, _codes, commit = self.quantizer.vq(emb, n_q=num_codebooks or self.config.num_codebooks)
        return self.decoder(quantized), commit.mean()

    def streaming(self, num_codebooks: int | None = None, name: str = "compact"):
        from voice.codec.codec import StreamingCodec

        c = self.config
        return StreamingCodec(self.encoder, self.quantizer, self.decoder, sample_rate_hz=c.sample_rate_hz,
                              hop_length=c.hop_length, num_codebooks=num_codebooks or c.num_codebooks,
                              decoder_delay_samples=c.decoder_delay_frames * c.hop_length, name=name)

    def checkpoint(self, meta: dict | None = None, for_inference: bool = False) -> dict:
        """A self-describing checkpoint dict; `for_inference` drops the VQ's training-only EMA buffers."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        if for_inference:
            state = {k: v for k, v in state.items() if not k.endswith(("embed_avg", "cluster_size"))}
        config = asdict(self.config)
        config["ratios"] = list(config["ratios"])
        return {"format": CHECKPOINT_FORMAT, "version": 1, "config": config, "state_dict": state,
                "meta": meta or {}}

    @classmethod
    def from_checkpoint(cls, checkpoint: dict) -> "CompactCodec":
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a compact codec checkpoint (format={checkpoint.get('format')!r})")
        model = cls(CompactCodecConfig.from_dict(checkpoint["config"]))
        missing, unexpected = model.load_state_dict(checkpoint["state_dict"], strict=False)
        missing = [k for k in missing if not k.endswith(("embed_avg", "cluster_size"))]
        if missing or unexpected:
            raise ValueError(f"checkpoint does not match its config: missing {missing}, unexpected {unexpected}")
        return model
