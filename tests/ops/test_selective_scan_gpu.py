"""GPU tests of the Triton backend at realistic sizes, against the naive recurrence in float64 (``-m gpu``)."""

from __future__ import annotations

import pytest
import torch

from mambaeye.ops import selective_scan

from .scan_cases import assert_matches, case_id, make_inputs, scan_with_grads, to

pytestmark = pytest.mark.gpu

SIZES = [  # batch, dim, length, dstate, bc, groups, z: the shapes of Vim, VMamba v2 / v0 and a long 1-D sequence
    (2, 384, 197, 16, "step", 1, True),
    (2, 384, 3136, 1, "grouped", 4, False),
    (1, 192, 1024, 16, "grouped", 4, False),
    (1, 64, 6085, 16, "step", 1, True),
    (2, 32, 300, 16, "fixed", 1, True),
]
TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2, torch.float16: 1e-2}


@pytest.mark.parametrize("dtype", list(TOL), ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("size", SIZES, ids=[case_id(B=s[0], D=s[1], L=s[2], N=s[3], G=s[5]) for s in SIZES])
def test_triton_gpu_against_naive_fp64(size, dtype):
    batch, dim, length, dstate, bc, groups, z = size
    inputs = make_inputs(batch, dim, length, dstate, bc=bc, groups=groups, z=z, dtype=dtype, device="cuda")
    got = scan_with_grads(inputs, "triton", True)
    ref = scan_with_grads(to(inputs, torch.float64), "naive", True)
    out, last, grads = got
    assert out.dtype == dtype
    up = {k: (v.double() if v is not None else None) for k, v in grads.items()}
    assert_matches((out.double(), last.double(), up), (ref[0], ref[1], ref[2]), tol=TOL[dtype])


def test_triton_gpu_fp64_exact():
    inputs = make_inputs(2, 16, 333, 16, bc="grouped", groups=2, device="cuda")
    assert_matches(scan_with_grads(inputs, "triton", True), scan_with_grads(inputs, "naive", True), tol=1e-10)


def test_auto_picks_triton_on_cuda():
    inputs = make_inputs(1, 8, 20, 4, dtype=torch.float32, device="cuda")
    torch.testing.assert_close(selective_scan(**inputs), selective_scan(**inputs, backend="triton"), rtol=0, atol=0)


def test_torch_compile_inductor_fullgraph_cuda():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.A_log = torch.nn.Parameter(torch.randn(8, 4))
            self.proj = torch.nn.Linear(8, 8)

        def forward(self, u):
            B, C = self.proj(u.transpose(1, 2)).transpose(1, 2).chunk(2, dim=1)
            return selective_scan(u, u.sigmoid(), -torch.exp(self.A_log), B.contiguous(), C.contiguous(),
                                  delta_softplus=True)

    model = M().cuda()
    u = torch.randn(2, 8, 50, device="cuda")
    ref = model(u)
    out = torch.compile(model, fullgraph=True)(u)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("split", [False, True], ids=["one-program", "split"])
def test_triton_gpu_reverse_against_flipped_naive(split, monkeypatch):
    """reverse=True walks L backwards inside the kernels (and across split segments): outputs, last state and
    every gradient. L 2000 is a multiple of 16, so the backward reads its tiles in memory order and flips them."""
    from mambaeye.ops.selective_scan import triton_scan

    if split:
        monkeypatch.setattr(triton_scan, "MIN_PROGRAMS", 1 << 20)
    inputs = make_inputs(1, 64, 2000, 16, bc="step", dtype=torch.float32, device="cuda")
    assert triton_scan._vector_width(2000, inputs["u"], inputs["delta"], inputs["z"]) >= triton_scan.FLIP_TILES_MIN_VEC
    out, last, grads = scan_with_grads(inputs, "triton", True, reverse=True)

    def flipped(t, name):
        return t.flip(-1) if t is not None and name in ("u", "delta", "z", "B", "C") else t

    ref = scan_with_grads({k: flipped(v, k) for k, v in to(inputs, torch.float64).items()}, "naive", True,
                          flip_out=True)
    up = {k: (v.double() if v is not None else None) for k, v in grads.items()}
    assert_matches((out.double(), last.double(), up),
                   (ref[0], ref[1], {k: flipped(v, k) for k, v in ref[2].items()}), tol=1e-4)
