"""The cross-scan's per-direction projections: (dt, B, C) from the sequence each direction reads, then delta from dt.

    src (B, S, D, L): S sequences, each read by J = K // S directions (direction k reads sequence k // J)
    x_proj_weight (K, P, D), P = R + 2N;  dt_projs_weight (K, D, R)
    x_dbl[b, k] = Wx[k] @ src[b, k // J]                        (B, K, P, L): rows (dt (R), B (N), C (N))
    delta[b, k*D:(k+1)*D] = Wdt[k] @ x_dbl[b, k, :R]            (B, K*D, L)

:func:`direction_projections` returns (delta, x_dbl). The reference (and the path for float32 / float64, CPU, or
``backend="torch"``) is two broadcast ``torch.matmul`` calls: no permuted copy of the result (as einsum makes), and
the weight gradients reduced per (batch, sequence) before the sum over the batch (einsum's one GEMM whose reduction
runs over all B*L positions picks a slow kernel: 9 ms on an H100 at VMamba-T's first stage, benchmarks/NOTES.md).

For float16 / bfloat16 on CUDA with Triton, forward and backward are Triton kernels (:mod:`.triton_projection`:
the forward reads src once, writes delta once and never reads x_dbl back; the backward is one kernel for the data
gradient and one for the weights', whose sums over batch and positions are float32):

    g = d x_dbl, plus Wdt[k]^T @ d delta_k in its first R rows;   d Wdt[k] = sum_b d delta_k @ x_dbl[b, k, :R]^T
    d src[b, s] = sum_{k reads s} Wx[k]^T @ g[b, k];              d Wx[k] = sum_b g[b, k] @ src[b, k // J]^T

The weights are cast to src's dtype, as autocast casts them for a matmul; their gradients come back in their own
dtype. The Triton path is a ``torch.library`` custom op (fake and autograd registered) so
``torch.compile(fullgraph=True)`` traces it; eager calls go through an autograd.Function over the same launcher
(no dispatcher cost a call).

Triton's CPU interpreter (3.8) computes bfloat16 ``tl.dot`` wrongly, so on CPU (TRITON_INTERPRET=1, the tests)
only float16 takes the kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..selective_scan import _through_custom_op, _triton_importable, _triton_interpreted

__all__ = ["direction_projections"]

_HALF = (torch.float16, torch.bfloat16)


def _reference(src: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor) -> tuple[Tensor, Tensor]:
    """The two broadcast matmuls (autocast casts the weights)."""
    batch, n_src, dim, length = src.shape
    k, rows, _ = x_proj_weight.shape
    rank = dt_projs_weight.shape[2]
    x_dbl = torch.matmul(x_proj_weight.reshape(n_src, k // n_src * rows, dim), src).view(batch, k, rows, length)
    delta = torch.matmul(dt_projs_weight, x_dbl[:, :, :rank]).view(batch, k * dim, length)
    return delta, x_dbl


@torch.library.custom_op("mambaeye::direction_projections_fwd", mutates_args=())
def _fwd(src: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor) -> tuple[Tensor, Tensor]:
    from .triton_projection import projections_fwd

    return projections_fwd(src, x_proj_weight, dt_projs_weight)


@_fwd.register_fake
def _fwd_fake(src, x_proj_weight, dt_projs_weight):
    batch, _, dim, length = src.shape
    k, rows, _ = x_proj_weight.shape
    return src.new_empty(batch, k * dim, length), src.new_empty(batch, k, rows, length)


@torch.library.custom_op("mambaeye::direction_projections_bwd", mutates_args=())
def _bwd(ddelta: Tensor, dx_dbl: Tensor | None, src: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor,
         x_dbl: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    from .triton_projection import projections_bwd

    return projections_bwd(ddelta, dx_dbl, src, x_proj_weight, dt_projs_weight, x_dbl)


@_bwd.register_fake
def _bwd_fake(ddelta, dx_dbl, src, x_proj_weight, dt_projs_weight, x_dbl):
    return (src.new_empty(src.shape), x_proj_weight.new_empty(x_proj_weight.shape, dtype=torch.float32),
            dt_projs_weight.new_empty(dt_projs_weight.shape, dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs, output[1])


def _backward(ctx, ddelta, dx_dbl, bwd=None):
    """``bwd``: the custom op (what torch.compile traces) or the launcher itself (eager)."""
    src, x_proj_weight, dt_projs_weight, x_dbl = ctx.saved_tensors
    batch, _, dim, length = src.shape
    k = x_proj_weight.shape[0]
    if ddelta is None:
        ddelta = x_dbl.new_zeros(batch, k * dim, length)
    ddelta = ddelta.to(src.dtype).reshape(batch, k * dim, length).contiguous()  # may arrive non-contiguous
    if dx_dbl is not None:
        dx_dbl = dx_dbl.to(src.dtype).contiguous()
    dsrc, d_x, d_dt = (bwd or _bwd)(ddelta, dx_dbl, src, x_proj_weight, dt_projs_weight, x_dbl)
    return dsrc, d_x.to(x_proj_weight.dtype), d_dt.to(dt_projs_weight.dtype)


_fwd.register_autograd(_backward, setup_context=_setup_context)


class _ProjectionsFunction(torch.autograd.Function):
    """Eager path without the dispatcher's per-call host cost (see selective_scan's _ScanFunction)."""

    @staticmethod
    def forward(ctx, src, x_proj_weight, dt_projs_weight):
        from .triton_projection import projections_fwd

        output = projections_fwd(src, x_proj_weight, dt_projs_weight)
        _setup_context(ctx, (src, x_proj_weight, dt_projs_weight), output)
        ctx.set_materialize_grads(False)
        return output

    @staticmethod
    def backward(ctx, ddelta, dx_dbl):
        from .triton_projection import projections_bwd

        return _backward(ctx, ddelta, dx_dbl, bwd=projections_bwd)


def _use_kernel(src: Tensor) -> bool:
    if not _triton_importable():
        return False
    if src.is_cuda:
        return src.dtype in _HALF
    return _triton_interpreted() and src.dtype == torch.float16 and src.device.type == "cpu"


def direction_projections(src: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor,
                          backend: str = "auto") -> tuple[Tensor, Tensor]:
    """src (B, S, D, L), x_proj_weight (K, R + 2N, D), dt_projs_weight (K, D, R) -> (delta (B, K*D, L), x_dbl
    (B, K, R + 2N, L)); see the module docstring. K must be S or 2S. ``backend``: "auto" (the Triton kernel where
    it applies) or "torch" (always the matmuls)."""
    if src.dim() != 4 or x_proj_weight.dim() != 3 or dt_projs_weight.dim() != 3:
        raise ValueError(f"direction_projections: expected src (B, S, D, L), x_proj_weight (K, P, D) and "
                         f"dt_projs_weight (K, D, R), got {tuple(src.shape)}, {tuple(x_proj_weight.shape)} and "
                         f"{tuple(dt_projs_weight.shape)}")
    batch, n_src, dim, length = src.shape
    k, rows, _ = x_proj_weight.shape
    rank = dt_projs_weight.shape[2]
    if x_proj_weight.shape[2] != dim or dt_projs_weight.shape[:2] != (k, dim) or rank > rows:
        raise ValueError(f"direction_projections: x_proj_weight {tuple(x_proj_weight.shape)} must be (K, P, D={dim}) "
                         f"and dt_projs_weight {tuple(dt_projs_weight.shape)} (K, D={dim}, R) with R <= P")
    if k not in (n_src, 2 * n_src):
        raise ValueError(f"direction_projections: K={k} directions cannot read S={n_src} sequences (K must be S or "
                         f"2S)")
    if backend not in ("auto", "torch"):
        raise ValueError(f"direction_projections: backend must be 'auto' or 'torch', got {backend!r}")
    same_device = x_proj_weight.device == src.device == dt_projs_weight.device
    if backend == "torch" or not _use_kernel(src) or src.numel() == 0 or not same_device:
        return _reference(src, x_proj_weight, dt_projs_weight)
    if src.stride(3) != 1:
        src = src.contiguous()
    x_proj_weight, dt_projs_weight = x_proj_weight.contiguous(), dt_projs_weight.contiguous()
    op = _fwd if _through_custom_op(src) else _ProjectionsFunction.apply
    return op(src, x_proj_weight, dt_projs_weight)
