"""Training cases in memory and the patch sampler.

Each preprocessed case is a :class:`TrainCase`: image (C, *S) float32, label (*S) int64, and the voxel positions
of each foreground class (at most ``max_locations`` per class, a fixed random subset). :class:`PatchSampler`
draws a batch as nnU-Net does: the last ``round(B * foreground_oversample)`` items of a batch are centred on a
random voxel of a random class present in the case, the others are uniformly placed; a case smaller than the
patch is zero-padded (image and label). Augmentation: MONAI dictionary transforms on each patch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["TrainCase", "make_train_case", "PatchSampler", "build_augmentation"]


@dataclass
class TrainCase:
    case_id: str
    image: torch.Tensor  # (C, *S) float32
    label: torch.Tensor  # (*S) int64
    locations: dict[int, np.ndarray] = field(default_factory=dict)  # class -> (N, ndim) voxel indices


def make_train_case(case_id: str, image: torch.Tensor, label: torch.Tensor, max_locations: int = 10_000,
                    seed: int = 0) -> TrainCase:
    rng = np.random.default_rng(seed)
    lab = label.numpy()
    locations = {}
    for c in np.unique(lab):
        if c == 0:
            continue
        idx = np.argwhere(lab == c)
        if len(idx) > max_locations:
            idx = idx[np.sort(rng.choice(len(idx), max_locations, replace=False))]
        locations[int(c)] = idx
    return TrainCase(case_id, image, label, locations)


def _extract(x: torch.Tensor, lo: list[int], patch: tuple[int, ...]) -> torch.Tensor:
    """The patch of (C, *S) ``x`` whose first voxel sits at ``lo`` (may be negative / run past the end: zeros)."""
    out = x.new_zeros((x.shape[0],) + patch)
    src, dst = [slice(None)], [slice(None)]
    for a, (start, p) in enumerate(zip(lo, patch, strict=True)):
        n = x.shape[1 + a]
        s0, s1 = max(start, 0), min(start + p, n)
        src.append(slice(s0, s1))
        dst.append(slice(s0 - start, s1 - start))
    out[tuple(dst)] = x[tuple(src)]
    return out


class PatchSampler:
    """``sample(rng)`` -> (x (B, C, *P) float32, y (B, 1, *P) int64)."""

    def __init__(self, cases: list[TrainCase], patch_size, batch_size: int, foreground_oversample: float = 0.33,
                 augment=None) -> None:
        if not cases:
            raise ValueError("no training cases to sample patches from")
        self.cases = cases
        self.patch = tuple(int(p) for p in patch_size)
        self.batch_size = batch_size
        self.n_random = int(round(batch_size * (1 - foreground_oversample)))
        self.augment = augment

    def _corner(self, case: TrainCase, force_fg: bool, rng: np.random.Generator) -> list[int]:
        shape = case.image.shape[1:]
        lo_min = [min(0, n - p) for n, p in zip(shape, self.patch, strict=True)]
        lo_max = [max(0, n - p) for n, p in zip(shape, self.patch, strict=True)]
        if force_fg and case.locations:
            cls = list(case.locations)[int(rng.integers(len(case.locations)))]
            locs = case.locations[cls]
            voxel = locs[int(rng.integers(len(locs)))]
            return [int(np.clip(v - p // 2, a, b)) for v, p, a, b in zip(voxel, self.patch, lo_min, lo_max,
                                                                          strict=True)]
        return [int(rng.integers(a, b + 1)) for a, b in zip(lo_min, lo_max, strict=True)]

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for i in range(self.batch_size):
            case = self.cases[int(rng.integers(len(self.cases)))]
            lo = self._corner(case, i >= self.n_random, rng)
            x = _extract(case.image, lo, self.patch)
            y = _extract(case.label[None], lo, self.patch)
            if self.augment is not None:
                x, y = self.augment(x, y)
            xs.append(x)
            ys.append(y)
        return torch.stack(xs).float().contiguous(), torch.stack(ys).long().contiguous()


class _Augment:
    """MONAI transforms on one patch: rotation/scaling (p 0.2), Gaussian noise (p 0.1), brightness (p 0.15),
    gamma (p 0.15), a flip along each axis (p 0.5 each). ``set_seed`` makes the stream reproducible."""

    def __init__(self, spatial_dims: int) -> None:
        from monai import transforms as T

        keys = ("image", "label")
        angle = math.pi / 12  # +-15 degrees
        rotate = (angle,) if spatial_dims == 2 else (angle, angle, angle)
        self.compose = T.Compose([
            T.RandAffined(keys, prob=0.2, rotate_range=rotate, scale_range=(0.15,) * spatial_dims,
                          mode=("bilinear", "nearest"), padding_mode="zeros"),
            T.RandGaussianNoised("image", prob=0.1, std=0.1),
            T.RandScaleIntensityd("image", factors=0.25, prob=0.15),
            T.RandAdjustContrastd("image", prob=0.15, gamma=(0.7, 1.5)),
            *[T.RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(spatial_dims)],
        ])

    def set_seed(self, seed: int) -> None:
        self.compose.set_random_state(seed=seed % 2**32)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from monai.data import get_track_meta, set_track_meta

        track = get_track_meta()
        set_track_meta(False)  # plain tensors out, and faster
        try:
            d = self.compose({"image": x, "label": y.float()})
        finally:
            set_track_meta(track)
        return torch.as_tensor(d["image"]).float(), torch.as_tensor(d["label"]).round().long()


def build_augmentation(spatial_dims: int) -> _Augment:
    return _Augment(spatial_dims)
