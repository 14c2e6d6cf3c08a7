"""Triton kernels of :mod:`mambaeye.ops.layer_norm` (imported on first use, so that TRITON_INTERPRET set by a test
or by the user before the first call still applies).

x is addressed as (B, C, L) with L contiguous and any batch/channel strides. One program owns the whole channel
column of BLOCK_L consecutive positions of one batch element: a (BLOCK_C, BLOCK_L) tile, BLOCK_C =
next_power_of_2(C), lanes along L so every channel row is one coalesced load. The reductions over C stay in
registers, so x is read once and y written once (the backward reads x and dy once and writes dx once).

The add + norm variant (a residual stream: s = x + branch, then LN(s)) reads x and the branch once and writes s and
y; its backward adds the residual stream's gradient ds to the norm's and writes the sum once per dtype needed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._layout import empty_like, strides_by_vector
from ..selective_scan.triton_scan import compute_dtype


@triton.jit
def _tile(pid, n_lblocks, dim, length, IDX64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    """Program ``pid``'s (BLOCK_C, BLOCK_L) tile: batch b, position and channel offsets (b and the channels' row
    offsets in int64 when IDX64: an offset may pass 2**31) and the masks."""
    b = pid // n_lblocks
    offs_l = (pid % n_lblocks) * BLOCK_L + tl.arange(0, BLOCK_L)
    offs_c = tl.arange(0, BLOCK_C)
    rows = offs_c[:, None]
    if IDX64:
        b, rows = b.to(tl.int64), rows.to(tl.int64)
    c_mask = offs_c < dim
    l_mask = offs_l < length
    return b, offs_l, offs_c, rows, c_mask, l_mask, c_mask[:, None] & l_mask[None, :]


@triton.jit
def _ln_fwd_kernel(x_ptr, r_ptr, rb_ptr, s_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, dim, length, n_lblocks,
                   sx_b, sx_c, sr_b, sr_c, ss_b, ss_c, sy_b, sy_c,
                   EPS: tl.constexpr, HAS_BRANCH: tl.constexpr, HAS_BRANCH_BIAS: tl.constexpr,
                   HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, STORE_STATS: tl.constexpr,
                   VEC: tl.constexpr, IDX64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr,
                   DT: tl.constexpr):
    """y[b, :, l] = (s[b, :, l] - mean) * rstd * w + b with s = x, or (HAS_BRANCH) s = x + r (+ rb[c]) rounded to
    s's dtype and stored; mean, rstd (B, L) stored when STORE_STATS. EPS is a constexpr so that it stays exact in
    float64 (a runtime float argument is passed as float32). ``length`` and the strides come divided by VEC (see
    :func:`mambaeye.ops._layout.strides_by_vector`)."""
    length, sx_b, sx_c, sr_b, sr_c = length * VEC, sx_b * VEC, sx_c * VEC, sr_b * VEC, sr_c * VEC
    ss_b, ss_c, sy_b, sy_c = ss_b * VEC, ss_c * VEC, sy_b * VEC, sy_c * VEC
    pid = tl.program_id(0)
    b, offs_l, offs_c, rows, c_mask, l_mask, mask = _tile(pid, n_lblocks, dim, length, IDX64, BLOCK_C, BLOCK_L)
    x = tl.load(x_ptr + b * sx_b + rows * sx_c + offs_l[None, :], mask=mask, other=0.0).to(DT)
    if HAS_BRANCH:
        r = tl.load(r_ptr + b * sr_b + rows * sr_c + offs_l[None, :], mask=mask, other=0.0).to(DT)
        if HAS_BRANCH_BIAS:
            r = r + tl.load(rb_ptr + offs_c, mask=c_mask, other=0.0).to(DT)[:, None]
        s = (x + r).to(s_ptr.dtype.element_ty)
        tl.store(s_ptr + b * ss_b + rows * ss_c + offs_l[None, :], s, mask=mask)
        x = s.to(DT)
    mean = tl.sum(x, 0) / dim
    xc = tl.where(mask, x - mean[None, :], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, 0) / dim + EPS)
    y = xc * rstd[None, :]
    if HAS_WEIGHT:
        y = y * tl.load(w_ptr + offs_c, mask=c_mask, other=0.0).to(DT)[:, None]
    if HAS_BIAS:
        y = y + tl.load(b_ptr + offs_c, mask=c_mask, other=0.0).to(DT)[:, None]
    tl.store(y_ptr + b * sy_b + rows * sy_c + offs_l[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)
    if STORE_STATS:
        tl.store(mean_ptr + b * length + offs_l, mean, mask=l_mask)
        tl.store(rstd_ptr + b * length + offs_l, rstd, mask=l_mask)


@triton.jit
def _ln_bwd_kernel(x_ptr, w_ptr, dy_ptr, ds_ptr, mean_ptr, rstd_ptr, dx_ptr, dr_ptr, dw_ptr, db_ptr, drb_ptr,
                   dim, length, n_lblocks, sx_b, sx_c, sdy_b, sdy_c, sds_b, sds_c, sdx_b, sdx_c, sdr_b, sdr_c,
                   HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_DS: tl.constexpr, STORE_DR: tl.constexpr,
                   STORE_DRB: tl.constexpr, VEC: tl.constexpr, IDX64: tl.constexpr, BLOCK_C: tl.constexpr,
                   BLOCK_L: tl.constexpr, DT: tl.constexpr):
    """dx = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat)) (+ ds, the gradient reaching the normalised tensor
    from elsewhere: the residual stream's, when HAS_DS) with g = w * dy; x here is the tensor that was normalised
    (the sum s of an add + norm). STORE_DR also writes dx in dr's dtype (the branch's gradient). Row ``pid`` of the
    (n_programs, C) partial buffers gets this tile's sums over L of dy * xhat (dweight), dy (dbias) and, when
    STORE_DRB, dx (the branch bias' gradient). ``length`` and the strides come divided by VEC
    (:func:`mambaeye.ops._layout.strides_by_vector`)."""
    length, sx_b, sx_c, sdy_b, sdy_c = length * VEC, sx_b * VEC, sx_c * VEC, sdy_b * VEC, sdy_c * VEC
    sds_b, sds_c, sdx_b, sdx_c = sds_b * VEC, sds_c * VEC, sdx_b * VEC, sdx_c * VEC
    sdr_b, sdr_c = sdr_b * VEC, sdr_c * VEC
    pid = tl.program_id(0)
    b, offs_l, offs_c, rows, c_mask, l_mask, mask = _tile(pid, n_lblocks, dim, length, IDX64, BLOCK_C, BLOCK_L)
    x = tl.load(x_ptr + b * sx_b + rows * sx_c + offs_l[None, :], mask=mask, other=0.0).to(DT)
    dy = tl.load(dy_ptr + b * sdy_b + rows * sdy_c + offs_l[None, :], mask=mask, other=0.0).to(DT)
    mean = tl.load(mean_ptr + b * length + offs_l, mask=l_mask, other=0.0)
    rstd = tl.load(rstd_ptr + b * length + offs_l, mask=l_mask, other=0.0)
    xhat = tl.where(mask, (x - mean[None, :]) * rstd[None, :], 0.0)
    g = dy
    if HAS_WEIGHT:
        g = dy * tl.load(w_ptr + offs_c, mask=c_mask, other=0.0).to(DT)[:, None]
    c1 = tl.sum(g * xhat, 0) / dim
    c2 = tl.sum(g, 0) / dim
    dx = (g - xhat * c1[None, :] - c2[None, :]) * rstd[None, :]
    if HAS_DS:
        dx = dx + tl.load(ds_ptr + b * sds_b + rows * sds_c + offs_l[None, :], mask=mask, other=0.0).to(DT)
    tl.store(dx_ptr + b * sdx_b + rows * sdx_c + offs_l[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)
    if STORE_DR:
        tl.store(dr_ptr + b * sdr_b + rows * sdr_c + offs_l[None, :], dx.to(dr_ptr.dtype.element_ty), mask=mask)
    if HAS_WEIGHT:
        tl.store(dw_ptr + pid * dim + offs_c, tl.sum(dy * xhat, 1), mask=c_mask)
    if HAS_BIAS:
        tl.store(db_ptr + pid * dim + offs_c, tl.sum(dy, 1), mask=c_mask)
    if STORE_DRB:
        tl.store(drb_ptr + pid * dim + offs_c, tl.sum(tl.where(mask, dx, 0.0), 1), mask=c_mask)


def _config(dim: int, length: int) -> tuple[int, int, int, int]:
    """(BLOCK_C, BLOCK_L, n_lblocks, num_warps): BLOCK_C = next_power_of_2(C); tiles of 4096 elements with 4 warps
    up to C = 256 (BLOCK_L 128 down to 16), then 16 warps with BLOCK_L 16 (C 512) or 8 (C >= 1024: at 16 a thread
    of the backward needed more than the 128 registers 16 warps allow and spilled). From a sweep on an H100 at
    VMamba-T's four stages, batch 128 (benchmarks/NOTES.md): C 96 BLOCK_L 32, C 192 16 (4 warps) and C 384 16
    (16 warps) beat larger tiles and fewer warps, e.g. the add + norm backward 300 -> 258 us at C 96."""
    block_c = triton.next_power_of_2(dim)
    block_l = max(16, min(128, 4096 // block_c)) if block_c <= 512 else 8
    num_warps = 4 if block_c <= 256 else 16
    return block_c, block_l, triton.cdiv(length, block_l), num_warps


def layer_norm_fwd(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, save_stats: bool,
                   out_dtype: torch.dtype | None = None, branch: Tensor | None = None,
                   branch_bias: Tensor | None = None, batch_second: bool = False,
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """x (B, C, L) with L contiguous -> (y, mean, rstd, s).

    Without ``branch``, s is None and x is normalised. With ``branch`` (B, C, L), L contiguous, s = x + branch
    (+ ``branch_bias`` (C,) per channel) is written in ``torch.promote_types(x.dtype, branch.dtype)`` and s is
    normalised (as stored: rounded to its dtype). y (B, C, L) in out_dtype (default: the normalised tensor's dtype)
    and, when x is dense, x's layout (stored batch-second with ``batch_second``, whatever x's layout:
    :mod:`mambaeye.ops._layout`); mean, rstd (B, L) float32 (float64 for float64 x) when ``save_stats``, else
    empty (0,) tensors. Statistics and arithmetic in float32 (float64 when x or branch is float64)."""
    batch, dim, length = x.shape
    s = None if branch is None else torch.empty_like(x, dtype=torch.promote_types(x.dtype, branch.dtype))
    normed = x if s is None else s
    acc_dtype, DT = compute_dtype(normed)
    y = empty_like(x, out_dtype or normed.dtype, batch_second)
    stats_shape = (batch, length) if save_stats else (0,)
    mean = torch.empty(stats_shape, device=x.device, dtype=acc_dtype)
    rstd = torch.empty(stats_shape, device=x.device, dtype=acc_dtype)
    block_c, block_l, n_lblocks, num_warps = _config(dim, length)
    stats = (mean, rstd) if save_stats else (y, y)  # placeholders never written: no pointer into empty tensors
    r, sb = (branch, s) if s is not None else (x, y)  # placeholders never read or written without a branch
    vec, idx64, (length_v, *strides) = strides_by_vector(length, x, r, sb, y)
    _ln_fwd_kernel[(batch * n_lblocks,)](
        x, r, branch_bias if branch_bias is not None else x, sb, weight if weight is not None else x,
        bias if bias is not None else x, y, *stats, dim, length_v, n_lblocks, *strides,
        EPS=eps, HAS_BRANCH=s is not None, HAS_BRANCH_BIAS=s is not None and branch_bias is not None,
        HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, STORE_STATS=save_stats, VEC=vec, IDX64=idx64,
        BLOCK_C=block_c, BLOCK_L=block_l, DT=DT, num_warps=num_warps,
    )
    return y, mean, rstd, s


def layer_norm_bwd(dy: Tensor, x: Tensor, weight: Tensor | None, bias: Tensor | None, mean: Tensor, rstd: Tensor,
                   ds: Tensor | None = None, branch_dtype: torch.dtype | None = None, branch_bias: Tensor | None = None,
                   ) -> tuple[Tensor, Tensor | None, Tensor]:
    """(dx, dbranch, sums) of :func:`layer_norm_fwd`; x here is the normalised tensor (s of an add + norm). dy
    (B, C, L) with L contiguous; mean, rstd (B, L) from the forward.

    dx = the norm's input gradient (+ ``ds``, the gradient that reaches the normalised tensor from elsewhere: the
    residual stream's), in x's dtype and, when x is dense, layout. When ``branch_dtype`` is given and differs from
    x's dtype, dbranch is dx in that dtype (else None: dx is also the branch's gradient). ``sums`` (k, C) float32
    (float64) holds the gradients of the parameters given, in the order weight, bias, branch_bias (k of them;
    dbranch_bias is the sum of dx over batch and positions): one reduction of per-program (k, n_programs, C)
    partial sums after the kernel, deterministic, no atomics."""
    batch, dim, length = x.shape
    acc_dtype, DT = compute_dtype(x)
    block_c, block_l, n_lblocks, num_warps = _config(dim, length)
    n_programs = batch * n_lblocks
    dx = torch.empty_like(x)
    dr = torch.empty_like(x, dtype=branch_dtype) if branch_dtype not in (None, x.dtype) else None

    # the per-program partial sums of dweight, dbias and dbranch_bias (those given) in one (k, n_programs, C)
    # buffer, summed by one reduction after the kernel (one launch instead of one per parameter)
    given = [t is not None for t in (weight, bias, branch_bias)]
    part = torch.empty(sum(given), n_programs, dim, device=x.device, dtype=acc_dtype)
    slabs = iter(part)
    dw_part, db_part, drb_part = (next(slabs) if g else None for g in given)
    ds_, dr_ = ds if ds is not None else dy, dr if dr is not None else dx  # placeholders when absent
    vec, idx64, (length_v, *strides) = strides_by_vector(length, x, dy, ds_, dx, dr_)
    _ln_bwd_kernel[(n_programs,)](
        x, weight if weight is not None else x, dy, ds_, mean, rstd, dx, dr_,
        dw_part if dw_part is not None else dx, db_part if db_part is not None else dx,
        drb_part if drb_part is not None else dx, dim, length_v, n_lblocks, *strides,
        HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, HAS_DS=ds is not None, STORE_DR=dr is not None,
        STORE_DRB=branch_bias is not None, VEC=vec, IDX64=idx64, BLOCK_C=block_c, BLOCK_L=block_l, DT=DT,
        num_warps=num_warps,
    )
    return dx, dr, part.sum(1)

