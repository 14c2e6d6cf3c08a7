"""Triton kernels of :mod:`mambaeye.ops.bias_gelu` (imported on first use, so that TRITON_INTERPRET set by a test
or by the user before the first call still applies).

x is addressed as (B, C, L) with L contiguous and any batch/channel strides, as R = B * C rows of L. A program owns
a (BLOCK_R, BLOCK_L) tile of about TILE elements: BLOCK_L = next_power_of_2(L) up to 1024 positions, and as many
rows as fill the tile (small maps - VMamba's 14x14 and 7x7 stages - would otherwise give one tiny program per
row). Everything is computed in float32 (float64 for float64 x). The backward writes dx and, for dbias, one
partial sum per (row, position block) (deterministic, no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._layout import strides_by_vector
from ..selective_scan.triton_scan import compute_dtype

TILE = 4096  # elements a program
# Positions a program's rows span, at most. H100, VMamba-T's MLP at batch 128 (benchmarks/bias_gelu_sweep.py,
# benchmarks/NOTES.md): at the 56x56 stage (L 3136) 256 positions instead of 1024 take the forward 306 -> 256 us and
# the backward 448 -> 375 us; at 28x28 (L 784) 152 / 222 vs 149 / 218 us; L <= 256 is unchanged.
MAX_BLOCK_L = 256


@triton.jit
def _gelu_and_grad(v, GRAD: tl.constexpr):
    """gelu(v) = v Phi(v) (exact, erf) or, with GRAD, gelu'(v) = Phi(v) + v phi(v)."""
    cdf = 0.5 * (1.0 + tl.math.erf(v * 0.7071067811865476))
    if GRAD:
        return cdf + v * tl.exp(-0.5 * v * v) * 0.3989422804014327
    return v * cdf


@triton.jit
def _tile(pid, n_lblocks, rows, dim, length, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr):
    """Program ``pid``'s rows (as batch and channel indices, both int64: in a batch-second layout the channel
    stride is the large one), positions and mask."""
    offs_r = (pid // n_lblocks) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_l = (pid % n_lblocks) * BLOCK_L + tl.arange(0, BLOCK_L)
    mask = (offs_r < rows)[:, None] & (offs_l < length)[None, :]
    return (offs_r // dim).to(tl.int64), (offs_r % dim).to(tl.int64), offs_l, mask


@triton.jit
def _bias_gelu_fwd_kernel(x_ptr, bias_ptr, y_ptr, rows, dim, length, n_lblocks, sx_b, sx_c, sy_b, sy_c,
                          VEC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr, DT: tl.constexpr):
    """``length`` and the strides come divided by VEC (see :func:`mambaeye.ops._layout.strides_by_vector`)."""
    length, sx_b, sx_c, sy_b, sy_c = length * VEC, sx_b * VEC, sx_c * VEC, sy_b * VEC, sy_c * VEC
    b, c, offs_l, mask = _tile(tl.program_id(0), n_lblocks, rows, dim, length, BLOCK_R, BLOCK_L)
    bias = tl.load(bias_ptr + c, mask=c < dim, other=0.0).to(DT)
    x = tl.load(x_ptr + (b * sx_b + c * sx_c)[:, None] + offs_l[None, :], mask=mask, other=0.0).to(DT)
    y = _gelu_and_grad(x + bias[:, None], False)
    tl.store(y_ptr + (b * sy_b + c * sy_c)[:, None] + offs_l[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bias_gelu_bwd_kernel(dy_ptr, x_ptr, bias_ptr, dx_ptr, dbias_part_ptr, rows, dim, length, n_lblocks,
                          sdy_b, sdy_c, sx_b, sx_c, sdx_b, sdx_c,
                          VEC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr, DT: tl.constexpr):
    """``length`` and the strides come divided by VEC (see :func:`mambaeye.ops._layout.strides_by_vector`)."""
    length, sdy_b, sdy_c, sx_b, sx_c = length * VEC, sdy_b * VEC, sdy_c * VEC, sx_b * VEC, sx_c * VEC
    sdx_b, sdx_c = sdx_b * VEC, sdx_c * VEC
    pid = tl.program_id(0)
    b, c, offs_l, mask = _tile(pid, n_lblocks, rows, dim, length, BLOCK_R, BLOCK_L)
    bias = tl.load(bias_ptr + c, mask=c < dim, other=0.0).to(DT)
    x = tl.load(x_ptr + (b * sx_b + c * sx_c)[:, None] + offs_l[None, :], mask=mask, other=0.0).to(DT)
    dy = tl.load(dy_ptr + (b * sdy_b + c * sdy_c)[:, None] + offs_l[None, :], mask=mask, other=0.0).to(DT)
    dx = tl.where(mask, dy * _gelu_and_grad(x + bias[:, None], True), 0.0)
    tl.store(dx_ptr + (b * sdx_b + c * sdx_c)[:, None] + offs_l[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)
    # partials laid out (C, B, n_lblocks): dbias is one sum over the last two dimensions
    part = dbias_part_ptr + (c * (rows // dim) + b) * n_lblocks + pid % n_lblocks
    tl.store(part, tl.sum(dx, 1), mask=(b * dim + c) < rows)


def _config(rows: int, length: int, block_l: int | None = None, tile: int = TILE) -> tuple[int, int, int, int]:
    """(BLOCK_R, BLOCK_L, number of position blocks, number of programs). ``block_l`` / ``tile`` replace the
    default BLOCK_L (next_power_of_2(L), at most MAX_BLOCK_L) and TILE for benchmarks/bias_gelu_sweep.py."""
    if block_l is None:
        block_l = min(MAX_BLOCK_L, triton.next_power_of_2(max(length, 1)))
    block_r = max(1, tile // block_l)
    n_lblocks = triton.cdiv(length, block_l)
    return block_r, block_l, n_lblocks, triton.cdiv(rows, block_r) * n_lblocks


def bias_gelu_fwd(x: Tensor, bias: Tensor) -> Tensor:
    """x (B, C, L) with L contiguous, bias (C,) -> gelu(x + bias) (B, C, L) in x's dtype (x's layout when dense)."""
    batch, dim, length = x.shape
    _, DT = compute_dtype(x)
    y = torch.empty_like(x)
    block_r, block_l, n_lblocks, programs = _config(batch * dim, length)
    vec, _, (length_v, *strides) = strides_by_vector(length, x, y)
    _bias_gelu_fwd_kernel[(programs,)](
        x, bias, y, batch * dim, dim, length_v, n_lblocks, *strides,
        VEC=vec, BLOCK_R=block_r, BLOCK_L=block_l, DT=DT, num_warps=4,
    )
    return y


def bias_gelu_bwd(dy: Tensor, x: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """(dx in x's dtype, dbias in bias's dtype) of :func:`bias_gelu_fwd`; dy (B, C, L) with L contiguous."""
    batch, dim, length = x.shape
    acc_dtype, DT = compute_dtype(x)
    block_r, block_l, n_lblocks, programs = _config(batch * dim, length)
    dx = torch.empty_like(x)
    part = torch.empty(dim, batch, n_lblocks, device=x.device, dtype=acc_dtype)
    vec, _, (length_v, *strides) = strides_by_vector(length, dy, x, dx)
    _bias_gelu_bwd_kernel[(programs,)](
        dy, x, bias, dx, part, batch * dim, dim, length_v, n_lblocks, *strides,
        VEC=vec, BLOCK_R=block_r, BLOCK_L=block_l, DT=DT, num_warps=4,
    )
    return dx, part.sum((1, 2)).to(bias.dtype)
