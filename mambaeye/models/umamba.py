"""U-Mamba (bowang-lab/U-Mamba ``nnunetv2/nets/UMamba{Bot,Enc}_{2d,3d}.py``): U-Mamba_Bot and U-Mamba_Enc.

nnU-Net v2's residual-encoder U-Net with a Mamba layer (LayerNorm + Mamba over the flattened tokens)::

    x (B, Cin, *S) -> stem -> stage 0 -> ... -> stage n-1 (bottleneck)      encoder, skips = stage outputs
                                                       |  Bot: MambaLayer here only
                      Enc: a MambaLayer after every other stage (2D) / every stage (3D)
    decoder, from the bottleneck up: nearest upsample + 1x1 conv -> concat skip -> residual blocks -> 1x1 head

- The official 2D and 3D files differ, and both are followed (``None`` defaults below pick them by
  ``spatial_dims``): U-Mamba_Enc has a MambaLayer after every other stage (always including the last) in 2D,
  after every stage in 3D (``enc_mamba_stages``); the last decoder stage concatenates the stage-0 skip in 3D
  but not in 2D (``concat_first_skip``).
- stem: a residual block (conv-IN-LeakyReLU, conv-IN, 1x1 shortcut conv, add, LeakyReLU), then
  ``n_conv_per_stage[0] - 1`` BasicBlockD; stage s: the same residual block with stride ``strides[s]``, then
  ``n_conv_per_stage[s] - 1`` BasicBlockD. As in the official code, the deeper half of the encoder
  (stages ``ceil(n/2)..``) and the decoder stages ``ceil((n-1)/2 + 0.5)..`` (counted from the bottleneck) get
  one block whatever ``n_conv_per_stage`` says.
- MambaLayer: Mamba(d_state 16, d_conv 4, expand 2), run in float32 with autocast off (the official code does
  this because fp16/bf16 scans gave NaNs). U-Mamba_Enc scans over the channels instead ("channel-token"
  mode, d_model = number of voxels) at stages whose feature map, for ``input_size``, has no more voxels than
  channels; those stages therefore only take inputs of that size.
- Deep supervision: a 1x1 head after every decoder stage; the outputs come highest resolution first.

Parameter names are the official ones (``encoder.stem.{i}``, ``encoder.stages.{s}.{j}``, ``mamba_layer`` /
``encoder.mamba_layers.{s}``, ``decoder.{stages, upsample_layers, seg_layers}``), with BasicBlockD's
``conv1.{conv,norm}`` / ``conv2.{conv,norm}``; an nnU-Net checkpoint loads after dropping its aliases
(``decoder.encoder.*``, ``*.all_modules.*``), see :func:`checkpoint_filter_fn`. Counts equal the official
networks' (ARCHITECTURES.md).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import Mamba
from ._builder import build_model
from ._registry import register_model

__all__ = ["UMamba", "MambaLayer", "ResBlock", "BasicBlockD", "plan_strides", "checkpoint_filter_fn",
           "umamba_from_plans", "umamba_kwargs_from_plans", "find_nnunet_plans", "num_segmentation_heads"]

_logger = logging.getLogger(__name__)

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_MAX_FEATURES = {2: 512, 3: 320}  # nnU-Net's caps
# when nothing sizes the network: the patch sizes of the official parameter-count settings (8 / 6 stages)
_DEFAULT_INPUT_SIZE = {2: (512, 512), 3: (128, 128, 128)}


def _norm(spatial_dims: int, channels: int) -> nn.Module:
    return _NORM[spatial_dims](channels, eps=1e-5, affine=True)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.01, inplace=True)


class MambaLayer(nn.Module):
    """(B, C, *S) -> LayerNorm + Mamba over the L = prod(S) tokens of width C -> (B, C, *S).

    ``channel_token``: the C channels are the tokens, of width L (then ``dim`` = L). Runs in the dtype of its
    parameters with autocast off: float32 under AMP, as the official layer does.
    """

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: float = 2,
                 channel_token: bool = False, backend: str = "auto") -> None:
        super().__init__()
        self.dim = dim
        self.channel_token = channel_token
        self.norm = nn.LayerNorm(dim)
        self.mamba = Mamba(dim, d_state=d_state, d_conv=d_conv, expand=expand, backend=backend)

    def forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        width = math.prod(spatial) if self.channel_token else c
        if width != self.dim:
            what = "voxels (channel-token mode)" if self.channel_token else "channels"
            raise ValueError(f"MambaLayer expects {self.dim} {what}, got input of shape {tuple(x.shape)}")
        # meta tensors (shape / FLOP profiling) have no autocast state to switch off
        off = nullcontext() if x.device.type == "meta" else torch.autocast(device_type=x.device.type, enabled=False)
        with off:
            x = x.to(self.norm.weight.dtype)
            if self.channel_token:
                y = self.mamba(self.norm(x.reshape(b, c, -1)))  # (B, C, L): C tokens of width L
            else:
                y = self.mamba(self.norm(x.reshape(b, c, -1).transpose(1, 2))).transpose(1, 2)  # (B, L, C)
        return y.reshape(b, c, *spatial)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, channel_token={self.channel_token}"


class ResBlock(nn.Module):
    """U-Mamba's BasicResBlock: act2(norm2(conv2(act1(norm1(conv1(x))))) + conv3(x)), conv3 a strided 1x1."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: Sequence[int],
                 stride: Sequence[int]) -> None:
        super().__init__()
        conv = _CONV[spatial_dims]
        padding = [k // 2 for k in kernel_size]
        self.conv1 = conv(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.norm1 = _norm(spatial_dims, out_channels)
        self.act1 = _act()
        self.conv2 = conv(out_channels, out_channels, kernel_size, padding=padding)
        self.norm2 = _norm(spatial_dims, out_channels)
        self.act2 = _act()
        self.conv3 = conv(in_channels, out_channels, 1, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        return self.act2(y + self.conv3(x))


class ConvNormAct(nn.Module):
    """nnU-Net's ConvDropoutNormReLU without dropout: ``conv``, ``norm``, optional ``nonlin``."""

    def __init__(self, spatial_dims: int, channels: int, kernel_size: Sequence[int], bias: bool, act: bool) -> None:
        super().__init__()
        self.conv = _CONV[spatial_dims](channels, channels, kernel_size, padding=[k // 2 for k in kernel_size],
                                        bias=bias)
        self.norm = _norm(spatial_dims, channels)
        self.nonlin = _act() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.nonlin(self.norm(self.conv(x)))


class BasicBlockD(nn.Module):
    """dynamic_network_architectures' BasicBlockD at stride 1 and constant width (as U-Mamba uses it):
    nonlin2(conv2(conv1(x)) + x)."""

    def __init__(self, spatial_dims: int, channels: int, kernel_size: Sequence[int], bias: bool = True) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(spatial_dims, channels, kernel_size, bias, act=True)
        self.conv2 = ConvNormAct(spatial_dims, channels, kernel_size, bias, act=False)
        self.nonlin2 = _act()

    def forward(self, x: Tensor) -> Tensor:
        return self.nonlin2(self.conv2(self.conv1(x)) + x)


def _stage(spatial_dims: int, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int], blocks: int,
           bias: bool) -> nn.Sequential:
    return nn.Sequential(ResBlock(spatial_dims, cin, cout, kernel, stride),
                         *[BasicBlockD(spatial_dims, cout, kernel, bias) for _ in range(blocks - 1)])


class UpsampleLayer(nn.Module):
    """Nearest-neighbour upsampling by ``scale`` then a 1x1 conv (with bias)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, scale: Sequence[int]) -> None:
        super().__init__()
        self.conv = _CONV[spatial_dims](in_channels, out_channels, kernel_size=1)
        self.scale = tuple(scale)

    def forward(self, x: Tensor) -> Tensor:
        size = [n * s for n, s in zip(x.shape[2:], self.scale, strict=True)]
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class ResidualEncoder(nn.Module):
    """Stem and stages; ``mamba_layers`` (U-Mamba_Enc) after the stages, Identity where there is none.
    Returns the stage outputs (skips), the bottleneck last."""

    def __init__(self, spatial_dims: int, in_channels: int, features: list[int], kernels: list[tuple[int, ...]],
                 strides: list[tuple[int, ...]], blocks: list[int], bias: bool,
                 mamba_layers: list[nn.Module] | None) -> None:
        super().__init__()
        self.stem = _stage(spatial_dims, in_channels, features[0], kernels[0], (1,) * spatial_dims, blocks[0], bias)
        cins = [features[0], *features[:-1]]
        self.stages = nn.Sequential(*[_stage(spatial_dims, cins[s], features[s], kernels[s], strides[s], blocks[s],
                                             bias) for s in range(len(features))])
        self.mamba_layers = nn.ModuleList(mamba_layers) if mamba_layers is not None else None

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        skips = []
        for s, stage in enumerate(self.stages):
            x = stage(x)
            if self.mamba_layers is not None:
                x = self.mamba_layers[s](x)
            skips.append(x)
        return skips


class UNetResDecoder(nn.Module):
    """From the bottleneck up: upsample_layers[s] -> concat the skip (the last stage only with
    ``concat_first_skip``) -> stages[s] ->
    seg_layers[s]. Returns the highest-resolution logits, or all of them (highest first) with deep_supervision."""

    def __init__(self, spatial_dims: int, num_classes: int, features: list[int], kernels: list[tuple[int, ...]],
                 strides: list[tuple[int, ...]], blocks: list[int], bias: bool, deep_supervision: bool,
                 concat_first_skip: bool) -> None:
        super().__init__()
        self.deep_supervision = deep_supervision
        self.concat_first_skip = concat_first_skip
        n = len(features)
        stages, ups, heads = [], [], []
        for s in range(1, n):
            below, skip = features[-s], features[-(s + 1)]
            ups.append(UpsampleLayer(spatial_dims, below, skip, strides[-s]))
            cin = 2 * skip if s < n - 1 or concat_first_skip else skip
            stages.append(_stage(spatial_dims, cin, skip, kernels[-(s + 1)], (1,) * spatial_dims, blocks[s - 1], bias))
            heads.append(_CONV[spatial_dims](skip, num_classes, 1))
        self.stages = nn.ModuleList(stages)
        self.upsample_layers = nn.ModuleList(ups)
        self.seg_layers = nn.ModuleList(heads)

    def forward(self, skips: list[Tensor]) -> Tensor | list[Tensor]:
        x = skips[-1]
        outs = []
        last = len(self.stages) - 1
        for s, stage in enumerate(self.stages):
            x = self.upsample_layers[s](x)
            if s < last or self.concat_first_skip:
                x = torch.cat((x, skips[-(s + 2)]), 1)
            x = stage(x)
            if self.deep_supervision or s == last:
                outs.append(self.seg_layers[s](x))
        return outs[::-1] if self.deep_supervision else outs[0]


def plan_strides(input_size: Sequence[int], min_feature_map_size: int = 4) -> list[tuple[int, ...]]:
    """nnU-Net-like pooling plan for isotropic spacing: each axis halved while it stays >= min_feature_map_size
    (floor(log2(size / min))) times; stage 0 has stride 1. Returns one stride tuple per stage."""
    pools = [max(0, int(math.floor(math.log2(n / min_feature_map_size)))) for n in input_size]
    return [(1,) * len(input_size)] + [tuple(2 if k < p else 1 for p in pools) for k in range(max(pools))]


def _per_stage(value, n: int, dims: int, name: str, first_one: bool = False) -> list[tuple[int, ...]]:
    """int -> the same for every stage (stride: 1 for the first); a list of ints or of per-axis tuples."""
    if isinstance(value, int):
        values = [1 if first_one and s == 0 else value for s in range(n)]
    else:
        values = list(value)
    if len(values) != n:
        raise ValueError(f"{name} needs one entry per stage (n_stages={n}), got {len(values)}: {value!r}")
    out = []
    for v in values:
        t = (v,) * dims if isinstance(v, int) else tuple(v)
        if len(t) != dims or any(not isinstance(i, int) or i < 1 for i in t):
            raise ValueError(f"{name}: each entry must be a positive int or {dims} of them, got {v!r}")
        out.append(t)
    return out


def _ints(value, n: int, name: str) -> list[int]:
    values = [value] * n if isinstance(value, int) else list(value)
    if len(values) != n or any(not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{name} must be a positive int or {n} of them, got {value!r}")
    return values


class UMamba(nn.Module):
    """U-Mamba_Bot (``mamba="bottleneck"``) or U-Mamba_Enc (``mamba="encoder"``), 2D or 3D.

    Arguments keep nnU-Net's names; ``enc_mamba_stages`` ("alternate" / "all") and ``concat_first_skip``
    default to the official 2D / 3D choices (module docstring). ``n_stages`` / ``strides`` default to an
    nnU-Net-like plan for ``input_size`` (:func:`plan_strides`), ``features_per_stage`` to
    min(32 * 2^i, 512 in 2D / 320 in 3D); with none of n_stages, strides, features_per_stage and input_size,
    input_size is 512x512 (2D) / 128^3 (3D): 8 / 6 stages.
    An int ``kernel_sizes`` / ``n_conv_per_stage`` is the same for every stage, an int ``strides`` too except
    stage 0 (stride 1). U-Mamba_Enc needs ``input_size`` (it sizes the channel-token Mamba layers).
    Input: (B, in_channels, *S) with every axis of S divisible by the total stride along it.
    Output: (B, num_classes, *S), or a list over the decoder stages (highest resolution first) with
    ``deep_supervision``.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        n_stages: int | None = None,
        features_per_stage: int | Sequence[int] | None = None,
        kernel_sizes: int | Sequence[int | Sequence[int]] = 3,
        strides: int | Sequence[int | Sequence[int]] | None = None,
        n_conv_per_stage: int | Sequence[int] = 2,
        n_conv_per_stage_decoder: int | Sequence[int] = 2,
        deep_supervision: bool = True,
        input_size: Sequence[int] | None = None,
        mamba: str = "bottleneck",
        enc_mamba_stages: str | None = None,
        concat_first_skip: bool | None = None,
        conv_bias: bool = True,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if mamba not in ("bottleneck", "encoder"):
            raise ValueError(f"mamba must be 'bottleneck' (U-Mamba_Bot) or 'encoder' (U-Mamba_Enc), got {mamba!r}")
        for name, v in (("in_channels", in_channels), ("num_classes", num_classes)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if input_size is not None:
            if isinstance(input_size, int):  # one int: the same size on every axis
                input_size = (input_size,) * spatial_dims
            input_size = tuple(int(i) for i in input_size)
            if len(input_size) != spatial_dims or min(input_size) < 1:
                raise ValueError(f"input_size must be {spatial_dims} positive ints, got {input_size!r}")
        if enc_mamba_stages is None:
            enc_mamba_stages = "alternate" if spatial_dims == 2 else "all"
        if enc_mamba_stages not in ("alternate", "all"):
            raise ValueError(f"enc_mamba_stages must be 'alternate' or 'all', got {enc_mamba_stages!r}")
        if concat_first_skip is None:
            concat_first_skip = spatial_dims == 3
        if n_stages is None:
            if strides is not None and not isinstance(strides, int):
                n_stages = len(strides)
            elif features_per_stage is not None and not isinstance(features_per_stage, int):
                n_stages = len(features_per_stage)
            else:
                input_size = input_size or _DEFAULT_INPUT_SIZE[spatial_dims]
                n_stages = len(plan_strides(input_size))
        if mamba == "encoder" and input_size is None:
            raise ValueError("U-Mamba_Enc needs input_size (the patch size): it sizes the channel-token Mamba layers")
        if isinstance(n_stages, bool) or not isinstance(n_stages, int) or n_stages < 2:
            raise ValueError(f"n_stages must be an int >= 2, got {n_stages!r}")
        if strides is None:
            planned = plan_strides(input_size) if input_size is not None else None
            strides = planned if planned is not None and len(planned) == n_stages else 2
        if features_per_stage is None:
            features_per_stage = [min(32 * 2**i, _MAX_FEATURES[spatial_dims]) for i in range(n_stages)]
        features = _ints(features_per_stage, n_stages, "features_per_stage")
        kernels = _per_stage(kernel_sizes, n_stages, spatial_dims, "kernel_sizes")
        stride_list = _per_stage(strides, n_stages, spatial_dims, "strides", first_one=True)
        blocks = _ints(n_conv_per_stage, n_stages, "n_conv_per_stage")
        blocks_dec = _ints(n_conv_per_stage_decoder, n_stages - 1, "n_conv_per_stage_decoder")
        # the official constructors cut the deeper half to one block, whatever the arguments say
        for s in range(math.ceil(n_stages / 2), n_stages):
            blocks[s] = 1
        for s in range(math.ceil((n_stages - 1) / 2 + 0.5), n_stages - 1):
            blocks_dec[s] = 1

        self.spatial_dims = spatial_dims
        self.in_channels = self.in_chans = in_channels
        self.num_classes = num_classes
        self.n_stages = n_stages
        self.features_per_stage = features
        self.kernel_sizes = kernels
        self.strides = stride_list
        self.deep_supervision = deep_supervision
        self.input_size = input_size
        self.mamba = mamba
        self.total_stride = tuple(math.prod(s[a] for s in stride_list) for a in range(spatial_dims))

        mamba_kwargs = dict(d_state=d_state, d_conv=d_conv, expand=expand, backend=backend)
        enc_mamba = None
        self.channel_token_tokens: dict[int, int] = {}  # stage -> voxels its channel-token layer needs
        if mamba == "encoder":
            enc_mamba = []
            size = input_size
            for s in range(n_stages):
                # floor division, as the official code sizes these layers
                size = tuple(n // st for n, st in zip(size, stride_list[s], strict=True))
                if enc_mamba_stages == "all" or bool(s % 2) ^ bool(n_stages % 2):  # alternate: ends on the last
                    voxels = math.prod(size)
                    channel_token = voxels <= features[s]
                    if channel_token:
                        self.channel_token_tokens[s] = voxels
                    enc_mamba.append(MambaLayer(voxels if channel_token else features[s],
                                                channel_token=channel_token, **mamba_kwargs))
                else:
                    enc_mamba.append(nn.Identity())
        self.encoder = ResidualEncoder(spatial_dims, in_channels, features, kernels, stride_list, blocks, conv_bias,
                                       enc_mamba)
        self.mamba_layer = MambaLayer(features[-1], **mamba_kwargs) if mamba == "bottleneck" else None
        self.decoder = UNetResDecoder(spatial_dims, num_classes, features, kernels, stride_list, blocks_dec,
                                      conv_bias, deep_supervision, concat_first_skip)
        self.init_weights()

    def init_weights(self) -> None:
        """nnU-Net's InitWeights_He(1e-2) on the convolutions (the Mamba layers keep their own initialisation)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, a=1e-2)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.endswith(("A_log", ".D"))}

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 2 + self.spatial_dims or x.shape[1] != self.in_channels:
            grid = "H, W" if self.spatial_dims == 2 else "D, H, W"
            raise ValueError(f"expected input of shape (B, {self.in_channels}, {grid}), got {tuple(x.shape)}")
        spatial = tuple(x.shape[2:])
        if any(n % t for n, t in zip(spatial, self.total_stride, strict=True)):
            raise ValueError(f"input size {spatial} is not divisible by the network's total stride "
                             f"{self.total_stride}; pad or crop it to a multiple")
        size = spatial
        for s in range(self.n_stages):
            size = tuple(n // st for n, st in zip(size, self.strides[s], strict=True))
            need = self.channel_token_tokens.get(s)
            if need is not None and math.prod(size) != need:
                raise ValueError(f"stage {s} scans over channels with {need} voxels, planned for input_size "
                                 f"{self.input_size}; input {spatial} gives {math.prod(size)} there")

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """x: (B, in_channels, *S) -> logits (B, num_classes, *S), or a list (deep supervision)."""
        self._check_input(x)
        skips = self.encoder(x)
        if self.mamba_layer is not None:
            skips[-1] = self.mamba_layer(skips[-1])
        return self.decoder(skips)


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: UMamba) -> dict[str, Tensor]:
    """An nnU-Net U-Mamba ``network_weights`` dict -> ours: drops the aliases nnU-Net's modules create
    (``decoder.encoder.*`` repeats ``encoder.*``; ``*.all_modules.{k}.*`` repeats a block's conv / norm)."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("decoder.encoder.") or ".all_modules." in key:
            continue
        out[key] = value
    return out


# -------------------------------------------------------------------------------------------------------
# nnU-Net v2 plans


_ARCH_KEYS = ("n_stages", "features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage",
              "n_conv_per_stage_decoder")


def _read_json(value, what: str) -> dict:
    if isinstance(value, dict):
        return value
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    return json.loads(path.read_text())


def _configuration(plans: dict, configuration: str) -> dict:
    """The configuration's entries, following ``inherits_from`` (e.g. 3d_cascade_fullres -> 3d_fullres)."""
    configs = plans.get("configurations")
    if not isinstance(configs, dict):
        raise ValueError("not an nnU-Net v2 plans file: no 'configurations'")
    if configuration not in configs:
        raise ValueError(f"configuration {configuration!r} is not in the plans; it has: {', '.join(configs)}")
    cfg = dict(configs[configuration])
    seen = {configuration}
    while "inherits_from" in cfg:
        parent = cfg.pop("inherits_from")
        if parent in seen or parent not in configs:
            raise ValueError(f"configuration {configuration!r} inherits from {parent!r}, which cannot be resolved")
        seen.add(parent)
        cfg = {**configs[parent], **cfg}
    return cfg


def num_segmentation_heads(dataset: dict) -> int:
    """nnU-Net's output channels for a dataset.json: the labels incl. background (an ``ignore`` label excluded),
    or the foreground regions for region-based training."""
    labels = {k: v for k, v in dataset["labels"].items() if k != "ignore"}
    if "regions_class_order" in dataset or any(isinstance(v, (list, tuple)) for v in labels.values()):
        return sum(1 for k in labels if k != "background")
    return len({int(v) for v in labels.values()})


def umamba_kwargs_from_plans(plans, dataset, configuration: str = "2d", variant: str = "bot",
                             deep_supervision: bool = True) -> dict:
    """:class:`UMamba` keyword arguments for the network U-Mamba's nnU-Net trainer builds from ``plans``
    (plans.json: a path or the dict) and ``dataset`` (dataset.json) for ``configuration``.

    Reads the newer layout (``configurations.<c>.architecture.arch_kwargs``: n_stages, features_per_stage,
    kernel_sizes, strides, n_conv_per_stage, n_conv_per_stage_decoder) or the older flat keys
    (UNet_base_num_features, unet_max_num_features, conv_kernel_sizes, pool_op_kernel_sizes,
    n_conv_per_stage_encoder, n_conv_per_stage_decoder), and ``patch_size`` (U-Mamba_Enc's input_size).
    in_channels: the dataset's ``channel_names`` (or ``modality``); num_classes: :func:`num_segmentation_heads`.
    """
    if variant not in ("bot", "enc"):
        raise ValueError(f"variant must be 'bot' or 'enc', got {variant!r}")
    plans, dataset = _read_json(plans, "plans file"), _read_json(dataset, "dataset file")
    cfg = _configuration(plans, configuration)
    patch = [int(n) for n in cfg["patch_size"]]
    dims = len(patch)
    arch = cfg.get("architecture")
    try:
        if arch is not None:
            a = arch["arch_kwargs"]
            features = list(a["features_per_stage"])
            kernels, strides = a["kernel_sizes"], a["strides"]
            n_conv = a["n_conv_per_stage"] if "n_conv_per_stage" in a else a["n_blocks_per_stage"]
            n_conv_dec = a["n_conv_per_stage_decoder"]
            n_stages = int(a.get("n_stages", len(features)))
        else:
            kernels, strides = cfg["conv_kernel_sizes"], cfg["pool_op_kernel_sizes"]
            n_stages = len(kernels)
            cap = cfg.get("unet_max_num_features", _MAX_FEATURES[dims])
            features = [min(cfg["UNet_base_num_features"] * 2**i, cap) for i in range(n_stages)]
            n_conv, n_conv_dec = cfg["n_conv_per_stage_encoder"], cfg["n_conv_per_stage_decoder"]
    except KeyError as err:
        raise ValueError(f"plans configuration {configuration!r} has no {err.args[0]!r} (neither the "
                         f"'architecture'/'arch_kwargs' layout nor the older flat keys)") from None
    channels = dataset.get("channel_names", dataset.get("modality"))
    if not channels:
        raise ValueError("dataset.json has neither 'channel_names' nor 'modality'")
    if isinstance(n_conv, int):
        n_conv = [n_conv] * n_stages
    if isinstance(n_conv_dec, int):
        n_conv_dec = [n_conv_dec] * (n_stages - 1)
    return dict(
        spatial_dims=dims, in_channels=len(channels), num_classes=num_segmentation_heads(dataset),
        n_stages=n_stages, features_per_stage=[int(f) for f in features],
        kernel_sizes=[[int(k) for k in ks] for ks in kernels], strides=[[int(k) for k in st] for st in strides],
        n_conv_per_stage=[int(n) for n in n_conv], n_conv_per_stage_decoder=[int(n) for n in n_conv_dec],
        deep_supervision=deep_supervision, input_size=patch,
        mamba="bottleneck" if variant == "bot" else "encoder",
    )


def umamba_from_plans(plans, dataset, configuration: str = "2d", variant: str = "bot",
                      deep_supervision: bool = True, **kwargs) -> UMamba:
    """The U-Mamba (``variant`` "bot" / "enc") U-Mamba's nnU-Net trainer builds from plans.json and dataset.json
    (paths or dicts) for ``configuration`` ("2d", "3d_fullres", ...); see :func:`umamba_kwargs_from_plans`.
    ``kwargs`` (e.g. ``backend``) go to :class:`UMamba`."""
    return UMamba(**umamba_kwargs_from_plans(plans, dataset, configuration, variant, deep_supervision), **kwargs)


def find_nnunet_plans(checkpoint_path, configuration: str | None = None) -> tuple[Path, Path, str] | None:
    """For an nnU-Net ``checkpoint_*.pth``: (plans.json, dataset.json, configuration) from its results folder
    (the files sit beside it or one level up, next to ``fold_*``), or None when they are not there.
    The configuration: ``configuration``, else the folder name ``Trainer__Plans__<configuration>``, else the
    checkpoint's ``init_args``, else the plans' only one."""
    path = Path(checkpoint_path)
    for folder in (path.parent, path.parent.parent):
        plans_path, dataset_path = folder / "plans.json", folder / "dataset.json"
        if plans_path.is_file() and dataset_path.is_file():
            break
    else:
        return None
    configs = _read_json(plans_path, "plans file").get("configurations", {})
    if configuration is None:
        for folder in (path.parent, path.parent.parent):
            name = folder.name.split("__")[-1]
            if folder.name.count("__") >= 2 and name in configs:
                configuration = name
                break
    if configuration is None:
        from ..convert._io import _torch_load

        obj = _torch_load(path)
        configuration = ((obj.get("init_args") or {}).get("configuration") if isinstance(obj, dict) else None)
    if configuration is None and len(configs) == 1:
        configuration = next(iter(configs))
    if configuration is None:
        raise ValueError(f"{path}: cannot tell which nnU-Net configuration it was trained with (plans has "
                         f"{', '.join(configs)}); pass nnunet_configuration=...")
    return plans_path, dataset_path, configuration


# -------------------------------------------------------------------------------------------------------
# variants


def _create_umamba(variant: str, mamba: str, pretrained: bool = False, num_classes: int = 2, in_chans: int = 1,
                   features_only: bool = False, **kwargs) -> UMamba:
    if pretrained:
        raise ValueError(f"{variant} has no released weights; pass checkpoint_path=... (an nnU-Net checkpoint)")
    if features_only:
        raise ValueError(f"{variant} is a segmentation network: features_only is not supported")
    configuration = kwargs.pop("nnunet_configuration", None)
    checkpoint_path = kwargs.get("checkpoint_path")
    if (checkpoint_path is not None and Path(checkpoint_path).suffix != ".safetensors"
            and not any(k in kwargs for k in _ARCH_KEYS)):
        found = find_nnunet_plans(checkpoint_path, configuration)
        if found is not None:  # an nnU-Net results folder: its plans define the architecture
            plans_path, dataset_path, configuration = found
            arch = umamba_kwargs_from_plans(plans_path, dataset_path, configuration,
                                            "bot" if mamba == "bottleneck" else "enc",
                                            kwargs.get("deep_supervision", True))
            _logger.info("%s: architecture from %s (configuration %s), %d input channels, %d classes", variant,
                         plans_path, configuration, arch["in_channels"], arch["num_classes"])
            in_chans, num_classes = arch.pop("in_channels"), arch.pop("num_classes")
            arch.pop("mamba")
            kwargs = {**arch, **kwargs}
    kwargs.setdefault("in_channels", in_chans)
    return build_model(UMamba, variant, False, dict(mamba=mamba), checkpoint_filter_fn, num_classes=num_classes,
                       **kwargs)


@register_model
def umamba_bot(pretrained: bool = False, **kwargs) -> UMamba:
    """U-Mamba_Bot: Mamba on the bottleneck only. 2D, 8 stages, 1 -> 14 classes: 64,818,914 params;
    3D, 6 stages (cap 320): 42,130,054. ``in_chans`` is accepted for ``in_channels``."""
    return _create_umamba("umamba_bot", "bottleneck", pretrained, **kwargs)


@register_model
def umamba_enc(pretrained: bool = False, **kwargs) -> UMamba:
    """U-Mamba_Enc: Mamba after every other encoder stage; needs ``input_size``. 2D, 8 stages, 512x448:
    63,935,154 params; 3D, 6 stages, 128^3: 42,760,582. ``in_chans`` is accepted for ``in_channels``."""
    return _create_umamba("umamba_enc", "encoder", pretrained, **kwargs)
