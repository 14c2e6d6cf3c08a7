"""Fused 2D cross selective scan: VMamba's four scan orders inside the Triton kernels' loads and stores.

Reference: :func:`mambaeye.ops.cross_scan.cross_selective_scan` with ``fused=False`` - it writes K re-ordered
copies of the activations (cross-scan), projects each, scans, and re-orders the outputs back (cross-merge).
Here nothing is re-ordered in memory. Every per-position quantity stays in the grid's row-major order:

- u (B, D, H*W): the activations, read by all K directions (one copy, not K);
- delta (B, K*D, H*W) and B, C (B, K, N, H*W): the per-direction projections, computed position-wise from u
  (a projection of position p does not care in which order p is visited, so it is done once on u);
- out (B, K*D, H*W): direction k's output written back at the position it was read from.

Direction k of the scan visits the positions in its own order (``triton_scan._seq_index``), so the merge is
a plain sum over k. The backward reads and writes through the same indices; du comes per direction and is
summed over k.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..selective_scan import triton_scan

__all__ = ["cross_scan_2d"]


def _accumulation(u: Tensor) -> torch.dtype:
    """The merge over directions adds in float32 (float64 for float64 inputs), whatever u's dtype."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


@torch.library.custom_op("mambaeye::cross_scan_2d_fwd", mutates_args=())
def _fwd(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, delta_bias: Tensor,
    delta_softplus: bool, height: int, width: int, save_states: bool,
) -> tuple[Tensor, Tensor]:
    out, _, states = triton_scan.selective_scan_fwd(
        u, delta, A, B, C, D, None, delta_bias, delta_softplus, save_states, cross=(B.shape[1], height, width)
    )
    return out, states


@_fwd.register_fake
def _fwd_fake(u, delta, A, B, C, D, delta_bias, delta_softplus, height, width, save_states):
    batch, dim, length = delta.shape
    state = torch.float64 if u.dtype == torch.float64 else torch.float32
    n_chunks = triton_scan.num_state_chunks(batch, dim, length, A.shape[1])
    shape = (batch, dim, n_chunks, A.shape[1]) if save_states else (0,)
    return torch.empty_like(delta, dtype=u.dtype), u.new_empty(shape, dtype=state)


@torch.library.custom_op("mambaeye::cross_scan_2d_bwd", mutates_args=())
def _bwd(
    dout: Tensor, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, delta_bias: Tensor,
    delta_softplus: bool, height: int, width: int, states: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    directions = B.shape[1]
    du_k, ddelta, dA, dB, dC, dD, _, dbias = triton_scan.selective_scan_bwd(
        dout, None, u, delta, A, B, C, D, None, delta_bias, delta_softplus, states,
        cross=(directions, height, width),
    )
    batch, dim, length = u.shape
    du = du_k.view(batch, directions, dim, length).sum(1, dtype=_accumulation(u)).to(u.dtype)
    return du, ddelta, dA, dB, dC, dD, dbias


@_bwd.register_fake
def _bwd_fake(dout, u, delta, A, B, C, D, delta_bias, delta_softplus, height, width, states):
    return tuple(torch.empty_like(t) for t in (u, delta, A, B, C, D, delta_bias))


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, delta_bias, delta_softplus, height, width, _ = inputs
    ctx.args = (delta_softplus, height, width)
    ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, output[1])


def _backward(ctx, dout, _dstates):
    u, delta, A, B, C, D, delta_bias, states = ctx.saved_tensors
    if states.numel() == 0:
        raise RuntimeError("cross_scan_2d: the forward ran without saving its states (no input required grad)")
    delta_softplus, height, width = ctx.args
    grads = _bwd(dout.contiguous(), u, delta, A, B, C, D, delta_bias, delta_softplus, height, width, states)
    return (*grads, None, None, None, None)


_fwd.register_autograd(_backward, setup_context=_setup_context)


def cross_scan_2d(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, delta_bias: Tensor,
    height: int, width: int, delta_softplus: bool = True,
) -> Tensor:
    """Cross selective scan of an (H, W) grid in K directions; returns the merged output (B, D, H*W).

    u: (B, D, L); delta: (B, K*D, L); A: (K*D, N) float32; B, C: (B, K, N, L); D, delta_bias: (K*D,) float32;
    every L axis in the grid's row-major order (L = H*W). K = B.shape[1] in {1, 2, 4} (row; row and reversed
    row; row, column, reversed row, reversed column - the official VMamba order). CUDA tensors (or CPU tensors
    under TRITON_INTERPRET=1).
    """
    batch, dim, length = u.shape
    directions = B.shape[1]
    if directions not in (1, 2, 4):
        raise ValueError(f"the fused 2D cross-scan takes K in (1, 2, 4) directions, got {directions}")
    if length != height * width:
        raise ValueError(f"u has {length} positions, but the grid is {height}x{width} = {height * width}")
    if delta.shape != (batch, directions * dim, length):
        raise ValueError(f"delta must have shape (B, K*D, L) = {(batch, directions * dim, length)}, "
                         f"got {tuple(delta.shape)}")
    tensors = (u, delta, A, B, C, D, delta_bias)
    u, delta, A, B, C, D, delta_bias = (t.contiguous() for t in tensors)
    save_states = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    out, _ = _fwd(u, delta, A, B, C, D, delta_bias, bool(delta_softplus), int(height), int(width), save_states)
    return out.view(batch, directions, dim, length).sum(1, dtype=_accumulation(u)).to(u.dtype)
