"""mambaeye.ops.layer_norm: the reference against the formula, the triton kernels (interpreter on CPU) against the
reference, forward and every gradient, any number of spatial dims, strided (channel-sliced) inputs, mixed dtypes,
autocast, the custom op's registration and torch.compile; the same for the residual add + norm."""

from __future__ import annotations

import pytest
import torch

from mambaeye.ops._layout import is_batch_second, to_batch_second
from mambaeye.ops.layer_norm import (
    _as_bcl,
    add_layer_norm_channel_first,
    add_layer_norm_channel_first_ref,
    layer_norm_channel_first,
    layer_norm_channel_first_ref,
)
from mambaeye.ops.selective_scan import available_backends

from .scan_cases import assert_compiled_matches_eager, rel_err

# the triton backend on CPU tensors needs Triton's interpreter (tests/conftest.py sets it when CUDA is absent)
needs_triton = pytest.mark.skipif("triton" not in available_backends("cpu"),
                                  reason="needs triton under TRITON_INTERPRET=1")
BACKENDS = ["torch", pytest.param("triton", marks=needs_triton)]


def _close(actual, expected, tol, name=""):
    """Max error within tol of the reference's scale (gradients through a large rstd are large)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, name
    scale = expected.abs().max().item() if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * max(scale, 1.0),
                               msg=lambda m: f"{name}: {m}")


def _params(dim, affine, dtype):
    w = (torch.randn(dim, dtype=dtype) * 0.5 + 1).requires_grad_(True) if affine == "affine" else None
    b = torch.randn(dim, dtype=dtype, requires_grad=True) if affine in ("affine", "bias_only") else None
    return w, b


def test_reference_matches_the_formula():
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    w, b = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    mean = x.mean(1, keepdim=True)
    var = ((x - mean) ** 2).mean(1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + 1e-6) * w[:, None, None] + b[:, None, None]
    torch.testing.assert_close(layer_norm_channel_first_ref(x, w, b, 1e-6), y)
    y16 = layer_norm_channel_first_ref(x.bfloat16(), w.float(), b.float())
    assert y16.dtype == torch.bfloat16


def _sliced(dtype):  # 13 channels read with channel stride 3 * 15: a view the kernel must not copy
    return torch.randn(2, 40, 3, 5, dtype=dtype)[:, 1:40:3]


def _channels_last(dtype):  # spatial dims not contiguous: copied first
    return torch.randn(2, 6, 4, 5, dtype=dtype).to(memory_format=torch.channels_last)


SHAPES = {
    "B2C5L7": lambda dt: torch.randn(2, 5, 7, dtype=dt),
    "B2C96_3x5": lambda dt: torch.randn(2, 96, 3, 5, dtype=dt),
    "B1C33_2x3x4": lambda dt: torch.randn(1, 33, 2, 3, 4, dtype=dt),
    "C1": lambda dt: torch.randn(3, 1, 10, dtype=dt),
    "no_spatial": lambda dt: torch.randn(4, 6, dtype=dt),
    "L300_three_blocks": lambda dt: torch.randn(2, 5, 300, dtype=dt),  # BLOCK_L 128: the last block is partial
    "channel_sliced": _sliced,
    "channels_last": _channels_last,
}


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("affine", ["affine", "bias_only", "none"])
@pytest.mark.parametrize("case", list(SHAPES))
def test_triton_matches_reference_with_gradients(case, affine, dtype):
    x = SHAPES[case](dtype).requires_grad_(True)
    w, b = _params(x.shape[1], affine, dtype)
    y = layer_norm_channel_first(x, w, b, eps=1e-5, backend="triton")
    y_ref = layer_norm_channel_first_ref(x, w, b, eps=1e-5)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    _close(y, y_ref, tol, "y")
    dy = torch.randn(y.shape, dtype=dtype)
    params = [t for t in (x, w, b) if t is not None]
    grads = torch.autograd.grad(y, params, dy)
    grads_ref = torch.autograd.grad(y_ref, params, dy)
    for g, g_ref, name in zip(grads, grads_ref, ["x", *(n for n, t in (("w", w), ("b", b)) if t is not None)],
                              strict=True):
        _close(g, g_ref, tol * 10, f"d{name}")


def test_vector_width_and_index_width_decisions():
    """VEC: the largest of 16, 8, 4 dividing L and every batch/channel stride (else 1); int64 offsets only past
    2**31."""
    from mambaeye.ops._layout import strides_by_vector as _vec

    x = torch.empty(2, 384, 196, device="meta")  # VMamba's 14x14 stage: L 196 = 4 * 49
    assert _vec(196, x, x)[:2] == (4, False) and _vec(196, x)[2] == [49, 384 * 49, 49]
    assert _vec(49, torch.empty(2, 768, 49, device="meta"))[0] == 1  # 7x7: odd rows
    assert _vec(196, x[:, 1:10:3])[0] == 4 and _vec(196, torch.empty(2, 5, 200, device="meta")[..., :196])[0] == 4
    assert _vec(195, torch.empty(2, 3, 195, device="meta"))[0] == 1
    assert _vec(784, torch.empty(2, 192, 784, device="meta"))[0] == 16  # 28x28: as Triton's own hint gave
    assert _vec(40, torch.empty(2, 3, 40, device="meta"))[0] == 8
    assert _vec(2**20, torch.empty(4, 2**10, 2**20, device="meta"))[1] is True


@needs_triton
@pytest.mark.parametrize("vec,idx64", [(1, False), (1, True), (4, False), (4, True)])
def test_kernel_variants_agree(vec, idx64, monkeypatch):
    """Every (VEC, IDX64) variant of both kernels (forced: int64 offsets need 2**31 elements to be chosen) gives the
    reference's add + norm and gradients - every tensor the kernels address - on L 300 with 6 channels (VEC 4 is
    valid there)."""
    from mambaeye.ops.layer_norm import triton_norm

    choose = triton_norm.strides_by_vector

    def forced(length, *tensors):
        strides = [length, *(v for t in tensors for v in t.stride()[:2])]
        return vec, idx64, choose(length, *tensors)[2] if vec == 4 else strides

    monkeypatch.setattr(triton_norm, "strides_by_vector", forced)
    assert choose(300, torch.empty(2, 6, 300))[0] == 4
    x = torch.randn(2, 6, 300, requires_grad=True)
    r = torch.randn(2, 6, 300).bfloat16().requires_grad_(True)  # its gradient is a second (bf16) output
    w, b, rb = (torch.randn(6, requires_grad=True) for _ in range(3))
    out = add_layer_norm_channel_first(x, r, w, b, branch_bias=rb, backend="triton")
    ref = add_layer_norm_channel_first_ref(x, r, w, b, branch_bias=rb)
    grad_out = (torch.randn(2, 6, 300), torch.randn(2, 6, 300))
    for got, want, name in zip(out, ref, ["s", "y"], strict=True):
        _close(got, want, 1e-5, name)
    grads = torch.autograd.grad(out, [x, r, w, b, rb], grad_out)
    grads_ref = torch.autograd.grad(ref, [x, r, w, b, rb], grad_out)
    for g, g_ref, name in zip(grads, grads_ref, ["dx", "dr", "dw", "db", "drb"], strict=True):
        _close(g, g_ref, 1e-2 if name == "dr" else 1e-4, name)


@needs_triton
@pytest.mark.parametrize("dim", [1000, 2048])
def test_triton_wide_channels(dim):
    """VMamba-B's last stage has 1024 channels: (BLOCK_C 1024/2048, BLOCK_L 16) tiles, L 20 over two blocks."""
    x = torch.randn(2, dim, 4, 5, requires_grad=True)
    w, b = _params(dim, "affine", torch.float32)
    y = layer_norm_channel_first(x, w, b, backend="triton")
    y_ref = layer_norm_channel_first_ref(x, w, b)
    _close(y, y_ref, 1e-5, "y")
    dy = torch.randn(y.shape)
    for g, g_ref, name in zip(torch.autograd.grad(y, [x, w, b], dy), torch.autograd.grad(y_ref, [x, w, b], dy),
                              ["dx", "dw", "db"], strict=True):
        _close(g, g_ref, 1e-4, name)


