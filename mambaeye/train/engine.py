"""Classification training, evaluation and prediction.

:func:`train` writes a run folder (``cfg.output_dir``): ``config.yaml`` (resolved), ``metrics.csv`` and
``metrics.json`` (one row per epoch), ``loss.png`` / ``accuracy.png``, and the checkpoints ``last.pt`` / ``best.pt``
(written atomically: temp file + ``os.replace``) holding model, optimizer, scheduler, EMA, AMP scaler, epoch, history
and RNG states. ``resume`` continues from ``last.pt``; each epoch reseeds its RNGs from ``seed + epoch``, so a
resumed run ends with the same weights as an uninterrupted one (on deterministic ops).

Under ``torchrun`` (:mod:`mambaeye.train.distributed`) training is data-parallel (DDP): ``batch_size`` is per
process, each rank draws its share of every epoch from a ``DistributedSampler`` (seeded from ``seed``, reshuffled
each epoch) and its own mixup / drop-path randomness; validation is sharded without padding and the counts summed
over ranks, so val metrics cover each val image exactly once. Only rank 0 writes the run folder; every rank reads the
checkpoint on resume. :func:`evaluate` and :func:`predict` are single-process.

    torchrun --nproc_per_node=2 -m mambaeye train --config configs/classification_mnist.yaml --device cuda"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler

from .config import TrainConfig, save_config
from .data import build_dataset, load_image
from .distributed import DistInfo, ShardSampler, all_reduce_sum, barrier, init_distributed, shutdown, wrap_ddp

__all__ = ["train", "evaluate", "predict", "build_model", "load_checkpoint", "save_checkpoint_atomic"]

log = logging.getLogger(__name__)


def progress_bar(iterable, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return iterable
    return tqdm(iterable, leave=False, dynamic_ncols=True, **kwargs)


def _device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Rank 0 (and a single process) uses ``seed + epoch``; other ranks get their own stream of (seed, epoch)."""
    if rank == 0:
        return seed + epoch
    return int(np.random.SeedSequence([seed % 2**32, epoch, rank]).generate_state(1)[0])


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def autocast(amp: str, device: torch.device):
    """The context of a config's ``amp`` ("none" | "bf16" | "fp16") on ``device``: autocast on CUDA only."""
    if amp == "none":
        return contextlib.nullcontext()
    if device.type != "cuda":  # CPU autocast trips the scan's dtype checks (float32 dt vs bf16 u): fp32 on CPU
        if not getattr(autocast, "_warned", False):
            log.warning("amp=%s is for CUDA; running in fp32 on %s", amp, device)
            autocast._warned = True
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def build_model(cfg: TrainConfig, num_classes: int, checkpoint_path: str | None = None) -> nn.Module:
    from mambaeye.models import create_model

    kwargs = dict(cfg.model_kwargs)
    if cfg.drop_path_rate:
        kwargs.setdefault("drop_path_rate", cfg.drop_path_rate)
    return create_model(cfg.model, checkpoint_path=checkpoint_path or None, num_classes=num_classes,
                        in_chans=cfg.in_chans, img_size=cfg.img_size, **kwargs)


def save_checkpoint_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then ``os.replace`` onto ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=False)


def _accuracy(logits: torch.Tensor, target: torch.Tensor, k: int) -> tuple[int, int]:
    topk = logits.topk(k, dim=1).indices
    correct = topk.eq(target.view(-1, 1))
    return int(correct[:, 0].sum()), int(correct.any(dim=1).sum())


@torch.no_grad()
def _run_eval(model: nn.Module, loader: DataLoader, cfg: TrainConfig, device: torch.device, num_classes: int,
              desc: str = "eval", info: DistInfo | None = None) -> dict:
    """Mean loss, top-1 / top-5 (%) and count ``n``; under DDP each rank runs its shard (``model`` unwrapped, so
    no collective inside the loop, whatever the shard sizes) and the sums are added over ranks."""
    info = info or DistInfo()
    model.eval()
    k = min(5, num_classes)
    loss_sum, top1, top5, n = 0.0, 0, 0, 0
    for x, y in progress_bar(loader, cfg.progress and info.is_main, desc=desc):
        x, y = x.to(device), y.to(device)
        with autocast(cfg.amp, device):
            logits = model(x)
        logits = logits.float()
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        c1, c5 = _accuracy(logits, y, k)
        top1, top5, n = top1 + c1, top5 + c5, n + len(y)
    loss_sum, top1, top5, n = all_reduce_sum([loss_sum, top1, top5, n], info, device)
    d = max(n, 1)
    return {"loss": loss_sum / d, "top1": 100.0 * top1 / d, "top5": 100.0 * top5 / d, "n": int(n)}


_CLASSIFICATION_PLOTS = (("loss", ("train_loss", "val_loss", "val_ema_loss"), "loss"),
                         ("accuracy", ("train_top1", "val_top1", "val_top5", "val_ema_top1"), "accuracy (%)"))


