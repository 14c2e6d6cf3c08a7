"""``vim-vs-deit``: vim_tiny / vim_small against DeiT-Ti / DeiT-S (timm), each DeiT both with PyTorch's fused
scaled-dot-product attention and with plain (unfused) attention: images/s and peak GPU memory of batch feature
extraction (``forward_features``) from 224² to 1248². The paper's claim: Vim is faster than DeiT and needs less
memory at high resolution (2.8x faster, 86.8% less memory at 1248²)."""

from __future__ import annotations

import argparse
from typing import Any

from ._common import Context, Suite, SuiteResult, env_header, fmt, md_table
from ._models import create_mambaeye, create_timm, measure, set_plain_attention

# (image size, batch) from the paper / issue 7
GPU_SIZES = [(224, 128), (512, 32), (640, 16), (738, 16), (1024, 8), (1248, 8)]
TOY_SIZES = [(32, 2), (64, 2)]
TOY_DEPTH = 2
PAIRS = [("vim_tiny", "deit_tiny_patch16_224"), ("vim_small", "deit_small_patch16_224")]
LABEL = {"vim_tiny": "Vim-Ti", "vim_small": "Vim-S", "deit_tiny_patch16_224": "DeiT-Ti",
         "deit_small_patch16_224": "DeiT-S"}
ATTN = {"sdpa": "fused SDPA attention", "plain": "plain attention"}


def fit_patch16(size: int) -> int:
    """Largest size <= ``size`` that 16x16 patches tile exactly (738 -> 736): both models see the same input."""
    return size - (size - 16) % 16


def _builder(name: str, attention: str, img_size: int, toy: bool):
    extra = dict(depth=TOY_DEPTH) if toy else {}
    if name.startswith("vim"):
        return lambda: create_mambaeye(name, img_size=img_size, num_classes=0, **extra)

    def build():
        m = create_timm(name, img_size=img_size, num_classes=0, **extra)
        if attention == "plain":
            set_plain_attention(m)
        return m

    return build


def verdicts(rows: list[dict[str, Any]], toy: bool) -> list[str]:
    """One line per (Vim model, baseline, attention, dtype) at the largest size both ran: does the claim hold?
    Pairs whose Vim model was not measured at all (``--models``) get no line."""
    ok = {(r["model"], r["attention"], r["dtype"], r["img_size"]): r for r in rows if r["status"] == "ok"}
    measured = {r["model"] for r in rows}
    lines = []
    for vim, deit in (p for p in PAIRS if p[0] in measured):
        for attention in ("sdpa", "plain"):
            for dtype in sorted({r["dtype"] for r in rows}):
                sizes = [s for (m, a, d, s) in ok if m == vim and d == dtype and (deit, attention, dtype, s) in ok]
                who = f"{LABEL[vim]} vs {LABEL[deit]} with {ATTN[attention]}, {dtype}"
                if not sizes:
                    lines.append(f"- Verdict: {who}: no size where both ran, so the claim cannot be checked.")
                    continue
                s = max(sizes)
                v, b = ok[(vim, "mamba", dtype, s)], ok[(deit, attention, dtype, s)]
                speed = v["img_per_s"] / b["img_per_s"]
                faster = speed > 1
                mem_txt = "peak memory not measured (CPU)"
                less_mem = None
                if v["peak_above_base_mib"] is not None and b["peak_above_base_mib"] is not None:
                    less_mem = v["peak_above_base_mib"] < b["peak_above_base_mib"]
                    saving = 100 * (1 - v["peak_above_base_mib"] / max(b["peak_above_base_mib"], 1e-9))
                    mem_txt = (f"peak memory above base {v['peak_above_base_mib']:.0f} vs "
                               f"{b['peak_above_base_mib']:.0f} MiB ({saving:+.1f}% saved)")
                holds = faster and (less_mem is not False)
                qualifier = "" if less_mem is not None else " (speed only)"
                verdict = "HOLDS" if holds else "DOES NOT HOLD"
                lines.append(f"- Verdict: {who}, at {s}²{' (toy)' if toy else ''}: the claim {verdict}{qualifier} — "
                             f"{v['img_per_s']:,.1f} vs {b['img_per_s']:,.1f} img/s ({speed:.2f}x "
                             f"{'faster' if faster else 'the speed'}), {mem_txt}.")
    return lines


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="image sizes (batch from the paper's table)")
    p.add_argument("--batch", type=int, default=None, help="one batch for every size")
    p.add_argument("--models", nargs="+", default=None, choices=["vim_tiny", "vim_small"],
                   help="Vim models (each against its DeiT)")


