"""``features_only`` backbones: feature-map lists for dense prediction, described by a timm-like FeatureInfo."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

__all__ = ["FeatureInfo", "FeatureGetterNet", "resolve_indices"]


def resolve_indices(indices: int | Sequence[int] | None, num: int, default: Sequence[int]) -> list[int]:
    """timm's convention: None -> ``default``; an int n -> the last n; a sequence -> those (negative from the end)."""
    if indices is None:
        indices = list(default)
    elif isinstance(indices, int):
        if not 1 <= indices <= num:
            raise ValueError(f"asked for the last {indices} feature levels, but there are {num}")
        indices = list(range(num - indices, num))
    out = []
    for i in indices:
        j = i + num if i < 0 else i
        if not 0 <= j < num:
            raise ValueError(f"feature index {i} out of range for {num} levels")
        out.append(j)
    if sorted(set(out)) != out:
        raise ValueError(f"feature indices must be increasing and distinct, got {list(indices)}")
    return out


class FeatureInfo:
    """Per feature level: ``num_chs`` (channels), ``reduction`` (stride w.r.t. the input), ``module`` (name)."""

    def __init__(self, info: list[dict[str, Any]]) -> None:
        self.info = [dict(d) for d in info]

    def _get(self, key: str, idx: int | Sequence[int] | None):
        if idx is None:
            return [d[key] for d in self.info]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def channels(self, idx: int | Sequence[int] | None = None):
        return self._get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None):
        return self._get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None):
        return self._get("module", idx)

    def get_dicts(self) -> list[dict[str, Any]]:
        return [dict(d) for d in self.info]

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.info[idx]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo({self.info})"


class FeatureGetterNet(nn.Module):
    """Wraps a model that has ``forward_intermediates``: ``forward(x)`` returns the list of (B, C, H', W')
    maps at ``out_indices``; layers after the last of them (and the head) are pruned, so every remaining
    parameter takes part in the output."""

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] | None = None) -> None:
        super().__init__()
        self.out_indices = model.prune_intermediate_layers(out_indices, prune_norm=True, prune_head=True)
        self.model = model
        self.feature_info = FeatureInfo([model.feature_info[i] for i in self.out_indices])
        self.pretrained_cfg = self.default_cfg = getattr(model, "pretrained_cfg", {})

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.model.forward_intermediates(x, indices=self.out_indices, intermediates_only=True)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)
