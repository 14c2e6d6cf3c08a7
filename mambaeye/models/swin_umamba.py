"""Swin-UMamba and Swin-UMamba† (JiarunLiu/Swin-UMamba ``nnunetv2/nets/SwinUMamba.py``, ``SwinUMambaD.py``).

Both use a vanilla VMamba-T (v0) encoder (:mod:`mambaeye.models.vmamba` pieces: VSS blocks with the z-gated
SS2D, d_state 16, ssm_ratio 2, the scan in float32; PatchMerging downsamples; depths 2-2-9-2, dims 96..768).

Swin-UMamba (``swin_umamba``)::

    x (B, Cin, H, W) -> stem: conv7x7 s2 (48) + IN -> patch embed conv2x2 s2 + LN -> 4 VSS stages
        skips: x, stem (H/2), stages 0..3 (H/4 .. H/32); MONAI residual blocks (encoder1..5) on x, stem,
        stages 0..2 -> decoder6..2 (transposed conv x2, concat, residual block) -> decoder1 -> heads
    deep supervision: heads on the H, H/2, H/4 and H/8 decoder outputs (``out_layers.{0..3}``).

Swin-UMamba† (``swin_umamba_d``): patch embed conv4x4 s4 on the input, the same encoder, and a Mamba decoder:
PatchExpand (Linear C -> 2C, 2x2 pixel shuffle, LN) -> concat skip -> Linear back to the skip width -> 2 VSS
blocks, three times; then a final x4 expand (Linear C -> 16C, 4x4 shuffle, LN) and 1x1 heads.

Parameter names follow the official ones except inside the encoder, which uses mambaeye's VMamba names
(``vssm_encoder.patch_embed.{0,2}``, ``layers.{i}.blocks.{j}.{norm, op}``, ``layers.{i}.downsample``);
:func:`checkpoint_filter_fn` maps official Swin-UMamba checkpoints (``ln_1``, ``self_attention``,
``downsamples.{i}``, ``patch_embed.{proj,norm}``). MONAI blocks are rebuilt here (same names:
``encoder{k}.layer.conv{1,2,3}.conv``, ``decoder{k}.{transp_conv.conv, conv_block.*}``,
``out_layers.{i}.conv.conv``); their instance norms have no affine parameters, as MONAI's "instance".
Counts equal the official networks' (1 input channel, 14 classes): 59,889,368 and 27,497,720.
Inputs: every spatial size divisible by 32.

3D (``spatial_dims=3``; the official code is 2D only): the same networks on volumes, with SS2D over 3D grids
(6 scan directions), PatchMerging3D (2x2x2 -> Linear(8C, 2C)), 3D convolutions, transposed convolutions and
instance norms, and PatchExpand shuffling scale^3 sub-voxels. VMamba's 2D ImageNet weights do not fit it.
At the default widths (1 -> 14 classes): 131,716,952 (Swin-UMamba 3D) and 34,170,872 (Swin-UMamba† 3D).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor, nn

from ..convert._io import load_checkpoint_file
from ..convert.vmamba import is_vmamba_state_dict, vmamba_from_official
from ._builder import build_model
from ._helpers import drop_path_rates
from ._registry import register_model
from .vmamba import PatchMerging2D, Permute, VSSBlock, VSSStage, init_linear_norm

__all__ = ["SwinUMamba", "SwinUMambaD", "VSSMEncoder", "PatchMerging3D", "PatchExpand", "checkpoint_filter_fn",
           "load_encoder_checkpoint"]

_logger = logging.getLogger(__name__)

# vanilla VMamba (v0) SS2D, as Swin-UMamba uses it
_SSM_V0 = dict(d_state=16, ssm_ratio=2.0, dt_rank="auto", d_conv=3, conv_bias=True, with_z=True, force_fp32=True)


_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONVT = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_INORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


def _vss_stage(drop_path: Sequence[float], dim: int, downsample: nn.Module, d_state: int, backend: str,
               spatial_dims: int = 2) -> VSSStage:
    """len(drop_path) vanilla VSS blocks (LN -> SS2D v0 -> residual, no MLP), then ``downsample``; channel-last."""
    ssm = {**_SSM_V0, "d_state": d_state, "spatial_dims": spatial_dims, "backend": backend}
    return VSSStage([VSSBlock(dim, drop_path=dp, mlp_ratio=0.0, **ssm) for dp in drop_path], downsample)


class PatchMerging3D(nn.Module):
    """PatchMerging for volumes: each 2x2x2 neighbourhood concatenated (per depth offset, the 2D order: H offset
    fastest, then W) -> LN(8C) -> Linear(8C, out). (B, D, H, W, C) -> (B, D/2, H/2, W/2, out)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(8 * dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(8 * dim)

    def forward(self, x: Tensor) -> Tensor:
        parts = [x[:, d::2, h::2, w::2] for d in (0, 1) for w in (0, 1) for h in (0, 1)]
        return self.reduction(self.norm(torch.cat(parts, -1)))


class VSSMEncoder(nn.Module):
    """Patch embed (conv patch x patch + LN) and VSS stages; returns the stage outputs before their downsample,
    channel-first: [(B, dims[i], *S / (patch * 2^i)) for i in 0..3]. 3D: SS2D over volumes (6 directions),
    PatchMerging3D."""

    def __init__(self, in_channels: int, patch_size: int = 4, dims: Sequence[int] = (96, 192, 384, 768),
                 depths: Sequence[int] = (2, 2, 9, 2), d_state: int = 16, drop_path_rate: float = 0.2,
                 backend: str = "auto", spatial_dims: int = 2) -> None:
        super().__init__()
        if len(dims) != len(depths):
            raise ValueError(f"dims and depths need the same length, got {dims} and {depths}")
        self.dims = list(dims)
        self.patch_size = patch_size
        self.spatial_dims = spatial_dims
        to_last = (0, 2, 3, 1) if spatial_dims == 2 else (0, 2, 3, 4, 1)
        self.patch_embed = nn.Sequential(_CONV[spatial_dims](in_channels, dims[0], patch_size, patch_size),
                                         Permute(*to_last), nn.LayerNorm(dims[0]))
        merge = PatchMerging2D if spatial_dims == 2 else PatchMerging3D
        dpr = drop_path_rates(drop_path_rate, sum(depths))
        self.layers = nn.ModuleList()
        for i in range(len(depths)):
            down = merge(dims[i], dims[i + 1]) if i < len(depths) - 1 else nn.Identity()
            self.layers.append(_vss_stage(dpr[sum(depths[:i]):sum(depths[:i + 1])], dims[i], down, d_state, backend,
                                          spatial_dims))
        self.apply(init_linear_norm)  # the official VSSMEncoder init

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.patch_embed(x)  # (B, *S', C)
        outs = []
        for stage in self.layers:
            x = stage.forward_blocks(x)
            outs.append(x.movedim(-1, 1))
            x = stage.downsample(x)
        return outs


# -------------------------------------------------------------------------------------------------------
# MONAI's UNETR blocks (names kept: UnetResBlock, UnetrBasicBlock, UnetrUpBlock, UnetOutBlock)


class _Conv(nn.Module):
    """MONAI's Convolution with conv_only: the layer sits at ``.conv``."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class UnetResBlock(nn.Module):
    """lrelu(norm2(conv2(lrelu(norm1(conv1(x))))) + norm3(conv3(x))); conv3/norm3 only when the width changes.
    Convolutions without bias, instance norms without affine parameters, LeakyReLU(0.01)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, spatial_dims: int = 2) -> None:
        super().__init__()
        pad = kernel_size // 2
        conv, norm = _CONV[spatial_dims], _INORM[spatial_dims]
        self.conv1 = _Conv(conv(in_channels, out_channels, kernel_size, padding=pad, bias=False))
        self.conv2 = _Conv(conv(out_channels, out_channels, kernel_size, padding=pad, bias=False))
        self.lrelu = nn.LeakyReLU(0.01, inplace=True)
        self.norm1 = norm(out_channels)
        self.norm2 = norm(out_channels)
        self.downsample = in_channels != out_channels
        if self.downsample:
            self.conv3 = _Conv(conv(in_channels, out_channels, 1, bias=False))
            self.norm3 = norm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm2(self.conv2(self.lrelu(self.norm1(self.conv1(x)))))
        residual = self.norm3(self.conv3(x)) if self.downsample else x
        return self.lrelu(y + residual)


class UnetrBasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.layer = UnetResBlock(in_channels, out_channels, spatial_dims=spatial_dims)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class UnetrUpBlock(nn.Module):
    """Transposed conv 2x2 s2 (no bias) -> concat the skip -> UnetResBlock(2 * out -> out)."""

    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.transp_conv = _Conv(_CONVT[spatial_dims](in_channels, out_channels, 2, 2, bias=False))
        self.conv_block = UnetResBlock(2 * out_channels, out_channels, spatial_dims=spatial_dims)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv_block(torch.cat((self.transp_conv(x), skip), dim=1))


class UnetOutBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.conv = _Conv(_CONV[spatial_dims](in_channels, out_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


# -------------------------------------------------------------------------------------------------------
# networks


class _SegBase(nn.Module):
    spatial_dims = 2
    stride = 32

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 2 + self.spatial_dims or x.shape[1] != self.in_channels:
            grid = "H, W" if self.spatial_dims == 2 else "D, H, W"
            raise ValueError(f"expected input of shape (B, {self.in_channels}, {grid}), got {tuple(x.shape)}")
        if any(n % self.stride for n in x.shape[2:]):
            raise ValueError(f"input size {tuple(x.shape[2:])} is not divisible by the network's total stride "
                             f"{self.stride}; pad or crop it to a multiple")

    @torch.no_grad()
    def freeze_encoder(self) -> None:
        """The official recipe trains the decoder alone first: all encoder weights but the patch embed frozen."""
        for name, p in self.vssm_encoder.named_parameters():
            if not name.startswith("patch_embed."):
                p.requires_grad = False

    @torch.no_grad()
    def unfreeze_encoder(self) -> None:
        for p in self.vssm_encoder.parameters():
            p.requires_grad = True

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.endswith(("A_logs", "Ds"))}


class SwinUMamba(_SegBase):
    """Swin-UMamba (module docstring). x: (B, in_channels, *S), each size divisible by 32 -> logits
    (B, num_classes, *S), or with ``deep_supervision`` a list at S, S/2, S/4, S/8 (highest first).
    ``encoder_checkpoint``: a vanilla VMamba-T checkpoint (official or converted) for the VSS stages."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 2,
        feat_size: Sequence[int] = (48, 96, 192, 384, 768),
        depths: Sequence[int] = (2, 2, 9, 2),
        d_state: int = 16,
        drop_path_rate: float = 0.2,
        deep_supervision: bool = True,
        encoder_checkpoint: str | Path | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        _check_common(in_channels, num_classes, spatial_dims)
        if len(feat_size) != 5:
            raise ValueError(f"feat_size needs 5 widths (stem, then the 4 VSS stages), got {feat_size!r}")
        self.in_channels = self.in_chans = in_channels
        self.num_classes = num_classes
        self.spatial_dims = sd = spatial_dims
        self.feat_size = list(feat_size)
        self.deep_supervision = deep_supervision
        f = self.feat_size
        self.stem = nn.Sequential(_CONV[sd](in_channels, f[0], 7, 2, 3), _INORM[sd](f[0], affine=True))
        self.vssm_encoder = VSSMEncoder(f[0], patch_size=2, dims=f[1:], depths=depths, d_state=d_state,
                                        drop_path_rate=drop_path_rate, backend=backend, spatial_dims=sd)
        self.encoder1 = UnetrBasicBlock(in_channels, f[0], sd)
        self.encoder2 = UnetrBasicBlock(f[0], f[1], sd)
        self.encoder3 = UnetrBasicBlock(f[1], f[2], sd)
        self.encoder4 = UnetrBasicBlock(f[2], f[3], sd)
        self.encoder5 = UnetrBasicBlock(f[3], f[4], sd)
        self.decoder6 = UnetrUpBlock(f[4], f[4], sd)
        self.decoder5 = UnetrUpBlock(f[4], f[3], sd)
        self.decoder4 = UnetrUpBlock(f[3], f[2], sd)
        self.decoder3 = UnetrUpBlock(f[2], f[1], sd)
        self.decoder2 = UnetrUpBlock(f[1], f[0], sd)
        self.decoder1 = UnetrBasicBlock(f[0], f[0], sd)
        self.out_layers = nn.ModuleList(UnetOutBlock(f[i], num_classes, sd) for i in range(4))
        if encoder_checkpoint is not None:
            load_encoder_checkpoint(self, encoder_checkpoint)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        self._check_input(x)
        x1 = self.stem(x)  # (B, f0, H/2, W/2)
        s0, s1, s2, s3 = self.vssm_encoder(x1)  # H/4 .. H/32
        enc1 = self.encoder1(x)
        enc2 = self.encoder2(x1)
        enc3 = self.encoder3(s0)
        enc4 = self.encoder4(s1)
        enc5 = self.encoder5(s2)
        dec4 = self.decoder6(s3, enc5)  # (B, f4, H/16, W/16)
        dec3 = self.decoder5(dec4, enc4)  # H/8
        dec2 = self.decoder4(dec3, enc3)  # H/4
        dec1 = self.decoder3(dec2, enc2)  # H/2
        dec0 = self.decoder2(dec1, enc1)  # H
        out = self.decoder1(dec0)
        if not self.deep_supervision:
            return self.out_layers[0](out)
        return [head(feat) for head, feat in zip(self.out_layers, (out, dec1, dec2, dec3), strict=True)]


class PatchExpand(nn.Module):
    """(B, *S, C) -> Linear -> pixel shuffle -> LN. scale 2: out (B, 2H, 2W, C/2) (Linear C -> 2C, official
    PatchExpand); scale 4: out (B, 4H, 4W, C) (Linear C -> 16C, official FinalPatchExpand_X4). 3D: the same
    output widths from scale^3 sub-voxels (Linear C -> 4C, C -> 64C)."""

    def __init__(self, dim: int, scale: int, spatial_dims: int = 2) -> None:
        super().__init__()
        if scale not in (2, 4):
            raise ValueError(f"scale must be 2 or 4, got {scale}")
        self.scale = scale
        self.spatial_dims = spatial_dims
        self.out_dim = dim // 2 if scale == 2 else dim
        self.expand = nn.Linear(dim, self.out_dim * scale**spatial_dims, bias=False)
        self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, x: Tensor) -> Tensor:
        p = self.scale
        if self.spatial_dims == 2:
            x = rearrange(self.expand(x), "b h w (p1 p2 c) -> b (h p1) (w p2) c", p1=p, p2=p)
        else:
            x = rearrange(self.expand(x), "b d h w (p0 p1 p2 c) -> b (d p0) (h p1) (w p2) c", p0=p, p1=p, p2=p)
        return self.norm(x)


class MambaDecoder(nn.Module):
    """Swin-UMamba†'s decoder: for each skip from the deepest up, expand_layers[s] -> concat the skip ->
    concat_back_dim[s] -> stages[s] (2 VSS blocks) -> seg_layers[s]; then the x4 expand and the last head."""

    def __init__(self, num_classes: int, dims: Sequence[int], deep_supervision: bool, drop_path_rate: float = 0.2,
                 d_state: int = 16, depth: int = 2, backend: str = "auto", spatial_dims: int = 2) -> None:
        super().__init__()
        self.deep_supervision = deep_supervision
        n = len(dims)
        dpr = drop_path_rates(drop_path_rate, (n - 1) * depth)[::-1]  # official: linspace(rate, 0, .)
        self.stages, self.expand_layers = nn.ModuleList(), nn.ModuleList()
        self.seg_layers, self.concat_back_dim = nn.ModuleList(), nn.ModuleList()
        for s in range(1, n):
            below, skip = dims[-s], dims[-(s + 1)]
            self.expand_layers.append(PatchExpand(below, 2, spatial_dims))
            self.stages.append(_vss_stage(dpr[(s - 1) * depth:s * depth], skip, nn.Identity(), d_state, backend,
                                          spatial_dims))
            self.seg_layers.append(_CONV[spatial_dims](skip, num_classes, 1))
            self.concat_back_dim.append(nn.Linear(2 * skip, skip))
        self.expand_layers.append(PatchExpand(dims[0], 4, spatial_dims))
        self.stages.append(nn.Identity())
        self.seg_layers.append(_CONV[spatial_dims](dims[0], num_classes, 1))

    def forward(self, skips: list[Tensor]) -> Tensor | list[Tensor]:
        x = skips[-1].movedim(1, -1)  # (B, *S, C)
        outs = []
        last = len(self.stages) - 1
        for s, stage in enumerate(self.stages):
            x = self.expand_layers[s](x)
            if s < last:
                x = self.concat_back_dim[s](torch.cat((x, skips[-(s + 2)].movedim(1, -1)), -1))
                x = stage.forward_blocks(x)
            if self.deep_supervision or s == last:
                outs.append(self.seg_layers[s](x.movedim(-1, 1)))
        return outs[::-1] if self.deep_supervision else outs[0]


class SwinUMambaD(_SegBase):
    """Swin-UMamba† (module docstring). x: (B, in_channels, *S), each size divisible by 32 -> logits
    (B, num_classes, *S), or with ``deep_supervision`` a list at S, S/4, S/8, S/16 (highest first)."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        spatial_dims: int = 2,
        dims: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (2, 2, 9, 2),
        d_state: int = 16,
        drop_path_rate: float = 0.2,
        decoder_drop_path_rate: float = 0.2,
        deep_supervision: bool = True,
        encoder_checkpoint: str | Path | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        _check_common(in_channels, num_classes, spatial_dims)
        self.in_channels = self.in_chans = in_channels
        self.num_classes = num_classes
        self.spatial_dims = spatial_dims
        self.deep_supervision = deep_supervision
        self.vssm_encoder = VSSMEncoder(in_channels, patch_size=4, dims=dims, depths=depths, d_state=d_state,
                                        drop_path_rate=drop_path_rate, backend=backend, spatial_dims=spatial_dims)
        self.decoder = MambaDecoder(num_classes, dims, deep_supervision, decoder_drop_path_rate, d_state,
                                    backend=backend, spatial_dims=spatial_dims)
        if encoder_checkpoint is not None:
            load_encoder_checkpoint(self, encoder_checkpoint)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        self._check_input(x)
        return self.decoder(self.vssm_encoder(x))


def _check_common(in_channels: int, num_classes: int, spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    for name, v in (("in_channels", in_channels), ("num_classes", num_classes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")


# -------------------------------------------------------------------------------------------------------
# checkpoints

_OFFICIAL_RENAMES = [  # official Swin-UMamba names -> ours
    (r"(vssm_encoder\.layers\.\d+\.blocks\.\d+\.|decoder\.stages\.\d+\.blocks\.\d+\.)ln_1\.", r"\1norm."),
    (r"(vssm_encoder\.layers\.\d+\.blocks\.\d+\.|decoder\.stages\.\d+\.blocks\.\d+\.)self_attention\.", r"\1op."),
    (r"vssm_encoder\.downsamples\.(\d+)\.", r"vssm_encoder.layers.\1.downsample."),
    (r"vssm_encoder\.patch_embed\.proj\.", "vssm_encoder.patch_embed.0."),
    (r"vssm_encoder\.patch_embed\.norm\.", "vssm_encoder.patch_embed.2."),
]


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """An official Swin-UMamba / Swin-UMamba† state dict (nnU-Net ``network_weights``) -> ours; our own
    names pass unchanged."""
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in _OFFICIAL_RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def load_encoder_checkpoint(model: SwinUMamba | SwinUMambaD, path: str | Path) -> list[str]:
    """Load a vanilla VMamba-T checkpoint (official ``model`` dict or ``mambaeye convert`` output) into the
    VSS stages and downsamples, as the official ``load_pretrained_ckpt``: the classifier is skipped, and so is
    the patch embed when its shape differs (always for Swin-UMamba, whose patch embed follows the stem).
    Returns the model keys loaded (also logged); a stage weight of the wrong shape raises ValueError."""
    if model.spatial_dims != 2:
        raise ValueError("encoder_checkpoint: VMamba's ImageNet weights are 2D and do not fit the 3D encoder")
    state_dict = load_checkpoint_file(path)
    if is_vmamba_state_dict(state_dict):  # official v0 names (old or new) or ours
        state_dict = vmamba_from_official(state_dict, "v0", strict=False)
    own = model.state_dict()
    loaded, skipped = {}, []
    for key, value in state_dict.items():
        target = f"vssm_encoder.{key}"
        if not key.startswith(("layers.", "patch_embed.")) or target not in own:
            skipped.append(key)
            continue
        if own[target].shape != value.shape:
            if key.startswith("patch_embed."):
                skipped.append(key)
                continue
            raise ValueError(f"{path}: {key} has shape {tuple(value.shape)}, the encoder {tuple(own[target].shape)}"
                             " (not a vanilla VMamba-T checkpoint?)")
        loaded[target] = value
    missing = [k for k in own if k.startswith("vssm_encoder.layers.") and k not in loaded]
    if missing:
        raise ValueError(f"{path}: no weights for {len(missing)} encoder tensors, e.g. {missing[:3]}")
    model.load_state_dict(loaded, strict=False)
    _logger.info("%s: loaded %d encoder tensors from %s; skipped %s", type(model).__name__, len(loaded), path,
                 ", ".join(skipped) or "nothing")
    return sorted(loaded)


# -------------------------------------------------------------------------------------------------------
# variants


def _create(cls: type, variant: str, pretrained: bool = False, num_classes: int = 2, in_chans: int = 1,
            features_only: bool = False, **kwargs) -> nn.Module:
    if pretrained:
        raise ValueError(f"{variant} has no released weights; pass checkpoint_path=... (a trained network) or "
                         "encoder_checkpoint=... (a vanilla VMamba-T checkpoint for the encoder)")
    if features_only:
        raise ValueError(f"{variant} is a segmentation network: features_only is not supported")
    kwargs.setdefault("in_channels", in_chans)
    return build_model(cls, variant, False, {}, checkpoint_filter_fn, num_classes=num_classes, **kwargs)


@register_model
def swin_umamba(pretrained: bool = False, **kwargs) -> SwinUMamba:
    """Swin-UMamba: stem + vanilla VMamba-T encoder + UNETR-style decoder; 59,889,368 params (1 -> 14 classes)."""
    return _create(SwinUMamba, "swin_umamba", pretrained, **kwargs)


@register_model
def swin_umamba_d(pretrained: bool = False, **kwargs) -> SwinUMambaD:
    """Swin-UMamba†: vanilla VMamba-T encoder (patch 4) + Mamba decoder; 27,497,720 params (1 -> 14 classes)."""
    return _create(SwinUMambaD, "swin_umamba_d", pretrained, **kwargs)
