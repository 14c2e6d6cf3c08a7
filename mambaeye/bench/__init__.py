"""``mambaeye bench SUITE``: re-measure the papers' claims (speed, memory, receptive field) on this machine.

    mambaeye bench scan          # selective-scan backends: ms, GB/s, fraction of copy bandwidth
    mambaeye bench vim-vs-deit   # Vim-Ti/S vs DeiT-Ti/S (fused SDPA and plain attention) across resolutions
    mambaeye bench vmamba        # VMamba-T/S/B vs Swin-T/S/B and ConvNeXt-T/S/B: inference, training, resolution
    mambaeye bench erf           # effective receptive field maps of vim_tiny, vmamba_tiny, ResNet-50, DeiT-S
    mambaeye bench seg-nets      # U-Mamba, Swin-UMamba, MONAI baselines (2D, 3D): params, FLOPs, patches/s, memory

Every suite writes ``SUITE.md``, ``SUITE.json`` and ``SUITE.png`` into ``--out`` (default
``benchmarks/results/<card>``). On CPU ``--toy`` is the default (reduced models and inputs, seconds); on a GPU the
real sizes from the papers run unless ``--toy`` is given.

The model suites (vim-vs-deit, vmamba) also take ``--compile MODE`` (every model, ours and the baselines, through
``torch.compile``) or ``--cuda-graphs`` (every model's eager step captured in a CUDA graph and its replays timed:
the kernels' GPU time without the host's launch cost); the other suites refuse both.

A suite is a :class:`Suite` (name, help, ``add_arguments(parser)``, ``run(ctx, args) -> SuiteResult``); add one
with :func:`register_suite`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ._common import COMPILE_MODES, DTYPES, Context, Suite, SuiteResult, card_name, slug, write_outputs

SUITES: dict[str, Suite] = {}


def register_suite(suite: Suite) -> Suite:
    if suite.name in SUITES:
        raise ValueError(f"suite {suite.name!r} is already registered")
    SUITES[suite.name] = suite
    return suite


def _register_builtin() -> None:
    from . import erf, scan, seg_nets, vim_vs_deit, vmamba

    for mod in (scan, vim_vs_deit, vmamba, erf, seg_nets):
        if mod.SUITE.name not in SUITES:
            register_suite(mod.SUITE)


def _common_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--toy", action=argparse.BooleanOptionalAction, default=None,
                   help="tiny models and inputs (default: on for CPU, off for CUDA)")
    p.add_argument("--out", default=None, help="results folder (default: benchmarks/results/<card>)")
    p.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=None,
                   help="compute dtypes (bf16/fp16 through autocast; default: the suite's GPU dtypes, fp32 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls before timing (default 10 GPU, 1 CPU)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls, median taken (default 30 GPU, 3 CPU)")
    p.add_argument("--compile", default=None, choices=COMPILE_MODES, metavar="MODE",
                   help="torch.compile every model (ours and the baselines alike) with this mode before timing "
                        f"({', '.join(COMPILE_MODES)}; reduce-overhead adds CUDA graphs); default: eager. Used by "
                        "the vim-vs-deit and vmamba suites")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="capture every model's step (ours and the baselines alike, eager kernels) in a CUDA graph and "
                        "time its replays: GPU time without the host's launch cost, the same on a fast or a slow "
                        "host; CUDA only, not with --compile. Used by the vim-vs-deit and vmamba suites")


def add_bench_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``bench SUITE ...`` to a CLI's subparsers; each suite parser sets ``func`` to run it."""
    _register_builtin()
    p = subparsers.add_parser("bench", help="re-measure the papers' claims: " + ", ".join(SUITES),
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="suite", required=True)
    for suite in SUITES.values():
        sp = sub.add_parser(suite.name, help=suite.help, description=suite.help)
        _common_arguments(sp)
        suite.add_arguments(sp)
        sp.set_defaults(func=run_from_args)
    return p


def run_from_args(args: argparse.Namespace, command: str | None = None) -> int:
    suite = SUITES[args.suite]
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    toy = (device == "cpu") if args.toy is None else args.toy
    dtypes = args.dtype or (suite.gpu_dtypes if device == "cuda" else ["fp32"])
    on_gpu = device == "cuda"
    compile_mode, cuda_graphs = getattr(args, "compile", None), getattr(args, "cuda_graphs", False)
    for flag, value in (("--compile", compile_mode), ("--cuda-graphs", cuda_graphs)):
        if value and not suite.model_options:
            users = ", ".join(name for name, s in SUITES.items() if s.model_options)
            raise SystemExit(f"{flag} applies to the model suites ({users}), not to {suite.name}")
    if cuda_graphs and not on_gpu:
        raise SystemExit("--cuda-graphs needs --device cuda")
    if cuda_graphs and compile_mode:
        raise SystemExit("--cuda-graphs times eager kernels; with --compile use mode reduce-overhead instead")
    out = Path(args.out) if args.out else Path("benchmarks") / "results" / slug(card_name(device))
    ctx = Context(suite=suite.name, device=device, dtypes=list(dtypes), toy=toy, out_dir=out,
                  warmup=args.warmup if args.warmup is not None else (10 if on_gpu else 1),
                  repeats=args.repeats if args.repeats is not None else (30 if on_gpu else 3), command=command,
                  compile_mode=compile_mode, cuda_graphs=cuda_graphs)
    result = suite.run(ctx, args)
    paths = write_outputs(ctx, result)
    print(result.markdown)
    print("wrote " + ", ".join(str(v) for v in paths.values() if v is not None))
    return 0


def bench_main(argv: list[str]) -> int:
    """``mambaeye bench SUITE ...`` as a function: ``bench_main(["vim-vs-deit", "--toy", "--out", "res"])``."""
    parser = argparse.ArgumentParser(prog="mambaeye")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *argv])
    return run_from_args(args, command="mambaeye bench " + " ".join(argv))


__all__ = ["Suite", "SUITES", "register_suite", "add_bench_parser", "bench_main", "run_from_args", "Context",
           "SuiteResult"]
