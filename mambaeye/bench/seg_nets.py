"""``seg-nets``: the segmentation networks' size and speed: parameters, FLOPs per patch, inference and training
(forward + backward) patches/s and peak memory of umamba_bot / umamba_enc, swin_umamba / swin_umamba_d and the
papers' MONAI baselines (unet, segresnet, unetr, swinunetr), 1 input channel and 14 classes, in 2D at the
papers' AbdomenMRI setting (320x320) and in 3D (128³, the 6-stage setting of U-Mamba's official 3D counts).

The source document's claim checked here: Swin-UMamba is smaller than U-Mamba (fewer parameters and FLOPs) yet
better. The size half is checkable without training: parameters and FLOPs are counted at the real patch sizes
on the meta device (no memory, no arithmetic; the same counting as ``mambaeye info``: multiply-adds as fvcore,
the selective scan as ~9 B D L N), in toy mode too, and printed beside the document's numbers. U-Mamba's size
depends on the stages nnU-Net plans (7 at 320x320; the papers' 63M / 67M match 8), so the Swin-UMambas are also
compared with the 8-stage U-Mambas at 512x512. The "better" half (DSC / NSD) needs trained networks and is not
measured here.

Speed and memory run at the real sizes on a GPU (default batch 8 in 2D, 2 in 3D; bf16 autocast, U-Mamba's
and Swin-UMamba's scans stay in fp32 as in the official code; cudnn.benchmark on, as nnU-Net; warm-up 3,
median of 10 unless --warmup / --repeats say otherwise) and at toy sizes on CPU (reduced widths and depths,
64² / 16³ to 32³, batch 1; peak memory is not measured on CPU). Deep-supervision heads stay on in both modes, so the
parameter counts are the papers'; training sums a cross-entropy over every output. A network that fails at a
size (out of memory, a shape it cannot take) gets the error in its row; the suite goes on.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.umamba import plan_strides
from ._common import Context, Suite, SuiteResult, env_header, fmt, free_memory, is_oom, md_table

NETWORKS = ["umamba_bot", "umamba_enc", "swin_umamba", "swin_umamba_d", "unet", "segresnet", "unetr", "swinunetr"]
LABEL = {"umamba_bot": "U-Mamba_Bot", "umamba_enc": "U-Mamba_Enc", "swin_umamba": "Swin-UMamba",
         "swin_umamba_d": "Swin-UMamba†", "unet": "nnU-Net-like U-Net", "segresnet": "SegResNet", "unetr": "UNETR",
         "swinunetr": "SwinUNETR"}
IN_CHANS, NUM_CLASSES = 1, 14
# the source document's Figure 12 (Swin-UMamba paper, 2D AbdomenMRI): name -> (params M, GFLOPs). The U-Net row
# is the paper's nnU-Net; no sizes are given for 3D.
PAPER_2D = {"unet": (33, 23.3), "segresnet": (6, 24.5), "unetr": (87, 42.1), "swinunetr": (25, 27.9),
            "umamba_bot": (63, 45.7), "umamba_enc": (67, 47.9), "swin_umamba": (40, 58.4),
            "swin_umamba_d": (27, 15.0)}
SIZES = {2: (320, 320), 3: (128, 128, 128)}
GPU_BATCH = {2: 8, 3: 2}
TOY_BATCH = 1
GPU_WARMUP, GPU_REPEATS = 3, 10
NOT_OFFICIAL_3D = {"swin_umamba", "swin_umamba_d"}  # the official Swin-UMamba code is 2D only
MATCH_TOLERANCE = 0.05
# U-Mamba's size depends on the stages nnU-Net plans: 7 at 320x320, 8 at 512x512 (the papers' 63M / 67M)
EIGHT_STAGE_SIZE = (512, 512)


def create_kwargs(name: str, spatial_dims: int, size: tuple[int, ...], toy: bool = False) -> dict[str, Any]:
    """``create_model`` arguments for ``name`` at patch ``size``: 1 channel, 14 classes; the U-Mambas and the
    MONAI baselines get ``input_size`` (it plans U-Mamba's and DynUNet's stages, sizes UNETR's position
    embedding). ``toy``: narrow, shallow versions that run in well under a second on a CPU."""
    kw: dict[str, Any] = dict(in_chans=IN_CHANS, num_classes=NUM_CLASSES, spatial_dims=spatial_dims)
    if name not in ("swin_umamba", "swin_umamba_d"):
        kw["input_size"] = tuple(size)
    if toy:
        kw.update({
            "umamba_bot": dict(n_stages=3, features_per_stage=(8, 16, 32), strides=2),
            "umamba_enc": dict(n_stages=3, features_per_stage=(8, 16, 32), strides=2),
            "swin_umamba": dict(feat_size=(8, 16, 32, 64, 128), depths=(1, 1, 1, 1)),
            "swin_umamba_d": dict(dims=(16, 32, 64, 128), depths=(1, 1, 1, 1)),
            "unet": dict(n_stages=3, features_per_stage=(8, 16, 32), strides=2),
            "segresnet": dict(features_per_stage=8),
            "unetr": dict(features_per_stage=8, hidden_size=96, mlp_dim=192, num_heads=4),
            "swinunetr": dict(features_per_stage=12, depths=(1, 1, 1, 1), window_size=4),
        }[name])
    return kw


def toy_size(name: str, spatial_dims: int) -> tuple[int, ...]:
    """The smallest patch each toy network takes: 64² in 2D; in 3D 16³, 32³ for the stride-32 Swin-UMambas, and
    32x32x64 for SwinUNETR (the instance norm on its stride-32 bottleneck needs more than one voxel)."""
    if spatial_dims == 2:
        return (64, 64)
    return {"swin_umamba": (32, 32, 32), "swin_umamba_d": (32, 32, 32), "swinunetr": (32, 32, 64)}.get(name, (16,) * 3)


def build(name: str, kwargs: dict[str, Any], meta: bool = False) -> nn.Module:
    """``create_model(name, **kwargs)``, on the meta device when ``meta`` and the constructor allows it (MONAI's
    SwinUNETR reads a tensor's value while it builds, so it is built on the CPU)."""
    from mambaeye import create_model

    if meta:
        try:
            with torch.device("meta"):
                return create_model(name, **kwargs)
        except RuntimeError:
            pass
    return create_model(name, **kwargs)


def count(name: str, spatial_dims: int, size: tuple[int, ...], toy: bool = False) -> dict[str, Any]:
    """Parameters, FLOPs (scan share) and the activations training saves, for one patch; no real compute."""
    from mambaeye.models import profile

    out: dict[str, Any] = dict(params=None, gflops=None, scan_gflops=None, act_mib=None, status="ok")
    try:
        prof = profile(build(name, create_kwargs(name, spatial_dims, size, toy), meta=True), img_size=tuple(size))
    except (RuntimeError, ValueError, TypeError, NotImplementedError, ImportError) as err:  # MONAI missing too
        out["status"] = f"error: {type(err).__name__}: {str(err)[:160]}"
        return out
    out.update(params=prof.params, gflops=prof.flops / 1e9, scan_gflops=prof.scan_flops / 1e9,
               act_mib=prof.activation_bytes / 2**20)
    return out


def _outputs(out: Tensor | list[Tensor] | tuple[Tensor, ...], x: Tensor) -> list[Tensor]:
    """Every output of a forward: deep-supervision lists as they are; MONAI DynUNet stacks its heads on dim 1."""
    if isinstance(out, (list, tuple)):
        return list(out)
    if out.dim() == x.dim() + 1:
        return list(out.unbind(1))
    return [out]


def measure(ctx: Context, name: str, spatial_dims: int, size: tuple[int, ...], batch: int, dtype: str,
            modes: list[str], row: dict[str, Any]) -> dict[str, Any]:
    """Build ``name`` for ``size`` (toy widths when ``ctx.toy``), then for each mode ("infer": eval forward under
    no_grad; "train": forward + cross-entropy on every output + backward) fill ``row`` with ms, patches/s, peak
    memory (CUDA) and a status; an error (OOM, a size the network refuses) is recorded, not raised."""
    for mode in ("infer", "train"):
        row.update({f"{mode}_ms": None, f"{mode}_per_s": None, f"{mode}_peak_mib": None,
                    f"{mode}_status": "ok" if mode in modes else "skipped"})
    model = x = None
    with free_memory(ctx.device):
        try:
            model = build(name, create_kwargs(name, spatial_dims, size, ctx.toy))
            row["params"] = sum(p.numel() for p in model.parameters())
            model = model.to(ctx.device)
            x = torch.randn(batch, IN_CHANS, *size, device=ctx.device)
        except (RuntimeError, ValueError, TypeError, ImportError) as err:
            for mode in modes:
                row[f"{mode}_status"] = "OOM" if is_oom(err) else f"error: {type(err).__name__}: {str(err)[:160]}"
            model = x = None
            return row
        targets: dict[tuple[int, ...], Tensor] = {}

        def target(shape: torch.Size) -> Tensor:  # random labels at each output's resolution, made once
            key = (shape[0], *shape[2:])
            if key not in targets:
                targets[key] = torch.randint(0, NUM_CLASSES, key, device=ctx.device)
            return targets[key]

        def infer() -> None:
            with torch.no_grad(), ctx.autocast(dtype):
                model(x)

        def train() -> None:
            with ctx.autocast(dtype):
                outs = _outputs(model(x), x)
                loss = sum(F.cross_entropy(o.float(), target(o.shape)) for o in outs)
            loss.backward()
            for p in model.parameters():
                p.grad = None

        for mode in modes:
            model.train(mode == "train")
            step = infer if mode == "infer" else train
            try:
                step()  # first call (cudnn / Triton autotuning) outside the memory measurement
                row[f"{mode}_peak_mib"] = ctx.peak_mib(step)[0]
                row[f"{mode}_ms"] = ctx.time_ms(step)
                row[f"{mode}_per_s"] = batch / row[f"{mode}_ms"] * 1e3
            except (RuntimeError, ValueError, AssertionError) as err:
                row[f"{mode}_status"] = "OOM" if is_oom(err) else f"error: {type(err).__name__}: {str(err)[:160]}"
                for p in model.parameters():
                    p.grad = None
                if ctx.device == "cuda":
                    torch.cuda.empty_cache()
        model = x = None
        targets.clear()
    return row


def _pct(ours: float, paper: float) -> str:
    d = ours / paper - 1
    return "matches" if abs(d) <= MATCH_TOLERANCE else f"{100 * d:+.0f}%"


def _compare(a: dict[str, Any], b: dict[str, Any]) -> tuple[bool, bool]:
    return a["params"] < b["params"], a["gflops"] < b["gflops"]


def size_verdicts(sizes: list[dict[str, Any]], eight_stage: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Does each Swin-UMamba have fewer parameters and fewer FLOPs than both U-Mambas: in our 2D counts, in our
    counts at ``EIGHT_STAGE_SIZE`` (``eight_stage``: name -> :func:`count`), and in the document's own table?"""
    ours = {r["network"]: r for r in sizes if r["spatial_dims"] == 2 and r["status"] == "ok"}
    patch = next(("x".join(map(str, r["patch"])) for r in sizes if r["spatial_dims"] == 2), "?")
    paper = {n: dict(params=p * 1e6, gflops=g) for n, (p, g) in PAPER_2D.items()}
    sources = [("our counts", ours, f"2D {patch}, 1 -> 14 classes")]
    if eight_stage:
        sources.append(("our counts", {n: c for n, c in eight_stage.items() if c["status"] == "ok"},
                        f"2D {'x'.join(map(str, EIGHT_STAGE_SIZE))}, U-Mamba planned with 8 stages as the papers' "
                        "63M / 67M suggest"))
    sources.append(("the document's table", paper, "Figure 12, 2D AbdomenMRI"))
    lines = []
    for source, table, where in sources:
        for swin in ("swin_umamba", "swin_umamba_d"):
            umambas = [u for u in ("umamba_bot", "umamba_enc") if u in table]
            if swin not in table or not umambas:
                lines.append(f"- Verdict ({source}): {LABEL[swin]} vs U-Mamba: not counted, so not checked.")
                continue
            s = table[swin]
            fewer = [_compare(s, table[u]) for u in umambas]
            p_ok, f_ok = all(f[0] for f in fewer), all(f[1] for f in fewer)
            vs = ", ".join(f"{LABEL[u]} {table[u]['params'] / 1e6:.1f}M / {table[u]['gflops']:.1f}G" for u in umambas)
            if p_ok and f_ok:
                word = 'SMALLER (fewer parameters and fewer FLOPs): supports "smaller"'
            elif p_ok or f_ok:
                word = (f'SMALLER ONLY IN {"PARAMETERS" if p_ok else "FLOPS"} (more {"FLOPs" if p_ok else "parameters"}'
                        '): supports "smaller" only in part')
            else:
                word = 'NOT SMALLER (more parameters and more FLOPs): does not support "smaller"'
            lines.append(f"- Verdict ({source}, {where}): {LABEL[swin]} {s['params'] / 1e6:.1f}M / "
                         f"{s['gflops']:.1f}G vs {vs}: {word}.")
    lines.append('- The "yet better" half (DSC / NSD) needs trained networks: not checked by this suite.')
    return lines


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--networks", nargs="+", choices=NETWORKS, default=None, help="networks (default: all eight)")
    p.add_argument("--dims", nargs="+", type=int, choices=[2, 3], default=None, help="2D and/or 3D (default both)")
    p.add_argument("--size-2d", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="2D patch (default 320 320, the papers' AbdomenMRI setting)")
    p.add_argument("--size-3d", type=int, nargs=3, default=None, metavar=("D", "H", "W"),
                   help="3D patch (default 128 128 128)")
    p.add_argument("--batch-2d", type=int, default=None, help="2D batch (default 8, 1 with --toy)")
    p.add_argument("--batch-3d", type=int, default=None, help="3D batch (default 2, 1 with --toy)")
    p.add_argument("--no-train", action="store_true", help="skip the training (forward+backward) timings")
    p.add_argument("--no-timing", action="store_true", help="parameters and FLOPs only (no model runs)")
    p.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=True,
                   help="cudnn.benchmark on CUDA, as nnU-Net trains (default on; its autotuning runs in the warm-up)")


def run(ctx: Context, args: argparse.Namespace) -> SuiteResult:
    if ctx.device == "cuda":  # 32 measurements at 3D sizes: fewer calls than the other suites' 10 / 30
        ctx.warmup = GPU_WARMUP if args.warmup is None else ctx.warmup
        ctx.repeats = GPU_REPEATS if args.repeats is None else ctx.repeats
    networks = args.networks or NETWORKS
    dims_list = sorted(set(args.dims or [2, 3]))
    real = {2: tuple(args.size_2d or SIZES[2]), 3: tuple(args.size_3d or SIZES[3])}
    batch = {2: args.batch_2d or (TOY_BATCH if ctx.toy else GPU_BATCH[2]),
             3: args.batch_3d or (TOY_BATCH if ctx.toy else GPU_BATCH[3])}
    modes = ["infer"] if args.no_train else ["infer", "train"]

    rows: list[dict[str, Any]] = []
    for dims in dims_list:
        for name in networks:
            row = dict(section="size", network=name, label=LABEL[name], spatial_dims=dims, patch=list(real[dims]),
                       paper_params_m=PAPER_2D[name][0] if dims == 2 else None,
                       paper_gflops=PAPER_2D[name][1] if dims == 2 else None, **count(name, dims, real[dims]))
            rows.append(row)
            print(f"size  {dims}D {name:14s} {fmt(row['params'] and row['params'] / 1e6)}M "
                  f"{fmt(row['gflops'])}G {row['status']}", flush=True)

    eight_stage = None
    if 2 in dims_list and real[2] != EIGHT_STAGE_SIZE:
        eight_stage = {n: count(n, 2, EIGHT_STAGE_SIZE) for n in ("umamba_bot", "umamba_enc", "swin_umamba",
                                                                 "swin_umamba_d") if n in networks}

    cudnn_benchmark = torch.backends.cudnn.benchmark
    use_benchmark = ctx.device == "cuda" and args.cudnn_benchmark
    if ctx.device == "cuda":
        torch.backends.cudnn.benchmark = use_benchmark
    try:
        for dtype in ([] if args.no_timing else ctx.dtypes):
            for dims in dims_list:
                for name in networks:
                    size = toy_size(name, dims) if ctx.toy else real[dims]
                    row = dict(section="speed", network=name, label=LABEL[name], spatial_dims=dims,
                               patch=list(size), batch=batch[dims], dtype=dtype, toy=ctx.toy)
                    c = count(name, dims, size, toy=True) if ctx.toy else next(
                        r for r in rows if r["section"] == "size" and (r["network"], r["spatial_dims"]) == (name, dims))
                    row.update(gflops=c["gflops"], act_mib=c["act_mib"])
                    measure(ctx, name, dims, size, batch[dims], dtype, modes, row)
                    rows.append(row)
                    print(f"speed {dims}D {name:14s} {dtype} b{batch[dims]} infer {fmt(row['infer_per_s'])}/s "
                          f"({row['infer_status']}) train {fmt(row['train_per_s'])}/s ({row['train_status']})",
                          flush=True)
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark

    sizes = [r for r in rows if r["section"] == "size"]
    speeds = [r for r in rows if r["section"] == "speed"]
    lines = size_verdicts(sizes, eight_stage)
    bench_txt = ("on" if use_benchmark else "off") if ctx.device == "cuda" else "n/a (CPU)"
    md = env_header(ctx, "Segmentation networks: size and speed") + (
        f"\n1 input channel, {NUM_CLASSES} classes, deep-supervision heads on (the papers' counts). cudnn.benchmark "
        f"{bench_txt}.\n\n## Verdicts: is Swin-UMamba smaller than U-Mamba?\n\n" + "\n".join(lines) + "\n")

    def size_table(dims: int) -> str:
        rs = [r for r in sizes if r["spatial_dims"] == dims]
        if not rs:
            return ""
        patch = "x".join(map(str, rs[0]["patch"]))
        cols = ["network", "params (M)", "GFLOPs / patch", "scan GFLOPs", "saved act. MiB / patch (fp32)"]
        if dims == 2:
            cols += ["paper params (M)", "paper GFLOPs", "params vs paper", "FLOPs vs paper"]
        cols.append("status")
        body = []
        for r in rs:
            ok = r["status"] == "ok"
            cells = [r["label"] + (" (3D: mambaeye only)" if dims == 3 and r["network"] in NOT_OFFICIAL_3D else ""),
                     r["params"] / 1e6 if ok else None, r["gflops"], fmt(r["scan_gflops"], 2), r["act_mib"]]
            if dims == 2:
                cells += [float(r["paper_params_m"]), r["paper_gflops"],
                          _pct(r["params"] / 1e6, r["paper_params_m"]) if ok else "-",
                          _pct(r["gflops"], r["paper_gflops"]) if ok else "-"]
            body.append(cells + [r["status"]])
        paper = ("the document's numbers beside ours ('matches': within 5%)" if dims == 2 else
                 "paper: n/a, the source document gives no 3D sizes")
        return (f"\n## Sizes, {dims}D {patch} (counted on the meta device; {paper})\n\n" + md_table(cols, body))

    md += size_table(2) + size_table(3)
    if 2 in dims_list:
        md += ("\nNotes: the paper's nnU-Net row is nnU-Net's own U-Net (here MONAI DynUNet planned like nnU-Net). "
               "Its Swin-UMamba 40M is from an earlier version of the paper; the released code has 59.9M. The U-Mamba "
               f"counts depend on the stages nnU-Net planned for the dataset: {len(plan_strides(real[2]))} for "
               f"{'x'.join(map(str, real[2]))} here; the papers' 63M / 67M match an 8-stage plan (their plans.json "
               "is not public), hence the 512x512 verdict. FLOPs are multiply-adds (fvcore's convention, as the "
               "papers).\n")
    if 3 in dims_list:
        md += ("\n3D: U-Mamba's AbdomenCT results are 3D, Swin-UMamba's code is 2D only (its encoder is pretrained "
               "in 2D); mambaeye's 3D Swin-UMamba (6 scan directions) is an extension, measured for comparison.\n")
    if speeds:
        cols = ["network", "dims", "patch", "batch", "dtype", "params (M)", "GFLOPs / patch", "infer patches/s",
                "infer ms", "infer peak MiB", "train patches/s", "train ms", "train peak MiB", "status"]
        body = []
        for r in speeds:
            status = "ok" if r["infer_status"] == "ok" and r["train_status"] in ("ok", "skipped") else (
                f"infer: {r['infer_status']}; train: {r['train_status']}")
            digits = 3 if ctx.toy else 1  # toy networks have ~0.1M parameters
            body.append([r["label"], f"{r['spatial_dims']}D", "x".join(map(str, r["patch"])), r["batch"], r["dtype"],
                         fmt(r["params"] / 1e6 if r.get("params") else None, digits), fmt(r["gflops"], digits),
                         r["infer_per_s"],
                         r["infer_ms"], r["infer_peak_mib"], r["train_per_s"], r["train_ms"], r["train_peak_mib"],
                         status])
        what = ("**toy** networks (narrow, shallow) at toy patches on the CPU: checks that the suite runs, not the "
                "papers' numbers; peak memory is not measured on the CPU (-)" if ctx.toy else
                "peak memory: torch.cuda.max_memory_allocated during one call, weights included"
                if ctx.device == "cuda" else "peak memory is not measured on the CPU (-)")
        md += (f"\n## Speed and memory ({what})\n\ninference: eval forward under no_grad; training: forward, "
               f"cross-entropy on every deep-supervision output, backward.\n\n" + md_table(cols, body))

    def plot(plt, path):
        n_speed = len({r["spatial_dims"] for r in speeds})
        mem = [r for r in speeds if r["infer_peak_mib"] or r["train_peak_mib"]]  # CUDA only
        n_panels = 1 + n_speed + bool(mem)
        fig, axes = plt.subplots(1, n_panels, figsize=(6 + 5.5 * (n_panels - 1), 5), squeeze=False)
        axes = axes[0]
        ax = axes[0]
        ok2 = [r for r in sizes if r["spatial_dims"] == 2 and r["status"] == "ok"]
        for i, r in enumerate(ok2):
            color = f"C{i}"
            ax.scatter(r["gflops"], r["params"] / 1e6, color=color, marker="o", label=r["label"])
            ax.scatter(r["paper_gflops"], r["paper_params_m"], color=color, marker="x")
            ax.annotate("", xy=(r["gflops"], r["params"] / 1e6), xytext=(r["paper_gflops"], r["paper_params_m"]),
                        arrowprops=dict(arrowstyle="->", color=color, alpha=0.4))
        patch = "x".join(map(str, ok2[0]["patch"])) if ok2 else ""
        ax.set(xlabel="GFLOPs per patch", ylabel="parameters (M)",
               title=f"2D {patch}: ours (o) vs the document (x)")
        if ok2:
            ax.legend(fontsize=7)
        for ax, dims in zip(axes[1:1 + n_speed], sorted({r["spatial_dims"] for r in speeds}), strict=True):
            rs = [r for r in speeds if r["spatial_dims"] == dims]
            labels = [f"{r['label']}\n{r['dtype']}" + (f" {'x'.join(map(str, r['patch']))}" if ctx.toy else "")
                      for r in rs]
            xs = list(range(len(rs)))
            for off, mode, color in ((-0.2, "infer", "C0"), (0.2, "train", "C3")):
                ax.bar([x + off for x in xs], [r[f"{mode}_per_s"] or 0 for r in rs], width=0.4, color=color,
                       label="inference" if mode == "infer" else "training (fwd+bwd)")
            ax.set_xticks(xs, labels, fontsize=7, rotation=60)
            patch = "toy patches" if ctx.toy else "x".join(map(str, rs[0]["patch"]))
            ax.set(ylabel="patches/s (higher is better)", yscale="log",
                   title=f"{dims}D {patch}, batch {rs[0]['batch']}")
            ax.legend(fontsize=7)
        if mem:
            ax = axes[-1]
            xs = list(range(len(mem)))
            for off, mode, color in ((-0.2, "infer", "C0"), (0.2, "train", "C3")):
                ax.bar([x + off for x in xs], [(r[f"{mode}_peak_mib"] or 0) / 1024 for r in mem], width=0.4,
                       color=color, label="inference" if mode == "infer" else "training (fwd+bwd)")
            ax.set_xticks(xs, [f"{r['label']} {r['spatial_dims']}D\nb{r['batch']} {r['dtype']}" for r in mem],
                          fontsize=7, rotation=60)
            ax.set(ylabel="peak GiB allocated (lower is better)", title="peak memory")
            ax.legend(fontsize=7)
        fig.suptitle(f"Segmentation networks on {ctx.env['card']}")
        fig.tight_layout()
        fig.savefig(path, dpi=120)

    return SuiteResult(rows=rows, markdown=md, plot=plot,
                       extra=dict(verdicts=lines, cudnn_benchmark=use_benchmark,
                                  sizes={str(d): list(real[d]) for d in dims_list},
                                  eight_stage=dict(size=list(EIGHT_STAGE_SIZE), counts=eight_stage)))


SUITE = Suite("seg-nets", "U-Mamba, Swin-UMamba and the MONAI baselines, 2D and 3D: parameters, FLOPs, inference "
              "and training patches/s, peak memory; is Swin-UMamba smaller than U-Mamba? (On a GPU: warm-up 3, "
              "median of 10, unless --warmup / --repeats are given.)", run, add_arguments, gpu_dtypes=["bf16"])

__all__ = ["NETWORKS", "PAPER_2D", "SIZES", "create_kwargs", "count", "measure", "size_verdicts", "SUITE"]
