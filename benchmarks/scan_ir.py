"""Print the compiled Triton scan kernels' resources and layouts (registers, spills, TTGIR layouts, scans).

    python benchmarks/scan_ir.py --shape vim_ti_224
"""

from __future__ import annotations

import argparse
import re

import torch

from mambaeye.bench.scan import SHAPES, make_inputs
from mambaeye.ops import selective_scan
from mambaeye.ops.selective_scan import triton_scan


def report(kernel, label):
    for cache in kernel.device_caches.values():
        for compiled in cache[0].values():
            ir = compiled.asm["ttgir"]
            print(f"== {label}: n_regs={compiled.n_regs} n_spills={compiled.n_spills} "
                  f"shared={compiled.metadata.shared} warps={compiled.metadata.num_warps}")
            for line in ir.splitlines():
                if line.startswith("#") and "encoding" not in line:
                    print("  ", line[:200])
            print("   convert_layout ops:", len(re.findall(r"ttg\.convert_layout", ir)),
                  " scans:", len(re.findall(r'"tt\.scan"', ir)), " local_alloc:", ir.count("local_alloc"))
            for line in ir.splitlines():
                if '"tt.scan"' in line or "tt.reduce" in line[:60]:
                    print("   ", line.strip()[:200])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="vim_ti_224")
    args = p.parse_args()
    t = make_inputs(SHAPES[args.shape], torch.bfloat16, "cuda", requires_grad=True)
    out = selective_scan(*[t[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")],
                         delta_softplus=True, backend="triton")
    out.backward(torch.randn_like(out))
    torch.cuda.synchronize()
    report(triton_scan._scan_fwd_kernel, "fwd")
    report(triton_scan._scan_bwd_kernel, "bwd")


if __name__ == "__main__":
    main()
