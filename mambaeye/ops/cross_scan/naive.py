"""Cross-scan and cross-merge in plain PyTorch: the specification of the scan orders.

A feature map ``x`` of shape (B, C, *spatial) is read as K one-dimensional sequences of length
L = prod(spatial), one per *direction*. A direction is an axis order (slowest axis first, fastest last)
and a reading sense (forward or reversed):

- 2D, (H, W), VMamba's official order (``CrossScan`` in MzeroMiko/VMamba ``vmamba.py``)::

      k = 0: (H, W) forward    row-major, x.flatten(2)
      k = 1: (W, H) forward    column-major, x.transpose(2, 3).flatten(2)
      k = 2: (H, W) reversed   flip of k = 0
      k = 3: (W, H) reversed   flip of k = 1

  With 2 directions: k = 0 and its reverse; with 1 direction: k = 0 only.
- 3D, (D, H, W): each axis is the fastest once, then all three reversed::

      k = 0: (D, H, W)   k = 1: (D, W, H)   k = 2: (H, W, D)   k = 3, 4, 5: reverses of 0, 1, 2

  so that a volume with D = 1 reads, in directions 0, 1, 3, 4, exactly the 2D directions 0, 1, 2, 3.
  With 2 directions: k = 0 and its reverse; with 1: k = 0.

``cross_merge`` is the adjoint of ``cross_scan``: it takes each direction's sequence back to its grid
position and sums over directions, so ``cross_merge(cross_scan(x)) == K * x``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "ScanOrder",
    "scan_orders",
    "valid_directions",
    "default_directions",
    "cross_scan",
    "cross_merge",
]


class ScanOrder(NamedTuple):
    """One scan direction: ``axes`` lists the spatial axes slowest first; ``reverse`` reads it backwards."""

    axes: tuple[int, ...]
    reverse: bool


# The forward axis orders, in official order for 2D. Rule: order i makes spatial axis (n - 1 - i) the
# fastest and keeps the others in their natural order.
_AXIS_ORDERS = {
    2: ((0, 1), (1, 0)),
    3: ((0, 1, 2), (0, 2, 1), (1, 2, 0)),
}


def valid_directions(spatial_dims: int) -> tuple[int, ...]:
    """The numbers of directions supported for ``spatial_dims`` (2 -> (1, 2, 4), 3 -> (1, 2, 6))."""
    if spatial_dims not in _AXIS_ORDERS:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return (1, 2, 2 * len(_AXIS_ORDERS[spatial_dims]))


def default_directions(spatial_dims: int) -> int:
    """All directions: 4 in 2D (VMamba), 6 in 3D."""
    return valid_directions(spatial_dims)[-1]


def scan_orders(spatial_dims: int, directions: int) -> tuple[ScanOrder, ...]:
    """The K scan directions, in the order their parameters are stored (direction k uses weights [k])."""
    allowed = valid_directions(spatial_dims)
    if directions not in allowed:
        raise ValueError(f"directions must be one of {allowed} for spatial_dims={spatial_dims}, got {directions!r}")
    forward = _AXIS_ORDERS[spatial_dims] if directions > 2 else _AXIS_ORDERS[spatial_dims][:1]
    orders = [ScanOrder(axes, False) for axes in forward]
    if directions > 1:
        orders += [ScanOrder(axes, True) for axes in forward]
    return tuple(orders)


def _spatial_dims_of(x: Tensor, name: str) -> int:
    spatial_dims = x.dim() - 2
    if spatial_dims not in _AXIS_ORDERS:
        raise ValueError(f"{name} must have shape (B, C, H, W) or (B, C, D, H, W), got {tuple(x.shape)}")
    return spatial_dims


def cross_scan(x: Tensor, directions: int | None = None) -> Tensor:
    """Read a feature map along K directions.

    x: (B, C, H, W) or (B, C, D, H, W). Returns (B, K, C, L) with L = prod(spatial), a new tensor.
    ``directions`` defaults to all (4 in 2D, 6 in 3D).
    """
    spatial_dims = _spatial_dims_of(x, "x")
    if directions is None:
        directions = default_directions(spatial_dims)
    seqs = []
    for order in scan_orders(spatial_dims, directions):
        seq = x.permute(0, 1, *(2 + a for a in order.axes)).flatten(2)  # (B, C, L)
        seqs.append(seq.flip(-1) if order.reverse else seq)
    return torch.stack(seqs, dim=1)


def cross_merge(ys: Tensor, spatial_shape: Sequence[int]) -> Tensor:
    """Sum K per-direction sequences back onto the grid: the adjoint of :func:`cross_scan`.

    ys: (B, K, C, L) with K directions in :func:`scan_orders` order; spatial_shape: (H, W) or (D, H, W)
    with prod == L. Returns (B, C, *spatial_shape).
    """
    spatial_shape = tuple(int(s) for s in spatial_shape)
    spatial_dims = len(spatial_shape)
    if ys.dim() != 4:
        raise ValueError(f"ys must have shape (B, K, C, L), got {tuple(ys.shape)}")
    batch, k, channels, length = ys.shape
    if spatial_dims not in _AXIS_ORDERS or length != _prod(spatial_shape):
        raise ValueError(f"spatial_shape {spatial_shape} must be 2 or 3 sizes whose product is L={length}")
    y = None
    for i, order in enumerate(scan_orders(spatial_dims, k)):
        seq = ys[:, i].flip(-1) if order.reverse else ys[:, i]  # (B, C, L)
        grid = seq.reshape(batch, channels, *(spatial_shape[a] for a in order.axes))
        inverse = [0] * spatial_dims
        for pos, axis in enumerate(order.axes):
            inverse[axis] = pos
        grid = grid.permute(0, 1, *(2 + p for p in inverse))  # (B, C, *spatial_shape)
        y = grid if y is None else y + grid
    return y.contiguous()


def _prod(sizes: Sequence[int]) -> int:
    out = 1
    for s in sizes:
        out *= s
    return out
