"""``mambaeye train`` / ``eval`` / ``predict``: :func:`add_train_parsers` adds the three sub-commands to the main
parser's subparsers (each sets ``func``, returning an exit code).

They serve both pipelines: ``train`` runs segmentation (:mod:`mambaeye.segment`) when the YAML config says
``task: segmentation`` and classification otherwise; ``eval`` and ``predict`` follow the task stored with the
checkpoint (its run folder's config.yaml)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import typing

from .config import ConfigError, TrainConfig, _parse_yaml_value, add_config_args, config_from_args

__all__ = ["add_train_parsers", "train_cmd", "eval_cmd", "predict_cmd"]


def _seg_only_fields() -> list[dataclasses.Field]:
    from mambaeye.segment.config import SegConfig

    shared = {f.name for f in dataclasses.fields(TrainConfig)}
    return [f for f in dataclasses.fields(SegConfig) if f.name not in shared]


def _overrides(args: argparse.Namespace, config_cls) -> dict:
    """``--key value`` overrides for ``config_cls``; a key it does not have raises ConfigError."""
    hints = typing.get_type_hints(config_cls)
    out = {}
    for key, raw in vars(args).items():
        if not key.startswith("cfg_"):
            continue
        name = key[4:]
        if name not in hints:
            raise ConfigError(f"--{name.replace('_', '-')}: not a key of a {config_cls.__name__} "
                              f"({'segmentation' if config_cls is not TrainConfig else 'classification'} config)")
        out[name] = raw if hints[name] is str else _parse_yaml_value(name, raw)
    return out


def _is_main_process() -> bool:
    """Rank 0 under torchrun (RANK in the environment), or a plain single process."""
    return int(os.environ.get("RANK", "0")) == 0


def _setup_logging() -> None:
    """Progress lines from rank 0 only; the other ranks of a torchrun job log warnings and errors."""
    logging.basicConfig(level=logging.INFO if _is_main_process() else logging.WARNING, format="%(message)s")


_USER_ERRORS = (ConfigError, FileNotFoundError, ValueError)  # bad config, missing file or folder, bad data


def _call(fn, *args, **kwargs) -> tuple[object, int]:
    """(fn(...), 0), or (None, 2) after printing "error: ..." to stderr when it raises one of the user errors."""
    try:
        return fn(*args, **kwargs), 0
    except _USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return None, 2


def _train_segmentation(args: argparse.Namespace) -> int:
    from mambaeye.segment import load_seg_config, train
    from mambaeye.segment.config import SegConfig

    try:
        cfg = load_seg_config(args.config, _overrides(args, SegConfig))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _setup_logging()
    result, rc = _call(train, cfg)
    if rc:
        return rc
    ev = result["evaluation"]
    if ev is not None:  # rank 0
        names = ", ".join(f"{c} {ev['mean_dice'][c]:.3f}" for c in ev["classes"])
        print(f"run folder: {result['run_dir']}  best val Dice {result['best_dice']:.4f} (epoch "
              f"{result['best_epoch']})\n{ev['split']} cases ({len(ev['cases'])}): mean foreground DSC "
              f"{ev['mean_foreground_dice']:.4f} ({names}), NSD {ev['mean_foreground_nsd']:.4f} at "
              f"{ev['nsd_tolerance_mm']} mm; report: {ev['report']}")
    return 0


def train_cmd(args: argparse.Namespace) -> int:
    from mambaeye.segment.config import config_task

    try:
        task = config_task(getattr(args, "config", None))
        if task not in ("classification", "segmentation"):
            raise ConfigError(f"{args.config}: config key 'task' must be 'segmentation' (or absent for "
                              f"classification), got {task!r}")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if task == "segmentation":
        return _train_segmentation(args)

    from .engine import train

    try:
        _overrides(args, TrainConfig)
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _setup_logging()
    try:
        result = train(cfg)
    except FileNotFoundError as e:  # missing data folder / resume checkpoint
        print(f"error: {e}", file=sys.stderr)
        return 2
    if _is_main_process():
        print(f"run folder: {result['run_dir']}  best top-1: {result['best_top1']:.2f}% "
              f"(epoch {result['best_epoch']})")
    return 0


def _is_segmentation(path: str) -> bool:
    from mambaeye.segment import checkpoint_task

    return checkpoint_task(path) == "segmentation"


def eval_cmd(args: argparse.Namespace) -> int:
    if _is_segmentation(args.checkpoint):
        from mambaeye.segment import evaluate as seg_evaluate

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        result, rc = _call(seg_evaluate, args.checkpoint, split=args.split, data_dir=args.data_dir, out_dir=args.out,
                           which=args.which, mirror=False if args.no_mirror else None, device=args.device,
                           progress=not args.no_progress)
        if rc:
            return rc
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{args.checkpoint} [{result['split']}, n={len(result['cases'])}, epoch {result['epoch']}]: "
                  f"mean foreground DSC {result['mean_foreground_dice']:.4f}  NSD {result['mean_foreground_nsd']:.4f}"
                  f" ({result['nsd_tolerance_mm']} mm); report: {result['report']}")
        return 0

    from .engine import evaluate

    result, rc = _call(evaluate, args.checkpoint, split=args.split or "val", data_dir=args.data_dir,
                       use_ema=not args.no_ema, batch_size=args.batch_size, device=args.device,
                       progress=not args.no_progress)
    if rc:
        return rc
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.checkpoint} [{result['split']}, n={result['n']}, epoch {result['epoch']}"
              f"{', ema' if result['ema'] else ''}]: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
              f"loss {result['loss']:.4f}")
    return 0


def predict_cmd(args: argparse.Namespace) -> int:
    if _is_segmentation(args.checkpoint):
        from mambaeye.segment import predict as seg_predict

        paths, rc = _call(seg_predict, args.checkpoint, args.files, args.out or "predictions", which=args.which,
                          mirror=False if args.no_mirror else None, device=args.device, progress=False)
        if rc:
            return rc
        if args.json:
            print(json.dumps([str(p) for p in paths]))
        else:
            for p in paths:
                print(p)
        return 0

    from .engine import predict

    results, rc = _call(predict, args.checkpoint, args.files, topk=args.topk, use_ema=not args.no_ema,
                        device=args.device)
    if rc:
        return rc
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            print(f"{r['file']}\t{r['class']}\t{r['prob']:.4f}")
    return 0


def add_train_parsers(subparsers) -> None:
    """Add ``train``, ``eval`` and ``predict`` (classification and segmentation) to ``subparsers``."""
    p = subparsers.add_parser("train", help="train a classifier or, with 'task: segmentation' in the config, a "
                                            "segmentation network (YAML config + --key value overrides)")
    add_config_args(p)
    group = p.add_argument_group("segmentation config overrides (see mambaeye.segment.config.SegConfig)")
    for f in _seg_only_fields():
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"cfg_{f.name}", default=argparse.SUPPRESS,
                           metavar=f.name.upper())
    p.set_defaults(func=train_cmd)

    p = subparsers.add_parser("eval", help="classification: top-1/top-5 on a split; segmentation: DSC/NSD report "
                                           "on the held-out cases")
    p.add_argument("checkpoint", help="checkpoint file (last.pt / best.pt) or run folder")
    p.add_argument("--split", default=None, choices=("train", "val", "test"),
                   help="classification: train | val (default); segmentation: test (held-out, default when "
                        "labelled) | val | train")
    p.add_argument("--data-dir", default=None, help="override the config's data folder")
    p.add_argument("--out", default=None, help="segmentation: report folder (default RUN_DIR/evaluation)")
    p.add_argument("--which", default="best", choices=("best", "last"),
                   help="segmentation, for a run folder: best.pt (default) or last.pt")
    p.add_argument("--no-mirror", action="store_true", help="segmentation: no test-time mirroring")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights even if the checkpoint has EMA")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=eval_cmd)

    p = subparsers.add_parser("predict", help="classification: class and probability per image; segmentation: "
                                              "label files with the inputs' geometry")
    p.add_argument("checkpoint", help="checkpoint file (last.pt / best.pt) or run folder")
    p.add_argument("files", nargs="+", help="image files (segmentation: NIfTI/PNG/TIFF files or folders)")
    p.add_argument("--out", default=None, help="segmentation: output folder (default: predictions)")
    p.add_argument("--which", default="best", choices=("best", "last"))
    p.add_argument("--no-mirror", action="store_true")
    p.add_argument("--topk", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=predict_cmd)
