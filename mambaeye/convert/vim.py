"""Vim (hustvl/Vim ``vim/models_mamba.py``) checkpoints <-> mambaeye's :class:`~mambaeye.models.vim.Vim`.

mambaeye keeps Vim's parameter names, so the table maps every official name to itself; it still lists each
name explicitly, so anything else in a file (a distillation head, RoPE buffers, a double class token) is
reported as unused instead of being loaded silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from torch import Tensor

from ._table import KeyTable

__all__ = ["VIM_KEY_TABLE", "is_vim_state_dict", "vim_from_official", "vim_to_official", "describe_vim"]

_MIXER = (
    r"in_proj\.weight|conv1d\.weight|conv1d\.bias|x_proj\.weight|dt_proj\.weight|dt_proj\.bias|A_log|D|"
    r"conv1d_b\.weight|conv1d_b\.bias|x_proj_b\.weight|dt_proj_b\.weight|dt_proj_b\.bias|A_b_log|D_b|out_proj\.weight"
)

VIM_KEY_TABLE = KeyTable("Vim", [
    (r"patch_embed\.proj\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"cls_token", "cls_token"),
    (r"pos_embed", "pos_embed"),
    (r"layers\.(\d+)\.norm\.weight", r"layers.\1.norm.weight"),
    (rf"layers\.(\d+)\.mixer\.({_MIXER})", r"layers.\1.mixer.\2"),
    (r"norm_f\.weight", "norm_f.weight"),
    (r"head\.(weight|bias)", r"head.\1"),
])


def is_vim_state_dict(state_dict: Mapping[str, Tensor]) -> bool:
    return "norm_f.weight" in state_dict or any(k.endswith("mixer.A_b_log") for k in state_dict)


def vim_from_official(state_dict: Mapping[str, Tensor], strict: bool = True) -> dict[str, Tensor]:
    """Official Vim state dict (``ckpt["model"]``) -> mambaeye Vim state dict. ``strict``: unmapped keys raise
    :class:`~mambaeye.convert.UnmappedKeysError`; otherwise they are dropped."""
    return VIM_KEY_TABLE.apply(state_dict, strict=strict)[0]


def vim_to_official(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse: mambaeye Vim state dict -> the official layout (the names coincide)."""
    return {k: v for k, v in state_dict.items()}


def describe_vim(state_dict: Mapping[str, Tensor], img_size: int = 224) -> dict:
    """Architecture facts read from the shapes: embed_dim, depth, patch_size, stride (assuming square
    ``img_size`` inputs, 224 for every released model), num_classes."""
    proj = state_dict["patch_embed.proj.weight"]  # (C, in_chans, p, p)
    embed_dim, in_chans, patch = proj.shape[0], proj.shape[1], proj.shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("layers."))
    tokens = state_dict["pos_embed"].shape[1] - 1
    grid = math.isqrt(tokens)
    stride = (img_size - patch) // (grid - 1) if grid > 1 else patch
    head = state_dict.get("head.weight")
    return dict(embed_dim=embed_dim, depth=depth, patch_size=patch, stride=stride, in_chans=in_chans,
                grid=grid, num_classes=0 if head is None else head.shape[0])
