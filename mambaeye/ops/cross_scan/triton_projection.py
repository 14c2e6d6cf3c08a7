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


# ---------------------------------------------------------------------------------------------------------------
# Backward. g = d x_dbl (+ Wdt^T d delta in the dt rows) is (B, K, P, L), as small as x_dbl; two kernels:
# - the data gradient, parallel over positions like the forward: g for each direction of a source (d delta read
#   once, reduced over D in registers), stored for the second kernel, then dsrc = sum_j Wx[k_j]^T @ g_j;
# - the weight gradients, parallel over channel blocks: each program sums d delta_k @ dts_k^T and g_k @ src^T over
#   a chunk of (batch, position block) pairs in registers and stores one partial per chunk (summed after it:
#   deterministic, no atomics).
# ---------------------------------------------------------------------------------------------------------------


@triton.jit
def _direction_grad(dxdbl_ptr, ddelta_ptr, wdt_ptr, g_ptr, k, offs_p, offs_l, p_mask, l_mask, dim, rank, rows,
                    length, HAS_DXDBL: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
                    BLOCK_P: tl.constexpr):
    """g[k] = dx_dbl[k] + Wdt[k]^T @ ddelta[k*D:(k+1)*D] for one batch element and position block (the pointers
    point at the element), stored in g's dtype and returned so."""
    tile = (k * rows + offs_p)[:, None] * length + offs_l[None, :]
    mask = p_mask[:, None] & l_mask[None, :]
    if HAS_DXDBL:
        acc = tl.load(dxdbl_ptr + tile, mask=mask, other=0.0).to(tl.float32)
    else:
        acc = tl.zeros((BLOCK_P, BLOCK_L), dtype=tl.float32)
    for d0 in range(0, dim, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_mask = offs_d < dim
        dd = tl.load(ddelta_ptr + (k * dim + offs_d).to(tl.int64)[:, None] * length + offs_l[None, :],
                     mask=d_mask[:, None] & l_mask[None, :], other=0.0)  # (BLOCK_D, BLOCK_L)
        w = tl.load(wdt_ptr + (k * dim + offs_d)[None, :] * rank + offs_p[:, None],
                    mask=(offs_p < rank)[:, None] & d_mask[None, :], other=0.0).to(dd.dtype)  # (BLOCK_P, BLOCK_D)
        acc = tl.dot(w, dd, acc)
    g = acc.to(g_ptr.dtype.element_ty)
    tl.store(g_ptr + tile, g, mask=mask)
    return g


@triton.jit
def _projections_bwd_data_kernel(ddelta_ptr, dxdbl_ptr, wx_ptr, wdt_ptr, g_ptr, dsrc_ptr, dim, rank, rows, length,
                                 n_lblocks, n_dirs, n_src, HAS_DXDBL: tl.constexpr, J: tl.constexpr,
                                 BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_P: tl.constexpr):
    """Program (b * n_lblocks + l-block, source s). ddelta (B, K*D, L), dx_dbl and g (B, K, P, L), dsrc (B, S, D,
    L), all contiguous."""
    pid = tl.program_id(0)
    s = tl.program_id(1)
    b = (pid // n_lblocks).to(tl.int64)
    offs_l = (pid % n_lblocks) * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_p = tl.arange(0, BLOCK_P)
    l_mask = offs_l < length
    p_mask = offs_p < rows
    k0 = s * J
    per_b = n_dirs * rows * length  # g's and dx_dbl's batch stride
    ddelta = ddelta_ptr + b * n_dirs * dim * length
    g0 = _direction_grad(dxdbl_ptr + b * per_b, ddelta, wdt_ptr, g_ptr + b * per_b, k0, offs_p, offs_l, p_mask,
                         l_mask, dim, rank, rows, length, HAS_DXDBL, BLOCK_D, BLOCK_L, BLOCK_P)
    g1 = g0
    if J == 2:
        g1 = _direction_grad(dxdbl_ptr + b * per_b, ddelta, wdt_ptr, g_ptr + b * per_b, k0 + 1, offs_p, offs_l,
                             p_mask, l_mask, dim, rank, rows, length, HAS_DXDBL, BLOCK_D, BLOCK_L, BLOCK_P)
    dsrc = dsrc_ptr + (b * n_src + s) * dim * length
    for d0 in range(0, dim, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_mask = offs_d < dim
        wmask = d_mask[:, None] & p_mask[None, :]
        w = tl.load(wx_ptr + (k0 * rows + offs_p)[None, :] * dim + offs_d[:, None], mask=wmask, other=0.0)
        acc = tl.dot(w.to(g0.dtype), g0)  # (BLOCK_D, BLOCK_L): Wx[k0]^T @ g0
        if J == 2:
            w = tl.load(wx_ptr + ((k0 + 1) * rows + offs_p)[None, :] * dim + offs_d[:, None], mask=wmask, other=0.0)
            acc = tl.dot(w.to(g1.dtype), g1, acc)
        tl.store(dsrc + offs_d.to(tl.int64)[:, None] * length + offs_l[None, :], acc.to(dsrc_ptr.dtype.element_ty),
                 mask=d_mask[:, None] & l_mask[None, :])


@triton.jit
def _projections_bwd_weight_kernel(ddelta_ptr, g_ptr, xdbl_ptr, src_ptr, dwx_ptr, dwdt_ptr, dim, rank, rows,
                                   length, n_lblocks, n_dirs, items_per_chunk, n_items, ss_b, ss_s, ss_d,
                                   J: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr,
                                   BLOCK_P: tl.constexpr):
    """Program (channel block, direction k, chunk). Items are (batch, position block) pairs, item i = b * n_lblocks
    + l-block; the chunk's items' sums d delta_k @ dts_k^T (D-block, R) and g_k @ src_s^T (P, D-block) go to row
    ``chunk`` of the float32 partials dwdt (chunks, K, D, R) and dwx (chunks, K, P, D)."""
    offs_d = tl.program_id(0) * BLOCK_D + tl.arange(0, BLOCK_D)
    k = tl.program_id(1)
    chunk = tl.program_id(2)
    s = k // J
    offs_p = tl.arange(0, BLOCK_P)
    d_mask = offs_d < dim
    p_mask = offs_p < rows
    r_mask = offs_p < rank
    acc_x = tl.zeros((BLOCK_P, BLOCK_D), dtype=tl.float32)
    acc_dt = tl.zeros((BLOCK_D, BLOCK_P), dtype=tl.float32)
    first = chunk * items_per_chunk
    for i in range(first, tl.minimum(first + items_per_chunk, n_items)):
        b = (i // n_lblocks).to(tl.int64)
        offs_l = (i % n_lblocks) * BLOCK_L + tl.arange(0, BLOCK_L)
        l_mask = offs_l < length
        dl_mask = d_mask[:, None] & l_mask[None, :]
        pl = (b * n_dirs + k) * rows * length + offs_p[:, None] * length + offs_l[None, :]
        g = tl.load(g_ptr + pl, mask=p_mask[:, None] & l_mask[None, :], other=0.0)  # (BLOCK_P, BLOCK_L)
        dts = tl.load(xdbl_ptr + pl, mask=r_mask[:, None] & l_mask[None, :], other=0.0)
        x = tl.load(src_ptr + b * ss_b + s * ss_s + offs_d.to(tl.int64)[:, None] * ss_d + offs_l[None, :],
                    mask=dl_mask, other=0.0)  # (BLOCK_D, BLOCK_L)
        dd = tl.load(ddelta_ptr + (b * n_dirs + k) * dim * length + offs_d[:, None] * length + offs_l[None, :],
                     mask=dl_mask, other=0.0)
        acc_x = tl.dot(g, tl.trans(x), acc_x)
        acc_dt = tl.dot(dd, tl.trans(dts), acc_dt)
    part = (chunk * n_dirs + k).to(tl.int64) * dim
    tl.store(dwx_ptr + part * rows + offs_p[:, None] * dim + offs_d[None, :], acc_x,
             mask=p_mask[:, None] & d_mask[None, :])
    tl.store(dwdt_ptr + part * rank + offs_d[:, None] * rank + offs_p[None, :], acc_dt,
             mask=d_mask[:, None] & r_mask[None, :])


WEIGHT_PROGRAMS = 1024  # the weight gradients' kernel splits the (batch, position block) pairs into chunks until
# about this many programs run


def projections_bwd(ddelta: Tensor, dx_dbl: Tensor | None, src: Tensor, x_proj_weight: Tensor,
                    dt_projs_weight: Tensor, x_dbl: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`projections_fwd`: ddelta (B, K*D, L) and dx_dbl (B, K, P, L) or None, contiguous in src's
    dtype; src, the weights and x_dbl as the forward had them -> (dsrc (B, S, D, L) contiguous in src's dtype,
    dx_proj_weight (K, P, D) and ddt_projs_weight (K, D, R) float32)."""
    batch, n_src, dim, length = src.shape
    k, rows, _ = x_proj_weight.shape
    rank = dt_projs_weight.shape[2]
    per_source = k // n_src
    block_d, block_l, block_p = _config(rows, length, per_source)
    n_lblocks = triton.cdiv(length, block_l)
    g = torch.empty_like(x_dbl)
    dsrc = torch.empty(batch, n_src, dim, length, device=src.device, dtype=src.dtype)
    _projections_bwd_data_kernel[(batch * n_lblocks, n_src)](
        ddelta, dx_dbl if dx_dbl is not None else g, x_proj_weight, dt_projs_weight, g, dsrc, dim, rank, rows,
        length, n_lblocks, k, n_src, HAS_DXDBL=dx_dbl is not None, J=per_source, BLOCK_D=block_d,
        BLOCK_L=block_l, BLOCK_P=block_p, num_warps=4,
    )
    block_dw, block_lw = 64, min(64, max(32, triton.next_power_of_2(length)))
    n_lblocks_w = triton.cdiv(length, block_lw)
    n_items = batch * n_lblocks_w
    base = triton.cdiv(dim, block_dw) * k
    chunks = max(1, min(n_items, WEIGHT_PROGRAMS // base))
    items_per_chunk = triton.cdiv(n_items, chunks)
    chunks = triton.cdiv(n_items, items_per_chunk)
    dwx = torch.empty(chunks, k, rows, dim, device=src.device, dtype=torch.float32)
    dwdt = torch.empty(chunks, k, dim, rank, device=src.device, dtype=torch.float32)
    _projections_bwd_weight_kernel[(triton.cdiv(dim, block_dw), k, chunks)](
        ddelta, g, x_dbl, src, dwx, dwdt, dim, rank, rows, length, n_lblocks_w, k, items_per_chunk, n_items,
        src.stride(0), src.stride(1), src.stride(2), J=per_source, BLOCK_D=block_dw, BLOCK_L=block_lw,
        BLOCK_P=block_p, num_warps=8,
    )
    return dsrc, dwx.sum(0), dwdt.sum(0)