@needs_triton
def test_triton_reads_channel_slices_in_place_and_copies_channels_last():
    x = _sliced(torch.float32)
    assert _as_bcl(x).data_ptr() == x.data_ptr() and _as_bcl(x).stride()[:2] == x.stride()[:2]
    xl = _channels_last(torch.float32)
    assert _as_bcl(xl).data_ptr() != xl.data_ptr() and _as_bcl(xl).stride(-1) == 1
    y = layer_norm_channel_first(x, backend="triton")
    assert y.shape == x.shape and y.stride(-1) == 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("x_layout", ["batch_first", "batch_second"])
def test_batch_second_output(x_layout, backend):
    """batch_second=True stores y batch-second whatever x's layout (the triton kernel writes it so); values and
    every gradient equal the reference's, the triton backward reading a batch-second dy and writing dx in x's
    layout."""
    x = torch.randn(3, 6, 4, 5, dtype=torch.float64)
    if x_layout == "batch_second":
        x = to_batch_second(x)
    x.requires_grad_(True)
    w, b = _params(6, "affine", torch.float64)
    y = layer_norm_channel_first(x, w, b, backend=backend, batch_second=True)
    assert is_batch_second(y) and y.shape == x.shape
    y_ref = layer_norm_channel_first_ref(x, w, b)
    _close(y, y_ref, 1e-12, "y")
    dy = to_batch_second(torch.randn_like(y_ref))
    grads = torch.autograd.grad(y, [x, w, b], dy)
    for g, g_ref, name in zip(grads, torch.autograd.grad(y_ref, [x, w, b], dy), ["dx", "dw", "db"], strict=True):
        _close(g, g_ref, 1e-10, name)
    if backend == "triton":  # the reference's gradient layouts are autograd's
        assert is_batch_second(grads[0]) == (x_layout == "batch_second")


