"""Streaming state and step functions for SEANet-style models of the `encodec` package.

The `encodec` package runs its causal convolutions, transposed convolutions and LSTMs on whole
signals. `step_module` runs the same modules chunk by chunk: each module keeps a small state
(the causal padding / left context of a convolution, the overlap of a transposed convolution,
the hidden state of an LSTM) so that the concatenated chunk outputs equal one whole-signal pass.

Speed: a streaming step feeds convolutions only a few output positions (often one). There
`torch.conv1d`'s CPU path (im2col, then weight @ columns) is up to 4x slower than unfolding the
input and multiplying columns @ weight^T, so `conv_step` does that for short outputs, with the
weight^T cached contiguous (`_weight_t`: for a few rows MKL reads it 15-40% faster than the
[out, in] layout); `linear_step` does the same for linear layers. `fast_elu` replaces ATen's ELU,
whose `expm1` is not vectorised in the AVX-512 build (160 us for the 15,360 values of a 40 ms
step's first stage, against 15 us). Weights are read as the module's forward would use them
(weight norm, if still attached, is applied by its pre-hook; the loaders fold it away).
Per-module constants are resolved once (`_ConvPlan`).

float16 weights (`pack_fp16_weights`, `voice/fp16_gemm.py`): the few-row GEMMs of a step read
fbgemm's float16 packing of each large layer's weight where float16 holds it exactly (the shipped
codec's checkpoint is stored in float16); a weight-normed layer packs its stored direction v and
multiplies the output by g / |v|, the weight norm's own scale, since float16 would round the
folded weight. Outputs differ from the float32 GEMM's only in the order of the sums.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from voice.fp16_gemm import pack_fp16

logger = logging.getLogger(__name__)

_ELEMENTWISE = (nn.ELU, nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity)
_START_PAD_NEED = {"constant": 0, "zero": 0, "replicate": 1, "reflect": 1}  # extra samples a start pad needs


@dataclass
class ConvState:
    """Causal conv: input not yet consumed (left context); `pending` holds input until a reflect pad can be built."""

    buffer: torch.Tensor | None = None  # [B, C, T_left]
    pending: torch.Tensor | None = None  # [B, C, T_waiting]


@dataclass
class ConvTransposeState:
    """Transposed conv: the overlap tail (without bias) to add to the next chunk, and start samples still to drop."""

    tail: torch.Tensor | None = None  # [B, C, kernel - stride]
    drop_left: int | None = None


@dataclass
class LSTMState:
    """LSTM hidden and cell state, each [num_layers, B, C]."""

    hidden: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass
class ResidualState:
    """Residual block: outputs of the shortcut and the block branch waiting for the other branch."""

    shortcut: torch.Tensor | None = None  # [B, C, T]
    block: torch.Tensor | None = None  # [B, C, T]


@dataclass
class ModuleStates:
    """All streaming state of one module tree for one session, keyed by module path."""

    by_name: dict = field(default_factory=dict)

    def get(self, name: str, factory):
        if name not in self.by_name:
            self.by_name[name] = factory()
        return self.by_name[name]


def _empty(x: torch.Tensor, channels: int) -> torch.Tensor:
    return x.new_zeros(x.shape[0], channels, 0)


def _cat(a: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
    return b if a is None else torch.cat([a, b], dim=-1)


_GEMM_MAX_OUTPUTS = 16  # below this many output positions `_conv` multiplies unfolded columns (see module doc)
_PACKED_MAX_OUTPUTS = 64  # the same for a layer with float16-packed weights (faster than conv1d up to here)
FP16_MIN_WEIGHTS = 16_384  # smaller layers' weights stay in cache: packing them buys nothing


@dataclass(frozen=True)
class _ConvPlan:
    """An SConv1d's constants, resolved once (stored on the module) instead of on every step."""

    norm_conv: nn.Module  # NormConv1d: conv + norm
    conv: nn.Conv1d
    kernel: int
    stride: int
    dilation: int
    span: int  # receptive field in samples
    padding_total: int
    mode: str  # start padding mode
    need: int  # samples a reflect / replicate start pad waits for
    direct: bool  # plain conv (no groups, no norm layer): `_conv` may unfold it


