"""Compile mambaeye's Triton kernels for an H100 (sm_90) on any machine - no GPU needed - exactly as a launch at a
named shape would, and print what they cost: registers, spills, SASS instruction counts (warp shuffles, shared
memory, barriers), the global loads and stores by width (LDG.E.128 is a 16-byte vector load, LDG.E.U16 one bf16),
and the TTGIR layouts, layout conversions, scans and reductions.

    python benchmarks/scan_ir.py --shape vim_ti_224            # the scan, forward and backward
    python benchmarks/scan_ir.py --shape long_1d --ttgir        # also the TTGIR layout lines
    python benchmarks/scan_ir.py --shape vmamba_t_stage1 --order paired   # VMamba's fused SS2D scan
    python benchmarks/scan_ir.py --shape vim_ti_1248 --dump /tmp/ir   # each kernel's SASS and TTGIR into /tmp/ir
    python benchmarks/scan_ir.py --op layer_norm --stage 3      # the add + LayerNorm at VMamba-T's 14x14 stage
    python benchmarks/scan_ir.py --op bias_gelu --stage 1       # the MLP's bias + GELU at VMamba-T's 56x56 stage

The launchers run on meta tensors with the kernels swapped for recorders, so the arguments, strides, constexprs and
num_warps are the real ones (mambaeye.ops.offline_compile, which tests/ops/test_triton_compile.py also uses to
compile every kernel in CI). Triton's bundled nvdisasm and cuobjdump read the cubin. Use it to see what a kernel
change does before spending GPU time (benchmarks/NOTES.md: it found the reverse scan's 640 shuffles and the
LayerNorm's scalar loads at 14x14).
"""

from __future__ import annotations

import argparse
import collections
import os
import re

import torch

from mambaeye.bench._common import VMAMBA_T_STAGES
from mambaeye.bench.scan import SHAPES, make_inputs
from mambaeye.ops.bias_gelu import triton_bias_gelu
from mambaeye.ops.layer_norm import triton_norm
from mambaeye.ops.offline_compile import compile_sm90, record, registers_and_stack, sass
from mambaeye.ops.selective_scan import triton_scan


