"""Sweep the Triton scan's tile configurations at the benchmark shapes (forward and forward+backward).

    python benchmarks/scan_sweep.py --shapes vim_ti_224 vmamba_t_stage1
    python benchmarks/scan_sweep.py --forward-only --shapes vim_ti_1248 long_1d

A configuration is (BLOCK_L, BLOCK_D fwd, BLOCK_D bwd, num_warps fwd, bwd, prefetch fwd, bwd); BLOCK_N is
next_pow2(N); the forward's sequence split (triton_scan._num_segments) applies to every configuration. The
winners go into ``triton_scan._launch_config``; the sweep's table is kept in benchmarks/NOTES.md. Times are a
call's share of CUDA-graph replays (mambaeye.bench._common.graph_replay_ms: no host launch cost, L2 not flushed
between calls).

``--forward-only`` sweeps the forward without saved states (inference: no backward follows, so its tile need not
be the backward's) over (BLOCK_L, BLOCK_D, num_warps, prefetch); each configuration's output is first checked
against the default's.
"""

from __future__ import annotations

import argparse

import torch
import triton

from mambaeye.bench._common import graph_replay_ms
from mambaeye.bench.scan import SHAPES, make_inputs
from mambaeye.ops import selective_scan
from mambaeye.ops.selective_scan import triton_scan

CONFIGS = {  # dstate -> (BLOCK_L, BLOCK_D fwd, bwd, warps fwd, bwd, prefetch fwd, bwd); None = the default
    16: [None, (8, 8, 4, 1, 1, 0, 0), (8, 8, 8, 1, 2, 0, 0), (8, 8, 4, 1, 1, 0, 1), (4, 8, 8, 1, 1, 0, 0),
         (4, 8, 4, 1, 1, 0, 0), (4, 16, 8, 1, 1, 0, 0), (4, 8, 8, 1, 1, 1, 1), (8, 8, 2, 1, 1, 0, 0),
         (8, 4, 4, 1, 1, 0, 0), (8, 2, 4, 1, 1, 0, 0), (4, 4, 4, 1, 1, 0, 0)],
    # N = 1: the default is (32, 8, 8, 1, 1, 1, 1) (a tile's 32 steps over 4 lanes); lanes on channels with 8 steps
    # a thread, (8, 32, 32, ...), took VMamba-T's training step 57.2 -> 68.7 ms on an H100 (benchmarks/NOTES.md)
    1: [None, (8, 32, 32, 1, 1, 1, 1), (8, 32, 32, 1, 1, 1, 0), (8, 32, 32, 1, 1, 0, 0), (16, 32, 32, 1, 1, 1, 1),
        (8, 16, 16, 1, 1, 1, 1), (8, 64, 64, 2, 2, 1, 1)],
}

FORWARD_CONFIGS = {  # dstate -> (BLOCK_L, BLOCK_D, num_warps, prefetch) of a forward without saved states
    16: [None, (16, 8, 1, 0), (32, 8, 1, 0), (16, 4, 1, 0), (32, 4, 1, 0), (16, 16, 1, 0), (16, 16, 2, 0),
         (8, 16, 1, 0), (8, 32, 1, 0), (16, 32, 1, 0), (16, 8, 1, 1), (8, 4, 1, 0)],
    1: [None, (64, 8, 1, 1), (64, 16, 1, 1), (32, 16, 1, 1), (128, 8, 1, 1), (64, 8, 1, 0)],
}


DEFAULTS = (triton_scan._block_l, triton_scan._launch_config)


def time_config(name, cfg, dtype):
    shape = SHAPES[name]
    triton_scan._block_l, triton_scan._launch_config = DEFAULTS
    if cfg is not None:
        block_l, bd_fwd, bd_bwd, warps_fwd, warps_bwd, pf_fwd, pf_bwd = cfg
        if (shape["dim"] // shape["groups"]) % max(bd_fwd, bd_bwd):
            return None
        triton_scan._block_l = lambda length, dstate, free=False: block_l
        triton_scan._launch_config = lambda batch, dim, B, C, dstate, length, backward, *_: (
            bd_bwd if backward else bd_fwd, triton.next_power_of_2(dstate), block_l,
            warps_bwd if backward else warps_fwd, bool(pf_bwd if backward else pf_fwd))
    t = make_inputs(shape, dtype, "cuda", requires_grad=False)
    args = [t[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]

    def forward():
        with torch.no_grad():
            return selective_scan(*args, delta_softplus=True, backend="triton")

    leaves = [a.clone().requires_grad_(True) if a is not None else None for a in args]
    inputs = [a for a in leaves if a is not None]
    dout = torch.randn_like(args[0])

    def forward_backward():
        return torch.autograd.grad(selective_scan(*leaves, delta_softplus=True, backend="triton"), inputs, dout)

    return graph_replay_ms(forward), graph_replay_ms(forward_backward)


def _forward_config(block_l, block_d, warps, prefetch):
    """A stand-in for triton_scan._launch_config that returns one forward configuration."""
    return lambda batch, dim, B, C, dstate, length, backward, *_: (
        block_d, triton.next_power_of_2(dstate), block_l, warps, bool(prefetch))


def time_forward_config(name, cfg, dtype):
    """ms of the forward without saved states, or None where BLOCK_D does not divide a group's channels. Raises
    where the output differs from the default configuration's."""
    shape = SHAPES[name]
    triton_scan._block_l, triton_scan._launch_config = DEFAULTS
    if cfg is not None and (shape["dim"] // shape["groups"]) % cfg[1]:
        return None
    t = make_inputs(shape, dtype, "cuda", requires_grad=False)
    args = [t[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]

    def forward():
        with torch.no_grad():
            return selective_scan(*args, delta_softplus=True, backend="triton")

    reference = forward()
    if cfg is not None:
        triton_scan._launch_config = _forward_config(*cfg)
    try:
        torch.testing.assert_close(forward(), reference, rtol=2e-2, atol=2e-2, msg=lambda m: f"{name} {cfg}: {m}")
        return graph_replay_ms(forward)
    finally:
        triton_scan._launch_config = DEFAULTS[1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", nargs="+", default=[n for n in SHAPES if n != "cpu_1d"])
    p.add_argument("--forward-only", action="store_true", help="the forward without saved states (inference)")
    args = p.parse_args()
    if args.forward_only:
        print("| shape | BLOCK_L, BLOCK_D, warps, prefetch | fwd ms (no saved states) |\n|---|---|---|")
        for name in args.shapes:
            for cfg in FORWARD_CONFIGS[SHAPES[name]["dstate"]]:
                r = time_forward_config(name, cfg, torch.bfloat16)
                if r is not None:
                    print(f"| {name} | {cfg or 'default'} | {r:.3f} |", flush=True)
        return
    print("| shape | BLOCK_L, BLOCK_D fwd, bwd, warps fwd, bwd, prefetch fwd, bwd | fwd ms | fwd+bwd ms |\n"
          "|---|---|---|---|")
    for name in args.shapes:
        n = SHAPES[name]["dstate"]
        for cfg in CONFIGS[n]:
            r = time_config(name, cfg, torch.bfloat16)
            if r is not None:
                print(f"| {name} | {cfg or 'default'} | {r[0]:.3f} | {r[1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
