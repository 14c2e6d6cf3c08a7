"""Classification pipeline end to end on CPU: a tiny VMamba on a subset of scikit-learn's digits."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("sklearn")
pytest.importorskip("timm")

from mambaeye.train import (  # noqa: E402
    ConfigError,
    TrainConfig,
    add_train_parsers,
    engine,  # noqa: E402
    evaluate,
    load_checkpoint,
    load_config,
    predict,
    save_checkpoint_atomic,
    train,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "classification_digits.yaml"
TINY = dict(model="vmamba_tiny", model_kwargs={"depths": [1, 1, 1, 1], "dims": 8}, img_size=32, in_chans=1,
            dataset="digits", train_subset=128, val_subset=64, batch_size=32, epochs=2, lr=3e-3,
            warmup_epochs=0.5, ema=True, ema_decay=0.9, seed=0, progress=False)


def _cfg(out: Path, **kw) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, "output_dir": str(out), **kw})


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: tiny models gain nothing from two, and two threads spin badly when the CPU is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def full_run(_one_thread, tmp_path_factory):
    out = tmp_path_factory.mktemp("run_full")
    return out, train(_cfg(out))


def test_run_folder_files_and_loss_decreases(full_run):
    out, result = full_run
    for name in ("config.yaml", "metrics.csv", "metrics.json", "loss.png", "accuracy.png", "last.pt", "best.pt"):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.tmp")), "temp checkpoint files left behind"
    history = json.loads((out / "metrics.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {"train_loss", "val_top1", "val_top5", "val_ema_top1", "lr"} <= set(rows[0])
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert all(0 <= row["val_top1"] <= row["val_top5"] <= 100 for row in history)
    resolved = load_config(out / "config.yaml")
    assert resolved == _cfg(out)
    ckpt = load_checkpoint(out / "last.pt")
    assert {"model", "optimizer", "scheduler", "ema", "epoch", "rng", "history", "config"} <= set(ckpt)
    assert ckpt["epoch"] == 1 and ckpt["classes"] == [str(i) for i in range(10)]


def test_weight_decay_excludes_1d_params(full_run):
    _, result = full_run
    model = result["model"]
    groups = load_checkpoint(full_run[0] / "last.pt")["optimizer"]["param_groups"]
    by_wd = {g["weight_decay"]: len(g["params"]) for g in groups}
    n_1d = sum(1 for p in model.parameters() if p.ndim <= 1)
    assert by_wd == {0.0: n_1d, 0.05: sum(1 for _ in model.parameters()) - n_1d}


def test_resume_equals_uninterrupted(full_run, tmp_path, monkeypatch):
    full_out, full = full_run
    out = tmp_path / "run_resume"
    real_write = engine.write_history

    def killed_after_first_checkpoint(run_dir, history, plots):
        real_write(run_dir, history, plots)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "write_history", killed_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(out))
    monkeypatch.setattr(engine, "write_history", real_write)
    assert load_checkpoint(out)["epoch"] == 0
    torch.manual_seed(1234)  # a different process state must not matter
    resumed = train(_cfg(out, resume="auto"))
    a, b = full["model"].state_dict(), resumed["model"].state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ema_a, ema_b = load_checkpoint(full_out)["ema"], load_checkpoint(out)["ema"]
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    strip = [{k: v for k, v in row.items() if k != "time_s"} for row in resumed["history"]]
    assert strip == [{k: v for k, v in row.items() if k != "time_s"} for row in full["history"]]


def test_eval_and_predict(full_run, tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    out, _ = full_run
    res = evaluate(out / "best.pt", split="val", progress=False)
    assert res["n"] == 64 and 0 <= res["top1"] <= res["top5"] <= 100 and res["ema"]
    files = []
    for i, img in enumerate(load_digits().images[:3]):
        path = tmp_path / f"digit{i}.png"
        Image.fromarray((img * 255 / 16).astype(np.uint8)).save(path)
        files.append(path)
    preds = predict(out, files, topk=3)
    assert len(preds) == 3
    for p in preds:
        assert p["class"] in [str(i) for i in range(10)] and 0 < p["prob"] <= 1 and len(p["topk"]) == 3
        assert p["topk"][0]["prob"] >= p["topk"][1]["prob"] >= p["topk"][2]["prob"]
    with pytest.raises(ValueError, match="cannot read image"):
        predict(out, [tmp_path / "missing.png"])


def _parser():
    parser = argparse.ArgumentParser()
    add_train_parsers(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_eval_predict_and_overrides(full_run, capsys):
    out, _ = full_run
    args = _parser().parse_args(["eval", str(out / "last.pt"), "--json", "--no-progress"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 64

    args = _parser().parse_args(["train", "--config", str(EXAMPLE), "--model", "vim_tiny",
                                 "--epochs", "3", "--lr", "1e-3", "--ema", "false", "--model-kwargs",
                                 "{depth: 2}", "--resume"])
    from mambaeye.train import config_from_args

    cfg = config_from_args(args)
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.ema, cfg.model_kwargs, cfg.resume) == \
        ("vim_tiny", 3, 1e-3, False, {"depth": 2}, "auto")
    assert cfg.dataset == "digits" and cfg.batch_size == 64  # the rest from the file

    args = _parser().parse_args(["predict", str(out), str(out / "missing.png")])
    assert args.func(args) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_bad_config_keys_and_values(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": "vmamba_tiny", "lrr": 0.1}))
    with pytest.raises(ConfigError, match=r"unknown config key 'lrr' in .*bad\.yaml \(did you mean 'lr'\?\)"):
        load_config(bad)
    with pytest.raises(ConfigError, match="'epochs'"):
        load_config(None, {"epochs": "ten"})
    with pytest.raises(ConfigError, match="'amp'"):
        load_config(None, {"amp": "fp8"})
    with pytest.raises(ConfigError, match="'data_dir'"):
        load_config(None, {"dataset": "imagefolder"})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    args = _parser().parse_args(["train", "--epochs", "ten"])
    assert args.func(args) == 2


def test_example_config_loads():
    cfg = load_config(str(EXAMPLE))
    assert cfg.dataset == "digits" and cfg.model == "vmamba_tiny"


def test_imagefolder_mixup_and_missing_split(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, level in (("dark", 40), ("light", 215)):
            d = tmp_path / "data" / split / c
            d.mkdir(parents=True)
            for i in range(8 if split == "train" else 2):
                arr = np.clip(level + rng.normal(0, 20, (20, 20, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    out = tmp_path / "run"
    cfg = _cfg(out, dataset="imagefolder", data_dir=str(tmp_path / "data"), in_chans=3, train_subset=0,
               val_subset=0, batch_size=8, epochs=1, mixup=0.8, cutmix=1.0, hflip=0.5, amp="bf16")  # fp32 on CPU
    result = train(cfg)
    assert load_checkpoint(out)["classes"] == ["dark", "light"] and len(result["history"]) == 1
    assert evaluate(out, progress=False)["n"] == 4
    assert predict(out, [tmp_path / "data" / "val" / "light" / "0.png"])[0]["class"] in ("dark", "light")
    with pytest.raises(FileNotFoundError, match=r"no 'train' folder .*data/train/train"):
        train(_cfg(tmp_path / "run2", dataset="imagefolder", data_dir=str(tmp_path / "data" / "train")))


def test_atomic_checkpoint_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint_atomic({"v": 1}, path)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint_atomic({"v": 2}, path)
    assert torch.load(path)["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
