"""Small pieces shared by the model families: stochastic depth and initialisers."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["DropPath", "drop_path", "drop_path_rates", "lecun_normal_", "to_2tuple"]


def drop_path(x: Tensor, drop_prob: float = 0.0, training: bool = False) -> Tensor:
    """Stochastic depth per sample: zero the whole residual branch of a sample with probability ``drop_prob``
    and scale the kept ones by 1 / (1 - drop_prob). The mask is (B, 1, ..., 1), in x's dtype."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


def lecun_normal_(weight: Tensor) -> Tensor:
    """LeCun normal as timm / JAX define it: truncated normal at +-2 std, std = sqrt(1 / fan_in) / 0.8796
    (0.8796 is the std of a unit normal truncated at +-2, so the result has variance 1 / fan_in)."""
    fan_in = weight.shape[1] * math.prod(weight.shape[2:])
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    with torch.no_grad():
        return nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def to_2tuple(x: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(x, int):
        return (x, x)
    if len(x) != 2:
        raise ValueError(f"expected an int or a pair, got {x!r}")
    return (int(x[0]), int(x[1]))


def drop_path_rates(drop_path_rate: float, num: int) -> list[float]:
    """linspace(0, drop_path_rate, num) as Python floats (torch.linspace would fail under a meta device)."""
    if num == 1:
        return [0.0]
    return [drop_path_rate * i / (num - 1) for i in range(num)]
