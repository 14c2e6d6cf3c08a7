"""Launches of mambaeye's Triton kernels on meta tensors, for offline compilation (:mod:`.offline_compile`).

Each builder returns ``(module, kernel names, launch)``: ``launch()`` runs the real launchers on meta tensors, so
that :func:`.offline_compile.record` catches every kernel call with its real arguments. Used by
``benchmarks/scan_ir.py`` (what one launch costs) and ``tests/ops/test_triton_compile.py`` (every kernel compiles).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .bias_gelu import triton_bias_gelu
from .layer_norm import triton_norm
from .selective_scan import triton_scan

META = "meta"
SCAN_KERNELS = ("_scan_segment_kernel", "_scan_fwd_kernel", "_scan_bwd_segment_kernel", "_scan_bwd_kernel")


@dataclass(frozen=True)
class Scan:
    """One scan forward + backward. bc: "fixed" (D, N), "step" (B, 1, N, L) or "grouped" (B, groups, N, L);
    c_bc, when given, makes C a different kind from B. order: plain, reverse or paired (u with half the channels,
    read forward by the even groups and backward by the odd ones)."""

    batch: int
    dim: int
    length: int
    dstate: int
    bc: str = "step"
    groups: int = 1
    z: bool = True
    dtype: torch.dtype = torch.bfloat16
    order: str = "plain"
    has_D: bool = True
    bias: bool = True
    softplus: bool = True
    save_states: bool = True
    dlast: bool = False
    c_bc: str | None = None
    segmented: bool = False  # the case must split L into segments (the segment passes run)

    def _bc(self, kind: str) -> torch.Tensor:
        if kind == "fixed":
            return torch.empty(self.dim, self.dstate, device=META)
        groups = self.groups if kind == "grouped" else 1
        return torch.empty(self.batch, groups, self.dstate, self.length, device=META, dtype=self.dtype)

    def launch(self) -> None:
        b, d, n, length, dt = self.batch, self.dim, self.dstate, self.length, self.dtype
        delta = torch.empty(b, d, length, device=META, dtype=dt)
        u = torch.empty(b, d // 2 if self.order == "paired" else d, length, device=META, dtype=dt)
        A = torch.empty(d, n, device=META)
        B, C = self._bc(self.bc), self._bc(self.c_bc or self.bc)
        D = torch.empty(d, device=META) if self.has_D else None
        z = torch.empty_like(delta) if self.z else None
        bias = torch.empty(d, device=META) if self.bias else None
        flags = dict(paired=self.order == "paired", reverse=self.order == "reverse")
        _, _, states = triton_scan.selective_scan_fwd(u, delta, A, B, C, D, z, bias, self.softplus,
                                                      self.save_states, **flags)
        if self.save_states:
            dlast = torch.empty(b, d, n, device=META) if self.dlast else None
            triton_scan.selective_scan_bwd(torch.empty_like(delta), dlast, u, delta, A, B, C, D, z, bias,
                                           self.softplus, states, **flags)

    def kernels(self) -> tuple[str, ...]:
        names = ["_scan_fwd_kernel"] + (["_scan_bwd_kernel"] if self.save_states else [])
        if self.segmented:
            names += ["_scan_segment_kernel"] + (["_scan_bwd_segment_kernel"] if self.save_states else [])
        return tuple(names)


def add_norm_launches(dim: int, length: int, batch: int = 128):
    """The add + norm of a VMamba-T block under autocast, forward and backward: float32 stream, bf16 branch with a
    bias, bf16 output."""
    x = torch.empty(batch, dim, length, device=META)
    branch = torch.empty_like(x, dtype=torch.bfloat16)
    w, stats = torch.empty(dim, device=META), torch.empty(batch, length, device=META)

    def launch():
        triton_norm.layer_norm_fwd(x, w, w, 1e-5, True, torch.bfloat16, branch, w)
        triton_norm.layer_norm_bwd(branch, x, w, w, stats, stats, x, torch.bfloat16, w)

    return triton_norm, ("_ln_fwd_kernel", "_ln_bwd_kernel"), launch


def bias_gelu_launches(dim: int, length: int, batch: int = 128):
    """The MLP's fc1 output (4 C channels) in bf16, bias + GELU forward and backward."""
    x = torch.empty(batch, 4 * dim, length, device=META, dtype=torch.bfloat16)
    bias = torch.empty(4 * dim, device=META)

    def launch():
        triton_bias_gelu.bias_gelu_fwd(x, bias)
        triton_bias_gelu.bias_gelu_bwd(x, x, bias)

    return triton_bias_gelu, ("_bias_gelu_fwd_kernel", "_bias_gelu_bwd_kernel"), launch
