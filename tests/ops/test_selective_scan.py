"""The selective scan: every backend against the naive recurrence, argument errors, torch.compile."""

from __future__ import annotations

import pytest
import torch

from mambaeye.ops import available_backends, selective_scan, selective_scan_naive
from mambaeye.ops.selective_scan import _normalise, torch_scan, triton_scan

from .scan_cases import LaunchRecorder, assert_matches, case_id, make_inputs, rel_err, scan_with_grads, to

HAS_TRITON = "triton" in available_backends("cpu")
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")


def _ref(inputs, softplus):
    return scan_with_grads(to(inputs, torch.float64), "naive", softplus)


# --- the naive reference itself ---------------------------------------------------------------------------


def test_naive_matches_hand_computed_two_steps():
    # B1 D1 L2 N1, no options: h0 = dt0 B0 u0, h1 = e^{dt1 A} h0 + dt1 B1 u1, y = C h
    u = torch.tensor([[[1.0, 2.0]]], dtype=torch.float64)
    dt = torch.tensor([[[0.5, 0.25]]], dtype=torch.float64)
    A = torch.tensor([[-2.0]], dtype=torch.float64)
    B = torch.tensor([[[3.0, -1.0]]], dtype=torch.float64)
    C = torch.tensor([[[0.5, 2.0]]], dtype=torch.float64)
    out, last = selective_scan_naive(u, dt, A, B, C, return_last_state=True)
    h0 = 0.5 * 3.0 * 1.0
    h1 = torch.exp(torch.tensor(0.25 * -2.0)).item() * h0 + 0.25 * -1.0 * 2.0
    torch.testing.assert_close(out, torch.tensor([[[0.5 * h0, 2.0 * h1]]], dtype=torch.float64))
    torch.testing.assert_close(last, torch.tensor([[[h1]]], dtype=torch.float64))


def test_naive_groups_map_channels_to_their_group():
    # grouped B/C (B, G, N, L): channels [2g, 2g + 2) read group g, as a one-group scan over those channels does
    inputs = make_inputs(2, 6, 9, 3, bc="grouped", groups=3)
    out = selective_scan_naive(**inputs, delta_softplus=True)
    for g in range(3):
        ch = slice(2 * g, 2 * g + 2)
        part = {k: (v[:, ch] if k in ("u", "delta", "z") else v[ch] if k in ("A", "D", "delta_bias") else v[:, g])
                for k, v in inputs.items()}
        torch.testing.assert_close(out[:, ch], selective_scan_naive(**part, delta_softplus=True))


# --- torch and triton backends against naive ----------------------------------------------------------------

LENGTHS = [1, 7, 63, 197]
STATES = [1, 4, 16]
BC_MODES = [("fixed", 1), ("step", 1), ("grouped", 2)]
FULL_GRID = [(length, n, bc, g) for length in LENGTHS for n in STATES for bc, g in BC_MODES]
OPTION_SETS = [  # z, D, bias, softplus
    (False, False, False, False),
    (True, False, False, True),
    (False, True, True, False),
]


@pytest.mark.parametrize("length,dstate,bc,groups", FULL_GRID,
                         ids=[case_id(L=l, N=n, BC=bc, G=g) for l, n, bc, g in FULL_GRID])
def test_torch_backend_fp64(length, dstate, bc, groups):
    inputs = make_inputs(2, 4, length, dstate, bc=bc, groups=groups)
    assert_matches(scan_with_grads(inputs, "torch", True), _ref(inputs, True), tol=1e-10)


@pytest.mark.parametrize("opts", OPTION_SETS, ids=[case_id(z=z, D=d, bias=b, sp=s) for z, d, b, s in OPTION_SETS])
@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_optional_inputs(backend, opts):
    z, D, bias, softplus = opts
    inputs = make_inputs(2, 4, 23, 4, bc="grouped", groups=2, z=z, D=D, bias=bias)
    assert_matches(scan_with_grads(inputs, backend, softplus), _ref(inputs, softplus), tol=1e-10)


TRITON_GRID = [(length, n, *BC_MODES[i % 3]) for i, (length, n) in
               enumerate([(l, n) for l in LENGTHS for n in STATES])]


