"""The papers' comparison networks, from MONAI, registered with ``create_model`` under U-Mamba's argument names.

- ``unet``: MONAI ``DynUNet`` configured like nnU-Net's plain U-Net: kernels 3, instance norm, LeakyReLU, the
  strides of U-Mamba's nnU-Net-like plan for ``input_size`` (:func:`mambaeye.models.umamba.plan_strides`),
  features min(32 * 2^i, 512 in 2D / 320 in 3D), optional deep supervision (one head per decoder stage but the
  lowest, as nnU-Net; MONAI returns them stacked on dim 1, all at full resolution, in training mode only).
- ``segresnet``: MONAI ``SegResNet`` (``features_per_stage`` -> ``init_filters``, ``n_stages`` -> the number of
  down blocks; total stride 2^(n_stages - 1)).
- ``unetr``: MONAI ``UNETR`` (patch 16, a position embedding for exactly ``input_size``; ``features_per_stage``
  -> ``feature_size``).
- ``swinunetr``: MONAI ``SwinUNETR`` (total stride 32; ``features_per_stage`` -> ``feature_size``, a multiple of
  12; the papers use 48).

Shared arguments: ``spatial_dims, in_channels (in_chans), num_classes, input_size``; other keyword arguments go
to the MONAI class as they are. Inputs whose size the network cannot take are refused with a ValueError before
MONAI sees them. MONAI is imported only when one of these is built (``pip install mambaeye[seg]``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from ._builder import build_model
from ._registry import register_model
from .umamba import _MAX_FEATURES, _per_stage, plan_strides

__all__ = ["build_unet", "build_segresnet", "build_unetr", "build_swinunetr"]

_DEFAULT_INPUT_SIZE = {2: (512, 512), 3: (128, 128, 128)}


def _monai_nets():
    try:
        from monai.networks import nets
    except ImportError as err:
        raise ImportError("the MONAI baselines (unet, segresnet, unetr, swinunetr) need MONAI: "
                          "pip install mambaeye[seg]") from err
    return nets


def _check_common(spatial_dims: int, in_channels: int, num_classes: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    for name, v in (("in_channels", in_channels), ("num_classes", num_classes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def _size(input_size: int | Sequence[int] | None, spatial_dims: int) -> tuple[int, ...] | None:
    if input_size is None:
        return None
    size = (int(input_size),) * spatial_dims if isinstance(input_size, int) else tuple(int(i) for i in input_size)
    if len(size) != spatial_dims or min(size) < 1:
        raise ValueError(f"input_size must be {spatial_dims} positive ints, got {input_size!r}")
    return size


def _check_input(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook: the input's channels and spatial size must fit the network (clear error otherwise)."""
    x = args[0]
    dims = module.spatial_dims
    if x.dim() != 2 + dims or x.shape[1] != module.in_channels:
        grid = "H, W" if dims == 2 else "D, H, W"
        raise ValueError(f"expected input of shape (B, {module.in_channels}, {grid}), got {tuple(x.shape)}")
    spatial = tuple(x.shape[2:])
    if module.fixed_input_size is not None and spatial != module.fixed_input_size:
        raise ValueError(f"{type(module).__name__} was built for input_size {module.fixed_input_size} "
                         f"(its position embedding); got input {spatial}")
    if any(n % t for n, t in zip(spatial, module.total_stride, strict=True)):
        raise ValueError(f"input size {spatial} is not divisible by the network's total stride "
                         f"{module.total_stride}; pad or crop it to a multiple")


def _finish(model: nn.Module, spatial_dims: int, in_channels: int, num_classes: int,
            total_stride: Sequence[int], input_size: tuple[int, ...] | None,
            fixed_input_size: tuple[int, ...] | None = None) -> nn.Module:
    model.spatial_dims = spatial_dims
    model.in_channels = model.in_chans = in_channels
    model.num_classes = num_classes
    model.total_stride = tuple(total_stride)
    model.input_size = input_size
    model.fixed_input_size = fixed_input_size
    model.register_forward_pre_hook(_check_input)
    return model


