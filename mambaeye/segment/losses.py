"""Dice + cross-entropy with deep supervision, as nnU-Net trains.

Network outputs are a tensor (B, K, *P) or a list of them, highest resolution first (U-Mamba, Swin-UMamba), or
MONAI DynUNet's training-mode stack (B, N, K, *P). Each output gets the target downsampled to its size by nearest
neighbour; the weights halve per scale, the lowest resolution gets 0 (nnU-Net), and they are normalised to sum
to 1. The Dice term is MONAI's batch Dice without background (smooth 1e-5), the CE term is over all classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DiceCELoss", "DeepSupervisionLoss", "deep_supervision_weights", "as_output_list",
           "downsample_target"]


def as_output_list(outputs, spatial_dims: int) -> list[torch.Tensor]:
    """A network's outputs as a list (B, K, *P_i), highest resolution first."""
    if isinstance(outputs, (list, tuple)):
        return list(outputs)
    if outputs.dim() == spatial_dims + 3:  # DynUNet's (B, N, K, *P) deep-supervision stack
        return list(outputs.unbind(1))
    return [outputs]


def deep_supervision_weights(n: int) -> list[float]:
    """[1, 1/2, 1/4, ...] with the last set to 0 (when n > 1), normalised to sum 1."""
    w = [0.5**i for i in range(n)]
    if n > 1:
        w[-1] = 0.0
    total = sum(w)
    return [v / total for v in w]


def downsample_target(target: torch.Tensor, size) -> torch.Tensor:
    """(B, 1, *P) integer -> (B, 1, *size) by nearest neighbour."""
    if tuple(target.shape[2:]) == tuple(size):
        return target
    return F.interpolate(target.float(), size=tuple(size), mode="nearest").long()


class DiceCELoss(nn.Module):
    """logits (B, K, *P), target (B, 1, *P) integer -> scalar: batch soft Dice loss (no background) + CE."""

    def __init__(self, smooth: float = 1e-5) -> None:
        super().__init__()
        from monai.losses import DiceCELoss as _MonaiDiceCE

        self.loss = _MonaiDiceCE(include_background=False, to_onehot_y=True, softmax=True, batch=True,
                                 smooth_nr=smooth, smooth_dr=smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits.float(), target)


class DeepSupervisionLoss(nn.Module):
    """sum_i w_i * loss(outputs[i], target downsampled to outputs[i]); ``outputs`` as :func:`as_output_list`."""

    def __init__(self, loss: nn.Module, spatial_dims: int) -> None:
        super().__init__()
        self.loss = loss
        self.spatial_dims = spatial_dims

    def forward(self, outputs, target: torch.Tensor) -> torch.Tensor:
        outs = as_output_list(outputs, self.spatial_dims)
        weights = deep_supervision_weights(len(outs))
        # every term is computed, zero weights included, so that DDP sees a gradient for every head
        return sum(w * self.loss(o, downsample_target(target, o.shape[2:])) for w, o in zip(weights, outs,
                                                                                              strict=True))
