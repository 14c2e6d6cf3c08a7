"""Vim's bidirectional mixer: official names and counts; the backward branch is Mamba on the reversed sequence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mambaeye.layers import BiMamba, Mamba, bimamba
from mambaeye.layers.mamba import mamba_ssm_branch
from mambaeye.ops import available_backends

BACKEND = "naive"


def _shapes(module):
    return {name: tuple(p.shape) for name, p in module.named_parameters()}


def test_parameter_names_and_shapes_match_vim_checkpoint():
    # hustvl/Vim mixer for Vim-Ti (embed 192): layers.{i}.mixer.*
    branch = {
        "conv1d{}.weight": (384, 1, 4),
        "conv1d{}.bias": (384,),
        "x_proj{}.weight": (44, 384),
        "dt_proj{}.weight": (384, 12),
        "dt_proj{}.bias": (384,),
    }
    expected = {"in_proj.weight": (768, 192), "out_proj.weight": (192, 384), "A_log": (384, 16), "D": (384,),
                "A_b_log": (384, 16), "D_b": (384,)}
    for suffix in ("", "_b"):
        expected.update({k.format(suffix): v for k, v in branch.items()})
    assert _shapes(BiMamba(192, backend=BACKEND)) == expected


@pytest.mark.parametrize(
    "embed_dim,n_tokens,model_params",
    [(192, 197, 7_148_008), (384, 197, 25_796_584), (768, 197, 97_598_440), (192, 27 * 27 + 1, 7_250_344)],
    ids=["vim_ti", "vim_s", "vim_b", "vim_ti_stride8"],
)
def test_mixer_count_accounts_for_the_official_vim_totals(embed_dim, n_tokens, model_params):
    # Official Vim totals (1000 classes) minus everything that is not a mixer, divided by the 24 layers.
    c = embed_dim
    patch_embed = 3 * c * 16 * 16 + c
    non_mixer = patch_embed + c + n_tokens * c + 24 * c + c + (c * 1000 + 1000)  # cls, pos, norms, norm_f, head
    assert (model_params - non_mixer) % 24 == 0
    assert sum(p.numel() for p in BiMamba(c, backend=BACKEND).parameters()) == (model_params - non_mixer) // 24


def test_initialisation():
    torch.manual_seed(0)
    m = BiMamba(64, backend=BACKEND)  # d_inner 128, dt_rank 4
    for p in (m.A_b_log, m.D_b, m.dt_proj_b.bias):
        assert p.dtype == torch.float32
    for p in (m.A_b_log, m.D_b, m.A_log, m.D):
        assert p._no_weight_decay is True
    torch.testing.assert_close(m.A_b_log, m.A_log, rtol=0, atol=0)
    assert torch.equal(m.D_b, torch.ones(128))
    # Vim leaves dt_proj_b at nn.Linear's default init: |bias| <= 1/sqrt(dt_rank), not Mamba's dt bias
    assert m.dt_proj_b.bias.abs().max() <= 0.5 and m.dt_proj_b.bias.min() < -0.1
    assert F.softplus(m.dt_proj.bias).max() <= 0.1 + 1e-6
    mamba_init = BiMamba(64, backward_dt_init="mamba", backend=BACKEND)
    dt = F.softplus(mamba_init.dt_proj_b.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert mamba_init.dt_proj_b.weight.abs().max() <= 0.5


def _branch_as_mamba(bi: BiMamba, suffix: str) -> Mamba:
    """A Mamba holding the shared in/out projections and one branch's parameters of ``bi``."""
    m = Mamba(bi.d_model, d_state=bi.d_state, d_conv=bi.d_conv, expand=bi.expand, dt_rank=bi.dt_rank,
              bias=bi.in_proj.bias is not None, backend=BACKEND).to(bi.in_proj.weight.dtype)
    src = bi.state_dict()
    names = {"A_log": "A_b_log", "D": "D_b"} if suffix else {}
    state = {}
    for name in m.state_dict():
        if name.startswith(("in_proj", "out_proj")):
            state[name] = src[name]
        elif name in names:
            state[name] = src[names[name]]
        else:
            module, leaf = name.split(".", 1) if "." in name else (name, "")
            state[name] = src[f"{module}{suffix}.{leaf}" if leaf else f"{module}{suffix}"]
    m.load_state_dict(state)
    return m


