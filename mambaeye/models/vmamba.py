"""VMamba (MzeroMiko/VMamba ``classification/models/vmamba.py``): the v2 models and the vanilla (v0) ones.

    image (B, 3, H, W) -> stem (stride 4) -> stage 0 -> down -> stage 1 -> down -> stage 2 -> down -> stage 3
                       -> norm -> global average pool -> head

Stage i has ``depths[i]`` VSS blocks at width ``dims[i]`` and stride 4 * 2^i; the downsample (stride 2,
width x2) belongs to the end of stage i, as in the official ``layers.{i}.downsample``.

- v2 (VMamba-T/S/B, ``forward_type="v05_noz"``): channel-first (B, C, H, W) throughout, LayerNorm2d;
  stem "v2" = conv3x3 s2 (C/2) -> LN -> GELU -> conv3x3 s2 (C) -> LN; downsample "v3" = conv3x3 s2 -> LN;
  block = x + SS2D(LN(x)) (no z gate, d_state 1, depthwise conv 3x3 without bias), then x + MLP(LN(x))
  with ratio 4, GELU.
- v0 (vanilla VMamba): channel-last (B, H, W, C), LayerNorm; stem "v1" = conv4x4 s4 -> LN; downsample "v1" =
  PatchMerging (2x2 neighbours concatenated -> LN(4C) -> Linear(4C, 2C)); block = x + SS2D(LN(x)) with the
  z gate, d_state 16, conv bias, the scan in float32; no MLP.

Parameter names are the current official ones (``patch_embed.{i}``, ``layers.{i}.blocks.{j}.{norm, op,
norm2, mlp}``, ``layers.{i}.downsample``, ``classifier.{norm, head}``); counts equal the official models'.
Inputs: any H and W divisible by 32. ``features_only`` returns the 4 stage outputs (before their
downsample) as (B, C_i, H / 2^(i+2), W / 2^(i+2)).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from ..convert.vmamba import is_vmamba_state_dict, vmamba_from_official, vmamba_version
from ..layers import SS2D
from ..layers.pointwise import pointwise_linear
from ..ops.bias_gelu import bias_gelu_channel_first
from ..ops.layer_norm import add_layer_norm_channel_first, layer_norm_channel_first
from ._builder import adapt_input_conv, build_model, fit_classifier
from ._features import resolve_indices
from ._helpers import DropPath, drop_path_rates, to_2tuple
from ._registry import register_model

__all__ = ["VSSM", "VSSBlock", "VSSStage", "LayerNorm2d", "Linear2d", "PatchMerging2D", "add_norm",
           "checkpoint_filter_fn", "residual_add"]

_logger = logging.getLogger(__name__)

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map, read and written in place
    (:func:`mambaeye.ops.layer_norm.layer_norm_channel_first`: no permuted copies).

    Under autocast the output is the autocast dtype when ``autocast_output`` (the default: the norm feeds a
    matmul or conv, which would cast it anyway), else float32 - what ``F.layer_norm`` gives under autocast, kept
    for VMamba's stem and downsample norms, whose output is the float32 residual stream of the official model.
    Without autocast it is x's dtype. ``batch_second``: the output is stored batch-second (mambaeye.ops._layout),
    whatever x's layout - how VSSM(batch_second=True) puts its residual stream into that layout.
    """

    def __init__(self, normalized_shape, *args, autocast_output: bool = True, batch_second: bool = False,
                 **kwargs) -> None:
        super().__init__(normalized_shape, *args, **kwargs)
        self.autocast_output = autocast_output
        self.batch_second = batch_second

    def _out_dtype(self, x: Tensor) -> torch.dtype | None:
        device = x.device.type
        if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
            return torch.get_autocast_dtype(device) if self.autocast_output else torch.float32
        return None

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm_channel_first(x, self.weight, self.bias, self.eps, out_dtype=self._out_dtype(x),
                                        batch_second=self.batch_second)

    def forward_add(self, x: Tensor, branch: Tensor, branch_bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(s, norm(s)) with s = x + branch (+ branch_bias per channel) in one pass
        (:func:`mambaeye.ops.layer_norm.add_layer_norm_channel_first`): a residual add and the next pre-norm."""
        return add_layer_norm_channel_first(x, branch, self.weight, self.bias, self.eps, branch_bias,
                                            out_dtype=self._out_dtype(x))


class Linear2d(nn.Linear):
    """nn.Linear over the channels of a (B, C, H, W) map (:func:`mambaeye.layers.pointwise.pointwise_linear`: one
    matrix product where x is stored batch-second, else a 1x1 conv). ``add_bias=False`` leaves the bias to the
    caller (the MLP fuses it into the GELU)."""

    def forward(self, x: Tensor, add_bias: bool = True) -> Tensor:
        return pointwise_linear(x, self.weight, self.bias if add_bias else None)


class Permute(nn.Module):
    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(*self.dims)


class Mlp(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout, over the channels (channel-first: Linear2d).

    Channel-first, fc1's bias and the GELU are one pass (:func:`mambaeye.ops.bias_gelu.bias_gelu_channel_first`):
    cuDNN's 1x1 convolution leaves the bias to a separate broadcast add. For the same reason ``add_bias=False``
    leaves fc2's bias to the caller (VSSBlock adds it in its residual add), channel-first without dropout only.
    """

    def __init__(self, dim: int, hidden: int, drop: float = 0.0, channel_first: bool = False) -> None:
        super().__init__()
        linear = Linear2d if channel_first else nn.Linear
        self.channel_first = channel_first
        self.fc1 = linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = linear(hidden, dim)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    @property
    def can_defer_bias(self) -> bool:
        """Whether ``forward(x, add_bias=False)`` is allowed: channel-first, no dropout after fc2."""
        return self.channel_first and isinstance(self.drop, nn.Identity)

    def forward(self, x: Tensor, add_bias: bool = True) -> Tensor:
        if not add_bias and not self.can_defer_bias:
            raise ValueError("Mlp: add_bias=False needs channel_first=True and no dropout (drop=0): the bias is "
                             "added before the dropout")
        if self.channel_first:
            h = bias_gelu_channel_first(self.fc1(x, add_bias=False), self.fc1.bias)
        else:
            h = self.act(self.fc1(x))
        if not add_bias:
            return self.fc2(h, add_bias=False)
        return self.drop(self.fc2(self.drop(h)))


class PatchMerging2D(nn.Module):
    """Swin's PatchMerging: each 2x2 neighbourhood (x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2],
    x[1::2, 1::2], in that order) concatenated -> LN(4C) -> Linear(4C, out). Odd sizes are zero-padded."""

    def __init__(self, dim: int, out_dim: int, channel_first: bool = False) -> None:
        super().__init__()
        self.channel_first = channel_first
        self.reduction = (Linear2d if channel_first else nn.Linear)(4 * dim, out_dim, bias=False)
        self.norm = (LayerNorm2d if channel_first else nn.LayerNorm)(4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.channel_first:
            h, w = x.shape[-2:]
            x = F.pad(x, (0, w % 2, 0, h % 2))
            x = torch.cat([x[..., 0::2, 0::2], x[..., 1::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 1::2]], 1)
        else:
            h, w = x.shape[1:3]
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
            x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


def _norm(dim: int, channel_first: bool, residual: bool = False, batch_second: bool = False) -> nn.Module:
    """``residual``: the norm's output starts a residual stream (float32 under autocast, see LayerNorm2d);
    ``batch_second`` (channel-first): it writes that stream batch-second."""
    if channel_first:
        return LayerNorm2d(dim, autocast_output=not residual, batch_second=batch_second)
    return nn.LayerNorm(dim)


def _make_stem(version: str, in_chans: int, dim: int, channel_first: bool, batch_second: bool = False,
               ) -> nn.Sequential:
    """Official index layout: "v1" conv 4x4 s4 at 0, norm at 2; "v2" convs at 0 and 5, norms at 2 and 7.
    ``batch_second``: the last norm writes its map batch-second."""
    to_last = nn.Identity() if channel_first else Permute(0, 2, 3, 1)
    last_norm = _norm(dim, channel_first, residual=True, batch_second=batch_second)
    if version == "v1":
        return nn.Sequential(nn.Conv2d(in_chans, dim, 4, 4), to_last, last_norm)
    if version == "v2":
        return nn.Sequential(
            nn.Conv2d(in_chans, dim // 2, 3, 2, 1),
            nn.Identity() if channel_first else Permute(0, 2, 3, 1),
            _norm(dim // 2, channel_first),
            nn.Identity() if channel_first else Permute(0, 3, 1, 2),
            nn.GELU(),
            nn.Conv2d(dim // 2, dim, 3, 2, 1),
            to_last,
            last_norm,
        )
    raise ValueError(f"patchembed_version must be 'v1' or 'v2', got {version!r}")


def _make_downsample(version: str, dim: int, out_dim: int, channel_first: bool, batch_second: bool = False,
                     ) -> nn.Module:
    """"v1": PatchMerging; "v3": conv3x3 s2 at index 1, norm at 3 (official layout), which with ``batch_second``
    writes its map batch-second."""
    if version == "v1":
        return PatchMerging2D(dim, out_dim, channel_first)
    if version == "v3":
        return nn.Sequential(
            nn.Identity() if channel_first else Permute(0, 3, 1, 2),
            nn.Conv2d(dim, out_dim, 3, 2, 1),
            nn.Identity() if channel_first else Permute(0, 2, 3, 1),
            _norm(out_dim, channel_first, residual=True, batch_second=batch_second),
        )
    raise ValueError(f"downsample_version must be 'v1' or 'v3', got {version!r}")


def residual_add(x: Tensor, branch: Tensor | None, branch_bias: Tensor | None = None) -> Tensor:
    """x + branch (+ branch_bias per channel of a (B, C, *S) branch); x itself when branch is None."""
    if branch is None:
        return x
    x = x + branch
    return x if branch_bias is None else x + branch_bias.view(-1, *([1] * (branch.dim() - 2)))


def add_norm(norm: nn.Module, x: Tensor, branch: Tensor | None,
             branch_bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(s, norm(s)) with s = :func:`residual_add` (x, branch, branch_bias): one pass for a LayerNorm2d."""
    if branch is not None and isinstance(norm, LayerNorm2d):
        return norm.forward_add(x, branch, branch_bias)
    x = residual_add(x, branch, branch_bias)
    return x, norm(x)


class VSSBlock(nn.Module):
    """x + drop_path(SS2D(norm(x))), then (if mlp_ratio > 0) x + drop_path(MLP(norm2(x))).

    :meth:`forward_residual` leaves the block's last residual add to its caller, so that VSSStage runs it with the
    next block's norm in one pass (mamba-ssm's blocks hand on (hidden_states, residual) for the same reason);
    channel-first without drop path or MLP dropout, fc2's bias is handed on too (added in that pass).
    """

    def __init__(self, dim: int, drop_path: float = 0.0, mlp_ratio: float = 4.0, mlp_drop_rate: float = 0.0,
                 channel_first: bool = False, **ssm_kwargs) -> None:
        super().__init__()
        self.norm = _norm(dim, channel_first)
        self.op = SS2D(dim, channel_first=channel_first, **ssm_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        if mlp_ratio > 0:
            self.norm2 = _norm(dim, channel_first)
            self.mlp = Mlp(dim, int(dim * mlp_ratio), mlp_drop_rate, channel_first)
        else:
            self.norm2 = self.mlp = None

    def forward_residual(self, x: Tensor, branch: Tensor | None = None, branch_bias: Tensor | None = None,
                         ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The block applied to :func:`residual_add` (x, branch, branch_bias) (the previous block's pending add),
        returned as its own pending add: (x', branch', branch_bias'), the block's output being
        residual_add(x', branch', branch_bias'). Shapes: x, branch (B, C, H, W) channel-first, else (B, H, W, C);
        branch_bias (C,) or None."""
        x, h = add_norm(self.norm, x, branch, branch_bias)
        y = self.drop_path(self.op(h))
        if self.mlp is None:
            return x, y, None
        x, h = add_norm(self.norm2, x, y)
        if self.mlp.can_defer_bias and isinstance(self.drop_path, nn.Identity):
            return x, self.mlp(h, add_bias=False), self.mlp.fc2.bias
        return x, self.drop_path(self.mlp(h)), None

    def forward(self, x: Tensor) -> Tensor:
        return residual_add(*self.forward_residual(x))


class VSSStage(nn.Module):
    """``blocks`` at one resolution, then ``downsample`` (Identity in the last stage)."""

    def __init__(self, blocks: Sequence[VSSBlock], downsample: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.downsample = downsample
        self.grad_checkpointing = False

    def forward_blocks(self, x: Tensor) -> Tensor:
        """The blocks in turn, each one's last residual add run with the next one's norm (VSSBlock.forward_residual)."""
        pending: list[Tensor | None] = [None, None]  # (branch, branch_bias) of the last block's add
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x, *pending = torch.utils.checkpoint.checkpoint(block.forward_residual, x, *pending,
                                                                use_reentrant=False)
            else:
                x, *pending = block.forward_residual(x, *pending)
        return residual_add(x, *pending)

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(self.forward_blocks(x))


class ClassifierHead(nn.Module):
    """VMamba's ``classifier``: ``norm`` (applied in forward_features), average pool, dropout, ``head``."""

    def __init__(self, dim: int, num_classes: int, drop_rate: float, channel_first: bool) -> None:
        super().__init__()
        self.norm = _norm(dim, channel_first)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()



def init_linear_norm(m: nn.Module) -> None:
    """VMamba's per-module init: nn.Linear trunc_normal(0.02) with zero bias, LayerNorm weight 1 / bias 0."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)

class VSSM(nn.Module):
    """VMamba classification backbone (v2 or vanilla v0, chosen by the arguments; see the module docstring).

    Args: ``dims`` (int: stage-0 width, doubled per stage; or 4 widths), ``depths``, ``d_state``,
    ``ssm_ratio`` (d_inner = ssm_ratio * dim), ``dt_rank``, ``d_conv``, ``conv_bias``, ``with_z`` (v0's gate),
    ``force_fp32`` (v0 scans in float32), ``mlp_ratio`` (0: no MLP), ``channel_first`` (v2: True),
    ``patchembed_version`` ("v1", "v2"), ``downsample_version`` ("v1" PatchMerging, "v3" conv),
    ``drop_path_rate`` (official: T 0.2, S 0.3, B 0.6; 0 here by default), ``drop_rate`` (before the head),
    ``backend`` (selective-scan backend). ``img_size`` only sets the pretrained cfg's input size.
    ``batch_second`` (channel-first only): the stages' maps are stored batch-second ((C, B, H, W) memory,
    :mod:`mambaeye.ops._layout`; the stem's and the downsamples' last norms write them so), which makes every
    1x1 projection one matrix product over the whole batch instead of cuDNN's NCHW 1x1 convolution with its NHWC
    transposes. Same parameters, same results (up to rounding); maps returned by ``forward_features`` and
    ``forward_intermediates`` are contiguous NCHW either way.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths: Sequence[int] = (2, 2, 9, 2),
        dims: int | Sequence[int] = 96,
        d_state: int = 1,
        ssm_ratio: float = 2.0,
        dt_rank: int | str = "auto",
        d_conv: int = 3,
        conv_bias: bool = False,
        with_z: bool = False,
        force_fp32: bool = False,
        mlp_ratio: float = 4.0,
        channel_first: bool = True,
        patchembed_version: str = "v2",
        downsample_version: str = "v3",
        drop_rate: float = 0.0,
        mlp_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        backend: str = "auto",
        batch_second: bool | None = None,
    ) -> None:
        super().__init__()
        if batch_second is None:
            batch_second = channel_first
        if batch_second and not channel_first:
            raise ValueError("batch_second is a layout of channel-first maps: it needs channel_first=True")
        depths = tuple(depths)
        if isinstance(dims, int):
            dims = [dims * 2**i for i in range(len(depths))]
        dims = list(dims)
        if len(dims) != len(depths) or not depths or min(depths) < 1:
            raise ValueError(f"need one width per stage and depths >= 1, got dims={dims}, depths={depths}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.img_size = to_2tuple(img_size)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.dims = dims
        self.depths = depths
        self.channel_first = channel_first
        self.num_features = self.head_hidden_size = dims[-1]
        self.reduction = 4 * 2 ** (len(depths) - 1)

        self.batch_second = batch_second  # the norms that start each residual stream write it so; the blocks keep it
        self.patch_embed = _make_stem(patchembed_version, in_chans, dims[0], channel_first, batch_second)
        ssm = dict(d_state=d_state, ssm_ratio=ssm_ratio, dt_rank=dt_rank, d_conv=d_conv, conv_bias=conv_bias,
                   with_z=with_z, force_fp32=force_fp32, backend=backend)
        dpr = drop_path_rates(drop_path_rate, sum(depths))
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            blocks = [VSSBlock(dims[i], dpr[start + j], mlp_ratio, mlp_drop_rate, channel_first, **ssm)
                      for j in range(depth)]
            last = i == len(depths) - 1
            down = nn.Identity() if last else _make_downsample(downsample_version, dims[i], dims[i + 1], channel_first,
                                                               batch_second)
            self.layers.append(VSSStage(blocks, down))
        self.classifier = ClassifierHead(dims[-1], num_classes, drop_rate, channel_first)
        self.feature_info = [dict(num_chs=dims[i], reduction=4 * 2**i, module=f"layers.{i}")
                             for i in range(len(depths))]
        self.init_weights()

    def init_weights(self) -> None:
        """VMamba's ``_init_weights``: every nn.Linear (Linear2d, SS2D's in/out projections, MLP, PatchMerging,
        head) trunc-normal(0.02) with zero bias, every LayerNorm weight 1 / bias 0; convs keep PyTorch's init
        and SS2D's scan parameters (x_proj_weight, dt_projs_*, A_logs, Ds) their own."""
        for m in self.modules():
            init_linear_norm(m)

    # ---------------------------------------------------------------------------------------------------
    # timm contract

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^patch_embed", blocks=r"^layers\.(\d+)" if coarse else [
            (r"^layers\.(\d+)\.downsample", (0,)), (r"^layers\.(\d+)\.blocks\.(\d+)", None),
            (r"^classifier\.norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.layers:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, "avg"):
            raise ValueError(f"VMamba pools by averaging; global_pool must be 'avg' or None, got {global_pool!r}")
        self.num_classes = num_classes
        self.classifier.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.trunc_normal_(self.classifier.head.weight, std=0.02)
            nn.init.zeros_(self.classifier.head.bias)

    # ---------------------------------------------------------------------------------------------------
    # forward

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected images (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[2:]
        if h % self.reduction or w % self.reduction:
            fit = [max(self.reduction, round(s / self.reduction) * self.reduction) for s in (h, w)]
            raise ValueError(f"VMamba needs H and W divisible by {self.reduction}, got {h}x{w} "
                             f"(the nearest that fit: {fit[0]}x{fit[1]})")

    def _to_nchw(self, x: Tensor) -> Tensor:
        if self.channel_first:
            return x.contiguous() if self.batch_second else x
        return x.permute(0, 3, 1, 2).contiguous()

    def forward_features(self, x: Tensor) -> Tensor:
        """images (B, in_chans, H, W) -> normalised last-stage map (B, C, H / 32, W / 32)."""
        self._check_input(x)
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        return self._to_nchw(self.classifier.norm(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """(B, C, h, w) -> logits (B, num_classes), or the pooled (B, C) with ``pre_logits``."""
        x = self.classifier.drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.classifier.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Stage outputs (before the stage's downsample) at ``indices`` (default: all 4) as (B, C_i, H_i, W_i),
        strides 4, 8, 16, 32. ``norm`` applies classifier.norm to the last stage's map. Returns the maps, or
        (forward_features output, maps)."""
        if output_fmt != "NCHW":
            raise ValueError(f"VMamba returns NCHW maps; output_fmt must be 'NCHW', got {output_fmt!r}")
        num = len(self.layers)
        take = resolve_indices(indices, num, range(num))
        self._check_input(x)
        x = self.patch_embed(x)
        last = max(take) + 1 if (stop_early or intermediates_only) else num
        maps = []
        for i, stage in enumerate(self.layers[:last]):
            x = stage.forward_blocks(x)
            if i in take:
                y = self.classifier.norm(x) if (norm and i == num - 1) else x
                maps.append(self._to_nchw(y))
            x = stage.downsample(x)
        if intermediates_only:
            return maps
        return self._to_nchw(self.classifier.norm(x)), maps

    def prune_intermediate_layers(self, indices: int | Sequence[int] | None = None, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last of ``indices`` and that stage's downsample (and the final norm / the
        head); returns the kept indices."""
        num = len(self.layers)
        take = resolve_indices(indices, num, range(num))
        self.layers = self.layers[:max(take) + 1]
        self.layers[-1].downsample = nn.Identity()
        if prune_norm:
            self.classifier.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take


# -------------------------------------------------------------------------------------------------------
# checkpoints


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: VSSM) -> dict[str, Tensor]:
    """An official (v2 or v0, new or old key names) or converted state dict -> one that loads into ``model``:
    the head re-initialised when its size differs (dropped for num_classes=0), the stem's first conv summed
    / tiled for other ``in_chans``."""
    if is_vmamba_state_dict(state_dict):
        try:
            version = vmamba_version(state_dict)
        except ValueError:  # too few keys to tell (e.g. a one-stage dict): read it as the model's kind
            version = "v0" if isinstance(model.layers[0].downsample, PatchMerging2D) else "v2"
        state_dict = vmamba_from_official(state_dict, version)
    state_dict = dict(state_dict)
    own = model.state_dict()
    conv = state_dict.get("patch_embed.0.weight")
    want = own["patch_embed.0.weight"]
    if conv is not None and conv.shape[1] != want.shape[1] and conv.shape[0] == want.shape[0]:
        state_dict["patch_embed.0.weight"] = adapt_input_conv(want.shape[1], conv)
        _logger.info("VMamba: stem conv adapted from %d to %d input channels", conv.shape[1], want.shape[1])
    fit_classifier(state_dict, own, ("classifier.head.weight", "classifier.head.bias"), "VMamba")
    return state_dict


# -------------------------------------------------------------------------------------------------------
# variants


_RELEASE_PAGE = "https://github.com/MzeroMiko/VMamba/releases"
_RELEASES = {
    "vmamba_tiny": ("vssm1_tiny_0230s_ckpt_epoch_264.pth",
                    "https://github.com/MzeroMiko/VMamba/releases/download/%23v2cls/vssm1_tiny_0230s_ckpt_epoch_264.pth"),
    "vmamba_small": ("vssm_small_0229_ckpt_epoch_222.pth", _RELEASE_PAGE),
    "vmamba_base": ("vssm_base_0229_ckpt_epoch_237.pth", _RELEASE_PAGE),
    "vmamba_tiny_v0": ("vssmtiny_dp01_ckpt_epoch_292.pth", _RELEASE_PAGE),
    "vmamba_small_v0": ("vssmsmall_dp03_ckpt_epoch_238.pth", _RELEASE_PAGE),
    "vmamba_base_v0": ("vssmbase_dp06_ckpt_epoch_241.pth", _RELEASE_PAGE),
}


def _cfg(file: str, origin: str) -> dict:
    return dict(
        input_size=(3, 224, 224), mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, crop_pct=0.875,
        interpolation="bicubic", num_classes=1000, first_conv="patch_embed.0", classifier="classifier.head",
        license="mit", paper_ids="arXiv:2401.10166", paper_name="VMamba: Visual State Space Model",
        origin_url="https://github.com/MzeroMiko/VMamba", notes=(f"official weights: {file} ({origin})",),
    )


default_cfgs = {name: _cfg(file, origin) for name, (file, origin) in _RELEASES.items()}

_V2 = dict(d_state=1, dt_rank="auto", d_conv=3, conv_bias=False, with_z=False, force_fp32=False, mlp_ratio=4.0,
           channel_first=True, patchembed_version="v2", downsample_version="v3")
_V0 = dict(d_state=16, ssm_ratio=2.0, dt_rank="auto", d_conv=3, conv_bias=True, with_z=True, force_fp32=True,
           mlp_ratio=0.0, channel_first=False, patchembed_version="v1", downsample_version="v1")

# official architecture arguments of each variant (drop_path_rate aside: a training choice)
MODEL_CONFIGS = {
    "vmamba_tiny": dict(_V2, dims=96, depths=(2, 2, 8, 2), ssm_ratio=1.0),
    "vmamba_small": dict(_V2, dims=96, depths=(2, 2, 15, 2), ssm_ratio=2.0),
    "vmamba_base": dict(_V2, dims=128, depths=(2, 2, 15, 2), ssm_ratio=2.0),
    "vmamba_tiny_v0": dict(_V0, dims=96, depths=(2, 2, 9, 2)),
    "vmamba_small_v0": dict(_V0, dims=96, depths=(2, 2, 27, 2)),
    "vmamba_base_v0": dict(_V0, dims=128, depths=(2, 2, 27, 2)),
}


def _create_vmamba(variant: str, pretrained: bool = False, **kwargs) -> VSSM:
    return build_model(VSSM, variant, pretrained, MODEL_CONFIGS[variant], checkpoint_filter_fn,
                       release=_RELEASES[variant], **kwargs)


@register_model
def vmamba_tiny(pretrained: bool = False, **kwargs) -> VSSM:
    """VMamba-T (v2, "s1l8"): dims 96, depths 2-2-8-2, ssm_ratio 1, d_state 1; 30,249,064 params; 4.9 GFLOPs."""
    return _create_vmamba("vmamba_tiny", pretrained, **kwargs)


@register_model
def vmamba_small(pretrained: bool = False, **kwargs) -> VSSM:
    """VMamba-S (v2, "s2l15"): dims 96, depths 2-2-15-2, ssm_ratio 2; 50,147,752 params; 8.7 GFLOPs."""
    return _create_vmamba("vmamba_small", pretrained, **kwargs)


@register_model
def vmamba_base(pretrained: bool = False, **kwargs) -> VSSM:
    """VMamba-B (v2, "s2l15"): dims 128, depths 2-2-15-2, ssm_ratio 2; 88,557,800 params; 15.4 GFLOPs."""
    return _create_vmamba("vmamba_base", pretrained, **kwargs)


@register_model
def vmamba_tiny_v0(pretrained: bool = False, **kwargs) -> VSSM:
    """Vanilla VMamba-T (v0): dims 96, depths 2-2-9-2, d_state 16, no MLP; 22,893,448 params; 5.6 GFLOPs.
    The encoder of Swin-UMamba."""
    return _create_vmamba("vmamba_tiny_v0", pretrained, **kwargs)


@register_model
def vmamba_small_v0(pretrained: bool = False, **kwargs) -> VSSM:
    """Vanilla VMamba-S (v0): dims 96, depths 2-2-27-2; 44,417,416 params; 11.2 GFLOPs."""
    return _create_vmamba("vmamba_small_v0", pretrained, **kwargs)


@register_model
def vmamba_base_v0(pretrained: bool = False, **kwargs) -> VSSM:
    """Vanilla VMamba-B (v0): dims 128, depths 2-2-27-2; 76,254,056 params; 18.0 GFLOPs."""
    return _create_vmamba("vmamba_base_v0", pretrained, **kwargs)
