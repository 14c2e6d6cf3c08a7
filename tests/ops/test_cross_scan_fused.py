"""Fused 2D cross-scan (direction order inside the Triton kernels) against the explicit PyTorch reference."""

from __future__ import annotations

import pytest
import torch

from mambaeye.ops import available_backends
from mambaeye.ops.cross_scan import cross_selective_scan
from mambaeye.ops.dwconv import depthwise_conv2d_silu
from mambaeye.ops.selective_scan import triton_scan

from .scan_cases import LaunchRecorder, assert_compiled_matches_eager, case_id, rel_err

needs_triton_cpu = pytest.mark.skipif("triton" not in available_backends("cpu"),
                                     reason="needs triton and its interpreter (TRITON_INTERPRET=1, set without a GPU)")


def _weights(dim, k, rank, dstate, dtype=torch.float64):
    return dict(
        x_proj_weight=0.3 * torch.randn(k, rank + 2 * dstate, dim, dtype=dtype),
        dt_projs_weight=0.3 * torch.randn(k, dim, rank, dtype=dtype),
        dt_projs_bias=0.5 * torch.randn(k, dim, dtype=dtype),
        A_logs=torch.log(torch.rand(k * dim, dstate, dtype=dtype) + 0.5),
        Ds=torch.randn(k * dim, dtype=dtype),
        out_norm_weight=1 + 0.1 * torch.randn(dim, dtype=dtype),
        out_norm_bias=0.1 * torch.randn(dim, dtype=dtype),
    )


def _run(x, weights, backend, fused, out_norm=True):
    leaves = {k: v.clone().requires_grad_(True) for k, v in {"x": x, **weights}.items()}
    y = cross_selective_scan(**leaves, out_norm=out_norm, backend=backend, fused=fused)
    w = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view_as(y)
    (y.double() * w).sum().backward()
    return y.detach(), {k: v.grad for k, v in leaves.items()}


# L 36 / 24 / 32 (6x6, 6x4, 4x8): the kernels' vector width is 4 / 8 / 16 and the backward-walking groups read
# their tiles in chunks of memory order (triton_scan._flipped_tile); L 63, 15, 5: element by element
CASES = [(4, 7, 9, 1), (4, 5, 3, 4), (2, 6, 4, 1), (1, 7, 9, 4), (4, 1, 5, 2), (4, 4, 8, 2), (4, 6, 6, 1)]


@needs_triton_cpu
@pytest.mark.parametrize("k,h,w,dstate", CASES, ids=[case_id(K=k, H=h, W=w, N=n) for k, h, w, n in CASES])
def test_fused_matches_reference(k, h, w, dstate):
    dim, rank = 4, 2
    x = torch.randn(2, dim, h, w, dtype=torch.float64)
    weights = _weights(dim, k, rank, dstate)
    y_ref, g_ref = _run(x, weights, "naive", fused=False)
    y, g = _run(x, weights, "triton", fused=True)
    assert rel_err(y, y_ref) < 1e-10
    for name in g_ref:
        assert rel_err(g[name], g_ref[name]) < 1e-10, name


@needs_triton_cpu
@pytest.mark.parametrize("batch_second", [True, False], ids=["sources-batch-second", "sources-batch-first"])
@pytest.mark.parametrize("k,bias", [(4, True), (4, False), (2, True)], ids=["K4-bias", "K4", "K2-bias"])
def test_conv_inside_the_cross_scan_matches_conv_then_reference(k, bias, batch_second, monkeypatch):
    """conv_weight / conv_bias: SiLU(depthwise conv) first - for K 4 written straight into the two sources
    (depthwise_conv2d_silu(sources=2)), its backward summing both sources' gradients - against the conv + SiLU in
    PyTorch, then the unfused reference; the conv's parameters get their gradients too. The sources stored
    batch-second (the projections as GEMMs over B*L) or, on grids above BATCH_SECOND_MAX_LENGTH, batch-first."""
    from mambaeye.ops.cross_scan import fused

    monkeypatch.setattr(fused, "BATCH_SECOND_MAX_LENGTH", 1 << 62 if batch_second else 0)
    layouts = []  # each call's sources: stored batch-second or not

    def conv_spy(*args, **kwargs):
        out = depthwise_conv2d_silu(*args, **kwargs)
        if kwargs.get("sources") == 2:
            layouts.append(out[0].permute(1, 2, 0, 3).is_contiguous())
        return out

    monkeypatch.setattr(fused, "depthwise_conv2d_silu", conv_spy)
    dim, h, w = 4, 7, 9
    x = torch.randn(2, dim, h, w, dtype=torch.float64)
    weights = {**_weights(dim, k, 2, 2), "conv_weight": torch.randn(dim, 1, 3, 3, dtype=torch.float64) / 3}
    if bias:
        weights["conv_bias"] = torch.randn(dim, dtype=torch.float64)
    y_ref, g_ref = _run(x, weights, "naive", fused=False)
    y, g = _run(x, weights, "triton", fused=True)
    assert layouts == ([batch_second] if k == 4 else [])
    assert rel_err(y, y_ref) < 1e-10
    assert set(g) == set(g_ref) and "conv_weight" in g
    for name in g_ref:
        assert rel_err(g[name], g_ref[name]) < 1e-10, name
    with pytest.raises(ValueError, match="conv_weight: the depthwise conv runs on 2D grids"):
        cross_selective_scan(torch.randn(1, dim, 2, 3, 3, dtype=torch.float64),
                             **{n: t for n, t in _weights(dim, 6, 2, 2).items()},
                             conv_weight=weights["conv_weight"], backend="naive")


