"""Triton kernels of :mod:`mambaeye.ops.causal_conv1d` (imported on first use, so that TRITON_INTERPRET set by a
test or by the user before the first call still applies).

Tiles are (BLOCK_D, BLOCK_L) with the lanes along L, the contiguous dimension: each tap is one coalesced load of
the tile shifted by its lag, served mostly from L1.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..selective_scan.triton_scan import compute_dtype

BLOCK_D, BLOCK_L = 4, 256


@triton.jit
def _conv_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, dim, length, sx_b, sx_d, sy_b, sy_d,
                     WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, REVERSE: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, DT: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_l = tl.program_id(2) * BLOCK_L + tl.arange(0, BLOCK_L)
    d_mask = offs_d < dim
    x_row = x_ptr + b * sx_b + offs_d[:, None] * sx_d
    acc = tl.zeros((BLOCK_D, BLOCK_L), dtype=DT)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_d, mask=d_mask, other=0.0).to(DT)[:, None]
    for j in tl.static_range(WIDTH):  # lag j uses tap K-1-j
        w = tl.load(w_ptr + offs_d * WIDTH + (WIDTH - 1 - j), mask=d_mask, other=0.0).to(DT)
        src = offs_l + j if REVERSE else offs_l - j
        m = d_mask[:, None] & (src[None, :] >= 0) & (src[None, :] < length)
        acc += w[:, None] * tl.load(x_row + src[None, :], mask=m, other=0.0).to(DT)
    if SILU:
        acc = acc * tl.sigmoid(acc)
    mask = d_mask[:, None] & (offs_l[None, :] < length)
    tl.store(y_ptr + b * sy_b + offs_d[:, None] * sy_d + offs_l[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=mask)

@triton.jit
def _conv_bwd_grad_kernel(x_ptr, w_ptr, b_ptr, dy_ptr, g_ptr, dw_ptr, db_ptr, dim, length,
                          sx_b, sx_d, sdy_b, sdy_d,
                          WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                          REVERSE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, DT: tl.constexpr):
    """g = dy * act'(pre) into a contiguous (B, D, L) buffer; dweight and dbias partial sums."""
    b = tl.program_id(1).to(tl.int64)
    offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_l = tl.program_id(2) * BLOCK_L + tl.arange(0, BLOCK_L)
    d_mask = offs_d < dim
    mask = d_mask[:, None] & (offs_l[None, :] < length)
    x_row = x_ptr + b * sx_b + offs_d[:, None] * sx_d
    g = tl.load(dy_ptr + b * sdy_b + offs_d[:, None] * sdy_d + offs_l[None, :], mask=mask,
                other=0.0).to(DT)
    if SILU:  # recompute the pre-activation
        pre = tl.zeros((BLOCK_D, BLOCK_L), dtype=DT)
        if HAS_BIAS:
            pre += tl.load(b_ptr + offs_d, mask=d_mask, other=0.0).to(DT)[:, None]
        for j in tl.static_range(WIDTH):
            w = tl.load(w_ptr + offs_d * WIDTH + (WIDTH - 1 - j), mask=d_mask, other=0.0).to(DT)
            src = offs_l + j if REVERSE else offs_l - j
            m = d_mask[:, None] & (src[None, :] >= 0) & (src[None, :] < length)
            pre += w[:, None] * tl.load(x_row + src[None, :], mask=m, other=0.0).to(DT)
        sig = tl.sigmoid(pre)
        g = g * sig * (1.0 + pre * (1.0 - sig))
    g = tl.where(mask, g, 0.0)
    tl.store(g_ptr + (b * dim + offs_d[:, None]) * length + offs_l[None, :], g, mask=mask)
    if HAS_BIAS:
        tl.atomic_add(db_ptr + offs_d, tl.sum(g, 1), mask=d_mask, sem="relaxed")
    for j in tl.static_range(WIDTH):
        src = offs_l + j if REVERSE else offs_l - j
        m = d_mask[:, None] & (src[None, :] >= 0) & (src[None, :] < length)
        xs = tl.load(x_row + src[None, :], mask=m, other=0.0).to(DT)
        tl.atomic_add(dw_ptr + offs_d * WIDTH + (WIDTH - 1 - j), tl.sum(g * xs, 1), mask=d_mask, sem="relaxed")

