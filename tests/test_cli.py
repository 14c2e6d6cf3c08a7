"""The mambaeye command line: each subcommand does its job and prints what it says."""

from __future__ import annotations

import pytest
import torch

from mambaeye.cli import main
from mambaeye.convert import vim_to_official
from mambaeye.models import create_model


def test_demo_checks_backends_and_times_them(capsys):
    assert main(["demo", "--shape", "1", "4", "40", "4", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "| torch |" in out and "| naive |" in out
    assert "OK: worst relative error" in out


def test_backends_lists_cpu_backends(capsys):
    assert main(["backends"]) == 0
    assert capsys.readouterr().out.startswith("cpu: naive, torch")


def test_list_and_info(capsys):
    assert main(["list", "vmamba*"]) == 0
    names = capsys.readouterr().out.split()
    assert names == sorted(names) and "vmamba_tiny" in names and "vmamba_base_v0" in names and len(names) == 6
    assert main(["info", "vmamba_tiny"]) == 0
    table = capsys.readouterr().out
    total = [line for line in table.splitlines() if line.startswith("total")][0]
    assert "30,249,064" in total and "4.906" in total  # exact parameters, published 4.9 GFLOPs


def test_convert_official_vim_checkpoint(tmp_path, capsys):
    model = create_model("vim_tiny")
    src = tmp_path / "vim_t_midclstok_76p1acc.pth"
    torch.save({"model": vim_to_official(model.state_dict())}, src)
    dst = tmp_path / "vim.safetensors"
    assert main(["convert", str(src), str(dst)]) == 0  # family, variant and size detected from the keys
    assert dst.exists() and dst.with_suffix(".json").exists()
    assert "vim_tiny" in capsys.readouterr().out
    loaded = create_model("vim_tiny", checkpoint_path=str(dst)).state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_data_list(capsys):
    assert main(["data", "list"]) == 0
    names = capsys.readouterr().out.split()
    assert "dsb2018_nuclei" in names and "mni152_brain" in names


def test_data_prepare(tmp_path):
    import importlib.util

    if importlib.util.find_spec("stardist") is None or importlib.util.find_spec("tifffile") is None:
        pytest.skip("the DSB2018 files ship with stardist: pip install --no-deps stardist tifffile")
    assert main(["data", "prepare", "dsb2018_nuclei", "--out", str(tmp_path)]) == 0
    root = tmp_path / "Dataset993_DSB2018Nuclei"
    assert (root / "dataset.json").exists() and any((root / "imagesTr").iterdir())


def test_info_plans_segmentation_networks_for_the_input_size(capsys):
    # the papers' 2D AbdomenMRI setting (320x320, 1 channel, 14 classes): 7 stages, the official 47,533,012
    assert main(["info", "umamba_bot", "--img-size", "320", "--in-chans", "1", "--num-classes", "14"]) == 0
    total = [line for line in capsys.readouterr().out.splitlines() if line.startswith("total")][0]
    assert "47,533,012" in total and "1x14x320x320" in total
