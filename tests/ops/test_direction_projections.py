"""mambaeye.ops.cross_scan.projection.direction_projections: the Triton kernel (interpreter on CPU, float16 - the
interpreter's bfloat16 tl.dot is wrong) against the two matmuls in float32, forward and every gradient, for one or
two directions a sequence, ranks and row counts that are not multiples of 16, tile edges along D and L, strided
sources (batch-second, a slice); the matmul path elsewhere; bad arguments; the custom op's registration and
torch.compile; bfloat16 at VMamba-T's first stage on the GPU."""

from __future__ import annotations

import pytest
import torch

from mambaeye.ops.cross_scan import projection as proj
from mambaeye.ops.cross_scan.projection import direction_projections
from mambaeye.ops.selective_scan import available_backends

from .scan_cases import assert_compiled_matches_eager, rel_err

needs_triton = pytest.mark.skipif("triton" not in available_backends("cpu"),
                                  reason="needs triton under TRITON_INTERPRET=1")


def _inputs(batch, n_src, per_source, dim, rank, dstate, length, dtype, device="cpu", seed=0):
    """src (B, S, D, L) in dtype, x_proj_weight (K, R + 2N, D) and dt_projs_weight (K, D, R) float32."""
    gen = torch.Generator(device=device).manual_seed(seed)
    k = n_src * per_source
    src = torch.randn(batch, n_src, dim, length, generator=gen, device=device).to(dtype)
    x_proj_weight = torch.randn(k, rank + 2 * dstate, dim, generator=gen, device=device) * dim ** -0.5
    dt_projs_weight = torch.randn(k, dim, rank, generator=gen, device=device) * rank ** -0.5
    return src, x_proj_weight, dt_projs_weight


def _reference(src, x_proj_weight, dt_projs_weight):
    """The two matmuls in float32, the weights rounded to src's dtype first (what autocast does) and the projection
    rounded to it before the dt product (what the kernel and the half-precision matmul do)."""
    dtype = src.dtype
    src32, wx, wdt = (t.to(dtype).float() for t in (src, x_proj_weight, dt_projs_weight))
    delta, x_dbl = proj._reference(src32, wx, wdt)
    rank = wdt.shape[2]
    delta_rounded = torch.matmul(wdt, x_dbl[:, :, :rank].to(dtype).float()).view(delta.shape)
    return delta_rounded, x_dbl


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


CASES = {  # (B, S, J, D, R, N, L): P = R + 2N padded to 16 / 32 / 64; D across 32-channel blocks; L across tiles
    "B2-S2-J2-D8-R6-N1-L49": (2, 2, 2, 8, 6, 1, 49),
    "B1-S1-J2-D70-R12-N4-L130": (1, 1, 2, 70, 12, 4, 130),
    "B2-S1-J1-D40-R24-N16-L300": (2, 1, 1, 40, 24, 16, 300),
    "B1-S4-J1-D33-R3-N1-L7": (1, 4, 1, 33, 3, 1, 7),
}


def _check_against_reference(src, x_proj_weight, dt_projs_weight, seed=1):
    """Forward and the gradients of src and both weights against _reference (a loss on delta and on x_dbl's B and
    C rows only, as the cross-scan uses them)."""
    rank = dt_projs_weight.shape[2]
    leaves = _leaves(src, x_proj_weight, dt_projs_weight)
    leaves_ref = [t.detach().float().clone().requires_grad_(True) for t in (src, x_proj_weight, dt_projs_weight)]
    leaves_ref[0] = leaves_ref[0].detach().requires_grad_(True)
    delta, x_dbl = direction_projections(*leaves)
    assert delta.dtype == src.dtype and x_dbl.dtype == src.dtype
    delta_ref, x_dbl_ref = _reference(*leaves_ref)
    if src.dtype == torch.float16:
        torch.testing.assert_close(delta.float(), delta_ref, rtol=2e-3, atol=4e-3)
        torch.testing.assert_close(x_dbl.float(), x_dbl_ref, rtol=2e-3, atol=4e-3)
    else:  # bf16: a projection value at a rounding boundary may round the other way (1 of 154M deltas at stage 1)
        assert rel_err(delta, delta_ref) < 5e-3 and rel_err(x_dbl, x_dbl_ref) < 5e-3
    gen = torch.Generator(device=src.device).manual_seed(seed)
    w_delta = torch.randn(delta.shape, generator=gen, device=src.device)
    w_bc = torch.randn(x_dbl[:, :, rank:].shape, generator=gen, device=src.device)

    def loss(d, x):
        return (d.float() * w_delta).sum() + (x[:, :, rank:].float() * w_bc).sum()

    grads = torch.autograd.grad(loss(delta, x_dbl), leaves)
    grads_ref = torch.autograd.grad(loss(delta_ref, x_dbl_ref), leaves_ref)
    for name, g, g_ref, leaf in zip(("dsrc", "dx_proj", "ddt_projs"), grads, grads_ref, leaves, strict=True):
        assert g.dtype == leaf.dtype and g.shape == leaf.shape, name
        assert rel_err(g, g_ref) < 5e-3, f"{name}: relative error {rel_err(g, g_ref)}"


@needs_triton
@pytest.mark.parametrize("case", list(CASES))
def test_kernel_matches_matmuls_with_gradients(case):
    src, wx, wdt = _inputs(*CASES[case], torch.float16)
    assert proj._use_kernel(src)
    _check_against_reference(src, wx, wdt)