@needs_triton
@pytest.mark.parametrize("length,dstate,bc,groups", TRITON_GRID,
                         ids=[case_id(L=l, N=n, BC=bc, G=g) for l, n, bc, g in TRITON_GRID])
def test_triton_backend_fp64(length, dstate, bc, groups):
    inputs = make_inputs(2, 4, length, dstate, bc=bc, groups=groups)
    assert_matches(scan_with_grads(inputs, "triton", True), _ref(inputs, True), tol=1e-10)


@pytest.mark.parametrize("bc,groups", [("step", 1), ("grouped", 4), ("fixed", 1)])
def test_torch_many_segments(monkeypatch, bc, groups):
    """The torch backend's memory bound: a sequence cut into segments, the state carried between them."""
    monkeypatch.setattr(torch_scan, "_MAX_SEGMENT", 16)
    assert torch_scan.num_state_chunks(2, 8, 101, 3) >= 7
    inputs = make_inputs(2, 8, 101, 3, bc=bc, groups=groups)
    assert_matches(scan_with_grads(inputs, "torch", True), _ref(inputs, True), tol=1e-10)


@needs_triton
@pytest.mark.parametrize("bc,groups", [("step", 1), ("grouped", 4), ("fixed", 1)])
def test_triton_many_tiles(monkeypatch, bc, groups):
    """A sequence crossing several tile (state-chunk) boundaries, non-power-of-two N, odd tail."""
    monkeypatch.setattr(triton_scan, "MAX_TILE_L", 16)  # 16 steps a tile
    assert triton_scan.num_state_chunks(2, 8, 101, 3) == 7
    inputs = make_inputs(2, 8, 101, 3, bc=bc, groups=groups)
    assert_matches(scan_with_grads(inputs, "triton", True), _ref(inputs, True), tol=1e-10)


@needs_triton
@pytest.mark.parametrize("prefetch", [False, True], ids=["plain", "prefetch"])
@pytest.mark.parametrize("bc,groups", [("step", 1), ("grouped", 2), ("fixed", 1)])
def test_triton_sequence_split(monkeypatch, bc, groups, prefetch):
    """Forward and backward split across programs along L (segment summaries chained): outputs, states,
    gradients."""
    default = triton_scan._launch_config
    monkeypatch.setattr(triton_scan, "_launch_config", lambda *args: (*default(*args)[:4], prefetch))
    monkeypatch.setattr(triton_scan, "MAX_TILE_L", 4)
    monkeypatch.setattr(triton_scan, "MIN_PROGRAMS", 1 << 20)
    monkeypatch.setattr(triton_scan, "TARGET_PROGRAMS", 1 << 20)
    assert triton_scan._num_segments(4, triton_scan.num_state_chunks(2, 4, 221, 4)) == 3  # 56 tiles of 4 steps
    grids = {}
    for name in ("_scan_segment_kernel", "_scan_fwd_kernel", "_scan_bwd_segment_kernel", "_scan_bwd_kernel"):
        monkeypatch.setattr(triton_scan, name, LaunchRecorder(getattr(triton_scan, name), grids.setdefault(name, [])))
    inputs = make_inputs(2, 4, 221, 4, bc=bc, groups=groups)
    assert_matches(scan_with_grads(inputs, "triton", True), _ref(inputs, True), tol=1e-10)
    # 3 segments: summaries of the segments whose state (forward) or carry (backward) another one reads
    assert [g[2] for g, _ in grids["_scan_segment_kernel"] + grids["_scan_bwd_segment_kernel"]] == [2, 2]
    assert [g[2] for g, _ in grids["_scan_fwd_kernel"] + grids["_scan_bwd_kernel"]] == [3, 3]


