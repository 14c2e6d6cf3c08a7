"""Sweep the bias + GELU kernels' tile shape at VMamba-T's MLP shapes, forward and backward.

    python benchmarks/bias_gelu_sweep.py                       # the four stages, batch 128, bf16, on the GPU
    python benchmarks/bias_gelu_sweep.py --stages 1 3 --tiles 4096
    TRITON_INTERPRET=1 python benchmarks/bias_gelu_sweep.py --device cpu --batch 1 --stages 4   # a smoke run

VMamba-T's MLP activation is (B, 4C, L) with L = 49 * 2^k at every stage (3136, 784, 196, 49), so the default
BLOCK_L = next_pow2(L) (at most triton_bias_gelu.MAX_BLOCK_L: 1024 until the sweep of 2026-12-06 chose 256) leaves
some of each tile's lanes masked (23% at 1024). The candidates are BLOCK_L the
largest power of two dividing L ("divisor": 64, 16, 4, 1 at the four stages; no masked lanes, more position
blocks, a larger dbias partial buffer) and fixed BLOCK_L, each at TILE elements a program
(mambaeye.ops.bias_gelu.triton_bias_gelu._config). Every configuration's y, dx and dbias are checked against the
default's before it is timed. GPU times: a call's share of CUDA-graph replays (mambaeye.bench._common.
graph_replay_ms), in microseconds. The winner goes into ``triton_bias_gelu._config``; the table into
benchmarks/NOTES.md.
"""

from __future__ import annotations

import argparse
import functools
import os

import torch
import triton

from mambaeye.bench._common import VMAMBA_T_STAGES, graph_replay_ms, median_ms

BLOCK_LS = ("default", "divisor", 16, 64, 256)


def pow2_divisor(length: int) -> int:
    """The largest power of two dividing ``length``."""
    return length & -length


def block_l_for(choice: str | int, length: int) -> int | None:
    """BLOCK_L for a sweep choice: None (the kernel's default), the largest power of two dividing L ("divisor"), or
    a fixed BLOCK_L no longer than the default's next_pow2(L)."""
    if choice == "default":
        return None
    if choice == "divisor":
        return min(1024, pow2_divisor(length))
    return min(int(choice), triton.next_power_of_2(max(length, 1)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", nargs="+", type=int, default=list(VMAMBA_T_STAGES), choices=list(VMAMBA_T_STAGES))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--tiles", nargs="+", type=int, default=[2048, 4096, 8192])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    if a.device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        p.error("on CPU the kernels run in Triton's interpreter: start with TRITON_INTERPRET=1 in the environment "
                "(Triton reads it when it is first imported)")
    from mambaeye.ops.bias_gelu import triton_bias_gelu as bg

    time_ms = graph_replay_ms if a.device == "cuda" else functools.partial(median_ms, device="cpu", warmup=0,
                                                                            repeats=1)
    dtype = torch.bfloat16 if a.device == "cuda" else torch.float32
    default_config = bg._config
    print("| stage (4C, L) | BLOCK_L | TILE | BLOCK_R x BLOCK_L, position blocks | fwd us | bwd us |\n"
          "|---|---|---|---|---|---|", flush=True)
    try:
        for stage in a.stages:
            channels, side = VMAMBA_T_STAGES[stage]
            length = side * side
            x = torch.randn(a.batch, 4 * channels, length, device=a.device, dtype=dtype)
            dy = torch.randn_like(x)
            bias = torch.randn(4 * channels, device=a.device)
            bg._config = default_config
            y_ref = bg.bias_gelu_fwd(x, bias)
            dx_ref, dbias_ref = bg.bias_gelu_bwd(dy, x, bias)
            seen = set()
            for block_l in BLOCK_LS:
                for tile in a.tiles:
                    bg._config = functools.partial(default_config, block_l=block_l_for(block_l, length), tile=tile)
                    block_r, bl, n_lblocks, _ = bg._config(a.batch * 4 * channels, length)
                    if (block_r, bl) in seen:  # e.g. BLOCK_L 64 at L 49 is the default
                        continue
                    seen.add((block_r, bl))
                    y = bg.bias_gelu_fwd(x, bias)
                    dx, dbias = bg.bias_gelu_bwd(dy, x, bias)
                    torch.testing.assert_close((y, dx), (y_ref, dx_ref), rtol=0, atol=0)
                    torch.testing.assert_close(dbias, dbias_ref, rtol=1e-4, atol=1e-3)  # summed in another order
                    fwd = time_ms(functools.partial(bg.bias_gelu_fwd, x, bias)) * 1e3
                    bwd = time_ms(functools.partial(bg.bias_gelu_bwd, dy, x, bias)) * 1e3
                    print(f"| {stage} ({4 * channels}, {length}) | {block_l} | {tile} | {block_r} x {bl}, "
                          f"{n_lblocks} | {fwd:.1f} | {bwd:.1f} |", flush=True)
    finally:
        bg._config = default_config
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