@pytest.mark.parametrize("divide_out", [True, False])
@pytest.mark.parametrize("length", [2, 9, 16], ids=lambda v: f"L{v}")
def test_equals_forward_mamba_plus_flipped_mamba(divide_out, length):
    torch.manual_seed(length)
    bi = BiMamba(10, d_state=4, dt_rank=2, divide_out=divide_out, bias=True, backward_dt_init="mamba",
                 backend=BACKEND).double()
    fwd, bwd = _branch_as_mamba(bi, ""), _branch_as_mamba(bi, "_b")
    h = torch.randn(2, length, 10, dtype=torch.float64)
    # out_proj is affine: out_proj((y_f + y_b) / 2) = (out_proj(y_f) + out_proj(y_b)) / 2
    expected = fwd(h) + bwd(h.flip(1)).flip(1)
    if divide_out:
        expected = expected / 2
    else:
        expected = expected - bi.out_proj.bias  # the bias was added twice
    torch.testing.assert_close(bi(h), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("d_conv", [1, 2, 4])
def test_reverse_branch_equals_forward_branch_on_flipped_sequence(d_conv):
    torch.manual_seed(d_conv)
    di, n, r, length = 6, 3, 2, 11
    args = dict(
        conv_weight=torch.randn(di, 1, d_conv, dtype=torch.float64),
        conv_bias=torch.randn(di, dtype=torch.float64),
        x_proj_weight=torch.randn(r + 2 * n, di, dtype=torch.float64) * 0.5,
        dt_proj_weight=torch.randn(di, r, dtype=torch.float64) * 0.5,
        dt_proj_bias=torch.randn(di, dtype=torch.float64) - 1,
        A_log=torch.rand(di, n, dtype=torch.float64),
        D=torch.randn(di, dtype=torch.float64),
        backend=BACKEND,
    )
    x = torch.randn(2, di, length, dtype=torch.float64)
    z = torch.randn(2, di, length, dtype=torch.float64)
    got = mamba_ssm_branch(x, z, reverse=True, **args)
    want = mamba_ssm_branch(x.flip(-1), z.flip(-1), reverse=False, **args).flip(-1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    m = BiMamba(16, d_state=4, backend=BACKEND)
    m(torch.randn(2, 9, 16)).square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_sees_both_directions():
    torch.manual_seed(0)
    m = BiMamba(8, d_state=4, backend=BACKEND).double()
    h = torch.randn(1, 10, 8, dtype=torch.float64)
    h2 = h.clone()
    h2[:, 8:] += 1.0
    assert (m(h)[:, :3] - m(h2)[:, :3]).abs().max() > 1e-8  # early outputs depend on late inputs (fp64)


def test_argument_errors():
    with pytest.raises(ValueError):
        BiMamba(8, backward_dt_init="zeros")
    with pytest.raises(ValueError):
        BiMamba(8, backend="fast")
    with pytest.raises(ValueError):
        BiMamba(8, backend=BACKEND)(torch.randn(2, 8))


@pytest.mark.skipif("triton" not in __import__("mambaeye.ops", fromlist=["x"]).available_backends("cpu"),
                    reason="needs triton and its interpreter (TRITON_INTERPRET=1, set without a GPU)")
def test_triton_backend_walks_backwards_like_the_reference():
    """BiMamba on the triton backend (the backward branch scans L in reverse inside the kernel) vs naive."""
    torch.manual_seed(0)
    layer = BiMamba(8, d_state=4, backend="naive").double()
    x = torch.randn(2, 21, 8, dtype=torch.float64)
    outputs, grads = [], []
    for backend in ("naive", "triton"):
        layer.backend = backend
        layer.zero_grad()
        y = layer(x)
        (y * torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view_as(y)).sum().backward()
        outputs.append(y.detach())
        grads.append({n: p.grad.clone() for n, p in layer.named_parameters()})
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-10, atol=1e-12)
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-9, atol=1e-11, msg=name)


_BACKENDS = ["naive", "torch"] + (["triton"] if "triton" in available_backends("cpu") else [])


@pytest.mark.parametrize("backend", _BACKENDS)
def test_caller_padding_is_inert(backend):
    """BiMamba(padded, length) equals BiMamba(unpadded) before ``length``, outputs and every gradient, whatever the
    padding holds (here large random values, with an in_proj bias so that x is nonzero there until zeroed)."""
    torch.manual_seed(0)
    layer = BiMamba(8, d_state=4, bias=True, backend=backend).double()
    length, padded = 13, 16
    h = torch.randn(2, length, 8, dtype=torch.float64)
    h_pad = torch.cat((h, 100 * torch.randn(2, padded - length, 8, dtype=torch.float64)), dim=1)
    weight = torch.linspace(-1, 1, 2 * length * 8, dtype=torch.float64).view(2, length, 8)
    results = []
    for x, n in ((h, None), (h_pad, length)):
        x = x.clone().requires_grad_(True)
        layer.zero_grad()
        y = layer(x, n)[:, :length]
        (y * weight).sum().backward()
        results.append((y.detach(), x.grad, {name: p.grad.clone() for name, p in layer.named_parameters()}))
    (y0, dx0, g0), (y1, dx1, g1) = results
    torch.testing.assert_close(y1, y0, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dx1[:, :length], dx0, rtol=1e-9, atol=1e-11)
    assert torch.equal(dx1[:, length:], torch.zeros_like(dx1[:, length:]))  # the padding reaches nothing real
    for name, g in g0.items():
        torch.testing.assert_close(g1[name], g, rtol=1e-9, atol=1e-11, msg=name)


def test_length_errors_and_aligned_length(monkeypatch):
    layer = BiMamba(8, d_state=4, backend=BACKEND)
    for bad in (0, 10):
        with pytest.raises(ValueError, match="length must be in"):
            layer(torch.randn(1, 9, 8), bad)
    cpu = torch.zeros(1)
    assert bimamba.aligned_length(2001, "torch", cpu) == 2001  # only the Triton scan gains from aligned rows
    assert bimamba.aligned_length(2001, "auto", cpu) == 2001  # auto on CPU is torch
    if "triton" in _BACKENDS:
        assert bimamba.aligned_length(2001, "triton", cpu) == 2008
        assert bimamba.aligned_length(2008, "triton", cpu) == 2008
        assert bimamba.aligned_length(bimamba.ALIGN_MIN_LENGTH - 1, "triton", cpu) == bimamba.ALIGN_MIN_LENGTH - 1
        monkeypatch.setattr(bimamba, "ALIGN_MIN_LENGTH", 0)
        assert bimamba.aligned_length(197, "triton", cpu) == 200