@needs_triton_cpu
def test_fused_with_conv_compiles_fullgraph_and_matches_eager():
    """torch.compile traces the conv writing batch-second sources, the projections' GEMMs over B*L, the dt
    projection, the paired scan and the merge (their custom ops' fakes give the real layouts), forward and every
    gradient."""
    dim, k = 4, 4
    weights = {**_weights(dim, k, 2, 2), "conv_weight": torch.randn(dim, 1, 3, 3, dtype=torch.float64) / 3}
    names = list(weights)
    inputs = [torch.randn(2, dim, 5, 6, dtype=torch.float64).requires_grad_(True),
              *(t.requires_grad_(True) for t in weights.values())]

    def fn(x, *tensors):
        return cross_selective_scan(x, **dict(zip(names, tensors, strict=True)), out_norm=True, backend="triton",
                                    fused=True)

    assert_compiled_matches_eager(fn, inputs, loss=lambda out: out.square().sum())


@needs_triton_cpu
@pytest.mark.parametrize("h,w", [(9, 11), (8, 12)], ids=["9x11", "8x12-flipped-tiles"])
def test_fused_many_tiles_and_split(h, w, monkeypatch):
    """Direction indices across tile boundaries, and with the forward split across programs. Where the tiles can
    be read as vectors (96 positions) the paired forward runs as two launches, its forward groups then its
    backward ones (PAIR_HALF, the direction a constexpr); else one launch reads the direction at run time."""
    monkeypatch.setattr(triton_scan, "MAX_TILE_L", 4)
    monkeypatch.setattr(triton_scan, "MIN_PROGRAMS", 1 << 20)
    monkeypatch.setattr(triton_scan, "TARGET_PROGRAMS", 1 << 20)
    launches = []
    kernel = triton_scan._scan_fwd_kernel
    monkeypatch.setattr(triton_scan, "_scan_fwd_kernel", LaunchRecorder(kernel, launches))
    x = torch.randn(1, 4, h, w, dtype=torch.float64)  # 99 / 96 positions: 25 / 24 tiles of 4 steps
    weights = _weights(4, 4, 2, 1)
    y_ref, g_ref = _run(x, weights, "naive", fused=False, out_norm=False)
    y, g = _run(x, weights, "triton", fused=True, out_norm=False)
    halves = [(kw["PAIR_HALF"], kw["REVERSE"], kw["FLIP_TILES"]) for _, kw in launches]
    assert halves == ([(True, False, False), (True, True, True)] if h * w % 4 == 0 else [(False, False, False)])
    assert rel_err(y, y_ref) < 1e-10
    for name in ("x", "x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds"):
        assert rel_err(g[name], g_ref[name]) < 1e-10, name


@needs_triton_cpu
@pytest.mark.parametrize("k", [2, 4], ids=["K2", "K4"])
def test_merge_gradient_reaches_the_paired_backward_once_a_pair(k, monkeypatch):
    """The merge sums each pair, so both directions of a pair get the same output gradient: gather's backward
    hands it over as one expanded copy and the paired backward reads that copy for both (no per-group copies)."""
    seen = []
    bwd = triton_scan.selective_scan_bwd

    def recording(dout, dlast_state, u, *args, **kwargs):
        seen.append((tuple(dout.shape), tuple(u.shape)))
        return bwd(dout, dlast_state, u, *args, **kwargs)

    monkeypatch.setattr(triton_scan, "selective_scan_bwd", recording)
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    weights = _weights(4, k, 2, 2)
    _, g_ref = _run(x, weights, "naive", fused=False)
    _, g = _run(x, weights, "triton", fused=True)
    assert seen and all(dout_shape == u_shape for dout_shape, u_shape in seen)
    for name in g_ref:
        assert rel_err(g[name], g_ref[name]) < 1e-10, name