def _sass_report(listing: str, usage: str) -> str:
    ops = collections.Counter(m.group(1).split(".")[0] for m in
                              re.finditer(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", listing))
    regs, stack = registers_and_stack(usage)
    top = ", ".join(f"{op} {n}" for op, n in ops.most_common(12))
    memory = collections.Counter(re.findall(r"\b((?:LDG|STG)\.E[.\w]*)", listing))
    widths = ", ".join(f"{op} {n}" for op, n in sorted(memory.items()))
    return (f"registers {regs}, stack (spills) {stack} bytes, {sum(ops.values())} SASS instructions; "
            f"SHFL {ops['SHFL']}, LDS {ops['LDS']}, STS {ops['STS']}, BAR {ops['BAR']}\n   top: {top}\n"
            f"   global loads/stores: {widths}")


def _scan_launches(shape: str, order: str):
    """The scan at a named shape in visiting order ``order``: plain, reverse, or paired (VMamba's fused SS2D: u
    with half the channels, each read forward by an even group of B/C and backward by the next; no z)."""
    t = make_inputs(SHAPES[shape], torch.bfloat16, "meta", requires_grad=False)
    u, delta, A, B, C, D, z, bias = (t[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias"))
    if order == "paired":
        u, z = u[:, : u.shape[1] // 2], None
    flags = dict(paired=order == "paired", reverse=order == "reverse")

    def launch():
        _, _, states = triton_scan.selective_scan_fwd(u, delta, A, B, C, D, z, bias, True, True, **flags)
        triton_scan.selective_scan_bwd(torch.empty_like(delta), None, u, delta, A, B, C, D, z, bias, True, states,
                                       **flags)

    names = ("_scan_segment_kernel", "_scan_fwd_kernel", "_scan_bwd_segment_kernel", "_scan_bwd_kernel")
    return triton_scan, names, launch


def _layer_norm_launches(stage: int):
    """The add + norm of a VMamba-T block under autocast: float32 stream, bf16 branch with a bias, bf16 output."""
    dim, side = VMAMBA_T_STAGES[stage]
    x = torch.empty(128, dim, side * side, device="meta")
    branch = torch.empty_like(x, dtype=torch.bfloat16)
    w, mean = torch.empty(dim, device="meta"), torch.empty(128, side * side, device="meta")

    def launch():
        triton_norm.layer_norm_fwd(x, w, w, 1e-5, True, torch.bfloat16, branch, w)
        triton_norm.layer_norm_bwd(branch, x, w, w, mean, mean, x, torch.bfloat16, w)

    return triton_norm, ("_ln_fwd_kernel", "_ln_bwd_kernel"), launch


def _bias_gelu_launches(stage: int):
    """The MLP's fc1 output (4 C channels) in bf16."""
    dim, side = VMAMBA_T_STAGES[stage]
    x = torch.empty(128, 4 * dim, side * side, device="meta", dtype=torch.bfloat16)
    bias = torch.empty(4 * dim, device="meta")

    def launch():
        triton_bias_gelu.bias_gelu_fwd(x, bias)
        triton_bias_gelu.bias_gelu_bwd(x, x, bias)

    return triton_bias_gelu, ("_bias_gelu_fwd_kernel", "_bias_gelu_bwd_kernel"), launch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--op", default="scan", choices=["scan", "layer_norm", "bias_gelu"])
    p.add_argument("--shape", default="vim_ti_224", choices=[s for s in SHAPES if s != "cpu_1d"],
                   help="the scan's shape (--op scan)")
    p.add_argument("--order", default="plain", choices=["plain", "reverse", "paired"],
                   help="the scan's visiting order (--op scan; paired needs an even number of groups)")
    p.add_argument("--stage", type=int, default=1, choices=sorted(VMAMBA_T_STAGES),
                   help="VMamba-T's stage, batch 128 (--op layer_norm / bias_gelu)")
    p.add_argument("--ttgir", action="store_true", help="print the TTGIR layout definitions too")
    p.add_argument("--dump", metavar="DIR", help="write each kernel's SASS and TTGIR into DIR")
    args = p.parse_args()
    if args.op == "scan":
        if args.order == "paired" and SHAPES[args.shape]["groups"] % 2:
            p.error(f"--order paired needs an even number of groups of B/C; {args.shape} has "
                    f"{SHAPES[args.shape]['groups']}")
        module, names, launch = _scan_launches(args.shape, args.order)
        where = f"{args.shape} ({args.order})"
    else:
        module, names, launch = (_layer_norm_launches if args.op == "layer_norm" else _bias_gelu_launches)(args.stage)
        dim, side = VMAMBA_T_STAGES[args.stage]
        where = f"VMamba-T stage {args.stage} (C {dim}, {side}x{side})"
    for name, recorder in record(module, names, launch).items():
        for i, (grid, call_args, call_kwargs) in enumerate(recorder.calls):
            compiled, num_warps = compile_sm90(recorder.fn, call_args, call_kwargs), call_kwargs.get("num_warps", 4)
            blocks = {k: v for k, v in call_kwargs.items()
                      if k.startswith("BLOCK") or k in ("PREFETCH", "REVERSE", "FLIP_TILES", "CHUNK", "VEC")}
            print(f"== {name} at {where}: grid {grid}, {num_warps} warps, {blocks}")
            listing, usage = sass(compiled)
            print("  ", _sass_report(listing, usage))
            if args.dump:
                os.makedirs(args.dump, exist_ok=True)
                for ext, text in (("sass", listing), ("ttgir", compiled.asm["ttgir"])):
                    launch_tag = f"-{i}" if len(recorder.calls) > 1 else ""  # the paired backward launches twice
                    with open(os.path.join(args.dump, f"{name.strip('_')}{launch_tag}.{ext}"), "w") as f:
                        f.write(text)
            ir = compiled.asm["ttgir"]
            conversions, scans, reductions = (ir.count(op) for op in ("ttg.convert_layout", '"tt.scan"', '"tt.reduce"'))
            print(f"   TTGIR: {conversions} layout conversions, {scans} scans, {reductions} reductions")
            if args.ttgir:
                for line in ir.splitlines():
                    if line.startswith("#") and "blocked" in line:
                        print("  ", line[:200])


if __name__ == "__main__":
    main()
