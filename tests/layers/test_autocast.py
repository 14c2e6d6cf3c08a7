"""Layers under bf16 autocast on CPU: the projections and the conv may leave u, delta, B, C and z in mixed dtypes;
the layers hand the scan one dtype (found by the training loop: 'delta must have u's dtype')."""

from __future__ import annotations

import torch

from mambaeye.layers import SS2D, BiMamba, Mamba


def _step(layer, x):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    y.float().square().mean().backward()
    assert torch.isfinite(y.float()).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters() if p.requires_grad)


def test_mamba_and_bimamba_under_bf16_autocast():
    for cls in (Mamba, BiMamba):
        _step(cls(16, d_state=4, backend="torch"), torch.randn(2, 9, 16))


def test_ss2d_v2_and_v0_under_bf16_autocast():
    _step(SS2D(16, d_state=1, channel_first=True, backend="torch"), torch.randn(2, 16, 5, 7))
    _step(SS2D(16, d_state=4, ssm_ratio=2.0, conv_bias=True, with_z=True, force_fp32=True, backend="torch"),
          torch.randn(2, 5, 7, 16))
