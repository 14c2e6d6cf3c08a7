"""mambaeye.ops.causal_conv1d: the torch path against a hand-written loop, the triton kernels (interpreter on CPU)
against the torch path, forward and every gradient, causal and reverse, strided (channel-major) inputs."""

from __future__ import annotations

import pytest
import torch

from mambaeye.ops.causal_conv1d import causal_conv1d, causal_conv1d_ref
from mambaeye.ops.selective_scan import _HAS_TRITON

from .scan_cases import assert_compiled_matches_eager

needs_triton = pytest.mark.skipif(not _HAS_TRITON, reason="triton is not installed")


def _loop(x, w, b, silu, reverse):
    """y[l] = b + sum_j w[K-1-j] x[l -+ j], straight from the definition."""
    batch, dim, length = x.shape
    width = w.shape[1]
    y = torch.zeros_like(x)
    for l in range(length):
        acc = b.clone()[None].expand(batch, dim).clone() if b is not None else x.new_zeros(batch, dim)
        for j in range(width):
            src = l + j if reverse else l - j
            if 0 <= src < length:
                acc = acc + w[:, width - 1 - j] * x[:, :, src]
        y[:, :, l] = acc
    return torch.nn.functional.silu(y) if silu else y


@pytest.mark.parametrize("reverse", [False, True], ids=["causal", "reverse"])
def test_reference_matches_the_definition(reverse):
    x = torch.randn(2, 3, 11, dtype=torch.float64)
    w, b = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    torch.testing.assert_close(causal_conv1d_ref(x, w, b, "silu", reverse), _loop(x, w, b, True, reverse))


def test_reverse_is_the_flipped_causal_conv():
    x, w, b = torch.randn(2, 5, 9), torch.randn(5, 3), torch.randn(5)
    torch.testing.assert_close(causal_conv1d(x, w, b, reverse=True),
                               causal_conv1d(x.flip(-1), w, b).flip(-1))


@needs_triton
@pytest.mark.parametrize("width", [2, 4])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("silu", [True, False], ids=["silu", "linear"])
@pytest.mark.parametrize("reverse", [False, True], ids=["causal", "reverse"])
def test_triton_matches_torch_with_gradients(width, bias, silu, reverse):
    # L 300 crosses a 256-step tile; D 6 leaves a partial channel block; channel-major (D, B, L) storage
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, 300, generator=gen).permute(1, 0, 2).requires_grad_(True)
    w = torch.randn(6, 1, width, generator=gen, requires_grad=True)
    b = torch.randn(6, generator=gen, requires_grad=True) if bias else None
    act = "silu" if silu else None
    y = causal_conv1d(x, w, b, act, reverse, backend="triton")
    y_ref = causal_conv1d(x, w, b, act, reverse, backend="torch")
    assert y.stride() == x.stride(), "the output keeps the input's channel-major layout"
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    dy = torch.randn(y.shape, generator=gen)
    params = [x, w] + ([b] if bias else [])
    grads = torch.autograd.grad(y, params, dy)
    grads_ref = torch.autograd.grad(y_ref, params, dy)
    for g, g_ref, name in zip(grads, grads_ref, ["x", "weight", "bias"], strict=False):
        assert g.shape == g_ref.shape, name
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"d{n}: {m}")


@needs_triton
def test_triton_bf16_close_to_fp32():
    x = torch.randn(2, 4, 40)
    w, b = torch.randn(4, 4), torch.randn(4)
    y = causal_conv1d(x.bfloat16(), w, b, "silu", backend="triton")
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), causal_conv1d_ref(x, w, b, "silu"), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("kwargs,match", [
    (dict(x=torch.randn(2, 3)), r"x must be \(batch, dim, length\)"),
    (dict(weight=torch.randn(4, 3)), r"weight must be \(3, width\)"),
    (dict(weight=torch.randn(3, 2, 4)), r"depthwise weight is \(dim, 1, width\)"),
    (dict(bias=torch.randn(4)), r"bias must be \(3,\)"),
    (dict(activation="relu"), "activation must be one of"),
    (dict(backend="cuda"), "backend must be one of .* got 'cuda'"),
])
def test_bad_arguments_name_the_problem(kwargs, match):
    args = dict(x=torch.randn(2, 3, 5), weight=torch.randn(3, 4), bias=torch.randn(3))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        causal_conv1d(**args)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("reverse", [False, True], ids=["causal", "reverse"])
def test_triton_gpu_bf16_against_fp64(reverse):
    """Vim's shape (B8 D384 L6085, channel-major storage) in bf16 on the GPU against the fp64 reference."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    x64 = torch.randn(384, 8, 6085, device="cuda", dtype=torch.float64, generator=gen).permute(1, 0, 2)
    w64 = torch.randn(384, 4, device="cuda", dtype=torch.float64, generator=gen) * 0.5
    b64 = torch.randn(384, device="cuda", dtype=torch.float64, generator=gen)
    x = x64.bfloat16().requires_grad_(True)
    w, b = w64.float().requires_grad_(True), b64.float().requires_grad_(True)
    y = causal_conv1d(x, w, b, "silu", reverse)
    leaves = [t.clone().requires_grad_(True) for t in (x.detach().double(), w64, b64)]
    y_ref = causal_conv1d_ref(*leaves, "silu", reverse)
    dy = torch.randn(y.shape, device="cuda", generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad(y, [x, w, b], dy.bfloat16())
    grads_ref = torch.autograd.grad(y_ref, leaves, dy.bfloat16().double())
    torch.testing.assert_close(y.double(), y_ref, rtol=2e-2, atol=2e-2)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        err = ((g.double() - g_ref).norm() / g_ref.norm()).item()
        assert err < 1e-2, err


@needs_triton
def test_compile_fullgraph_traces_the_custom_op_and_matches_eager():
    """Eager calls go through an autograd.Function; torch.compile traces the registered custom op instead."""
    x = torch.randn(2, 4, 19, requires_grad=True)
    w, b = torch.randn(4, 4, requires_grad=True), torch.randn(4, requires_grad=True)

    def fn(x, w, b):
        return causal_conv1d(x, w, b, "silu", reverse=True, backend="triton")

    assert_compiled_matches_eager(fn, (x, w, b), loss=lambda out: out.sum())


@needs_triton
def test_custom_op_passes_opcheck():
    from mambaeye.ops.causal_conv1d import _conv_fwd

    x = torch.randn(2, 3, 11, requires_grad=True)
    w, b = torch.randn(3, 4, requires_grad=True), torch.randn(3, requires_grad=True)
    torch.library.opcheck(_conv_fwd, (x, w, b, True, False))
