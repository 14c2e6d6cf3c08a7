"""The segmentation training config: :class:`SegConfig`, with the YAML load and ``--key value`` overrides of
:mod:`mambaeye.train.config` (same coercion rules, same :class:`ConfigError` naming the key and the file).

A YAML file is a segmentation config when it says ``task: segmentation``; :func:`config_task` reads that key."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from mambaeye.train.config import ConfigError, check_fields, config_from_dict, read_config_file

__all__ = ["SegConfig", "load_seg_config", "config_task", "TASK"]

TASK = "segmentation"


@dataclass
class SegConfig:
    task: str = TASK
    # model: any registered segmentation network; in_channels / num_classes / spatial_dims come from the data
    model: str = "umamba_bot"
    model_kwargs: dict = field(default_factory=dict)  # e.g. {features_per_stage: [16, 32, 64, 128]}
    spatial_dims: int = 2
    # data: exactly one of `dataset` (built-in, prepared into data_root when missing) and `data_dir`
    dataset: str = ""  # mni152_brain | mni152_brain_2d | dsb2018_nuclei
    dataset_options: dict = field(default_factory=dict)  # prepare_builtin options, e.g. {num_slices: 24}
    data_root: str = "data"
    data_dir: str = ""  # nnU-Net raw folder, MSD (Decathlon) folder, or a 2D folder with images/ + masks/
    # preprocessing
    target_spacing: list = field(default_factory=list)  # mm per axis, array order; empty: median of training cases
    normalization: str = "zscore"  # zscore (per case and channel) | ct (dataset foreground percentiles, nnU-Net)
    crop_to_nonzero: bool = True
    # sampling and augmentation
    patch_size: list = field(default_factory=lambda: [128, 128])
    batch_size: int = 8
    foreground_oversample: float = 0.33
    augmentation: bool = True
    # optimisation
    epochs: int = 10
    iterations_per_epoch: int = 50
    optimizer: str = "sgd"  # sgd: nesterov, momentum 0.99, poly decay (nnU-Net) | adamw: cosine decay
    lr: float = 1e-2
    weight_decay: float = 3e-5
    momentum: float = 0.99
    clip_grad: float = 12.0  # 0: off
    deep_supervision: bool = True
    # validation split: `val_cases` (case ids) if given, else fold `fold` of `num_folds` over the sorted ids
    val_cases: list = field(default_factory=list)
    num_folds: int = 5
    fold: int = 0
    val_every: int = 1  # epochs between sliding-window validations (the last epoch always validates)
    # inference and evaluation
    sw_overlap: float = 0.5
    sw_batch_size: int = 4
    mirror: bool = True  # test-time mirroring: average softmax over the image and its flips along each axis
    val_mirror: bool = False  # mirroring during per-epoch validation too
    nsd_tolerance: float = 1.0  # mm
    eval_checkpoint: str = "best"  # best | last: the weights evaluated at the end of training
    max_overlays: int = 8
    # run
    amp: str = "none"  # none | bf16 | fp16 (CUDA only; fp32 on CPU)
    device: str = "auto"
    seed: int = 0
    deterministic: bool = True
    output_dir: str = "runs/segmentation"
    resume: str = ""  # "" | "auto" (output_dir/last.pt) | a checkpoint or run folder
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        choices = {"task": (TASK,), "normalization": ("zscore", "ct", "none"), "optimizer": ("sgd", "adamw"),
                   "amp": ("none", "bf16", "fp16"), "eval_checkpoint": ("best", "last"), "spatial_dims": (2, 3)}
        check_fields(self, choices, at_least_one=("epochs", "iterations_per_epoch", "batch_size", "sw_batch_size",
                                                  "num_folds", "val_every"))
        if bool(self.dataset) == bool(self.data_dir):
            raise ConfigError("give exactly one of config keys 'dataset' (a built-in name) and 'data_dir' "
                              f"(got dataset={self.dataset!r}, data_dir={self.data_dir!r})")
        if len(self.patch_size) != self.spatial_dims or any(
                not isinstance(p, int) or isinstance(p, bool) or p < 1 for p in self.patch_size):
            raise ConfigError(f"config key 'patch_size' needs {self.spatial_dims} positive ints "
                              f"(spatial_dims={self.spatial_dims}), got {self.patch_size}")
        if self.target_spacing and (len(self.target_spacing) != self.spatial_dims or any(
                isinstance(s, bool) or not isinstance(s, (int, float)) or s <= 0 for s in self.target_spacing)):
            raise ConfigError(f"config key 'target_spacing' needs {self.spatial_dims} positive numbers or [], "
                              f"got {self.target_spacing}")
        if not 0.0 <= self.foreground_oversample <= 1.0:
            raise ConfigError(f"config key 'foreground_oversample' must be in [0, 1], got {self.foreground_oversample}")
        if not 0.0 <= self.sw_overlap < 1.0:
            raise ConfigError(f"config key 'sw_overlap' must be in [0, 1), got {self.sw_overlap}")
        if not 0 <= self.fold < self.num_folds:
            raise ConfigError(f"config key 'fold' must be in [0, num_folds={self.num_folds}), got {self.fold}")
        if self.nsd_tolerance < 0:
            raise ConfigError(f"config key 'nsd_tolerance' must be >= 0 mm, got {self.nsd_tolerance}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> SegConfig:
        return config_from_dict(cls, data, source)


def config_task(path: str | Path | None) -> str:
    """The ``task`` a YAML config declares: "segmentation", or "classification" when it has no task key."""
    if not path:
        return "classification"
    return str(read_config_file(path).get("task") or "classification")


def load_seg_config(path: str | Path | None = None, overrides: dict | None = None) -> SegConfig:
    """A :class:`SegConfig` from a YAML file with ``overrides`` (key -> value) on top."""
    data = read_config_file(path) if path else {}
    data.update(overrides or {})
    return SegConfig.from_dict(data, source=str(path) if path else "overrides")