@needs_triton_cpu
def test_paired_backward_reads_a_shared_gradient_as_its_per_group_copies():
    """dout one per pair (u's shape) gives the gradients of dout per group with each pair's two copies equal;
    any other shape is refused by name."""
    batch, pairs, dim, length, dstate = 2, 2, 4, 24, 2
    u = torch.randn(batch, pairs * dim, length, dtype=torch.float64)
    delta = 0.5 * torch.randn(batch, 2 * pairs * dim, length, dtype=torch.float64)
    A = -(torch.rand(2 * pairs * dim, dstate, dtype=torch.float64) + 0.5)
    B, C = (torch.randn(batch, 2 * pairs, dstate, length, dtype=torch.float64) for _ in range(2))
    D, bias = torch.randn(2 * pairs * dim, dtype=torch.float64), torch.randn(2 * pairs * dim, dtype=torch.float64)
    _, _, states = triton_scan.selective_scan_fwd(u, delta, A, B, C, D, None, bias, True, True, paired=True)
    dout = torch.randn(batch, pairs, 1, dim, length, dtype=torch.float64)
    per_group = dout.expand(-1, -1, 2, -1, -1).reshape(batch, -1, length)
    args = (u, delta, A, B, C, D, None, bias, True, states)
    shared = triton_scan.selective_scan_bwd(dout.view(batch, -1, length), None, *args, paired=True)
    expected = triton_scan.selective_scan_bwd(per_group, None, *args, paired=True)
    for got, want in zip(shared, expected, strict=True):
        if want is not None:
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="dout must have delta's shape"):
        triton_scan.selective_scan_bwd(per_group[:, :-1], None, *args, paired=True)


