"""``erf``: effective receptive field maps (RepLKNet's method, as in the VMamba paper): the gradient of the
centre output feature (ReLU, summed over channels) of the last feature map with respect to the input image, |grad|
summed over colour channels and averaged over input images, for vim_tiny, vmamba_tiny, a ResNet-50 and DeiT-S, at
initialisation and, when a checkpoint is given, trained. Drawn as a PNG grid (log scale, per-map normalised);
the JSON keeps the area ratios that hold 20 / 50 / 99% of the gradient mass (larger = wider ERF)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mambaeye.models.vim import Vim

from ._common import Context, Suite, SuiteResult, env_header, md_table
from ._models import create_mambaeye, create_timm

MODELS = ["vim_tiny", "vmamba_tiny", "resnet50", "deit_small_patch16_224"]
LABEL = {"vim_tiny": "Vim-Ti", "vmamba_tiny": "VMamba-T", "resnet50": "ResNet-50", "deit_small_patch16_224": "DeiT-S"}
TOY_KWARGS = {"vim_tiny": dict(depth=2), "vmamba_tiny": dict(depths=(1, 1, 1, 1), dims=16),
              "resnet50": dict(layers=(1, 1, 1, 1)), "deit_small_patch16_224": dict(depth=2)}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def build(name: str, img_size: int, toy: bool, checkpoint: str | None) -> nn.Module:
    extra: dict[str, Any] = dict(TOY_KWARGS[name]) if toy else {}
    if checkpoint:
        extra["checkpoint_path"] = checkpoint
    if name.startswith(("vim", "vmamba")):
        return create_mambaeye(name, img_size=img_size, **extra)
    if name.startswith("deit"):
        extra["img_size"] = img_size
    return create_timm(name, **extra)


def feature_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last feature map as (B, C, h, w): patch tokens of Vim (class token removed) and DeiT reshaped to the
    grid; CNN / VMamba maps as they are."""
    f = model.forward_features(x)
    if f.dim() == 4:
        return f
    b, n, c = f.shape
    if isinstance(model, Vim):  # the class token sits in the middle, at index N // 2 of the N patch tokens
        mid = (n - 1) // 2
        f = torch.cat((f[:, :mid], f[:, mid + 1:]), dim=1)
    else:  # timm ViT: class (+ distillation) tokens first
        f = f[:, getattr(model, "num_prefix_tokens", 1):]
    side = int(round(f.shape[1] ** 0.5))
    return f.reshape(b, side, side, c).permute(0, 3, 1, 2)