@needs_triton
def test_triton_forward_without_grad_and_summed_backward():
    """No input requires grad: the statistics are not stored; y.sum() sends a stride-0 (expanded) dy."""
    x, w, b = torch.randn(2, 7, 3, 3), torch.randn(7), torch.randn(7)
    with torch.no_grad():
        _close(layer_norm_channel_first(x, w, b, backend="triton"), layer_norm_channel_first_ref(x, w, b), 1e-5)
    x.requires_grad_(True)
    (dx,) = torch.autograd.grad(layer_norm_channel_first(x, w, b, backend="triton").sum(), [x])
    (dx_ref,) = torch.autograd.grad(layer_norm_channel_first_ref(x, w, b).sum(), [x])
    _close(dx, dx_ref, 1e-4, "dx")


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_fp64(backend):
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: layer_norm_channel_first(x, w, b, backend=backend), (x, w, b))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_input_with_fp32_params_stays_half(backend, dtype):
    x = torch.randn(2, 24, 4, 5).to(dtype).requires_grad_(True)
    w = (torch.randn(24) * 0.5 + 1).requires_grad_(True)
    b = torch.randn(24, requires_grad=True)
    y = layer_norm_channel_first(x, w, b, backend=backend)
    assert y.dtype == dtype
    x32 = x.detach().float().requires_grad_(True)
    y_ref = layer_norm_channel_first_ref(x32, w, b)
    _close(y.float(), y_ref, 1e-2, "y")
    dy = torch.randn(y.shape)
    dx, dw, db = torch.autograd.grad(y, [x, w, b], dy.to(dtype))
    dx_ref, dw_ref, db_ref = torch.autograd.grad(y_ref, [x32, w, b], dy.to(dtype).float())
    assert (dx.dtype, dw.dtype, db.dtype) == (dtype, torch.float32, torch.float32)
    _close(dx.float(), dx_ref, 1e-2, "dx")
    _close(dw, dw_ref, 1e-2, "dw")
    _close(db, db_ref, 1e-2, "db")


