"""Shared test settings: published numbers, and reduced-depth versions of every variant for fast CPU runs."""

from __future__ import annotations

# exact parameter counts of the official models (1000 classes), from ARCHITECTURES.md / issue 4
OFFICIAL_PARAMS = {
    "vim_tiny": 7_148_008,
    "vim_tiny_s8": 7_250_344,
    "vim_small": 25_796_584,
    "vim_small_s8": 26_001_256,
    "vim_base": 97_598_440,
    "vmamba_tiny": 30_249_064,
    "vmamba_small": 50_147_752,
    "vmamba_base": 88_557_800,
    "vmamba_tiny_v0": 22_893_448,
    "vmamba_small_v0": 44_417_416,
    "vmamba_base_v0": 76_254_056,
}

# published FLOPs at 224 (VMamba paper / README), in G
PUBLISHED_GFLOPS = {
    "vmamba_tiny": 4.9,
    "vmamba_small": 8.7,
    "vmamba_base": 15.4,
    "vmamba_tiny_v0": 5.6,
    "vmamba_small_v0": 11.2,
    "vmamba_base_v0": 18.0,
}

VIM = [n for n in OFFICIAL_PARAMS if n.startswith("vim")]
VMAMBA = [n for n in OFFICIAL_PARAMS if n.startswith("vmamba")]


def small(name: str, **kwargs) -> dict:
    """create_model kwargs that keep the variant's widths but cut its depth (and its native input size)."""
    if name.startswith("vim"):
        return {"depth": 2, "img_size": 32, "num_classes": 7, **kwargs}
    return {"depths": (1, 1, 1, 1), "num_classes": 7, **kwargs}
