"""Sliding-window prediction with Gaussian weighting (MONAI) and test-time mirroring, back on the original grid."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mambaeye.data.io import Geometry

from .losses import as_output_list
from .preprocess import Plan, preprocess_case, restore_probabilities

__all__ = ["sliding_window_logits", "predict_probabilities", "predict_case"]


def _highest_resolution(model: nn.Module, spatial_dims: int):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return as_output_list(model(x), spatial_dims)[0]

    return forward


@torch.no_grad()
def sliding_window_logits(model: nn.Module, image: torch.Tensor, patch_size, overlap: float = 0.5,
                          sw_batch_size: int = 4, device: torch.device | str = "cpu") -> torch.Tensor:
    """image (C, *S) -> logits (K, *S): windows of ``patch_size`` (the image is padded where smaller),
    ``overlap`` between neighbours, blended with a Gaussian importance map (sigma 1/8 of the patch). A window
    covering the whole image returns exactly the network's output."""
    from monai.inferers import sliding_window_inference

    spatial_dims = image.dim() - 1
    x = image[None].to(device)
    out = sliding_window_inference(x, tuple(patch_size), sw_batch_size, _highest_resolution(model, spatial_dims),
                                   overlap=overlap, mode="gaussian", sigma_scale=0.125, padding_mode="constant",
                                   cval=0.0, sw_device=device, device="cpu")
    return torch.as_tensor(out)[0].float()


@torch.no_grad()
def predict_probabilities(model: nn.Module, image: torch.Tensor, patch_size, overlap: float = 0.5,
                          mirror: bool = False, sw_batch_size: int = 4,
                          device: torch.device | str = "cpu") -> torch.Tensor:
    """image (C, *S) -> softmax (K, *S); with ``mirror`` the average over the image and its flips along each
    spatial axis (1 + spatial_dims passes; each prediction flipped back before averaging)."""
    was_training = model.training
    model.eval()
    try:
        probs = torch.softmax(sliding_window_logits(model, image, patch_size, overlap, sw_batch_size, device), 0)
        if mirror:
            for axis in range(1, image.dim()):
                flipped = sliding_window_logits(model, image.flip(axis), patch_size, overlap, sw_batch_size, device)
                probs += torch.softmax(flipped, 0).flip(axis)
            probs /= image.dim()
    finally:
        model.train(was_training)
    return probs


@torch.no_grad()
def predict_case(model: nn.Module, image: np.ndarray, geometry: Geometry, plan: Plan, patch_size,
                 overlap: float = 0.5, mirror: bool = False, sw_batch_size: int = 4,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, np.ndarray]:
    """A raw case (C, *S) with its geometry -> (probabilities (K, *S), labels (*S) uint8/int16) on the original
    grid: preprocess, sliding window, undo resampling and crop."""
    x, _, props = preprocess_case(image, None, geometry, plan)
    probs = predict_probabilities(model, x, patch_size, overlap, mirror, sw_batch_size, device)
    probs = restore_probabilities(probs, props)
    labels = probs.argmax(0).numpy().astype(np.uint8 if plan.num_classes <= 255 else np.int16)
    return probs, labels
