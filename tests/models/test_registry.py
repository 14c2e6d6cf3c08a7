"""Registry, exact official parameter counts, timm registration, pretrained-file lookup."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import mambaeye
from mambaeye.models import create_model, get_default_cfg, list_models

from ._small import OFFICIAL_PARAMS, small


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_official_model_is_registered():
    assert set(OFFICIAL_PARAMS) <= set(list_models())
    assert list_models("vim*") == ["vim_base", "vim_small", "vim_small_s8", "vim_tiny", "vim_tiny_s8"]
    assert list_models(family="vmamba") == sorted(n for n in OFFICIAL_PARAMS if n.startswith("vmamba"))
    assert mambaeye.create_model is create_model and mambaeye.list_models is list_models


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_is_exactly_official(name):
    with torch.device("meta"):
        model = create_model(name)
    assert _count(model) == OFFICIAL_PARAMS[name]


def test_unknown_model_names_close_matches():
    with pytest.raises(KeyError, match="vmamba_tiny"):
        create_model("vmamba_tinny")


@pytest.mark.parametrize("name", ["vim_tiny", "vmamba_tiny_v0"])
def test_pretrained_cfg(name):
    with torch.device("meta"):
        model = create_model(name, num_classes=10, in_chans=1, img_size=(192, 160) if "vim" in name else 224)
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg
    assert cfg["architecture"] == name and cfg["num_classes"] == 10
    assert cfg["input_size"] == ((1, 192, 160) if "vim" in name else (1, 224, 224))
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bicubic"
    assert get_default_cfg(name)["input_size"] == (3, 224, 224)


def test_timm_create_model_builds_our_models():
    timm = pytest.importorskip("timm")
    assert timm.list_models("vmamba*") == list_models("vmamba*")
    assert set(list_models()) <= set(timm.list_models())
    with torch.device("meta"):
        for name in sorted(OFFICIAL_PARAMS):
            model = timm.create_model(name, num_classes=11)
            assert _count(model) == OFFICIAL_PARAMS[name] - (1000 - 11) * (model.num_features + 1)
        features = timm.create_model("vmamba_tiny", features_only=True)
    assert features.feature_info.reduction() == [4, 8, 16, 32]
    cfg = timm.models.get_pretrained_cfg("vim_small_s8")
    assert cfg.input_size == (3, 224, 224) and "vim_s_midclstok_ft_81p6acc.pth" in cfg.notes[0]
    data = timm.data.resolve_data_config(model=model)
    assert data["mean"] == (0.485, 0.456, 0.406) and data["crop_pct"] == 0.875


@pytest.mark.parametrize("first, second", [("mambaeye", "timm"), ("timm", "mambaeye")])
def test_timm_sees_the_models_whichever_is_imported_first(first, second):
    pytest.importorskip("timm")
    code = (f"import sys, torch; import {first}; assert '{first}' == 'timm' or 'timm' not in sys.modules; "
            f"import {second}; torch.set_default_device('meta'); m = timm.create_model('vim_tiny'); "
            "print(type(m).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Vim"


def test_pretrained_without_a_local_file_says_where_to_put_which_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MAMBAEYE_CHECKPOINT_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        create_model("vmamba_tiny", pretrained=True)
    message = str(err.value)
    assert "vssm1_tiny_0230s_ckpt_epoch_264.pth" in message and str(tmp_path) in message
    assert "github.com/MzeroMiko/VMamba" in message
    with pytest.raises(FileNotFoundError, match="vim_t_midclstok_76p1acc.pth.*huggingface.co/hustvl"):
        create_model("vim_tiny", pretrained=True)


def test_pretrained_loads_a_local_file(tmp_path, monkeypatch):
    from mambaeye.convert._io import save_safetensors

    monkeypatch.setenv("MAMBAEYE_CHECKPOINT_DIR", str(tmp_path))
    source = create_model("vim_tiny", **small("vim_tiny")).eval()
    save_safetensors(source.state_dict(), tmp_path / "vim_tiny.safetensors")
    loaded = create_model("vim_tiny", pretrained=True, **small("vim_tiny")).eval()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)


def test_out_indices_without_features_only_is_an_error():
    with pytest.raises(ValueError, match="features_only"):
        create_model("vmamba_tiny", out_indices=(0, 1), **small("vmamba_tiny"))
