"""Optional packages, imported when first used, with an error that says what to install."""

from __future__ import annotations

import importlib
from types import ModuleType

_HINTS = {
    "nibabel": "pip install nibabel (or pip install 'mambaeye[data]')",
    "PIL": "pip install pillow (or pip install 'mambaeye[data]')",
    "tifffile": "pip install tifffile (or pip install 'mambaeye[data]')",
}


def require(module: str, purpose: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{purpose} needs the {module} package: {_HINTS.get(module, 'pip install ' + module)}") from e
