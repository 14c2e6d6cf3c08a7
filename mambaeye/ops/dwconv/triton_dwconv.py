"""Triton kernel of :mod:`mambaeye.ops.dwconv` (imported on first use, so that TRITON_INTERPRET set by a test or by
the user before the first call still applies).

x is addressed as B * C planes of H x W (rows contiguous; any batch/channel strides). A program owns a
(BLOCK_P planes, BLOCK_H rows, BLOCK_W columns) tile of about TILE outputs - several whole planes for small maps
(VMamba's 14x14 and 7x7 stages), a band of rows for large ones - and sums the K * K taps as loads of the tile shifted
by a constant offset (dh * W + dw) with row and column masks for the zero padding; the neighbours come from L1/L2, so
x is read from memory about once and y written once. A first version on flattened positions (row and column by
integer division, a mask per tap and element) was 2x slower than PyTorch's conv + SiLU (H100: 804 vs 418 us at
VMamba-T's first stage). Arithmetic in float32 (float64 for float64 x), bias and SiLU applied in registers.
H and W are compile-time constants (each map size compiles once), so the compiler knows the rows' alignment: at
56x56 the centre taps and the stores move 16 bytes an instruction and the forward needs 40 registers instead of
123; where rows are not a multiple of 8 bytes the forward's addresses use runtime row lengths instead, for one
element a thread with coalesced lanes (:func:`_row_vectors`). H100, batch 128, bf16, VMamba-T's stages 56² / 28² /
14² / 7², us a call: forward with runtime H, W 233 / 107 / 60 / 26, constant 172 / 77 / 66 / 20, and with 14²'s
rows unvectorised 171 / 77 / 44.5 / 20; backward 390 / 248 / 124 / 87 (runtime H, W), 474 / 244 / 94 / 93
(constant), 361 / 222 / 93 / 83 (dx tap by tap, below); ``benchmarks/ss2d_ops.py``, benchmarks/NOTES.md.

The backward (from the gradient before the SiLU, contiguous) owns one channel, a block of its plane's positions and
a slice of the batch, and loops over the images: dx is the conv of the gradient with the kernel flipped, and the
weight's gradient a running (taps, positions) tile reduced once at the end into K * K + 1 partials (the bias'
last), summed over programs afterwards. A first version on the forward's tiles reduced the tile ten times per
tile and was slower than PyTorch (H100: 1738 vs 1320 us at VMamba-T's first stage; this one 541 us).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._layout import empty, plane_strides
from ..selective_scan.triton_scan import compute_dtype

TILE = 1024  # outputs a program: 8 a thread at 4 warps (4096 spilled: 32 outputs x 9 taps in flight)


@triton.jit
def _dwconv_silu_fwd_kernel(x_ptr, w_ptr, b_ptr, y_ptr, pre_ptr, planes, channels, n_hblocks, sx_b, sx_c, py_b,
                            py_s, py_c, row_len, col_len, height: tl.constexpr, width: tl.constexpr, K: tl.constexpr,
                            HAS_BIAS: tl.constexpr, SAVE_PRE: tl.constexpr, SOURCES: tl.constexpr,
                            ROW_VECTORS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_H: tl.constexpr,
                            BLOCK_W: tl.constexpr, DT: tl.constexpr):
    """SOURCES 1: y (B, C, H, W). SOURCES 2: y (B, 2, C, H * W), the map row-major and column-major (the fused
    cross-scan's two sources, :func:`mambaeye.ops.cross_scan.grid.spread`), written from the same registers.
    py_b, py_s, py_c: y's batch, source and channel strides in planes (of H * W elements: a constant, so that the
    compiler knows the planes' alignment).

    ROW_VECTORS: addresses use the constant width and height, so aligned rows are accessed in vectors (the layout
    puts up to 8 consecutive elements in a thread); else they use the runtime row_len (= width) and col_len
    (= height), nothing is known to be aligned, and the layout puts one element a thread with the lanes along the
    row (see :func:`_row_vectors`)."""
    if ROW_VECTORS:
        row_len = width
        col_len = height
    pid = tl.program_id(0)
    offs_p = (pid // n_hblocks) * BLOCK_P + tl.arange(0, BLOCK_P)  # plane = b * C + c
    offs_h = (pid % n_hblocks) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_w = tl.arange(0, BLOCK_W)
    p_ok = offs_p < planes
    b = (offs_p // channels).to(tl.int64)
    c = offs_p % channels
    # (BLOCK_P, BLOCK_H, BLOCK_W) pointers to the centre tap; a tap (dh, dw) is the constant offset dh * W + dw
    plane = b * sx_b + c.to(tl.int64) * sx_c  # int64: in a batch-second x the channel stride is the large one
    centre = x_ptr + plane[:, None, None] + (offs_h * row_len)[None, :, None] + offs_w[None, None, :]
    acc = tl.zeros((BLOCK_P, BLOCK_H, BLOCK_W), dtype=DT)
    for kh in tl.static_range(K):
        hh = offs_h + (kh - K // 2)
        row_ok = p_ok[:, None] & ((hh >= 0) & (hh < height))[None, :]  # (BLOCK_P, BLOCK_H); zero padding
        for kw in tl.static_range(K):
            ww = offs_w + (kw - K // 2)
            col_ok = (ww >= 0) & (ww < width)
            tap = row_ok[:, :, None] & col_ok[None, None, :]
            xv = tl.load(centre + ((kh - K // 2) * row_len + (kw - K // 2)), mask=tap, other=0.0)
            wv = tl.load(w_ptr + c * (K * K) + (kh * K + kw), mask=p_ok, other=0.0)
            acc += xv.to(DT) * wv.to(DT)[:, None, None]
    if HAS_BIAS:
        acc += tl.load(b_ptr + c, mask=p_ok, other=0.0).to(DT)[:, None, None]
    y = (acc * tl.sigmoid(acc)).to(y_ptr.dtype.element_ty)
    rows = (offs_h * row_len)[None, :, None] + offs_w[None, None, :]  # (1, BLOCK_H, BLOCK_W)
    mask = p_ok[:, None, None] & (offs_h < height)[None, :, None] & (offs_w < width)[None, None, :]
    if SAVE_PRE:  # pre is contiguous (B, C, H, W)
        tl.store(pre_ptr + (offs_p.to(tl.int64) * (height * width))[:, None, None] + rows,
                 acc.to(pre_ptr.dtype.element_ty), mask=mask)
    y_plane = y_ptr + ((b * py_b + c.to(tl.int64) * py_c) * (height * width))[:, None, None]
    tl.store(y_plane + rows, y, mask=mask)
    if SOURCES == 2:  # column-major: element (i, j) at j * H + i, the tile transposed in registers
        cols = offs_w[None, :, None] * col_len + offs_h[None, None, :]  # (1, BLOCK_W, BLOCK_H)
        col_mask = p_ok[:, None, None] & (offs_w < width)[None, :, None] & (offs_h < height)[None, None, :]
        tl.store(y_plane + py_s.to(tl.int64) * (height * width) + cols, tl.permute(y, (0, 2, 1)), mask=col_mask)


@triton.jit
def _dwconv_bwd_kernel(dpre_ptr, x_ptr, w_ptr, dx_ptr, part_ptr, batch, channels, n_blocks, batches_per_split, sx_b,
                       sx_c, sdx_b, sdx_c, height: tl.constexpr, width: tl.constexpr, K: tl.constexpr,
                       BLOCK_T: tl.constexpr, BLOCK_S: tl.constexpr, DT: tl.constexpr):
    """One channel, BLOCK_S positions of its plane (flattened), a slice of the batch. dx: the gradient loaded at
    each flipped tap's offset in turn (a static loop over the K * K taps), times that tap's weight. dweight: the
    taps are a tensor axis (padded to BLOCK_T); a (BLOCK_T, BLOCK_S) load of x at the taps' offsets, times the
    gradient, accumulates across the batch loop and is reduced once at the end. Offsets and zero-padding masks
    depend only on the position and are computed once, outside the batch loop. dpre is contiguous; x and dx have
    any batch and channel strides (dx is written in x's layout, e.g. batch-second).

    dx was a (BLOCK_T, BLOCK_S) load summed over the taps axis too; the loop over taps loads 9 rows instead of 16
    padded ones and takes the batch loop from 362 to 257 SASS instructions at 56x56 (offline, sm_90); H100, batch
    128, bf16, us at VMamba-T's stages 56² / 28² / 14² / 7²: 473 / 244 / 94 / 93 -> 361 / 222 / 93 / 83."""
    pid = tl.program_id(0)
    split = tl.program_id(1)
    c = pid // n_blocks
    c64 = c.to(tl.int64)  # the channel stride may be the large one (batch-second x)
    offs_s = (pid % n_blocks) * BLOCK_S + tl.arange(0, BLOCK_S)
    offs_t = tl.arange(0, BLOCK_T)
    dh = offs_t // K - K // 2
    dw = offs_t % K - K // 2
    row = offs_s // width
    col = offs_s % width
    s_ok = offs_s < height * width
    t_ok = offs_t < K * K
    # x[h + dh, w + dw] feeds dweight[t]; dpre[h - dh, w - dw] feeds dx[h, w]
    hh, ww = row[None, :] + dh[:, None], col[None, :] + dw[:, None]
    x_ok = t_ok[:, None] & s_ok[None, :] & (hh >= 0) & (hh < height) & (ww >= 0) & (ww < width)
    shift = (dh * width + dw)[:, None] + offs_s[None, :]  # (BLOCK_T, BLOCK_S): x at +shift, dpre at -shift
    acc = tl.zeros((BLOCK_T, BLOCK_S), dtype=DT)
    dbias = tl.zeros((BLOCK_S,), dtype=DT)
    b_start = split.to(tl.int64) * batches_per_split
    for i in range(0, tl.minimum(batches_per_split, batch - b_start)):
        b = b_start + i
        plane = (b * channels + c) * (height * width)  # dpre is contiguous (B, C, H, W)
        g = tl.load(dpre_ptr + plane + offs_s, mask=s_ok, other=0.0).to(DT)
        dbias += g
        xv = tl.load(x_ptr + b * sx_b + c64 * sx_c + shift, mask=x_ok, other=0.0).to(DT)
        acc += xv * g[None, :]
        dxv = tl.zeros((BLOCK_S,), dtype=DT)
        for t in tl.static_range(K * K):  # dx: the taps one by one, so no sum across the threads' tap rows
            fh, fw = t // K - K // 2, t % K - K // 2
            ok = s_ok & (row >= fh) & (row < height + fh) & (col >= fw) & (col < width + fw)
            gv = tl.load(dpre_ptr + plane + offs_s - (fh * width + fw), mask=ok, other=0.0).to(DT)
            dxv += gv * tl.load(w_ptr + c * (K * K) + t).to(DT)
        tl.store(dx_ptr + b * sdx_b + c64 * sdx_c + offs_s, dxv.to(dx_ptr.dtype.element_ty), mask=s_ok)
    part = part_ptr + ((split * channels + c).to(tl.int64) * n_blocks + pid % n_blocks) * (K * K + 1)
    tl.store(part + offs_t, tl.sum(acc, 1), mask=t_ok)
    tl.store(part + K * K, tl.sum(dbias, 0))


def _config(planes: int, height: int, width: int) -> tuple[int, int, int, int, int]:
    """(BLOCK_P, BLOCK_H, BLOCK_W, number of row blocks, number of programs): whole rows, as many as make about
    TILE outputs, and several planes when one is smaller than that."""
    block_w = triton.next_power_of_2(width)
    block_h = min(triton.next_power_of_2(height), max(1, TILE // block_w))
    block_p = max(1, TILE // (block_w * block_h))
    n_hblocks = triton.cdiv(height, block_h)
    return block_p, block_h, block_w, n_hblocks, triton.cdiv(planes, block_p) * n_hblocks


def _row_vectors(width: int, element_size: int) -> bool:
    """Whether the forward reads and writes rows in vectors: where a row is a multiple of 8 bytes. The taps
    shifted by a column are never aligned; in a layout of 8 (or 4) consecutive elements a thread they are two-byte
    loads whose lanes lie 16 (or 8) bytes apart, several L1 wavefronts an instruction, and only rows of 8-byte
    vectors or wider pay that back. H100, batch 128, bf16, VMamba-T's stages, forward us, vectors -> one element a
    thread: 56² 171 -> 199, 28² 77 -> 83, 14² (28-byte rows: 4-byte vectors) 65 -> 44.5, 7² 20 -> 20.5 (2-byte rows:
    the same layout either way); benchmarks/NOTES.md."""
    return (width * element_size) % 8 == 0


def sources_empty(x: Tensor, batch_second: bool) -> Tensor:
    """An uninitialised (B, 2, C, H * W) for the two sources of x (B, C, H, W), in x's dtype: contiguous, or with
    ``batch_second`` stored as (2, C, B, H * W) (each source's channel one row over the batch and positions)."""
    batch, channels, height, width = x.shape
    return empty((batch, 2, channels, height * width), dtype=x.dtype, device=x.device, batch_second=batch_second,
                 channel_dims=2)


def dwconv_silu_fwd(x: Tensor, weight: Tensor, bias: Tensor | None, save_pre: bool,
                    sources: int = 1, batch_second: bool = False) -> tuple[Tensor, Tensor]:
    """x (B, C, H, W) with H, W contiguous, weight (C, 1, K, K) contiguous, bias (C,) or None -> (silu(depthwise
    conv with zero padding K // 2), the conv itself when ``save_pre`` else an empty tensor), in x's dtype: y
    (B, C, H, W) contiguous, or with ``sources`` 2 (B, 2, C, H * W) - y row-major, then column-major (as
    ``spread(y, 2, 1)``), laid out by :func:`sources_empty`; pre (B, C, H, W) contiguous."""
    batch, channels, height, width = x.shape
    _, DT = compute_dtype(x)
    if sources not in (1, 2):
        raise ValueError(f"dwconv_silu_fwd: sources must be 1 or 2, got {sources}")
    if sources == 1:
        y = torch.empty(batch, channels, height, width, device=x.device, dtype=x.dtype)
    else:
        y = sources_empty(x, batch_second)
    y_planes = plane_strides(y.view(batch, sources, channels, height * width))  # (batch, source, channel)
    pre = torch.empty_like(x, memory_format=torch.contiguous_format) if save_pre else y.new_empty(0)
    block_p, block_h, block_w, n_hblocks, programs = _config(batch * channels, height, width)
    _dwconv_silu_fwd_kernel[(programs,)](
        x, weight, bias if bias is not None else weight, y, pre, batch * channels, channels, n_hblocks, x.stride(0),
        x.stride(1), *y_planes, width, height, height=height, width=width, K=weight.shape[-1],
        HAS_BIAS=bias is not None, SAVE_PRE=save_pre, SOURCES=sources,
        ROW_VECTORS=_row_vectors(width, x.element_size()), BLOCK_P=block_p, BLOCK_H=block_h, BLOCK_W=block_w, DT=DT,
        num_warps=4,
    )
    return y, pre


# The backward's tiles. H100, VMamba-T's stages at batch 128 (us a call; PyTorch's depthwise backward 1320 / 665 /
# 359 / 288): 128 positions and 2048 programs 848 / 412 / 192 / 148; 256 and 2048: 614 / 318 / 123 / 149; 256 and
# 8192: 541 / 336 / 141 / 120 (benchmarks/NOTES.md).
BWD_BLOCK_S = 256  # positions a program (times the taps, padded to a power of two)
BWD_PROGRAMS = 8192  # the backward splits the batch until about this many programs run


def dwconv_bwd(dpre: Tensor, x: Tensor, weight: Tensor, has_bias: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Gradients of the convolution (before the SiLU) from dpre, its incoming gradient (contiguous (B, C, H, W)):
    (dx in x's dtype and layout (x's H, W contiguous), dweight (C, 1, K, K) and dbias (C,) or None in float32
    (float64 for float64 x))."""
    batch, channels, height, width = x.shape
    k = weight.shape[-1]
    acc_dtype, DT = compute_dtype(x)
    dx = torch.empty_like(x)  # x's batch and channel strides (dense: the forward read x in place)
    block_s = min(BWD_BLOCK_S, triton.next_power_of_2(height * width))
    n_blocks = triton.cdiv(height * width, block_s)
    batches_per_split = triton.cdiv(batch, min(batch, max(1, BWD_PROGRAMS // (channels * n_blocks))))
    splits = triton.cdiv(batch, batches_per_split)
    part = torch.empty(splits, channels, n_blocks, k * k + 1, device=x.device, dtype=acc_dtype)
    _dwconv_bwd_kernel[(channels * n_blocks, splits)](
        dpre, x, weight, dx, part, batch, channels, n_blocks, batches_per_split, x.stride(0), x.stride(1), dx.stride(0),
        dx.stride(1), height=height, width=width, K=k, BLOCK_T=triton.next_power_of_2(k * k), BLOCK_S=block_s, DT=DT,
        num_warps=4,
    )
    dweight = part[..., : k * k].sum((0, 2)).view(channels, 1, k, k)
    return dx, dweight, (part[..., k * k].sum((0, 2)) if has_bias else None)
