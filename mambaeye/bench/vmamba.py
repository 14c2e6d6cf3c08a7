"""``vmamba``: vmamba_tiny / small / base against Swin-T/S/B and ConvNeXt-T/S/B (timm): inference and training
(forward + backward) images/s at batch 128, 224², and inference from 224² to 1024² (batch scaled to keep the
pixels per batch about constant). The paper's claims: VMamba is competitive in speed and holds up better than
the attention baseline as resolution grows."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import Context, Suite, SuiteResult, env_header, fmt, md_table
from ._models import create_mambaeye, create_timm, measure

FAMILIES = {
    "vmamba": ["vmamba_tiny", "vmamba_small", "vmamba_base"],
    "swin": ["swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224", "swin_base_patch4_window7_224"],
    "convnext": ["convnext_tiny", "convnext_small", "convnext_base"],
}
LABEL = {"vmamba_tiny": "VMamba-T", "vmamba_small": "VMamba-S", "vmamba_base": "VMamba-B",
         "swin_tiny_patch4_window7_224": "Swin-T", "swin_small_patch4_window7_224": "Swin-S",
         "swin_base_patch4_window7_224": "Swin-B", "convnext_tiny": "ConvNeXt-T", "convnext_small": "ConvNeXt-S",
         "convnext_base": "ConvNeXt-B"}
GPU_BATCH, GPU_SIZE = 128, 224
GPU_SWEEP = [224, 384, 512, 640, 768, 1024]
TOY_BATCH, TOY_SIZE, TOY_SWEEP = 2, 64, [64, 96]
# toy: one block per stage, narrow
TOY_KWARGS = {
    "vmamba": dict(depths=(1, 1, 1, 1), dims=16),
    "swin": dict(depths=(1, 1, 1, 1), embed_dim=48),
    "convnext": dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)),
}


def family(name: str) -> str:
    return next(f for f, names in FAMILIES.items() if name in names)


def sweep_batch(size: int, base_batch: int, base_size: int) -> int:
    return max(1, round(base_batch * (base_size / size) ** 2))


def _builder(name: str, img_size: int, toy: bool):
    fam = family(name)
    extra = dict(TOY_KWARGS[fam]) if toy else {}
    if fam == "vmamba":
        return lambda: create_mambaeye(name, img_size=img_size, **extra)
    if fam == "swin":
        return lambda: create_timm(name, img_size=img_size, **extra)
    return lambda: create_timm(name, **extra)


def verdicts(rows: list[dict[str, Any]], toy: bool) -> list[str]:
    ok = {(r["model"], r["mode"], r["img_size"], r["dtype"], r["section"]): r for r in rows if r["status"] == "ok"}
    lines = []
    tag = " (toy)" if toy else ""
    for i, vm in enumerate(FAMILIES["vmamba"]):
        for base in (FAMILIES["swin"][i], FAMILIES["convnext"][i]):
            for (m, mode, s, dt, sec), v in sorted(ok.items(), key=lambda kv: str(kv[0])):
                if m != vm or sec != "224":
                    continue
                b = ok.get((base, mode, s, dt, sec))
                if b is None:
                    continue
                ratio = v["img_per_s"] / b["img_per_s"]
                lines.append(f"- Verdict: {LABEL[vm]} vs {LABEL[base]}, {mode} at {s}² {dt}{tag}: "
                             f"{'FASTER' if ratio > 1 else 'SLOWER'} ({v['img_per_s']:,.1f} vs "
                             f"{b['img_per_s']:,.1f} img/s, {ratio:.2f}x).")
            # resolution: does VMamba keep a larger share of its 224² throughput than the baseline?
            sw = [(r["img_size"], r["dtype"]) for r in rows if r["model"] == vm and r["section"] == "sweep"
                  and r["status"] == "ok"]
            for dt in sorted({d for _, d in sw}):
                sizes = sorted(s for s, d in sw if d == dt and (base, "infer", s, dt, "sweep") in ok)
                if len(sizes) < 2:
                    continue
                lo, hi = sizes[0], sizes[-1]

                def keep(m, lo=lo, hi=hi, dt=dt):
                    return ok[(m, "infer", hi, dt, "sweep")]["img_per_s"] / ok[(m, "infer", lo, dt, "sweep")][
                        "img_per_s"]

                kv, kb = keep(vm), keep(base)
                lines.append(f"- Verdict: {LABEL[vm]} vs {LABEL[base]}, inference {lo}² -> {hi}² {dt}{tag}: VMamba "
                             f"{'HOLDS UP BETTER' if kv > kb else 'DOES NOT HOLD UP BETTER'} (keeps {100 * kv:.1f}% "
                             f"of its images/s vs {100 * kb:.1f}%).")
    return lines


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="resolution sweep sizes")
    p.add_argument("--batch", type=int, default=None, help="batch at the base size (default 128)")
    p.add_argument("--variants", nargs="+", default=None, choices=["tiny", "small", "base"],
                   help="model sizes for the 224² section (default: all on GPU, tiny when --toy)")
    p.add_argument("--sweep-variants", nargs="+", default=None, choices=["tiny", "small", "base"],
                   help="model sizes for the resolution sweep (default: tiny)")
    p.add_argument("--no-train", action="store_true", help="skip the training (forward+backward) timings")


def run(ctx: Context, args: argparse.Namespace) -> SuiteResult:
    idx = {"tiny": 0, "small": 1, "base": 2}
    variants = args.variants or (["tiny"] if ctx.toy else ["tiny", "small", "base"])
    sweep_variants = args.sweep_variants or ["tiny"]
    base_batch = args.batch or (TOY_BATCH if ctx.toy else GPU_BATCH)
    base_size = TOY_SIZE if ctx.toy else GPU_SIZE
    sweep = args.sizes or (TOY_SWEEP if ctx.toy else GPU_SWEEP)
    modes = ["infer"] if args.no_train else ["infer", "train"]
    jobs = []
    for v in variants:
        for fam in FAMILIES.values():
            for mode in modes:
                jobs.append(("224", fam[idx[v]], base_size, base_batch, mode))
    for v in sweep_variants:
        for fam in FAMILIES.values():
            for s in sweep:
                jobs.append(("sweep", fam[idx[v]], s, sweep_batch(s, base_batch, base_size), "infer"))
    rows = []
    for dtype in ctx.dtypes:
        for section, name, size, batch, mode in jobs:
            row = dict(section=section, model=name, label=LABEL[name], family=family(name), toy=ctx.toy)
            measure(ctx, _builder(name, size, ctx.toy), batch, size, dtype, mode, row)
            rows.append(row)
            print(f"{section:5s} {name:30s} {mode:5s} {dtype:5s} {size:5d}² b{batch:<4d} {row['status']:3s} "
                  f"{fmt(row['img_per_s'])} img/s", flush=True)
    lines = verdicts(rows, ctx.toy)
    note = ("These verdicts are about the **toy CPU numbers** (one block per stage, narrow models, tiny images), "
            "not the papers' setting.\n\n" if ctx.toy else "")
    cols = ["model", "mode", "dtype", "size", "batch", "img/s", "ms", "peak MiB", "params", "status"]

    def table(section):
        return md_table(cols, [[r["label"], r["mode"], r["dtype"], r["img_size"], r["batch"], r["img_per_s"], r["ms"],
                                r["peak_mib"], r.get("params"), r["status"]] for r in rows if r["section"] == section])

    md = (env_header(ctx, "VMamba vs Swin and ConvNeXt") + "\n## Verdicts\n\n" + note + "\n".join(lines)
          + f"\n\n## {base_size}², batch {base_batch}: inference (forward_features) and training (forward + "
            f"backward)\n\n" + table("224") + "\n## Inference by resolution (batch scaled by (base/size)²)\n\n"
          + table("sweep"))

    def plot(plt, path):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        sec = [r for r in rows if r["section"] == "224" and r["status"] == "ok"]
        labels = [f"{r['label']}\n{r['mode']} {r['dtype']}" for r in sec]
        colors = {"vmamba": "C0", "swin": "C1", "convnext": "C2"}
        axes[0].bar(range(len(sec)), [r["img_per_s"] for r in sec], color=[colors[r["family"]] for r in sec])
        axes[0].set_xticks(range(len(sec)), labels, fontsize=6, rotation=60)
        axes[0].set(ylabel="images/s (higher is better)", title=f"{base_size}², batch {base_batch}")
        for key in sorted({(r["model"], r["dtype"]) for r in rows if r["section"] == "sweep"}):
            rs = [r for r in rows if r["section"] == "sweep" and (r["model"], r["dtype"]) == key
                  and r["status"] == "ok"]
            axes[1].plot([r["img_size"] for r in rs], [r["img_per_s"] for r in rs], "-o",
                         label=f"{LABEL[key[0]]} {key[1]}", color=colors[family(key[0])])
        axes[1].set(xlabel="image size", ylabel="images/s", yscale="log", title="inference by resolution")
        axes[1].legend(fontsize=7)
        fig.suptitle(f"VMamba vs Swin / ConvNeXt on {ctx.env['card']}" + (" (toy)" if ctx.toy else ""))
        fig.tight_layout()
        fig.savefig(path, dpi=120)

    return SuiteResult(rows=rows, markdown=md, plot=plot, extra=dict(verdicts=lines))


SUITE = Suite("vmamba", "VMamba-T/S/B vs Swin-T/S/B and ConvNeXt-T/S/B: inference, training, resolution sweep",
              run, add_arguments, gpu_dtypes=["bf16"], model_options=True)
