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


def test_vim_vs_deit_verdicts_only_for_the_models_run(tmp_path):
    """--models vim_tiny: the Vim-S pairs were not measured, so they get no verdict line (not "cannot be checked")."""
    record, md = _run("vim-vs-deit", tmp_path, "--models", "vim_tiny", "--sizes", "32")
    assert {r["model"] for r in record["rows"]} == {"vim_tiny", "deit_tiny_patch16_224"}
    assert len(record["verdicts"]) == 2 and all("Vim-Ti vs DeiT-Ti" in v for v in record["verdicts"])
    assert "Vim-S" not in md


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


def test_compile_option_compiles_every_model(tmp_path, monkeypatch):
    """--compile MODE wraps each timed function (ours and the baselines) in torch.compile with that mode, and the
    results say so. torch.compile is stubbed out: compiling real models takes minutes on a CPU."""
    calls = []

    def fake_compile(fn, mode=None):
        calls.append((getattr(fn, "__self__", fn).__class__.__name__, getattr(fn, "__name__", "module"), mode))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    record, md = _run("vmamba", tmp_path, "--compile", "reduce-overhead", "--no-train", "--sizes", "64")
    assert "torch.compile(mode='reduce-overhead')" in md
    assert {name for name, _, _ in calls} == {"VSSM", "SwinTransformer", "ConvNeXt"}
    assert all(fn == "forward_features" and mode == "reduce-overhead" for _, fn, mode in calls)
    assert len(calls) == len(record["rows"]) and record["compile_mode"] == "reduce-overhead"


@pytest.mark.parametrize("suite, flag", [("scan", ["--cuda-graphs"]), ("seg-nets", ["--compile", "default"])])
def test_model_options_are_refused_by_other_suites(tmp_path, suite, flag):
    """--compile / --cuda-graphs only change the model suites' timing; elsewhere they would be recorded in the
    results' header without having been applied, so they are refused."""
    with pytest.raises(SystemExit, match=f"{flag[0]} applies to the model suites \\(vim-vs-deit, vmamba\\)"):
        bench_main([suite, *flag, "--toy", "--out", str(tmp_path)])


@pytest.mark.parametrize("extra, match", [
    (["--device", "cpu"], "--cuda-graphs needs --device cuda"),
    (["--compile", "default"], "--cuda-graphs times eager kernels"),
])
def test_cuda_graphs_option_refuses_what_it_cannot_do(tmp_path, extra, match):
    if "cpu" not in extra and not torch.cuda.is_available():
        extra = [*extra, "--device", "cpu"]  # the CPU check comes first here; the compile check needs CUDA
        match = "--cuda-graphs needs --device cuda"
    with pytest.raises(SystemExit, match=match):
        bench_main(["vmamba", "--cuda-graphs", "--toy", "--out", str(tmp_path), *extra])


@pytest.mark.gpu
def test_cuda_graph_replays_the_captured_step():
    """capture_cuda_graph runs the warm-up calls, captures one, and each replay re-runs the captured kernels (the
    counter moves) and refreshes the returned output; a toy VMamba's graphed forward equals its eager forward."""
    from mambaeye import create_model
    from mambaeye.bench._common import capture_cuda_graph

    counter = torch.zeros((), device="cuda")
    replay = capture_cuda_graph(lambda: counter.add_(1), warmup=2)
    for _ in range(3):
        replay()
    torch.cuda.synchronize()
    assert counter.item() == 5  # 2 warm-up calls + 3 replays (capturing runs nothing)

    model = create_model("vmamba_tiny", depths=(1, 1, 1, 1), dims=32, img_size=64).cuda().eval()
    x = torch.randn(2, 3, 64, 64, device="cuda")

    def step():
        with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
            return model.forward_features(x)

    replay = capture_cuda_graph(step)
    eager = step().float()
    x.copy_(torch.randn_like(x))  # replays read the captured input's memory
    graphed, eager_new = replay().float(), step().float()
    torch.testing.assert_close(graphed, eager_new)
    assert not torch.equal(graphed, eager)


