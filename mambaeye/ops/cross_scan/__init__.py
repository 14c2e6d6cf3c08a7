"""Multi-directional selective scan over 2D and 3D grids (VMamba's SS2D core, and its 3D extension).

:func:`cross_selective_scan` is the one entry point the SS2D / SS3D layers call. Given the activations
after the depthwise conv, it reads them along K directions (:func:`cross_scan`), projects each direction to
(dt, B, C) with that direction's weights, runs one grouped selective scan over all K * D channels, sums the
directions back onto the grid (:func:`cross_merge`) and optionally applies the output LayerNorm.

``fused=False`` is the PyTorch reference: it writes the K re-ordered copies explicitly. ``fused=True`` (the
default with the triton backend in 2D; :mod:`.fused`) scans the grid's row-major and column-major layouts
forward and backward in place, with no flipped copies. Scan orders are defined in :mod:`.naive`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .._layout import batch_rows, to_batch_second
from ..dwconv import depthwise_conv2d_silu
from ..layer_norm import layer_norm_channel_first
from ..selective_scan import _resolve_backend, selective_scan
from .naive import ScanOrder, cross_merge, cross_scan, default_directions, scan_orders, valid_directions
from .projection import dt_projection

__all__ = [
    "cross_selective_scan",
    "cross_scan",
    "cross_merge",
    "scan_orders",
    "valid_directions",
    "default_directions",
    "ScanOrder",
]


def _fp32(t: Tensor) -> Tensor:
    """The scan's weights are float32 whatever the activations' dtype; float64 stays (for gradient checks)."""
    return t if t.dtype == torch.float64 else t.float()


def scan_inputs(src: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor, dstate: int,
                force_fp32: bool = False, kernels: bool = True,
                u_src: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """u, delta, B, C of the grouped scan from the sequences its K directions read.

    src (B, S, D, L) holds S sequences; the directions are grouped by the sequence they read, K // S each, in
    order (the reference: S = K, one re-ordered copy per direction; the fused path: the grid's S = 2 or 1
    layouts). Returns u (B, S*D, L) (a view of src), delta (B, K*D, L) and B, C (B, K, N, L) - views of one
    projection (group k = direction k), which the triton kernels read in place. With ``force_fp32`` they are
    float32 copies; delta, B and C always get u's dtype (autocast may leave them mixed).

    Where src is stored batch-second - as (S, D, B, L), each sequence's channel one row over the batch and
    positions (``depthwise_conv2d_silu(..., batch_second=True)``) - both projections are plain matrix products over
    all B * L positions at once, forward and backward, and u, delta, B and C are batch-second too (strided views;
    the scan reads any batch and channel strides). Else they are broadcast matmuls over the batch, i.e. small GEMMs
    on views: no permuted copy of the result (as einsum makes), and the weight gradients are reduced per (batch,
    sequence) before the sum over the batch - einsum's one GEMM whose reduction runs over all B*L positions of a
    batch-first src picks a slow kernel (9 ms on an H100 at VMamba-T's first stage; benchmarks/NOTES.md). With
    ``kernels`` the dt projection's forward is a Triton kernel for half inputs on CUDA (:mod:`.projection`);
    without, a matmul (the torch backend). ``u_src``: src's values as another autograd output
    (``depthwise_conv2d_silu(..., consumers=2)``), which u is then a view of, so that u's and the projection's
    gradients reach src's producer apart.
    """
    batch, n_src, dim, length = src.shape
    k, rank = dt_projs_weight.shape[0], dt_projs_weight.shape[2]
    if u_src is not None and u_src.shape != src.shape:
        raise ValueError(f"scan_inputs: u_src must have src's shape {tuple(src.shape)}, got {tuple(u_src.shape)}")
    u = (src if u_src is None else u_src).view(batch, n_src * dim, length)
    weight = x_proj_weight.reshape(n_src, -1, dim)
    if batch > 1 and src.permute(1, 2, 0, 3).is_contiguous():  # batch-second: one GEMM a sequence, B*L long
        x_dbl = torch.matmul(weight, batch_rows(src))  # (S, K/S * (R+2N), B*L); batch_rows(src) is a view
        x_dbl = x_dbl.view(k, -1, batch, length).permute(2, 0, 1, 3)  # (B, K, R+2N, L) stored (K, R+2N, B, L)
    else:
        x_dbl = torch.matmul(weight, src).view(batch, k, -1, length)
    dts, Bs, Cs = torch.split(x_dbl, [rank, dstate, dstate], dim=2)  # (B, K, R | N | N, L) views
    delta = dt_projection(dt_projs_weight, dts, backend="auto" if kernels else "torch")  # (B, K*D, L), dts' layout
    if force_fp32:
        u, delta, Bs, Cs = _fp32(u), _fp32(delta), _fp32(Bs), _fp32(Cs)
    return u, delta.to(u.dtype), Bs.to(u.dtype), Cs.to(u.dtype)


def _check_inputs(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, out_norm_weight, out_norm_bias):
    tensors = (("x", x), ("x_proj_weight", x_proj_weight), ("dt_projs_weight", dt_projs_weight),
               ("dt_projs_bias", dt_projs_bias), ("A_logs", A_logs), ("Ds", Ds))
    for name, t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if x.dim() not in (4, 5):
        raise ValueError(f"x must have shape (B, D, H, W) or (B, D, Z, H, W), got {tuple(x.shape)}")
    if min(x.shape[2:]) < 1:
        raise ValueError(f"x has an empty spatial dimension: {tuple(x.shape)}")
    dim = x.shape[1]
    if x_proj_weight.dim() != 3 or x_proj_weight.shape[2] != dim:
        raise ValueError(f"x_proj_weight must have shape (K, dt_rank + 2 * d_state, D={dim}), "
                         f"got {tuple(x_proj_weight.shape)}")
    k = x_proj_weight.shape[0]
    allowed = valid_directions(x.dim() - 2)
    if k not in allowed:
        raise ValueError(f"x_proj_weight holds K={k} directions; a {x.dim() - 2}D scan supports K in {allowed}")
    if dt_projs_weight.dim() != 3 or dt_projs_weight.shape[:2] != (k, dim):
        raise ValueError(
            f"dt_projs_weight must have shape (K={k}, D={dim}, dt_rank), got {tuple(dt_projs_weight.shape)}"
        )
    rank = dt_projs_weight.shape[2]
    if A_logs.dim() != 2 or A_logs.shape[0] != k * dim:
        raise ValueError(f"A_logs must have shape (K * D={k * dim}, d_state), got {tuple(A_logs.shape)}")
    dstate = A_logs.shape[1]
    if x_proj_weight.shape[1] != rank + 2 * dstate:
        raise ValueError(f"x_proj_weight has {x_proj_weight.shape[1]} outputs per direction, expected "
                         f"dt_rank + 2 * d_state = {rank} + 2 * {dstate} = {rank + 2 * dstate}")
    if dt_projs_bias.shape != (k, dim):
        raise ValueError(f"dt_projs_bias must have shape (K={k}, D={dim}), got {tuple(dt_projs_bias.shape)}")
    if Ds.shape != (k * dim,):
        raise ValueError(f"Ds must have shape (K * D={k * dim},), got {tuple(Ds.shape)}")
    for name, t in (("out_norm_weight", out_norm_weight), ("out_norm_bias", out_norm_bias)):
        if t is not None and t.shape != (dim,):
            raise ValueError(f"{name} must have shape (D={dim},), got {tuple(t.shape)}")


def cross_selective_scan(
    x: Tensor,
    x_proj_weight: Tensor,
    dt_projs_weight: Tensor,
    dt_projs_bias: Tensor,
    A_logs: Tensor,
    Ds: Tensor,
    out_norm: bool = False,
    out_norm_weight: Tensor | None = None,
    out_norm_bias: Tensor | None = None,
    out_norm_eps: float = 1e-5,
    channel_last: bool = False,
    force_fp32: bool = False,
    delta_softplus: bool = True,
    backend: str = "auto",
    fused: bool | None = None,
    conv_weight: Tensor | None = None,
    conv_bias: Tensor | None = None,
    batch_second: bool = False,
) -> Tensor:
    """VMamba's cross selective scan over a 2D or 3D grid.

    ==================  ===============================  ================================================
    argument            shape                            meaning
    ==================  ===============================  ================================================
    x                   (B, D, H, W) or (B, D, Z, H, W)  activations after the depthwise conv + SiLU (before
                                                         it when ``conv_weight`` is given)
    x_proj_weight       (K, R + 2N, D)                   per-direction projection to (dt, B, C)
    dt_projs_weight     (K, D, R)                        per-direction low-rank dt projection
    dt_projs_bias       (K, D)                           dt bias (softplus input), float32
    A_logs              (K * D, N)                       A = -exp(A_logs), rows k*D..(k+1)*D: direction k
    Ds                  (K * D,)                         skip, float32
    out_norm_weight/_b  (D,)                             LayerNorm over channels after the merge
    conv_weight         (D, 1, K, K), K odd              2D only: x goes through SiLU(depthwise conv) first
    conv_bias           (D,) or None                     that conv's bias
    ==================  ===============================  ================================================

    K (the number of directions, taken from ``x_proj_weight``) picks the scan orders of
    :func:`scan_orders`: 1, 2 or 4 in 2D, 1, 2 or 6 in 3D. Direction k's B and C are group k of the grouped
    scan. The merged output is the sum over directions, LayerNorm-ed over channels when ``out_norm``.

    Returns (B, D, *spatial), or (B, *spatial, D) with ``channel_last``, in x's dtype; with ``batch_second`` the
    (B, D, *spatial) result is stored batch-second (:mod:`mambaeye.ops._layout`: written so by the out_norm, else
    copied), for a following :func:`mambaeye.layers.pointwise.pointwise_linear` to run as one matrix product.
    ``force_fp32`` runs the scan on float32 copies of u, delta, B, C (VMamba v0 does; v2 "v05" does not).
    ``backend`` is passed to :func:`mambaeye.ops.selective_scan`. ``fused`` runs :func:`.fused.cross_scan_2d`
    instead of the explicit re-ordered copies; by default when the backend resolves to triton and the grid is
    2D. With ``conv_weight``, ``SiLU(depthwise conv2d)`` (:func:`mambaeye.ops.dwconv.depthwise_conv2d_silu`) runs
    first; the fused path with K = 4 then writes its output straight into the scan's row- and column-major
    layouts (``sources=2``: one pass fewer forward and backward than the conv and then the layout move).
    """
    _check_inputs(x, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds, out_norm_weight, out_norm_bias)
    if batch_second and channel_last:
        raise ValueError("cross_selective_scan: batch_second is a layout of the channel-first output; it cannot be "
                         "combined with channel_last=True")
    if conv_weight is not None and x.dim() != 4:
        raise ValueError(f"conv_weight: the depthwise conv runs on 2D grids (B, D, H, W), got x of shape "
                         f"{tuple(x.shape)}")
    batch, dim, *spatial = x.shape
    length = math.prod(spatial)
    k = x_proj_weight.shape[0]
    dstate = A_logs.shape[1]

    resolved = _resolve_backend(backend, x)
    if fused is None:
        fused = resolved == "triton" and x.dim() == 4
    if fused and (x.dim() != 4 or resolved != "triton"):
        raise ValueError(f"fused=True needs a 2D grid and the triton backend (got {x.dim() - 2}D, {resolved!r})")
    A = -torch.exp(_fp32(A_logs))
    delta_bias = _fp32(dt_projs_bias.reshape(-1))

    if fused:
        from .fused import cross_scan_2d  # imports triton

        y = cross_scan_2d(x, x_proj_weight, dt_projs_weight, A, _fp32(Ds), delta_bias,
                          delta_softplus=delta_softplus, force_fp32=force_fp32, conv_weight=conv_weight,
                          conv_bias=conv_bias)
    else:
        if conv_weight is not None:
            x = depthwise_conv2d_silu(x, conv_weight, conv_bias, backend=resolved)
        u, delta, Bs, Cs = scan_inputs(cross_scan(x, k), x_proj_weight, dt_projs_weight, dstate, force_fp32,
                                       kernels=resolved == "triton")
        ys = selective_scan(u, delta, A, Bs, Cs, _fp32(Ds), delta_bias=delta_bias, delta_softplus=delta_softplus,
                            backend=resolved)  # (B, K * D, L)
        y = cross_merge(ys.view(batch, k, dim, length), spatial)  # (B, D, *spatial)
    if out_norm and not channel_last:  # over dim 1 in place, written in x's dtype (no permuted copies)
        return layer_norm_channel_first(y, out_norm_weight, out_norm_bias, out_norm_eps, backend=resolved,
                                        out_dtype=x.dtype, batch_second=batch_second)
    if batch_second:
        return to_batch_second(y.to(x.dtype))
    if channel_last:
        y = y.movedim(1, -1)  # (B, *spatial, D)
    if out_norm:
        # with force_fp32 the scan's output is float32 while a bf16-cast model's norm weights are bf16
        weight = out_norm_weight.to(y.dtype) if out_norm_weight is not None else None
        bias = out_norm_bias.to(y.dtype) if out_norm_bias is not None else None
        y = F.layer_norm(y, (dim,), weight, bias, out_norm_eps)
    return y.to(x.dtype)
