"""Dice similarity coefficient (DSC) per class on integer label maps."""

from __future__ import annotations

import numpy as np
import torch

from ._checks import check_label_maps


def dice(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    num_classes: int,
    include_background: bool = False,
    empty_value: float = 1.0,
) -> torch.Tensor:
    """Per-class Dice ``2 |P & G| / (|P| + |G|)`` for each sample.

    pred, target: integer label maps (B, H, W) or (B, D, H, W) with values in [0, num_classes).
    Returns float32 (B, C') with C' = num_classes, or num_classes - 1 without background (class 0 dropped).

    Empty classes: where a class is absent from both pred and target the score is ``empty_value`` (1.0 by
    default: a correct "nothing here" counts as perfect, as the FLARE / U-Mamba evaluation scripts do); pass
    ``float("nan")`` for the nnU-Net v2 convention and average with ``torch.nanmean``. A class present in only
    one of the two scores 0.
    """
    p, t = check_label_maps(pred, target, num_classes)
    start = 0 if include_background else 1
    classes = torch.arange(start, num_classes)
    # (B, N) -> (B, N, C') one-hot by comparison; sums stay exact integers
    p1 = p.flatten(1).unsqueeze(-1) == classes
    t1 = t.flatten(1).unsqueeze(-1) == classes
    inter = (p1 & t1).sum(1).double()
    total = p1.sum(1).double() + t1.sum(1).double()
    score = torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.full_like(total, empty_value))
    return score.float()