@needs_triton
@pytest.mark.parametrize(
    "dstate,min_programs,with_states,no_states",
    [
        (16, None, (16, 8, 1), (16, 8, 1)),  # 16 channels: 64 elements a thread, the tile length of the backward
        (16, 2, (8, 8, 1), (8, 16, 1)),  # 16 channels would split L (1 program < 2 <= 2): 8, and 16 steps if free
        (1, None, (8, 32, 1), (8, 32, 1)),  # N=1: 32 steps either way (64 was slower in VMamba-T's fused SS2D)
    ],
    ids=["N16-16ch", "N16-8ch", "N1"],
)
def test_triton_forward_tile_without_saved_states(monkeypatch, dstate, min_programs, with_states, no_states):
    """The forward picks its tile (_launch_config): a forward that saves no states (inference) may take longer
    tiles than the backward's, whose length the saved states follow. Both forms against the naive recurrence."""
    if min_programs is not None:
        monkeypatch.setattr(triton_scan, "MIN_PROGRAMS", min_programs)
    launches = []
    monkeypatch.setattr(triton_scan, "_scan_fwd_kernel", LaunchRecorder(triton_scan._scan_fwd_kernel, launches))
    inputs = make_inputs(1, 16, 70, dstate, bc="step")
    ref = _ref(inputs, True)
    assert_matches(scan_with_grads(inputs, "triton", True), ref, tol=1e-10)
    with torch.no_grad():
        out, last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend="triton")
    assert rel_err(out, ref[0]) < 1e-10 and rel_err(last, ref[1]) < 1e-10
    assert [(kw["BLOCK_D"], kw["BLOCK_L"], kw["num_warps"]) for _, kw in launches] == [with_states, no_states]


@needs_triton
@pytest.mark.parametrize("prefetch", [False, True], ids=["plain", "prefetch"])
def test_triton_prefetch_switch(monkeypatch, prefetch):
    """Both loop forms (loading the next tile ahead, or not) in forward and backward."""
    default = triton_scan._launch_config
    monkeypatch.setattr(triton_scan, "_launch_config", lambda *args: (*default(*args)[:4], prefetch))
    monkeypatch.setattr(triton_scan, "MAX_TILE_L", 16)
    inputs = make_inputs(2, 8, 45, 4, bc="grouped", groups=2)
    assert_matches(scan_with_grads(inputs, "triton", True), _ref(inputs, True), tol=1e-10)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_fp32_inputs(backend):
    inputs = make_inputs(2, 8, 50, 16, bc="step", dtype=torch.float32)
    assert_matches(scan_with_grads(inputs, backend, True), _ref(inputs, True), tol=2e-5)


@pytest.mark.skipif(not HAS_TRITON and not (torch.cuda.is_available() and "triton" in available_backends("cuda")),
                    reason="needs triton on a GPU or under TRITON_INTERPRET=1")
