"""Official checkpoints -> mambaeye.

- Pure ``dict -> dict`` converters with explicit key tables, one module per family: :mod:`.vim`
  (:func:`vim_from_official` / :func:`vim_to_official`) and :mod:`.vmamba` (:func:`vmamba_from_official` /
  :func:`vmamba_to_official`, v2 and v0, old and new names).
- :func:`detect_checkpoint`: family and version from the keys.
- :func:`convert_checkpoint`: official ``.pth`` -> ``.safetensors`` + ``.json`` config, after checking every
  key and shape against the target model; unused and missing keys are reported by name. nnU-Net U-Mamba
  checkpoints (``network_weights``) are routed to :func:`.nnunet.convert_nnunet_checkpoint`, which rebuilds the
  architecture from the results folder's plans.json / dataset.json.

Files are read with ``torch.load(weights_only=True)`` (see :mod:`._io`) or safetensors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ._io import (
    CheckpointError,
    atomic_write,
    checkpoint_state_dict,
    load_checkpoint_file,
    read_checkpoint_object,
    save_safetensors,
    unwrap_state_dict,
)
from ._table import KeyTable, UnmappedKeysError
from .nnunet import convert_nnunet_checkpoint, is_nnunet_checkpoint
from .vim import VIM_KEY_TABLE, describe_vim, is_vim_state_dict, vim_from_official, vim_to_official
from .vmamba import (
    VMAMBA_V0_KEY_TABLE,
    VMAMBA_V2_KEY_TABLE,
    describe_vmamba,
    is_vmamba_state_dict,
    linear2d_weights_2d,
    vmamba_from_official,
    vmamba_to_official,
    vmamba_version,
)

__all__ = [
    "CheckpointError",
    "UnmappedKeysError",
    "KeyTable",
    "ConversionReport",
    "load_checkpoint_file",
    "unwrap_state_dict",
    "detect_checkpoint",
    "convert_state_dict",
    "guess_model_name",
    "convert_checkpoint",
    "convert_nnunet_checkpoint",
    "vim_from_official",
    "vim_to_official",
    "vmamba_from_official",
    "vmamba_to_official",
    "describe_vim",
    "describe_vmamba",
]

_logger = logging.getLogger(__name__)


def detect_checkpoint(state_dict: Mapping[str, Tensor]) -> tuple[str, str | None]:
    """("vim", None), ("vmamba", "v2") or ("vmamba", "v0") from the keys; a ValueError otherwise."""
    if is_vim_state_dict(state_dict):
        return "vim", None
    if is_vmamba_state_dict(state_dict):
        return "vmamba", vmamba_version(state_dict)
    sample = ", ".join(list(state_dict)[:6])
    raise ValueError(f"not a Vim or VMamba checkpoint (no 'norm_f' / 'mixer.A_b_log' nor 'A_logs' / "
                     f"'x_proj_weight' keys); first keys: {sample}")


def _table(family: str, version: str | None) -> KeyTable:
    if family == "vim":
        return VIM_KEY_TABLE
    return {"v2": VMAMBA_V2_KEY_TABLE, "v0": VMAMBA_V0_KEY_TABLE}[version]


def convert_state_dict(state_dict: Mapping[str, Tensor], strict: bool = True) -> dict[str, Tensor]:
    """Any supported official state dict -> mambaeye layout (family and version detected from the keys)."""
    family, version = detect_checkpoint(state_dict)
    if family == "vim":
        return vim_from_official(state_dict, strict=strict)
    return vmamba_from_official(state_dict, version, strict=strict)


def guess_model_name(state_dict: Mapping[str, Tensor]) -> str | None:
    """The registered variant whose architecture matches a mambaeye-layout state dict, or None."""
    from ..models.vmamba import MODEL_CONFIGS

    if "norm_f.weight" in state_dict:
        d = describe_vim(state_dict)
        size = {192: "tiny", 384: "small", 768: "base"}.get(d["embed_dim"])
        if size is None or d["depth"] != 24 or d["patch_size"] != 16 or d["stride"] not in (8, 16):
            return None
        name = f"vim_{size}" + ("_s8" if d["stride"] == 8 else "")
        from ..models import is_model

        return name if is_model(name) else None
    d = describe_vmamba(state_dict)
    for name, cfg in MODEL_CONFIGS.items():
        dims0 = cfg["dims"] if isinstance(cfg["dims"], int) else cfg["dims"][0]
        version = "v2" if cfg["patchembed_version"] == "v2" else "v0"
        if (version, dims0, tuple(cfg["depths"]), cfg["d_state"], float(cfg["ssm_ratio"])) == (
                d["version"], d["dim"], d["depths"], d["d_state"], float(d["ssm_ratio"])):
            return name
    return None


@dataclass
class ConversionReport:
    """What :func:`convert_checkpoint` did."""

    source: str
    output: str
    config_path: str
    family: str
    version: str | None
    model_name: str
    num_tensors: int
    num_parameters: int
    num_classes: int
    img_size: int
    unused_keys: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"{self.source} -> {self.output}",
            f"  family {self.family}{' ' + self.version if self.version else ''}, model {self.model_name}, "
            f"{self.num_tensors} tensors, {self.num_parameters:,} parameters, {self.num_classes} classes, "
            f"input {self.img_size}",
            f"  config: {self.config_path}",
        ]
        if self.unused_keys:
            lines.append(f"  unused checkpoint keys ({len(self.unused_keys)}): {', '.join(self.unused_keys)}")
        if self.missing_keys:
            lines.append(f"  missing model keys ({len(self.missing_keys)}): {', '.join(self.missing_keys)}")
        return "\n".join(lines)


def convert_checkpoint(
    source: str | Path,
    output: str | Path,
    model_name: str | None = None,
    use_ema: bool = False,
    allow_unused: bool = False,
    **model_kwargs,
) -> ConversionReport:
    """Convert an official Vim / VMamba checkpoint to ``output`` (.safetensors) plus ``output`` with a
    ``.json`` suffix holding the model config.

    The family and version come from the keys (``model`` / ``model_ema`` with ``use_ema`` / bare state dict),
    the model name from the shapes unless given. Every converted tensor is checked against the model built
    from that name (on the meta device: no memory, no time); a missing key, a shape mismatch or (unless
    ``allow_unused``) a checkpoint key that maps to nothing raises :class:`CheckpointError` naming the file and
    the first bad key. The checkpoint's num_classes and input size are kept (and written to the config).
    ``model_kwargs`` (e.g. ``depth`` for a non-standard model) go to ``create_model`` and into the config.
    """
    from ..models import create_model, is_model

    source, output = Path(source), Path(output)
    if output.suffix != ".safetensors":
        raise ValueError(f"output must end in .safetensors, got {output}")
    obj = read_checkpoint_object(source)  # read once, whichever family it turns out to be
    if is_nnunet_checkpoint(obj):  # nnU-Net U-Mamba: architecture from plans.json / dataset.json beside it
        return convert_nnunet_checkpoint(source, output, obj, model_name=model_name, allow_unused=allow_unused,
                                         **model_kwargs)
    raw = checkpoint_state_dict(obj, source, use_ema=use_ema)
    try:
        family, version = detect_checkpoint(raw)
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}") from err
    converted, unused = _table(family, version).apply(raw, strict=False)
    if unused and not allow_unused:
        raise CheckpointError(f"{source}: first bad key {unused[0]!r}: it maps to no parameter ({len(unused)} "
                              f"such keys: {', '.join(unused[:8])}); pass allow_unused=True to drop them")
    if family == "vmamba":
        converted = linear2d_weights_2d(converted)

    guessed = guess_model_name(converted)
    model_name = model_name or guessed
    if model_name is None:
        raise CheckpointError(f"{source}: a {family} checkpoint that matches no registered model; pass model_name")
    if not is_model(model_name):
        raise ValueError(f"unknown model {model_name!r}")

    if family == "vim":
        d = describe_vim(converted)
        num_classes = d["num_classes"]
        with torch.device("meta"):
            stride = create_model(model_name, **model_kwargs).patch_embed.stride
        img_size = d["patch_size"] + (d["grid"] - 1) * stride  # the square input its position embedding fits
        kwargs = dict(img_size=img_size, **model_kwargs)
    else:
        d = describe_vmamba(converted)
        num_classes, img_size, kwargs = d["num_classes"], 224, dict(model_kwargs)
    with torch.device("meta"):
        model = create_model(model_name, num_classes=num_classes, in_chans=d["in_chans"], **kwargs)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in converted]
    for key, value in converted.items():
        if key not in expected:
            raise CheckpointError(f"{source}: first bad key {key!r}: {model_name} has no such parameter")
        if tuple(value.shape) != expected[key]:
            raise CheckpointError(f"{source}: first bad key {key!r}: shape {tuple(value.shape)} in the file, "
                                  f"{expected[key]} in {model_name}")
    if missing:
        raise CheckpointError(f"{source}: first bad key {missing[0]!r}: missing from the file "
                              f"({len(missing)} missing: {', '.join(missing[:8])})")

    config = dict(model=model_name, family=family, version=version, num_classes=num_classes,
                  in_chans=d["in_chans"], img_size=img_size, source=source.name, use_ema=use_ema,
                  model_kwargs=model_kwargs, unused_keys=unused)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(converted, output, metadata={"format": "pt", "mambaeye_config": json.dumps(config)})
    config_path = output.with_suffix(".json")
    atomic_write(config_path, lambda tmp: tmp.write_text(json.dumps(config, indent=2) + "\n"))
    report = ConversionReport(
        source=str(source), output=str(output), config_path=str(config_path), family=family, version=version,
        model_name=model_name, num_tensors=len(converted), num_parameters=sum(v.numel() for v in converted.values()),
        num_classes=num_classes, img_size=img_size, unused_keys=unused, missing_keys=missing,
    )
    _logger.info("%s", report.summary())
    return report

