"""Fused 2D cross selective scan: VMamba's four directions as two forward/backward pairs, no flipped copies.

Reference: :func:`mambaeye.ops.cross_scan.cross_selective_scan` with ``fused=False`` - it writes K re-ordered
copies of the activations (cross-scan), projects each, scans, and re-orders the outputs back (cross-merge).

Here the grid is laid out in at most two orders, its *sources*: row-major (x itself) and, for K = 4,
column-major (one transposed copy). Each source is scanned forward and backward by the *paired* Triton scan
(:mod:`mambaeye.ops.selective_scan.triton_scan`): both directions of a pair read the same u in place, walking it
from either end, and write their outputs at the positions they read. So every load and store is contiguous
along L whatever the grid (a scan that reads the column directions straight from the row-major grid strides
by W elements per step: 2x slower than the reference at 56x56 on an H100, benchmarks/NOTES.md).

Internally the directions are source-major - (row, reversed row, column, reversed column), i.e. the official
directions (0, 2, 1, 3) - so the per-direction weights are re-ordered (small tensors) and the projections of
each source are one broadcast matmul. The merge sums each pair in its source's order and adds the column
source back transposed; both layout moves (the column-major copy, the merge) are tiled kernels (:mod:`.grid`).
Against the reference this writes one copy of x instead of K (none for K <= 2) and no re-ordered outputs.

With the conv and K = 4, on grids of at most ``BATCH_SECOND_MAX_LENGTH`` positions, the conv writes the two sources
batch-second - (2, D, B, L) memory, each source channel one row over the batch and positions - so that the
per-direction projections are plain GEMMs over all B * L positions (:func:`..cross_scan.scan_inputs`); u, delta,
B, C, the scan's outputs and all their gradients are then batch-second views too, which the scan and the merge read
in place (both take any batch and channel strides). Larger grids keep batch-first sources (see the constant).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..dwconv import depthwise_conv2d_silu
from ..selective_scan import _through_custom_op, selective_scan, triton_scan
from . import scan_inputs
from .grid import gather, spread

__all__ = ["cross_scan_2d"]

# Grids of more positions than this keep batch-first sources (the projections as broadcast matmuls over the batch).
# H100, batch 128, bf16 (benchmarks/NOTES.md, tenth session of 2026-12-07): the projections' six products
# batch-first / batch-second take 345 / 246 us at 14x14 and 522 / 119 at 7x7, but 398 / 1144 at 28x28 and 586 / 3892
# at 56x56, where cuBLAS runs the weight gradients' GEMMs (a D x R output reduced over B*L) and the dt forward (a
# reduction of R) far from their floor; the stage-1 layer's training step took 4.14 / 7.23 ms.
BATCH_SECOND_MAX_LENGTH = 196


def _source_major(t: Tensor) -> Tensor:
    """(4, ...) per official direction (row, column, reversed row, reversed column) -> (4, ...) in the internal
    order (row, reversed row, column, reversed column). A transposed view made contiguous: indexing with a list
    would copy the indices to the GPU and synchronise on every call."""
    return t.unflatten(0, (2, 2)).transpose(0, 1).flatten(0, 1)


def _pairs(delta: Tensor, B: Tensor) -> tuple[int, int, int, int]:
    """(batch, pairs, channels per group, L) of a paired scan."""
    batch, dim, length = delta.shape
    pairs = B.shape[1] // 2
    return batch, pairs, dim // (2 * pairs), length


def _fwd_impl(u, delta, A, B, C, D, delta_bias, delta_softplus, save_states):
    out, _, states = triton_scan.selective_scan_fwd(
        u, delta, A, B, C, D, None, delta_bias, delta_softplus, save_states, paired=True
    )
    return out.view(*_pairs(delta, B)[:2], 2, -1, delta.shape[2]), states


def _bwd_impl(dout, u, delta, A, B, C, D, delta_bias, delta_softplus, states):
    """dout: per group (B, 2P*Du, L), or one per pair (B, P*Du, L) when both directions of each pair get the same
    gradient (the merge's backward: :func:`.grid.gather` sums each pair)."""
    du, ddelta, dA, dB, dC, dD, _, dbias = triton_scan.selective_scan_bwd(
        dout, None, u, delta, A, B, C, D, None, delta_bias, delta_softplus, states, paired=True
    )
    return du, ddelta, dA, dB, dC, dD, dbias


@torch.library.custom_op("mambaeye::paired_scan_fwd", mutates_args=())
def _fwd(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, delta_bias: Tensor,
    delta_softplus: bool, save_states: bool,
) -> tuple[Tensor, Tensor]:
    return _fwd_impl(u, delta, A, B, C, D, delta_bias, delta_softplus, save_states)


@_fwd.register_fake
def _fwd_fake(u, delta, A, B, C, D, delta_bias, delta_softplus, save_states):
    batch, dim, length = delta.shape
    state = torch.float64 if u.dtype == torch.float64 else torch.float32
    n_chunks = triton_scan.num_state_chunks(batch, dim, length, A.shape[1])
    shape = (batch, dim, n_chunks, A.shape[1]) if save_states else (0,)
    out = torch.empty_like(delta, dtype=u.dtype)
    return out.view(*_pairs(delta, B)[:2], 2, -1, length), u.new_empty(shape, dtype=state)


@torch.library.custom_op("mambaeye::paired_scan_bwd", mutates_args=())
def _bwd(
    dout: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, delta_bias: Tensor,
    delta_softplus: bool, states: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return _bwd_impl(dout, u, delta, A, B, C, D, delta_bias, delta_softplus, states)


@_bwd.register_fake
def _bwd_fake(dout, u, delta, A, B, C, D, delta_bias, delta_softplus, states):
    return tuple(torch.empty_like(t) for t in (u, delta, A, B, C, D, delta_bias))


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, delta_bias, delta_softplus, _ = inputs
    ctx.delta_softplus = delta_softplus
    ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, output[1])


def _backward(ctx, dout, _dstates, bwd=None):
    """``bwd``: the custom op (what torch.compile traces) or :func:`_bwd_impl` (eager). dout (B, P, 2, Du, L); where
    the two directions of each pair share it (stride 0 along the pair: the merge's backward), the scan reads one
    copy a pair."""
    if dout is None:  # the output took no part in the loss (gradients not materialised as zeros)
        return (None,) * 9
    u, delta, A, B, C, D, delta_bias, states = ctx.saved_tensors
    if states.numel() == 0:
        raise RuntimeError("paired scan: the forward ran without saving its states (no input required grad)")
    if dout.stride(2) == 0:
        dout = dout[:, :, 0]
    dout = dout.reshape(delta.shape[0], -1, delta.shape[2])
    if dout.stride(-1) != 1:  # the scan reads rows contiguous along L, any batch and channel strides
        dout = dout.contiguous()
    grads = (bwd or _bwd)(dout, u, delta, A, B, C, D, delta_bias, ctx.delta_softplus, states)
    return (*grads, None, None)


_fwd.register_autograd(_backward, setup_context=_setup_context)


class _PairedScanFunction(torch.autograd.Function):
    """The eager path (no dispatcher cost per call), as selective_scan's _ScanFunction."""

    @staticmethod
    def forward(ctx, *inputs):
        ctx.set_materialize_grads(False)  # the saved states' gradient arrives as None, not as a zero-filled tensor
        output = _fwd_impl(*inputs)
        _setup_context(ctx, inputs, output)
        ctx.mark_non_differentiable(output[1])
        return output

    @staticmethod
    def backward(ctx, dout, dstates):
        return _backward(ctx, dout, dstates, bwd=_bwd_impl)


def _paired_scan(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, delta_bias: Tensor,
                 delta_softplus: bool) -> Tensor:
    """u (B, P*Du, L): P sequences; delta (B, 2P*Du, L); B, C (B, 2P, N, L) (L contiguous, other strides free);
    A (2P*Du, N), D, delta_bias (2P*Du,) float32. Group 2p scans sequence p forward, group 2p+1 backward;
    returns each group's output (B, P, 2, Du, L) at the positions it read."""
    tensors = (u, delta, A, B, C, D, delta_bias)
    u, delta = (t if t.stride(-1) == 1 else t.contiguous() for t in (u, delta))
    A, D, delta_bias = (t.contiguous() for t in (A, D, delta_bias))
    save_states = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    scan = _fwd if _through_custom_op(u) else _PairedScanFunction.apply
    out, _ = scan(u, delta, A, B, C, D, delta_bias, bool(delta_softplus), save_states)
    return out


def cross_scan_2d(
    x: Tensor, x_proj_weight: Tensor, dt_projs_weight: Tensor, A: Tensor, Ds: Tensor, delta_bias: Tensor,
    delta_softplus: bool = True, force_fp32: bool = False, conv_weight: Tensor | None = None,
    conv_bias: Tensor | None = None,
) -> Tensor:
    """Cross selective scan of x (B, D, H, W) in K directions (official order); returns the merged (B, D, H, W).

    x_proj_weight (K, R + 2N, D), dt_projs_weight (K, D, R); A (K*D, N), Ds and delta_bias (K*D,) in float32.
    K in {1, 2, 4}: row; row and reversed row; row, column, reversed row, reversed column. CUDA tensors (or
    CPU tensors under TRITON_INTERPRET=1). ``force_fp32`` scans float32 copies of u, delta, B, C.
    ``conv_weight`` (D, 1, K, K), ``conv_bias`` (D,) or None: x is first ``SiLU(depthwise conv2d)``, for K = 4
    written straight into the two sources (``depthwise_conv2d_silu(..., sources=2)``: no spread pass).
    """
    batch, dim, height, width = x.shape
    k = x_proj_weight.shape[0]
    if k not in (1, 2, 4):
        raise ValueError(f"the fused 2D cross-scan takes K in (1, 2, 4) directions, got {k}")
    length = height * width
    dstate = A.shape[1]
    n_src = 2 if k == 4 else 1
    u_src = None  # the scan's u: src itself, or (with the conv) src again as the conv's second output
    if n_src == 2 and conv_weight is not None:  # (B, 2, D, L): the grid row-major, then column-major
        # the projection's and the scan's gradients reach the conv's backward apart, summed in its SiLU pass
        # batch-second sources: the projections become plain matrix products (scan_inputs)
        src, u_src = depthwise_conv2d_silu(x, conv_weight, conv_bias, backend="triton", sources=2, consumers=2,
                                           batch_second=batch > 1 and length <= BATCH_SECOND_MAX_LENGTH)
    elif n_src == 2:
        src = spread(x, 2, 1).view(batch, 2, dim, length)
    else:
        if conv_weight is not None:
            x = depthwise_conv2d_silu(x, conv_weight, conv_bias, backend="triton")
        src = x.reshape(batch, 1, dim, length)

    if k == 4:  # per-direction parameters in the internal (source-major) order
        x_proj_weight, dt_projs_weight = _source_major(x_proj_weight), _source_major(dt_projs_weight)
        A = _source_major(A.view(k, dim, dstate)).view(k * dim, dstate)
        Ds, delta_bias = (_source_major(t.view(k, dim)).view(k * dim) for t in (Ds, delta_bias))
    u, delta, Bs, Cs = scan_inputs(src, x_proj_weight, dt_projs_weight, dstate, force_fp32, u_src=u_src)

    if k == 1:
        return selective_scan(u, delta, A, Bs, Cs, Ds, delta_bias=delta_bias, delta_softplus=delta_softplus,
                              backend="triton").view(batch, dim, height, width)
    out = _paired_scan(u, delta, A, Bs, Cs, Ds, delta_bias, delta_softplus)  # (B, S, 2, D, L), source order
    return gather(out, height, width)  # each pair summed, back on the grid
