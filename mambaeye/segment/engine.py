"""Segmentation training, evaluation and prediction.

:func:`train` writes a run folder (``cfg.output_dir``): ``config.yaml`` (resolved), ``plan.json`` (spacing,
normalization, classes), ``metrics.csv`` / ``metrics.json`` (one row per epoch), ``loss.png`` / ``dice.png``,
checkpoints ``last.pt`` (every epoch) and ``best.pt`` (best validation mean foreground Dice), written atomically,
and at the end ``evaluation/`` (``report.md``, ``metrics.json``, ``overlays/``) on the held-out cases (imagesTs +
labelsTs, MSD test cases with labels) or, without those, on the validation cases.

Exact resume: every epoch draws its patches, augmentation and dropout from generators seeded by
(seed, epoch, rank) and the learning rate is a function of the step, so a run stopped after any epoch and
resumed from ``last.pt`` ends with the same weights and metrics as an uninterrupted one.

Under ``torchrun`` (see :mod:`mambaeye.train.distributed`) each rank samples its own patches
(``batch_size // world_size`` per step), gradients are averaged by DDP, validation cases are shared out over the
ranks and the metrics summed back; only rank 0 writes files.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mambaeye.data.builtin import BUILTIN_DATASETS, prepare_builtin
from mambaeye.data.nnunet import dataset_folder_name
from mambaeye.metrics import dice, normalized_surface_dice
from mambaeye.train.config import ConfigError, save_config
from mambaeye.train.distributed import all_reduce_sum, barrier, init_distributed, shutdown, unwrap, wrap_ddp
from mambaeye.train.engine import (
    autocast,
    optimizer_step,
    progress_bar,
    rng_state,
    save_checkpoint_atomic,
    set_rng_state,
    write_history,
)

from .config import TASK, SegConfig
from .data import IMAGE_SUFFIXES, CaseFiles, SegSource, open_source, read_case, read_image_file, strip_suffix
from .dataset import PatchSampler, build_augmentation, make_train_case
from .inference import predict_case, predict_probabilities
from .losses import DeepSupervisionLoss, DiceCELoss
from .preprocess import Plan, crop, ct_statistics, median_spacing, nonzero_bbox, preprocess_case
from .report import save_overlay, write_report

__all__ = ["train", "evaluate", "predict", "build_model", "load_seg_checkpoint", "checkpoint_task", "split_cases",
           "resolve_source"]

log = logging.getLogger(__name__)

_INPUT_SIZE_MODELS = ("umamba_bot", "umamba_enc", "unet", "segresnet", "unetr", "swinunetr")


# -------------------------------------------------------------------------------------------------------
# data and model


def resolve_source(cfg: SegConfig, is_main: bool = True) -> SegSource:
    """The dataset folder of ``cfg``: a built-in dataset is prepared into ``data_root`` when missing (or when it
    was prepared with other ``dataset_options``); ``data_dir`` is opened as it is."""
    if cfg.data_dir:
        return open_source(cfg.data_dir)
    if cfg.dataset not in BUILTIN_DATASETS:
        raise ConfigError(f"config key 'dataset': unknown built-in dataset {cfg.dataset!r}; choose from "
                          f"{sorted(BUILTIN_DATASETS)} or give data_dir")
    spec = BUILTIN_DATASETS[cfg.dataset]
    if spec.spatial_dims != cfg.spatial_dims:
        raise ConfigError(f"config key 'spatial_dims' is {cfg.spatial_dims}, but {cfg.dataset} is "
                          f"{spec.spatial_dims}D")
    root = Path(cfg.data_root) / dataset_folder_name(spec.dataset_id, spec.folder_name)
    stamp = root / ".mambaeye_options.json"
    wanted = json.dumps(cfg.dataset_options, sort_keys=True)
    if is_main and not ((root / "dataset.json").is_file() and stamp.is_file() and stamp.read_text() == wanted):
        log.info("preparing built-in dataset %s into %s", cfg.dataset, root)
        prepare_builtin(cfg.dataset, cfg.data_root, overwrite=True, **cfg.dataset_options)
        stamp.write_text(wanted)
    return open_source(root)


def split_cases(ids: list[str], cfg: SegConfig) -> tuple[list[str], list[str]]:
    """(train ids, val ids): ``val_cases`` when given, else fold ``fold`` of ``num_folds`` over a fixed shuffle
    of the sorted ids (independent of ``seed``). A single case serves as both."""
    ids = sorted(ids)
    if cfg.val_cases:
        val = [str(v) for v in cfg.val_cases]
        unknown = [v for v in val if v not in ids]
        if unknown:
            raise ConfigError(f"config key 'val_cases': {unknown} are not training cases ({ids[:5]}...)")
    elif len(ids) == 1:
        return ids, ids
    else:
        perm = np.random.default_rng(12345).permutation(len(ids))
        folds = min(cfg.num_folds, len(ids))
        val = sorted(ids[i] for k, i in enumerate(perm) if k % folds == cfg.fold % folds)
    train = [i for i in ids if i not in val]
    if not train:
        raise ConfigError("the validation split leaves no training cases")
    return train, val


def build_model(name: str, model_kwargs: dict, plan: Plan, patch_size, deep_supervision: bool) -> nn.Module:
    from mambaeye.models import create_model

    kwargs = dict(model_kwargs)
    if name in _INPUT_SIZE_MODELS:
        kwargs.setdefault("input_size", list(patch_size))
    model = create_model(name, in_chans=plan.in_channels, num_classes=plan.num_classes,
                         spatial_dims=plan.spatial_dims, deep_supervision=deep_supervision, **kwargs)
    stride = getattr(model, "total_stride", None) or (getattr(model, "stride", 1),) * plan.spatial_dims
    if any(p % s for p, s in zip(patch_size, stride, strict=True)):
        raise ConfigError(f"config key 'patch_size' {list(patch_size)} is not divisible by {name}'s total stride "
                          f"{list(stride)}")
    return model


def _load_cases(source: SegSource, cases: list[CaseFiles], spatial_dims: int):
    return [(c, *read_case(c, source, spatial_dims)) for c in cases]


def _make_plan(cfg: SegConfig, source: SegSource, raw: list) -> Plan:
    spacings = [g.spacing for _, _, _, g in raw]
    target = [float(s) for s in cfg.target_spacing] or median_spacing(spacings)
    ct_stats = []
    if cfg.normalization == "ct":
        images, labels = [], []
        for _, img, lab, _ in raw:
            box = nonzero_bbox(img) if cfg.crop_to_nonzero else tuple((0, n) for n in img.shape[1:])
            images.append(crop(img, box, True))
            labels.append(crop(lab, box, False))
        ct_stats = ct_statistics(images, labels, seed=cfg.seed)
    return Plan(cfg.spatial_dims, source.in_channels, source.num_classes, dict(source.labels),
                list(source.channel_names), target, cfg.normalization, cfg.crop_to_nonzero, ct_stats)


def _class_names(plan: Plan) -> list[str]:
    by_value = {v: k for k, v in plan.label_names.items()}
    return [by_value.get(c, f"class_{c}") for c in range(1, plan.num_classes)]


# -------------------------------------------------------------------------------------------------------
# checkpoints


def _checkpoint_file(path: str | Path, which: str = "best") -> Path:
    path = Path(path)
    if path.is_dir():
        cand = path / f"{which}.pt"
        path = cand if cand.is_file() else path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def load_seg_checkpoint(path: str | Path, which: str = "best") -> tuple[dict, Path]:
    """(checkpoint dict, file) for a checkpoint file or a run folder (``which``.pt, else last.pt)."""
    file = _checkpoint_file(path, which)
    ckpt = torch.load(file, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("task") != TASK:
        raise ValueError(f"{file} is not a mambaeye segmentation checkpoint")
    return ckpt, file


def checkpoint_task(path: str | Path) -> str:
    """"segmentation" or "classification" for a checkpoint file or run folder (its config.yaml, else the file)."""
    path = Path(path)
    if path.is_dir() and (path / "config.yaml").is_file():
        import yaml

        data = yaml.safe_load((path / "config.yaml").read_text()) or {}
        return str(data.get("task") or "classification")
    try:
        file = _checkpoint_file(path, "last")
    except FileNotFoundError:
        return "classification"  # let the classification path report the missing file
    ckpt = torch.load(file, map_location="cpu", weights_only=False)
    return str(ckpt.get("task") or "classification") if isinstance(ckpt, dict) else "classification"


def _model_from_checkpoint(ckpt: dict) -> tuple[nn.Module, SegConfig, Plan]:
    cfg = SegConfig.from_dict(ckpt["config"], source="checkpoint config")
    plan = Plan.from_dict(ckpt["plan"])
    model = build_model(cfg.model, cfg.model_kwargs, plan, cfg.patch_size, cfg.deep_supervision)
    model.load_state_dict(ckpt["model"])
    return model.eval(), cfg, plan


# -------------------------------------------------------------------------------------------------------
# training


def _lr_at(cfg: SegConfig, step: int, total: int) -> float:
    frac = min(step / max(total, 1), 1.0)
    if cfg.optimizer == "sgd":
        return cfg.lr * (1 - frac) ** 0.9  # nnU-Net's poly schedule
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * frac))


def _optimizer(cfg: SegConfig, model: nn.Module) -> torch.optim.Optimizer:
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay = [p for n, p in model.named_parameters() if p.requires_grad and n not in skip]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and n in skip]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _epoch_seed(seed: int, epoch: int, rank: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank, stream]).generate_state(1)[0])


def _write_history(run_dir: Path, history: list[dict], class_names: list[str]) -> None:
    plots = (("loss", ["train_loss", "val_loss"], "loss"),
             ("dice", ["val_mean_dice"] + [f"val_dice_{c}" for c in class_names], "Dice (validation)"))
    write_history(run_dir, history, plots)


@torch.no_grad()
def _validate(model: nn.Module, val_cases: list, cfg: SegConfig, plan: Plan, info, device) -> dict:
    """Sliding window on the preprocessed validation cases shared out over the ranks: mean loss and per-class
    Dice summed over ranks (on the preprocessed grid, like nnU-Net's validation during training)."""
    loss_fn = DiceCELoss()
    k = plan.num_classes - 1
    sums = [0.0] * (2 + k)  # loss, n, dice per class
    for i, case in enumerate(val_cases):
        if i % info.world_size != info.rank:
            continue
        probs = predict_probabilities(unwrap(model), case.image, cfg.patch_size, cfg.sw_overlap, cfg.val_mirror,
                                      cfg.sw_batch_size, device)
        label = case.label[None]
        sums[0] += float(loss_fn(probs.clamp_min(1e-8).log()[None], label[None]))
        sums[1] += 1
        d = dice(probs.argmax(0)[None], label, plan.num_classes)[0]
        for c in range(k):
            sums[2 + c] += float(d[c])
    sums = all_reduce_sum(sums, info, device)
    n = max(sums[1], 1)
    names = _class_names(plan)
    row = {"val_loss": sums[0] / n, "val_n": int(sums[1])}
    per_class = [s / n for s in sums[2:]]
    row["val_mean_dice"] = float(np.mean(per_class)) if per_class else float("nan")
    row.update({f"val_dice_{c}": v for c, v in zip(names, per_class, strict=True)})
    return row


def train(cfg: SegConfig) -> dict:
    """Train a segmentation network; returns ``{"run_dir", "best_dice", "best_epoch", "history", "model",
    "evaluation"}`` (``evaluation``: the final held-out metrics on rank 0, else None)."""
    prev = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        return _train(cfg)
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])


