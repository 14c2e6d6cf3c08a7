"""Cross-scan / cross-merge orders and the reference cross selective scan."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mambaeye.ops.cross_scan import (
    ScanOrder,
    cross_merge,
    cross_scan,
    cross_selective_scan,
    scan_orders,
)
from mambaeye.ops.selective_scan import selective_scan_naive

GRIDS_2D = [(7, 9), (14, 14), (56, 56), (1, 5)]
GRIDS_3D = [(3, 4, 5), (2, 7, 3), (1, 6, 4)]


def _id(shape):
    return "x".join(map(str, shape))


def test_scan_orders_2d_are_the_official_order():
    assert scan_orders(2, 4) == (
        ScanOrder((0, 1), False),  # row-major
        ScanOrder((1, 0), False),  # column-major
        ScanOrder((0, 1), True),
        ScanOrder((1, 0), True),
    )
    assert scan_orders(2, 2) == (ScanOrder((0, 1), False), ScanOrder((0, 1), True))
    assert scan_orders(2, 1) == (ScanOrder((0, 1), False),)


def test_scan_orders_3d():
    assert scan_orders(3, 6) == (
        ScanOrder((0, 1, 2), False),
        ScanOrder((0, 2, 1), False),
        ScanOrder((1, 2, 0), False),
        ScanOrder((0, 1, 2), True),
        ScanOrder((0, 2, 1), True),
        ScanOrder((1, 2, 0), True),
    )
    assert scan_orders(3, 2) == (ScanOrder((0, 1, 2), False), ScanOrder((0, 1, 2), True))


@pytest.mark.parametrize("spatial_dims,directions", [(2, 3), (2, 6), (3, 4), (1, 2), (4, 2)])
def test_scan_orders_rejects_unsupported(spatial_dims, directions):
    with pytest.raises(ValueError):
        scan_orders(spatial_dims, directions)


@pytest.mark.parametrize("hw", GRIDS_2D, ids=_id)
def test_cross_scan_2d_matches_official_expression(hw):
    x = torch.randn(2, 3, *hw)
    row = x.flatten(2)
    col = x.transpose(2, 3).flatten(2)
    expected = torch.stack([row, col, row.flip(-1), col.flip(-1)], dim=1)
    assert torch.equal(cross_scan(x), expected)
    assert torch.equal(cross_scan(x, 2), torch.stack([row, row.flip(-1)], dim=1))
    assert torch.equal(cross_scan(x, 1), row[:, None])


@pytest.mark.parametrize("hw", GRIDS_2D, ids=_id)
def test_cross_merge_2d_matches_official_expression(hw):
    h, w = hw
    ys = torch.randn(2, 4, 3, h * w)
    # VMamba: y = y0 + flip(y2) + colmajor_unflatten(y1 + flip(y3))
    col = (ys[:, 1] + ys[:, 3].flip(-1)).view(2, 3, w, h).transpose(2, 3)
    expected = (ys[:, 0] + ys[:, 2].flip(-1)).view(2, 3, h, w) + col
    torch.testing.assert_close(cross_merge(ys, hw), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "shape,k",
    [(g, k) for g in GRIDS_2D for k in (1, 2, 4)] + [(g, k) for g in GRIDS_3D for k in (1, 2, 6)],
    ids=lambda v: _id(v) if isinstance(v, tuple) else f"K{v}",
)
def test_merge_of_scan_is_k_times_identity(shape, k):
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    xs = cross_scan(x, k)
    assert xs.shape == (2, k, 3, math.prod(shape))
    torch.testing.assert_close(cross_merge(xs, shape), k * x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape,k", [((7, 9), 4), ((5, 4), 2), ((3, 4, 5), 6), ((2, 3, 4), 2)], ids=str)
def test_merge_is_the_adjoint_of_scan(shape, k):
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    ys = torch.randn(2, k, 3, math.prod(shape), dtype=torch.float64)
    lhs = (cross_scan(x, k) * ys).sum()
    rhs = (x * cross_merge(ys, shape)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


def test_cross_scan_3d_index_arithmetic():
    d, h, w = 3, 4, 5
    x = torch.arange(d * h * w, dtype=torch.float32).view(1, 1, d, h, w)
    xs = cross_scan(x)  # (1, 6, 1, L)
    for z in range(d):
        for i in range(h):
            for j in range(w):
                v = x[0, 0, z, i, j]
                assert xs[0, 0, 0, (z * h + i) * w + j] == v  # (D, H, W): W fastest
                assert xs[0, 1, 0, (z * w + j) * h + i] == v  # (D, W, H): H fastest
                assert xs[0, 2, 0, (i * w + j) * d + z] == v  # (H, W, D): D fastest
    assert torch.equal(xs[:, 3:], xs[:, :3].flip(-1))


@pytest.mark.parametrize("hw", [(7, 9), (4, 4)], ids=_id)
def test_3d_with_one_slice_reads_the_2d_directions(hw):
    x = torch.randn(2, 3, *hw)
    xs3 = cross_scan(x[:, :, None], 6)
    assert torch.equal(xs3[:, [0, 1, 3, 4]], cross_scan(x, 4))


def test_cross_scan_rejects_bad_input():
    with pytest.raises(ValueError):
        cross_scan(torch.randn(2, 3, 8))
    with pytest.raises(ValueError):
        cross_scan(torch.randn(2, 3, 4, 4), 3)
    with pytest.raises(ValueError):
        cross_merge(torch.randn(2, 4, 3, 20), (4, 4))


# ------------------------------------------------------------------------------------------------------
# cross_selective_scan against a per-direction loop built from first principles


def _weights(k, d, rank, n, gen):
    return dict(
        x_proj_weight=torch.randn(k, rank + 2 * n, d, generator=gen) * 0.3,
        dt_projs_weight=torch.randn(k, d, rank, generator=gen) * 0.3,
        dt_projs_bias=torch.randn(k, d, generator=gen) * 0.5 - 2.0,
        A_logs=torch.rand(k * d, n, generator=gen).log1p(),
        Ds=torch.randn(k * d, generator=gen),
    )


def _per_direction_reference(x, w, out_norm=None):
    """Scan each direction separately with its own slice of the weights, then put it back and sum."""
    batch, d, *spatial = x.shape
    k, c, _ = w["x_proj_weight"].shape
    n = w["A_logs"].shape[1]
    rank = c - 2 * n
    y = torch.zeros_like(x)
    for i, order in enumerate(scan_orders(len(spatial), k)):
        grid = x.permute(0, 1, *(2 + a for a in order.axes))  # slowest..fastest
        seq = grid.flatten(2)
        if order.reverse:
            seq = seq.flip(-1)
        dbl = torch.einsum("cd,bdl->bcl", w["x_proj_weight"][i], seq)
        dt, B, C = dbl[:, :rank], dbl[:, rank:rank + n], dbl[:, rank + n:]
        delta = torch.einsum("dr,brl->bdl", w["dt_projs_weight"][i], dt)
        rows = slice(i * d, (i + 1) * d)
        out = selective_scan_naive(seq, delta, -torch.exp(w["A_logs"][rows]), B, C, w["Ds"][rows],
                                   delta_bias=w["dt_projs_bias"][i], delta_softplus=True)
        if order.reverse:
            out = out.flip(-1)
        out = out.view(grid.shape)
        inverse = [order.axes.index(a) for a in range(len(spatial))]
        y = y + out.permute(0, 1, *(2 + p for p in inverse))
    if out_norm is not None:
        y = F.layer_norm(y.movedim(1, -1), (d,), *out_norm).movedim(-1, 1)
    return y


@pytest.mark.parametrize(
    "shape,k",
    [((7, 9), 4), ((7, 9), 2), ((7, 9), 1), ((5, 3), 4), ((2, 3, 4), 6), ((2, 3, 4), 2), ((3, 2, 2), 1)],
    ids=lambda v: _id(v) if isinstance(v, tuple) else f"K{v}",
)
def test_cross_selective_scan_matches_per_direction_loop(shape, k):
    gen = torch.Generator().manual_seed(0)
    d, rank, n = 6, 2, 3
    x = torch.randn(2, d, *shape, generator=gen)
    w = _weights(k, d, rank, n, gen)
    got = cross_selective_scan(x, **w, backend="naive")
    assert got.shape == x.shape
    torch.testing.assert_close(got, _per_direction_reference(x, w), rtol=1e-4, atol=1e-5)


def test_cross_selective_scan_out_norm_and_layout():
    gen = torch.Generator().manual_seed(1)
    d = 8
    x = torch.randn(2, d, 5, 7, generator=gen)
    w = _weights(4, d, 1, 1, gen)
    nw, nb = torch.randn(d, generator=gen), torch.randn(d, generator=gen)
    ref = _per_direction_reference(x, w, out_norm=(nw, nb, 1e-5))
    first = cross_selective_scan(x, **w, out_norm=True, out_norm_weight=nw, out_norm_bias=nb, backend="naive")
    last = cross_selective_scan(x, **w, out_norm=True, out_norm_weight=nw, out_norm_bias=nb, channel_last=True,
                                backend="naive")
    torch.testing.assert_close(first, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(last, ref.movedim(1, -1), rtol=1e-4, atol=1e-5)
    fp32 = cross_selective_scan(x, **w, force_fp32=True, backend="naive")
    torch.testing.assert_close(fp32, _per_direction_reference(x, w), rtol=1e-4, atol=1e-5)


def test_cross_selective_scan_gradients_match_reference():
    gen = torch.Generator().manual_seed(2)
    d = 4
    x = torch.randn(1, d, 3, 5, generator=gen, dtype=torch.float64).requires_grad_()
    w = {name: t.double().requires_grad_() for name, t in _weights(4, d, 2, 2, gen).items()}
    grad_out = torch.randn(1, d, 3, 5, generator=gen, dtype=torch.float64)
    inputs = [x, *w.values()]
    got = torch.autograd.grad((cross_selective_scan(x, **w, backend="naive") * grad_out).sum(), inputs)
    ref = torch.autograd.grad((_per_direction_reference(x, w) * grad_out).sum(), inputs)
    for name, g, r in zip(["x", *w], got, ref, strict=True):
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize(
    "change",
    [
        dict(x_proj_weight=torch.zeros(3, 6, 8)),  # K = 3 is not a 2D direction count
        dict(x_proj_weight=torch.zeros(4, 7, 8)),  # R + 2N mismatch
        dict(dt_projs_weight=torch.zeros(4, 8, 3)),
        dict(dt_projs_bias=torch.zeros(32)),
        dict(A_logs=torch.zeros(8, 2)),
        dict(Ds=torch.zeros(8)),
        dict(x=torch.zeros(2, 8, 20)),
        dict(x=torch.zeros(2, 7, 4, 5)),
    ],
    ids=["K3", "xproj", "dtw", "dtb", "A", "D", "1d", "chan"],
)
def test_cross_selective_scan_argument_errors(change):
    args = dict(x=torch.zeros(2, 8, 4, 5), x_proj_weight=torch.zeros(4, 6, 8), dt_projs_weight=torch.zeros(4, 8, 2),
                dt_projs_bias=torch.zeros(4, 8), A_logs=torch.zeros(32, 2), Ds=torch.zeros(32))
    args.update(change)
    with pytest.raises(ValueError):
        cross_selective_scan(**args, backend="naive")


@pytest.mark.parametrize("n_src", [1, 2])
def test_scan_inputs_from_batch_second_sources_match_batch_first(n_src):
    """src stored batch-second ((S, D, B, L) memory) takes the plain-matrix-product path: the same u, delta, B, C
    and gradients as the broadcast matmuls on a batch-first src, with u a view of src (no copy) and delta
    batch-second (the scan reads both in place)."""
    from mambaeye.ops.cross_scan import scan_inputs

    batch, dim, length, rank, dstate, k = 3, 5, 11, 2, 3, 2 * n_src
    gen = torch.Generator().manual_seed(0)
    src = torch.randn(batch, n_src, dim, length, generator=gen, dtype=torch.float64)
    x_proj_weight = torch.randn(k, rank + 2 * dstate, dim, generator=gen, dtype=torch.float64)
    dt_projs_weight = torch.randn(k, dim, rank, generator=gen, dtype=torch.float64)
    grads_out = [torch.randn(shape, generator=gen, dtype=torch.float64)
                 for shape in ((batch, n_src * dim, length), (batch, k * dim, length), (batch, k, dstate, length),
                               (batch, k, dstate, length))]

    def run(stored):
        leaves = [stored.detach().requires_grad_(True), x_proj_weight.clone().requires_grad_(True),
                  dt_projs_weight.clone().requires_grad_(True)]
        outs = scan_inputs(leaves[0], leaves[1], leaves[2], dstate, kernels=False)
        grads = torch.autograd.grad(outs, leaves, grads_out)
        return outs, grads, leaves[0]

    outs_ref, grads_ref, _ = run(src)
    outs, grads, leaf = run(src.permute(1, 2, 0, 3).contiguous().permute(2, 0, 1, 3))
    u, delta = outs[:2]
    assert u.data_ptr() == leaf.data_ptr() and u.stride() == (length, batch * length, 1)
    assert delta.transpose(0, 1).is_contiguous()
    for got, want in zip((*outs, *grads), (*outs_ref, *grads_ref), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