def build_unet(spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2, n_stages: int | None = None,
               features_per_stage: int | Sequence[int] | None = None,
               kernel_sizes: int | Sequence[int | Sequence[int]] = 3,
               strides: int | Sequence[int | Sequence[int]] | None = None, deep_supervision: bool = True,
               input_size: int | Sequence[int] | None = None, **kwargs: Any) -> nn.Module:
    """MONAI DynUNet, nnU-Net-like (module docstring). ``strides`` / ``n_stages`` default to the plan for
    ``input_size`` (512x512 / 128^3 when nothing is given)."""
    _check_common(spatial_dims, in_channels, num_classes)
    size = _size(input_size, spatial_dims)
    if strides is None:
        planned = plan_strides(size or _DEFAULT_INPUT_SIZE[spatial_dims])
        if n_stages is not None and n_stages != len(planned):
            strides = 2
        else:
            strides = planned
    if n_stages is None:
        if not isinstance(strides, int):
            n_stages = len(strides)
        elif features_per_stage is not None and not isinstance(features_per_stage, int):
            n_stages = len(features_per_stage)
        else:
            n_stages = len(plan_strides(size or _DEFAULT_INPUT_SIZE[spatial_dims]))
    if isinstance(n_stages, bool) or not isinstance(n_stages, int) or n_stages < 3:
        raise ValueError(f"n_stages must be an int >= 3 for DynUNet, got {n_stages!r}")
    if features_per_stage is None:
        features_per_stage = [min(32 * 2**i, _MAX_FEATURES[spatial_dims]) for i in range(n_stages)]
    elif isinstance(features_per_stage, int):
        features_per_stage = [min(features_per_stage * 2**i, _MAX_FEATURES[spatial_dims]) for i in range(n_stages)]
    features = list(features_per_stage)
    if len(features) != n_stages:
        raise ValueError(f"features_per_stage needs one entry per stage (n_stages={n_stages}), got {len(features)}")
    kernels = _per_stage(kernel_sizes, n_stages, spatial_dims, "kernel_sizes")
    stride_list = _per_stage(strides, n_stages, spatial_dims, "strides", first_one=True)
    nets = _monai_nets()
    model = nets.DynUNet(spatial_dims, in_channels, num_classes, kernel_size=kernels, strides=stride_list,
                         upsample_kernel_size=stride_list[1:], filters=features, deep_supervision=deep_supervision,
                         deep_supr_num=n_stages - 2 if deep_supervision else 1, **kwargs)
    model.n_stages = n_stages
    model.features_per_stage = features
    model.strides = stride_list
    total = [math.prod(s[a] for s in stride_list) for a in range(spatial_dims)]
    return _finish(model, spatial_dims, in_channels, num_classes, total, size)


def build_segresnet(spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2, n_stages: int | None = None,
                    features_per_stage: int | Sequence[int] | None = None, deep_supervision: bool = False,
                    input_size: int | Sequence[int] | None = None, **kwargs: Any) -> nn.Module:
    """MONAI SegResNet: ``features_per_stage`` (an int, or the first entry) -> init_filters (default 32: the
    papers' 6M SegResNet; MONAI's own default is 8),
    ``n_stages`` -> blocks_down (1, 2, 2, 4) cut or extended with 4s. No deep supervision."""
    _check_common(spatial_dims, in_channels, num_classes)
    if deep_supervision:
        raise ValueError("segresnet has no deep supervision; pass deep_supervision=False")
    size = _size(input_size, spatial_dims)
    init = 32 if features_per_stage is None else (
        features_per_stage if isinstance(features_per_stage, int) else list(features_per_stage)[0])
    if "blocks_down" not in kwargs:
        n = 4 if n_stages is None else n_stages
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n_stages must be a positive int, got {n!r}")
        kwargs["blocks_down"] = tuple([1, 2, 2, 4][:n] + [4] * max(0, n - 4))
        kwargs.setdefault("blocks_up", tuple([1] * (n - 1)))
    nets = _monai_nets()
    model = nets.SegResNet(spatial_dims=spatial_dims, init_filters=init, in_channels=in_channels,
                           out_channels=num_classes, **kwargs)
    stride = 2 ** (len(kwargs["blocks_down"]) - 1)
    return _finish(model, spatial_dims, in_channels, num_classes, (stride,) * spatial_dims, size)


