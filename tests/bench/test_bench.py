"""``mambaeye bench SUITE --toy`` on CPU: each suite writes its markdown, JSON and PNG with sane numbers."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

pytest.importorskip("timm")

from mambaeye.bench import SUITES, Suite, add_bench_parser, bench_main, register_suite
from mambaeye.bench._common import SuiteResult, median_ms, peak_memory_mib
from mambaeye.bench.erf import area_ratio
from mambaeye.bench.vim_vs_deit import fit_patch16

try:
    import matplotlib  # noqa: F401

    HAVE_MPL = True
except ImportError:  # the suites then write no PNG and say so in the markdown
    HAVE_MPL = False

FAST = ["--toy", "--device", "cpu", "--warmup", "0", "--repeats", "1"]
ENV_FIELDS = {"card", "device", "versions", "tf32", "date", "command", "dtypes", "toy", "rows"}


def _run(suite: str, tmp_path, *extra: str) -> tuple[dict, str]:
    assert bench_main([suite, *FAST, "--out", str(tmp_path), *extra]) == 0
    for ext in ("md", "json"):
        assert (tmp_path / f"{suite}.{ext}").is_file(), ext
    if HAVE_MPL:
        assert (tmp_path / f"{suite}.png").stat().st_size > 1000
    else:
        assert "matplotlib is not installed" in (tmp_path / f"{suite}.md").read_text()
    record = json.loads((tmp_path / f"{suite}.json").read_text())
    assert ENV_FIELDS <= set(record)
    assert record["versions"]["torch"] == torch.__version__
    assert set(record["tf32"]) == {"matmul", "cudnn", "float32_matmul_precision"}
    assert record["toy"] is True and record["dtypes"] == ["fp32"]
    assert record["command"].startswith(f"mambaeye bench {suite}")
    return record, (tmp_path / f"{suite}.md").read_text()


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_scan_suite(tmp_path):
    record, md = _run("scan", tmp_path)
    rows = record["rows"]
    assert {(r["shape"], r["backend"]) for r in rows} == {
        (s, b) for s in ("toy_1d", "toy_groups") for b in ("naive", "torch")}
    for r in rows:
        assert _positive(r["fwd_ms"]) and _positive(r["fwd_bwd_ms"]) and _positive(r["fwd_gbs"])
        assert r["fwd_bwd_bytes"] > r["fwd_bytes"] > 0
    assert record["copy_gbs"] is None
    assert "| toy_1d (B1 D16 L256 N8 G1 z) | naive |" in md


def test_vim_vs_deit_suite(tmp_path):
    record, md = _run("vim-vs-deit", tmp_path)
    rows = record["rows"]
    keys = {(r["model"], r["attention"], r["img_size"]) for r in rows}
    for size in (32, 64):
        for model, attn in [("vim_tiny", "mamba"), ("deit_tiny_patch16_224", "sdpa"),
                            ("deit_tiny_patch16_224", "plain"), ("vim_small", "mamba"),
                            ("deit_small_patch16_224", "sdpa"), ("deit_small_patch16_224", "plain")]:
            assert (model, attn, size) in keys
    for r in rows:
        assert r["status"] == "ok", r
        assert _positive(r["ms"]) and _positive(r["img_per_s"])
        assert r["peak_mib"] is None and r["peak_above_base_mib"] is None  # CPU: no GPU memory
        assert r["batch"] == 2 and r["dtype"] == "fp32" and r["params"] > 0
    verdicts = [line for line in md.splitlines() if line.startswith("- Verdict:")]
    assert len(verdicts) == 4 and verdicts == record["verdicts"]
    for who in ("Vim-Ti vs DeiT-Ti with fused SDPA attention", "Vim-Ti vs DeiT-Ti with plain attention",
                "Vim-S vs DeiT-S with fused SDPA attention", "Vim-S vs DeiT-S with plain attention"):
        line = next(v for v in verdicts if who in v)
        assert "at 64² (toy)" in line and ("the claim HOLDS" in line or "the claim DOES NOT HOLD" in line)
    assert "toy CPU numbers" in md


def test_vmamba_suite(tmp_path):
    record, md = _run("vmamba", tmp_path)
    rows = record["rows"]
    base = {(r["model"], r["mode"]) for r in rows if r["section"] == "224"}
    assert base == {(m, mode) for m in ("vmamba_tiny", "swin_tiny_patch4_window7_224", "convnext_tiny")
                    for mode in ("infer", "train")}
    sweep = {(r["model"], r["img_size"]) for r in rows if r["section"] == "sweep"}
    assert {s for _, s in sweep} == {64, 96} and len(sweep) == 6
    for r in rows:
        assert r["status"] == "ok", r
        assert _positive(r["ms"]) and _positive(r["img_per_s"]) and r["peak_mib"] is None
    verdicts = [line for line in md.splitlines() if line.startswith("- Verdict:")]
    assert len(verdicts) == 6  # (infer, train, resolution) x (Swin-T, ConvNeXt-T)
    assert any("VMamba-T vs Swin-T, train at 64² fp32 (toy)" in v for v in verdicts)
    assert any("inference 64² -> 96²" in v and "ConvNeXt-T" in v for v in verdicts)


def test_erf_suite(tmp_path):
    record, md = _run("erf", tmp_path)
    rows = record["rows"]
    assert [r["model"] for r in rows] == ["vim_tiny", "vmamba_tiny", "resnet50", "deit_small_patch16_224"]
    for r in rows:
        assert r["state"] == "init" and r["num_images"] == 2 and r["img_size"] == 64
        assert _positive(r["seconds"]) and _positive(r["grad_mass"])
        assert 0 < r["area_r20"] <= r["area_r50"] <= r["area_r99"] <= 1
    assert "random normal inputs" in record["inputs"] and "random normal inputs" in md


def test_erf_reads_real_images_and_checkpoint(tmp_path):
    mpimg = pytest.importorskip("matplotlib.image")
    import numpy as np
    import timm

    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        mpimg.imsave(img_dir / f"{i}.png", rng.random((40, 48, 3)))
    ckpt = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet50", pretrained=False, layers=(1, 1, 1, 1)).state_dict(), ckpt)
    record, md = _run("erf", tmp_path / "out", "--images", str(img_dir), "--models", "resnet50",
                      "--checkpoint", f"resnet50={ckpt}")
    assert [(r["model"], r["state"]) for r in record["rows"]] == [("resnet50", "init"), ("resnet50", "trained")]
    assert record["inputs"].startswith("2 real images") and "real images" in md


def test_timing_helpers():
    assert median_ms(lambda: sum(range(1000)), "cpu", warmup=0, repeats=3) > 0
    assert peak_memory_mib(lambda: None, "cpu") == (None, None)
    assert fit_patch16(738) == 736 and fit_patch16(1248) == 1248
    m = torch.zeros(10, 10)
    m[5, 5] = 1.0
    assert area_ratio(m, 0.99) == pytest.approx(0.01)
    assert area_ratio(torch.ones(4, 4), 0.5) == pytest.approx(0.5)


def test_registry_is_extensible_and_cli_parser(tmp_path):
    parser = argparse.ArgumentParser(prog="mambaeye")
    add_bench_parser(parser.add_subparsers(dest="command"))
    assert {"scan", "vim-vs-deit", "vmamba", "erf"} <= set(SUITES)
    args = parser.parse_args(["bench", "scan", "--toy", "--out", str(tmp_path), "--repeats", "1"])
    assert args.suite == "scan" and args.func is not None

    def run(ctx, args):
        return SuiteResult(rows=[dict(ms=ctx.time_ms(lambda: None) + 1.0)], markdown="# dummy\n")

    register_suite(Suite("dummy-test", "a test suite", run))
    try:
        with pytest.raises(ValueError):
            register_suite(Suite("dummy-test", "again", run))
        assert bench_main(["dummy-test", "--out", str(tmp_path), "--repeats", "1"]) == 0
        assert json.loads((tmp_path / "dummy-test.json").read_text())["rows"][0]["ms"] >= 1.0
        assert not (tmp_path / "dummy-test.png").exists()  # no plot given
    finally:
        SUITES.pop("dummy-test")
