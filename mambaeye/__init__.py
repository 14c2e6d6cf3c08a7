"""mambaeye: Mamba for vision (Vim, VMamba, U-Mamba, Swin-UMamba) on one selective-scan core."""

from __future__ import annotations

__version__ = "0.1.0"

from .models import create_model, list_models  # noqa: E402

__all__ = ["create_model", "list_models", "__version__"]
