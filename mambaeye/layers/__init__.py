"""Token mixers (nn.Modules) built on :mod:`mambaeye.ops`: Mamba, Vim's bidirectional Mamba, VMamba's SS2D."""

from __future__ import annotations

from .bimamba import BiMamba
from .mamba import Mamba
from .ss2d import SS2D, SS3D

__all__ = ["Mamba", "BiMamba", "SS2D", "SS3D"]
