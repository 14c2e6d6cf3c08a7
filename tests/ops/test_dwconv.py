"""mambaeye.ops.dwconv: the triton kernel (interpreter on CPU) against silu(F.conv2d), forward and the gradients
of x, weight and bias; maps smaller and larger than a tile, non-square, K 3 and 5, no bias, strided, channels-last
and batch-second inputs, half inputs, bad arguments, the custom op's registration, torch.compile; bf16 at
VMamba-T's first stage on the GPU."""

from __future__ import annotations

import pytest
import torch

from mambaeye.ops._layout import is_batch_second, to_batch_second
from mambaeye.ops.dwconv import _spread_ref, depthwise_conv2d_silu, depthwise_conv2d_silu_ref
from mambaeye.ops.selective_scan import available_backends

from .scan_cases import assert_compiled_matches_eager, rel_err

needs_triton = pytest.mark.skipif("triton" not in available_backends("cpu"),
                                  reason="needs triton under TRITON_INTERPRET=1")

CASES = {  # name: (x maker, K, bias); 40x41 = 1640 positions crosses the kernel's 1024-position blocks
    "B2-C3-7x9-K3": (lambda dt: torch.randn(2, 3, 7, 9, dtype=dt), 3, True),
    "B1-C2-40x41-K3": (lambda dt: torch.randn(1, 2, 40, 41, dtype=dt), 3, True),
    "B2-C5-6x5-K5-nobias": (lambda dt: torch.randn(2, 5, 6, 5, dtype=dt), 5, False),
    "B1-C4-1x1-K3": (lambda dt: torch.randn(1, 4, 1, 1, dtype=dt), 3, True),
    "channel-slice": (lambda dt: torch.randn(2, 9, 5, 6, dtype=dt)[:, 1:9:2], 3, True),  # read in place
    "channels-last": (lambda dt: torch.randn(2, 4, 5, 6, dtype=dt).to(memory_format=torch.channels_last), 3, True),
    "batch-second": (lambda dt: to_batch_second(torch.randn(3, 4, 5, 6, dtype=dt)), 3, True),  # read in place
}


# (sources, batch_second): the map; its two sources (row- and column-major); the sources stored (2, C, B, H * W)
LAYOUTS = [pytest.param(1, False, id="map"), pytest.param(2, False, id="sources"),
           pytest.param(2, True, id="sources-batch-second")]


def _in_layout(y, sources, batch_second):
    """Whether y is stored as asked: contiguous, or for batch-second sources as (2, C, B, H * W)."""
    return y.permute(1, 2, 0, 3).is_contiguous() if batch_second else y.is_contiguous()


def _params(channels, k, bias, dtype=torch.float64):
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(channels, 1, k, k, generator=gen, dtype=dtype) / k
    return weight, (torch.randn(channels, generator=gen, dtype=dtype) if bias else None)


@needs_triton
@pytest.mark.parametrize("sources, batch_second", LAYOUTS)
@pytest.mark.parametrize("case", list(CASES))
def test_triton_matches_reference_with_gradients(case, sources, batch_second):
    """sources 2: the output in the fused cross-scan's two layouts (row-major, column-major), and the backward from
    both layouts' gradients at once."""
    make, k, with_bias = CASES[case]
    x = make(torch.float64).requires_grad_(True)
    weight, bias = _params(x.shape[1], k, with_bias)
    leaves = [t.requires_grad_(True) for t in (x, weight, bias) if t is not None]
    y = depthwise_conv2d_silu(x, weight, bias, backend="triton", sources=sources, batch_second=batch_second)
    y_ref = depthwise_conv2d_silu_ref(x, weight, bias)
    if sources == 2:
        y_ref = _spread_ref(y_ref)  # (B, 2, C, H * W)
    assert y.shape == y_ref.shape and _in_layout(y, sources, batch_second)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y_ref)
    grads = torch.autograd.grad(y, leaves, dy)
    for g, g_ref in zip(grads, torch.autograd.grad(y_ref, leaves, dy), strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-10)
    if case == "batch-second":  # dx written in x's layout
        assert is_batch_second(grads[0])


@pytest.mark.parametrize("sources, batch_second", LAYOUTS)
@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_two_consumers_get_the_output_twice_and_gradients_add(backend, sources, batch_second):
    """consumers=2: (y, y_again) with y's values; the gradients through either, or both (the triton path sums
    them in its backward's own pass), are those of the one output's."""
    x = CASES["B2-C3-7x9-K3"][0](torch.float64).requires_grad_(True)
    weight, bias = (t.requires_grad_(True) for t in _params(3, 3, True))
    leaves = [x, weight, bias]
    y1, y2 = depthwise_conv2d_silu(x, weight, bias, backend=backend, sources=sources, consumers=2,
                                   batch_second=batch_second)
    y = depthwise_conv2d_silu(x, weight, bias, backend=backend, sources=sources, batch_second=batch_second)
    assert torch.equal(y1, y) and torch.equal(y2, y) and _in_layout(y1, sources, batch_second)
    d1, d2 = torch.randn_like(y), torch.randn_like(y)
    for loss, expected in [((y1 * d1).sum() + (y2 * d2).sum(), y * (d1 + d2)), ((y1 * d1).sum(), y * d1),
                           ((y2 * d2).sum(), y * d2)]:
        grads = torch.autograd.grad(loss, leaves, retain_graph=True)
        for g, g_ref in zip(grads, torch.autograd.grad(expected.sum(), leaves, retain_graph=True), strict=True):
            torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-10)


