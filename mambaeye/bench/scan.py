"""``scan``: the selective-scan backends at the models' shapes, forward and forward+backward: ms, achieved GB/s
(the fewest bytes the op must move: each input read once, each output written once) and the fraction of the
card's measured copy bandwidth, beside the official mamba-ssm CUDA kernel on an H100 80GB HBM3. On the GPU every
time is a call's share of CUDA-graph replays (:func:`._common.graph_replay_ms`: the kernels without the host's launch
cost, which made eager timings of the smaller shapes host time)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from mambaeye.ops import available_backends, selective_scan

from ._common import DTYPES, Context, Suite, SuiteResult, env_header, graph_replay_note, md_table

# name: batch, dim, length, dstate, groups of B/C, z given, official (fwd ms, fwd+bwd ms) on H100 80GB HBM3
SHAPES = {
    "vim_ti_224": dict(batch=128, dim=384, length=197, dstate=16, groups=1, z=True, official=(0.404, 1.641)),
    "vim_ti_1248": dict(batch=8, dim=384, length=6085, dstate=16, groups=1, z=True, official=(0.591, 2.999)),
    "vmamba_t_stage1": dict(batch=128, dim=384, length=3136, dstate=1, groups=4, z=False, official=(1.100, 3.988)),
    "vmamba_v0_stage1": dict(batch=32, dim=768, length=3136, dstate=16, groups=4, z=False, official=(2.709, 12.48)),
    "long_1d": dict(batch=8, dim=1536, length=4096, dstate=16, groups=1, z=True, official=(0.901, 4.569)),
    "cpu_1d": dict(batch=2, dim=64, length=3136, dstate=16, groups=1, z=True, official=None),
    "toy_1d": dict(batch=1, dim=16, length=256, dstate=8, groups=1, z=True, official=None),
    "toy_groups": dict(batch=1, dim=16, length=256, dstate=1, groups=4, z=False, official=None),
}
GPU_SHAPES = ["vim_ti_224", "vim_ti_1248", "vmamba_t_stage1", "vmamba_v0_stage1", "long_1d"]
TOY_SHAPES = ["toy_1d", "toy_groups"]


def make_inputs(shape: dict, dtype: torch.dtype, device: str, requires_grad: bool) -> dict:
    """u, delta, z, B, C ~ randn in dtype, delta * 0.5, A = -(rand + 0.5), delta_bias ~ randn, D ~ randn."""
    b, d, l, n, g = shape["batch"], shape["dim"], shape["length"], shape["dstate"], shape["groups"]
    t = dict(
        u=torch.randn(b, d, l, device=device, dtype=dtype),
        delta=0.5 * torch.randn(b, d, l, device=device, dtype=dtype),
        A=-(torch.rand(d, n, device=device) + 0.5),
        B=torch.randn(b, g, n, l, device=device, dtype=dtype),
        C=torch.randn(b, g, n, l, device=device, dtype=dtype),
        D=torch.randn(d, device=device),
        z=torch.randn(b, d, l, device=device, dtype=dtype) if shape["z"] else None,
        delta_bias=torch.randn(d, device=device),
    )
    for v in t.values():
        if v is not None:
            v.requires_grad_(requires_grad)
    return t


def min_bytes(shape: dict, dtype: torch.dtype, backward: bool) -> int:
    """The fewest bytes the op must move (each input read once, each output written once)."""
    es = torch.finfo(dtype).bits // 8
    b, d, l, n, g = shape["batch"], shape["dim"], shape["length"], shape["dstate"], shape["groups"]
    act = b * d * l * es
    bc = b * g * n * l * es
    fwd = act * (3 + shape["z"]) + 2 * bc  # read u, delta (z), B, C; write out
    if not backward:
        return fwd
    # backward: read u, delta, (z), dout, B, C; write du, ddelta, (dz), dB, dC
    return fwd + act * (5 + 2 * shape["z"]) + 4 * bc


def copy_bandwidth_gbs(device: str, time_ms: Callable[[Callable[[], object]], float]) -> float:
    """GB/s of a 256 MiB device-to-device copy, counting bytes read plus bytes written; ``time_ms(fn)`` times fn
    (the scan's own timer: the copy is far larger than L2 and than the host's launch cost, so any timer fits)."""
    x = torch.empty(1 << 28, dtype=torch.uint8, device=device).random_(0, 255)
    y = torch.empty_like(x)
    ms = time_ms(lambda: y.copy_(x))
    return 2 * (1 << 28) / ms / 1e6


def run_case(name: str, backend: str, dtype_name: str, device: str,
             time_ms: Callable[[Callable[[], object]], float]) -> dict:
    """Forward (under no_grad) and forward+backward (``torch.autograd.grad``: fresh gradients, nothing accumulated)
    of shape ``name`` on ``backend``, timed by ``time_ms(fn) -> ms``: the row of the ``scan`` suite and of
    benchmarks/scan.py (ms, minimum bytes moved, GB/s, the official kernel's ms). Both closures only launch kernels
    on tensors made here (no host sync, no CPU tensor per call), so ``time_ms`` may capture them in a CUDA graph."""
    shape = SHAPES[name]
    dtype = DTYPES[dtype_name]
    t = make_inputs(shape, dtype, device, requires_grad=False)
    args = (t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["z"], t["delta_bias"])

    def fwd():
        with torch.no_grad():
            return selective_scan(*args, delta_softplus=True, backend=backend)

    fwd_ms = time_ms(fwd)
    tg = make_inputs(shape, dtype, device, requires_grad=True)
    inputs = [v for v in tg.values() if v is not None]
    dout = torch.randn_like(tg["u"])

    def fwd_bwd():
        out = selective_scan(tg["u"], tg["delta"], tg["A"], tg["B"], tg["C"], tg["D"], tg["z"], tg["delta_bias"],
                             delta_softplus=True, backend=backend)
        return torch.autograd.grad(out, inputs, dout)

    fwd_bwd_ms = time_ms(fwd_bwd)
    fb, fbb = min_bytes(shape, dtype, False), min_bytes(shape, dtype, True)
    return dict(shape=name, backend=backend, dtype=dtype_name,
                **{k: shape[k] for k in ("batch", "dim", "length", "dstate", "groups", "z")},
                fwd_ms=fwd_ms, fwd_bwd_ms=fwd_bwd_ms, fwd_bytes=fb, fwd_bwd_bytes=fbb,
                fwd_gbs=fb / fwd_ms / 1e6, fwd_bwd_gbs=fbb / fwd_bwd_ms / 1e6,
                official_fwd_ms=shape["official"][0] if shape["official"] else None,
                official_fwd_bwd_ms=shape["official"][1] if shape["official"] else None)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=None)
    p.add_argument("--backends", nargs="+", default=None,
                   help="default: triton on CUDA; naive and torch on CPU")


def run(ctx: Context, args: argparse.Namespace) -> SuiteResult:
    on_gpu = ctx.device == "cuda"
    shapes = args.shapes or (TOY_SHAPES if ctx.toy else GPU_SHAPES if on_gpu else ["cpu_1d"])
    have = available_backends(ctx.device)
    backends = args.backends or (["triton"] if on_gpu else [b for b in ("naive", "torch") if b in have])
    for b in backends:
        if b not in have:
            raise SystemExit(f"backend {b!r} is not available on {ctx.device}: {have}")
    time_ms = ctx.graph_ms if on_gpu else ctx.time_ms
    timing = graph_replay_note(repeats=ctx.repeats) if on_gpu else None  # how the GPU times were taken
    copy_gbs = copy_bandwidth_gbs(ctx.device, time_ms) if on_gpu else None
    rows = []
    for dt in ctx.dtypes:
        for name in shapes:
            for backend in backends:
                r = run_case(name, backend, dt, ctx.device, time_ms)
                r["fwd_pct_copy"] = 100 * r["fwd_gbs"] / copy_gbs if copy_gbs else None
                r["fwd_bwd_pct_copy"] = 100 * r["fwd_bwd_gbs"] / copy_gbs if copy_gbs else None
                rows.append(r)
                print(f"{name:18s} {backend:7s} {dt:5s} fwd {r['fwd_ms']:8.3f} ms  fwd+bwd {r['fwd_bwd_ms']:8.3f} ms",
                      flush=True)

    def pct(x):
        return f"{x:.0f}%" if x is not None else "-"

    def ratio(off, ms):
        return f"{off / ms:.2f}x" if off else "-"

    table = md_table(
        ["shape", "backend", "dtype", "fwd ms", "fwd GB/s", "fwd % copy", "fwd+bwd ms", "fwd+bwd GB/s",
         "fwd+bwd % copy", "official fwd / fwd+bwd ms (H100)", "speed-up vs official fwd / fwd+bwd"],
        [[f"{r['shape']} (B{r['batch']} D{r['dim']} L{r['length']} N{r['dstate']} G{r['groups']}"
          f"{' z' if r['z'] else ''})", r["backend"], r["dtype"], f"{r['fwd_ms']:.3f}", f"{r['fwd_gbs']:.1f}",
          pct(r["fwd_pct_copy"]), f"{r['fwd_bwd_ms']:.3f}", f"{r['fwd_bwd_gbs']:.1f}", pct(r["fwd_bwd_pct_copy"]),
          f"{r['official_fwd_ms']:.3f} / {r['official_fwd_bwd_ms']:.3f}" if r["official_fwd_ms"] else "-",
          f"{ratio(r['official_fwd_ms'], r['fwd_ms'])} / {ratio(r['official_fwd_bwd_ms'], r['fwd_bwd_ms'])}"]
         for r in rows])
    md = env_header(ctx, "Selective scan") + (
        f"\nMeasured copy bandwidth {copy_gbs:.0f} GB/s.\n" if copy_gbs else "\nNo copy bandwidth on CPU.\n"
    ) + ("\nsoftplus on, D and delta_bias given; GB/s counts the fewest bytes the op must move."
         + (f" {timing}; the warm-up above: that many eager calls, then that many replays." if timing else "")
         + "\n\n") + table

    def plot(plt, path):
        labels = [f"{r['shape']}\n{r['dtype']}" for r in rows if r["backend"] == backends[0]]
        fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(labels) * 2), 4.5))
        width = 0.8 / len(backends)
        for ax, key, title in ((axes[0], "fwd_ms", "forward"), (axes[1], "fwd_bwd_ms", "forward + backward")):
            for i, b in enumerate(backends):
                vals = [r[key] for r in rows if r["backend"] == b]
                ax.bar([j + i * width for j in range(len(vals))], vals, width, label=b)
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))], labels, fontsize=7)
            ax.set_ylabel("ms (lower is better)")
            ax.set_yscale("log")
            ax.set_title(title)
            ax.legend()
        fig.suptitle(f"selective scan on {ctx.env['card']}" + (" (toy)" if ctx.toy else ""))
        fig.tight_layout()
        fig.savefig(path, dpi=120)

    return SuiteResult(rows=rows, markdown=md, plot=plot, extra=dict(copy_gbs=copy_gbs, gpu_timing=timing))


SUITE = Suite("scan", "selective-scan backends: ms, GB/s, fraction of copy bandwidth", run, add_arguments,
              gpu_dtypes=["bf16"])
