"""The fused cross-scan's tiled layout moves (mambaeye.ops.cross_scan.grid) against their PyTorch definitions."""

from __future__ import annotations

import pytest
import torch

from mambaeye.ops import available_backends

needs_triton_cpu = pytest.mark.skipif("triton" not in available_backends("cpu"),
                                     reason="needs triton and its interpreter (TRITON_INTERPRET=1, set without a GPU)")

# several planes a program (crossing batches, the last block ragged); one plane a program; 64 x 64 tiles with ragged
# edges, H > W
SHAPES = [(3, 5, 7, 9), (2, 3, 33, 40), (1, 2, 70, 65)]


def _spread_ref(x, sources, copies):
    batch, dim, height, width = x.shape
    layouts = [x.reshape(batch, dim, -1), x.transpose(2, 3).reshape(batch, dim, -1)][:sources]
    return torch.stack(layouts, 1)[:, :, None].expand(-1, -1, copies, -1, -1)


def _gather_ref(s, height, width):
    batch, _, _, dim, _ = s.shape
    y = s[:, 0].sum(1).view(batch, dim, height, width)
    if s.shape[1] == 2:
        y = y + s[:, 1].sum(1).view(batch, dim, width, height).transpose(2, 3)
    return y


@needs_triton_cpu
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("sources,copies", [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_spread_and_gather_match_the_definitions(shape, sources, copies):
    from mambaeye.ops.cross_scan.grid import gather, spread

    x = torch.randn(shape, dtype=torch.float64)
    assert torch.equal(spread(x, sources, copies), _spread_ref(x, sources, copies))
    s = torch.randn(shape[0], sources, copies, shape[1], shape[2] * shape[3], dtype=torch.float64)
    torch.testing.assert_close(gather(s, shape[2], shape[3]), _gather_ref(s, shape[2], shape[3]))


@needs_triton_cpu
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("sources", [1, 2])
def test_gather_silu_grad_is_silu_backward_of_the_gather(shape, sources):
    from mambaeye.ops.cross_scan.grid import gather_silu_grad

    pre = torch.randn(shape, dtype=torch.float64) * 4
    s = torch.randn(shape[0], sources, 1, shape[1], shape[2] * shape[3], dtype=torch.float64)
    expected = torch.ops.aten.silu_backward(_gather_ref(s, shape[2], shape[3]), pre)
    torch.testing.assert_close(gather_silu_grad(s, pre), expected)
    # two consumers' gradients (laid out alike) summed in the same pass
    s2 = torch.randn_like(s)
    expected2 = torch.ops.aten.silu_backward(_gather_ref(s + s2, shape[2], shape[3]), pre)
    torch.testing.assert_close(gather_silu_grad(s, pre, s2), expected2)
    with pytest.raises(ValueError, match=r"pre must be \(B=\d+, D=\d+, H, W\)"):
        gather_silu_grad(s, pre[:, :, 1:])
    with pytest.raises(ValueError, match="s2 must have s's shape"):
        gather_silu_grad(s, pre, s2[..., 1:])


@needs_triton_cpu
@pytest.mark.parametrize("sources", [1, 2])
def test_gather_reads_any_layout_of_whole_planes(sources):
    """s stored batch-second ((S, R, D, B, H*W) memory: the fused cross-scan's sources and the scan's outputs) or
    with the copies expanded (stride 0), s2 in yet another layout: the same sums as from contiguous inputs."""
    from mambaeye.ops.cross_scan.grid import gather, gather_silu_grad

    batch, dim, height, width = 3, 4, 5, 7
    dense = torch.randn(batch, sources, 2, dim, height * width, dtype=torch.float64)
    batch_second = dense.permute(1, 2, 3, 0, 4).contiguous().permute(3, 0, 1, 2, 4)
    expanded = dense[:, :, :1].expand(-1, -1, 2, -1, -1)
    for s in (batch_second, expanded):
        torch.testing.assert_close(gather(s, height, width), _gather_ref(s, height, width), rtol=1e-12, atol=0)
    pre = torch.randn(batch, dim, height, width, dtype=torch.float64)
    s, s2 = batch_second[:, :, :1], dense[:, :, 1:]
    expected = torch.ops.aten.silu_backward(_gather_ref(s + s2, height, width), pre)
    torch.testing.assert_close(gather_silu_grad(s, pre, s2), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(gather_silu_grad(s2, pre, s), expected, rtol=1e-12, atol=0)


@needs_triton_cpu
def test_each_is_the_others_backward_and_bf16_sums_in_fp32():
    from mambaeye.ops.cross_scan.grid import gather, spread

    x = torch.randn(1, 2, 33, 40, dtype=torch.float64, requires_grad=True)
    s = torch.randn(1, 2, 2, 2, 33 * 40, dtype=torch.float64, requires_grad=True)
    # adjoint pair: <spread(x), s> = <x, gather(s)>, and autograd's gradients are the adjoint moves
    torch.testing.assert_close((spread(x, 2, 2) * s).sum(), (x * gather(s, 33, 40)).sum())
    (gx,) = torch.autograd.grad((spread(x, 2, 2) * s.detach()).sum(), [x])
    torch.testing.assert_close(gx, _gather_ref(s.detach(), 33, 40))
    (gs,) = torch.autograd.grad((gather(s, 33, 40) * x.detach()).sum(), [s])
    torch.testing.assert_close(gs, _spread_ref(x.detach(), 2, 2))
    tiny = torch.randn(1, 1, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: spread(t, 2, 2), (tiny,))
    sb = torch.randn(1, 2, 2, 3, 35, dtype=torch.bfloat16)
    y = gather(sb, 5, 7)
    assert y.dtype == torch.bfloat16
    # summed in fp32 (exact for these few bf16 terms) and converted once: within one bf16 ulp of the exact sum
    # (Triton's CPU interpreter truncates where the GPU rounds to nearest)
    torch.testing.assert_close(y.double(), _gather_ref(sb.double(), 5, 7), rtol=2 ** -7, atol=1e-6)


@needs_triton_cpu
def test_custom_ops_pass_opcheck_and_bad_shapes_are_named():
    from mambaeye.ops.cross_scan.grid import _gather_op, _gather_silu_grad_op, _spread_op, gather, spread

    x = torch.randn(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(_spread_op, (x, 2, 2))
    torch.library.opcheck(_gather_op, (torch.randn(2, 2, 2, 3, 35, dtype=torch.float64, requires_grad=True), 5, 7))
    torch.library.opcheck(_gather_silu_grad_op, (torch.randn(2, 2, 1, 3, 35), torch.randn(2, 3, 5, 7), None))
    torch.library.opcheck(_gather_silu_grad_op,
                          (torch.randn(2, 2, 1, 3, 35), torch.randn(2, 3, 5, 7), torch.randn(2, 2, 1, 3, 35)))
    with pytest.raises(ValueError, match=r"must have shape \(B, D, H, W\)"):
        spread(torch.randn(2, 3, 35), 2, 1)
    with pytest.raises(ValueError, match="sources and copies must be 1 or 2"):
        spread(x, 3, 1)
    with pytest.raises(ValueError, match=r"H\*W=36"):
        gather(torch.randn(2, 2, 2, 3, 35), 6, 6)


@pytest.mark.gpu
def test_spread_and_gather_on_the_gpu_at_vmamba_sizes():
    from mambaeye.ops.cross_scan.grid import gather, spread

    for shape in [(8, 96, 56, 56), (100, 768, 7, 7), (2, 8, 7, 9), (2, 4, 130, 100)]:  # 76,800 planes; 64x64 tiles
        x = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
        assert torch.equal(spread(x, 2, 2), _spread_ref(x, 2, 2))
        s = torch.randn(shape[0], 2, 2, shape[1], shape[2] * shape[3], device="cuda", dtype=torch.bfloat16)
        torch.testing.assert_close(gather(s, shape[2], shape[3]).double(), _gather_ref(s.double(), *shape[2:]),
                                   rtol=2 ** -8, atol=1e-6)
