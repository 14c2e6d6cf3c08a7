"""``mambaeye train`` / ``eval`` / ``predict`` for classification: :func:`add_train_parsers` adds the three
sub-commands to the main parser's subparsers (each sets ``func``, returning an exit code)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .config import ConfigError, add_config_args, config_from_args

__all__ = ["add_train_parsers", "train_cmd", "eval_cmd", "predict_cmd"]


def train_cmd(args: argparse.Namespace) -> int:
    from .engine import train

    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = train(cfg)
    except FileNotFoundError as e:  # missing data folder / resume checkpoint
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"run folder: {result['run_dir']}  best top-1: {result['best_top1']:.2f}% (epoch {result['best_epoch']})")
    return 0


def eval_cmd(args: argparse.Namespace) -> int:
    from .engine import evaluate

    try:
        result = evaluate(args.checkpoint, split=args.split, data_dir=args.data_dir, use_ema=not args.no_ema,
                          batch_size=args.batch_size, device=args.device, progress=not args.no_progress)
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.checkpoint} [{result['split']}, n={result['n']}, epoch {result['epoch']}"
              f"{', ema' if result['ema'] else ''}]: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  "
              f"loss {result['loss']:.4f}")
    return 0


def predict_cmd(args: argparse.Namespace) -> int:
    from .engine import predict

    try:
        results = predict(args.checkpoint, args.files, topk=args.topk, use_ema=not args.no_ema, device=args.device)
    except (ConfigError, FileNotFoundError, ValueError) as e:  # bad checkpoint path, unreadable image
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results))
    else:
        for r in results:
            print(f"{r['file']}\t{r['class']}\t{r['prob']:.4f}")
    return 0


def add_train_parsers(subparsers) -> None:
    """Add ``train``, ``eval`` and ``predict`` (classification) to ``subparsers``."""
    p = subparsers.add_parser("train", help="train a classifier (YAML config + --key value overrides)")
    add_config_args(p)
    p.set_defaults(func=train_cmd)

    p = subparsers.add_parser("eval", help="top-1/top-5 of a checkpoint on a split")
    p.add_argument("checkpoint", help="checkpoint file (last.pt / best.pt) or run folder")
    p.add_argument("--split", default="val", choices=("train", "val"))
    p.add_argument("--data-dir", default=None, help="override the config's data_dir")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights even if the checkpoint has EMA")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=eval_cmd)

    p = subparsers.add_parser("predict", help="class and probability for image files")
    p.add_argument("checkpoint", help="checkpoint file (last.pt / best.pt) or run folder")
    p.add_argument("files", nargs="+", help="image files")
    p.add_argument("--topk", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=predict_cmd)