@needs_triton
@pytest.mark.parametrize("sources, batch_second", LAYOUTS)
@pytest.mark.parametrize("row_vectors", [False, True])
def test_forward_addressing_either_way_matches_reference(row_vectors, sources, batch_second, monkeypatch):
    """The forward's two addressings (constant row lengths for vector accesses, or runtime ones for one element a
    thread: triton_dwconv._row_vectors picks by the row's byte size), each forced on both kinds of rows."""
    from mambaeye.ops.dwconv import triton_dwconv

    monkeypatch.setattr(triton_dwconv, "_row_vectors", lambda width, element_size: row_vectors)
    for x in (torch.randn(2, 3, 7, 9, dtype=torch.float64), torch.randn(1, 2, 40, 41, dtype=torch.float64)):
        weight, bias = _params(x.shape[1], 3, True)
        y_ref = depthwise_conv2d_silu_ref(x, weight, bias)
        y = depthwise_conv2d_silu(x, weight, bias, backend="triton", sources=sources, batch_second=batch_second)
        torch.testing.assert_close(y, y_ref if sources == 1 else _spread_ref(y_ref), rtol=1e-12, atol=1e-12)


@needs_triton
@pytest.mark.parametrize("block_s, programs", [(16, 1), (16, 10**6), (64, 4)])
def test_backward_tilings_agree(block_s, programs, monkeypatch):
    """The backward's tiling: positions split into blocks of a plane (16 < 7 * 9), the batch looped in one program
    (programs 1) or one image a program, or split unevenly (3 images in 2 + 1) - the weight gradient's partials
    summed over all of them."""
    from mambaeye.ops.dwconv import triton_dwconv

    monkeypatch.setattr(triton_dwconv, "BWD_BLOCK_S", block_s)
    monkeypatch.setattr(triton_dwconv, "BWD_PROGRAMS", programs)
    x = torch.randn(3, 2, 7, 9, dtype=torch.float64, requires_grad=True)
    weight, bias = (t.requires_grad_(True) for t in _params(2, 3, True))
    y = depthwise_conv2d_silu(x, weight, bias, backend="triton")
    y_ref = depthwise_conv2d_silu_ref(x, weight, bias)
    dy = torch.randn_like(y_ref)
    for g, g_ref in zip(torch.autograd.grad(y, [x, weight, bias], dy),
                        torch.autograd.grad(y_ref, [x, weight, bias], dy), strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-10)


