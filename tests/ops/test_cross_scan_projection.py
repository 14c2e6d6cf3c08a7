"""mambaeye.ops.cross_scan.projection: the Triton dt projection (interpreter on CPU) against torch.matmul, forward
and both gradients, on rows read in place from a wider projection, the custom op's registration and compile."""

from __future__ import annotations

import pytest
import torch

from mambaeye.ops.selective_scan import available_backends

pytestmark = pytest.mark.skipif("triton" not in available_backends("cpu"),
                                reason="needs triton under TRITON_INTERPRET=1")


def _inputs(batch, k, dim, rank, length, dtype=torch.float64, extra=3):
    """weight (K, D, R) and dts (B, K, R, L) as a slice of a (B, K, R + extra, L) projection, like x_proj's."""
    weight = torch.randn(k, dim, rank, dtype=dtype, requires_grad=True)
    x_dbl = torch.randn(batch, k, rank + extra, length, dtype=dtype, requires_grad=True)
    return weight, x_dbl, x_dbl[:, :, :rank]


@pytest.mark.parametrize("batch,k,dim,rank,length", [(2, 4, 96, 6, 300), (1, 2, 10, 3, 7), (3, 1, 64, 24, 129)],
                         ids=["vmamba-like", "D10-masked", "K1-R24"])
def test_matches_matmul_with_gradients(batch, k, dim, rank, length):
    from mambaeye.ops.cross_scan.projection import dt_projection

    weight, x_dbl, dts = _inputs(batch, k, dim, rank, length)
    out = dt_projection(weight, dts)
    ref = torch.matmul(weight, dts).view(batch, k * dim, length)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, [weight, x_dbl], g), torch.autograd.grad(ref, [weight, x_dbl], g),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_half_rows_give_half_delta_and_fp32_weight_grad():
    from mambaeye.ops.cross_scan.projection import dt_projection

    weight, x_dbl, dts = _inputs(2, 4, 32, 5, 40, dtype=torch.float32)
    out = dt_projection(weight, dts.bfloat16())
    assert out.dtype == torch.bfloat16
    ref = torch.matmul(weight, dts).view(2, 4 * 32, 40)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=5e-2)
    dweight, = torch.autograd.grad(out.float().sum(), [weight])
    assert dweight.dtype == torch.float32


def test_bad_shapes_name_the_problem():
    from mambaeye.ops.cross_scan.projection import dt_projection

    with pytest.raises(ValueError, match=r"expected weight \(K, D, R\) and dts \(B, K, R, L\)"):
        dt_projection(torch.randn(4, 8, 6), torch.randn(2, 4, 5, 10))


def test_custom_op_passes_opcheck_and_compiles():
    from mambaeye.ops.cross_scan.projection import _dt_projection_op, dt_projection

    weight, x_dbl, dts = _inputs(2, 2, 8, 3, 12, dtype=torch.float32)
    torch.library.opcheck(_dt_projection_op, (weight, dts.contiguous()))
    ref = dt_projection(weight, dts)
    out = torch.compile(dt_projection, fullgraph=True, backend="aot_eager")(weight, dts)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(torch.autograd.grad(out.sum(), [weight, x_dbl]),
                               torch.autograd.grad(ref.sum(), [weight, x_dbl]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_bf16_at_vmamba_t_stage1():
    """VMamba-T's first stage (B 128, K 4, D 96, R 6, 56x56) in bf16 against the float32 matmul."""
    from mambaeye.ops.cross_scan.projection import dt_projection

    gen = torch.Generator(device="cuda").manual_seed(0)
    weight = torch.randn(4, 96, 6, device="cuda", generator=gen, requires_grad=True)
    x_dbl = torch.randn(128, 4, 8, 3136, device="cuda", generator=gen).bfloat16().requires_grad_(True)
    out = dt_projection(weight, x_dbl[:, :, :6])
    ref = torch.matmul(weight, x_dbl[:, :, :6].float()).view(128, 384, 3136)
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=3e-2)
    g = torch.randn(ref.shape, device="cuda", generator=gen).bfloat16()
    ours = torch.autograd.grad(out, [weight, x_dbl], g)
    theirs = torch.autograd.grad(ref, [weight, x_dbl], g.float())
    for a, b, name in zip(ours, theirs, ["dweight", "dx_dbl"], strict=True):
        err = ((a.float() - b.float()).norm() / b.float().norm()).item()
        assert err < 1e-2, f"{name}: relative error {err}"
