"""Helpers shared by the Triton launchers of :mod:`mambaeye.ops` (no Triton import: pure host-side arithmetic)."""

from __future__ import annotations

from torch import Tensor

__all__ = ["strides_by_vector"]


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