@pytest.mark.parametrize("backend", BACKENDS)
def test_autocast_keeps_the_input_dtype(backend):
    w, b = torch.randn(8), torch.randn(8)
    x = torch.randn(2, 8, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y32 = layer_norm_channel_first(x, w, b, backend=backend)
        y16 = layer_norm_channel_first(x.bfloat16(), w, b, backend=backend)
    assert (y32.dtype, y16.dtype) == (torch.float32, torch.bfloat16)
    _close(y32, layer_norm_channel_first_ref(x, w, b), 1e-5, "fp32 under autocast")
    _close(y16.float(), layer_norm_channel_first_ref(x.bfloat16().float(), w, b), 1e-2, "bf16 under autocast")


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_dtype(backend):
    """bf16 x with out_dtype float32 is F.layer_norm under autocast; float32 x with out_dtype bf16 rounds once."""
    w, b = torch.randn(6), torch.randn(6)
    x = torch.randn(2, 6, 5, requires_grad=True)
    y = layer_norm_channel_first(x.bfloat16(), w, b, backend=backend, out_dtype=torch.float32)
    assert y.dtype == torch.float32
    _close(y, layer_norm_channel_first_ref(x.detach().bfloat16().float(), w, b), 1e-5, "bf16 -> fp32")
    y16 = layer_norm_channel_first(x, w, b, backend=backend, out_dtype=torch.bfloat16)
    assert y16.dtype == torch.bfloat16
    _close(y16.float(), layer_norm_channel_first_ref(x.detach(), w, b), 1e-2, "fp32 -> bf16")
    (dx,) = torch.autograd.grad(y16.float().sum(), [x])
    assert dx.dtype == torch.float32 and torch.isfinite(dx).all()
    with pytest.raises(TypeError, match="out_dtype must be"):
        layer_norm_channel_first(x, w, b, backend=backend, out_dtype=torch.int32)


def test_auto_backend_on_cpu_is_the_reference():
    x, w, b = torch.randn(2, 5, 6), torch.randn(5), torch.randn(5)
    assert torch.equal(layer_norm_channel_first(x, w, b), layer_norm_channel_first_ref(x, w, b))


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(x=torch.randn(5)), ValueError, r"expected \(B, C, \*spatial\), got shape \(5,\)"),
    (dict(x=torch.randint(0, 3, (2, 3, 4))), TypeError, "x must be float64, float32, float16 or bfloat16"),
    (dict(weight=torch.randn(4)), ValueError, r"weight must be \(3,\) for x with 3 channels, got \(4,\)"),
    (dict(bias=torch.randn(3, 1)), ValueError, r"bias must be \(3,\)"),
    (dict(weight=torch.ones(3, dtype=torch.int32)), TypeError, "weight must be float64, float32"),
    (dict(bias=torch.randn(3, device="meta")), ValueError, "bias is on meta but x is on cpu"),
    (dict(backend="cuda"), ValueError, "backend must be one of .* got 'cuda'"),
])
def test_bad_arguments_name_the_problem(kwargs, error, match):
    args = dict(x=torch.randn(2, 3, 4), weight=torch.randn(3), bias=torch.randn(3))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        layer_norm_channel_first(**args)


# ---- the residual add + norm: (s, LN(s)) with s = x + branch (+ branch_bias)


def test_add_reference_is_the_rounded_sum_then_the_norm():
    x = torch.randn(2, 6, 3, 4)
    r = torch.randn(2, 6, 3, 4).bfloat16()
    rb, w, b = torch.randn(6), torch.randn(6), torch.randn(6)
    s, y = add_layer_norm_channel_first_ref(x, r, w, b, 1e-6, branch_bias=rb, out_dtype=torch.bfloat16)
    assert (s.dtype, y.dtype) == (torch.float32, torch.bfloat16)
    torch.testing.assert_close(s, x + r.float() + rb[:, None, None])
    torch.testing.assert_close(y, layer_norm_channel_first_ref(s, w, b, 1e-6, torch.bfloat16))
    s16, _ = add_layer_norm_channel_first_ref(x.bfloat16(), r)  # bf16 + bf16: the sum is rounded to bf16
    assert s16.dtype == torch.bfloat16 and torch.equal(s16, (x.bfloat16().float() + r.float()).bfloat16())


