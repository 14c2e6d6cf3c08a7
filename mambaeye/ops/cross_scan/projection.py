"""The per-direction dt projection of the cross-scan as one Triton pass.

    delta[b, k * D + d, l] = sum_r weight[k, d, r] * dts[b, k, r, l]      weight (K, D, R), dts (B, K, R, L)

R (VMamba's dt_rank: 6 to 48) is far too small a reduction for a GEMM: cuBLAS/CUTLASS run this broadcast matmul
at a quarter of the card's bandwidth (1.9 ms of VMamba-T's 26 ms inference step on an H100), while it is only
the writing of delta. Here a program owns a (BLOCK_D, BLOCK_L) tile of delta and accumulates the R outer
products in float32 registers from rows of dts read in place (any batch/direction/rank strides, L contiguous:
the rows are a slice of the x_proj output). The output is dts's dtype. The backward is two well-shaped
matmuls (reductions over D and over L) in PyTorch.

Reference: ``torch.matmul(weight, dts).view(B, K * D, L)`` (what :func:`mambaeye.ops.cross_scan.scan_inputs`
computes off the GPU). Registered as a ``torch.library`` custom op (fake and autograd), so torch.compile traces it;
eager calls use an autograd.Function over the same launcher.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..selective_scan import _through_custom_op
from ..selective_scan.triton_scan import compute_dtype

__all__ = ["dt_projection"]

BLOCK_L = 128


@triton.jit
def _dt_proj_kernel(w_ptr, x_ptr, y_ptr, dim, rank, length, n_lblocks, sx_b, sx_k, sx_r, sy_b,
                    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, DT: tl.constexpr):
    pid = tl.program_id(0)
    k = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_d = (pid // n_lblocks) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_l = (pid % n_lblocks) * BLOCK_L + tl.arange(0, BLOCK_L)
    d_mask = offs_d < dim
    l_mask = offs_l < length
    w_row = w_ptr + (k * dim + offs_d) * rank  # weight (K, D, R) contiguous
    x_row = x_ptr + b * sx_b + k * sx_k + offs_l
    acc = tl.zeros((BLOCK_D, BLOCK_L), dtype=DT)
    for r in range(rank):
        w = tl.load(w_row + r, mask=d_mask, other=0.0).to(DT)
        x = tl.load(x_row + r * sx_r, mask=l_mask, other=0.0).to(DT)
        acc += w[:, None] * x[None, :]
    rows = (k * dim + offs_d).to(tl.int64) * length  # delta (B, K * D, L) contiguous
    tl.store(y_ptr + b * sy_b + rows[:, None] + offs_l[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=d_mask[:, None] & l_mask[None, :])


def _block_d(dim: int) -> int:
    """Largest power of two <= 64 dividing D (VMamba's D: 96 -> 32, 192 and up -> 64), else 64 with masks."""
    block = 64
    while block > 1 and dim % block:
        block //= 2
    return block if block >= 8 else 64


def _launch(weight: Tensor, dts: Tensor) -> Tensor:
    batch, k, rank, length = dts.shape
    dim = weight.shape[1]
    _, DT = compute_dtype(dts)
    delta = torch.empty(batch, k * dim, length, device=dts.device, dtype=dts.dtype)
    block_d = _block_d(dim)
    block_l = min(BLOCK_L, triton.next_power_of_2(length))
    n_lblocks = triton.cdiv(length, block_l)
    grid = (triton.cdiv(dim, block_d) * n_lblocks, k, batch)
    _dt_proj_kernel[grid](weight, dts, delta, dim, rank, length, n_lblocks, dts.stride(0), dts.stride(1),
                          dts.stride(2), delta.stride(0), BLOCK_D=block_d, BLOCK_L=block_l, DT=DT, num_warps=4)
    return delta


@torch.library.custom_op("mambaeye::dt_projection", mutates_args=())
def _dt_projection_op(weight: Tensor, dts: Tensor) -> Tensor:
    return _launch(weight, dts)


@_dt_projection_op.register_fake
def _dt_projection_fake(weight, dts):
    batch, k, _, length = dts.shape
    return dts.new_empty(batch, k * weight.shape[1], length)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, ddelta):
    """d dts = weight^T ddelta (reduction over D), d weight = sum_b ddelta dts^T (reduction over L)."""
    weight, dts = ctx.saved_tensors
    batch, k, rank, length = dts.shape
    g = ddelta.reshape(batch, k, weight.shape[1], length)
    ddts = torch.matmul(weight.to(g.dtype).transpose(1, 2), g).to(dts.dtype)
    acc = torch.float64 if g.dtype == torch.float64 else torch.float32
    dweight = torch.matmul(g, dts.to(g.dtype).transpose(2, 3)).sum(0, dtype=acc).to(weight.dtype)
    return dweight, ddts


_dt_projection_op.register_autograd(_backward, setup_context=_setup_context)


class _DtProjectionFunction(torch.autograd.Function):
    """Eager path without the dispatcher's per-call host cost (see selective_scan's _ScanFunction)."""

    @staticmethod
    def forward(ctx, weight, dts):
        ctx.save_for_backward(weight, dts)
        return _launch(weight, dts)

    @staticmethod
    def backward(ctx, ddelta):
        return _backward(ctx, ddelta)


def dt_projection(weight: Tensor, dts: Tensor) -> Tensor:
    """weight (K, D, R), dts (B, K, R, L) with L contiguous -> delta (B, K * D, L) in dts's dtype (Triton; CUDA, or
    CPU under TRITON_INTERPRET=1). ``torch.matmul(weight, dts).view(B, K * D, L)`` is the reference."""
    if weight.dim() != 3 or dts.dim() != 4 or dts.shape[1] != weight.shape[0] or dts.shape[2] != weight.shape[2]:
        raise ValueError(f"dt_projection: expected weight (K, D, R) and dts (B, K, R, L), got {tuple(weight.shape)} "
                         f"and {tuple(dts.shape)}")
    if dts.stride(-1) != 1 and dts.shape[-1] > 1:
        dts = dts.contiguous()
    weight = weight.contiguous()
    op = _dt_projection_op if _through_custom_op(dts) else _DtProjectionFunction.apply
    return op(weight, dts)