def write_history(run_dir: Path, history: list[dict], plots) -> None:
    """The per-epoch rows as metrics.json and metrics.csv, and one PNG per ``(name, keys, ylabel)`` in ``plots``
    with a curve for each key the rows have (rows without a value are skipped)."""
    (run_dir / "metrics.json").write_text(json.dumps(history, indent=2))
    if history:
        keys = list(dict.fromkeys(k for row in history for k in row))
        with open(run_dir / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(history)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, keys, ylabel in plots:
        fig, ax = plt.subplots(figsize=(6, 4))
        for key in keys:
            pts = [(row["epoch"], row[key]) for row in history if row.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(run_dir / f"{name}.png", dpi=100)
        plt.close(fig)


def _resume_path(cfg: TrainConfig, run_dir: Path) -> Path | None:
    if not cfg.resume:
        return None
    path = run_dir / "last.pt" if cfg.resume == "auto" else Path(cfg.resume)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    return path


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   model: nn.Module, clip_grad: float) -> None:
    """One update: backward through the (fp16) grad scaler, optional gradient-norm clipping, step."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip_grad > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
    scaler.step(optimizer)
    scaler.update()


def train(cfg: TrainConfig) -> dict:
    """Train a classifier; returns ``{"run_dir", "best_top1", "best_epoch", "history", "model"}``.

    ``cfg.deterministic`` turns on ``torch.use_deterministic_algorithms`` for the run (restored afterwards).
    Under torchrun it joins the process group first and leaves it at the end (unless the caller had already
    joined it: then the group stays the caller's); every rank returns the same metrics."""
    prev = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    info, device = init_distributed(cfg.device)
    try:
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        return _train(cfg, info, device)
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.benchmark = prev_bench
        if owns_group:
            shutdown(info)


def _train(cfg: TrainConfig, info: DistInfo, device: torch.device) -> dict:
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler
    from timm.utils import ModelEmaV3

    run_dir = Path(cfg.output_dir)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    _seed_all(cfg.seed)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)

    train_ds, classes = build_dataset(cfg, "train")
    val_ds, _ = build_dataset(cfg, "val")
    num_classes = cfg.num_classes or len(classes)
    if num_classes < len(classes):
        raise ValueError(f"config key 'num_classes' = {num_classes} < {len(classes)} classes in the dataset")
    use_mixup = cfg.mixup > 0 or cfg.cutmix > 0
    loader_gen = torch.Generator()
    train_sampler = val_sampler = None
    if info.enabled:  # each rank a 1/world_size share (padded to equal sizes); val: unpadded shards
        train_sampler = DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                           seed=cfg.seed)
        val_sampler = ShardSampler(len(val_ds), info)
    n_train = len(train_sampler) if train_sampler is not None else len(train_ds)
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=train_sampler is None,
                              sampler=train_sampler, num_workers=cfg.num_workers, generator=loader_gen,
                              drop_last=use_mixup and n_train >= cfg.batch_size, pin_memory=device.type == "cuda")
    val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, shuffle=False, sampler=val_sampler,
                            num_workers=cfg.num_workers)
    if len(train_loader) == 0:
        raise ValueError(f"no training batches: {n_train} images per process with batch_size {cfg.batch_size}")

    model = build_model(cfg, num_classes, cfg.pretrained_checkpoint).to(device)
    optimizer = create_optimizer_v2(model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                    filter_bias_and_bn=True)  # no decay: 1-D params, biases, no_weight_decay()
    steps = len(train_loader)
    scheduler = CosineLRScheduler(optimizer, t_initial=cfg.epochs * steps, lr_min=cfg.min_lr,
                                  warmup_t=int(cfg.warmup_epochs * steps), warmup_lr_init=cfg.warmup_lr,
                                  t_in_epochs=False)
    ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema else None
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16" and device.type == "cuda")
    mixup = (Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.mixup_prob,
                   label_smoothing=cfg.label_smoothing, num_classes=num_classes) if use_mixup else None)
    if mixup is not None:
        criterion: nn.Module = SoftTargetCrossEntropy()
    elif cfg.label_smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(smoothing=cfg.label_smoothing)
    else:
        criterion = nn.CrossEntropyLoss()

    start_epoch, history, best_top1, best_epoch = 0, [], -1.0, -1
    resume = _resume_path(cfg, run_dir)
    if resume is not None:
        ckpt = load_checkpoint(resume)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.module.load_state_dict(ckpt["ema"])
        start_epoch, history = ckpt["epoch"] + 1, ckpt["history"]
        best_top1, best_epoch = ckpt["best_top1"], ckpt["best_epoch"]
        set_rng_state(ckpt["rng"])
        if info.is_main:
            log.info("resumed from %s at epoch %d", resume, start_epoch)
    if info.is_main:
        save_config(cfg, run_dir / "config.yaml")
    # after the resume load: DDP's constructor syncs the ranks (so rank 0 cannot overwrite last.pt before every rank
    # has read it) and broadcasts rank 0's weights; the optimizer and EMA hold the unwrapped model's parameters
    ddp_model = wrap_ddp(model, info, device)

    for epoch in range(start_epoch, cfg.epochs):
        seed = _epoch_seed(cfg.seed, epoch, info.rank)  # shuffle / mixup / dropout depend only on (seed, epoch, rank)
        _seed_all(seed)
        loader_gen.manual_seed(seed)
        if train_sampler is not None:
            train_sampler.set_epoch(epoch)
        ddp_model.train()
        t0 = time.time()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = progress_bar(train_loader, cfg.progress and info.is_main, desc=f"epoch {epoch + 1}/{cfg.epochs}")
        for i, (x, y) in enumerate(bar):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            target = y
            if mixup is not None:
                x, target = mixup(x, y)
            with autocast(cfg.amp, device):
                logits = ddp_model(x)
                loss = criterion(logits.float(), target)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}, step {i + 1}")
            optimizer_step(loss, optimizer, scaler, model, cfg.clip_grad)
            num_updates = epoch * steps + i + 1
            scheduler.step_update(num_updates)
            if ema is not None:
                ema.update(model, step=num_updates)
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        loss_sum, correct, seen = all_reduce_sum([loss_sum, correct, seen], info, device)
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": loss_sum / seen,
               "train_top1": 100.0 * correct / seen}
        val = _run_eval(model, val_loader, cfg, device, num_classes, desc="val", info=info)
        row.update({f"val_{k}": v for k, v in val.items()})
        score = val["top1"]
        if ema is not None:  # every rank keeps the (identical) EMA, so its evaluation is sharded too
            val_ema = _run_eval(ema.module, val_loader, cfg, device, num_classes, desc="val (ema)", info=info)
            row.update({f"val_ema_{k}": v for k, v in val_ema.items() if k != "n"})
            score = max(score, val_ema["top1"])
        row["time_s"] = time.time() - t0
        history.append(row)
        is_best = score > best_top1
        if is_best:
            best_top1, best_epoch = score, epoch + 1
        if info.is_main:
            ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "ema": ema.module.state_dict() if ema is not None else None, "epoch": epoch,
                    "history": history, "best_top1": best_top1, "best_epoch": best_epoch, "rng": rng_state(),
                    "config": cfg.to_dict(), "classes": classes, "num_classes": num_classes,
                    "world_size": info.world_size}
            save_checkpoint_atomic(ckpt, run_dir / "last.pt")
            if is_best:
                save_checkpoint_atomic(ckpt, run_dir / "best.pt")
            write_history(run_dir, history, _CLASSIFICATION_PLOTS)
            log.info("epoch %d/%d: %s", epoch + 1, cfg.epochs,
                     ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in row.items() if k != "epoch"))
    if not history and info.is_main:
        write_history(run_dir, history, _CLASSIFICATION_PLOTS)
    barrier(info)  # every rank returns once the run folder is complete
    return {"run_dir": str(run_dir), "best_top1": best_top1, "best_epoch": best_epoch, "history": history,
            "model": model}


