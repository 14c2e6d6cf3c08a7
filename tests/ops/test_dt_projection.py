"""mambaeye.ops.cross_scan.projection.dt_projection: the Triton kernel (interpreter on CPU, float16 - the interpreter's
bfloat16 tl.dot is wrong) against the matmul, forward and both gradients, on VMamba's strided dts views, ranks that
are not multiples of 16, tile edges; the matmul path elsewhere; bad arguments; the custom op's registration and
torch.compile; bfloat16 at VMamba-T's first stage on the GPU."""

from __future__ import annotations

import pytest
import torch

from mambaeye.ops.cross_scan import projection as dtp
from mambaeye.ops.cross_scan.projection import dt_projection
from mambaeye.ops.selective_scan import available_backends

from .scan_cases import assert_compiled_matches_eager, rel_err

needs_triton = pytest.mark.skipif("triton" not in available_backends("cpu"),
                                  reason="needs triton under TRITON_INTERPRET=1")


def _inputs(batch, k, dim, rank, length, dtype, extra=2, device="cpu", seed=0, batch_second=False):
    """weight (K, D, R) float32 and dts as VMamba makes it: a slice of a (B, K, R + extra, L) projection, stored
    (K, R + extra, B, L) with ``batch_second`` (the fused cross-scan's batch-second sources)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    weight = torch.randn(k, dim, rank, generator=gen, device=device) * rank ** -0.5
    x_dbl = torch.randn(batch, k, rank + extra, length, generator=gen, device=device).to(dtype)
    if batch_second:
        x_dbl = x_dbl.permute(1, 2, 0, 3).contiguous().permute(2, 0, 1, 3)
    return weight, x_dbl[:, :, :rank]


def _stored_batch_second(t):
    """t (B, C, L) or (B, K, C, L) stored with the batch second-innermost: (C, B, L) / (K, C, B, L) memory."""
    return t.movedim(0, -2).is_contiguous()


def _reference(weight, dts):
    """The matmul in float32 with the weight rounded to dts' dtype first (what autocast does)."""
    batch, k, _, length = dts.shape
    return torch.matmul(weight.to(dts.dtype).float(), dts.float()).view(batch, k * weight.shape[1], length)


CASES = {  # (B, K, D, R, L): ranks padded to 16 / 32; L and D across tile edges (64 and 256-position tiles)
    "B2-K4-D8-R6-L49": (2, 4, 8, 6, 49),
    "B1-K2-D70-R12-L130": (1, 2, 70, 12, 130),
    "B2-K1-D40-R24-L600": (2, 1, 40, 24, 600),
}


