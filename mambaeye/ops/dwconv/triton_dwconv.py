"""Triton kernel of :mod:`mambaeye.ops.dwconv` (imported on first use, so that TRITON_INTERPRET set by a test or by
the user before the first call still applies).

x is addressed as B * C planes of H x W (rows contiguous; any batch/channel strides). A program owns a
(BLOCK_P planes, BLOCK_H rows, BLOCK_W columns) tile of about TILE outputs - several whole planes for small maps
(VMamba's 14x14 and 7x7 stages), a band of rows for large ones - and sums the K * K taps as loads of the tile shifted
by a constant offset (dh * W + dw) with row and column masks for the zero padding; the neighbours come from L1/L2, so
x is read from memory about once and y written once. A first version on flattened positions (row and column by
integer division, a mask per tap and element) was 2x slower than PyTorch's conv + SiLU (H100: 804 vs 418 us at
VMamba-T's first stage). Arithmetic in float32 (float64 for float64 x), bias and SiLU applied in registers.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..selective_scan.triton_scan import compute_dtype

TILE = 1024  # outputs a program: 8 a thread at 4 warps (4096 spilled: 32 outputs x 9 taps in flight)


@triton.jit
def _dwconv_silu_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, pre_ptr, planes, channels, height, width, n_hblocks, sx_b,
                            sx_c, K: tl.constexpr, HAS_BIAS: tl.constexpr, SAVE_PRE: tl.constexpr,
                            BLOCK_P: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, DT: tl.constexpr):
    pid = tl.program_id(0)
    offs_p = (pid // n_hblocks) * BLOCK_P + tl.arange(0, BLOCK_P)  # plane = b * C + c
    offs_h = (pid % n_hblocks) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_w = tl.arange(0, BLOCK_W)
    p_ok = offs_p < planes
    b = (offs_p // channels).to(tl.int64)
    c = offs_p % channels
    # (BLOCK_P, BLOCK_H, BLOCK_W) pointers to the centre tap; a tap (dh, dw) is the constant offset dh * W + dw
    centre = x_ptr + (b * sx_b + c * sx_c)[:, None, None] + (offs_h * width)[None, :, None] + offs_w[None, None, :]
    acc = tl.zeros((BLOCK_P, BLOCK_H, BLOCK_W), dtype=DT)
    for kh in tl.static_range(K):
        hh = offs_h + (kh - K // 2)
        row_ok = p_ok[:, None] & ((hh >= 0) & (hh < height))[None, :]  # (BLOCK_P, BLOCK_H); zero padding
        for kw in tl.static_range(K):
            ww = offs_w + (kw - K // 2)
            col_ok = (ww >= 0) & (ww < width)
            tap = row_ok[:, :, None] & col_ok[None, None, :]
            xv = tl.load(centre + ((kh - K // 2) * width + (kw - K // 2)), mask=tap, other=0.0)
            wv = tl.load(w_ptr + c * (K * K) + (kh * K + kw), mask=p_ok, other=0.0)
            acc += xv.to(DT) * wv.to(DT)[:, None, None]
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=p_ok, other=0.0).to(DT)[:, None, None]
    y = acc * tl.sigmoid(acc)
    out = ((offs_p.to(tl.int64) * (height * width))[:, None, None] + (offs_h * width)[None, :, None]
           + offs_w[None, None, :])  # y and pre are contiguous (B, C, H, W)
    mask = p_ok[:, None, None] & (offs_h < height)[None, :, None] & (offs_w < width)[None, None, :]
    tl.store(y_ptr + out, y.to(y_ptr.dtype.element_ty), mask=mask)
    if SAVE_PRE:
        tl.store(pre_ptr + out, acc.to(pre_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dwconv_bwd_kernel(dpre_ptr, x_ptr, w_ptr, dx_ptr, part_ptr, planes, channels, height, width, n_hblocks, sx_b,
                       sx_c, K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
                       DT: tl.constexpr):
    """dx = the depthwise conv of dpre with the kernel flipped; per (plane, row block): sum_{h, w} dpre[h, w] *
    x[h + kh - K//2, w + kw - K//2] for every tap, then sum dpre (the bias), as K * K + 1 partials."""
    pid = tl.program_id(0)
    hblock = pid % n_hblocks
    offs_p = (pid // n_hblocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_h = hblock * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_w = tl.arange(0, BLOCK_W)
    p_ok = offs_p < planes
    b = (offs_p // channels).to(tl.int64)
    c = offs_p % channels
    out = ((offs_p.to(tl.int64) * (height * width))[:, None, None] + (offs_h * width)[None, :, None]
           + offs_w[None, None, :])  # dpre and dx are contiguous (B, C, H, W)
    x_centre = x_ptr + (b * sx_b + c * sx_c)[:, None, None] + (offs_h * width)[None, :, None] + offs_w[None, None, :]
    mask = p_ok[:, None, None] & (offs_h < height)[None, :, None] & (offs_w < width)[None, None, :]
    g = tl.load(dpre_ptr + out, mask=mask, other=0.0).to(DT)
    part = part_ptr + (offs_p.to(tl.int64) * n_hblocks + hblock) * (K * K + 1)
    dx = tl.zeros((BLOCK_P, BLOCK_H, BLOCK_W), dtype=DT)
    for kh in tl.static_range(K):
        dh = kh - K // 2
        for kw in tl.static_range(K):
            dw = kw - K // 2
            wv = tl.load(w_ptr + c * (K * K) + (kh * K + kw), mask=p_ok, other=0.0).to(DT)
            # dx[h, w] gets dpre[h - dh, w - dw] * w[kh, kw]
            hh, ww = offs_h - dh, offs_w - dw
            src = (p_ok[:, None, None] & ((hh >= 0) & (hh < height))[None, :, None]
                   & ((ww >= 0) & (ww < width))[None, None, :])
            gv = tl.load(dpre_ptr + out - (dh * width + dw), mask=src, other=0.0).to(DT)
            dx += gv * wv[:, None, None]
            # dw[kh, kw] gets dpre[h, w] * x[h + dh, w + dw]
            hh, ww = offs_h + dh, offs_w + dw
            tap = (p_ok[:, None, None] & ((hh >= 0) & (hh < height))[None, :, None]
                   & ((ww >= 0) & (ww < width))[None, None, :])
            xv = tl.load(x_centre + (dh * width + dw), mask=tap, other=0.0).to(DT)
            tl.store(part + (kh * K + kw), tl.sum(tl.sum(g * xv, 2), 1), mask=p_ok)
    tl.store(part + K * K, tl.sum(tl.sum(g, 2), 1), mask=p_ok)
    tl.store(dx_ptr + out, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _config(planes: int, height: int, width: int) -> tuple[int, int, int, int, int]:
    """(BLOCK_P, BLOCK_H, BLOCK_W, number of row blocks, number of programs): whole rows, as many as make about
    TILE outputs, and several planes when one is smaller than that."""
    block_w = triton.next_power_of_2(width)
    block_h = min(triton.next_power_of_2(height), max(1, TILE // block_w))
    block_p = max(1, TILE // (block_w * block_h))
    n_hblocks = triton.cdiv(height, block_h)
    return block_p, block_h, block_w, n_hblocks, triton.cdiv(planes, block_p) * n_hblocks


def dwconv_silu_fwd(x: Tensor, weight: Tensor, bias: Tensor | None, save_pre: bool) -> tuple[Tensor, Tensor]:
    """x (B, C, H, W) with H, W contiguous, weight (C, 1, K, K) contiguous, bias (C,) or None -> (silu(depthwise
    conv with zero padding K // 2), the conv itself when ``save_pre`` else an empty tensor), both contiguous
    (B, C, H, W) in x's dtype."""
    batch, channels, height, width = x.shape
    _, DT = compute_dtype(x)
    y = torch.empty(batch, channels, height, width, device=x.device, dtype=x.dtype)
    pre = torch.empty_like(y) if save_pre else y.new_empty(0)
    block_p, block_h, block_w, n_hblocks, programs = _config(batch * channels, height, width)
    _dwconv_silu_fwd_kernel[(programs,)](
        x, weight, bias if bias is not None else weight, y, pre, batch * channels, channels, height, width,
        n_hblocks, x.stride(0), x.stride(1), K=weight.shape[-1], HAS_BIAS=bias is not None, SAVE_PRE=save_pre,
        BLOCK_P=block_p, BLOCK_H=block_h, BLOCK_W=block_w, DT=DT, num_warps=4,
    )
    return y, pre


def dwconv_bwd(dpre: Tensor, x: Tensor, weight: Tensor, has_bias: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Gradients of the convolution (before the SiLU) from dpre, its incoming gradient (contiguous (B, C, H, W)):
    (dx in x's dtype, dweight (C, 1, K, K) and dbias (C,) or None in float32 (float64 for float64 x))."""
    batch, channels, height, width = x.shape
    k = weight.shape[-1]
    acc_dtype, DT = compute_dtype(x)
    dx = torch.empty(batch, channels, height, width, device=x.device, dtype=x.dtype)
    block_p, block_h, block_w, n_hblocks, programs = _config(batch * channels, height, width)
    part = torch.empty(batch, channels, n_hblocks, k * k + 1, device=x.device, dtype=acc_dtype)
    _dwconv_bwd_kernel[(programs,)](
        dpre, x, weight, dx, part, batch * channels, channels, height, width, n_hblocks, x.stride(0), x.stride(1),
        K=k, BLOCK_P=block_p, BLOCK_H=block_h, BLOCK_W=block_w, DT=DT, num_warps=4,
    )
    dweight = part[..., : k * k].sum((0, 2)).view(channels, 1, k, k)
    return dx, dweight, (part[..., k * k].sum((0, 2)) if has_bias else None)
