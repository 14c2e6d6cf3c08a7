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

from mambaeye.bench._common import VMAMBA_T_STAGES
from mambaeye.bench.scan import SHAPES
from mambaeye.ops.kernel_launches import SCAN_KERNELS, Scan, add_norm_launches, bias_gelu_launches
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
    t = SHAPES[shape]
    scan = Scan(t["batch"], t["dim"], t["length"], t["dstate"], bc="grouped" if t["groups"] > 1 else "step",
                groups=t["groups"], z=t["z"] and order != "paired", order=order)
    return triton_scan, SCAN_KERNELS, scan.launch


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
        dim, side = VMAMBA_T_STAGES[args.stage]
        module, names, launch = (add_norm_launches if args.op == "layer_norm" else bias_gelu_launches)(dim, side * side)
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