def _conv_plan(module) -> _ConvPlan:
    plan = module.__dict__.get("_stream_plan")
    if plan is not None:
        return plan
    if not module.causal:
        raise ValueError("streaming needs a causal model (SConv1d with causal=False found)")
    mode = "constant" if module.pad_mode == "zero" else module.pad_mode
    if mode not in _START_PAD_NEED:
        raise ValueError(f"pad mode {module.pad_mode!r} cannot be streamed")
    norm_conv = module.conv
    conv = norm_conv.conv
    (kernel,), (stride,), (dilation,) = conv.kernel_size, conv.stride, conv.dilation
    span = (kernel - 1) * dilation + 1
    padding_total = span - stride
    need = padding_total + _START_PAD_NEED[mode] if padding_total > 0 and mode != "constant" else 0
    plan = _ConvPlan(norm_conv, conv, kernel, stride, dilation, span, padding_total, mode, need,
                     conv.groups == 1 and isinstance(norm_conv.norm, nn.Identity))
    module.__dict__["_stream_plan"] = plan
    return plan


def _conv(plan: _ConvPlan, x: torch.Tensor, n_out: int) -> torch.Tensor:
    """The SConv1d's NormConv1d on x [B, C_in, T] that holds exactly the samples for n_out outputs."""
    conv = plan.conv
    packed = conv.__dict__.get("_stream_fp16")
    if n_out >= (_GEMM_MAX_OUTPUTS if packed is None else _PACKED_MAX_OUTPUTS) or not plan.direct:
        return plan.norm_conv(x)
    batch, channels = x.shape[0], x.shape[1]
    cols = x.unfold(-1, plan.span, plan.stride)  # [B, C, n_out, span]
    if plan.dilation > 1:
        cols = cols[..., :: plan.dilation]
    cols = cols.transpose(1, 2).reshape(batch * n_out, channels * plan.kernel)
    if packed is not None:
        y = packed.matmul(cols, conv.bias)  # [B * n_out, C_out]
        return y.view(batch, n_out, -1).transpose(1, 2)
    for hook in conv._forward_pre_hooks.values():  # weight norm recomputes `weight` here
        hook(conv, (x,))
    bias = conv.bias
    weight = _weight_t(conv)  # [C * kernel, C_out], channel-major like `cols`
    y = cols @ weight if bias is None else torch.addmm(bias, cols, weight)  # [B * n_out, C_out]
    return y.view(batch, n_out, -1).transpose(1, 2)


def _weight_t(module: nn.Module) -> torch.Tensor:
    """The module's weight as a contiguous [in * kernel, out] matrix, cached on the module and rebuilt when the
    weight changes (replaced, moved, or modified in place other than through `.data`)."""
    weight = module.weight
    if weight.is_inference():  # recomputed on every call (weight norm's pre-hook in inference mode): no cache
        return weight.reshape(weight.shape[0], -1).t()
    version = (weight._version, weight.data_ptr())
    cached = module.__dict__.get("_stream_weight_t")
    if cached is None or cached[0] is not weight or cached[1] != version:
        cached = module.__dict__["_stream_weight_t"] = (weight, version,
                                                        weight.detach().reshape(weight.shape[0], -1).t().contiguous())
    return cached[2]