def build_unetr(spatial_dims: int = 3, in_channels: int = 1, num_classes: int = 2,
                features_per_stage: int | None = None, deep_supervision: bool = False,
                input_size: int | Sequence[int] | None = None, **kwargs: Any) -> nn.Module:
    """MONAI UNETR (patch 16) for exactly ``input_size`` (default 96^3 in 3D, 224x224 in 2D);
    ``features_per_stage`` -> feature_size (default 16). No deep supervision."""
    _check_common(spatial_dims, in_channels, num_classes)
    if deep_supervision:
        raise ValueError("unetr has no deep supervision; pass deep_supervision=False")
    size = _size(input_size, spatial_dims) or ((96, 96, 96) if spatial_dims == 3 else (224, 224))
    if any(n % 16 for n in size):
        raise ValueError(f"UNETR's patch is 16: every axis of input_size must be a multiple of 16, got {size}")
    nets = _monai_nets()
    model = nets.UNETR(in_channels=in_channels, out_channels=num_classes, img_size=size,
                       feature_size=16 if features_per_stage is None else features_per_stage,
                       spatial_dims=spatial_dims, **kwargs)
    return _finish(model, spatial_dims, in_channels, num_classes, (16,) * spatial_dims, size, fixed_input_size=size)


def build_swinunetr(spatial_dims: int = 3, in_channels: int = 1, num_classes: int = 2,
                    features_per_stage: int | None = None, deep_supervision: bool = False,
                    input_size: int | Sequence[int] | None = None, **kwargs: Any) -> nn.Module:
    """MONAI SwinUNETR (total stride 32); ``features_per_stage`` -> feature_size (default 48, as the papers;
    a multiple of 12). No deep supervision."""
    _check_common(spatial_dims, in_channels, num_classes)
    if deep_supervision:
        raise ValueError("swinunetr has no deep supervision; pass deep_supervision=False")
    size = _size(input_size, spatial_dims)
    if size is not None and any(n % 32 for n in size):
        raise ValueError(f"SwinUNETR's total stride is 32: every axis of input_size must be a multiple of 32, "
                         f"got {size}")
    feature_size = 48 if features_per_stage is None else features_per_stage
    if isinstance(feature_size, bool) or not isinstance(feature_size, int) or feature_size % 12:
        raise ValueError(f"swinunetr: features_per_stage (feature_size) must be a multiple of 12, got {feature_size!r}")
    nets = _monai_nets()
    model = nets.SwinUNETR(in_channels=in_channels, out_channels=num_classes, feature_size=feature_size,
                           spatial_dims=spatial_dims, **kwargs)
    return _finish(model, spatial_dims, in_channels, num_classes, (32,) * spatial_dims, size)


def _filter(state_dict, model):
    return state_dict


def _create(variant: str, builder, pretrained: bool = False, num_classes: int = 2, in_chans: int = 1,
            features_only: bool = False, **kwargs) -> nn.Module:
    if pretrained:
        raise ValueError(f"{variant} has no released weights here; pass checkpoint_path=... (a MONAI state dict)")
    if features_only:
        raise ValueError(f"{variant} is a segmentation network: features_only is not supported")
    kwargs.setdefault("in_channels", in_chans)
    return build_model(builder, variant, False, {}, _filter, num_classes=num_classes, **kwargs)


@register_model
def unet(pretrained: bool = False, **kwargs) -> nn.Module:
    """nnU-Net-like U-Net (MONAI DynUNet): kernels 3, U-Mamba's stride plan, deep supervision by default."""
    return _create("unet", build_unet, pretrained, **kwargs)


@register_model
def segresnet(pretrained: bool = False, **kwargs) -> nn.Module:
    """MONAI SegResNet (init_filters 32 as in the papers' tables, blocks_down 1, 2, 2, 4)."""
    return _create("segresnet", build_segresnet, pretrained, **kwargs)


@register_model
def unetr(pretrained: bool = False, **kwargs) -> nn.Module:
    """MONAI UNETR (ViT-B/16 encoder) for a fixed ``input_size``."""
    return _create("unetr", build_unetr, pretrained, **kwargs)


@register_model
def swinunetr(pretrained: bool = False, **kwargs) -> nn.Module:
    """MONAI SwinUNETR (feature_size 48)."""
    return _create("swinunetr", build_swinunetr, pretrained, **kwargs)