def test_triton_softplus_in_fp32_against_float64():
    # the kernels' softplus (a minimax polynomial for log1p) over the range delta takes, and far out:
    # libdevice's log(1 + e^x) returned 0 below x = -16 (1 + e^x rounds to 1) and lost digits from x = -10
    import triton
    import triton.language as tl

    @triton.jit
    def apply(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(out_ptr + offs, triton_scan._softplus(tl.load(x_ptr + offs, mask=offs < n)), mask=offs < n)

    device = "cpu" if HAS_TRITON else "cuda"  # the interpreter runs on CPU tensors
    x = torch.cat([torch.linspace(-20, 30, 20001), -torch.logspace(-7, 1.3, 500), torch.logspace(-7, 1.4, 500),
                   torch.tensor([-30.0, -50.0, 0.0])]).to(device)
    out = torch.empty_like(x)
    apply[(triton.cdiv(x.numel(), 1024),)](x, out, x.numel(), BLOCK=1024)
    ref = torch.nn.functional.softplus(x.double(), threshold=1e9)
    rel = ((out.double() - ref).abs() / ref).cpu()
    assert rel[:-3].max() < 2e-6, f"max relative error {rel[:-3].max():.3g}"
    assert rel[-3:].max() < 2e-5, f"x = -30, -50, 0: relative errors {rel[-3:].tolist()}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_half_inputs(backend, dtype):
    inputs = make_inputs(2, 8, 40, 4, bc="grouped", groups=2, dtype=dtype)
    got = scan_with_grads(inputs, backend, True)
    ref = scan_with_grads(to(inputs, torch.float64), "naive", True)
    out, last, grads = got
    assert out.dtype == dtype and last.dtype == torch.float32
    assert grads["u"].dtype == dtype and grads["B"].dtype == dtype and grads["A"].dtype == torch.float32
    # the reference sees the same (rounded) inputs; only the backend's own rounding differs
    assert_matches((out.double(), last, {k: (v.double() if v is not None else None) for k, v in grads.items()}),
                   (ref[0].double(), ref[1], ref[2]), tol=1e-2)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_gradcheck(backend):
    inputs = make_inputs(1, 2, 5, 2, bc="step")
    names = list(inputs)

    def fn(*tensors):
        out, last = selective_scan(*tensors, delta_softplus=True, return_last_state=True, backend=backend)
        return out, last

    leaves = [inputs[k].detach().clone().requires_grad_(True) for k in names]
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_no_grad_forward_equals_grad_forward(backend):
    inputs = make_inputs(2, 4, 30, 4)
    with torch.no_grad():
        plain = selective_scan(**inputs, delta_softplus=True, backend=backend)
    leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
    tracked = selective_scan(**leaves, delta_softplus=True, backend=backend)
    torch.testing.assert_close(plain, tracked.detach(), rtol=0, atol=0)


VECTOR_WIDTHS = {37: 1, 36: 4, 40: 8, 48: 16}  # L -> the triton kernels' VEC for contiguous (B, D, L) inputs


@pytest.mark.parametrize("length", list(VECTOR_WIDTHS), ids=[f"L{n}-VEC{v}" for n, v in VECTOR_WIDTHS.items()])
@pytest.mark.parametrize("bc", ["step", "fixed", "grouped"])
@pytest.mark.parametrize("backend", ["naive", "torch", pytest.param("triton", marks=needs_triton)])
def test_reverse_is_the_scan_of_the_flipped_sequence(backend, bc, length, monkeypatch):
    """reverse=True == flip(scan(flip(inputs))) along L: outputs, last state and every gradient (against the naive
    recurrence on flipped inputs); with the triton backend the plain scan at the same vector width is checked too.
    Where VEC >= FLIP_TILES_MIN_VEC the triton backward reads its tiles in chunks of memory order and reverses them
    in registers (triton_scan._flipped_tile): at L 36, 40 and 48, not at L 37."""
    monkeypatch.setattr(triton_scan, "MAX_TILE_L", 8)  # several tiles for the triton kernels
    inputs = make_inputs(2, 4, length, 4, bc=bc, groups=2)
    assert triton_scan._vector_width(length, inputs["u"], inputs["delta"], inputs["z"]) == VECTOR_WIDTHS[length]
    assert (VECTOR_WIDTHS[length] >= triton_scan.FLIP_TILES_MIN_VEC) == (length != 37)
    _check_reverse(backend, inputs, monkeypatch if backend == "triton" else None)
    if backend == "triton":  # the plain (forward walking) scan at this vector width
        assert_matches(scan_with_grads(inputs, "triton", True), _ref(inputs, True), tol=1e-10)


@needs_triton
@pytest.mark.parametrize("length", [221, 228, 224], ids=["L221", "L228-VEC4-flipped-tiles", "L224-VEC16-flipped-tiles"])
@pytest.mark.parametrize("bc", ["step", "fixed"])
def test_triton_reverse_split(bc, length, monkeypatch):
    """reverse=True with forward and backward split across programs (segments walked from the end)."""
    monkeypatch.setattr(triton_scan, "MAX_TILE_L", 4)
    monkeypatch.setattr(triton_scan, "MIN_PROGRAMS", 1 << 20)
    monkeypatch.setattr(triton_scan, "TARGET_PROGRAMS", 1 << 20)
    n_seg = triton_scan._num_segments(1, triton_scan.num_state_chunks(1, 4, length, 4))
    assert n_seg == 3  # 1 program of 4 channels
    _check_reverse("triton", make_inputs(1, 4, length, 4, bc=bc), monkeypatch)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32-CHUNK4", "bf16-CHUNK8"])
def test_triton_reverse_flipped_tiles_in_low_precision(dtype, monkeypatch):
    """The chunk reversal at the chunk sizes of real inputs (16 bytes: 4 fp32 or 8 bf16 steps; fp64 has 2)."""
    monkeypatch.setattr(triton_scan, "MAX_TILE_L", 16)
    _check_reverse("triton", make_inputs(2, 4, 48, 4, dtype=dtype), monkeypatch,
                   tol=1e-5 if dtype == torch.float32 else 2e-2)


def _check_reverse(backend, inputs, monkeypatch=None, tol=1e-10):
    """reverse=True against the naive scan of the flipped inputs. With the triton backend (and monkeypatch): the
    forward kernels read chunks of memory order (FLIP_TILES) exactly where VEC >= FLIP_TILES_MIN_VEC, and the
    forward without saved states (inference: longer tiles) gives the same output."""
    def flipped(t, name):
        return t.flip(-1) if t is not None and name in ("u", "delta", "z", "B", "C") and t.dim() >= 3 else t

    if monkeypatch is not None:
        launches = []
        for name in ("_scan_fwd_kernel", "_scan_segment_kernel"):
            monkeypatch.setattr(triton_scan, name, LaunchRecorder(getattr(triton_scan, name), launches))
    out, last, grads = scan_with_grads(inputs, backend, True, reverse=True)
    ref_inputs = {k: flipped(v, k) for k, v in to(inputs, torch.float64).items()}
    out_r, last_r, grads_r = scan_with_grads(ref_inputs, "naive", True, flip_out=True)
    assert_matches((out, last, grads), (out_r, last_r, {k: flipped(v, k) for k, v in grads_r.items()}), tol=tol)
    if monkeypatch is not None:
        vec = triton_scan._vector_width(inputs["u"].shape[-1], inputs["u"], inputs["delta"], inputs["z"])
        assert launches and all(kw["FLIP_TILES"] == (vec >= triton_scan.FLIP_TILES_MIN_VEC) for _, kw in launches)
        with torch.no_grad():
            plain = selective_scan(**inputs, delta_softplus=True, backend=backend, reverse=True)
        exact = dict(rtol=0, atol=1e-12) if out.dtype == torch.float64 else {}  # else the dtype's tolerance
        torch.testing.assert_close(plain, out, **exact)


@needs_triton
@pytest.mark.parametrize("length", [29, 36], ids=["L29-VEC1", "L36-VEC4"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_triton_reads_batch_strided_views_without_copies(monkeypatch, reverse, length):
    """What the Mamba layers hand the scan: u and z chunks of one (B, 2D, L) projection, B and C row slices of
    one (B, R + 2N, L) projection, and a dout that is a view too. The kernels address these in place (no
    .contiguous() copy) and must give the reference's outputs and gradients, also with their strides divided
    by a vector width (L 36: every stride a multiple of 4)."""
    monkeypatch.setattr(triton_scan, "MAX_TILE_L", 8)
    batch, dim, dstate, rank = 2, 4, 4, 3
    leaves = make_inputs(batch, dim, length, dstate, bc="step")
    xz = torch.randn(batch, 2 * dim, length, dtype=torch.float64, requires_grad=True)
    x_dbl = torch.randn(batch, rank + 2 * dstate, length, dtype=torch.float64, requires_grad=True)
    u, z = xz.chunk(2, dim=1)
    B, C = x_dbl[:, rank:rank + dstate], x_dbl[:, rank + dstate:]
    assert not (u.is_contiguous() or z.is_contiguous() or B.is_contiguous() or C.is_contiguous())
    # and channel-major (D, B, L) storage seen as (B, D, L), as the Mamba layers produce with one 2-D matmul
    rest_major = torch.randn(dim, batch, length, dtype=torch.float64).permute(1, 0, 2)
    leaves["delta"] = (0.5 * rest_major).detach()
    assert all(_normalise(t, "triton") is t for t in (u, z, B.unsqueeze(1), C.unsqueeze(1)))
    assert triton_scan._vector_width(length, u, z, leaves["delta"]) == (4 if length == 36 else 1)
    rest = {k: leaves[k].requires_grad_(True) for k in ("delta", "A", "D", "delta_bias")}
    w = torch.randn(length, batch, dim, dtype=torch.float64)

    def loss(backend):
        out, last = selective_scan(u, B=B, C=C, z=z, **rest, delta_softplus=True, return_last_state=True,
                                   backend=backend, reverse=reverse)
        # out.transpose(...) makes the incoming gradient a non-contiguous view as well
        total = (out.permute(2, 0, 1) * w).sum() + last.sum()
        return out, torch.autograd.grad(total, [xz, x_dbl, *rest.values()])

    out, grads = loss("triton")
    out_ref, grads_ref = loss("naive")
    assert rel_err(out, out_ref) < 1e-10
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert rel_err(g, g_ref) < 1e-10


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_triton)])
def test_empty_batch(backend):
    inputs = make_inputs(0, 4, 5, 3)
    out, last = selective_scan(**inputs, delta_softplus=True, return_last_state=True, backend=backend)
    assert out.shape == (0, 4, 5) and last.shape == (0, 4, 3)


