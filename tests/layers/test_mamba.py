"""Mamba-1 mixer: official names, shapes, counts and init; numerics against a step-by-step re-implementation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mambaeye.layers import Mamba

BACKEND = "naive"  # the only selective-scan backend available to these tests for now


def _shapes(module):
    return {name: tuple(p.shape) for name, p in module.named_parameters()}


def test_parameter_names_and_shapes_match_official():
    # state-spaces/mamba Mamba(d_model=192): d_inner 384, dt_rank ceil(192/16) = 12, d_state 16, d_conv 4
    assert _shapes(Mamba(192, backend=BACKEND)) == {
        "in_proj.weight": (768, 192),
        "conv1d.weight": (384, 1, 4),
        "conv1d.bias": (384,),
        "x_proj.weight": (12 + 2 * 16, 384),
        "dt_proj.weight": (384, 12),
        "dt_proj.bias": (384,),
        "A_log": (384, 16),
        "D": (384,),
        "out_proj.weight": (192, 384),
    }


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        # in_proj + conv (w + b) + x_proj + dt_proj (w + b) + A_log + D + out_proj
        (dict(d_model=192), 192 * 768 + (384 * 4 + 384) + 384 * 44 + (12 * 384 + 384) + 384 * 16 + 384 + 384 * 192),
        # U-Mamba bottleneck, 2D: C = 512 -> d_inner 1024, dt_rank 32
        (dict(d_model=512), 512 * 2048 + (1024 * 4 + 1024) + 1024 * 64 + (32 * 1024 + 1024) + 1024 * 16 + 1024
         + 1024 * 512),
        (dict(d_model=20, d_state=4, d_conv=3, expand=1.5, dt_rank=3, conv_bias=False, bias=True),
         (20 * 60 + 60) + 30 * 3 + 30 * 11 + (3 * 30 + 30) + 30 * 4 + 30 + (30 * 20 + 20)),
    ],
    ids=["vim_ti_width", "umamba_512", "custom"],
)
def test_exact_parameter_counts(kwargs, expected):
    assert sum(p.numel() for p in Mamba(**kwargs, backend=BACKEND).parameters()) == expected


def test_official_initialisation():
    torch.manual_seed(0)
    m = Mamba(192, backend=BACKEND)
    assert m.A_log.dtype == m.D.dtype == m.dt_proj.bias.dtype == torch.float32
    torch.testing.assert_close(m.A_log, torch.log(torch.arange(1, 17.0)).expand(384, 16), rtol=0, atol=0)
    assert torch.equal(m.D, torch.ones(384))
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    assert abs(dt.log().mean().item() - math.log(1e-2)) < 0.3  # log-uniform on [1e-3, 1e-1]
    bound = 12**-0.5
    assert m.dt_proj.weight.abs().max() <= bound and m.dt_proj.weight.abs().max() > 0.9 * bound
    for p in (m.A_log, m.D, m.dt_proj.bias):
        assert p._no_weight_decay is True
    assert m.dt_proj.bias._no_reinit is True
    assert not hasattr(m.in_proj.weight, "_no_weight_decay")


def test_constant_dt_init_and_reset():
    m = Mamba(32, dt_init="constant", dt_scale=2.0, backend=BACKEND)
    assert torch.equal(m.dt_proj.weight, torch.full((64, 2), 2.0 * 2**-0.5))
    with torch.no_grad():
        m.A_log.zero_()
    m.reset_parameters()
    torch.testing.assert_close(m.A_log[0], torch.log(torch.arange(1, 17.0)))


def test_low_precision_factory_keeps_ssm_parameters_fp32():
    m = Mamba(16, dtype=torch.bfloat16, backend=BACKEND)
    assert m.in_proj.weight.dtype == m.x_proj.weight.dtype == torch.bfloat16
    assert m.A_log.dtype == m.D.dtype == m.dt_proj.bias.dtype == torch.float32


def reference_mamba(m: Mamba, h: torch.Tensor) -> torch.Tensor:
    """Mamba written out step by step: h (B, L, C) -> (B, L, C)."""
    batch, length, _ = h.shape
    di, n, r, k = m.d_inner, m.d_state, m.dt_rank, m.d_conv
    xz = h @ m.in_proj.weight.T
    x, z = xz[..., :di], xz[..., di:]  # (B, L, Di)
    taps = m.conv1d.weight[:, 0]  # (Di, K): out[t] = b + sum_j taps[j] * x[t - (K - 1) + j]
    conv = m.conv1d.bias.expand(batch, length, di).clone()
    for j in range(k):
        shift = k - 1 - j
        if shift < length:
            conv[:, shift:] = conv[:, shift:] + taps[:, j] * x[:, : length - shift]
    x = conv * torch.sigmoid(conv)
    dbl = x @ m.x_proj.weight.T
    dt, b_in, c_in = dbl[..., :r], dbl[..., r:r + n], dbl[..., r + n:]
    delta = F.softplus(dt @ m.dt_proj.weight.T + m.dt_proj.bias)  # (B, L, Di)
    a = -torch.exp(m.A_log)  # (Di, N)
    state = h.new_zeros(batch, di, n)
    ys = []
    for t in range(length):
        d_t = delta[:, t, :, None]
        state = torch.exp(d_t * a) * state + d_t * b_in[:, t, None, :] * x[:, t, :, None]
        y = (state * c_in[:, t, None, :]).sum(-1) + m.D * x[:, t]
        ys.append(y * F.silu(z[:, t]))
    return torch.stack(ys, dim=1) @ m.out_proj.weight.T


@pytest.mark.parametrize("length", [1, 3, 13, 31], ids=lambda v: f"L{v}")
def test_forward_and_gradients_match_step_by_step_reference(length):
    torch.manual_seed(length)
    m = Mamba(12, d_state=5, d_conv=4, dt_rank=3, backend=BACKEND).double()
    h = torch.randn(2, length, 12, dtype=torch.float64, requires_grad=True)
    out = m(h)
    ref = reference_mamba(m, h)
    assert out.shape == (2, length, 12)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    params = [h, *m.parameters()]
    g_out = torch.randn_like(out)
    got = torch.autograd.grad((out * g_out).sum(), params)
    want = torch.autograd.grad((ref * g_out).sum(), params)
    names = ["input", *(n for n, _ in m.named_parameters())]
    for name, g, w in zip(names, got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11, msg=name)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    m = Mamba(16, d_state=4, backend=BACKEND)
    m(torch.randn(2, 9, 16)).square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_is_causal():
    torch.manual_seed(0)
    m = Mamba(8, d_state=4, backend=BACKEND).double()
    h = torch.randn(1, 10, 8, dtype=torch.float64)
    h2 = h.clone()
    h2[:, 6:] = torch.randn(1, 4, 8, dtype=torch.float64)
    a, b = m(h), m(h2)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=1e-13)
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-3


@pytest.mark.parametrize(
    "kwargs",
    [dict(d_model=0), dict(d_model=8, d_state=0), dict(d_model=8, dt_rank=0), dict(d_model=8, dt_rank="x"),
     dict(d_model=8, dt_min=0.2), dict(d_model=8, dt_init="normal"), dict(d_model=8, backend="cuda"),
     dict(d_model=8, d_conv=0), dict(d_model=8, expand=0), dict(d_model=8, dt_scale=0.0)],
    ids=["d_model", "d_state", "dt_rank0", "dt_rank_str", "dt_range", "dt_init", "backend", "d_conv", "expand",
         "dt_scale"],
)
def test_constructor_argument_errors(kwargs):
    with pytest.raises(ValueError):
        Mamba(**kwargs)


def test_forward_shape_errors():
    m = Mamba(8, backend=BACKEND)
    with pytest.raises(ValueError, match="d_model=8"):
        m(torch.randn(2, 5, 7))
    with pytest.raises(ValueError):
        m(torch.randn(5, 8))
