"""Vision Mamba (Vim): hustvl/Vim ``vim/models_mamba.py``, the released "middle class token" models.

    image (B, 3, H, W) -> patch embed (conv p x p, stride s)     -> (B, N, C), N = H' W'
    insert the class token at position N // 2, add pos_embed   -> (B, N + 1, C)
    24 x [residual += drop_path(BiMamba(RMSNorm(residual)))]    residual kept in float32
    RMSNorm (norm_f) -> head on the class token                 -> (B, num_classes)

This is the official data path written as a plain pre-norm residual network: Vim's blocks compute
``residual = residual + drop_path(mixer_out)`` *before* their norm (to fuse the add into the norm kernel),
and the final add happens before ``norm_f``. Unrolled, mixer j's output is dropped with probability
linspace(0, drop_path_rate, depth)[j] in both forms, so block j here owns drop_path j.

Where the scan runs on Triton and the sequence is long, the tokens are padded once to a multiple of 8
(:func:`~mambaeye.layers.bimamba.aligned_length`) for all blocks and cut after the last: every mixer gets the
true length, so the padding changes no output (H100, Vim-Ti at 1248^2: 15% faster inference).

Any input whose size the stride tiles exactly ((H - patch) % stride == 0) runs: the position embedding,
stored for ``img_size``, is resampled (bicubic) to the input's grid at run time, with the class token's
embedding kept aside and re-inserted in the middle. Parameter names are the official ones, so released
checkpoints load unchanged; parameter counts equal the official models' exactly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from ..convert.vim import is_vim_state_dict, vim_from_official
from ..layers import BiMamba
from ..layers.bimamba import aligned_length
from ._builder import adapt_input_conv, build_model, fit_classifier
from ._features import resolve_indices
from ._helpers import DropPath, drop_path_rates, lecun_normal_, to_2tuple
from ._registry import register_model

__all__ = ["Vim", "VimBlock", "PatchEmbed", "resample_pos_embed", "checkpoint_filter_fn"]

_logger = logging.getLogger(__name__)

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)


class PatchEmbed(nn.Module):
    """Conv patchify with kernel ``patch_size`` and ``stride`` (overlapping patches when stride < patch):
    (B, in_chans, H, W) -> (B, H' W', C) and the grid (H', W'), H' = (H - patch) / stride + 1."""

    def __init__(self, img_size: int | tuple[int, int] = 224, patch_size: int = 16, stride: int = 16,
                 in_chans: int = 3, embed_dim: int = 192) -> None:
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size = patch_size
        self.stride = stride
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride)
        self.grid_size = self.dynamic_grid(*self.img_size)

    def dynamic_grid(self, height: int, width: int) -> tuple[int, int]:
        """The token grid for an input size; a ValueError when the stride does not tile it exactly."""
        p, s = self.patch_size, self.stride
        for name, size in (("height", height), ("width", width)):
            if size < p or (size - p) % s != 0:
                below, above = max(p, p + (size - p) // s * s), p + ((size - p) // s + 1) * s
                raise ValueError(f"input {name} {size} does not fit patch {p} / stride {s}: need size >= {p} and "
                                 f"(size - {p}) divisible by {s}, e.g. {below} or {above}")
        return ((height - p) // s + 1, (width - p) // s + 1)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        if x.dim() != 4 or x.shape[1] != self.proj.in_channels:
            raise ValueError(f"expected images (B, {self.proj.in_channels}, H, W), got {tuple(x.shape)}")
        grid = self.dynamic_grid(x.shape[2], x.shape[3])
        x = self.proj(x)  # (B, C, H', W')
        return x.flatten(2).transpose(1, 2), grid  # (B, N, C)


def resample_pos_embed(pos_embed: Tensor, old_grid: Sequence[int], new_grid: Sequence[int]) -> Tensor:
    """Resample a middle-class-token position embedding (1, N0 + 1, C) from ``old_grid`` to ``new_grid``.

    The class token's entry sits at index N0 // 2: it is taken out, the N0 patch entries are resized as a
    (C, H0, W0) image (bicubic, in float32), and it is put back at index N // 2 of the new sequence.
    """
    old_n, new_n = old_grid[0] * old_grid[1], new_grid[0] * new_grid[1]
    if pos_embed.shape[1] != old_n + 1:
        raise ValueError(f"pos_embed has {pos_embed.shape[1]} entries, expected {old_n} patches + 1 class token "
                         f"for grid {tuple(old_grid)}")
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    mid = old_n // 2
    cls = pos_embed[:, mid:mid + 1]
    patches = torch.cat((pos_embed[:, :mid], pos_embed[:, mid + 1:]), dim=1)  # (1, N0, C)
    dim = patches.shape[-1]
    patches = patches.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=tuple(new_grid), mode="bicubic", align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, new_n, dim).to(pos_embed.dtype)
    mid = new_n // 2
    return torch.cat((patches[:, :mid], cls, patches[:, mid:]), dim=1)


class VimBlock(nn.Module):
    """residual (B, L, C) -> residual + drop_path(mixer(RMSNorm(residual))); the residual stays float32."""

    def __init__(self, dim: int, drop_path: float = 0.0, norm_eps: float = 1e-5, **mixer_kwargs) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(dim, eps=norm_eps)
        self.mixer = BiMamba(dim, **mixer_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, residual: Tensor, length: int | None = None) -> Tensor:
        """``length``: the true length of a padded sequence (see :meth:`BiMamba.forward`)."""
        hidden = self.mixer(self.norm(residual.to(self.norm.weight.dtype)), length)
        return residual + self.drop_path(hidden).to(residual.dtype)


class Vim(nn.Module):
    """Vision Mamba with a middle class token (the released Vim-Ti/S/B and their stride-8 "+" versions).

    Args (official defaults where they matter): ``embed_dim``, ``depth`` (24), ``patch_size`` (16),
    ``stride`` (16; 8 for "+"), ``d_state`` (16), ``d_conv`` (4), ``expand`` (2), ``dt_rank`` ("auto" =
    ceil(embed_dim / 16)), ``norm_eps`` (1e-5), ``divide_out`` (True: average the two directions),
    ``drop_path_rate`` (Vim-S was trained with 0.05; 0 here by default), ``pos_drop_rate`` (dropout after the
    position embedding, Vim's ``drop_rate``), ``drop_rate`` (dropout before the head, timm's meaning),
    ``global_pool`` ("token": the class token, as Vim; "avg": mean over all tokens), ``backend`` (the
    selective-scan backend of every mixer).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        stride: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 192,
        depth: int = 24,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
        dt_rank: int | str = "auto",
        norm_eps: float = 1e-5,
        divide_out: bool = True,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "token",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.in_chans = in_chans
        self.num_prefix_tokens = 1
        self.grad_checkpointing = False
        self.backend = backend

        self.patch_embed = PatchEmbed(img_size, patch_size, stride, in_chans, embed_dim)
        self.img_size = self.patch_embed.img_size
        num_patches = self.patch_embed.grid_size[0] * self.patch_embed.grid_size[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(pos_drop_rate) if pos_drop_rate > 0 else nn.Identity()

        dpr = drop_path_rates(drop_path_rate, depth)
        mixer = dict(d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank, divide_out=divide_out,
                     backend=backend)
        self.layers = nn.ModuleList(VimBlock(embed_dim, dpr[i], norm_eps, **mixer) for i in range(depth))
        self.norm_f = nn.RMSNorm(embed_dim, eps=norm_eps)
        self.head_drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [dict(num_chs=embed_dim, reduction=stride, module=f"layers.{i}") for i in range(depth)]
        self.init_weights()

    def init_weights(self) -> None:
        """Vim's initialisation: lecun-normal patch conv, trunc-normal(0.02) cls token, pos_embed and head,
        zero Linear biases (except those tagged ``_no_reinit``: dt_proj.bias), out_proj re-drawn
        kaiming-uniform(a=sqrt 5) / sqrt(depth). The mixers keep their own (official) init otherwise."""
        lecun_normal_(self.patch_embed.proj.weight)
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if isinstance(self.head, nn.Linear):
            nn.init.trunc_normal_(self.head.weight, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear) and m.bias is not None and not getattr(m.bias, "_no_reinit", False):
                nn.init.zeros_(m.bias)
        for block in self.layers:
            weight = block.mixer.out_proj.weight
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            with torch.no_grad():
                weight.div_(math.sqrt(len(self.layers)))

    # ---------------------------------------------------------------------------------------------------
    # timm contract

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^cls_token|^pos_embed|^patch_embed",
                    blocks=[(r"^layers\.(\d+)", None), (r"^norm_f", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool not in ("token", "avg"):
                raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    # ---------------------------------------------------------------------------------------------------
    # forward

    def _embed(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """images -> (B, N + 1, C) tokens with the class token at N // 2 and position embedding added."""
        x, grid = self.patch_embed(x)  # (B, N, C)
        mid = x.shape[1] // 2
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat((x[:, :mid], cls, x[:, mid:]), dim=1)
        pos_embed = resample_pos_embed(self.pos_embed, self.patch_embed.grid_size, grid)
        return self.pos_drop(x + pos_embed.to(x.dtype)), grid

    def _pad_tokens(self, residual: Tensor) -> Tensor:
        """(B, L, C) -> (B, L', C) with L' = aligned_length(L): zeros appended where that is longer."""
        length = residual.shape[1]
        padding = aligned_length(length, self.backend, residual) - length
        return F.pad(residual, (0, 0, 0, padding)) if padding else residual

    def _run_block(self, block: VimBlock, residual: Tensor, length: int) -> Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return torch.utils.checkpoint.checkpoint(block, residual, length, use_reentrant=False)
        return block(residual, length)

    def _final_norm(self, residual: Tensor) -> Tensor:
        if isinstance(self.norm_f, nn.RMSNorm):
            return self.norm_f(residual.to(self.norm_f.weight.dtype))
        return self.norm_f(residual)

    def forward_features(self, x: Tensor) -> Tensor:
        """images (B, in_chans, H, W) -> normalised tokens (B, N + 1, C), class token at index N // 2."""
        residual, _ = self._embed(x)
        length = residual.shape[1]
        residual = self._pad_tokens(residual.float())
        for block in self.layers:
            residual = self._run_block(block, residual, length)
        return self._final_norm(residual[:, :length])

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """tokens (B, N + 1, C) -> logits (B, num_classes), or the pooled (B, C) with ``pre_logits``."""
        x = x[:, (x.shape[1] - 1) // 2] if self.global_pool == "token" else x.mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

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
        """Block outputs (the residual stream after block i, class token removed) at ``indices`` (default:
        the last of every quarter, e.g. 5, 11, 17, 23; an int n: the last n blocks), as (B, C, H', W')
        (``output_fmt="NCHW"``) or (B, H' W', C) ("NLC"). ``norm`` applies norm_f to them. Returns the maps,
        or (final tokens as forward_features gives them, maps)."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        depth = len(self.layers)
        take = resolve_indices(indices, depth, [depth * (q + 1) // 4 - 1 for q in range(4)] if depth >= 4
                               else range(depth))
        residual, (gh, gw) = self._embed(x)
        length = residual.shape[1]
        residual = self._pad_tokens(residual.float())
        mid = (length - 1) // 2
        last = max(take) + 1 if (stop_early or intermediates_only) else depth
        maps = []
        for i, block in enumerate(self.layers[:last]):
            residual = self._run_block(block, residual, length)
            if i in take:
                y = residual[:, :length]
                y = self._final_norm(y) if norm else y
                y = torch.cat((y[:, :mid], y[:, mid + 1:]), dim=1)  # (B, N, C) without the class token
                if output_fmt == "NCHW":
                    y = y.reshape(y.shape[0], gh, gw, -1).permute(0, 3, 1, 2).contiguous()
                maps.append(y)
        if intermediates_only:
            return maps
        return self._final_norm(residual[:, :length]), maps

    def prune_intermediate_layers(self, indices: int | Sequence[int] | None = None, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the blocks after the last of ``indices`` (and norm_f / the head); returns the kept indices."""
        depth = len(self.layers)
        take = resolve_indices(indices, depth, [depth * (q + 1) // 4 - 1 for q in range(4)] if depth >= 4
                               else range(depth))
        self.layers = self.layers[:max(take) + 1]
        if prune_norm:
            self.norm_f = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take


# -------------------------------------------------------------------------------------------------------
# checkpoints


def checkpoint_filter_fn(state_dict: dict[str, Tensor], model: Vim) -> dict[str, Tensor]:
    """An official (``vim_*_midclstok_*.pth``) or converted state dict -> one that loads into ``model``:
    the position embedding is resampled to the model's grid, the head re-initialised when its size differs
    (or dropped for num_classes=0), and an RGB patch conv summed / tiled for other ``in_chans``."""
    if is_vim_state_dict(state_dict):
        state_dict = vim_from_official(state_dict)
    state_dict = dict(state_dict)
    own = model.state_dict()

    pos = state_dict.get("pos_embed")
    if pos is not None and pos.shape != own["pos_embed"].shape:
        tokens = pos.shape[1] - 1
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise ValueError(f"pos_embed with {tokens} patch entries is not a square grid; cannot resample it")
        state_dict["pos_embed"] = resample_pos_embed(pos, (side, side), model.patch_embed.grid_size)
        _logger.info("Vim: position embedding resampled from grid %dx%d to %dx%d", side, side,
                     *model.patch_embed.grid_size)

    proj = state_dict.get("patch_embed.proj.weight")
    want = own["patch_embed.proj.weight"]
    if proj is not None and proj.shape[1] != want.shape[1] and proj.shape[0] == want.shape[0]:
        state_dict["patch_embed.proj.weight"] = adapt_input_conv(want.shape[1], proj)
        _logger.info("Vim: patch conv adapted from %d to %d input channels", proj.shape[1], want.shape[1])

    fit_classifier(state_dict, own, ("head.weight", "head.bias"), "Vim")
    return state_dict


# -------------------------------------------------------------------------------------------------------
# variants


def _cfg(origin: str, file: str, **kwargs) -> dict:
    return dict(
        input_size=(3, 224, 224), mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, crop_pct=0.875,
        interpolation="bicubic", num_classes=1000, first_conv="patch_embed.proj", classifier="head",
        license="apache-2.0", paper_ids="arXiv:2401.09417", paper_name="Vision Mamba",
        origin_url=origin, notes=(f"official weights: {file} ({origin})",), **kwargs,
    )


_HF = "https://huggingface.co/hustvl/Vim-{}-midclstok"
_RELEASES = {
    "vim_tiny": ("vim_t_midclstok_76p1acc.pth", _HF.format("tiny")),
    "vim_tiny_s8": ("vim_t_midclstok_ft_78p3acc.pth", _HF.format("tiny")),
    "vim_small": ("vim_s_midclstok_80p5acc.pth", _HF.format("small")),
    "vim_small_s8": ("vim_s_midclstok_ft_81p6acc.pth", _HF.format("small")),
    "vim_base": ("vim_b_midclstok_81p9acc.pth", _HF.format("base")),
}

default_cfgs = {name: _cfg(origin, file) for name, (file, origin) in _RELEASES.items()}


def _create_vim(variant: str, pretrained: bool = False, **kwargs) -> Vim:
    model_args = dict(img_size=224, patch_size=16, depth=24)
    return build_model(Vim, variant, pretrained, model_args, checkpoint_filter_fn, release=_RELEASES[variant],
                       **kwargs)


@register_model
def vim_tiny(pretrained: bool = False, **kwargs) -> Vim:
    """Vim-Ti: embed 192, depth 24, patch 16, stride 16; 7,148,008 parameters; 76.1% top-1."""
    return _create_vim("vim_tiny", pretrained, **{"embed_dim": 192, "stride": 16, **kwargs})


@register_model
def vim_tiny_s8(pretrained: bool = False, **kwargs) -> Vim:
    """Vim-Ti+: Vim-Ti fine-tuned with stride 8 (27x27 tokens at 224); 7,250,344 parameters; 78.3% top-1."""
    return _create_vim("vim_tiny_s8", pretrained, **{"embed_dim": 192, "stride": 8, **kwargs})


@register_model
def vim_small(pretrained: bool = False, **kwargs) -> Vim:
    """Vim-S: embed 384, depth 24, patch 16, stride 16; 25,796,584 parameters; 80.5% top-1."""
    return _create_vim("vim_small", pretrained, **{"embed_dim": 384, "stride": 16, **kwargs})


@register_model
def vim_small_s8(pretrained: bool = False, **kwargs) -> Vim:
    """Vim-S+: Vim-S fine-tuned with stride 8; 26,001,256 parameters; 81.6% top-1."""
    return _create_vim("vim_small_s8", pretrained, **{"embed_dim": 384, "stride": 8, **kwargs})


@register_model
def vim_base(pretrained: bool = False, **kwargs) -> Vim:
    """Vim-B: embed 768, depth 24, patch 16, stride 16; 97,598,440 parameters; 81.9% top-1."""
    return _create_vim("vim_base", pretrained, **{"embed_dim": 768, "stride": 16, **kwargs})