@needs_triton
@pytest.mark.parametrize("batch_second", [False, True], ids=["batch-first", "batch-second"])
@pytest.mark.parametrize("case", list(CASES))
def test_half_matches_matmul_with_gradients(case, batch_second):
    """float16: batch-first dts take the Triton kernel, batch-second ones (B > 1) the K GEMMs over B*L, with a
    batch-second delta and dts gradient."""
    weight, dts = _inputs(*CASES[case], torch.float16, batch_second=batch_second)
    weight.requires_grad_(True)
    dts = dts.detach().requires_grad_(True)
    assert dtp._use_kernel(dts) == (not dtp._is_batch_second(dts))
    y = dt_projection(weight, dts)
    assert y.dtype == torch.float16 and y.shape == (dts.shape[0], weight.shape[0] * weight.shape[1], dts.shape[3])
    w_ref, dts_ref = weight.detach().clone().requires_grad_(True), dts.detach().float().requires_grad_(True)
    y_ref = _reference(w_ref, dts_ref)
    torch.testing.assert_close(y.float(), y_ref, rtol=2e-3, atol=2e-3)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).half()
    dw, ddts = torch.autograd.grad(y, [weight, dts], dy)
    dw_ref, ddts_ref = torch.autograd.grad(y_ref, [w_ref, dts_ref], dy.float())
    assert dw.dtype == torch.float32 and ddts.dtype == torch.float16
    if batch_second:
        assert _stored_batch_second(y) and _stored_batch_second(ddts)
    else:
        assert y.is_contiguous()
    torch.testing.assert_close(dw, dw_ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(ddts.float(), ddts_ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("batch_second", [False, True], ids=["batch-first", "batch-second"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_matmul_path_elsewhere(dtype, batch_second):
    """float32/float64 (and bfloat16 on CPU) take torch.matmul: the same numbers as the plain product, and the same
    gradients; batch-second dts as K GEMMs over all B*L positions, delta batch-second."""
    weight, dts = _inputs(2, 4, 8, 6, 49, dtype, batch_second=batch_second)
    assert not dtp._use_kernel(dts)
    weight = weight.to(dtype).requires_grad_(True)
    dts = dts.detach().requires_grad_(True)
    y, y_ref = dt_projection(weight, dts), torch.matmul(weight, dts).view(2, 32, 49)
    assert _stored_batch_second(y) == batch_second
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(y, y_ref, **tol)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    for g, g_ref in zip(torch.autograd.grad(y, [weight, dts], dy), torch.autograd.grad(y_ref, [weight, dts], dy),
                        strict=True):
        torch.testing.assert_close(g, g_ref, **tol)


@needs_triton
def test_torch_backend_is_the_matmul():
    weight, dts = _inputs(1, 2, 8, 6, 20, torch.float16)
    weight = weight.half()
    torch.testing.assert_close(dt_projection(weight, dts, backend="torch"), torch.matmul(weight, dts).view(1, 16, 20))


@pytest.mark.parametrize("make, match", [
    (lambda: (torch.randn(4, 8, 6), torch.randn(2, 4, 5, 9)), r"expected weight \(K, D, R\) and dts \(B, K, R, L\)"),
    (lambda: (torch.randn(8, 6), torch.randn(2, 4, 6, 9)), r"expected weight \(K, D, R\)"),
    (lambda: (torch.randn(4, 8, 6), torch.randn(2, 3, 6, 9)), r"got \(4, 8, 6\) and \(2, 3, 6, 9\)"),
])
def test_bad_shapes_name_the_problem(make, match):
    with pytest.raises(ValueError, match=match):
        dt_projection(*make())


def test_bad_backend_is_named():
    with pytest.raises(ValueError, match="backend must be 'auto' or 'torch'"):
        dt_projection(torch.randn(1, 2, 3), torch.randn(1, 1, 3, 4), backend="triton")


@needs_triton
def test_custom_op_passes_opcheck():
    weight, dts = _inputs(2, 2, 8, 6, 20, torch.float16)
    torch.library.opcheck(dtp._fwd, (weight.requires_grad_(True), dts.contiguous().requires_grad_(True)))


@needs_triton
def test_compile_fullgraph_traces_the_custom_op_and_matches_eager():
    weight, dts = _inputs(2, 2, 8, 6, 20, torch.float16)
    weight.requires_grad_(True)
    dts = dts.detach().requires_grad_(True)

    def fn(w, x):
        return dt_projection(w, x[..., 1:]).float().square().sum()

    assert_compiled_matches_eager(fn, (weight, dts))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_bf16_vmamba_t_stage1():
    """VMamba-T's first stage at batch 128: D 96, R 6, 56x56, the four directions, bf16 dts, fp32 weight."""
    weight, dts = _inputs(128, 4, 96, 6, 56 * 56, torch.bfloat16, device="cuda")
    weight.requires_grad_(True)
    dts = dts.detach().requires_grad_(True)
    y = dt_projection(weight, dts)
    w_ref, dts_ref = weight.detach().clone().requires_grad_(True), dts.detach().float().requires_grad_(True)
    y_ref = _reference(w_ref, dts_ref)
    assert rel_err(y, y_ref) < 1e-2
    dy = torch.randn_like(y)
    for g, g_ref, name in zip(torch.autograd.grad(y, [weight, dts], dy),
                              torch.autograd.grad(y_ref, [w_ref, dts_ref], dy.float()), ["dweight", "ddts"],
                              strict=True):
        err = rel_err(g, g_ref)
        assert err < 1e-2, f"{name}: relative error {err}"


@needs_triton
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_gradient_of_a_transposed_loss(compiled):
    """A loss on y.transpose(0, 2) (its gradient may arrive non-contiguous): eager Function and custom op."""
    weight, dts = _inputs(2, 2, 8, 6, 20, torch.float16)
    weight.requires_grad_(True)
    dts = dts.detach().requires_grad_(True)
    w_loss = torch.randn(20, 16, 2, generator=torch.Generator().manual_seed(2))

    def fn(w, x):
        return (dt_projection(w, x).float().transpose(0, 2) * w_loss).sum()

    run = torch.compile(fn, fullgraph=True, backend="aot_eager") if compiled else fn
    grads = torch.autograd.grad(run(weight, dts), [weight, dts])
    w_ref, dts_ref = weight.detach().clone().requires_grad_(True), dts.detach().float().requires_grad_(True)
    grads_ref = torch.autograd.grad((_reference(w_ref, dts_ref).transpose(0, 2) * w_loss).sum(), [w_ref, dts_ref])
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g.float(), g_ref, rtol=2e-2, atol=2e-2)
