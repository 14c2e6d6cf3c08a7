"""The fused cross-scan's two layout moves between a grid and its scan sources, as tiled Triton kernels.

    spread: x (B, D, H, W) -> s (B, S, R, D, H*W)   s[:, 0, r] = x row-major,  s[:, 1, r] = x column-major
    gather: s (B, S, R, D, H*W) -> y (B, D, H, W)   y = sum_r s[:, 0, r] + (sum_r s[:, 1, r]) read column-major

S (sources) is 1 or 2; R (copies per source) is 1 or 2. ``gather`` is the adjoint of ``spread``, so each is the
other's backward. ``gather_silu_grad(s, pre)`` is ``aten.silu_backward(gather(s), pre)`` in the same pass: the
backward of the depthwise conv + SiLU that writes both sources itself (``depthwise_conv2d_silu(..., sources=2)``).
In PyTorch::

    spread: torch.stack([x.flatten(2), x.transpose(2, 3).flatten(2)][:S], 1)[:, :, None].expand(-1, -1, R, -1, -1)
    gather: s[:, 0].sum(1).view(B, D, H, W) + s[:, 1].sum(1).view(B, D, W, H).transpose(2, 3)

Why kernels: PyTorch runs the column-major side of either as a generic strided elementwise kernel (and the sum
over R as a reduction), about 5 ms a VMamba-T inference step on an H100 (benchmarks/NOTES.md). Here a program
moves a (BLOCK_P, BLOCK_H, BLOCK_W) tile: whole (batch, channel) planes up to 64 x 64 (several of them at
VMamba's 28x28 to 7x7 stages), else 64 x 64 tiles of one. The row-major side is read or written along W and the
column-major side along H, both coalesced - for whole planes each side is one contiguous range - with the
transpose done in registers (``tl.permute``); the sum over R and over the sources is accumulated in float32
(float64 for float64) and rounded once. H and W are compile-time constants, so that the compiler knows the rows'
alignment and moves 16 bytes an instruction where they allow it (W = 56: SASS 1272 -> 160 instructions for the
spread, 2-byte -> 16-byte loads and stores); each grid size compiles once. H100, batch 128, bf16, VMamba-T's
stages 56² / 28² / 14² / 7², spread(x, 2, 1) in us against the earlier 32 x 32 tiles with runtime H, W: 293 -> 82,
44 -> 45, 60 -> 27, 114 -> 29; gather of 2 sources x 2 copies 275 -> 127, 72 -> 66, 103 -> 37, 202 -> 24
(``benchmarks/ss2d_ops.py``; TILE 4096 was slower at 28² and 14², 8 warps no better: benchmarks/NOTES.md).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._layout import plane_strides
from ..selective_scan import _through_custom_op
from ..selective_scan.triton_scan import compute_dtype

__all__ = ["spread", "gather", "gather_silu_grad"]

TILE = 2048  # elements a program moves (of each source) where planes are small: 16 a thread at 4 warps
MAX_SIDE = 64  # a tile's rows and columns: whole planes up to 64 x 64, else 64 x 64 tiles of 128-byte bf16 rows


@triton.jit
def _tile_offsets(H: tl.constexpr, W: tl.constexpr, n_th, n_tw, n_planes, BLOCK_P: tl.constexpr, BLOCK_H: tl.constexpr,
                  BLOCK_W: tl.constexpr):
    """This program's BLOCK_P consecutive (batch, channel) planes bd (int64) and its (BLOCK_H, BLOCK_W) tile of
    each: (bd, row-major offsets i * W + j (1, BLOCK_H, BLOCK_W), their mask (BLOCK_P, BLOCK_H, BLOCK_W),
    column-major offsets j * H + i (1, BLOCK_W, BLOCK_H), their mask (BLOCK_P, BLOCK_W, BLOCK_H)). Program ids run
    over (plane block, tile row, tile column), all on grid axis 0 (axes 1 and 2 allow only 65,535)."""
    pid = tl.program_id(0)
    tiles = n_th * n_tw
    blk, t = pid // tiles, pid % tiles
    bd = blk.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    i = (t // n_tw) * BLOCK_H + tl.arange(0, BLOCK_H)
    j = (t % n_tw) * BLOCK_W + tl.arange(0, BLOCK_W)
    p_ok = bd < n_planes
    row = i[None, :, None] * W + j[None, None, :]  # (1, BLOCK_H, BLOCK_W)
    row_mask = p_ok[:, None, None] & (i[None, :, None] < H) & (j[None, None, :] < W)
    col = j[None, :, None] * H + i[None, None, :]  # (1, BLOCK_W, BLOCK_H): contiguous along i
    col_mask = p_ok[:, None, None] & (j[None, :, None] < W) & (i[None, None, :] < H)
    return bd, row, row_mask, col, col_mask


@triton.jit
def _gather_kernel(s_ptr, s2_ptr, pre_ptr, y_ptr, dim, n_th, n_tw, n_planes, ps_b, ps_s, ps_r, ps_d, ps2_b, ps2_s,
                   ps2_r, ps2_d, H: tl.constexpr, W: tl.constexpr, S: tl.constexpr, R: tl.constexpr,
                   SILU_GRAD: tl.constexpr, TWO_INPUTS: tl.constexpr, DT: tl.constexpr, BLOCK_P: tl.constexpr,
                   BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """SILU_GRAD: the sum times SiLU's derivative at pre (B, D, H, W) - the gradient before a SiLU whose output
    was spread (:func:`gather_silu_grad`). TWO_INPUTS: s2 (s's shape) is summed too. ps_* / ps2_*: s's and s2's
    (batch, source, copy, channel) strides in planes of H * W elements (a constant: the compiler knows the
    planes' alignment, whatever the layout)."""
    bd, row, row_mask, col, col_mask = _tile_offsets(H, W, n_th, n_tw, n_planes, BLOCK_P, BLOCK_H, BLOCK_W)
    b, d = bd // dim, bd % dim
    length = H * W
    acc = tl.zeros((BLOCK_P, BLOCK_H, BLOCK_W), dtype=DT)
    for r in tl.static_range(R):
        at = (b * ps_b + r * ps_r + d * ps_d) * length
        acc += tl.load(s_ptr + at[:, None, None] + row, mask=row_mask, other=0.0).to(DT)
        if TWO_INPUTS:
            at2 = (b * ps2_b + r * ps2_r + d * ps2_d) * length
            acc += tl.load(s2_ptr + at2[:, None, None] + row, mask=row_mask, other=0.0).to(DT)
    if S == 2:
        acc_t = tl.zeros((BLOCK_P, BLOCK_W, BLOCK_H), dtype=DT)
        for r in tl.static_range(R):
            at = (b * ps_b + ps_s + r * ps_r + d * ps_d) * length
            acc_t += tl.load(s_ptr + at[:, None, None] + col, mask=col_mask, other=0.0).to(DT)
            if TWO_INPUTS:
                at2 = (b * ps2_b + ps2_s + r * ps2_r + d * ps2_d) * length
                acc_t += tl.load(s2_ptr + at2[:, None, None] + col, mask=col_mask, other=0.0).to(DT)
        acc += tl.permute(acc_t, (0, 2, 1))
    if SILU_GRAD:  # d silu(p) / dp = sigmoid(p) (1 + p (1 - sigmoid(p))), as aten.silu_backward
        p = tl.load(pre_ptr + (bd * length)[:, None, None] + row, mask=row_mask, other=0.0).to(DT)
        sig = tl.sigmoid(p)
        acc *= sig * (1.0 + p * (1.0 - sig))
    tl.store(y_ptr + (bd * length)[:, None, None] + row, acc.to(y_ptr.dtype.element_ty), mask=row_mask)


@triton.jit
def _spread_kernel(x_ptr, s_ptr, dim, n_th, n_tw, n_planes, H: tl.constexpr, W: tl.constexpr, S: tl.constexpr,
                   R: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    bd, row, row_mask, col, col_mask = _tile_offsets(H, W, n_th, n_tw, n_planes, BLOCK_P, BLOCK_H, BLOCK_W)
    b, d = bd // dim, bd % dim
    length = H * W
    tile = tl.load(x_ptr + (bd * length)[:, None, None] + row, mask=row_mask, other=0.0)
    for r in tl.static_range(R):
        plane = ((b * S + 0) * R + r) * dim + d
        tl.store(s_ptr + (plane * length)[:, None, None] + row, tile, mask=row_mask)
    if S == 2:
        tile_t = tl.permute(tile, (0, 2, 1))
        for r in tl.static_range(R):
            plane = ((b * S + 1) * R + r) * dim + d
            tl.store(s_ptr + (plane * length)[:, None, None] + col, tile_t, mask=col_mask)


def _config(planes: int, height: int, width: int) -> tuple[tuple[int], dict]:
    """(grid, the kernels' tile arguments): whole planes up to MAX_SIDE a side (both copies of a plane are then one
    contiguous range each), several of them when a plane is smaller than TILE elements."""
    block_h = min(triton.next_power_of_2(height), MAX_SIDE)
    block_w = min(triton.next_power_of_2(width), MAX_SIDE)
    block_p = max(1, TILE // (block_h * block_w))
    n_th, n_tw = triton.cdiv(height, block_h), triton.cdiv(width, block_w)
    grid = (triton.cdiv(planes, block_p) * n_th * n_tw,)
    return grid, dict(n_th=n_th, n_tw=n_tw, n_planes=planes, BLOCK_P=block_p, BLOCK_H=block_h, BLOCK_W=block_w)


def _planes(t: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """(t or a contiguous copy where its planes are not whole rows, its plane strides)."""
    strides = plane_strides(t)
    if strides is None:
        t = t.contiguous()
        strides = plane_strides(t)
    return t, strides


def _gather_impl(s: Tensor, height: int, width: int, pre: Tensor | None = None, s2: Tensor | None = None) -> Tensor:
    """gather(s) (of s + s2 where s2 is given, s's shape; either in any layout of whole planes, e.g. batch-second);
    with ``pre`` (B, D, H, W, contiguous) times SiLU's derivative at pre, in pre's dtype."""
    batch, sources, copies, dim, _ = s.shape
    two_inputs = s2 is not None
    s, s_strides = _planes(s)
    s2, s2_strides = _planes(s2) if two_inputs else (s, s_strides)
    y = s.new_empty(batch, dim, height, width, dtype=pre.dtype if pre is not None else s.dtype)
    grid, tiles = _config(batch * dim, height, width)
    strides = dict(zip(("ps_b", "ps_s", "ps_r", "ps_d", "ps2_b", "ps2_s", "ps2_r", "ps2_d"),
                       (*s_strides, *s2_strides), strict=True))
    _gather_kernel[grid](s, s2, pre if pre is not None else s, y, dim, **strides, **tiles, H=height, W=width,
                         S=sources, R=copies, SILU_GRAD=pre is not None, TWO_INPUTS=two_inputs,
                         DT=compute_dtype(s)[1], num_warps=4)
    return y


def _spread_impl(x: Tensor, sources: int, copies: int) -> Tensor:
    batch, dim, height, width = x.shape
    x = x.contiguous()
    s = x.new_empty(batch, sources, copies, dim, height * width)
    grid, tiles = _config(batch * dim, height, width)
    _spread_kernel[grid](x, s, dim, H=height, W=width, **tiles, S=sources, R=copies, num_warps=4)
    return s


@torch.library.custom_op("mambaeye::grid_gather", mutates_args=())
def _gather_op(s: Tensor, height: int, width: int) -> Tensor:
    return _gather_impl(s, height, width)


@_gather_op.register_fake
def _(s, height, width):
    return s.new_empty(s.shape[0], s.shape[3], height, width)


@torch.library.custom_op("mambaeye::grid_spread", mutates_args=())
def _spread_op(x: Tensor, sources: int, copies: int) -> Tensor:
    return _spread_impl(x, sources, copies)


@_spread_op.register_fake
def _(x, sources, copies):
    batch, dim, height, width = x.shape
    return x.new_empty(batch, sources, copies, dim, height * width)


@torch.library.custom_op("mambaeye::grid_gather_silu_grad", mutates_args=())
def _gather_silu_grad_op(s: Tensor, pre: Tensor, s2: Tensor | None) -> Tensor:
    return _gather_impl(s, pre.shape[2], pre.shape[3], pre, s2)


@_gather_silu_grad_op.register_fake
def _(s, pre, s2):
    return torch.empty_like(pre)


def gather_silu_grad(s: Tensor, pre: Tensor, s2: Tensor | None = None) -> Tensor:
    """``aten.silu_backward(gather(s + s2, H, W), pre)`` in one pass: the gradient of a map's pre-activation pre
    (B, D, H, W) from the gradient s (B, S, R, D, H * W) of ``spread(silu(pre), S, R)`` - or from two gradients s
    and s2 of the same shape, where the spread has two consumers. In pre's dtype. A backward's step (no autograd
    of its own): the backward of :func:`mambaeye.ops.dwconv.depthwise_conv2d_silu` with ``sources=2``."""
    batch, _, _, dim, length = s.shape
    if pre.dim() != 4 or pre.shape[:2] != (batch, dim) or pre.shape[2] * pre.shape[3] != length:
        raise ValueError(f"gather_silu_grad: pre must be (B={batch}, D={dim}, H, W) with H * W = {length}, "
                         f"got {tuple(pre.shape)}")
    if s2 is not None and s2.shape != s.shape:
        raise ValueError(f"gather_silu_grad: s2 must have s's shape {tuple(s.shape)}, got {tuple(s2.shape)}")
    pre = pre.contiguous()
    if _through_custom_op(s):
        return _gather_silu_grad_op(s, pre, s2)
    return _gather_impl(s, pre.shape[2], pre.shape[3], pre, s2)


def _gather_setup(ctx, inputs, output):
    s, _, _ = inputs
    ctx.sources, ctx.copies = s.shape[1], s.shape[2]


def _spread_setup(ctx, inputs, output):
    x, _, _ = inputs
    ctx.height, ctx.width = x.shape[2], x.shape[3]


def _gather_grad(spread_fn, dy: Tensor, sources: int, copies: int) -> Tensor:
    """gather's backward: spread(dy), its R copies one expanded view (stride 0) of a single one - a consumer that
    reads each copy (the paired scan's backward) can read that one copy."""
    s = spread_fn(dy, sources, 1)
    return s.expand(-1, -1, copies, -1, -1) if copies > 1 else s


_gather_op.register_autograd(lambda ctx, dy: (_gather_grad(_spread_op, dy, ctx.sources, ctx.copies), None, None),
                             setup_context=_gather_setup)
_spread_op.register_autograd(lambda ctx, ds: (_gather_op(ds, ctx.height, ctx.width), None, None),
                             setup_context=_spread_setup)


class _Gather(torch.autograd.Function):
    """Eager path of :func:`gather` (no dispatcher cost per call; torch.compile traces the custom op)."""

    @staticmethod
    def forward(ctx, s, height, width):
        ctx.sources, ctx.copies = s.shape[1], s.shape[2]
        return _gather_impl(s, height, width)

    @staticmethod
    def backward(ctx, dy):
        return _gather_grad(_Spread.apply, dy, ctx.sources, ctx.copies), None, None


class _Spread(torch.autograd.Function):
    """Eager path of :func:`spread`."""

    @staticmethod
    def forward(ctx, x, sources, copies):
        ctx.height, ctx.width = x.shape[2], x.shape[3]
        return _spread_impl(x, sources, copies)

    @staticmethod
    def backward(ctx, ds):
        return _Gather.apply(ds, ctx.height, ctx.width), None, None


def _check(sources: int, copies: int) -> None:
    if sources not in (1, 2) or copies not in (1, 2):
        raise ValueError(f"sources and copies must be 1 or 2, got {sources} and {copies}")


def spread(x: Tensor, sources: int, copies: int) -> Tensor:
    """x (B, D, H, W) -> (B, S, R, D, H*W): source 0 row-major, source 1 column-major, each repeated R times."""
    _check(sources, copies)
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, D, H, W), got {tuple(x.shape)}")
    op = _spread_op if _through_custom_op(x) else _Spread.apply
    return op(x, sources, copies)


def gather(s: Tensor, height: int, width: int) -> Tensor:
    """s (B, S, R, D, H*W) -> (B, D, H, W): the sum over R of source 0 (row-major) plus source 1 (column-major)
    put back in row-major order; the adjoint of :func:`spread`."""
    if s.dim() != 5 or s.shape[4] != height * width:
        raise ValueError(f"s must have shape (B, S, R, D, H*W={height * width}), got {tuple(s.shape)}")
    _check(s.shape[1], s.shape[2])
    op = _gather_op if _through_custom_op(s) else _Gather.apply
    return op(s, int(height), int(width))
