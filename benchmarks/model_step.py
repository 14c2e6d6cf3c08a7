"""Time one model's inference and training steps: ms a step and images/s, bf16 autocast.

    python benchmarks/model_step.py vmamba_tiny                          # 224², batch 128, infer and train
    python benchmarks/model_step.py vim_tiny --size 1248 --batch 8 --modes infer
    python benchmarks/model_step.py vmamba_tiny --device cpu --size 64 --batch 2 --dtype fp32   # a CPU smoke run
    python benchmarks/model_step.py vmamba_tiny --kwarg batch_second=True     # a model argument (a Python literal)

The measurement of `mambaeye bench vmamba|vim-vs-deit` (mambaeye.bench._models.measure: inference is
forward_features under no_grad, training forward + cross-entropy + backward) for one mambaeye model without the
baselines; on CUDA each step is captured in a CUDA graph and its replays are timed (the kernels' time without the
host's launch cost; --eager times the eager calls). What benchmarks/ab.py runs to judge a kernel change by the
whole model: `python benchmarks/ab.py run .dev/ab --rounds 2 -- benchmarks/model_step.py vmamba_tiny`.
"""

from __future__ import annotations

import argparse
import ast
import tempfile
from pathlib import Path

import torch

from mambaeye.bench._common import DTYPES, Context
from mambaeye.bench._models import create_mambaeye, measure
from mambaeye.models import is_model, list_models


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a mambaeye model name, e.g. vmamba_tiny, vim_tiny")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--modes", nargs="+", default=["infer", "train"], choices=["infer", "train"])
    p.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--eager", action="store_true", help="time eager calls instead of CUDA-graph replays")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--kwarg", action="append", default=[], metavar="NAME=VALUE",
                   help="a keyword argument of the model's constructor, the value a Python literal (repeatable)")
    a = p.parse_args(argv)
    kwargs = {}
    for item in a.kwarg:
        name, sep, value = item.partition("=")
        try:
            kwargs[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            sep = ""
        if not sep or not name.isidentifier():
            p.error(f"--kwarg must be NAME=VALUE with VALUE a Python literal (e.g. batch_second=True), got {item!r}")
    if not is_model(a.model):
        p.error(f"unknown model {a.model!r}; mambaeye models: {', '.join(list_models())}")
    graphs = a.device == "cuda" and not a.eager
    ctx = Context(suite="model_step", device=a.device, dtypes=[a.dtype], toy=a.device != "cuda",
                  out_dir=Path(tempfile.gettempdir()), warmup=a.warmup, repeats=a.repeats, cuda_graphs=graphs)
    failed = False
    label = " ".join([a.model, *a.kwarg])
    for mode in a.modes:
        row = measure(ctx, lambda: create_mambaeye(a.model, **kwargs), a.batch, a.size, a.dtype, mode, {})
        timing = "CUDA-graph replays" if graphs else "eager"
        if row["status"] != "ok":
            failed = True
            print(f"{label} {mode} {a.size}² batch {a.batch} {a.dtype}: {row['status']}", flush=True)
            continue
        peak = f", peak {row['peak_mib']:.0f} MiB" if row["peak_mib"] is not None else ""
        print(f"{label} {mode} {a.size}² batch {a.batch} {a.dtype} on {ctx.env['card']}: "
              f"{row['ms']:.3f} ms, {row['img_per_s']:.1f} img/s ({timing}{peak})", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
