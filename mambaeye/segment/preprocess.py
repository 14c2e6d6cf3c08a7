"""Preprocessing as nnU-Net does it, and its inverse for predictions.

    original (C, *S) --crop to the non-zero box--> (C, *S_c) --normalize--> --resample to target spacing--> (C, *S_r)

Labels follow the same crop and are resampled by nearest neighbour. :class:`CaseProps` keeps the original shape,
geometry and crop box, so :func:`restore_probabilities` / :func:`restore_labels` map a prediction on the
preprocessed grid back onto the original grid (resample to the crop's shape, paste into the box; background
outside it). The dataset-level choices (target spacing, normalization, CT statistics) are a :class:`Plan`,
stored in every checkpoint so prediction needs no training data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from mambaeye.data.io import Geometry

__all__ = ["Plan", "CaseProps", "nonzero_bbox", "crop", "normalize", "resample", "resample_labels",
           "preprocess_case", "restore_probabilities", "restore_labels", "median_spacing", "ct_statistics"]


@dataclass
class Plan:
    spatial_dims: int
    in_channels: int
    num_classes: int
    label_names: dict  # name -> value
    channel_names: list
    target_spacing: list  # mm per array axis
    normalization: str  # zscore | ct | none
    crop_to_nonzero: bool
    ct_stats: list = field(default_factory=list)  # per channel {lo, hi, mean, std} (normalization "ct")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        return cls(**d)


@dataclass
class CaseProps:
    """Where a preprocessed case came from: ``shape`` (*S) and ``geometry`` of the original, the crop box
    ``bbox`` [(lo, hi)] per axis, the cropped shape and the resampled shape."""

    shape: tuple
    geometry: Geometry
    bbox: tuple
    cropped_shape: tuple
    resampled_shape: tuple


def median_spacing(spacings: list[tuple[float, ...]]) -> list[float]:
    """The per-axis median of the cases' spacings (nnU-Net's target spacing for isotropic-ish data)."""
    return [float(v) for v in np.median(np.asarray(spacings, dtype=np.float64), axis=0)]


def nonzero_bbox(image: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Bounding box [(lo, hi)) of voxels non-zero in any channel of (C, *S); the whole image if none is."""
    mask = (image != 0).any(0)
    if not mask.any():
        return tuple((0, n) for n in mask.shape)
    box = []
    for ax in range(mask.ndim):
        hit = np.nonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != ax)))[0]
        box.append((int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def crop(array: np.ndarray, bbox, channel_axis: bool) -> np.ndarray:
    sl = tuple(slice(lo, hi) for lo, hi in bbox)
    return array[(slice(None),) + sl] if channel_axis else array[sl]


def ct_statistics(images: list[np.ndarray], labels: list[np.ndarray], max_samples: int = 100_000,
                  seed: int = 0) -> list[dict]:
    """Per channel: the 0.5 / 99.5 percentiles, mean and std of foreground (label > 0) intensities, from at most
    ``max_samples`` voxels per case (as nnU-Net's dataset fingerprint)."""
    rng = np.random.default_rng(seed)
    stats = []
    for c in range(images[0].shape[0]):
        values = []
        for img, lab in zip(images, labels, strict=True):
            v = img[c][lab > 0]
            if v.size > max_samples:
                v = rng.choice(v, max_samples, replace=False)
            values.append(v)
        v = np.concatenate(values) if values else np.zeros(1)
        if v.size == 0:
            raise ValueError("normalization 'ct' needs foreground voxels in the training labels; there are none")
        stats.append({"lo": float(np.percentile(v, 0.5)), "hi": float(np.percentile(v, 99.5)),
                      "mean": float(v.mean()), "std": float(v.std())})
    return stats


def normalize(image: np.ndarray, plan: Plan, mask: np.ndarray | None = None) -> np.ndarray:
    """(C, *S) -> float32. zscore: per channel with this case's mean/std (inside ``mask`` when given, and 0
    outside it, as nnU-Net with crop_to_nonzero); ct: clip to the dataset's foreground 0.5/99.5 percentiles, then
    the dataset's foreground mean/std; none: as is."""
    out = image.astype(np.float32, copy=True)
    for c in range(out.shape[0]):
        x = out[c]
        if plan.normalization == "zscore":
            v = x[mask] if mask is not None and mask.any() else x
            x -= v.mean()
            x /= max(float(v.std()), 1e-8)
            if mask is not None:
                x[~mask] = 0
        elif plan.normalization == "ct":
            s = plan.ct_stats[c]
            np.clip(x, s["lo"], s["hi"], out=x)
            x -= s["mean"]
            x /= max(s["std"], 1e-8)
    return out


def resample(x: torch.Tensor, shape, mode: str = "linear") -> torch.Tensor:
    """(C, *S) float -> (C, *shape): linear (bi/trilinear, align_corners=False) or "nearest" ("nearest-exact":
    voxel centres aligned, so an integer up- then down-sampling returns the input). Same shape: unchanged."""
    shape = tuple(int(n) for n in shape)
    if tuple(x.shape[1:]) == shape:
        return x
    if mode == "linear":
        m = {1: "linear", 2: "bilinear", 3: "trilinear"}[x.ndim - 1]
        return F.interpolate(x[None], size=shape, mode=m, align_corners=False)[0]
    return F.interpolate(x[None], size=shape, mode="nearest-exact")[0]


def resample_labels(label: np.ndarray, shape) -> np.ndarray:
    """(*S) integer -> (*shape) by nearest neighbour."""
    t = torch.from_numpy(np.ascontiguousarray(label)).float()[None]
    return resample(t, shape, "nearest")[0].round().to(torch.int64).numpy()


def _target_shape(shape, spacing, target_spacing) -> tuple[int, ...]:
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target_spacing, strict=True))


