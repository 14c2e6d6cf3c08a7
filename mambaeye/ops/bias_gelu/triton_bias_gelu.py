"""Triton kernels of :mod:`mambaeye.ops.bias_gelu` (imported on first use, so that TRITON_INTERPRET set by a test
or by the user before the first call still applies).

x is addressed as (B, C, L) with L contiguous and any batch/channel strides. One program owns BLOCK_L positions
of one (batch, channel) row, so the bias is one scalar a program; everything is computed in float32 (float64 for
float64 x). The backward writes dx and one partial sum of dx a program for dbias (deterministic, no atomics).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..selective_scan.triton_scan import compute_dtype

BLOCK_L = 1024


@triton.jit
def _gelu_and_grad(v, GRAD: tl.constexpr):
    """gelu(v) = v Phi(v) (exact, erf) or, with GRAD, gelu'(v) = Phi(v) + v phi(v)."""
    cdf = 0.5 * (1.0 + tl.math.erf(v * 0.7071067811865476))
    if GRAD:
        return cdf + v * tl.exp(-0.5 * v * v) * 0.3989422804014327
    return v * cdf


@triton.jit
def _row(pid, n_lblocks, dim, BLOCK: tl.constexpr):
    """Program ``pid``'s batch, channel and positions (the row's L is split into n_lblocks blocks)."""
    row = pid // n_lblocks
    offs = (pid % n_lblocks) * BLOCK + tl.arange(0, BLOCK)
    return (row // dim).to(tl.int64), (row % dim).to(tl.int64), offs


@triton.jit
def _bias_gelu_fwd_kernel(x_ptr, bias_ptr, y_ptr, dim, length, n_lblocks, sx_b, sx_c, sy_b, sy_c,
                          BLOCK: tl.constexpr, DT: tl.constexpr):
    b, c, offs = _row(tl.program_id(0), n_lblocks, dim, BLOCK)
    mask = offs < length
    v = tl.load(x_ptr + b * sx_b + c * sx_c + offs, mask=mask, other=0.0).to(DT) + tl.load(bias_ptr + c).to(DT)
    tl.store(y_ptr + b * sy_b + c * sy_c + offs, _gelu_and_grad(v, False).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bias_gelu_bwd_kernel(dy_ptr, x_ptr, bias_ptr, dx_ptr, dbias_part_ptr, dim, length, n_lblocks,
                          sdy_b, sdy_c, sx_b, sx_c, sdx_b, sdx_c, BLOCK: tl.constexpr, DT: tl.constexpr):
    pid = tl.program_id(0)
    b, c, offs = _row(pid, n_lblocks, dim, BLOCK)
    mask = offs < length
    v = tl.load(x_ptr + b * sx_b + c * sx_c + offs, mask=mask, other=0.0).to(DT) + tl.load(bias_ptr + c).to(DT)
    dy = tl.load(dy_ptr + b * sdy_b + c * sdy_c + offs, mask=mask, other=0.0).to(DT)
    dx = tl.where(mask, dy * _gelu_and_grad(v, True), 0.0)
    tl.store(dx_ptr + b * sdx_b + c * sdx_c + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    # partials laid out (C, B * n_lblocks) so that dbias is one sum over the last dimension
    tl.store(dbias_part_ptr + c * (tl.num_programs(0) // dim) + b * n_lblocks + pid % n_lblocks, tl.sum(dx, 0))


def _grid(batch: int, dim: int, length: int) -> tuple[int, int]:
    block = min(BLOCK_L, triton.next_power_of_2(max(length, 1)))
    return block, triton.cdiv(length, block)


def bias_gelu_fwd(x: Tensor, bias: Tensor) -> Tensor:
    """x (B, C, L) with L contiguous, bias (C,) -> gelu(x + bias) (B, C, L) in x's dtype (x's layout when dense)."""
    batch, dim, length = x.shape
    _, DT = compute_dtype(x)
    y = torch.empty_like(x)
    block, n_lblocks = _grid(batch, dim, length)
    _bias_gelu_fwd_kernel[(batch * dim * n_lblocks,)](
        x, bias, y, dim, length, n_lblocks, x.stride(0), x.stride(1), y.stride(0), y.stride(1),
        BLOCK=block, DT=DT, num_warps=4,
    )
    return y


def bias_gelu_bwd(dy: Tensor, x: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """(dx in x's dtype, dbias in bias's dtype) of :func:`bias_gelu_fwd`; dy (B, C, L) with L contiguous."""
    batch, dim, length = x.shape
    acc_dtype, DT = compute_dtype(x)
    block, n_lblocks = _grid(batch, dim, length)
    dx = torch.empty_like(x)
    part = torch.empty(dim, batch * n_lblocks, device=x.device, dtype=acc_dtype)
    _bias_gelu_bwd_kernel[(batch * dim * n_lblocks,)](
        dy, x, bias, dx, part, dim, length, n_lblocks, dy.stride(0), dy.stride(1), x.stride(0), x.stride(1),
        dx.stride(0), dx.stride(1), BLOCK=block, DT=DT, num_warps=4,
    )
    return dx, part.sum(1).to(bias.dtype)
