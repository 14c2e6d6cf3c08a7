"""2D / 3D medical image segmentation: nnU-Net-style preprocessing, patch training with Dice + CE and deep
supervision, sliding-window inference with mirroring, DSC / NSD reports; for U-Mamba, Swin-UMamba and the MONAI
baselines.

    config.py      SegConfig (YAML + --key value overrides)
    data.py        nnU-Net, MSD and image/mask folder layouts -> cases; reading with checks
    preprocess.py  crop to non-zero, normalization, resampling, and back to the original grid
    dataset.py     in-memory cases, patch sampler with foreground oversampling, augmentation
    losses.py      Dice + CE with deep supervision
    inference.py   sliding window (Gaussian), mirroring
    report.py      report.md, metrics.json, overlays
    engine.py      train / evaluate / predict
"""

from __future__ import annotations

from .config import SegConfig, config_task, load_seg_config
from .engine import build_model, checkpoint_task, evaluate, load_seg_checkpoint, predict, train

__all__ = ["SegConfig", "load_seg_config", "config_task", "train", "evaluate", "predict",
           "build_model", "load_seg_checkpoint", "checkpoint_task"]