def run(ctx: Context, args: argparse.Namespace) -> SuiteResult:
    table = TOY_SIZES if ctx.toy else GPU_SIZES
    if args.sizes:
        known = dict(GPU_SIZES)
        table = [(s, known.get(s, 8)) for s in args.sizes]
    if args.batch:
        table = [(s, args.batch) for s, _ in table]
    pairs = [p for p in PAIRS if not args.models or p[0] in args.models]
    rows = []
    for dtype in ctx.dtypes:
        for size, batch in table:
            eff = fit_patch16(size)
            for vim, deit in pairs:
                for model, attention in ((vim, "mamba"), (deit, "sdpa"), (deit, "plain")):
                    row = dict(model=model, label=LABEL[model], attention=attention, requested_size=size,
                               toy_depth=TOY_DEPTH if ctx.toy else None)
                    measure(ctx, _builder(model, attention, eff, ctx.toy), batch, eff, dtype, "infer", row)
                    rows.append(row)
                    print(f"{model:24s} {attention:6s} {dtype:5s} {eff:5d}² b{batch:<4d} {row['status']:3s} "
                          f"{fmt(row['img_per_s'])} img/s  peak {fmt(row['peak_above_base_mib'])} MiB", flush=True)

    lines = verdicts(rows, ctx.toy)
    note = ("These verdicts are about the **toy CPU numbers** (2-block models, tiny images, no GPU memory), not the "
            "paper's setting: run on a GPU without --toy for that.\n\n" if ctx.toy else "")
    resized = sorted({(r["requested_size"], r["img_size"]) for r in rows if r["requested_size"] != r["img_size"]})
    md = (env_header(ctx, "Vim vs DeiT: batch feature extraction")
          + "\nThe paper's claim: Vim is faster than DeiT and uses less memory at high resolution "
            "(2.8x faster and 86.8% less GPU memory at 1248²). The claim holds when Vim is faster **and** its peak "
            "memory above the model's base is lower, at the largest size both ran.\n\n"
          + "## Verdicts\n\n" + note + "\n".join(lines) + "\n\n## Measurements\n\n"
          + md_table(["model", "attention", "dtype", "size", "batch", "img/s", "ms", "peak MiB",
                      "peak above base MiB", "params", "status"],
                     [[r["label"], r["attention"], r["dtype"], r["img_size"], r["batch"], r["img_per_s"], r["ms"],
                       r["peak_mib"], r["peak_above_base_mib"], r.get("params"), r["status"]] for r in rows])
          + ("".join(f"\n{a}² is not tiled by 16x16 patches; both models ran at {b}².\n" for a, b in resized)))

    def plot(plt, path):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for (model, attention, dtype) in sorted({(r["model"], r["attention"], r["dtype"]) for r in rows}):
            rs = [r for r in rows if (r["model"], r["attention"], r["dtype"]) == (model, attention, dtype)
                  and r["status"] == "ok"]
            label = f"{LABEL[model]} {attention} {dtype}"
            style = "-o" if attention == "mamba" else "--s" if attention == "sdpa" else ":^"
            axes[0].plot([r["img_size"] for r in rs], [r["img_per_s"] for r in rs], style, label=label)
            if ctx.device == "cuda":
                axes[1].plot([r["img_size"] for r in rs], [r["peak_above_base_mib"] for r in rs], style, label=label)
        axes[0].set(xlabel="image size", ylabel="images/s (higher is better)", yscale="log", title="throughput")
        axes[0].legend(fontsize=7)
        if ctx.device == "cuda":
            axes[1].set(xlabel="image size", ylabel="peak memory above base, MiB", yscale="log", title="memory")
            axes[1].legend(fontsize=7)
        else:
            axes[1].text(0.5, 0.5, "GPU memory not measured on CPU", ha="center", va="center")
            axes[1].set_axis_off()
        fig.suptitle(f"Vim vs DeiT on {ctx.env['card']}" + (" (toy)" if ctx.toy else ""))
        fig.tight_layout()
        fig.savefig(path, dpi=120)

    return SuiteResult(rows=rows, markdown=md, plot=plot, extra=dict(verdicts=lines))


SUITE = Suite("vim-vs-deit", "Vim-Ti/S vs DeiT-Ti/S (fused and plain attention): img/s and peak memory by size",
              run, add_arguments, gpu_dtypes=["bf16", "fp32"], model_options=True)
