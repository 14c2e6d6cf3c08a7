"""Segmentation metrics on integer label maps (B, *spatial), per class: Dice (DSC) and normalized surface Dice
(NSD, tolerance in mm, honouring spacing). Both score a class absent from prediction and truth as ``empty_value``
(1.0 by default) and a class present in only one of them as 0."""

from __future__ import annotations

from .dice import dice
from .surface_dice import normalized_surface_dice

__all__ = ["dice", "normalized_surface_dice"]
