"""mambaeye.ops.bias_gelu: the reference against nn.GELU, the triton kernels (interpreter on CPU) against the
reference, forward and both gradients, any number of spatial dims, strided inputs, half inputs with fp32 bias,
autocast, bad arguments, the custom ops' registration and torch.compile."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mambaeye.ops._layout import is_batch_second, to_batch_second
from mambaeye.ops.bias_gelu import bias_gelu_channel_first, bias_gelu_channel_first_ref
from mambaeye.ops.selective_scan import available_backends

from .scan_cases import assert_compiled_matches_eager

needs_triton = pytest.mark.skipif("triton" not in available_backends("cpu"),
                                  reason="needs triton under TRITON_INTERPRET=1")
BACKENDS = ["torch", pytest.param("triton", marks=needs_triton)]


def test_reference_is_gelu_of_x_plus_bias():
    x, b = torch.randn(2, 6, 3, 4, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    torch.testing.assert_close(bias_gelu_channel_first_ref(x, b), torch.nn.GELU()(x + b[:, None, None]))
    assert bias_gelu_channel_first_ref(x.bfloat16(), b.float()).dtype == torch.bfloat16


CASES = {  # name: x maker; L = 1500 crosses several of the kernel's position blocks (MAX_BLOCK_L)
    "B2-C5-L1500": lambda dt: torch.randn(2, 5, 1500, dtype=dt),
    "B3-C4-7x9": lambda dt: torch.randn(3, 4, 7, 9, dtype=dt),
    "B1-C3-2x3x5": lambda dt: torch.randn(1, 3, 2, 3, 5, dtype=dt),
    "B2-C6-no-spatial": lambda dt: torch.randn(2, 6, dtype=dt),
    "channel-slice": lambda dt: torch.randn(2, 13, 5, 6, dtype=dt)[:, 1:13:2],  # read in place (stride 60)
    "channels-last": lambda dt: torch.randn(2, 6, 4, 5, dtype=dt).to(memory_format=torch.channels_last),
    "batch-second": lambda dt: to_batch_second(torch.randn(3, 6, 4, 5, dtype=dt)),  # read and written so
}


@needs_triton
@pytest.mark.parametrize("case", list(CASES))
def test_triton_matches_reference_with_gradients(case):
    x = CASES[case](torch.float64).requires_grad_(True)
    b = torch.randn(x.shape[1], dtype=torch.float64, requires_grad=True)
    y = bias_gelu_channel_first(x, b, backend="triton")
    y_ref = bias_gelu_channel_first_ref(x, b)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y_ref)
    grads = torch.autograd.grad(y, [x, b], dy)
    grads_ref = torch.autograd.grad(y_ref, [x, b], dy)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-10)
    if case == "batch-second":
        assert is_batch_second(y) and is_batch_second(grads[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_fp64(backend):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, b: bias_gelu_channel_first(x, b, backend=backend), (x, b))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_input_with_fp32_bias_stays_half(backend, dtype):
    x = torch.randn(2, 8, 33, dtype=dtype, requires_grad=True)
    b = torch.randn(8, requires_grad=True)
    y = bias_gelu_channel_first(x, b, backend=backend)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), F.gelu(x.float() + b[:, None]), rtol=1e-2, atol=1e-2)
    dx, db = torch.autograd.grad(y.float().sum(), [x, b])
    assert dx.dtype == dtype and db.dtype == torch.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_autocast_keeps_the_input_dtype(backend):
    x, b = torch.randn(2, 4, 9, dtype=torch.bfloat16), torch.randn(4)
    with torch.autocast("cpu", torch.bfloat16):
        assert bias_gelu_channel_first(x, b, backend=backend).dtype == torch.bfloat16
        assert bias_gelu_channel_first(x.float(), b, backend=backend).dtype == torch.float32


@pytest.mark.parametrize("make, error, match", [
    (lambda: (torch.randn(2, 4, 5), torch.randn(3)), ValueError, r"bias must be \(4,\)"),
    (lambda: (torch.randn(4), torch.randn(4)), ValueError, r"expected x of shape \(B, C, \*spatial\)"),
    (lambda: (torch.randn(2, 4, 5).long(), torch.randn(4)), TypeError, "x must be float64"),
    (lambda: (torch.randn(2, 4, 5), [0.0] * 4), TypeError, "bias must be a torch.Tensor"),
])
def test_bad_arguments_name_the_problem(make, error, match):
    with pytest.raises(error, match=match):
        bias_gelu_channel_first(*make())


@needs_triton
def test_custom_ops_pass_opcheck():
    from mambaeye.ops.bias_gelu import _bwd, _fwd

    x, b = torch.randn(2, 5, 6, requires_grad=True), torch.randn(5, requires_grad=True)
    torch.library.opcheck(_fwd, (x, b))
    torch.library.opcheck(_bwd, (torch.randn(2, 5, 6), x.detach(), b.detach()))


@needs_triton
def test_compile_fullgraph_traces_the_custom_op_and_matches_eager():
    x, b = torch.randn(2, 6, 3, 4, requires_grad=True), torch.randn(6, requires_grad=True)

    def fn(x, b):
        return bias_gelu_channel_first(x[:, 1:], b[1:], backend="triton")

    assert_compiled_matches_eager(fn, (x, b), loss=lambda out: out.square().sum())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_gpu_bf16_against_fp32():
    """VMamba-T's first-stage MLP hidden activations (128, 384, 56, 56) in bf16 with an fp32 bias."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(128, 384, 56, 56, device="cuda", generator=gen).bfloat16().requires_grad_(True)
    b = torch.randn(384, device="cuda", generator=gen, requires_grad=True)
    y = bias_gelu_channel_first(x, b)
    leaves = [x.detach().float().requires_grad_(True), b.detach().clone().requires_grad_(True)]
    y_ref = bias_gelu_channel_first_ref(*leaves)
    torch.testing.assert_close(y.float(), y_ref, rtol=1e-2, atol=1e-2)
    dy = torch.randn(x.shape, device="cuda", generator=gen).bfloat16()
    for g, g_ref, name in zip(torch.autograd.grad(y, [x, b], dy), torch.autograd.grad(y_ref, leaves, dy.float()),
                              ["dx", "dbias"], strict=True):
        err = ((g.float() - g_ref).norm() / g_ref.norm()).item()
        assert err < 1e-2, f"{name}: relative error {err}"
