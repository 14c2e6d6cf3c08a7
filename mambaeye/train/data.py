"""Classification data: scikit-learn's digits (real, offline: 1797 8x8 images, 10 classes) resized to the model's
input size, and ImageFolder-style folders (``data_dir/train/<class>/*.png``, ``data_dir/val/<class>/...``)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset, TensorDataset

from .config import TrainConfig

__all__ = ["build_dataset", "image_transform", "load_image", "DIGITS_CLASSES"]

DIGITS_CLASSES = [str(i) for i in range(10)]
_DIGITS_VAL_FRACTION = 0.2


def _norm_stats(cfg: TrainConfig) -> tuple[list[float], list[float]]:
    def expand(v: list) -> list[float]:
        v = [float(x) for x in v]
        if len(v) == 1:
            return v * cfg.in_chans
        if len(v) != cfg.in_chans:
            raise ValueError(f"mean/std need 1 or in_chans={cfg.in_chans} values, got {v}")
        return v
    return expand(cfg.mean), expand(cfg.std)


def _digits(cfg: TrainConfig, split: str) -> tuple[Dataset, list[str]]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover
        raise ImportError("the 'digits' dataset needs scikit-learn: pip install scikit-learn") from e
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    targets = torch.tensor(bunch.target, dtype=torch.long)
    perm = torch.randperm(len(targets), generator=torch.Generator().manual_seed(0))  # fixed split, any seed
    n_val = int(round(len(perm) * _DIGITS_VAL_FRACTION))
    idx = perm[n_val:] if split == "train" else perm[:n_val]
    x = F.interpolate(images[idx], size=(cfg.img_size, cfg.img_size), mode="bilinear", align_corners=False)
    x = x.clamp(0, 1).expand(-1, cfg.in_chans, -1, -1)
    mean, std = _norm_stats(cfg)
    x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    return TensorDataset(x.contiguous(), targets[idx]), DIGITS_CLASSES


def image_transform(cfg: TrainConfig, train: bool = False):
    from torchvision import transforms as T

    mean, std = _norm_stats(cfg)
    ops = [T.Grayscale(1) if cfg.in_chans == 1 else T.Lambda(lambda im: im.convert("RGB")),
           T.Resize((cfg.img_size, cfg.img_size))]
    if train and cfg.hflip > 0:
        ops.append(T.RandomHorizontalFlip(cfg.hflip))
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(ops)


def load_image(path: str | Path, cfg: TrainConfig) -> torch.Tensor:
    """One image file -> the (C, H, W) tensor the model was trained on."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return image_transform(cfg)(im)
    except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def _imagefolder(cfg: TrainConfig, split: str, train: bool) -> tuple[Dataset, list[str]]:
    from torchvision.datasets import ImageFolder

    root = Path(cfg.data_dir) / split
    if not root.is_dir():
        raise FileNotFoundError(f"no '{split}' folder for dataset 'imagefolder': {root} "
                                f"(expected {cfg.data_dir}/{split}/<class>/<image>)")
    try:
        ds = ImageFolder(str(root), transform=image_transform(cfg, train))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{root}: {e}") from e
    return ds, list(ds.classes)


def build_dataset(cfg: TrainConfig, split: str, train: bool | None = None) -> tuple[Dataset, list[str]]:
    """(dataset, class names) of ``split`` ("train" or "val"); ``train`` turns on augmentation."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    train = split == "train" if train is None else train
    if cfg.dataset == "digits":
        ds, classes = _digits(cfg, split)
    else:
        ds, classes = _imagefolder(cfg, split, train)
    subset = cfg.train_subset if split == "train" else cfg.val_subset
    if subset and subset < len(ds):
        keep = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:subset]
        ds = Subset(ds, keep.tolist())
    return ds, classes
