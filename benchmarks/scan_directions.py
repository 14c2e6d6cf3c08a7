"""Time the scan kernels by visiting order at VMamba's stage shapes: the paired scan of the fused SS2D (each u read
forward by one group and backward by the next), the plain grouped scan (u materialised once per group) and the
reverse scan, forward and backward separately.

    python benchmarks/scan_directions.py                     # VMamba-T's four v2 stages and v0's first, batch 128
    python benchmarks/scan_directions.py --cases v2_stage3 --batch 32

The three orders do the same arithmetic on the same bytes (the plain scan reads u once per group instead of once a
pair), so the differences are the visiting order's: a backward walking tile's positions descend, and where L and
the strides are multiples of 4 or more the backward kernel reads such tiles in chunks of memory order and reverses
each chunk in registers (``FLIP_TILES`` in mambaeye.ops.selective_scan.triton_scan; a paired backward then runs as
two launches). Calls the
kernels' launchers (selective_scan_fwd / selective_scan_bwd) directly, bf16 u / delta / B / C, fp32 A / D /
delta_bias, softplus on, 4 groups of B/C (VMamba's directions). Times are a call's share of CUDA-graph replays
(mambaeye.bench._common.graph_replay_ms). Writes benchmarks/results/<card>/scan_directions.{md,json}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mambaeye.bench._common import (
    card_name,
    environment,
    graph_replay_ms,
    graph_replay_note,
    script_command,
    write_script_results,
)
from mambaeye.ops.selective_scan import triton_scan

GROUPS = 4
# name: (channels a group = VMamba's d_inner, grid side, d_state)
CASES = {
    "v2_stage1": (96, 56, 1),
    "v2_stage2": (192, 28, 1),
    "v2_stage3": (384, 14, 1),
    "v2_stage4": (768, 7, 1),
    "v0_stage1": (192, 56, 16),
}
ORDERS = ("paired", "plain", "reverse")


def make_case(name: str, batch: int, device: str = "cuda") -> dict:
    """Scan inputs at a case's shape: u for the paired scan (B, 2d, L) and the same sequences once per group for the
    plain and reverse scans (B, 4d, L)."""
    d, side, dstate = CASES[name]
    length, dim = side * side, GROUPS * d
    bf16 = dict(device=device, dtype=torch.bfloat16)
    u_pairs = torch.randn(batch, 2 * d, length, **bf16)
    return dict(
        u_pairs=u_pairs,
        u_groups=u_pairs.view(batch, 2, 1, d, length).expand(batch, 2, 2, d, length).reshape(batch, dim, length),
        delta=0.5 * torch.randn(batch, dim, length, **bf16),
        A=-0.5 - torch.rand(dim, dstate, device=device),
        B=torch.randn(batch, GROUPS, dstate, length, **bf16),
        C=torch.randn(batch, GROUPS, dstate, length, **bf16),
        D=torch.randn(dim, device=device),
        delta_bias=0.1 * torch.randn(dim, device=device),
        dout=torch.randn(batch, dim, length, **bf16),
    )


def time_order(t: dict, order: str, time_ms=graph_replay_ms) -> tuple[float, float]:
    """(forward ms, backward ms) of one visiting order; the forward saves the states the backward reads."""
    u = t["u_pairs"] if order == "paired" else t["u_groups"]
    flags = dict(paired=order == "paired", reverse=order == "reverse")
    args = (u, t["delta"], t["A"], t["B"], t["C"], t["D"], None, t["delta_bias"], True)

    def forward():
        return triton_scan.selective_scan_fwd(*args, True, **flags)

    states = forward()[2]

    def backward():
        return triton_scan.selective_scan_bwd(t["dout"], None, *args[:-1], True, states, **flags)

    return time_ms(forward), time_ms(backward)


def to_markdown(rows: list[dict], header: str) -> str:
    lines = [header, "", "| case | B d L N | " + " | ".join(f"{o} fwd / bwd ms" for o in ORDERS)
             + " | paired bwd vs plain |", "|---|---|" + "---|" * len(ORDERS) + "---|"]
    for r in rows:
        cells = " | ".join(f"{r[o]['fwd_ms']:.3f} / {r[o]['bwd_ms']:.3f}" for o in ORDERS)
        ratio = r["paired"]["bwd_ms"] / r["plain"]["bwd_ms"]
        lines.append(f"| {r['case']} | {r['shape']} | {cells} | {ratio:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU (the Triton kernels, timed from CUDA-graph replays)")

    rows = []
    for name in args.cases:
        t = make_case(name, args.batch)
        d, side, dstate = CASES[name]
        row = dict(case=name, shape=f"B{args.batch} d{d} L{side * side} N{dstate}")
        for order in ORDERS:
            fwd, bwd = time_order(t, order)
            row[order] = dict(fwd_ms=fwd, bwd_ms=bwd)
            print(f"{name:10s} {order:8s} fwd {fwd:.3f} ms  bwd {bwd:.3f} ms", flush=True)
        rows.append(row)
        del t

    command = script_command()
    env = environment("cuda", command)
    card = card_name("cuda")
    header = (f"# The scan by visiting order on {card}\n\n{env['date']}; `{command}`; torch "
              f"{env['versions']['torch']}, triton {env['versions']['triton']}; bf16 inputs, {GROUPS} groups of B/C, "
              f"softplus on; {graph_replay_note()}")
    md = to_markdown(rows, header)
    print(md)
    write_script_results(args.out, card, "scan_directions", md, dict(environment=env, rows=rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
