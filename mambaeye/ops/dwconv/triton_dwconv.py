"""Triton kernel of :mod:`mambaeye.ops.dwconv` (imported on first use, so that TRITON_INTERPRET set by a test or by
the user before the first call still applies).

x is addressed as R = B * C planes of H * W contiguous positions (any batch/channel strides). A program owns a
(BLOCK_R planes, BLOCK_S positions) tile of about TILE outputs - several whole planes for small maps (VMamba's 14x14
and 7x7 stages), a stretch of one plane for large ones - and sums the K * K taps as shifted masked loads of x (the
neighbours come from L1/L2), so x is read from memory about once and y written once. Arithmetic in float32
(float64 for float64 x), bias and SiLU applied in registers.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..selective_scan.triton_scan import compute_dtype

TILE = 4096  # outputs a program


@triton.jit
def _dwconv_silu_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, rows, channels, height, width, n_sblocks, sx_b, sx_c,
                            K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_R: tl.constexpr,
                            BLOCK_S: tl.constexpr, DT: tl.constexpr):
    pid = tl.program_id(0)
    offs_r = (pid // n_sblocks) * BLOCK_R + tl.arange(0, BLOCK_R)  # plane = b * C + c
    offs_s = (pid % n_sblocks) * BLOCK_S + tl.arange(0, BLOCK_S)  # position = h * W + w
    r_mask = offs_r < rows
    s_mask = offs_s < height * width
    b = (offs_r // channels).to(tl.int64)
    c = offs_r % channels
    h = offs_s // width
    w = offs_s % width
    x_rows = x_ptr + (b * sx_b + c * sx_c)[:, None]
    acc = tl.zeros((BLOCK_R, BLOCK_S), dtype=DT)
    for kh in tl.static_range(K):
        hh = h + (kh - K // 2)
        for kw in tl.static_range(K):
            ww = w + (kw - K // 2)
            tap = s_mask & (hh >= 0) & (hh < height) & (ww >= 0) & (ww < width)  # zero padding
            xv = tl.load(x_rows + (hh * width + ww)[None, :], mask=r_mask[:, None] & tap[None, :], other=0.0)
            wv = tl.load(w_ptr + c * (K * K) + (kh * K + kw), mask=r_mask, other=0.0)
            acc += xv.to(DT) * wv.to(DT)[:, None]
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=r_mask, other=0.0).to(DT)[:, None]
    y = acc * tl.sigmoid(acc)
    y_rows = y_ptr + (offs_r.to(tl.int64) * (height * width))[:, None]  # y is contiguous (B, C, H, W)
    tl.store(y_rows + offs_s[None, :], y.to(y_ptr.dtype.element_ty), mask=r_mask[:, None] & s_mask[None, :])


def _config(rows: int, positions: int) -> tuple[int, int, int, int]:
    """(BLOCK_R, BLOCK_S, number of position blocks, number of programs)."""
    block_s = min(1024, triton.next_power_of_2(max(positions, 1)))
    block_r = max(1, TILE // block_s)
    n_sblocks = triton.cdiv(positions, block_s)
    return block_r, block_s, n_sblocks, triton.cdiv(rows, block_r) * n_sblocks


def dwconv_silu_fwd(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x (B, C, H, W) with H, W contiguous, weight (C, 1, K, K) contiguous, bias (C,) or None -> silu(depthwise
    conv with zero padding K // 2), contiguous (B, C, H, W) in x's dtype."""
    batch, channels, height, width = x.shape
    _, DT = compute_dtype(x)
    y = torch.empty(batch, channels, height, width, device=x.device, dtype=x.dtype)
    block_r, block_s, n_sblocks, programs = _config(batch * channels, height * width)
    _dwconv_silu_fwd_kernel[(programs,)](
        x, weight, bias if bias is not None else weight, y, batch * channels, channels, height, width, n_sblocks,
        x.stride(0), x.stride(1), K=weight.shape[-1], HAS_BIAS=bias is not None, BLOCK_R=block_r, BLOCK_S=block_s,
        DT=DT, num_warps=4,
    )
    return y
