"""Triton kernel of :mod:`mambaeye.ops.cross_scan.projection` (imported on first use, so that TRITON_INTERPRET
set by a test before the first call still applies).

    x_dbl[b, k, p, l] = sum_d Wx[k, p, d] src[b, k // J, d, l]        p < P = R + 2N
    delta[b, k*D + d, l] = sum_r Wdt[k, d, r] x_dbl[b, k, r, l]        r < R

A program owns BLOCK_L positions of one (batch, source) and the J <= 2 directions that read that source. It walks
the source's channels in (BLOCK_D, BLOCK_L) blocks, each read once, accumulating each direction's (BLOCK_P,
BLOCK_L) projection with ``tl.dot`` (float32), stores it rounded to the output dtype, then walks the channels again
writing delta: ``tl.dot`` of the (BLOCK_D, BLOCK_P) dt weight block (zero from column R on) and the rounded
projection, still in registers. So the source is read once, x_dbl written once and never read back, delta written
once - the reference's two matmuls write x_dbl and read its dt rows back, and cuBLAS runs them as B * S and B * K
small GEMMs, the second with a reduction of only R = 6..48.

Inputs float16 / bfloat16 (the weights are cast to src's dtype, as autocast casts them for a matmul), float32
accumulation, outputs in src's dtype. BLOCK_P = next_power_of_2(P) and BLOCK_D are >= 16, the tensor cores'
smallest dot.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _project(acc, wx_ptr, k, x, offs_p, offs_d, p_mask, d_mask, dim, rows):
    """acc + Wx[k, :, d-block] @ x, the weight block (BLOCK_P, BLOCK_D) zero beyond P rows and D channels."""
    w = tl.load(wx_ptr + (k * rows + offs_p)[:, None] * dim + offs_d[None, :],
                mask=p_mask[:, None] & d_mask[None, :], other=0.0).to(x.dtype)
    return tl.dot(w, x, acc)


@triton.jit
def _write_delta(delta_ptr, wdt_ptr, k, x_dbl, offs_p, offs_d, offs_l, d_mask, l_mask, dim, rank, length):
    """delta[k*D + d-block, l-block] = Wdt[k, d-block, :R] @ x_dbl[:R] (the weight block zero from column R) for
    the batch element delta_ptr points at."""
    w = tl.load(wdt_ptr + (k * dim + offs_d)[:, None] * rank + offs_p[None, :],
                mask=d_mask[:, None] & (offs_p < rank)[None, :], other=0.0).to(x_dbl.dtype)
    y = tl.dot(w, x_dbl)  # (BLOCK_D, BLOCK_L) float32
    rows = (k * dim + offs_d).to(tl.int64) * length
    tl.store(delta_ptr + rows[:, None] + offs_l[None, :], y.to(x_dbl.dtype), mask=d_mask[:, None] & l_mask[None, :])


@triton.jit
def _projections_fwd_kernel(src_ptr, wx_ptr, wdt_ptr, xdbl_ptr, delta_ptr, dim, rank, rows, length, n_lblocks,
                            n_dirs, ss_b, ss_s, ss_d, J: tl.constexpr, BLOCK_D: tl.constexpr,
                            BLOCK_L: tl.constexpr, BLOCK_P: tl.constexpr):
    """Program (b * n_lblocks + l-block, source s). ``rows`` = P, ``n_dirs`` = K; src (B, S, D, L) with L
    contiguous and strides ss_*; x_dbl (B, K, P, L) and delta (B, K*D, L) contiguous."""
    pid = tl.program_id(0)
    s = tl.program_id(1)
    b = (pid // n_lblocks).to(tl.int64)
    offs_l = (pid % n_lblocks) * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_p = tl.arange(0, BLOCK_P)
    l_mask = offs_l < length
    p_mask = offs_p < rows
    k0 = s * J
    src = src_ptr + b * ss_b + s * ss_s
    acc0 = tl.zeros((BLOCK_P, BLOCK_L), dtype=tl.float32)
    acc1 = tl.zeros((BLOCK_P, BLOCK_L), dtype=tl.float32)
    for d0 in range(0, dim, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_mask = offs_d < dim
        x = tl.load(src + offs_d.to(tl.int64)[:, None] * ss_d + offs_l[None, :],
                    mask=d_mask[:, None] & l_mask[None, :], other=0.0)  # (BLOCK_D, BLOCK_L)
        acc0 = _project(acc0, wx_ptr, k0, x, offs_p, offs_d, p_mask, d_mask, dim, rows)
        if J == 2:
            acc1 = _project(acc1, wx_ptr, k0 + 1, x, offs_p, offs_d, p_mask, d_mask, dim, rows)
    out_mask = p_mask[:, None] & l_mask[None, :]
    xdbl = xdbl_ptr + (b * n_dirs + k0) * rows * length + offs_p[:, None] * length + offs_l[None, :]
    x0 = acc0.to(xdbl_ptr.dtype.element_ty)
    tl.store(xdbl, x0, mask=out_mask)
    x1 = acc1.to(xdbl_ptr.dtype.element_ty)
    if J == 2:
        tl.store(xdbl + rows * length, x1, mask=out_mask)
    delta = delta_ptr + b * n_dirs * dim * length
    for d0 in range(0, dim, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_mask = offs_d < dim
        _write_delta(delta, wdt_ptr, k0, x0, offs_p, offs_d, offs_l, d_mask, l_mask, dim, rank, length)
        if J == 2:
            _write_delta(delta, wdt_ptr, k0 + 1, x1, offs_p, offs_d, offs_l, d_mask, l_mask, dim, rank, length)


def _config(rows: int, length: int, per_source: int) -> tuple[int, int, int]:
    """(BLOCK_D, BLOCK_L, BLOCK_P): the J = ``per_source`` float32 accumulators of (BLOCK_P, BLOCK_L) hold about
    8192 values (64 a thread of 4 warps); BLOCK_L between 32 and 256 and no longer than L needs."""
    block_p = max(16, triton.next_power_of_2(rows))
    block_l = max(32, min(256, 8192 // (per_source * block_p), triton.next_power_of_2(length)))
    return 32, block_l, block_p


def projections_fwd(src: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor) -> tuple[Tensor, Tensor]:
    """src (B, S, D, L) float16/bfloat16 with L contiguous, x_proj_weight (K, P, D) and dt_projs_weight (K, D, R)
    contiguous, K = S * J, J in (1, 2) -> (delta (B, K*D, L), x_dbl (B, K, P, L)), both contiguous in src's
    dtype."""
    batch, n_src, dim, length = src.shape
    k, rows, _ = x_proj_weight.shape
    rank = dt_projs_weight.shape[2]
    per_source = k // n_src
    x_dbl = torch.empty(batch, k, rows, length, device=src.device, dtype=src.dtype)
    delta = torch.empty(batch, k * dim, length, device=src.device, dtype=src.dtype)
    block_d, block_l, block_p = _config(rows, length, per_source)
    n_lblocks = triton.cdiv(length, block_l)
    _projections_fwd_kernel[(batch * n_lblocks, n_src)](
        src, x_proj_weight, dt_projs_weight, x_dbl, delta, dim, rank, rows, length, n_lblocks, k,
        src.stride(0), src.stride(1), src.stride(2), J=per_source, BLOCK_D=block_d, BLOCK_L=block_l,
        BLOCK_P=block_p, num_warps=4,
    )
    return delta, x_dbl