def linear_step(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`linear(x)` for a few frames x [..., in], multiplied by a cached contiguous weight^T: for the few rows of a
    streaming step MKL reads it 15-40% faster than the [out, in] weight `F.linear` uses (more when the weights
    are not in cache, as in a pipeline that runs many layers in turn)."""
    if torch.is_grad_enabled() and linear.weight.requires_grad:
        return linear(x)
    flat = x.reshape(-1, x.shape[-1])
    packed = linear.__dict__.get("_stream_fp16")
    if packed is not None:
        y = packed.matmul(flat, linear.bias)
    else:
        weight = _weight_t(linear)
        y = flat @ weight if linear.bias is None else torch.addmm(linear.bias, flat, weight)
    return y.view(*x.shape[:-1], y.shape[-1])


def pack_fp16_weights(model: nn.Module, min_weights: int = FP16_MIN_WEIGHTS) -> int:
    """Give each plain convolution (no groups) and linear layer of `model` with at least `min_weights` weights a
    `PackedWeight` for the streaming GEMMs, where float16 holds its weight exactly; call it before weight norm
    is folded (`strip_weight_norm`), so that a weight-normed layer's direction v is what is packed. Returns
    the number of layers packed."""
    count = 0
    with torch.no_grad():
        for module in model.modules():
            if not (isinstance(module, nn.Linear) or (isinstance(module, nn.Conv1d) and module.groups == 1)):
                continue
            normed = hasattr(module, "weight_v")
            weight = (module.weight_v if normed else module.weight).detach().float()
            matrix = weight.reshape(weight.shape[0], -1)  # channel-major like the unfolded columns
            if matrix.numel() < min_weights:
                continue
            # weight norm: w = g * v / |v|, the norm over all but the output dimension
            scale = module.weight_g.detach().float().reshape(-1) / matrix.norm(dim=1) if normed else None
            packed = pack_fp16(matrix, scale)
            if packed is not None:
                module.__dict__["_stream_fp16"] = packed
                count += 1
    return count


def fast_elu(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """`F.elu(x, alpha)` (within 6e-8) about 10x faster on a CPU: ATen's ELU evaluates `expm1` one element
    at a time, `exp` is vectorised. For alpha = 1, elu(x) = max(x, exp(min(x, 0)) - 1) since e^x - 1 >= x."""
    if alpha != 1.0 or x.requires_grad:
        return F.elu(x, alpha)
    return torch.maximum(x, x.clamp(max=0.0).exp_().sub_(1.0))


def conv_step(module, x: torch.Tensor, state: ConvState) -> torch.Tensor:
    """One chunk through an `encodec` SConv1d (causal), x [B, C_in, T] -> [B, C_out, T_out]."""
    plan = _conv_plan(module)
    span, stride = plan.span, plan.stride
    if span == 1 and stride == 1:  # pointwise: no context to carry
        return _conv(plan, x, x.shape[-1]) if x.shape[-1] else _empty(x, plan.conv.out_channels)
    if state.buffer is None:
        state.pending = _cat(state.pending, x)
        if state.pending.shape[-1] < max(plan.need, 1):
            return _empty(x, plan.conv.out_channels)  # a reflect pad needs the first samples of the signal
        pad = plan.padding_total
        buf = F.pad(state.pending, (pad, 0), plan.mode) if pad > 0 else state.pending
        state.pending = None
    else:
        buf = _cat(state.buffer, x)
    n_out = (buf.shape[-1] - span) // stride + 1 if buf.shape[-1] >= span else 0
    if n_out <= 0:
        state.buffer = buf
        return _empty(x, plan.conv.out_channels)
    y = _conv(plan, buf[..., : (n_out - 1) * stride + span], n_out)
    state.buffer = buf[..., n_out * stride:]
    return y


def conv_transpose_step(module, x: torch.Tensor, state: ConvTransposeState) -> torch.Tensor:
    """One chunk through an `encodec` SConvTranspose1d (causal): emits `stride` samples per input step."""
    convtr = module.convtr.convtr
    kernel, stride = convtr.kernel_size[0], convtr.stride[0]
    if not module.causal:
        raise ValueError("streaming needs a causal model (SConvTranspose1d with causal=False found)")
    if state.drop_left is None:
        padding_total = kernel - stride
        state.drop_left = padding_total - math.ceil(padding_total * module.trim_right_ratio)
    if x.shape[-1] == 0:
        return _empty(x, convtr.out_channels)
    y = module.convtr(x)  # [B, C, (T - 1) * stride + kernel], bias added everywhere
    if state.tail is not None:
        y = torch.cat([y[..., : state.tail.shape[-1]] + state.tail, y[..., state.tail.shape[-1]:]], dim=-1)
    n_out = x.shape[-1] * stride
    tail = y[..., n_out:]
    if convtr.bias is not None:
        tail = tail - convtr.bias[:, None]  # the next chunk adds its own bias to these positions
    state.tail = tail
    out = y[..., :n_out]
    if state.drop_left:
        dropped = min(state.drop_left, out.shape[-1])
        out, state.drop_left = out[..., dropped:], state.drop_left - dropped
    return out


def lstm_step(module, x: torch.Tensor, state: LSTMState) -> torch.Tensor:
    """One chunk through an `encodec` SLSTM, carrying (h, c)."""
    if x.shape[-1] == 0:
        return x
    seq = x.permute(2, 0, 1)  # [T, B, C]
    y, state.hidden = module.lstm(seq, state.hidden)
    if module.skip:
        y = y + seq
    return y.permute(1, 2, 0)


def residual_step(module, x: torch.Tensor, states: ModuleStates, name: str) -> torch.Tensor:
    """SEANet residual block: shortcut(x) + block(x), aligning branches that emit at different times."""
    state = states.get(name, ResidualState)
    short = _cat(state.shortcut, step_module(module.shortcut, x, states, f"{name}.shortcut"))
    block = _cat(state.block, step_module(module.block, x, states, f"{name}.block"))
    n = min(short.shape[-1], block.shape[-1])
    if n == short.shape[-1] == block.shape[-1]:  # aligned branches (the usual case): nothing waits
        state.shortcut = state.block = None
        return short + block
    state.shortcut, state.block = short[..., n:], block[..., n:]
    return short[..., :n] + block[..., :n]


_ENCODEC: dict = {}


def _encodec_types() -> dict:
    """The `encodec` module classes, imported once on first use (not at import time)."""
    if not _ENCODEC:
        from encodec.modules import SConv1d, SConvTranspose1d, SEANetDecoder, SEANetEncoder, SLSTM
        from encodec.modules.seanet import SEANetResnetBlock

        _ENCODEC.update(conv=SConv1d, convtr=SConvTranspose1d, seanet=(SEANetEncoder, SEANetDecoder), lstm=SLSTM,
                        resblock=SEANetResnetBlock)
    return _ENCODEC


def step_module(module: nn.Module, x: torch.Tensor, states: ModuleStates, name: str = "") -> torch.Tensor:
    """Run one chunk x [B, C, T] through `module`, updating its per-session `states`."""
    types = _encodec_types()
    if isinstance(module, types["conv"]):
        return conv_step(module, x, states.get(name, ConvState))
    if type(module) is nn.ELU:  # the SEANet activation, without the module call overhead
        return fast_elu(x, module.alpha)
    if isinstance(module, _ELEMENTWISE):
        return module(x)
    if hasattr(module, "stream_step"):  # the project's own streamable modules
        return module.stream_step(x, states, name)
    if isinstance(module, types["seanet"]):
        return step_module(module.model, x, states, f"{name}.model")
    if isinstance(module, nn.Sequential):
        for index, child in enumerate(module):
            x = step_module(child, x, states, f"{name}.{index}")
        return x
    if isinstance(module, types["convtr"]):
        return conv_transpose_step(module, x, states.get(name, ConvTransposeState))
    if isinstance(module, types["lstm"]):
        return lstm_step(module, x, states.get(name, LSTMState))
    if isinstance(module, types["resblock"]):
        return residual_step(module, x, states, name)
    raise TypeError(f"no streaming rule for {type(module).__name__} at {name or 'root'}")
