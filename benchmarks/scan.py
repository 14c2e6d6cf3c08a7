"""Time the selective-scan backends at named shapes: forward and forward+backward.

    python benchmarks/scan.py                       # every GPU shape, triton (+ torch) backends, bf16
    python benchmarks/scan.py --shapes vim_ti_224 --backends triton torch
    python benchmarks/scan.py --device cpu          # the CPU shape, naive vs torch

Prints ms, achieved GB/s (the fewest bytes the op must move: each input read once, each output written
once) and the fraction of the card's measured copy bandwidth, beside the official mamba-ssm CUDA kernel's
times measured on an H100 80GB HBM3 (from the issue that set the targets). GPU times are a call's share of
CUDA-graph replays (mambaeye.bench._common.graph_replay_ms, the `mambaeye bench scan` suite's timer): the kernels'
time without the host's launch cost, L2 not flushed between calls; CPU times the median of 5 calls. Writes
benchmarks/results/<card>/scan.{md,json} with the date, command, versions and how the times were taken.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import platform
from pathlib import Path

import torch

# shapes (with the official kernel's H100 times), inputs, byte counts and dtypes: the `mambaeye bench scan` suite's
from mambaeye.bench._common import (
    DTYPES,
    graph_replay_ms,
    graph_replay_note,
    median_ms,
    script_command,
    write_script_results,
)
from mambaeye.bench.scan import GPU_SHAPES, SHAPES, copy_bandwidth_gbs, run_case
from mambaeye.ops import available_backends

CPU_REPEATS = 5


def timer(device: str):
    """``time_ms(fn) -> ms``: CUDA-graph replays on the GPU, the median of CPU_REPEATS calls after one on CPU."""
    if device == "cuda":
        return graph_replay_ms
    return functools.partial(median_ms, device="cpu", warmup=1, repeats=CPU_REPEATS)


def timing_note(device: str) -> str:
    return graph_replay_note() if device == "cuda" else f"CPU times: median of {CPU_REPEATS} calls (perf_counter)"


def shape_text(s: dict) -> str:
    return f"B{s['batch']} D{s['dim']} L{s['length']} N{s['dstate']} G{s['groups']}{' z' if s['z'] else ''}"


def to_markdown(rows: list[dict], copy_gbs: float | None, header: str) -> str:
    lines = [header, "", "| shape | backend | fwd ms | fwd GB/s | fwd % copy | fwd+bwd ms | fwd+bwd GB/s | "
             "fwd+bwd % copy | official fwd / fwd+bwd ms | speed-up vs official fwd / fwd+bwd |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = SHAPES[r["shape"]]
        gbs_f = r["fwd_bytes"] / r["fwd_ms"] / 1e6
        gbs_b = r["fwd_bwd_bytes"] / r["fwd_bwd_ms"] / 1e6
        pct = (lambda g: f"{100 * g / copy_gbs:.0f}%") if copy_gbs else (lambda g: "-")
        off = s["official"]
        off_txt = f"{off[0]:.3f} / {off[1]:.3f}" if off else "-"
        speed = f"{off[0] / r['fwd_ms']:.2f}x / {off[1] / r['fwd_bwd_ms']:.2f}x" if off else "-"
        lines.append(f"| {r['shape']} ({shape_text(s)}) | {r['backend']} | {r['fwd_ms']:.3f} | {gbs_f:.0f} | "
                     f"{pct(gbs_f)} | {r['fwd_bwd_ms']:.3f} | {gbs_b:.0f} | {pct(gbs_b)} | {off_txt} | {speed} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shapes", nargs="+", default=None, choices=list(SHAPES))
    p.add_argument("--backends", nargs="+", default=None)
    p.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)

    device = args.device
    if device == "cuda":
        card = torch.cuda.get_device_name()
        shapes = args.shapes or GPU_SHAPES
        backends = args.backends or ["triton"]
    else:
        card = f"cpu-{platform.processor() or platform.machine()}-{torch.get_num_threads()}threads"
        shapes = args.shapes or ["cpu_1d"]
        backends = args.backends or ["naive", "torch"]
    for b in backends:
        if b not in available_backends(device):
            p.error(f"backend {b!r} is not available on {device}: {available_backends(device)}")
    dtype_name = args.dtype if device == "cuda" else "fp32"
    dtype = DTYPES[dtype_name]
    bench = timer(device)
    copy_gbs = copy_bandwidth_gbs(device, bench) if device == "cuda" else None

    rows = []
    for name in shapes:
        for backend in backends:
            r = run_case(name, backend, dtype_name, device, bench)
            r["dtype"] = str(dtype).removeprefix("torch.")  # this script's files say bfloat16
            rows.append(r)
            print(f"{name:18s} {backend:7s} fwd {r['fwd_ms']:8.3f} ms  fwd+bwd {r['fwd_bwd_ms']:8.3f} ms", flush=True)

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    versions = dict(torch=torch.__version__, triton=triton_version, python=platform.python_version())
    command = script_command()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (f"# Selective scan on {card}\n\n{when}; `{command}`; torch {versions['torch']}, "
              f"triton {versions['triton']}; dtype {str(dtype).removeprefix('torch.')}; softplus on, D and "
              f"delta_bias given" + (f"; measured copy bandwidth {copy_gbs:.0f} GB/s" if copy_gbs else "")
              + f"; {timing_note(device)}")
    md = to_markdown(rows, copy_gbs, header)
    print(md)
    write_script_results(args.out, card, "scan", md, dict(card=card, date=when, command=command, versions=versions,
                                                          copy_gbs=copy_gbs, timing=timing_note(device), rows=rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
