"""Helpers shared by the Triton launchers of :mod:`mambaeye.ops` (no Triton import: pure host-side arithmetic), and
the batch-second layout of channel-first maps.

Batch-second: a channel-first tensor (B, C, *S) stored as a transposed view of a contiguous (C, B, *S) one (strides
(prod(S), B * prod(S), ...)), so that each channel's values over all images and positions are one contiguous row.
A Linear over the channels is then one matrix product on the (C, B * prod(S)) view (mambaeye.layers.pointwise),
where the usual batch-first storage needs one per image or cuDNN's NCHW <-> NHWC transposes around a 1x1 conv. The
channel-first kernels of mambaeye.ops (LayerNorm, bias + GELU, the depthwise conv, the fused cross-scan's conv)
address (B, C, L) with any batch and channel strides, so they read either layout, and their outputs follow x's.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["batch_rows", "empty", "empty_like", "is_batch_second", "plane_strides", "strides_by_vector",
           "to_batch_second"]


def is_batch_second(x: Tensor) -> bool:
    """Whether x (B, C, *S) is stored batch-second: ``x.transpose(0, 1)`` is contiguous. With B = 1 (or C = 1) a
    contiguous map is both batch-first and batch-second."""
    return x.dim() >= 2 and x.transpose(0, 1).is_contiguous()


def empty(shape: tuple[int, ...] | torch.Size, *, dtype: torch.dtype, device: torch.device, batch_second: bool,
          channel_dims: int = 1) -> Tensor:
    """An uninitialised (B, *channels, *positions) tensor, ``channels = shape[1:1 + channel_dims]``: contiguous, or
    with ``batch_second`` stored as (*channels, B, *positions) - each channel one contiguous row over all images and
    positions. The one allocator of the layout: channel-first maps (B, C, *S), and the cross-scan's two sources
    (B, 2, C, L) with ``channel_dims=2``."""
    if not batch_second:
        return torch.empty(shape, dtype=dtype, device=device)
    batch, channels = shape[0], tuple(shape[1:1 + channel_dims])
    stored = torch.empty(*channels, batch, *shape[1 + channel_dims:], dtype=dtype, device=device)
    return stored.movedim(channel_dims, 0)


def empty_like(x: Tensor, dtype: torch.dtype, batch_second: bool = False) -> Tensor:
    """``torch.empty_like(x, dtype=dtype)`` (x's layout where x is dense), or with ``batch_second`` the same shape
    stored batch-second whatever x's layout."""
    if batch_second:
        return empty(x.shape, dtype=dtype, device=x.device, batch_second=True)
    return torch.empty_like(x, dtype=dtype)


def batch_rows(t: Tensor) -> Tensor:
    """t (B, *C, L) -> (*C, B*L), each channel's values over all images and positions one row: a view where t is
    stored batch-second ((*C, B, L) memory), else a copy. A Linear over the channels is then one matrix product."""
    batch, length = t.shape[0], t.shape[-1]
    return t.movedim(0, -2).reshape(*t.shape[1:-1], batch * length)


def plane_strides(t: Tensor) -> tuple[int, ...] | None:
    """The strides of t (..., L) in whole planes (rows of L contiguous elements; 0 for dimensions of size 1) - its
    layout as the kernels that address planes take it, the plane size a compile-time constant; None where a plane
    is not contiguous or does not start at a multiple of L."""
    length = t.shape[-1]
    if t.stride(-1) != 1 and length > 1:
        return None
    strides = [st if n > 1 else 0 for n, st in zip(t.shape[:-1], t.stride()[:-1], strict=True)]
    if any(st % length for st in strides):
        return None
    return tuple(st // length for st in strides)


def to_batch_second(x: Tensor) -> Tensor:
    """x (B, C, *S) stored batch-second: x itself when it already is, else a copy (autograd tracks it)."""
    return x if is_batch_second(x) else x.transpose(0, 1).contiguous().transpose(0, 1)


def strides_by_vector(length: int, *tensors: Tensor) -> tuple[int, bool, list[int]]:
    """(VEC, IDX64, [length and each tensor's batch and channel strides] // VEC) for the kernels.

    VEC = the largest of 16, 8, 4 (else 1) that divides L and every batch/channel stride: the kernels multiply them
    back by the constexpr VEC, so the compiler knows groups of VEC positions are aligned and loads them with vector
    instructions (Triton's own hint is divisibility by 16 only: 14x14 grids, L 196, were loaded element by element).
    IDX64: some element's offset passes 2**31 - 1, so offsets are computed in int64 (else int32: half the address
    arithmetic)."""
    strides = [v for t in tensors for v in t.stride()[:2]]
    vec = next((v for v in (16, 8, 4) if length % v == 0 and all(st % v == 0 for st in strides)), 1)
    idx64 = max(sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride(), strict=True)) for t in tensors) >= 2**31 - 1
    return vec, idx64, [length // vec, *(v // vec for v in strides)]