@needs_triton
@pytest.mark.parametrize("layout", ["batch_second", "slice"])
def test_kernel_reads_strided_sources(layout):
    """A batch-second source (the K <= 2 cross-scan reads x in place) and a slice along D (channel stride larger
    than L): the kernel takes src's batch, sequence and channel strides."""
    src, wx, wdt = _inputs(3, 1, 2, 24, 6, 1, 40, torch.float16)
    if layout == "batch_second":
        src = src.transpose(0, 2).contiguous().transpose(0, 2)  # (B, 1, D, L) stored (D, 1, B, L)
    else:
        src = torch.cat([src, src.flip(2)], dim=2)[:, :, 5:29]
    assert not src.is_contiguous()
    _check_against_reference(src, wx, wdt)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_matmul_path_elsewhere(dtype):
    """float32/float64 (and bfloat16 on CPU) take the matmuls: the same numbers as the plain products."""
    src, wx, wdt = _inputs(2, 2, 2, 8, 6, 1, 49, dtype)
    assert not proj._use_kernel(src)
    wx, wdt = wx.to(dtype), wdt.to(dtype)
    delta, x_dbl = direction_projections(src, wx, wdt)
    x_ref = torch.matmul(wx.reshape(2, 16, 8), src).view(2, 4, 8, 49)
    torch.testing.assert_close(x_dbl, x_ref)
    torch.testing.assert_close(delta, torch.matmul(wdt, x_ref[:, :, :6]).view(2, 32, 49))


@needs_triton
def test_torch_backend_is_the_matmuls():
    src, wx, wdt = _inputs(1, 1, 2, 8, 6, 1, 20, torch.float16)
    wx, wdt = wx.half(), wdt.half()
    delta, x_dbl = direction_projections(src, wx, wdt, backend="torch")
    ref = proj._reference(src, wx, wdt)
    torch.testing.assert_close(delta, ref[0])
    torch.testing.assert_close(x_dbl, ref[1])


@pytest.mark.parametrize("shapes, match", [
    (((2, 4, 9), (4, 8, 6), (4, 6, 2)), r"expected src \(B, S, D, L\)"),
    (((2, 2, 6, 9), (4, 8, 5), (4, 6, 2)), r"must be \(K, P, D=6\)"),
    (((2, 2, 6, 9), (4, 8, 6), (4, 5, 2)), r"\(K, D=6, R\) with R <= P"),
    (((2, 2, 6, 9), (4, 3, 6), (4, 6, 4)), r"R <= P"),
    (((2, 2, 6, 9), (3, 8, 6), (3, 6, 2)), r"K=3 directions cannot read S=2 sequences"),
])
def test_bad_shapes_name_the_problem(shapes, match):
    with pytest.raises(ValueError, match=match):
        direction_projections(*(torch.randn(s) for s in shapes))


def test_bad_backend_is_named():
    with pytest.raises(ValueError, match="backend must be 'auto' or 'torch'"):
        direction_projections(torch.randn(1, 1, 3, 4), torch.randn(1, 4, 3), torch.randn(1, 3, 2), backend="triton")


@needs_triton
def test_custom_op_passes_opcheck():
    src, wx, wdt = _inputs(2, 2, 2, 8, 6, 1, 20, torch.float16)
    torch.library.opcheck(proj._fwd, tuple(_leaves(src, wx, wdt)))


@needs_triton
def test_compile_fullgraph_traces_the_custom_op_and_matches_eager():
    src, wx, wdt = _leaves(*_inputs(2, 2, 2, 8, 6, 1, 20, torch.float16))

    def fn(s, wx, wdt):
        delta, x_dbl = direction_projections(s[..., 1:], wx, wdt)
        return delta.float().square().sum() + x_dbl[:, :, 6:].float().sum()

    assert_compiled_matches_eager(fn, (src, wx, wdt))


@needs_triton
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_gradient_of_a_transposed_loss(compiled):
    """A loss on delta.transpose(0, 2) (its gradient may arrive non-contiguous) and none on x_dbl (its gradient is
    None / undefined): eager Function and custom op."""
    src, wx, wdt = _leaves(*_inputs(2, 1, 2, 8, 6, 1, 20, torch.float16))
    w_loss = torch.randn(20, 16, 2, generator=torch.Generator().manual_seed(2))

    def fn(s, wx, wdt):
        return (direction_projections(s, wx, wdt)[0].float().transpose(0, 2) * w_loss).sum()

    run = torch.compile(fn, fullgraph=True, backend="aot_eager") if compiled else fn
    grads = torch.autograd.grad(run(src, wx, wdt), [src, wx, wdt])
    leaves_ref = [t.detach().float().requires_grad_(True) for t in (src, wx, wdt)]
    loss_ref = (_reference(*leaves_ref)[0].transpose(0, 2) * w_loss).sum()
    for g, g_ref in zip(grads, torch.autograd.grad(loss_ref, leaves_ref), strict=True):
        assert rel_err(g, g_ref) < 5e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dim, side, rank", [(96, 56, 6), (384, 14, 24)], ids=["stage1", "stage3"])
def test_gpu_bf16_vmamba_t(dim, side, rank):
    """VMamba-T's first and third stages at batch 128: the two sources of the fused cross-scan, four directions,
    bf16 src, float32 weights."""
    src, wx, wdt = _inputs(128, 2, 2, dim, rank, 1, side * side, torch.bfloat16, device="cuda")
    _check_against_reference(src, wx, wdt)