@needs_triton_cpu
def test_fused_is_the_default_for_triton_on_2d_grids(monkeypatch):
    from mambaeye.ops.cross_scan import fused

    calls = []
    original = fused.cross_scan_2d
    monkeypatch.setattr(fused, "cross_scan_2d", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    weights = {k: v for k, v in _weights(4, 4, 2, 1).items() if not k.startswith("out")}
    cross_selective_scan(torch.randn(1, 4, 3, 5, dtype=torch.float64), **weights, backend="triton")
    assert calls == [1]
    cross_selective_scan(torch.randn(1, 4, 3, 5, dtype=torch.float64), **weights, backend="triton", fused=False)
    assert calls == [1]


@needs_triton_cpu
def test_fused_rejects_3d_grids_and_non_triton_backends():
    weights = {k: v for k, v in _weights(4, 6, 2, 1).items() if not k.startswith("out")}
    with pytest.raises(ValueError, match="fused=True needs a 2D grid"):
        cross_selective_scan(torch.randn(1, 4, 2, 3, 3, dtype=torch.float64), **weights, backend="triton",
                             fused=True)
    weights = {k: v for k, v in _weights(4, 4, 2, 1).items() if not k.startswith("out")}
    with pytest.raises(ValueError, match="the triton backend"):
        cross_selective_scan(torch.randn(1, 4, 3, 3, dtype=torch.float64), **weights, backend="torch", fused=True)


@needs_triton_cpu
@pytest.mark.parametrize("hw", [(5, 6), (4, 4)], ids=["5x6", "4x4"])
def test_ss2d_layer_on_a_batch_second_map(hw):
    """The channel-first SS2D layer (fused, the conv inside the cross-scan) on a batch-second map: in_proj and
    out_proj as one matrix product each, the conv reading the map in place, the out_norm writing batch-second;
    output and every gradient equal the batch-first run's, and the output and the input's gradient stay
    batch-second."""
    from mambaeye.layers import SS2D
    from mambaeye.ops._layout import is_batch_second, to_batch_second

    torch.manual_seed(0)
    layer = SS2D(8, channel_first=True, backend="triton").double()
    x = torch.randn(3, 8, *hw, dtype=torch.float64)
    runs = []
    for x_in in (x.clone(), to_batch_second(x)):
        x_in.requires_grad_(True)
        y = layer(x_in)
        dy = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view(y.shape)
        runs.append((y, torch.autograd.grad(y, [x_in, *layer.parameters()], dy)))
    (y_first, g_first), (y_second, g_second) = runs
    assert not is_batch_second(y_first) and is_batch_second(y_second) and is_batch_second(g_second[0])
    torch.testing.assert_close(y_second, y_first, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_second, g_first, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_batch_second_is_a_channel_first_layout():
    weights = {k: v for k, v in _weights(4, 4, 2, 1).items() if not k.startswith("out")}
    with pytest.raises(ValueError, match="batch_second is a layout of the channel-first output"):
        cross_selective_scan(torch.randn(1, 4, 3, 3, dtype=torch.float64), **weights, backend="torch",
                             channel_last=True, batch_second=True)


@pytest.mark.gpu
@pytest.mark.parametrize("v0", [False, True], ids=["v2", "v0"])
def test_fused_ss2d_layer_gpu_bf16(v0):
    """The SS2D layer, fused vs unfused, bf16 autocast on the GPU at VMamba stage-1 width (56x56 grid)."""
    from mambaeye.layers import SS2D

    kwargs = (dict(d_state=16, ssm_ratio=2.0, conv_bias=True, with_z=True, force_fp32=True) if v0
              else dict(d_state=1, ssm_ratio=1.0, conv_bias=False, channel_first=True))
    layer = SS2D(96, **kwargs).cuda()
    x = torch.randn(2, 96, 56, 56, device="cuda") if not v0 else torch.randn(2, 56, 56, 96, device="cuda")
    outs, grads = [], []
    for fused in (False, True):
        layer.fused = fused
        layer.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = layer(x)
        y.float().square().mean().backward()
        outs.append(y.float())
        grads.append([p.grad.float().clone() for p in layer.parameters()])
    assert rel_err(outs[1], outs[0]) < 1e-2
    for g_fused, g_ref in zip(grads[1], grads[0], strict=True):
        assert rel_err(g_fused, g_ref) < 2e-2


@needs_triton_cpu
def test_paired_scan_custom_op_passes_opcheck():
    """The registered op (what torch.compile traces) against its fake implementation and autograd formula."""
    from mambaeye.ops.cross_scan.fused import _fwd

    batch, pairs, dim, length, dstate = 2, 2, 4, 11, 2
    groups = 2 * pairs
    u = torch.randn(batch, pairs * dim, length, dtype=torch.float64, requires_grad=True)
    delta = torch.randn(batch, groups * dim, length, dtype=torch.float64, requires_grad=True)
    A = -torch.rand(groups * dim, dstate, dtype=torch.float64).add(0.5).requires_grad_()
    B = torch.randn(batch, groups, dstate, length, dtype=torch.float64, requires_grad=True)
    C = torch.randn(batch, groups, dstate, length, dtype=torch.float64, requires_grad=True)
    D = torch.randn(groups * dim, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(groups * dim, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(_fwd, (u, delta, A, B, C, D, bias, True, True))


@needs_triton_cpu
def test_backward_fills_no_zeros_for_the_outputs_no_loss_reads():
    """The conv's saved pre-activation and the scan's saved states are outputs of their autograd nodes that no loss
    reads: their gradients must arrive as None, not as zero-filled tensors (a whole pass over the map at VMamba's
    first stage): no ``aten::zeros`` directly under the two backward nodes (dB and dC's accumulators are
    ``zeros_like`` by design; the tests' NaN-filled ``torch.empty`` shows as ``fill_``)."""
    from torch.profiler import ProfilerActivity, profile

    from mambaeye.layers import SS2D
    from mambaeye.ops._layout import to_batch_second

    layer = SS2D(8, channel_first=True, backend="triton")
    x = to_batch_second(torch.randn(2, 8, 6, 6)).requires_grad_(True)
    y = layer(x)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        y.backward(torch.ones_like(y))
    nodes = ("_DwConvSiluFunctionBackward", "_PairedScanFunctionBackward")
    seen, fills = set(), []
    for event in prof.events():
        owner = event.cpu_parent
        while owner is not None and owner.name not in nodes:
            owner = owner.cpu_parent
        if owner is not None:
            seen.add(owner.name)
            if event.name == "aten::zeros" and event.cpu_parent is owner:
                fills.append((owner.name, event.name))
    assert seen == set(nodes)
    assert not fills, fills