ADD_DTYPES = {  # (x, branch): the residual stream and the branch
    "fp64": (torch.float64, torch.float64),
    "fp32": (torch.float32, torch.float32),
    "fp32+bf16": (torch.float32, torch.bfloat16),  # VMamba under autocast: fp32 residual, bf16 branch
    "bf16+fp32": (torch.bfloat16, torch.float32),  # s is fp32: x's gradient is cast back to bf16
}


@needs_triton
@pytest.mark.parametrize("used", ["both", "s_only", "y_only"])
@pytest.mark.parametrize("branch_bias", [True, False], ids=["branch_bias", "no_branch_bias"])
@pytest.mark.parametrize("dtypes", list(ADD_DTYPES))
@pytest.mark.parametrize("case", ["B2C96_3x5", "L300_three_blocks", "channel_sliced", "channels_last"])
def test_triton_add_norm_matches_reference_with_gradients(case, dtypes, branch_bias, used):
    x_dtype, r_dtype = ADD_DTYPES[dtypes]
    x = SHAPES[case](x_dtype).requires_grad_(True)
    r = SHAPES[case](r_dtype).requires_grad_(True)
    dim = x.shape[1]
    w, b = _params(dim, "affine", torch.float32)
    rb = torch.randn(dim, requires_grad=True) if branch_bias else None
    s, y = add_layer_norm_channel_first(x, r, w, b, eps=1e-5, branch_bias=rb, backend="triton")
    s_ref, y_ref = add_layer_norm_channel_first_ref(x, r, w, b, eps=1e-5, branch_bias=rb)
    assert s.dtype == torch.promote_types(x_dtype, r_dtype) and y.dtype == s.dtype
    tol = 1e-10 if dtypes == "fp64" else 1e-5
    _close(s, s_ref, tol, "s")
    _close(y, y_ref, tol, "y")
    outputs, outputs_ref = {"both": ((s, y), (s_ref, y_ref)), "s_only": ((s,), (s_ref,)),
                            "y_only": ((y,), (y_ref,))}[used]
    grad_out = [torch.randn(t.shape, dtype=t.dtype) for t in outputs]
    params = [t for t in (x, r, w, b, rb) if t is not None]
    names = ["x", "branch", "w", "b", "branch_bias"][:len(params)]
    grads = torch.autograd.grad(outputs, params, grad_out, allow_unused=True)
    grads_ref = torch.autograd.grad(outputs_ref, params, grad_out, allow_unused=True)
    for g, g_ref, name in zip(grads, grads_ref, names, strict=True):
        if g_ref is None:  # s only: no gradient reaches the norm's weight and bias
            assert g is None or not g.any(), f"d{name}"
            continue
        assert g.dtype == g_ref.dtype, f"d{name}: {g.dtype} vs {g_ref.dtype}"
        half = torch.bfloat16 in (g.dtype, x_dtype, r_dtype)
        _close(g.double(), g_ref.double(), 1e-2 if half else tol * 10, f"d{name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_add_norm_gradcheck_fp64(backend):
    def fn(x, r, w, b, rb):
        return add_layer_norm_channel_first(x, r, w, b, branch_bias=rb, backend=backend)

    inputs = (torch.randn(2, 3, 2, 2, dtype=torch.float64), torch.randn(2, 3, 2, 2, dtype=torch.float64),
              *(torch.randn(3, dtype=torch.float64) for _ in range(3)))
    assert torch.autograd.gradcheck(fn, tuple(t.requires_grad_(True) for t in inputs))


@pytest.mark.parametrize("backend", BACKENDS)
def test_add_norm_under_autocast(backend):
    """The VMamba block's case: a float32 residual stream, a bf16 branch, the normalised output in bf16."""
    x, r, w, b = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3).bfloat16(), torch.randn(8), torch.randn(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s, y = add_layer_norm_channel_first(x, r, w, b, backend=backend, out_dtype=torch.bfloat16)
    assert (s.dtype, y.dtype) == (torch.float32, torch.bfloat16)
    s_ref, y_ref = add_layer_norm_channel_first_ref(x, r, w, b, out_dtype=torch.bfloat16)
    torch.testing.assert_close(s, s_ref)
    _close(y.float(), y_ref.float(), 1e-2, "y")


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(branch=torch.randn(2, 3, 5)), ValueError, r"branch must have x's shape \(2, 3, 4\), got \(2, 3, 5\)"),
    (dict(branch=None), TypeError, "branch must be a torch.Tensor, got None"),
    (dict(branch=torch.ones(2, 3, 4, dtype=torch.int64)), TypeError, "branch must be float64, float32"),
    (dict(branch=torch.randn(2, 3, 4, device="meta")), ValueError, "branch is on meta but x is on cpu"),
    (dict(branch_bias=torch.randn(4)), ValueError, r"branch_bias must be \(3,\) for x with 3 channels"),
    (dict(out_dtype=torch.int8), TypeError, "add_layer_norm_channel_first: out_dtype must be"),
])
def test_add_norm_bad_arguments_name_the_problem(kwargs, error, match):
    args = dict(x=torch.randn(2, 3, 4), branch=torch.randn(2, 3, 4), weight=torch.randn(3), bias=torch.randn(3))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        add_layer_norm_channel_first(**args)


