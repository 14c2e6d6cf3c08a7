"""The ``mambaeye`` command line (also ``python -m mambaeye``).

    mambaeye demo                 # the selective scan: each backend against the reference, and timings
    mambaeye backends             # which scan backends run here
    mambaeye list [PATTERN]       # registered models
    mambaeye info NAME [--img-size N]              # parameters, FLOPs, activation memory, per stage
    mambaeye convert OFFICIAL.pth OUT.safetensors [--model NAME] [--ema] [--allow-unused]
    mambaeye bench SUITE [--device cuda] [--toy]    # scan, vim-vs-deit, vmamba, erf: tables, JSON, plots
    mambaeye data list | prepare NAME --out DIR     # built-in real datasets in the nnU-Net raw layout
    mambaeye train --config configs/seg_mni152_2d_umamba.yaml [--epochs 3 ...] [--resume]   # segmentation
    mambaeye train --config configs/classification_digits.yaml [--epochs 3 ...] [--resume]  # classification
    mambaeye eval RUN_DIR [--split test|val]       # segmentation: DSC/NSD report; classification: top-1/top-5
    mambaeye predict RUN_DIR INPUT... [--out DIR]  # segmentation: label files; classification: classes

``train`` runs segmentation when the config says ``task: segmentation`` (classification otherwise); ``eval`` and
``predict`` follow the task stored with the checkpoint.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from mambaeye import __version__
from mambaeye.ops import available_backends, selective_scan

_GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def _scan_inputs(batch: int, dim: int, length: int, dstate: int, device: str, dtype: torch.dtype) -> dict:
    """Vim-like inputs: per-step B/C (B, N, L), z gate, D skip, dt bias with softplus."""
    g = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape, scale=1.0, dt=dtype):
        return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(device=device, dtype=dt)

    return dict(
        u=randn(batch, dim, length), delta=randn(batch, dim, length, scale=0.5),
        A=-(torch.rand(dim, dstate, generator=g, dtype=torch.float64) + 0.5).to(device, torch.float32),
        B=randn(batch, dstate, length), C=randn(batch, dstate, length), D=randn(dim, dt=torch.float32),
        z=randn(batch, dim, length), delta_bias=randn(dim, dt=torch.float32),
    )


def _outputs_and_grads(inputs: dict, backend: str) -> list[torch.Tensor]:
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    out, last = selective_scan(**leaves, delta_softplus=True, return_last_state=True, backend=backend)
    weight = torch.linspace(-1, 1, out.numel(), dtype=torch.float64, device=out.device).view_as(out)
    ((out.double() * weight).sum() + last.double().sum()).backward()
    return [out, last] + [leaves[k].grad for k in _GRAD_NAMES]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _median_ms(fn: Callable[[], object], device: str, repeats: int, warmup: bool = True) -> float:
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def demo(args: argparse.Namespace) -> int:
    device = args.device
    backends = [b for b in available_backends(device) if b != "naive"]
    print(f"mambaeye {__version__}: selective scan on {device} (torch {torch.__version__}); "
          f"backends here: {', '.join(available_backends(device))}\n")

    # 1. correctness: every backend against the sequential reference run in float64
    shape = dict(batch=2, dim=16, length=197, dstate=16)
    inputs = _scan_inputs(**shape, device=device, dtype=torch.float32)
    reference = _outputs_and_grads({k: v.double() for k, v in inputs.items()}, "naive")
    names = ["out", "last_state"] + ["d" + n for n in _GRAD_NAMES]
    print(f"Relative error against the float64 reference, float32 inputs, "
          f"B{shape['batch']} D{shape['dim']} L{shape['length']} N{shape['dstate']}:")
    print("| backend | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    worst = 0.0
    for backend in ["naive"] + backends:
        errors = [_rel_err(a, b) for a, b in zip(_outputs_and_grads(inputs, backend), reference, strict=True)]
        worst = max(worst, *errors)
        print(f"| {backend} | " + " | ".join(f"{e:.1e}" for e in errors) + " |")

    # 2. speed: forward, and forward + backward
    b, d, l, n = args.shape
    inputs = _scan_inputs(b, d, l, n, device=device, dtype=torch.float32)
    print(f"\nMedian time (ms), float32, B{b} D{d} L{l} N{n}:")
    print("| backend | forward | forward + backward |\n|---|---|---|")
    timed = (["naive"] if not args.skip_naive else []) + backends
    for backend in timed:
        def fwd(backend=backend):
            with torch.no_grad():
                selective_scan(**inputs, delta_softplus=True, backend=backend)

        slow = backend == "naive"  # the reference is timed once, its backward (autograd through L steps) on ask
        fwd_ms = _median_ms(fwd, device, 1 if slow else args.repeats, warmup=not slow)
        if slow and not args.naive_backward:
            bwd_txt = "not timed (--naive-backward: many seconds)"
        else:
            bwd_ms = _median_ms(lambda backend=backend: _outputs_and_grads(inputs, backend), device,
                                1 if slow else args.repeats, warmup=not slow)
            bwd_txt = f"{bwd_ms:.2f}"
        print(f"| {backend} | {fwd_ms:.2f} | {bwd_txt} |", flush=True)
    ok = worst < 1e-4
    print(f"\n{'OK' if ok else 'FAILED'}: worst relative error {worst:.1e} (float32 inputs; bound 1e-4)")
    return 0 if ok else 1


def backends(args: argparse.Namespace) -> int:
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        print(f"{device}: {', '.join(available_backends(device))}")
    return 0


def list_cmd(args: argparse.Namespace) -> int:
    from mambaeye.models import list_models

    for name in list_models(args.pattern):
        print(name)
    return 0


def info(args: argparse.Namespace) -> int:
    from mambaeye.models import list_models, profile

    kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
    planned = {n for family in ("umamba", "baselines") for n in list_models(family=family)}
    if args.name in planned and args.img_size is not None:
        kwargs["input_size"] = args.img_size  # these networks plan their stages for the input size
    print(profile(args.name, img_size=args.img_size, batch_size=args.batch_size, in_chans=args.in_chans,
                  **kwargs).table())
    return 0


def convert(args: argparse.Namespace) -> int:
    from mambaeye.convert import convert_checkpoint

    report = convert_checkpoint(args.source, args.output, model_name=args.model, use_ema=args.ema,
                                allow_unused=args.allow_unused)
    print(report.summary())
    return 0


def data_cmd(args: argparse.Namespace) -> int:
    from mambaeye.data import list_builtin, prepare_builtin

    if args.action == "list":
        for name in list_builtin():
            print(name)
        return 0
    if not args.name or not args.out:
        raise SystemExit("mambaeye data prepare NAME --out DIR: both NAME and --out are needed")
    print(prepare_builtin(args.name, args.out, overwrite=args.overwrite))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mambaeye", description="Mamba for vision on one selective-scan core.")
    parser.add_argument("--version", action="version", version=f"mambaeye {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="check every scan backend against the reference and time them")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shape", type=int, nargs=4, default=[2, 64, 3136, 16], metavar=("B", "D", "L", "N"),
                   help="timing shape (default: 2 64 3136 16)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-naive", action="store_true", help="do not time the (slow) naive reference")
    p.add_argument("--naive-backward", action="store_true", help="also time the naive reference's backward")
    p.set_defaults(func=demo)

    p = sub.add_parser("backends", help="list the scan backends available on this machine")
    p.set_defaults(func=backends)

    p = sub.add_parser("list", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*")
    p.set_defaults(func=list_cmd)

    p = sub.add_parser("info", help="parameters, FLOPs (scan counted as ~9 B D L N) and activation memory")
    p.add_argument("name")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--in-chans", type=int, default=None, help="input channels (e.g. 1 for MRI)")
    p.add_argument("--num-classes", type=int, default=None)
    p.set_defaults(func=info)

    p = sub.add_parser("convert", help="convert an official checkpoint to safetensors + a JSON config")
    p.add_argument("source", help="official .pth (Vim or VMamba), or a converted .safetensors")
    p.add_argument("output", help="output .safetensors path (the JSON config is written beside it)")
    p.add_argument("--model", default=None, help="model name (default: detected from the keys and shapes)")
    p.add_argument("--ema", action="store_true", help="take model_ema instead of model")
    p.add_argument("--allow-unused", action="store_true", help="drop checkpoint keys the model does not use")
    p.set_defaults(func=convert)

    p = sub.add_parser("data", help="built-in real datasets, prepared into the nnU-Net raw layout")
    p.add_argument("action", choices=["list", "prepare"])
    p.add_argument("name", nargs="?", help="built-in dataset (see: mambaeye data list)")
    p.add_argument("--out", help="folder to write DatasetXXX_Name into")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=data_cmd)

    from mambaeye.bench import add_bench_parser
    from mambaeye.train import add_train_parsers

    add_bench_parser(sub)
    add_train_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
