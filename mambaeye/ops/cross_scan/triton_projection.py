"""Triton kernel of :mod:`mambaeye.ops.cross_scan.projection` (imported on first use, so that TRITON_INTERPRET
set by a test before the first call still applies).

    delta[b, k*D + d, l] = sum_r W[k, d, r] dts[b, k, r, l]

A program owns a (BLOCK_D, BLOCK_L) tile of one (batch, direction) and computes it as one ``tl.dot`` of the
(BLOCK_D, BLOCK_R) weight block and the (BLOCK_R, BLOCK_L) dts block, the rank zero-padded to BLOCK_R >= 16 (the
tensor cores' smallest K). Inputs in float16 / bfloat16 (the weight is cast to dts' dtype, as autocast casts it
for a matmul), float32 accumulation, output in dts' dtype. dts may be any view whose positions are contiguous
(VMamba's is a slice of the x_proj output). cuBLAS runs the same product as K * B small GEMMs whose reduction is
only R = 6..48 long: 3x slower on an H100 (benchmarks/NOTES.md).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _dt_projection_kernel(w_ptr, x_ptr, y_ptr, dim, rank, length, n_lblocks, sx_b, sx_k, sx_r, sy_b,
                          BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_R: tl.constexpr):
    pid = tl.program_id(0)
    k = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_d = (pid // n_lblocks) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_l = (pid % n_lblocks) * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_r = tl.arange(0, BLOCK_R)
    d_mask = offs_d < dim
    l_mask = offs_l < length
    r_mask = offs_r < rank
    w = tl.load(w_ptr + (k * dim + offs_d)[:, None] * rank + offs_r[None, :],
                mask=d_mask[:, None] & r_mask[None, :], other=0.0).to(y_ptr.dtype.element_ty)  # (BD, BR)
    x = tl.load(x_ptr + b * sx_b + k * sx_k + offs_r[:, None] * sx_r + offs_l[None, :],
                mask=r_mask[:, None] & l_mask[None, :], other=0.0)  # (BR, BL)
    y = tl.dot(w, x)  # (BD, BL) float32
    rows = (k * dim + offs_d).to(tl.int64) * length
    tl.store(y_ptr + b * sy_b + rows[:, None] + offs_l[None, :], y.to(y_ptr.dtype.element_ty),
             mask=d_mask[:, None] & l_mask[None, :])


def _config(length: int) -> tuple[int, int]:
    """(BLOCK_D, BLOCK_L). H100, VMamba-T's four stages at batch 128 (us a call, 64x64 / 32x256 / 64x128):
    56² 131 / 120 / 137, 28² 68 / 68 / 74, 14² 62 / 67 / 58, 7² 37 / 169 / 60 - long tiles pay on long maps."""
    return (32, 256) if length >= 512 else (64, 64)


def dt_projection_fwd(weight: Tensor, dts: Tensor) -> Tensor:
    """weight (K, D, R) contiguous, dts (B, K, R, L) float16/bfloat16 with L contiguous -> (B, K*D, L) in dts'
    dtype."""
    batch, k, rank, length = dts.shape
    dim = weight.shape[1]
    y = torch.empty(batch, k * dim, length, device=dts.device, dtype=dts.dtype)
    block_d, block_l = _config(length)
    n_lblocks = triton.cdiv(length, block_l)
    grid = (triton.cdiv(dim, block_d) * n_lblocks, k, batch)
    _dt_projection_kernel[grid](
        weight, dts, y, dim, rank, length, n_lblocks, dts.stride(0), dts.stride(1), dts.stride(2), y.stride(0),
        BLOCK_D=block_d, BLOCK_L=block_l, BLOCK_R=max(16, triton.next_power_of_2(rank)), num_warps=4,
    )
    return y