def test_auto_backend_on_cpu_is_torch():
    inputs = make_inputs(1, 2, 5, 2)
    ref = selective_scan(**inputs, backend="torch")
    torch.testing.assert_close(selective_scan(**inputs), ref, rtol=0, atol=0)


# --- argument errors name the argument -----------------------------------------------------------------------


def _valid():
    return make_inputs(2, 4, 6, 3, bc="grouped", groups=2, dtype=torch.float32)


@pytest.mark.parametrize("change,match", [
    (dict(u=torch.randn(2, 4)), "u must have shape"),
    (dict(delta=torch.randn(2, 4, 5)), "delta must have u's shape"),
    (dict(delta=torch.randn(2, 4, 6, dtype=torch.float64)), "delta must have u's dtype"),
    (dict(A=torch.randn(5, 3)), r"A must have shape \(dim=4"),
    (dict(A=torch.randn(4, 3, dtype=torch.complex64)), "A is complex"),
    (dict(B=torch.randn(2, 3, 3, 6)), "B has 3 groups, which must divide dim=4"),
    (dict(C=torch.randn(2, 2, 3, 7)), "C must have shape"),
    (dict(B=torch.randn(4, 3, dtype=torch.float16)), "fixed B"),
    (dict(B=torch.randn(2, 3, 6, dtype=torch.float16)), "per-step B must have u's dtype"),
    (dict(D=torch.randn(5)), r"D must have shape \(dim=4"),
    (dict(delta_bias=torch.randn(4, dtype=torch.float16)), "delta_bias must be float32"),
    (dict(z=torch.randn(2, 4, 7)), "z must have u's shape"),
    (dict(u=torch.randint(0, 3, (2, 4, 6))), "u must be float"),
    (dict(D=torch.randn(4, device="meta")), "D is on meta but u is on cpu"),
])
def test_bad_arguments_raise_named_errors(change, match):
    inputs = {**_valid(), **change}
    with pytest.raises((ValueError, TypeError), match=match):
        selective_scan(**inputs, backend="torch")


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        selective_scan(**_valid(), backend="cuda")


