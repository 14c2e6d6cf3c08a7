"""Classification backbones (Vim, VMamba) and segmentation networks (U-Mamba, Swin-UMamba), registered by name
(``create_model("vmamba_tiny")``)."""

from __future__ import annotations

from . import baselines, swin_umamba, umamba, vim, vmamba  # noqa: F401  (registers the variants)
from ._builder import checkpoint_dir, load_pretrained
from ._features import FeatureGetterNet, FeatureInfo
from ._profile import ModelProfile, StageProfile, count_flops, profile
from ._registry import _install_timm_hook, create_model, get_default_cfg, is_model, list_models, register_model
from .swin_umamba import SwinUMamba, SwinUMambaD
from .umamba import UMamba
from .vim import Vim
from .vmamba import VSSM

__all__ = [
    "create_model",
    "list_models",
    "is_model",
    "register_model",
    "get_default_cfg",
    "checkpoint_dir",
    "load_pretrained",
    "profile",
    "count_flops",
    "ModelProfile",
    "StageProfile",
    "FeatureGetterNet",
    "FeatureInfo",
    "SwinUMamba",
    "SwinUMambaD",
    "UMamba",
    "Vim",
    "VSSM",
]

_install_timm_hook()
