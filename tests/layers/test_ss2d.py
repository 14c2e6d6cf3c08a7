"""SS2D / SS3D: official names, shapes, counts and init; numerics against VMamba's forward written out."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mambaeye.layers import SS2D, SS3D
from mambaeye.ops.selective_scan import selective_scan_naive

BACKEND = "naive"
V0 = dict(d_state=16, ssm_ratio=2.0, d_conv=3, conv_bias=True, with_z=True)  # vanilla VMamba / Swin-UMamba


def _shapes(module):
    return {name: tuple(p.shape) for name, p in module.named_parameters()}


def _count(module):
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------------------
# names, shapes, counts


def test_v2_parameter_names_and_shapes_match_official():
    # VMamba-T stage 1 "v05_noz": C 96, d_inner 96, dt_rank 6, d_state 1, conv 3x3 without bias
    assert _shapes(SS2D(96, channel_first=True, backend=BACKEND)) == {
        "in_proj.weight": (96, 96),
        "conv2d.weight": (96, 1, 3, 3),
        "x_proj_weight": (4, 6 + 2 * 1, 96),
        "dt_projs_weight": (4, 96, 6),
        "dt_projs_bias": (4, 96),
        "A_logs": (4 * 96, 1),
        "Ds": (4 * 96,),
        "out_norm.weight": (96,),
        "out_norm.bias": (96,),
        "out_proj.weight": (96, 96),
    }


def test_v0_parameter_names_and_shapes_match_official():
    # vanilla VMamba-T stage 1 (v0): d_inner 192, d_state 16, z gate, conv with bias
    assert _shapes(SS2D(96, **V0, backend=BACKEND)) == {
        "in_proj.weight": (384, 96),
        "conv2d.weight": (192, 1, 3, 3),
        "conv2d.bias": (192,),
        "x_proj_weight": (4, 6 + 2 * 16, 192),
        "dt_projs_weight": (4, 192, 6),
        "dt_projs_bias": (4, 192),
        "A_logs": (768, 16),
        "Ds": (768,),
        "out_norm.weight": (192,),
        "out_norm.bias": (192,),
        "out_proj.weight": (96, 192),
    }


def test_vmamba_tiny_v2_block_count_by_hand():
    # C = Di = 96, R = ceil(96 / 16) = 6, N = 1, K = 4, conv 3x3 depthwise without bias, no z
    in_proj = 96 * 96
    conv2d = 96 * 3 * 3
    x_proj_weight = 4 * (6 + 2 * 1) * 96
    dt_projs = 4 * 96 * 6 + 4 * 96
    a_logs_ds = 4 * 96 * 1 + 4 * 96
    out_norm = 2 * 96
    out_proj = 96 * 96
    expected = in_proj + conv2d + x_proj_weight + dt_projs + a_logs_ds + out_norm + out_proj
    assert expected == 26_016
    m = SS2D(96, d_state=1, ssm_ratio=1.0, dt_rank="auto", d_conv=3, conv_bias=False, directions=4, backend=BACKEND)
    assert _count(m) == expected


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        # v0 stage 1: in_proj 96 -> 2 * 192, conv + bias, K (6 + 32) Di, K Di R + K Di, K Di N + K Di, LN, out
        (dict(d_model=96, **V0), 96 * 384 + (192 * 9 + 192) + 4 * 38 * 192 + (4 * 192 * 6 + 768) + (768 * 16 + 768)
         + 2 * 192 + 192 * 96),
        # 2 directions halve the per-direction parameters
        (dict(d_model=32, directions=2), 32 * 32 + 32 * 9 + 2 * 4 * 32 + (2 * 32 * 2 + 64) + (64 + 64) + 64 + 32 * 32),
        (dict(d_model=32, directions=1, d_conv=1), 32 * 32 + 4 * 32 + (32 * 2 + 32) + (32 + 32) + 64 + 32 * 32),
        # 3D, 6 directions, conv 3x3x3
        (dict(d_model=32, spatial_dims=3), 32 * 32 + 32 * 27 + 6 * 4 * 32 + (6 * 32 * 2 + 192) + (192 + 192) + 64
         + 32 * 32),
    ],
    ids=["v0_stage1", "K2", "K1_noconv", "3d"],
)
def test_exact_parameter_counts(kwargs, expected):
    assert _count(SS2D(**kwargs, backend=BACKEND)) == expected


def _vmamba_total(dims, depths, ss2d_kwargs, v2):
    """An official VSSM's parameter count: our SS2D for the mixers, the other parts by their formulas."""
    total = 0
    if v2:  # stem conv3x3 s2 (3 -> C/2) + LN, GELU, conv3x3 s2 (C/2 -> C) + LN
        half = dims[0] // 2
        total += (3 * half * 9 + half) + 2 * half + (half * dims[0] * 9 + dims[0]) + 2 * dims[0]
    else:  # conv 4x4 s4 + LN
        total += 3 * dims[0] * 16 + dims[0] + 2 * dims[0]
    for i, (c, depth) in enumerate(zip(dims, depths, strict=True)):
        mixer = _count(SS2D(c, **ss2d_kwargs, backend=BACKEND))
        block = 2 * c + mixer  # norm + op
        if v2:  # norm2 + MLP ratio 4
            block += 2 * c + (c * 4 * c + 4 * c) + (4 * c * c + c)
        total += depth * block
        if i < len(dims) - 1:
            # v2: conv3x3 s2 (C -> 2C) + LN; v0: PatchMerging LN(4C) + Linear(4C -> 2C, no bias)
            total += (c * 2 * c * 9 + 2 * c + 2 * 2 * c) if v2 else (2 * 4 * c + 4 * c * 2 * c)
    return total + 2 * dims[-1] + dims[-1] * 1000 + 1000  # classifier norm + head


