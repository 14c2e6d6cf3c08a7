"""Argument checks shared by the segmentation metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def as_label_map(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """An integer label map (B, *spatial) as a CPU int64 tensor; floats and bools are refused."""
    t = torch.as_tensor(x)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} must be an integer label map (B, *spatial), got dtype {t.dtype}")
    return t.detach().to("cpu", torch.int64)


def check_label_maps(
    pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate pred/target (B, H, W) or (B, D, H, W) with labels in [0, num_classes)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    p, t = as_label_map(pred, "pred"), as_label_map(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
    if p.ndim not in (3, 4):
        raise ValueError(f"expected label maps (B, H, W) or (B, D, H, W), got shape {tuple(p.shape)}")
    for name, x in (("pred", p), ("target", t)):
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= num_classes):
            raise ValueError(
                f"{name} has labels in [{int(x.min())}, {int(x.max())}], outside [0, {num_classes - 1}] "
                f"for num_classes={num_classes}"
            )
    return p, t


def per_sample_spacing(
    spacing: float | Sequence[float] | Sequence[Sequence[float]] | None, batch: int, spatial_dims: int
) -> list[tuple[float, ...]]:
    """Spacing in mm as one tuple per sample: None -> 1 mm, a number -> isotropic, a sequence of
    ``spatial_dims`` numbers -> shared by the batch, or ``batch`` such sequences."""
    if spacing is None:
        return [(1.0,) * spatial_dims] * batch
    if isinstance(spacing, (int, float)):
        rows = [[float(spacing)] * spatial_dims] * batch
    else:
        arr = np.asarray(spacing, dtype=np.float64)
        if arr.shape == (spatial_dims,):
            rows = [arr.tolist()] * batch
        elif arr.shape == (batch, spatial_dims):
            rows = arr.tolist()
        else:
            raise ValueError(
                f"spacing must be a number, {spatial_dims} numbers or ({batch}, {spatial_dims}) numbers, "
                f"got shape {arr.shape}"
            )
    out = [tuple(float(v) for v in r) for r in rows]
    if any(not np.isfinite(v) or v <= 0 for r in out for v in r):
        raise ValueError(f"spacing must be positive and finite, got {spacing!r}")
    return out