@needs_triton
def test_bias_gradient_keeps_its_own_dtype():
    """dbias comes back in the bias' dtype straight from the float64 sums, not through the weight's (bf16 here)."""
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    weight, bias = _params(3, 3, True)
    weight = weight.bfloat16().requires_grad_(True)
    bias.requires_grad_(True)
    y = depthwise_conv2d_silu(x, weight, bias, backend="triton")
    dy = torch.randn_like(y)
    dw, db = torch.autograd.grad(y, [weight, bias], dy)
    w_ref, b_ref = weight.detach().double().requires_grad_(True), bias.detach().clone().requires_grad_(True)
    dw_ref, db_ref = torch.autograd.grad(depthwise_conv2d_silu_ref(x, w_ref, b_ref), [w_ref, b_ref], dy)
    assert dw.dtype == torch.bfloat16 and db.dtype == torch.float64
    torch.testing.assert_close(db, db_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(dw, dw_ref.bfloat16())


@pytest.mark.parametrize("sources, batch_second", LAYOUTS)
@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_gradcheck_fp64(backend, sources, batch_second):
    x = torch.randn(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    weight, bias = (t.requires_grad_(True) for t in _params(2, 3, True))
    assert torch.autograd.gradcheck(
        lambda *a: depthwise_conv2d_silu(*a, backend=backend, sources=sources, batch_second=batch_second),
        (x, weight, bias))


def test_two_sources_are_the_map_row_major_then_column_major():
    """The reference's sources=2 layout, element by element: (b, 0, c, i * W + j) and (b, 1, c, j * H + i)."""
    y = torch.arange(2 * 3 * 4 * 5, dtype=torch.float64).view(2, 3, 4, 5)
    s = _spread_ref(y)
    assert s.shape == (2, 2, 3, 20)
    b, c, i, j = 1, 2, 3, 1
    assert s[b, 0, c, i * 5 + j] == y[b, c, i, j] and s[b, 1, c, j * 4 + i] == y[b, c, i, j]
    stored = _spread_ref(y, batch_second=True)  # the same values, stored (2, C, B, H * W)
    assert torch.equal(stored, s) and stored.permute(1, 2, 0, 3).is_contiguous()


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_lower_precision_inputs_keep_their_dtype(dtype):
    x = torch.randn(2, 4, 9, 11).to(dtype).requires_grad_(True)
    weight, bias = (t.float().requires_grad_(True) for t in _params(4, 3, True))
    y = depthwise_conv2d_silu(x, weight, bias, backend="triton")
    assert y.dtype == dtype
    y_ref = depthwise_conv2d_silu_ref(x.double(), weight.double(), bias.double())
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(y.double(), y_ref, rtol=tol, atol=tol)
    dx, dw, db = torch.autograd.grad(y.float().sum(), [x, weight, bias])
    assert dx.dtype == dtype and dw.dtype == torch.float32 and db.dtype == torch.float32


@pytest.mark.parametrize("make, error, match", [
    (lambda: (torch.randn(2, 4, 5), torch.randn(4, 1, 3, 3), None), ValueError, r"expected x of shape \(B, C, H, W\)"),
    (lambda: (torch.randn(2, 4, 5, 5), torch.randn(4, 1, 2, 2), None), ValueError, r"weight must be \(C=4, 1, K, K\)"),
    (lambda: (torch.randn(2, 4, 5, 5), torch.randn(3, 1, 3, 3), None), ValueError, r"weight must be \(C=4"),
    (lambda: (torch.randn(2, 4, 5, 5), torch.randn(4, 1, 3, 3), torch.randn(3)), ValueError, r"bias must be \(4,\)"),
    (lambda: (torch.randn(2, 4, 5, 5).long(), torch.randn(4, 1, 3, 3), None), TypeError, "x must be float64"),
    (lambda: (torch.randn(2, 4, 5, 5), "w", None), TypeError, "weight must be a torch.Tensor"),
    (lambda: (torch.randn(2, 4, 5, 5), torch.randn(4, 1, 3, 3), None, "torch", 3), ValueError, "sources must be 1"),
    (lambda: (torch.randn(2, 4, 5, 5), torch.randn(4, 1, 3, 3), None, "torch", 2, 3), ValueError,
     "consumers must be 1 or 2"),
    (lambda: (torch.randn(2, 4, 5, 5), torch.randn(4, 1, 3, 3), None, "torch", 1, 1, True), ValueError,
     "batch_second is a layout of the two sources"),
])
def test_bad_arguments_name_the_problem(make, error, match):
    with pytest.raises(error, match=match):
        depthwise_conv2d_silu(*make())


@needs_triton
def test_custom_op_passes_opcheck():
    from mambaeye.ops.dwconv import _fwd

    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    weight, bias = (t.float().requires_grad_(True) for t in _params(3, 3, True))
    for b in (bias, None):
        for save_pre in (False, True):
            for sources, batch_second in ((1, False), (2, False), (2, True)):
                torch.library.opcheck(_fwd, (x, weight, b, save_pre, sources, batch_second))


@needs_triton
@pytest.mark.parametrize("sources, batch_second", LAYOUTS)
def test_compile_fullgraph_traces_the_custom_op_and_matches_eager(sources, batch_second):
    x = torch.randn(2, 4, 6, 7, requires_grad=True)
    weight, bias = (t.float().requires_grad_(True) for t in _params(4, 3, True))

    def fn(x, w, b):
        y = depthwise_conv2d_silu(x[:, :, 1:], w, b, backend="triton", sources=sources, batch_second=batch_second)
        return y.square().sum()

    assert_compiled_matches_eager(fn, (x, weight, bias))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("sources, batch_second", LAYOUTS)
def test_triton_gpu_bf16_vmamba_t_stage1(sources, batch_second):
    """VMamba-T's first SS2D conv (128, 96, 56, 56) in bf16 with fp32 weights, under autocast as in training."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(128, 96, 56, 56, device="cuda", generator=gen).bfloat16().requires_grad_(True)
    weight = (torch.randn(96, 1, 3, 3, device="cuda", generator=gen) / 3).requires_grad_(True)
    with torch.autocast("cuda", torch.bfloat16):
        y = depthwise_conv2d_silu(x, weight, sources=sources, batch_second=batch_second)
    leaves = [x.detach().float().requires_grad_(True), weight.detach().clone().requires_grad_(True)]
    y_ref = depthwise_conv2d_silu_ref(*leaves)
    y_ref = y_ref if sources == 1 else _spread_ref(y_ref)
    assert y.dtype == torch.bfloat16
    assert rel_err(y, y_ref) < 1e-2
    dy = torch.randn(y.shape, device="cuda", generator=gen).bfloat16()
    for g, g_ref, name in zip(torch.autograd.grad(y, [x, weight], dy), torch.autograd.grad(y_ref, leaves, dy.float()),
                              ["dx", "dweight"], strict=True):
        err = rel_err(g, g_ref)
        assert err < 2e-2, f"{name}: relative error {err}"