@pytest.mark.gpu
def test_graph_replay_ms_replays_consecutive_calls():
    """graph_replay_ms captures calls_per_graph calls in one graph, replays it warmup times untimed and repeats
    times timed: the captured in-place add runs (warmup eager + (warmup + repeats) * calls_per_graph) times, and
    the time a call is positive and finite (a copy of 64 MiB: well above the event timer's resolution)."""
    from mambaeye.bench._common import graph_replay_ms

    counter = torch.zeros((), device="cuda")
    ms = graph_replay_ms(lambda: counter.add_(1), calls_per_graph=4, repeats=5, warmup=2)
    torch.cuda.synchronize()
    assert _positive(ms)
    assert counter.item() == 2 + (2 + 5) * 4  # capturing runs nothing

    x = torch.randn(1 << 24, device="cuda")
    y = torch.empty_like(x)
    assert _positive(graph_replay_ms(lambda: y.copy_(x), calls_per_graph=3, repeats=3))
    torch.testing.assert_close(y, x)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(calls_per_graph=0), ValueError, "calls_per_graph and repeats must be at least 1"),
    (dict(repeats=0), ValueError, "calls_per_graph and repeats must be at least 1"),
    (dict(), RuntimeError, "needs a CUDA device"),
])
def test_graph_replay_ms_refuses_what_it_cannot_time(monkeypatch, kwargs, error, match):
    from mambaeye.bench._common import graph_replay_ms

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(error, match=match):
        graph_replay_ms(lambda: None, **kwargs)


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
    assert {"scan", "vim-vs-deit", "vmamba", "erf", "seg-nets"} <= set(SUITES)
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