def _train(cfg: SegConfig) -> dict:
    info, device = init_distributed(cfg.device)
    run_dir = Path(cfg.output_dir)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)

    if info.is_main:
        resolve_source(cfg, True)  # rank 0 prepares a built-in dataset; the others wait, then read it
    barrier(info)
    source = resolve_source(cfg, False)
    train_ids, val_ids = split_cases([c.case_id for c in source.train], cfg)
    raw = _load_cases(source, source.train, cfg.spatial_dims)
    plan = _make_plan(cfg, source, [r for r in raw if r[0].case_id in train_ids])
    prepared = {}
    for case, image, label, geometry in raw:
        x, y, _ = preprocess_case(image, label, geometry, plan)
        prepared[case.case_id] = make_train_case(case.case_id, x, y, seed=cfg.seed)
    train_cases = [prepared[i] for i in train_ids]
    val_cases = [prepared[i] for i in val_ids]
    class_names = _class_names(plan)
    log.info("%s: %d training / %d validation cases, %d classes, target spacing %s, shapes after preprocessing "
             "%s", source.root, len(train_cases), len(val_cases), plan.num_classes, plan.target_spacing,
             sorted({tuple(c.image.shape[1:]) for c in train_cases}))

    model = build_model(cfg.model, cfg.model_kwargs, plan, cfg.patch_size, cfg.deep_supervision).to(device)
    optimizer = _optimizer(cfg, model)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16" and device.type == "cuda")
    criterion = DeepSupervisionLoss(DiceCELoss(), cfg.spatial_dims)
    per_rank_batch = max(1, cfg.batch_size // info.world_size)
    augment = build_augmentation(cfg.spatial_dims) if cfg.augmentation else None
    sampler = PatchSampler(train_cases, cfg.patch_size, per_rank_batch, cfg.foreground_oversample, augment)

    start_epoch, history, best_dice, best_epoch = 0, [], -1.0, -1
    resume = None
    if cfg.resume:
        resume = run_dir / "last.pt" if cfg.resume == "auto" else Path(cfg.resume)
        if resume.is_dir():
            resume = resume / "last.pt"
        if not resume.is_file():
            if cfg.resume != "auto":
                raise FileNotFoundError(f"--resume: no checkpoint at {resume}")
            log.info("resume: auto, but %s does not exist yet: starting a new run", resume)
            resume = None
    if resume is not None:
        ckpt, _ = load_seg_checkpoint(resume)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, history = ckpt["epoch"] + 1, ckpt["history"]
        best_dice, best_epoch = ckpt["best_dice"], ckpt["best_epoch"]
        set_rng_state(ckpt["rng"])
        log.info("resumed from %s at epoch %d", resume, start_epoch + 1)
    if info.is_main:
        save_config(cfg, run_dir / "config.yaml")
        (run_dir / "plan.json").write_text(json.dumps(plan.to_dict(), indent=2) + "\n")
    ddp_model = wrap_ddp(model, info, device)
    total_steps = cfg.epochs * cfg.iterations_per_epoch
    show = cfg.progress and info.is_main

    for epoch in range(start_epoch, cfg.epochs):
        # everything random in this epoch depends only on (seed, epoch, rank): exact resume
        rng = np.random.default_rng(_epoch_seed(cfg.seed, epoch, info.rank, 0))
        torch.manual_seed(_epoch_seed(cfg.seed, epoch, info.rank, 1))
        if augment is not None:
            augment.set_seed(_epoch_seed(cfg.seed, epoch, info.rank, 2))
        ddp_model.train()
        t0 = time.time()
        loss_sum, seen = 0.0, 0
        bar = progress_bar(range(cfg.iterations_per_epoch), show, desc=f"epoch {epoch + 1}/{cfg.epochs}")
        for it in bar:
            x, y = sampler.sample(rng)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            lr = _lr_at(cfg, epoch * cfg.iterations_per_epoch + it, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(cfg.amp, device):
                outputs = ddp_model(x)
            loss = criterion(outputs, y)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}, step {it + 1}")
            optimizer_step(loss, optimizer, scaler, model, cfg.clip_grad)
            loss_sum += loss.item() * len(x)
            seen += len(x)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
        loss_sum, seen = all_reduce_sum([loss_sum, seen], info, device)
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / seen, "train_patches": int(seen)}
        if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs:
            row.update(_validate(ddp_model, val_cases, cfg, plan, info, device))
        row["time_s"] = time.time() - t0
        history.append(row)
        is_best = row.get("val_mean_dice") is not None and row["val_mean_dice"] > best_dice
        if is_best:
            best_dice, best_epoch = row["val_mean_dice"], epoch + 1
        if info.is_main:
            ckpt = {"task": TASK, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(), "epoch": epoch, "history": history, "best_dice": best_dice,
                    "best_epoch": best_epoch, "rng": rng_state(), "config": cfg.to_dict(),
                    "plan": plan.to_dict(), "train_cases": train_ids, "val_cases": val_ids,
                    "data": str(source.root)}
            save_checkpoint_atomic(ckpt, run_dir / "last.pt")
            if is_best:
                save_checkpoint_atomic(ckpt, run_dir / "best.pt")
            _write_history(run_dir, history, class_names)
        barrier(info)
        log.info("epoch %d/%d: %s", epoch + 1, cfg.epochs,
                 ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch" and isinstance(v, float)))

    evaluation = None
    if info.is_main:
        if not history:
            _write_history(run_dir, history, class_names)
        evaluation = evaluate(run_dir, which=cfg.eval_checkpoint, device=str(device), progress=cfg.progress)
    barrier(info)
    shutdown(info)
    return {"run_dir": str(run_dir), "best_dice": best_dice, "best_epoch": best_epoch, "history": history,
            "model": model, "evaluation": evaluation}


# -------------------------------------------------------------------------------------------------------
# evaluation and prediction


def _eval_cases(source: SegSource, ckpt: dict, split: str | None) -> tuple[str, list[CaseFiles]]:
    labelled_test = [c for c in source.test if c.label is not None]
    if split is None:
        split = "test" if labelled_test else "val"
    if split == "test":
        if not labelled_test:
            raise ValueError(f"{source.root}: no held-out cases with labels (imagesTs + labelsTs, or MSD test "
                             "entries with a label); use split 'val'")
        return split, labelled_test
    if split == "val":
        val = set(ckpt.get("val_cases") or [])
        return split, [c for c in source.train if c.case_id in val]
    if split == "train":
        return split, list(source.train)
    raise ValueError(f"split must be 'test', 'val' or 'train', got {split!r}")


def evaluate(checkpoint: str | Path, split: str | None = None, data_dir: str | None = None,
             out_dir: str | Path | None = None, which: str = "best", mirror: bool | None = None,
             device: str = "auto", progress: bool = True) -> dict:
    """Sliding-window prediction on ``split`` ("test": held-out cases with labels, the default when there are
    any; "val"; "train") of the checkpoint's dataset (or ``data_dir``), scored on the original grid: per-case,
    per-class DSC and NSD (``nsd_tolerance`` mm, spacing honoured). Writes ``report.md``, ``metrics.json`` and
    ``overlays/`` into ``out_dir`` (default: RUN_DIR/evaluation); returns the metrics dict."""
    ckpt, file = load_seg_checkpoint(checkpoint, which)
    model, cfg, plan = _model_from_checkpoint(ckpt)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    model.to(dev)
    source = open_source(data_dir) if data_dir else open_source(ckpt["data"])
    if source.num_classes != plan.num_classes or source.in_channels != plan.in_channels:
        raise ValueError(f"{source.root}: {source.in_channels} channels / {source.num_classes} classes, the "
                         f"checkpoint {file} was trained on {plan.in_channels} / {plan.num_classes}")
    split, cases = _eval_cases(source, ckpt, split)
    if not cases:
        raise ValueError(f"no {split} cases to evaluate in {source.root}")
    out_dir = Path(out_dir) if out_dir else file.parent / "evaluation"
    mirror = cfg.mirror if mirror is None else mirror
    names = _class_names(plan)
    world = source.layout == "msd" or any(str(c.images[0]).lower().endswith((".nii", ".nii.gz")) for c in cases)
    rows = []
    for i, case in enumerate(progress_bar(cases, progress, desc=f"evaluate ({split})")):
        image, label, geometry = read_case(case, source, plan.spatial_dims)
        _, pred = predict_case(model, image, geometry, plan, cfg.patch_size, cfg.sw_overlap, mirror,
                               cfg.sw_batch_size, dev)
        d = dice(pred[None].astype(np.int64), label[None], plan.num_classes)[0]
        n = normalized_surface_dice(pred[None].astype(np.int64), label[None], plan.num_classes, cfg.nsd_tolerance,
                                    spacing=list(geometry.spacing))[0]
        rows.append({"case": case.case_id, "dice": dict(zip(names, d.tolist(), strict=True)),
                     "nsd": dict(zip(names, n.tolist(), strict=True))})
        if i < cfg.max_overlays:
            save_overlay(out_dir / "overlays" / f"{case.case_id}.png", image, label, pred, plan.num_classes,
                         title=f"{case.case_id}: mean DSC {float(d.mean()):.3f}", world_oriented=world)
    info = {"split": split, "checkpoint": str(file), "epoch": ckpt["epoch"] + 1, "data": str(source.root),
            "model": cfg.model, "nsd_tolerance_mm": cfg.nsd_tolerance, "mirror": mirror,
            "sw_overlap": cfg.sw_overlap, "classes": names}
    metrics = write_report(out_dir, rows, names, info)
    log.info("%s (%s, %d cases): mean foreground DSC %.4f, NSD %.4f (%s mm); report: %s", file, split, len(rows),
             metrics["mean_foreground_dice"], metrics["mean_foreground_nsd"], cfg.nsd_tolerance,
             out_dir / "report.md")
    metrics["report"] = str(out_dir / "report.md")
    return metrics


_CHANNEL = re.compile(r"(.+)_(\d{4})$")


def _group_inputs(inputs, in_channels: int) -> list[CaseFiles]:
    """Files and folders -> cases. Files named CASE_0000, CASE_0001, ... are one case's channels (nnU-Net);
    any other file is a case by itself, its channels (if several) on its last axis."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                raise ValueError(f"{p} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such image file or folder: {p}")
    groups: dict[str, dict[int, Path]] = {}
    singles = []
    for f in files:
        m = _CHANNEL.match(strip_suffix(f.name))
        if m is not None:
            groups.setdefault(m.group(1), {})[int(m.group(2))] = f
        else:
            singles.append(CaseFiles(strip_suffix(f.name), (f,), None, channels_last=True))
    cases = []
    for case_id, chans in groups.items():
        if sorted(chans) != list(range(len(chans))) or (len(chans) > 1 and len(chans) != in_channels):
            raise ValueError(f"case {case_id} ({chans[min(chans)]}): channel files {sorted(chans)}, the model takes "
                             f"{in_channels} (CASE_0000 .. CASE_{in_channels - 1:04d})")
        cases.append(CaseFiles(case_id, tuple(chans[c] for c in sorted(chans)), None, channels_last=len(chans) == 1))
    return cases + singles


def predict(checkpoint: str | Path, inputs, out_dir: str | Path, which: str = "best", mirror: bool | None = None,
            device: str = "auto", progress: bool = True) -> list[Path]:
    """Segment image files / folders (NIfTI, PNG, TIFF) and write one label file per case into ``out_dir``, with
    the input's shape and geometry and its file type (``CASE_0000.nii.gz`` -> ``CASE.nii.gz``). Returns the paths."""
    from mambaeye.data.io import write_image

    ckpt, file = load_seg_checkpoint(checkpoint, which)
    model, cfg, plan = _model_from_checkpoint(ckpt)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    model.to(dev)
    mirror = cfg.mirror if mirror is None else mirror
    out_dir = Path(out_dir)
    written = []
    for case in progress_bar(_group_inputs(inputs if isinstance(inputs, (list, tuple)) else [inputs], plan.in_channels),
                      progress, desc="predict"):
        arrays, geometry = [], None
        for f in case.images:
            a, g = read_image_file(f, plan.spatial_dims, case.channels_last)
            if arrays and a.shape[1:] != arrays[0].shape[1:]:
                raise ValueError(f"{f}: shape {a.shape[1:]} differs from {case.images[0]}: {arrays[0].shape[1:]}")
            arrays.append(a)
            geometry = geometry or g
        image = np.concatenate(arrays)
        if image.shape[0] != plan.in_channels:
            raise ValueError(f"{case.images[0]}: has {image.shape[0]} channels, the model takes {plan.in_channels}")
        _, labels = predict_case(model, image, geometry, plan, cfg.patch_size, cfg.sw_overlap, mirror,
                                 cfg.sw_batch_size, dev)
        name = case.images[0].name
        suffix = name[len(strip_suffix(name)):]
        written.append(write_image(out_dir / f"{case.case_id}{suffix}", labels, geometry))
    log.info("%s: wrote %d label files into %s", file, len(written), out_dir)
    return written
