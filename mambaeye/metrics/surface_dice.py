"""Normalized surface Dice (NSD) per class, tolerance in mm, honouring voxel spacing.

Computed by MONAI's ``compute_surface_dice`` on one-hot maps (boundary voxels = mask minus its erosion, Euclidean
distance transform scaled by spacing, ``use_subvoxels=False``): with boundary sets S_P and S_G,

    NSD = (|{p in S_P : d(p, S_G) <= tau}| + |{g in S_G : d(g, S_P) <= tau}|) / (|S_P| + |S_G|).

MONAI gives NaN where a class is absent from both maps; that case is replaced here by ``empty_value``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from ._checks import check_label_maps, per_sample_spacing


def _compute_surface_dice():
    try:
        from monai.metrics import compute_surface_dice
    except ImportError as e:
        raise ImportError(
            "normalized_surface_dice needs MONAI: pip install monai (or pip install 'mambaeye[seg]')"
        ) from e
    return compute_surface_dice


def normalized_surface_dice(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    num_classes: int,
    tolerance: float | Sequence[float],
    spacing: float | Sequence[float] | Sequence[Sequence[float]] | None = None,
    include_background: bool = False,
    empty_value: float = 1.0,
) -> torch.Tensor:
    """Per-class normalized surface Dice for each sample.

    pred, target: integer label maps (B, H, W) or (B, D, H, W) with values in [0, num_classes).
    tolerance: in mm, one number or one per returned class (C').
    spacing: voxel size in mm along the spatial axes, in array order: None (1 mm), a number, ``spatial_dims``
        numbers, or (B, spatial_dims) numbers.
    Returns float32 (B, C') with C' = num_classes, or num_classes - 1 without background.

    Empty classes: absent from both maps -> ``empty_value`` (1.0 by default, as in the FLARE / U-Mamba evaluation;
    ``float("nan")`` for nnU-Net v2 style averaging with ``torch.nanmean``); present in only one -> 0.
    """
    p, t = check_label_maps(pred, target, num_classes)
    batch, spatial_dims = p.shape[0], p.ndim - 1
    n_out = num_classes - (0 if include_background else 1)
    if isinstance(tolerance, (int, float)):
        tol = [float(tolerance)] * n_out
    else:
        tol = [float(v) for v in tolerance]
        if len(tol) != n_out:
            raise ValueError(f"tolerance needs 1 or {n_out} values (one per returned class), got {len(tol)}")
    if any(not np.isfinite(v) or v < 0 for v in tol):
        raise ValueError(f"tolerance must be finite and >= 0 mm, got {tolerance!r}")
    spacings = per_sample_spacing(spacing, batch, spatial_dims)
    if n_out == 0:
        return torch.zeros(batch, 0)

    compute_surface_dice = _compute_surface_dice()
    out = torch.empty(batch, n_out, dtype=torch.float32)
    with warnings.catch_warnings():
        # empty classes are handled below; MONAI warns about them and about its own deprecated internals
        warnings.filterwarnings("ignore", message=".*is all 0, this may result in nan/inf distance.*")
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        for b in range(batch):
            # (1, C, *spatial) one-hot, as MONAI expects
            p1 = torch.nn.functional.one_hot(p[b : b + 1], num_classes).movedim(-1, 1).float()
            t1 = torch.nn.functional.one_hot(t[b : b + 1], num_classes).movedim(-1, 1).float()
            nsd = compute_surface_dice(
                p1, t1, class_thresholds=tol, include_background=include_background, spacing=list(spacings[b])
            )
            out[b] = nsd[0].float()
    start = 0 if include_background else 1
    classes = torch.arange(start, num_classes)
    p_has = (p.flatten(1).unsqueeze(-1) == classes).any(1)
    t_has = (t.flatten(1).unsqueeze(-1) == classes).any(1)
    out = torch.where(~p_has & ~t_has, torch.full_like(out, empty_value), out)
    out = torch.where(p_has ^ t_has, torch.zeros_like(out), out)
    return out