@needs_triton
@pytest.mark.parametrize("branch", [None, torch.float32, torch.float64], ids=["norm", "add_fp32", "add_fp64"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "none"])
def test_custom_ops_pass_opcheck(affine, branch):
    from mambaeye.ops.layer_norm import _ln_bwd, _ln_fwd

    x = torch.randn(2, 5, 6, requires_grad=True)
    w, b = (torch.randn(5, requires_grad=True), torch.randn(5, requires_grad=True)) if affine else (None, None)
    r = torch.randn(2, 5, 6, dtype=branch, requires_grad=True) if branch is not None else None
    rb = torch.randn(5, requires_grad=True) if branch is not None else None
    for batch_second in (False, True):
        torch.library.opcheck(_ln_fwd, (x, w, b, 1e-5, True, torch.float32, r, rb, batch_second))
    # the backward op itself has no autograd formula (no double backward): its inputs do not require grad
    x, w, b, r, rb = (t.detach() if t is not None else None for t in (x, w, b, r, rb))
    _, mean, rstd, s = _ln_fwd(x, w, b, 1e-5, True, torch.float32, r, rb, False)
    normed = s if r is not None else x
    ds = torch.randn(normed.shape, dtype=normed.dtype) if r is not None else None
    torch.library.opcheck(_ln_bwd, (torch.randn(2, 5, 6), normed, w, b, mean, rstd, ds,
                                    r.dtype if r is not None else None, rb))


@needs_triton
def test_compile_fullgraph_traces_the_custom_op_and_matches_eager():
    """Eager calls go through an autograd.Function; torch.compile traces the registered custom op instead."""
    x = torch.randn(2, 6, 3, 4, requires_grad=True)
    w, b = torch.randn(6, requires_grad=True), torch.randn(6, requires_grad=True)

    def fn(x, w, b):
        return layer_norm_channel_first(x[:, 1:], w[1:], b[1:], backend="triton")

    assert_compiled_matches_eager(fn, (x, w, b), loss=lambda out: out.square().sum())


