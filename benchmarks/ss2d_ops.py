"""Time the SS2D layer's memory-bound Triton ops alone at VMamba-T's four stages (batch 128, bf16): the fused
cross-scan's two layout moves and the depthwise 3x3 conv + SiLU.

    python benchmarks/ss2d_ops.py
    python benchmarks/ss2d_ops.py --ops dwconv --batch 64

- spread: x (B, C, H, W) -> its row-major and column-major copies (``grid.spread(x, 2, 1)``).
- gather R2 / R1: the merge of 2 sources x 2 copies (the forward's four directions) / 2 x 1 (the backward of the
  spread) back onto the grid (``grid.gather``); gather silu': 2 x 1 times SiLU's derivative at the pre-activation
  (``grid.gather_silu_grad``, the backward of the conv that writes both sources); gather silu' 2 batch-second: the
  same from two gradients stored batch-second ((S, R, D, B, L) memory), as the fused cross-scan's backward gets them.
- dwconv fwd: the conv with bias + SiLU, saving the pre-activation (training); dwconv fwd 2 src: the same writing
  the output as the cross-scan's two sources (``sources=2``), contiguous or stored batch-second ((2, C, B, H * W)
  memory); dwconv bwd: dx, dweight, dbias.

Each op's µs a call from CUDA-graph replays (mambaeye.bench._common.graph_replay_ms) and the GB/s of the bytes it
must move (each input read once, each output written once). Writes benchmarks/results/<card>/ss2d_ops.{md,json}.
Use it with ``benchmarks/ab.py`` to judge a kernel change (benchmarks/NOTES.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mambaeye.bench._common import (
    VMAMBA_T_STAGES,
    environment,
    graph_replay_ms,
    graph_replay_note,
    script_command,
    write_script_results,
)
from mambaeye.ops.cross_scan.grid import gather, gather_silu_grad, spread
from mambaeye.ops.dwconv import triton_dwconv

OPS = ("spread", "gather", "dwconv")


def time_stage(batch: int, dim: int, side: int, ops: tuple[str, ...]) -> list[dict]:
    """[{op, us, bytes, gbs}] at one stage; ``bytes`` counts (B, C, H, W) bf16 tensors read or written."""
    x = torch.randn(batch, dim, side, side, device="cuda", dtype=torch.bfloat16)
    grid = x.numel() * x.element_size()
    cases = []
    if "spread" in ops:
        cases.append(("spread", lambda: spread(x, 2, 1), 3))
    if "gather" in ops:
        s2 = torch.randn(batch, 2, 2, dim, side * side, device="cuda", dtype=torch.bfloat16)
        s1 = s2[:, :, :1].contiguous()
        s1_bs = s1.permute(1, 2, 3, 0, 4).contiguous().permute(3, 0, 1, 2, 4)  # stored (2, 1, D, B, L)
        cases += [("gather R2", lambda: gather(s2, side, side), 5), ("gather R1", lambda: gather(s1, side, side), 3),
                  ("gather silu'", lambda: gather_silu_grad(s1, x), 4),
                  ("gather silu' 2 batch-second", lambda: gather_silu_grad(s1_bs, x, s1_bs), 6)]
    if "dwconv" in ops:
        w, b = torch.randn(dim, 1, 3, 3, device="cuda"), torch.randn(dim, device="cuda")
        cases += [("dwconv fwd", lambda: triton_dwconv.dwconv_silu_fwd(x, w, b, True), 3),
                  ("dwconv fwd 2 src", lambda: triton_dwconv.dwconv_silu_fwd(x, w, b, True, sources=2), 4),
                  ("dwconv fwd 2 src batch-second",
                   lambda: triton_dwconv.dwconv_silu_fwd(x, w, b, True, sources=2, batch_second=True), 4),
                  ("dwconv bwd", lambda: triton_dwconv.dwconv_bwd(x, x, w, True), 3)]
    rows = []
    for op, fn, tensors in cases:
        ms = graph_replay_ms(fn)
        rows.append(dict(op=op, us=ms * 1e3, bytes=tensors * grid, gbs=tensors * grid / ms / 1e6))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", nargs="+", default=list(OPS), choices=OPS)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU (the ops are Triton kernels timed from CUDA graphs)")
    card = torch.cuda.get_device_name()
    rows = []
    for stage, (dim, side) in VMAMBA_T_STAGES.items():
        for r in time_stage(args.batch, dim, side, tuple(args.ops)):
            rows.append(dict(stage=stage, channels=dim, side=side, **r))
            print(f"stage {stage} {side}x{side} C{dim}: {r['op']:10s} {r['us']:7.1f} us  {r['gbs']:5.0f} GB/s",
                  flush=True)
    env = environment("cuda", script_command())
    lines = [f"# SS2D's memory-bound ops on {card}", "",
             f"{env['date']}; `{env['command']}`; torch {env['versions']['torch']}, "
             f"triton {env['versions']['triton']}; batch {args.batch}, bf16, VMamba-T's stages; {graph_replay_note()}",
             "",
             "| stage | op | us | GB/s |", "|---|---|---|---|"]
    lines += [f"| {r['stage']} ({r['side']}x{r['side']}, C {r['channels']}) | {r['op']} | {r['us']:.1f} | "
              f"{r['gbs']:.0f} |" for r in rows]
    md = "\n".join(lines) + "\n"
    print(md)
    write_script_results(args.out, card, "ss2d_ops", md, dict(environment=env, timing=graph_replay_note(), rows=rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
