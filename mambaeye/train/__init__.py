"""Classification pipelines: config (YAML + overrides), data (digits, ImageFolder), train / evaluate / predict."""

from __future__ import annotations

from .cli import add_train_parsers
from .config import ConfigError, TrainConfig, add_config_args, config_from_args, load_config, save_config
from .data import build_dataset
from .engine import build_model, evaluate, load_checkpoint, predict, save_checkpoint_atomic, train

__all__ = [
    "TrainConfig",
    "ConfigError",
    "load_config",
    "save_config",
    "add_config_args",
    "config_from_args",
    "add_train_parsers",
    "build_dataset",
    "build_model",
    "train",
    "evaluate",
    "predict",
    "load_checkpoint",
    "save_checkpoint_atomic",
]