def preprocess_case(image: np.ndarray, label: np.ndarray | None, geometry: Geometry,
                    plan: Plan) -> tuple[torch.Tensor, torch.Tensor | None, CaseProps]:
    """image (C, *S) float32, label (*S) or None -> image (C, *S_r) float32, label (*S_r) int64, and props."""
    shape = tuple(image.shape[1:])
    bbox = nonzero_bbox(image) if plan.crop_to_nonzero else tuple((0, n) for n in shape)
    img = crop(image, bbox, True)
    lab = crop(label, bbox, False) if label is not None else None
    mask = (img != 0).any(0) if plan.crop_to_nonzero else None
    img = normalize(img, plan, mask)
    cropped = tuple(img.shape[1:])
    target = _target_shape(cropped, geometry.spacing, plan.target_spacing)
    img_t = resample(torch.from_numpy(img), target, "linear").contiguous()
    lab_t = torch.from_numpy(resample_labels(lab, target)) if lab is not None else None
    return img_t, lab_t, CaseProps(shape, geometry, bbox, cropped, target)


def restore_probabilities(probs: torch.Tensor, props: CaseProps) -> torch.Tensor:
    """(K, *S_r) class probabilities on the preprocessed grid -> (K, *S) on the original grid (linear
    resampling; outside the crop box: background with probability 1)."""
    p = resample(probs.float(), props.cropped_shape, "linear")
    out = torch.zeros((p.shape[0],) + tuple(props.shape), dtype=p.dtype)
    out[0] = 1.0
    out[(slice(None),) + tuple(slice(lo, hi) for lo, hi in props.bbox)] = p
    return out


def restore_labels(label: np.ndarray, props: CaseProps) -> np.ndarray:
    """(*S_r) label map on the preprocessed grid -> (*S) on the original grid (nearest; 0 outside the box)."""
    lab = resample_labels(label, props.cropped_shape)
    out = np.zeros(props.shape, dtype=lab.dtype)
    out[tuple(slice(lo, hi) for lo, hi in props.bbox)] = lab
    return out
