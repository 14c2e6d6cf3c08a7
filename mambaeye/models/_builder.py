"""Building a registered variant: model arguments, pretrained cfg, checkpoint loading, features_only.

Every family's variant function ends in :func:`build_model`. Checkpoints go through the family's
``checkpoint_filter_fn(state_dict, model)``, which maps an official state dict to ours (via
:mod:`mambaeye.convert`) and adapts it to the model at hand (position embedding size, classifier size,
input channels), then are loaded strictly: a key or shape that still does not fit raises an error naming
the file and the first bad key.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..convert._io import CheckpointError, load_checkpoint_file
from ._features import FeatureGetterNet
from ._registry import get_default_cfg

__all__ = ["build_model", "load_pretrained", "checkpoint_dir", "find_pretrained_file", "CHECKPOINT_DIR_ENV"]

_logger = logging.getLogger(__name__)

CHECKPOINT_DIR_ENV = "MAMBAEYE_CHECKPOINT_DIR"
_TIMM_ONLY_KWARGS = ("pretrained_cfg", "cache_dir")

FilterFn = Callable[[dict[str, Tensor], nn.Module], dict[str, Tensor]]


def checkpoint_dir() -> Path:
    """Where ``pretrained=True`` looks for weights: ``$MAMBAEYE_CHECKPOINT_DIR``, else ~/.cache/mambaeye/checkpoints."""
    env = os.environ.get(CHECKPOINT_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mambaeye" / "checkpoints"


def find_pretrained_file(variant: str, release_file: str | None, origin: str | None) -> Path:
    """``<dir>/<variant>.safetensors`` (from ``mambaeye convert``) or ``<dir>/<release_file>`` (the official file).
    Neither there: a FileNotFoundError that says which file to download from where and where to put it."""
    folder = checkpoint_dir()
    candidates = [folder / f"{variant}.safetensors"]
    if release_file:
        candidates.append(folder / release_file)
    for path in candidates:
        if path.is_file():
            return path
    if not release_file:
        raise FileNotFoundError(f"{variant} has no released official weights; train it or pass checkpoint_path=...")
    raise FileNotFoundError(
        f"pretrained=True for {variant!r}, but no local weights were found (there is no download here). "
        f"Download the official file {release_file} from {origin} and put it at {folder / release_file} "
        f"(the folder is ${CHECKPOINT_DIR_ENV}, default ~/.cache/mambaeye/checkpoints), or pass "
        f"checkpoint_path=... . Optionally convert it first: mambaeye convert {release_file} "
        f"{folder / (variant + '.safetensors')}"
    )


def load_pretrained(model: nn.Module, checkpoint_path: str | Path, filter_fn: FilterFn, use_ema: bool = False,
                    name: str | None = None) -> None:
    """Load an official or converted checkpoint into ``model`` (strict, after ``filter_fn``)."""
    path = Path(checkpoint_path)
    state_dict = load_checkpoint_file(path, use_ema=use_ema)
    try:
        state_dict = filter_fn(state_dict, model)
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: {err}") from err
    _check_fits(state_dict, model, path, name)
    model.load_state_dict(state_dict, strict=True)
    _logger.info("loaded %s into %s", path, name or type(model).__name__)


def _check_fits(state_dict: Mapping[str, Tensor], model: nn.Module, path: Path, name: str | None) -> None:
    expected = model.state_dict()
    unexpected = [k for k in state_dict if k not in expected]
    missing = [k for k in expected if k not in state_dict]
    mismatched = [k for k in state_dict if k in expected and state_dict[k].shape != expected[k].shape]
    if not (unexpected or missing or mismatched):
        return
    bad = set(unexpected) | set(mismatched)
    first = next(k for k in state_dict if k in bad) if bad else missing[0]
    if first in mismatched:
        why = f"shape {tuple(state_dict[first].shape)} in the file, {tuple(expected[first].shape)} in the model"
    elif first in unexpected:
        why = "not a parameter of the model"
    else:
        why = "missing from the file"
    lines = [f"{path} does not fit {name or type(model).__name__}: first bad key {first!r} ({why})"]
    for label, keys in (("unexpected", unexpected), ("missing", missing), ("shape mismatch", mismatched)):
        if keys:
            lines.append(f"  {label} ({len(keys)}): {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}")
    raise CheckpointError("\n".join(lines))


def build_model(
    model_cls: Callable[..., nn.Module],
    variant: str,
    pretrained: bool,
    model_args: Mapping[str, Any],
    filter_fn: FilterFn,
    release: tuple[str, str] | None = None,
    checkpoint_path: str | Path | None = None,
    features_only: bool = False,
    out_indices: int | Sequence[int] | None = None,
    use_ema: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Instantiate ``model_cls(**model_args, **kwargs)``, attach its pretrained cfg, load weights, wrap for features.

    ``release``: (official file name, where to get it). ``kwargs`` override ``model_args``; timm's
    ``pretrained_cfg`` / ``cache_dir`` are accepted and ignored, ``pretrained_cfg_overlay`` is applied.
    """
    for key in _TIMM_ONLY_KWARGS:
        kwargs.pop(key, None)
    overlay = kwargs.pop("pretrained_cfg_overlay", None) or {}
    if pretrained and checkpoint_path is None:  # before building: a missing file should fail fast
        file, origin = release if release else (None, None)
        checkpoint_path = find_pretrained_file(variant, file, origin)
    model = model_cls(**{**model_args, **kwargs})

    cfg = {**get_default_cfg(variant), **overlay, "architecture": variant}
    img_size = getattr(model, "img_size", None)
    if img_size is not None:
        cfg["input_size"] = (getattr(model, "in_chans", 3), *img_size)
    cfg["num_classes"] = model.num_classes
    model.pretrained_cfg = cfg
    model.default_cfg = cfg

    if checkpoint_path is not None:
        load_pretrained(model, checkpoint_path, filter_fn, use_ema=use_ema, name=variant)
    if features_only:
        return FeatureGetterNet(model, out_indices)
    if out_indices is not None:
        raise ValueError("out_indices is only used with features_only=True")
    return model


def adapt_input_conv(in_chans: int, weight: Tensor) -> Tensor:
    """A first-conv weight (O, I, k, k) for ``in_chans`` inputs: summed over I for 1 channel, else tiled over
    the new channels and scaled by I / in_chans, so a constant image gives the same response."""
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_chans // weight.shape[1])
    return weight.repeat(1, reps, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)


def fit_classifier(state_dict: dict[str, Tensor], own: Mapping[str, Tensor], keys: Sequence[str], family: str) -> None:
    """In place: keep the checkpoint's classifier ``keys`` when they fit the model; otherwise use the model's
    freshly initialised ones (a different num_classes), or drop them (num_classes=0). Logged."""
    present = [k for k in keys if k in state_dict]
    if not present or all(k in own and own[k].shape == state_dict[k].shape for k in present):
        return
    old = state_dict[present[0]].shape[0]
    if keys[0] not in own:
        for k in present:
            del state_dict[k]
        _logger.info("%s: the checkpoint's %d-class classifier is dropped (the model has no head)", family, old)
        return
    for k in keys:
        if k in own:
            state_dict[k] = own[k]
    _logger.info("%s: classifier re-initialised: the checkpoint has %d classes, the model %d", family, old,
                 own[keys[0]].shape[0])
