"""float16-packed weights for the few-row matrix products of streaming inference (codec, speech LM).

A streaming step (a codec frame or two, one LM token per session) multiplies a few rows by every
weight matrix once, so it is bound by reading the weights, and MKL's float32 GEMM reads them for
a row or two at 5-10 GB/s on the 2-core machines here. fbgemm's float16-weight GEMM
(`torch.fbgemm_linear_fp16_weight`: weights in float16, activations and sums in float32) does the
same product 2-10x faster. `pack_fp16` packs a matrix only where float16 holds it **exactly** (the
shipped codec and speech LM are stored in float16), so the results differ from float32 only in the
order of the sums; elsewhere (float32 training runs, PyTorch without fbgemm, as on ARM) it returns
None and the float32 GEMM runs. Each row is computed on its own: a row's result does not depend on
how many rows go with it. The two fbgemm functions are marked deprecated in PyTorch 2.11 (pinned in
the lock); if a release drops them, `pack_fp16` returns None and nothing else changes.
"""

from __future__ import annotations

import functools
import warnings

import torch

warnings.filterwarnings("ignore", message=r"fbgemm_(pack_gemm_matrix_fp16|linear_fp16_weight).* is deprecated")


class PackedWeight:
    """A weight matrix [out, in * kernel] in fbgemm's float16 packing, with an optional float32 scale per output
    (a weight-normed layer's g / |v|); `matmul` gives what the float32 layer would, up to the order of sums.
    Made once at load time, for inference: a weight changed later (training) is not seen."""

    def __init__(self, matrix: torch.Tensor, scale: torch.Tensor | None = None):
        self.packed = torch.fbgemm_pack_gemm_matrix_fp16(matrix.float().contiguous())
        self.zeros = matrix.new_zeros(matrix.shape[0], dtype=torch.float32)
        self.scale = scale

    def matmul(self, rows: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """rows [N, in * kernel] float32 -> [N, out] float32."""
        if self.scale is None:
            return torch.fbgemm_linear_fp16_weight(rows, self.packed, self.zeros if bias is None else bias)
        y = torch.fbgemm_linear_fp16_weight(rows, self.packed, self.zeros)
        return y.mul_(self.scale) if bias is None else torch.addcmul(bias, y, self.scale)


@functools.cache
def fbgemm_available() -> bool:
    """Whether this PyTorch packs and multiplies float16 weights through fbgemm (x86 builds do)."""
    try:
        PackedWeight(torch.ones(8, 8)).matmul(torch.ones(1, 8), None)
    except (AttributeError, RuntimeError):
        return False
    return True


def pack_fp16(matrix: torch.Tensor, scale: torch.Tensor | None = None) -> PackedWeight | None:
    """A `PackedWeight` of `matrix` [out, in], or None where float16 does not hold it exactly or fbgemm is
    missing (PyTorch builds for other processors than x86)."""
    matrix = matrix.detach().float()
    if not fbgemm_available() or not torch.equal(matrix.half().float(), matrix):
        return None
    return PackedWeight(matrix, scale)
