"""nnU-Net U-Mamba checkpoints (``checkpoint_final.pth`` / ``checkpoint_best.pth``) -> mambaeye.

An nnU-Net checkpoint is a dict with ``network_weights`` (plus trainer state: ``optimizer_state``,
``init_args``, ``trainer_name``, ...). The architecture comes from ``plans.json`` and ``dataset.json`` of the
same results folder (beside the checkpoint, or one level up next to ``fold_*``), through
:func:`mambaeye.models.umamba.umamba_kwargs_from_plans`; U-Mamba_Bot or _Enc from the keys
(``mamba_layer.*`` / ``encoder.mamba_layers.*``). The aliases nnU-Net's module tree repeats
(``decoder.encoder.*``, ``*.all_modules.{k}.*``) are checked to match a kept key and dropped; every other key
and every shape is checked against the rebuilt network.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ._io import CheckpointError, _torch_load, atomic_write, save_safetensors

__all__ = ["read_nnunet_checkpoint", "is_nnunet_checkpoint", "umamba_variant", "nnunet_state_dict",
           "convert_nnunet_checkpoint"]

_logger = logging.getLogger(__name__)


def is_nnunet_checkpoint(obj: Any) -> bool:
    return isinstance(obj, Mapping) and isinstance(obj.get("network_weights"), Mapping)


def read_nnunet_checkpoint(path: str | Path) -> dict | None:
    """The checkpoint object (read with ``weights_only=True``) when ``path`` is an nnU-Net checkpoint (it has
    ``network_weights``), else None (also for files that are not torch files)."""
    path = Path(path)
    if path.suffix == ".safetensors" or not path.is_file():
        return None
    try:
        obj = _torch_load(path)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError):
        return None
    return obj if is_nnunet_checkpoint(obj) else None


def umamba_variant(weights: Mapping[str, Tensor]) -> str:
    """"bot" or "enc" from the keys of a U-Mamba ``network_weights``; a ValueError for other networks."""
    if any(k.startswith("encoder.mamba_layers.") for k in weights):
        return "enc"
    if any(k.startswith("mamba_layer.") for k in weights):
        return "bot"
    raise ValueError("an nnU-Net checkpoint without Mamba layers ('mamba_layer.*' / 'encoder.mamba_layers.*'): "
                     "only U-Mamba_Bot / U-Mamba_Enc nnU-Net checkpoints are supported")


def _alias_target(key: str) -> str | None:
    """The primary key an nnU-Net alias repeats, or None for a primary key."""
    if key.startswith("decoder.encoder."):
        return key[len("decoder."):]
    if ".all_modules." in key:
        head, _, tail = key.partition(".all_modules.")
        index, _, param = tail.partition(".")
        # ConvDropoutNormReLU.all_modules: 0 conv, then (dropout), norm, nonlin
        name = "conv" if index == "0" else "norm"
        return f"{head}.{name}.{param}"
    return None


def nnunet_state_dict(weights: Mapping[str, Tensor], source: str = "checkpoint") -> dict[str, Tensor]:
    """``network_weights`` -> the mambaeye U-Mamba state dict: aliases checked against their primary tensor
    (a missing or different one raises :class:`CheckpointError`) and dropped."""
    out = {k: v for k, v in weights.items() if _alias_target(k) is None}
    for key, value in weights.items():
        target = _alias_target(key)
        if target is None:
            continue
        while _alias_target(target) is not None:  # decoder.encoder.*.all_modules.*
            target = _alias_target(target)
        if target not in out:
            raise CheckpointError(f"{source}: alias {key!r} repeats {target!r}, which is not in the file")
        if out[target].shape != value.shape or not torch.equal(out[target], value):
            raise CheckpointError(f"{source}: alias {key!r} differs from {target!r}")
    return out


def convert_nnunet_checkpoint(source: str | Path, output: str | Path, obj: Mapping | None = None,
                              model_name: str | None = None, configuration: str | None = None,
                              allow_unused: bool = False, **model_kwargs):
    """Convert an nnU-Net U-Mamba checkpoint to ``output`` (.safetensors) plus a ``.json`` config whose
    ``model`` / ``model_kwargs`` rebuild the network: ``create_model(cfg["model"], checkpoint_path=output,
    **cfg["model_kwargs"])``. Returns a :class:`mambaeye.convert.ConversionReport`."""
    from ..models import create_model
    from ..models.umamba import find_nnunet_plans, umamba_kwargs_from_plans
    from . import ConversionReport

    source, output = Path(source), Path(output)
    if output.suffix != ".safetensors":
        raise ValueError(f"output must end in .safetensors, got {output}")
    obj = obj if obj is not None else read_nnunet_checkpoint(source)
    if obj is None:
        raise CheckpointError(f"{source}: not an nnU-Net checkpoint (no 'network_weights')")
    weights = dict(obj["network_weights"])
    try:
        variant = umamba_variant(weights)
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}") from err
    found = find_nnunet_plans(source, configuration)
    if found is None:
        raise CheckpointError(f"{source}: an nnU-Net checkpoint needs plans.json and dataset.json from its results "
                              f"folder beside it (or one level up); neither place has both")
    plans_path, dataset_path, configuration = found
    arch = umamba_kwargs_from_plans(plans_path, dataset_path, configuration, variant)
    arch.pop("mamba")
    expected_name = f"umamba_{variant}"
    model_name = model_name or expected_name
    if model_name != expected_name:
        raise CheckpointError(f"{source}: a U-Mamba_{variant.capitalize()} checkpoint, not {model_name!r}")
    in_chans, num_classes = arch.pop("in_channels"), arch.pop("num_classes")
    kwargs = {**arch, **model_kwargs}

    converted = nnunet_state_dict(weights, str(source))
    with torch.device("meta"):
        model = create_model(model_name, in_chans=in_chans, num_classes=num_classes, **kwargs)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    unused = [k for k in converted if k not in expected]
    if unused and not allow_unused:
        raise CheckpointError(f"{source}: first bad key {unused[0]!r}: {model_name} has no such parameter "
                              f"({len(unused)} such keys: {', '.join(unused[:8])}); pass allow_unused=True to drop "
                              f"them")
    for key in unused:
        del converted[key]
    for key, value in converted.items():
        if tuple(value.shape) != expected[key]:
            raise CheckpointError(f"{source}: first bad key {key!r}: shape {tuple(value.shape)} in the file, "
                                  f"{expected[key]} in {model_name} built from {plans_path} ({configuration})")
    missing = [k for k in expected if k not in converted]
    if missing:
        raise CheckpointError(f"{source}: first bad key {missing[0]!r}: missing from the file "
                              f"({len(missing)} missing: {', '.join(missing[:8])})")

    config = dict(model=model_name, family="umamba", version=variant, num_classes=num_classes, in_chans=in_chans,
                  img_size=arch["input_size"], source=source.name, use_ema=False,
                  model_kwargs=dict(in_chans=in_chans, num_classes=num_classes, **kwargs), unused_keys=unused,
                  nnunet=dict(configuration=configuration, trainer_name=obj.get("trainer_name"),
                              plans=str(plans_path), dataset=str(dataset_path)))
    output.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(converted, output, metadata={"format": "pt", "mambaeye_config": json.dumps(config)})
    config_path = output.with_suffix(".json")
    atomic_write(config_path, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n"))
    report = ConversionReport(
        source=str(source), output=str(output), config_path=str(config_path), family="umamba", version=variant,
        model_name=model_name, num_tensors=len(converted), num_parameters=sum(v.numel() for v in converted.values()),
        num_classes=num_classes, img_size=arch["input_size"], unused_keys=unused, missing_keys=missing,
    )
    _logger.info("%s", report.summary())
    return report