def test_triton_backend_refuses_cpu_tensors_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="runs on CUDA tensors"):
        selective_scan(**_valid(), backend="triton")


# --- torch.compile ------------------------------------------------------------------------------------------


class _TinyScanModel(torch.nn.Module):
    def __init__(self, dim=4, dstate=3):
        super().__init__()
        self.A_log = torch.nn.Parameter(torch.randn(dim, dstate))
        self.D = torch.nn.Parameter(torch.ones(dim))
        self.proj = torch.nn.Linear(dim, 2 * dstate)

    def forward(self, u):  # u: (B, D, L)
        bc = self.proj(u.transpose(1, 2)).transpose(1, 2)  # (B, 2N, L)
        B, C = bc.chunk(2, dim=1)
        return selective_scan(u, u.sigmoid(), -torch.exp(self.A_log), B.contiguous(), C.contiguous(), self.D,
                              delta_softplus=True, backend="torch")


def test_torch_compile_fullgraph():
    model = _TinyScanModel()
    u = torch.randn(2, 4, 9)
    ref = model(u)
    ref.sum().backward()
    grads_ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(u)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    for p, g in zip(model.parameters(), grads_ref, strict=True):
        torch.testing.assert_close(p.grad, g)


def test_custom_op_passes_opcheck():
    inputs = make_inputs(1, 2, 5, 2, bc="step", dtype=torch.float32)
    B = inputs["B"].unsqueeze(1)
    C = inputs["C"].unsqueeze(1)
    args = (inputs["u"], inputs["delta"], inputs["A"], B, C, inputs["D"], inputs["z"], inputs["delta_bias"],
            True, True, "torch", False)
    torch.library.opcheck(torch.ops.mambaeye.selective_scan_fwd.default, args,
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