def erf_map(model: nn.Module, images: torch.Tensor, batch: int = 4) -> torch.Tensor:
    """Mean over images of |d(sum of ReLU(centre feature)) / d input|, summed over input channels: (H, W)."""
    model.eval()
    total = torch.zeros(images.shape[-2:], dtype=torch.float64)
    for chunk in images.split(batch):
        x = chunk.clone().requires_grad_(True)
        f = feature_map(model, x)
        h, w = f.shape[-2:]
        nn.functional.relu(f[:, :, h // 2, w // 2]).sum().backward()  # ReLU as RepLKNet: a LayerNorm'd
        # feature sums to 0 over channels, so the plain channel sum has no gradient
        total += x.grad.detach().abs().sum(dim=1).sum(dim=0).double().cpu()
    return (total / images.shape[0]).float()


def area_ratio(m: torch.Tensor, fraction: float) -> float:
    """Smallest fraction of pixels holding ``fraction`` of the gradient mass."""
    v = m.flatten().double().sort(descending=True).values
    c = v.cumsum(0) / v.sum().clamp_min(1e-30)
    return min(1.0, float((c < fraction).sum().item() + 1) / v.numel())


def load_images(folder: str | None, n: int, img_size: int, device: str) -> tuple[torch.Tensor, str]:
    """Up to ``n`` images from ``folder`` (resized, ImageNet-normalised), else random normal inputs."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXT)[:n] if folder else []
    if files:
        import numpy as np

        try:
            from PIL import Image

            arrays = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255 for p in files]
        except ImportError:
            import matplotlib.image as mpimg

            arrays = [mpimg.imread(p)[..., :3].astype(np.float32) for p in files]
            arrays = [a / 255 if a.max() > 1 else a for a in arrays]
        mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
        ims = [nn.functional.interpolate(torch.from_numpy(a).permute(2, 0, 1)[None], size=(img_size, img_size),
                                         mode="bilinear", align_corners=False)[0] for a in arrays]
        x = (torch.stack(ims) - mean) / std
        return x.to(device), f"{len(files)} real images from {folder}"
    g = torch.Generator().manual_seed(0)
    return (torch.randn(n, 3, img_size, img_size, generator=g).to(device),
            f"{n} random normal inputs (no image folder given with --images)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", default=None, help="folder of real images (png/jpg); default: random inputs")
    p.add_argument("--num-images", type=int, default=None, help="images averaged (default 50 GPU, 2 toy)")
    p.add_argument("--img-size", type=int, default=None, help="input size (default 1024 GPU, 64 toy)")
    p.add_argument("--models", nargs="+", default=None, choices=MODELS)
    p.add_argument("--checkpoint", action="append", default=[], metavar="MODEL=PATH",
                   help="also map the trained model from this checkpoint (repeatable)")


def run(ctx: Context, args: argparse.Namespace) -> SuiteResult:
    img_size = args.img_size or (64 if ctx.toy else 1024)
    n = args.num_images or (2 if ctx.toy else 50)
    models = args.models or MODELS
    ckpts = dict(c.split("=", 1) for c in args.checkpoint)
    for k in ckpts:
        if k not in MODELS:
            raise SystemExit(f"--checkpoint {k}=...: model must be one of {MODELS}")
    images, source = load_images(args.images, n, img_size, ctx.device)
    rows, maps = [], []
    for name in models:
        for state, ckpt in [("init", None)] + ([("trained", ckpts[name])] if name in ckpts else []):
            torch.manual_seed(0)
            model = build(name, img_size, ctx.toy, ckpt).to(ctx.device)
            start = time.perf_counter()
            with ctx.autocast(ctx.dtypes[0]):
                m = erf_map(model, images, batch=2 if ctx.toy else 4)
            if ctx.device == "cuda":
                torch.cuda.synchronize()
            secs = time.perf_counter() - start
            rows.append(dict(model=name, label=LABEL[name], state=state, checkpoint=ckpt, img_size=img_size,
                             num_images=images.shape[0], dtype=ctx.dtypes[0], seconds=secs,
                             ms_per_image=1e3 * secs / images.shape[0], toy=ctx.toy,
                             area_r20=area_ratio(m, 0.2), area_r50=area_ratio(m, 0.5), area_r99=area_ratio(m, 0.99),
                             grad_mass=float(m.sum())))
            maps.append((f"{LABEL[name]} ({state})", m))
            del model
            print(f"{name:24s} {state:7s} {secs:.2f} s  r50 {rows[-1]['area_r50']:.4f}", flush=True)
    md = (env_header(ctx, "Effective receptive fields")
          + f"\nInputs: {source}, {img_size}². Map = mean |d(sum of ReLU(centre feature)) / d input|; "
            "area ratio rX = smallest fraction of the image holding X% of the gradient mass "
            "(larger = wider receptive field).\n"
          + ("\nToy run: reduced-depth models at initialisation; the maps check the pipeline, not the papers' "
             "figures.\n" if ctx.toy else "") + "\n"
          + md_table(["model", "state", "images", "size", "r20", "r50", "r99", "ms / image"],
                     [[r["label"], r["state"], r["num_images"], r["img_size"], f"{r['area_r20']:.4f}",
                       f"{r['area_r50']:.4f}", f"{r['area_r99']:.4f}", r["ms_per_image"]] for r in rows]))

    def plot(plt, path):
        cols = min(4, len(maps))
        nrows = -(-len(maps) // cols)
        fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 3.2 * nrows), squeeze=False)
        for ax in axes.flat:
            ax.set_axis_off()
        for ax, (title, m) in zip(axes.flat, maps, strict=False):
            v = torch.log10(m / m.max().clamp_min(1e-30) + 1e-6)
            ax.imshow(v.numpy(), cmap="RdYlGn", vmin=-6, vmax=0)
            ax.set_title(title, fontsize=9)
        fig.suptitle(f"ERF, {source.split(' (')[0]}, {img_size}²" + (" (toy)" if ctx.toy else ""), fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=120)

    return SuiteResult(rows=rows, markdown=md, plot=plot, extra=dict(inputs=source))


SUITE = Suite("erf", "effective receptive field maps of vim_tiny, vmamba_tiny, ResNet-50 and DeiT-S",
              run, add_arguments, gpu_dtypes=["fp32"])
