"""Segmentation end to end on real MNI152 data (nnU-Net layout): train -> report -> eval -> predict, 2D and 3D,
through the command line; exact resume after a kill."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml

from mambaeye.cli import main
from mambaeye.data import read_image
from mambaeye.segment import engine, evaluate, load_seg_checkpoint, predict, train

from .conftest import TINY_2D, TINY_3D, tiny_cfg


@pytest.fixture(scope="module")
def run2d(mni2d, tmp_path_factory):
    """A 2D run started the way users start it: ``mambaeye train --config FILE --key value``."""
    out = tmp_path_factory.mktemp("run2d")
    config = out.parent / "seg2d.yaml"
    config.write_text(yaml.safe_dump({"task": "segmentation", **TINY_2D, "data_dir": str(mni2d)}))
    assert main(["train", "--config", str(config), "--output-dir", str(out), "--epochs", "2",
                 "--nsd-tolerance", "4.0"]) == 0
    return out


def test_run_folder_history_and_report(run2d, mni2d):
    for name in ("config.yaml", "plan.json", "metrics.csv", "metrics.json", "loss.png", "dice.png", "last.pt",
                 "best.pt", "evaluation/report.md", "evaluation/metrics.json"):
        assert (run2d / name).is_file(), name
    assert not list(run2d.glob(".*.tmp")), "temp checkpoint files left behind"
    history = json.loads((run2d / "metrics.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    with open(run2d / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"train_loss", "val_loss", "val_mean_dice", "val_dice_gray_matter", "lr"} <= set(rows[0])
    assert all(r["train_patches"] == 2 * 2 for r in history)  # iterations x batch
    assert history[1]["lr"] < history[0]["lr"] < TINY_2D["lr"]  # poly decay

    plan = json.loads((run2d / "plan.json").read_text())
    assert plan["target_spacing"] == [4.0, 4.0] and plan["num_classes"] == 4 and plan["in_channels"] == 1

    metrics = json.loads((run2d / "evaluation" / "metrics.json").read_text())
    test_ids = sorted(p.name[: -len("_0000.nii.gz")] for p in (mni2d / "imagesTs").iterdir())
    assert metrics["split"] == "test" and [c["case"] for c in metrics["cases"]] == test_ids
    assert metrics["classes"] == ["other", "gray_matter", "white_matter"] and metrics["nsd_tolerance_mm"] == 4.0
    for case in metrics["cases"]:
        assert all(0.0 <= v <= 1.0 for v in [*case["dice"].values(), *case["nsd"].values()])
    mean_gm = np.mean([c["dice"]["gray_matter"] for c in metrics["cases"]])
    assert metrics["mean_dice"]["gray_matter"] == pytest.approx(mean_gm)
    report = (run2d / "evaluation" / "report.md").read_text()
    assert "| case | DSC other | DSC gray_matter" in report and all(i in report for i in test_ids)
    overlays = sorted(p.stem for p in (run2d / "evaluation" / "overlays").glob("*.png"))
    assert overlays == test_ids  # max_overlays 2, 2 held-out cases


def test_eval_reproduces_training_report_and_cli(run2d, tmp_path, capsys):
    first = json.loads((run2d / "evaluation" / "metrics.json").read_text())
    again = evaluate(run2d, out_dir=tmp_path / "ev", progress=False)
    assert [c["dice"] for c in again["cases"]] == [c["dice"] for c in first["cases"]]
    assert main(["eval", str(run2d), "--json", "--no-progress", "--out", str(tmp_path / "cli"),
                 "--split", "val", "--no-mirror"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ckpt, _ = load_seg_checkpoint(run2d)
    assert res["split"] == "val" and [c["case"] for c in res["cases"]] == ckpt["val_cases"]
    assert (tmp_path / "cli" / "report.md").is_file()


def test_predict_writes_the_inputs_geometry(run2d, mni2d, tmp_path, capsys):
    from mambaeye.data import Geometry, write_image

    # a NIfTI with anisotropic spacing, an origin and a rotated direction; and a PNG
    src, geometry = read_image(mni2d / "imagesTs" / sorted((mni2d / "imagesTs").iterdir())[0].name)
    c, s = np.cos(0.3), np.sin(0.3)
    odd = Geometry((3.0, 5.0), (-20.0, 7.5), ((c, -s), (s, c)))
    write_image(tmp_path / "in" / "odd_0000.nii.gz", src, odd)
    png = (255 * src / src.max()).astype(np.uint8)
    write_image(tmp_path / "in" / "slice.png", png)
    assert main(["predict", str(run2d), str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["odd.nii.gz", "slice.png"]
    lab, g = read_image(tmp_path / "out" / "odd.nii.gz")
    assert lab.shape == src.shape and g.allclose(odd) and set(np.unique(lab)) <= {0, 1, 2, 3}
    assert np.unique(lab).size > 1  # it segments something
    lab_png, _ = read_image(tmp_path / "out" / "slice.png")
    assert lab_png.shape == png.shape and lab_png.dtype == np.uint8
    # the function form, and a label of the held-out case against the truth
    case = sorted((mni2d / "imagesTs").iterdir())[0]
    (path,) = predict(run2d, [case], tmp_path / "fn", progress=False)
    truth, tg = read_image(mni2d / "labelsTs" / path.name)
    pred, pg = read_image(path)
    assert pred.shape == truth.shape and pg.allclose(tg)
    assert ((pred > 0) == (truth > 0)).mean() > 0.7  # brain vs background after two tiny epochs


def test_resume_after_kill_equals_uninterrupted(mni2d, tmp_path, monkeypatch):
    kw = dict(epochs=3, val_every=1, augmentation=True)
    full = train(tiny_cfg(TINY_2D, mni2d, tmp_path / "full", **kw))
    real = engine._write_history

    def killed(run_dir, history, class_names):
        real(run_dir, history, class_names)
        if len(history) == 1:
            raise KeyboardInterrupt  # killed between epochs 1 and 2

    monkeypatch.setattr(engine, "_write_history", killed)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(TINY_2D, mni2d, tmp_path / "cut", **kw))
    monkeypatch.setattr(engine, "_write_history", real)
    assert load_seg_checkpoint(tmp_path / "cut", "last")[0]["epoch"] == 0
    torch.manual_seed(999)  # the process state must not matter
    np.random.seed(999)
    resumed = train(tiny_cfg(TINY_2D, mni2d, tmp_path / "cut", resume="auto", **kw))
    a, b = full["model"].state_dict(), resumed["model"].state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = lambda h: [{k: v for k, v in r.items() if k != "time_s"} for r in h]  # noqa: E731
    assert strip(resumed["history"]) == strip(full["history"])
    assert [c["dice"] for c in resumed["evaluation"]["cases"]] == [c["dice"] for c in full["evaluation"]["cases"]]


def test_3d_train_eval_predict(mni3d, tmp_path):
    result = train(tiny_cfg(TINY_3D, mni3d, tmp_path / "run"))
    ev = result["evaluation"]
    assert ev["split"] == "test" and len(ev["cases"]) == 1 and set(ev["mean_dice"]) == {
        "other", "gray_matter", "white_matter"}
    assert (tmp_path / "run" / "evaluation" / "overlays" / f"{ev['cases'][0]['case']}.png").is_file()
    case = sorted((mni3d / "imagesTs").iterdir())[0]
    (path,) = predict(tmp_path / "run", [case], tmp_path / "pred", progress=False)
    src, g = read_image(case)
    pred, pg = read_image(path)
    assert pred.shape == src.shape and pred.ndim == 3 and pg.allclose(g)
