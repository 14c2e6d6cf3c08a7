"""Compile the Triton scan kernels for an H100 (sm_90) on any machine - no GPU needed - exactly as a launch at a
named shape would, and print what they cost: registers, spills, SASS instruction counts (warp shuffles, shared
memory, barriers), and the TTGIR layouts, layout conversions, scans and reductions.

    python benchmarks/scan_ir.py --shape vim_ti_224            # forward and backward
    python benchmarks/scan_ir.py --shape long_1d --ttgir        # also the TTGIR layout lines
    python benchmarks/scan_ir.py --shape vim_ti_1248 --dump /tmp/ir   # each kernel's SASS and TTGIR into /tmp/ir

The launchers (triton_scan.selective_scan_fwd / _bwd) run on meta tensors with the kernels swapped for recorders,
so the arguments, strides, constexprs and num_warps are the real ones; integer arguments divisible by 16 get the
divisibility hint a real launch would. Triton's bundled nvdisasm and cuobjdump read the cubin. Use it to see what
a kernel change does before spending GPU time (benchmarks/NOTES.md: it found the reverse scan's 640 shuffles).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mambaeye.bench.scan import SHAPES, make_inputs
from mambaeye.ops.selective_scan import triton_scan

_TYPES = {torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.float32: "*fp32", torch.float64: "*fp64"}


class _Recorder:
    """Stands in for a @triton.jit kernel: ``kernel[grid](*args, **kwargs)`` records the call."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((grid, args, kwargs))


def _compile(fn, args, kwargs):
    kwargs = dict(kwargs)
    num_warps = kwargs.pop("num_warps", 4)
    signature, attrs = {}, {}
    for i, (name, value) in enumerate(zip(fn.arg_names, args, strict=False)):
        if isinstance(value, torch.Tensor):
            signature[name] = _TYPES[value.dtype]
            attrs[(i,)] = [["tt.divisibility", 16]]  # allocations are aligned
        else:
            signature[name] = "i32"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    constexprs = {name: kwargs[name] for name in fn.arg_names if name in kwargs}
    signature.update({name: "constexpr" for name in constexprs})
    source = ASTSource(fn, signature, constexprs, attrs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps}), num_warps


def _sass(compiled) -> tuple[str, str]:
    """(SASS listing, cuobjdump's resource usage) of a compiled kernel."""
    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        sass = subprocess.run([f"{bindir}/nvdisasm", "-c", f.name], capture_output=True, text=True).stdout
        usage = subprocess.run([f"{bindir}/cuobjdump", "-res-usage", f.name], capture_output=True, text=True).stdout
    return sass, usage


def _sass_report(sass: str, usage: str) -> str:
    ops = collections.Counter(m.group(1).split(".")[0] for m in
                              re.finditer(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", sass))
    regs, stack = re.search(r"REG:(\d+)", usage).group(1), re.search(r"STACK:(\d+)", usage).group(1)
    top = ", ".join(f"{op} {n}" for op, n in ops.most_common(12))
    return (f"registers {regs}, stack (spills) {stack} bytes, {sum(ops.values())} SASS instructions; "
            f"SHFL {ops['SHFL']}, LDS {ops['LDS']}, STS {ops['STS']}, BAR {ops['BAR']}\n   top: {top}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="vim_ti_224", choices=[s for s in SHAPES if s != "cpu_1d"])
    p.add_argument("--ttgir", action="store_true", help="print the TTGIR layout definitions too")
    p.add_argument("--dump", metavar="DIR", help="write each kernel's SASS and TTGIR into DIR")
    args = p.parse_args()
    t = make_inputs(SHAPES[args.shape], torch.bfloat16, "meta", requires_grad=False)
    u, delta, A, B, C, D, z, bias = (t[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias"))
    kernels = {name: _Recorder(getattr(triton_scan, name)) for name in
               ("_scan_segment_kernel", "_scan_fwd_kernel", "_scan_bwd_segment_kernel", "_scan_bwd_kernel")}
    saved = {name: getattr(triton_scan, name) for name in kernels}
    try:
        for name, recorder in kernels.items():
            setattr(triton_scan, name, recorder)
        _, _, states = triton_scan.selective_scan_fwd(u, delta, A, B, C, D, z, bias, True, True)
        triton_scan.selective_scan_bwd(torch.empty_like(delta), None, u, delta, A, B, C, D, z, bias, True, states)
    finally:
        for name, fn in saved.items():
            setattr(triton_scan, name, fn)
    for name, recorder in kernels.items():
        for grid, call_args, call_kwargs in recorder.calls:
            compiled, num_warps = _compile(recorder.fn, call_args, call_kwargs)
            blocks = {k: v for k, v in call_kwargs.items() if k.startswith("BLOCK") or k == "PREFETCH"}
            print(f"== {name} at {args.shape}: grid {grid}, {num_warps} warps, {blocks}")
            sass, usage = _sass(compiled)
            print("  ", _sass_report(sass, usage))
            if args.dump:
                os.makedirs(args.dump, exist_ok=True)
                for ext, text in (("sass", sass), ("ttgir", compiled.asm["ttgir"])):
                    with open(os.path.join(args.dump, f"{name.strip('_')}.{ext}"), "w") as f:
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