@triton.jit
def _conv_bwd_dx_kernel(g_ptr, w_ptr, dx_ptr, dim, length, sdx_b, sdx_d,
                        WIDTH: tl.constexpr, REVERSE: tl.constexpr, BLOCK_D: tl.constexpr,
                        BLOCK_L: tl.constexpr, DT: tl.constexpr):
    """dx[l] = sum_j w[K-1-j] g[l + j] (causal) or g[l - j] (reverse): the transposed conv."""
    b = tl.program_id(1).to(tl.int64)
    offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_l = tl.program_id(2) * BLOCK_L + tl.arange(0, BLOCK_L)
    d_mask = offs_d < dim
    g_row = g_ptr + (b * dim + offs_d[:, None]) * length
    acc = tl.zeros((BLOCK_D, BLOCK_L), dtype=DT)
    for j in tl.static_range(WIDTH):
        w = tl.load(w_ptr + offs_d * WIDTH + (WIDTH - 1 - j), mask=d_mask, other=0.0).to(DT)
        dst = offs_l - j if REVERSE else offs_l + j
        m = d_mask[:, None] & (dst[None, :] >= 0) & (dst[None, :] < length)
        acc += w[:, None] * tl.load(g_row + dst[None, :], mask=m, other=0.0)
    mask = d_mask[:, None] & (offs_l[None, :] < length)
    tl.store(dx_ptr + b * sdx_b + offs_d[:, None] * sdx_d + offs_l[None, :], acc.to(dx_ptr.dtype.element_ty),
             mask=mask)


def _grid(batch: int, dim: int, length: int) -> tuple[int, int, int]:
    return (triton.cdiv(dim, BLOCK_D), batch, triton.cdiv(length, BLOCK_L))


def conv_fwd(x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool, reverse: bool) -> Tensor:
    """y in x's layout when x is dense (channel-major stays channel-major), else contiguous."""
    batch, dim, length = x.shape
    y = torch.empty_like(x)
    _conv_fwd_kernel[_grid(batch, dim, length)](
        x, weight, bias if bias is not None else weight, y, dim, length, x.stride(0), x.stride(1),
        y.stride(0), y.stride(1), WIDTH=weight.shape[1], HAS_BIAS=bias is not None, SILU=silu, REVERSE=reverse,
        BLOCK_D=BLOCK_D, BLOCK_L=BLOCK_L, DT=compute_dtype(x)[1],
    )
    return y


def conv_bwd(dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool,
             reverse: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """(dx in x's layout, dweight, dbias or None); g = dy * act'(pre) goes through one contiguous (B, D, L)
    buffer in the accumulation dtype (float32, float64 for float64 x)."""
    batch, dim, length = x.shape
    acc_dtype, DT = compute_dtype(x)
    g = torch.empty(batch, dim, length, device=x.device, dtype=acc_dtype)
    dw = torch.zeros(weight.shape, device=x.device, dtype=acc_dtype)
    db = torch.zeros(dim, device=x.device, dtype=acc_dtype)
    grid = _grid(batch, dim, length)
    width = weight.shape[1]
    _conv_bwd_grad_kernel[grid](
        x, weight, bias if bias is not None else weight, dy, g, dw, db, dim, length, x.stride(0), x.stride(1),
        dy.stride(0), dy.stride(1), WIDTH=width, HAS_BIAS=bias is not None, SILU=silu, REVERSE=reverse,
        BLOCK_D=BLOCK_D, BLOCK_L=BLOCK_L, DT=DT,
    )
    dx = torch.empty_like(x)
    _conv_bwd_dx_kernel[grid](g, weight, dx, dim, length, dx.stride(0), dx.stride(1), WIDTH=width,
                              REVERSE=reverse, BLOCK_D=BLOCK_D, BLOCK_L=BLOCK_L, DT=DT)
    return dx, dw.to(weight.dtype), db.to(bias.dtype) if bias is not None else None