@needs_triton
def test_compile_fullgraph_traces_the_add_norm_and_matches_eager():
    x, r = torch.randn(2, 6, 3, 4, requires_grad=True), torch.randn(2, 6, 3, 4, requires_grad=True)
    w, b, rb = (torch.randn(6, requires_grad=True) for _ in range(3))

    def fn(x, r, w, b, rb):
        return add_layer_norm_channel_first(x, r, w, b, branch_bias=rb, backend="triton")

    assert_compiled_matches_eager(fn, (x, r, w, b, rb), loss=lambda out: out[0].sum() + out[1].square().sum())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("shape", [(128, 96, 56, 56), (128, 768, 7, 7)], ids=["vmamba_t_stage1", "vmamba_t_stage4"])
def test_triton_gpu_bf16_against_fp32(shape):
    """VMamba-T's first and last stage activations in bf16 with fp32 parameters against the fp32 reference."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    dim = shape[1]
    x = torch.randn(shape, device="cuda", generator=gen).bfloat16().requires_grad_(True)
    w = (torch.randn(dim, device="cuda", generator=gen) * 0.5 + 1).requires_grad_(True)
    b = torch.randn(dim, device="cuda", generator=gen, requires_grad=True)
    y = layer_norm_channel_first(x, w, b)
    assert y.dtype == torch.bfloat16
    leaves = [x.detach().float().requires_grad_(True), w.detach().clone().requires_grad_(True),
              b.detach().clone().requires_grad_(True)]
    y_ref = layer_norm_channel_first_ref(*leaves)
    torch.testing.assert_close(y.float(), y_ref, rtol=1e-2, atol=2e-2)
    dy = torch.randn(shape, device="cuda", generator=gen).bfloat16()
    grads = torch.autograd.grad(y, [x, w, b], dy)
    grads_ref = torch.autograd.grad(y_ref, leaves, dy.float())
    for g, g_ref, name in zip(grads, grads_ref, ["dx", "dw", "db"], strict=True):
        err = ((g.float() - g_ref).norm() / g_ref.norm()).item()
        assert err < 1e-2, f"{name}: relative error {err}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("shape", [(128, 96, 56, 56), (128, 384, 14, 14), (128, 768, 7, 7)],
                         ids=["vmamba_t_stage1", "vmamba_t_stage3", "vmamba_t_stage4"])
def test_triton_gpu_add_norm_fp32_residual_bf16_branch(shape):
    """VMamba-T's residual add + pre-norm under autocast: float32 stream, bf16 branch with fc2's float32 bias, bf16
    output, against the float64 reference."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    dim = shape[1]
    x = torch.randn(shape, device="cuda", generator=gen).requires_grad_(True)
    r = torch.randn(shape, device="cuda", generator=gen).bfloat16().requires_grad_(True)
    w = (torch.randn(dim, device="cuda", generator=gen) * 0.5 + 1).requires_grad_(True)
    b, rb = (torch.randn(dim, device="cuda", generator=gen, requires_grad=True) for _ in range(2))
    s, y = add_layer_norm_channel_first(x, r, w, b, branch_bias=rb, out_dtype=torch.bfloat16)
    assert (s.dtype, y.dtype) == (torch.float32, torch.bfloat16)
    leaves = [t.detach().double().requires_grad_(True) for t in (x, r, w, b, rb)]
    s_ref, y_ref = add_layer_norm_channel_first_ref(leaves[0], leaves[1], *leaves[2:4], branch_bias=leaves[4])
    assert rel_err(s, s_ref) < 1e-6 and rel_err(y, y_ref) < 1e-2
    ds = torch.randn(shape, device="cuda", generator=gen)
    dy = torch.randn(shape, device="cuda", generator=gen).bfloat16()
    grads = torch.autograd.grad((s, y), [x, r, w, b, rb], (ds, dy))
    grads_ref = torch.autograd.grad((s_ref, y_ref), leaves, (ds.double(), dy.double()))
    assert [g.dtype for g in grads] == [torch.float32, torch.bfloat16, torch.float32, torch.float32, torch.float32]
    for g, g_ref, name in zip(grads, grads_ref, ["dx", "dbranch", "dw", "db", "dbranch_bias"], strict=True):
        assert rel_err(g, g_ref) < 1e-2, f"{name}: relative error {rel_err(g, g_ref)}"
