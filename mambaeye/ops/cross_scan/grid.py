"""The fused cross-scan's two layout moves between a grid and its scan sources, as tiled Triton kernels.

    spread: x (B, D, H, W) -> s (B, S, R, D, H*W)   s[:, 0, r] = x row-major,  s[:, 1, r] = x column-major
    gather: s (B, S, R, D, H*W) -> y (B, D, H, W)   y = sum_r s[:, 0, r] + (sum_r s[:, 1, r]) read column-major

S (sources) is 1 or 2; R (copies per source) is 1 or 2. ``gather`` is the adjoint of ``spread``, so each is the
other's backward. In PyTorch::

    spread: torch.stack([x.flatten(2), x.transpose(2, 3).flatten(2)][:S], 1)[:, :, None].expand(-1, -1, R, -1, -1)
    gather: s[:, 0].sum(1).view(B, D, H, W) + s[:, 1].sum(1).view(B, D, W, H).transpose(2, 3)

Why kernels: PyTorch runs the column-major side of either as a generic strided elementwise kernel (and the sum
over R as a reduction), about 5 ms a VMamba-T inference step on an H100 (benchmarks/NOTES.md). Here a program
moves one (32 x 32) tile of one (batch, channel) plane: the row-major side is read or written along W and the
column-major side along H, both coalesced, with the transpose done in registers (``tl.trans``); the sum over R
and over the sources is accumulated in float32 (float64 for float64) and rounded once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..selective_scan import _through_custom_op
from ..selective_scan.triton_scan import compute_dtype

__all__ = ["spread", "gather"]

TILE = 32


@triton.jit
def _gather_kernel(s_ptr, y_ptr, dim, H, W, n_tw, S: tl.constexpr, R: tl.constexpr, DT: tl.constexpr,
                   TILE: tl.constexpr):
    bd = tl.program_id(0).to(tl.int64)  # b * dim + d (axis 0: up to 2^31 - 1 programs; axes 1 and 2: 65535)
    b, d = bd // dim, bd % dim
    length = H * W
    offs_i = (tl.program_id(1) // n_tw) * TILE + tl.arange(0, TILE)
    offs_j = (tl.program_id(1) % n_tw) * TILE + tl.arange(0, TILE)
    mask = (offs_i[:, None] < H) & (offs_j[None, :] < W)  # (TILE_i, TILE_j)
    row = offs_i[:, None] * W + offs_j[None, :]
    acc = tl.zeros((TILE, TILE), dtype=DT)
    for r in tl.static_range(R):
        plane = ((b * S + 0) * R + r) * dim + d
        acc += tl.load(s_ptr + plane * length + row, mask=mask, other=0.0).to(DT)
    if S == 2:
        col = offs_j[:, None] * H + offs_i[None, :]  # (TILE_j, TILE_i), contiguous along i
        col_mask = (offs_j[:, None] < W) & (offs_i[None, :] < H)
        acc_t = tl.zeros((TILE, TILE), dtype=DT)
        for r in tl.static_range(R):
            plane = ((b * S + 1) * R + r) * dim + d
            acc_t += tl.load(s_ptr + plane * length + col, mask=col_mask, other=0.0).to(DT)
        acc += tl.trans(acc_t)
    tl.store(y_ptr + bd * length + row, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _spread_kernel(x_ptr, s_ptr, dim, H, W, n_tw, S: tl.constexpr, R: tl.constexpr, TILE: tl.constexpr):
    bd = tl.program_id(0).to(tl.int64)
    b, d = bd // dim, bd % dim
    length = H * W
    offs_i = (tl.program_id(1) // n_tw) * TILE + tl.arange(0, TILE)
    offs_j = (tl.program_id(1) % n_tw) * TILE + tl.arange(0, TILE)
    mask = (offs_i[:, None] < H) & (offs_j[None, :] < W)
    row = offs_i[:, None] * W + offs_j[None, :]
    tile = tl.load(x_ptr + bd * length + row, mask=mask, other=0.0)
    for r in tl.static_range(R):
        plane = ((b * S + 0) * R + r) * dim + d
        tl.store(s_ptr + plane * length + row, tile, mask=mask)
    if S == 2:
        col = offs_j[:, None] * H + offs_i[None, :]
        col_mask = (offs_j[:, None] < W) & (offs_i[None, :] < H)
        tile_t = tl.trans(tile)
        for r in tl.static_range(R):
            plane = ((b * S + 1) * R + r) * dim + d
            tl.store(s_ptr + plane * length + col, tile_t, mask=col_mask)


def _grid(batch: int, dim: int, height: int, width: int) -> tuple[tuple[int, int], int]:
    n_tw = triton.cdiv(width, TILE)
    return (batch * dim, triton.cdiv(height, TILE) * n_tw), n_tw


def _gather_impl(s: Tensor, height: int, width: int) -> Tensor:
    batch, sources, copies, dim, _ = s.shape
    s = s.contiguous()
    y = s.new_empty(batch, dim, height, width)
    grid, n_tw = _grid(batch, dim, height, width)
    _gather_kernel[grid](s, y, dim, height, width, n_tw, S=sources, R=copies, DT=compute_dtype(s)[1], TILE=TILE,
                         num_warps=4)
    return y


def _spread_impl(x: Tensor, sources: int, copies: int) -> Tensor:
    batch, dim, height, width = x.shape
    x = x.contiguous()
    s = x.new_empty(batch, sources, copies, dim, height * width)
    grid, n_tw = _grid(batch, dim, height, width)
    _spread_kernel[grid](x, s, dim, height, width, n_tw, S=sources, R=copies, TILE=TILE, num_warps=4)
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
