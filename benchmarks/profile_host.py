"""Host (Python) time of a model step: cProfile of a few steps, sorted by own time, next to the GPU-synchronised
wall time. A step slower than its GPU kernels' sum is launch-bound; this shows where the host time goes.

    python benchmarks/profile_host.py --cases vim_ti_224
"""

from __future__ import annotations

import argparse
import cProfile
import pstats

import torch
from profile_models import CASES, make_step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=["vim_ti_224"])
    p.add_argument("--rows", type=int, default=30)
    args = p.parse_args()
    for name in args.cases:
        step, _ = make_step(name)
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        prof.disable()
        print(f"\n## {name}: host profile of 3 steps")
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.rows)


if __name__ == "__main__":
    main()