def _model_from_checkpoint(ckpt: dict, use_ema: bool) -> tuple[nn.Module, TrainConfig]:
    cfg = TrainConfig.from_dict(ckpt["config"], source="checkpoint config")
    model = build_model(cfg, ckpt["num_classes"])
    state = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["model"]
    model.load_state_dict(state)
    return model.eval(), cfg


def evaluate(checkpoint: str | Path, split: str = "val", data_dir: str | None = None, use_ema: bool = True,
             batch_size: int | None = None, device: str = "auto", progress: bool = True) -> dict:
    """Loss / top-1 / top-5 (%) of a checkpoint (file or run folder) on ``split`` of its config's dataset."""
    ckpt = load_checkpoint(checkpoint)
    model, cfg = _model_from_checkpoint(ckpt, use_ema)
    cfg.device, cfg.progress = device, progress
    if data_dir:
        cfg.data_dir = data_dir
    if batch_size:
        cfg.batch_size = batch_size
    dev = _device(cfg)
    ds, _ = build_dataset(cfg, split, train=False)
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers)
    result = _run_eval(model.to(dev), loader, cfg, dev, ckpt["num_classes"], desc=f"eval {split}")
    result.update(split=split, n=len(ds), ema=bool(use_ema and ckpt.get("ema") is not None),
                  epoch=ckpt["epoch"] + 1)
    return result


@torch.no_grad()
def predict(checkpoint: str | Path, files: list[str | Path], topk: int = 1, use_ema: bool = True,
            device: str = "auto") -> list[dict]:
    """Class and probability for each image file: ``[{"file", "class", "index", "prob", "topk": [...]}]``."""
    ckpt = load_checkpoint(checkpoint)
    model, cfg = _model_from_checkpoint(ckpt, use_ema)
    cfg.device = device
    dev = _device(cfg)
    model.to(dev)
    classes = ckpt["classes"]
    out = []
    for f in files:
        x = load_image(f, cfg).unsqueeze(0).to(dev)
        with autocast(cfg.amp, dev):
            probs = model(x).float().softmax(-1)[0]
        p, idx = probs.topk(min(topk, probs.numel()))
        name = [classes[i] if i < len(classes) else str(i) for i in idx.tolist()]
        top = [{"class": c, "index": int(i), "prob": float(q)} for c, i, q in zip(name, idx, p, strict=True)]
        out.append({"file": str(f), "class": name[0], "index": int(idx[0]), "prob": float(p[0]), "topk": top})
    return out
