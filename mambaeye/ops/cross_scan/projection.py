"""The cross-scan's per-direction dt projection: delta = W_k @ dts_k for every direction k.

    weight (K, D, R), dts (B, K, R, L) -> delta (B, K*D, L),   delta[b, k*D + d, l] = sum_r W[k, d, r] dts[b, k, r, l]
    d dts = W_k^T @ d delta_k,   d W_k = sum_b d delta_k dts_k^T

:func:`dt_projection` is ``torch.matmul(weight, dts)`` (a broadcast matmul over the batch) except for float16 /
bfloat16 dts on CUDA with Triton, where the forward is one Triton kernel (:mod:`.triton_projection`; cuBLAS
runs it as K * B GEMMs with a reduction of only R = 6..48, 3x slower on an H100) and the backward the same two
matmuls autograd would run. The weight is cast to dts' dtype on either path, as autocast casts it for the matmul;
its gradient comes back in the weight's dtype, summed over the batch in float32. The Triton path is a
``torch.library`` custom op (fake and autograd registered) so ``torch.compile(fullgraph=True)`` traces it; eager
calls go through an autograd.Function over the same launcher (no dispatcher cost a call).

Batch-second dts - stored as (K, R, B, L), each direction's rank row one contiguous row over all images and positions
(a view of the cross-scan's batch-second x_proj output, :func:`mambaeye.ops.cross_scan.scan_inputs`) - give a
batch-second delta, stored (K*D, B, L), and both layouts' products become plain matrix products over the B*L
positions: the forward and every backward are then K GEMMs instead of K * B, and the weight gradient needs no sum
over a (B, K, D, R) batch of partial products (it is one GEMM's float32 accumulation, rounded once to dts' dtype,
where the batch-first one sums B rounded partial products in float32). Batch-second dts always take the matmul: the
fused cross-scan stores them so only on grids of <= 196 positions, where cuBLAS' K GEMMs beat the Triton kernel
(H100, batch 128, bf16: 40 / 66 us at 14x14, 19 / 43 at 7x7; benchmarks/NOTES.md, tenth session of 2026-12-07).

Triton's CPU interpreter (3.8) computes bfloat16 ``tl.dot`` wrongly, so on CPU (TRITON_INTERPRET=1, the tests)
only float16 takes the kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._layout import batch_rows
from ..selective_scan import _through_custom_op, _triton_importable, _triton_interpreted

__all__ = ["dt_projection"]

_HALF = (torch.float16, torch.bfloat16)


@torch.library.custom_op("mambaeye::dt_projection_fwd", mutates_args=())
def _fwd(weight: Tensor, dts: Tensor) -> Tensor:
    from .triton_projection import dt_projection_fwd

    return dt_projection_fwd(weight, dts)


@_fwd.register_fake
def _fwd_fake(weight, dts):
    batch, k, _, length = dts.shape
    return dts.new_empty(batch, k * weight.shape[1], length)


def _is_batch_second(dts: Tensor) -> bool:
    """Whether dts (B, K, R, L) is stored with each (direction, rank) row one contiguous row over (B, L)."""
    return dts.shape[0] > 1 and dts.shape[3] > 1 and dts.stride(3) == 1 and dts.stride(0) == dts.shape[3]


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, dy):
    weight, dts = ctx.saved_tensors
    batch, k, _, length = dts.shape
    dy = dy.reshape(batch, k, weight.shape[1], length)  # the custom op may get a non-contiguous dy
    ddts = torch.matmul(weight.to(dts.dtype).transpose(1, 2), dy)  # (B, K, R, L)
    dweight = torch.matmul(dy, dts.transpose(2, 3)).sum(0, dtype=torch.float32)  # (K, D, R)
    return dweight.to(weight.dtype), ddts


_fwd.register_autograd(_backward, setup_context=_setup_context)


class _DtProjectionFunction(torch.autograd.Function):
    """Eager path without the dispatcher's per-call host cost (see selective_scan's _ScanFunction)."""

    @staticmethod
    def forward(ctx, weight, dts):
        from .triton_projection import dt_projection_fwd

        y = dt_projection_fwd(weight, dts)
        _setup_context(ctx, (weight, dts), y)
        return y

    @staticmethod
    def backward(ctx, dy):
        return _backward(ctx, dy)


def _use_kernel(dts: Tensor) -> bool:
    if not _triton_importable() or _is_batch_second(dts):
        return False
    if dts.is_cuda:
        return dts.dtype in _HALF
    return _triton_interpreted() and dts.dtype == torch.float16 and dts.device.type == "cpu"


def dt_projection(weight: Tensor, dts: Tensor, backend: str = "auto") -> Tensor:
    """weight (K, D, R), dts (B, K, R, L) -> (B, K*D, L): ``torch.matmul(weight, dts)`` with the directions
    stacked along the channels; batch-second (stored (K*D, B, L)) where dts is (see the module docstring).
    ``backend``: "auto" (the Triton kernel where it applies) or "torch" (always the matmul)."""
    if weight.dim() != 3 or dts.dim() != 4 or dts.shape[1] != weight.shape[0] or dts.shape[2] != weight.shape[2]:
        raise ValueError(f"dt_projection: expected weight (K, D, R) and dts (B, K, R, L), got {tuple(weight.shape)} "
                         f"and {tuple(dts.shape)}")
    if backend not in ("auto", "torch"):
        raise ValueError(f"dt_projection: backend must be 'auto' or 'torch', got {backend!r}")
    batch, k, _, length = dts.shape
    if backend == "torch" or not _use_kernel(dts) or dts.numel() == 0 or weight.device != dts.device:
        weight = weight.to(dts.dtype)
        if _is_batch_second(dts):  # K GEMMs over (B*L) positions, autograd's backward K GEMMs too
            y = torch.matmul(weight, batch_rows(dts))  # (K, D, B*L)
            return y.view(k * weight.shape[1], batch, length).transpose(0, 1)
        return torch.matmul(weight, dts).view(batch, k * weight.shape[1], length)
    if dts.stride(3) != 1:
        dts = dts.contiguous()
    weight = weight.contiguous()
    op = _fwd if _through_custom_op(dts) else _DtProjectionFunction.apply
    return op(weight, dts)
