"""Time VMamba's SS2D layer (in_proj to out_proj) and its core (cross-scan + projections + scan + merge +
out_norm), forward and forward+backward, fused vs unfused, batch 128, bf16 autocast, channel-first.

    python benchmarks/ss2d.py
    python benchmarks/ss2d.py --cases v2_stage1 --batch 32 --layouts batch_first

Layouts of the channel-first (B, C, H, W) input: ``batch_first`` (contiguous NCHW: in_proj and out_proj run as cuDNN
1x1 convolutions) and ``batch_second`` ((C, B, H, W) memory, how VSSM stores its maps: each projection one matrix
product, :mod:`mambaeye.ops._layout`); the unfused reference path is timed batch-first only. The layout is the
layer input's; the core's input is batch-first in both (see time_case), its output in the layout.

Times are a call's share of CUDA-graph replays (mambaeye.bench._common.graph_replay_ms): the layer's kernels
without the host's launch cost, which made eager timings of these multi-kernel calls host time at the smaller
stages; L2 is not flushed between calls. Writes benchmarks/results/<card>/ss2d.{md,json}. The official VMamba
SS2D (its Triton cross-scan, CUDA "oflex" scan, cross-merge, out_norm) measured on an H100 80GB HBM3 is shown
beside (from the issue).
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import torch
import triton

from mambaeye.bench._common import graph_replay_ms, graph_replay_note, script_command, write_script_results
from mambaeye.layers import SS2D
from mambaeye.ops._layout import to_batch_second
from mambaeye.ops.cross_scan import cross_selective_scan

LAYOUTS = ("batch_first", "batch_second")
# name: SS2D kwargs, grid side, official (layer fwd, layer fwd+bwd, core fwd, core fwd+bwd) ms on H100
CASES = {
    "v2_stage1": (dict(d_model=96, d_state=1, ssm_ratio=1.0, conv_bias=False), 56, (5.24, 14.67, 4.73, 12.39)),
    "v2_stage2": (dict(d_model=192, d_state=1, ssm_ratio=1.0, conv_bias=False), 28, (2.35, 7.28, 2.11, 6.05)),
    "v2_stage3": (dict(d_model=384, d_state=1, ssm_ratio=1.0, conv_bias=False), 14, (1.46, 5.16, 1.33, 3.85)),
    "v0_stage1": (dict(d_model=96, d_state=16, ssm_ratio=2.0, conv_bias=True, with_z=True), 56,
                  (21.4, 82.4, 19.3, 75.6)),
}


def time_case(name: str, batch: int, fused: bool, layout: str = "batch_first") -> dict:
    """ms a call of the SS2D layer (x: (batch, d_model, side, side) float32) and of its core (core_in: (batch,
    d_inner, side, side) bfloat16), forward under no_grad and forward+backward, under bf16 autocast. ``layout`` is
    x's; core_in stays batch-first (in the layer the conv reads its input in place either way, while the core
    without it would copy a batch-second input for its layout move), and the core writes its output in layout, as
    the layer does for its out_proj."""
    kwargs, side, _ = CASES[name]
    layer = SS2D(**kwargs, channel_first=True, fused=fused).cuda()
    store = to_batch_second if layout == "batch_second" else (lambda t: t)
    x = store(torch.randn(batch, kwargs["d_model"], side, side, device="cuda")).requires_grad_(True)
    d_inner = layer.d_inner
    core_in = torch.randn(batch, d_inner, side, side, device="cuda", dtype=torch.bfloat16, requires_grad=True)

    def core():
        return cross_selective_scan(
            core_in, layer.x_proj_weight, layer.dt_projs_weight, layer.dt_projs_bias, layer.A_logs, layer.Ds,
            out_norm=True, out_norm_weight=layer.out_norm.weight, out_norm_bias=layer.out_norm.bias,
            force_fp32=layer.force_fp32, fused=fused, batch_second=layout == "batch_second")

    params = [p for p in layer.parameters() if p.requires_grad]

    def run(fn, source, backward):
        """ms a call of ``fn`` (autocast entered inside the captured call); with ``backward`` also the gradients
        of ``source`` and the layer's parameters by torch.autograd.grad (fresh tensors: nothing accumulates into
        .grad across calls or replays; parameters ``fn`` does not use get None)."""
        def forward():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                return fn()

        def forward_backward():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = fn()
            return torch.autograd.grad(y, [source, *params], torch.ones_like(y), allow_unused=True)

        return graph_replay_ms(forward_backward if backward else forward)

    layer_fn = lambda: layer(x)  # noqa: E731
    return dict(case=name, fused=fused, layout=layout, batch=batch,
                layer_fwd=run(layer_fn, x, False), layer_fwd_bwd=run(layer_fn, x, True),
                core_fwd=run(core, core_in, False), core_fwd_bwd=run(core, core_in, True))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=list(LAYOUTS))
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args(argv)
    card = torch.cuda.get_device_name()
    rows = []
    for name in args.cases:
        for layout in args.layouts:
            for fused in (False, True) if layout == "batch_first" else (True,):
                r = time_case(name, args.batch, fused, layout)
                rows.append(r)
                print(f"{name:10s} {layout:12s} fused={fused!s:5s} layer {r['layer_fwd']:7.3f} / "
                      f"{r['layer_fwd_bwd']:7.3f} ms  core {r['core_fwd']:7.3f} / {r['core_fwd_bwd']:7.3f} ms",
                      flush=True)
    command = script_command()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# SS2D on {card}", "",
             f"{when}; `{command}`; torch {torch.__version__}, triton {triton.__version__}; batch {args.batch}, "
             f"bf16 autocast, channel-first; {graph_replay_note()}", "",
             "| case | layout | path | layer fwd | layer fwd+bwd | core fwd | core fwd+bwd | official layer fwd / "
             "fwd+bwd | layer speed-up vs official fwd / fwd+bwd |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        off = CASES[r["case"]][2]
        lines.append(f"| {r['case']} | {r['layout']} | {'fused' if r['fused'] else 'unfused'} | {r['layer_fwd']:.3f} | "
                     f"{r['layer_fwd_bwd']:.3f} | {r['core_fwd']:.3f} | {r['core_fwd_bwd']:.3f} | "
                     f"{off[0]} / {off[1]} | {off[0] / r['layer_fwd']:.2f}x / {off[1] / r['layer_fwd_bwd']:.2f}x |")
    md = "\n".join(lines) + "\n"
    print(md)
    write_script_results(args.out, card, "ss2d", md, dict(card=card, date=when, command=command, rows=rows,
                                                          timing=graph_replay_note(),
                                                          python=platform.python_version()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