@pytest.mark.parametrize(
    "dims,depths,kwargs,v2,official",
    [
        ((96, 192, 384, 768), (2, 2, 8, 2), dict(ssm_ratio=1.0), True, 30_249_064),
        ((96, 192, 384, 768), (2, 2, 15, 2), dict(ssm_ratio=2.0), True, 50_147_752),
        ((96, 192, 384, 768), (2, 2, 9, 2), V0, False, 22_893_448),
    ],
    ids=["vmamba_t_v2", "vmamba_s_v2", "vanilla_vmamba_t"],
)
def test_layer_counts_account_for_official_vmamba_totals(dims, depths, kwargs, v2, official):
    assert _vmamba_total(dims, depths, kwargs, v2) == official


def test_official_initialisation():
    torch.manual_seed(0)
    m = SS2D(64, d_state=4, ssm_ratio=2.0, backend=BACKEND)  # Di 128, R 4, K 4
    for p in (m.A_logs, m.Ds, m.dt_projs_bias):
        assert p.dtype == torch.float32
        assert p._no_weight_decay is True
    torch.testing.assert_close(m.A_logs, torch.log(torch.arange(1, 5.0)).expand(512, 4), rtol=0, atol=0)
    assert torch.equal(m.Ds, torch.ones(512))
    dt = F.softplus(m.dt_projs_bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert not torch.equal(dt[0], dt[1])  # one independent draw per direction
    assert m.dt_projs_weight.abs().max() <= 0.5 and m.dt_projs_weight.abs().max() > 0.45
    bound = 128**-0.5
    assert m.x_proj_weight.abs().max() <= bound and m.x_proj_weight.abs().max() > 0.9 * bound
    assert torch.equal(m.out_norm.weight, torch.ones(128)) and torch.equal(m.out_norm.bias, torch.zeros(128))


# ------------------------------------------------------------------------------------------------------
# numerics


def reference_ss2d(m: SS2D, x: torch.Tensor) -> torch.Tensor:
    """VMamba's SS2D forward written out (channel-last input (B, H, W, C)), one scan per direction."""
    batch, h, w, _ = x.shape
    di, n, r, k = m.d_inner, m.d_state, m.dt_rank, m.directions
    length = h * w
    xz = F.linear(x, m.in_proj.weight, m.in_proj.bias)
    z = None
    if m.with_z:
        xz, z = xz[..., :di], F.silu(xz[..., di:])
    u = xz.permute(0, 3, 1, 2)
    if m.conv is not None:
        u = F.conv2d(u, m.conv.weight, m.conv.bias, padding=m.d_conv // 2, groups=di)
    u = F.silu(u)
    row = u.reshape(batch, di, length)
    col = u.transpose(2, 3).reshape(batch, di, length)
    seqs = {1: [row], 2: [row, row.flip(-1)], 4: [row, col, row.flip(-1), col.flip(-1)]}[k]
    ys = []
    for i, seq in enumerate(seqs):
        dbl = torch.einsum("cd,bdl->bcl", m.x_proj_weight[i], seq)
        dt, b_in, c_in = dbl[:, :r], dbl[:, r:r + n], dbl[:, r + n:]
        delta = torch.einsum("dr,brl->bdl", m.dt_projs_weight[i], dt)
        rows = slice(i * di, (i + 1) * di)
        ys.append(selective_scan_naive(seq, delta, -torch.exp(m.A_logs[rows]), b_in, c_in, m.Ds[rows],
                                       delta_bias=m.dt_projs_bias[i], delta_softplus=True))
    if k == 4:  # y0 + flip(y2) + colmajor_unflatten(y1 + flip(y3))
        y = ys[0] + ys[2].flip(-1) + (ys[1] + ys[3].flip(-1)).view(batch, di, w, h).transpose(2, 3).reshape(
            batch, di, length)
    elif k == 2:
        y = ys[0] + ys[1].flip(-1)
    else:
        y = ys[0]
    y = F.layer_norm(y.transpose(1, 2), (di,), m.out_norm.weight, m.out_norm.bias, m.out_norm.eps)
    y = y.view(batch, h, w, di)
    if z is not None:
        y = y * z
    return F.linear(y, m.out_proj.weight, m.out_proj.bias)


CASES = [
    pytest.param(dict(directions=4), (7, 9), id="v2-K4-7x9"),
    pytest.param(dict(directions=2), (7, 9), id="v2-K2-7x9"),
    pytest.param(dict(directions=1), (7, 9), id="v2-K1-7x9"),
    pytest.param(dict(directions=4, d_state=3, ssm_ratio=2.0, conv_bias=True, with_z=True), (7, 9), id="v0-K4-7x9"),
    pytest.param(dict(directions=1, with_z=True, d_conv=1, bias=True), (5, 3), id="z-noconv-bias-K1-5x3"),
    pytest.param(dict(directions=4, d_conv=5), (6, 4), id="conv5-K4-6x4"),
    pytest.param(dict(directions=4), (14, 14), id="v2-K4-14x14"),
]


@pytest.mark.parametrize("channel_first", [False, True], ids=["last", "first"])
@pytest.mark.parametrize("kwargs,hw", CASES)
def test_forward_and_gradients_match_reference(kwargs, hw, channel_first):
    torch.manual_seed(0)
    m = SS2D(6, channel_first=channel_first, backend=BACKEND, **kwargs).double()
    x = torch.randn(2, *hw, 6, dtype=torch.float64, requires_grad=True)
    out = m(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1) if channel_first else m(x)
    ref = reference_ss2d(m, x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    if hw[0] * hw[1] > 100:
        return  # forward only on the larger grid, to keep the naive scan's autograd cheap
    params = [x, *m.parameters()]
    g_out = torch.randn_like(out)
    got = torch.autograd.grad((out * g_out).sum(), params)
    want = torch.autograd.grad((ref * g_out).sum(), params)
    for name, g, w in zip(["input", *(n for n, _ in m.named_parameters())], got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11, msg=name)


def test_one_direction_is_a_row_major_mamba_scan():
    """directions=1, no conv, no z: out_proj(LN(S6 over the row-major sequence)), with the scan written out."""
    torch.manual_seed(0)
    m = SS2D(4, d_state=2, dt_rank=1, directions=1, d_conv=1, backend=BACKEND).double()
    x = torch.randn(1, 3, 5, 4, dtype=torch.float64)
    u = F.silu(x @ m.in_proj.weight.T).reshape(1, 15, 4)  # (B, L, Di), row-major
    dbl = u @ m.x_proj_weight[0].T
    delta = F.softplus(dbl[..., :1] @ m.dt_projs_weight[0].T + m.dt_projs_bias[0])
    a = -torch.exp(m.A_logs)
    state = torch.zeros(1, 4, 2, dtype=torch.float64)
    ys = []
    for t in range(15):
        state = torch.exp(delta[:, t, :, None] * a) * state + (delta[:, t] * u[:, t])[..., None] * dbl[:, t, None, 1:3]
        ys.append((state * dbl[:, t, None, 3:5]).sum(-1) + m.Ds * u[:, t])
    y = F.layer_norm(torch.stack(ys, 1), (4,), m.out_norm.weight, m.out_norm.bias)
    expected = (y @ m.out_proj.weight.T).view(1, 3, 5, 4)
    torch.testing.assert_close(m(x), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "spatial,kwargs",
    [((5, 6), {}), ((5, 6), V0), ((3, 4, 5), {}), ((2, 3, 4), dict(directions=2))],
    ids=["2d-v2", "2d-v0", "3d-K6", "3d-K2"],
)
def test_channel_first_matches_channel_last(spatial, kwargs):
    torch.manual_seed(0)
    sd = len(spatial)
    last = SS2D(8, spatial_dims=sd, backend=BACKEND, **kwargs)
    first = SS2D(8, spatial_dims=sd, channel_first=True, backend=BACKEND, **kwargs)
    first.load_state_dict(last.state_dict())
    x = torch.randn(2, *spatial, 8)
    out_first = first(x.movedim(-1, 1))
    assert out_first.shape == (2, 8, *spatial)
    torch.testing.assert_close(out_first.movedim(1, -1), last(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{}, V0, dict(directions=2), dict(directions=1, d_conv=1)],
                         ids=["v2", "v0", "K2", "K1"])
def test_every_parameter_gets_a_gradient_2d(kwargs):
    torch.manual_seed(0)
    m = SS2D(8, backend=BACKEND, **kwargs)
    m(torch.randn(2, 5, 7, 8)).square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("channel_first", [False, True], ids=["last", "first"])
@pytest.mark.parametrize("directions", [1, 2, 6])
def test_3d_shapes_and_gradients(directions, channel_first):
    torch.manual_seed(0)
    m = SS3D(8, directions=directions, channel_first=channel_first, with_z=True, backend=BACKEND)
    assert m.spatial_dims == 3 and m.conv is m.conv3d and m.x_proj_weight.shape == (directions, 1 + 2, 8)
    x = torch.randn(2, 8, 3, 4, 5) if channel_first else torch.randn(2, 3, 4, 5, 8)
    out = m(x)
    assert out.shape == x.shape
    out.square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_ss3d_matches_ss2d_spatial_dims_3():
    torch.manual_seed(0)
    a = SS3D(8, backend=BACKEND)
    b = SS2D(8, spatial_dims=3, backend=BACKEND)
    assert b.directions == 6
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 2, 3, 4, 8)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_no_conv_when_d_conv_is_one():
    m = SS2D(8, d_conv=1, backend=BACKEND)
    assert m.conv is None and not any(name.startswith("conv") for name, _ in m.named_parameters())


def test_force_fp32_changes_nothing_in_fp32():
    torch.manual_seed(0)
    m = SS2D(8, backend=BACKEND)
    x = torch.randn(1, 4, 5, 8)
    y = m(x)
    m.force_fp32 = True
    torch.testing.assert_close(m(x), y, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs",
    [dict(directions=3), dict(directions=6), dict(spatial_dims=3, directions=4), dict(spatial_dims=1),
     dict(d_conv=4), dict(d_conv=-1), dict(ssm_ratio=0), dict(dropout=1.0), dict(d_state=0), dict(dt_rank=0),
     dict(backend="cuda"), dict(dt_min=1.0)],
    ids=["K3", "K6_2d", "K4_3d", "1d", "even_conv", "neg_conv", "ratio", "dropout", "d_state", "dt_rank",
         "backend", "dt_range"],
)
def test_constructor_argument_errors(kwargs):
    with pytest.raises(ValueError):
        SS2D(8, **kwargs)


def test_ss3d_rejects_2d():
    with pytest.raises(ValueError):
        SS3D(8, spatial_dims=2)


def test_forward_shape_errors():
    with pytest.raises(ValueError, match="C=8"):
        SS2D(8, backend=BACKEND)(torch.randn(2, 8, 5, 5))  # channel-first input to a channel-last layer
    with pytest.raises(ValueError):
        SS2D(8, channel_first=True, backend=BACKEND)(torch.randn(2, 5, 5, 8))
    with pytest.raises(ValueError):
        SS3D(8, backend=BACKEND)(torch.randn(2, 5, 5, 8))
