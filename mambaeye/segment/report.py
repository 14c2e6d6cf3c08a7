"""Evaluation outputs: the per-case DSC / NSD table (``report.md``), ``metrics.json`` and overlay PNGs
(image | ground truth | prediction; for 3D the slice along the last axis with the most ground-truth foreground)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

__all__ = ["summarize", "write_report", "save_overlay", "overlay_slice"]


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def summarize(rows: list[dict], class_names: list[str]) -> dict:
    """rows: [{"case", "dice": {name: v}, "nsd": {name: v}}] -> means per class and over the foreground classes."""
    out = {"mean_dice": {c: _mean([r["dice"][c] for r in rows]) for c in class_names},
           "mean_nsd": {c: _mean([r["nsd"][c] for r in rows]) for c in class_names}}
    out["mean_foreground_dice"] = _mean(list(out["mean_dice"].values()))
    out["mean_foreground_nsd"] = _mean(list(out["mean_nsd"].values()))
    return out


def write_report(out_dir: Path, rows: list[dict], class_names: list[str], info: dict) -> dict:
    """Write ``report.md`` and ``metrics.json`` into ``out_dir``; returns the metrics dict."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows, class_names)
    metrics = {**info, **summary, "cases": rows}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    tol = info.get("nsd_tolerance_mm")
    head = ["case"] + [f"DSC {c}" for c in class_names] + [f"NSD {c}" for c in class_names]
    lines = [f"# Segmentation report: {info.get('split', '')} cases",
             "",
             f"- checkpoint: `{info.get('checkpoint', '')}` (epoch {info.get('epoch', '?')})",
             f"- data: `{info.get('data', '')}`, {len(rows)} cases",
             f"- DSC: Dice on the original grid; NSD: normalized surface Dice at {tol} mm tolerance, voxel spacing "
             "honoured; a class absent from both prediction and truth scores 1",
             f"- mirroring: {info.get('mirror')}, sliding-window overlap {info.get('sw_overlap')}",
             "",
             "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r["case"]] + [f"{r['dice'][c]:.4f}" for c in class_names]
                                       + [f"{r['nsd'][c]:.4f}" for c in class_names]) + " |")
    lines.append("| **mean** | " + " | ".join([f"**{summary['mean_dice'][c]:.4f}**" for c in class_names]
                                           + [f"**{summary['mean_nsd'][c]:.4f}**" for c in class_names]) + " |")
    lines += ["", f"Mean foreground DSC **{summary['mean_foreground_dice']:.4f}**, "
                  f"NSD **{summary['mean_foreground_nsd']:.4f}**.", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    return metrics


def overlay_slice(image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray) -> tuple:
    """(C, *S) image, (*S) maps -> 2D (image, truth, pred); 3D: the last-axis slice with most truth foreground
    (most predicted foreground without truth)."""
    if pred.ndim == 2:
        return image[0], truth, pred
    ref = truth if truth is not None else pred
    counts = (ref > 0).sum(axis=(0, 1))
    z = int(np.argmax(counts)) if counts.any() else ref.shape[-1] // 2
    return image[0][..., z], None if truth is None else truth[..., z], pred[..., z]


def save_overlay(path: Path, image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, num_classes: int,
                 title: str = "", world_oriented: bool = False) -> Path:
    """Image | ground truth | prediction, labels drawn over the image. ``world_oriented``: a NIfTI array
    (first axis left-right), shown transposed with the origin at the bottom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    img, gt, pr = overlay_slice(image, truth, pred)
    # zoom onto the content (non-zero image or any label) with a small margin
    content = (img != 0) | (pr > 0) | (gt > 0 if gt is not None else False)
    if content.any():
        box = tuple(slice(max(int(i.min()) - 4, 0), int(i.max()) + 5) for i in np.nonzero(content))
        img, pr = img[box], pr[box]
        gt = gt[box] if gt is not None else None
    colours = plt.get_cmap("tab10")(np.arange(max(num_classes - 1, 1)) % 10)
    cmap = ListedColormap(colours)
    view = (lambda a: a.T) if world_oriented else (lambda a: a)
    kw = {"origin": "lower"} if world_oriented else {}
    panels = [("image", None), ("ground truth", gt), ("prediction", pr)]
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    for ax, (name, lab) in zip(axes, panels, strict=True):
        ax.imshow(view(img), cmap="gray", interpolation="nearest", **kw)
        if lab is not None:
            masked = np.ma.masked_where(lab == 0, lab - 1)
            ax.imshow(view(masked), cmap=cmap, vmin=0, vmax=max(num_classes - 2, 0), alpha=0.5,
                      interpolation="nearest", **kw)
        elif name == "ground truth":
            ax.text(0.5, 0.5, "no label", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(name)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