@pytest.fixture
def one_thread():
    """Hundreds of tiny ops per toy step: with two threads on a busy two-core machine each op waits for the other
    thread's time slice (10x slower than one thread); the numbers are not what the test checks."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_seg_nets_suite(tmp_path, one_thread):
    from mambaeye import create_model
    from mambaeye.bench.seg_nets import NETWORKS, PAPER_2D, SIZES, create_kwargs, toy_size

    record, md = _run("seg-nets", tmp_path)
    rows = record["rows"]
    sizes = {(r["network"], r["spatial_dims"]): r for r in rows if r["section"] == "size"}
    speeds = {(r["network"], r["spatial_dims"]): r for r in rows if r["section"] == "speed"}
    assert set(sizes) == set(speeds) == {(n, d) for n in NETWORKS for d in (2, 3)}
    for (name, dims), r in sizes.items():
        # the size rows are the real networks at the papers' patch, whatever --toy says
        assert r["status"] == "ok" and r["patch"] == list(SIZES[dims]), r
        with torch.device("meta") if name != "swinunetr" else torch.device("cpu"):
            model = create_model(name, **create_kwargs(name, dims, SIZES[dims]))
        assert r["params"] == sum(p.numel() for p in model.parameters()), name
        assert _positive(r["gflops"]) and _positive(r["act_mib"]) and 0 <= r["scan_gflops"] < r["gflops"]
        assert (r["scan_gflops"] > 0) == ("umamba" in name)  # the scan counted in every Mamba network, only there
        assert r["paper_params_m"] == (PAPER_2D[name][0] if dims == 2 else None)
    # the published sizes of the official networks and the papers' MONAI rows
    assert sizes[("swin_umamba", 2)]["params"] == 59_889_368 and sizes[("swin_umamba_d", 2)]["params"] == 27_497_720
    assert sizes[("umamba_bot", 2)]["params"] == 47_533_012 and sizes[("umamba_enc", 2)]["params"] == 47_015_538
    assert sizes[("umamba_bot", 3)]["params"] == 42_130_054 and sizes[("umamba_enc", 3)]["params"] == 42_760_582
    for name in ("unet", "segresnet", "unetr", "swinunetr"):
        r = sizes[(name, 2)]
        assert r["params"] / 1e6 == pytest.approx(r["paper_params_m"], rel=0.06)
        assert r["gflops"] == pytest.approx(r["paper_gflops"], rel=0.02)
    for (name, dims), r in speeds.items():
        assert r["infer_status"] == "ok" and r["train_status"] == "ok", r
        assert r["patch"] == list(toy_size(name, dims)) and r["batch"] == 1 and r["dtype"] == "fp32" and r["toy"]
        model = create_model(name, **create_kwargs(name, dims, toy_size(name, dims), toy=True))
        assert r["params"] == sum(p.numel() for p in model.parameters()) < sizes[(name, dims)]["params"] / 10
        assert _positive(r["gflops"]) and r["gflops"] < sizes[(name, dims)]["gflops"]
        for mode in ("infer", "train"):
            assert _positive(r[f"{mode}_ms"]) and r[f"{mode}_per_s"] == pytest.approx(1e3 / r[f"{mode}_ms"])
            assert r[f"{mode}_peak_mib"] is None  # CPU: not measured
    verdicts = [line for line in md.splitlines() if line.startswith("- Verdict")]
    assert verdicts == record["verdicts"][:6]
    # our counts at 320²: Swin-UMamba (59.9M / 67.7G) is larger than both 7-stage U-Mambas, Swin-UMamba† smaller;
    # at 512² against the 8-stage U-Mambas (the papers' 63M / 67M) and in the document's own table, Swin-UMamba
    # has fewer parameters but more FLOPs, Swin-UMamba† is smaller in both
    assert "Swin-UMamba 59.9M / 67.7G" in verdicts[0] and "NOT SMALLER" in verdicts[0]
    assert "Swin-UMamba† 27.5M / 18.9G" in verdicts[1] and ": SMALLER (fewer parameters and fewer FLOPs)" in verdicts[1]
    assert "512x512" in verdicts[2] and "U-Mamba_Bot 64.8M / 101.1G" in verdicts[2]
    assert "SMALLER ONLY IN PARAMETERS (more FLOPs)" in verdicts[2]
    assert "40.0M / 58.4G" in verdicts[4] and "SMALLER ONLY IN PARAMETERS (more FLOPs)" in verdicts[4]
    assert all(": SMALLER (fewer parameters and fewer FLOPs)" in verdicts[i] for i in (3, 5))
    assert record["eight_stage"]["counts"]["umamba_bot"]["params"] == 64_818_914
    assert "| Swin-UMamba | 59.9 | 67.7 |" in md and "| 40.0 | 58.4 | +50% | +16% |" in md
    assert "Swin-UMamba (3D: mambaeye only)" in md and "no 3D sizes" in md and "**toy**" in md


def test_seg_nets_records_failures_and_subsets(tmp_path, monkeypatch, one_thread):
    """A network that cannot run at a size gets the error in its row; --networks / --dims / --no-train select."""
    from mambaeye.bench import seg_nets

    monkeypatch.setattr(seg_nets, "toy_size", lambda name, dims: (48, 48))  # UNETR takes it, Swin-UMamba† does not
    record, md = _run("seg-nets", tmp_path, "--networks", "unetr", "swin_umamba_d", "--dims", "2", "--no-train",
                      "--size-2d", "320", "330")
    sizes = [r for r in record["rows"] if r["section"] == "size"]
    speeds = [r for r in record["rows"] if r["section"] == "speed"]
    assert [(r["network"], r["spatial_dims"], r["train_status"]) for r in speeds] == [
        ("unetr", 2, "skipped"), ("swin_umamba_d", 2, "skipped")]
    assert speeds[0]["infer_status"] == "ok" and _positive(speeds[0]["infer_per_s"])
    assert speeds[1]["infer_status"].startswith("error: ValueError: input size (48, 48) is not divisible")
    assert speeds[1]["infer_per_s"] is None and "infer: error: ValueError" in md
    # 330 is no multiple of 16 / 32: both real-size counts fail with the networks' own ValueError, recorded
    assert [r["status"].split(":")[:2] for r in sizes] == [["error", " ValueError"]] * 2
    assert "not counted, so not checked" in md and "(the document's table, Figure 12" in md
    record, md = _run("seg-nets", tmp_path / "counts", "--networks", "segresnet", "--dims", "3", "--no-timing")
    assert [(r["section"], r["network"], r["params"]) for r in record["rows"]] == [("size", "segresnet", 18_796_398)]
    assert "Speed and memory" not in md
