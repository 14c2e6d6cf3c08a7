"""Official checkpoints: key tables, detection, round trips through fake official files, loading, errors.

There is no network here, so the "official" files are built from our models with the inverse converters
(``vim_to_official`` / ``vmamba_to_official``), in the official key layout (v0 with the first releases' names,
v2 with Linear2d weights stored as 1x1 convs) and wrapped as the official trainers save them: ``model``,
``model_ema``, optimizer state and non-tensor objects (argparse args, a config object).
"""

from __future__ import annotations

import argparse
import json
import logging

import pytest
import torch

from mambaeye.convert import (
    CheckpointError,
    convert_checkpoint,
    convert_state_dict,
    detect_checkpoint,
    guess_model_name,
    load_checkpoint_file,
    vim_from_official,
    vim_to_official,
    vmamba_from_official,
    vmamba_to_official,
)
from mambaeye.models import create_model, list_models

from ..models._small import small


class TrainerConfig:
    """Stands for yacs' CfgNode & co.: a class weights_only=True refuses to unpickle."""

    def __init__(self, lr):
        self.lr = lr


# (model, inverse converter arguments) covering Vim, VMamba v2 and VMamba v0 with the old names
CASES = {
    "vim_tiny": {},
    "vim_small_s8": {},
    "vmamba_tiny": {"linear2d_as_conv": True},
    "vmamba_tiny_v0": {"old_names": True},
}


def _to_official(name: str, state_dict: dict, **kwargs) -> dict:
    if name.startswith("vim"):
        return vim_to_official(state_dict)
    return vmamba_to_official(state_dict, **kwargs)


def _input(name: str) -> torch.Tensor:
    return torch.randn(2, 3, 32, 32)


@pytest.fixture
def official_file(tmp_path):
    """name -> (path of a fake official .pth, the model it came from, the model behind model_ema)."""

    def make(name: str):
        model = create_model(name, **small(name)).eval()
        ema = create_model(name, **small(name)).eval()
        ckpt = {
            "model": _to_official(name, model.state_dict(), **CASES[name]),
            "model_ema": _to_official(name, ema.state_dict(), **CASES[name]),
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]},
            "epoch": 263,
            "args": argparse.Namespace(model=name, lr=1e-3),
            "config": TrainerConfig(lr=1e-3),
        }
        path = tmp_path / f"{name}_official.pth"
        torch.save(ckpt, path)
        return path, model, ema

    return make


def test_official_layout_names():
    with torch.device("meta"):
        v0 = create_model("vmamba_tiny_v0").state_dict()
        v2 = create_model("vmamba_tiny").state_dict()
    old = vmamba_to_official(v0, old_names=True)
    for ours, theirs in [("patch_embed.0.weight", "patch_embed.proj.weight"),
                         ("patch_embed.2.bias", "patch_embed.norm.bias"),
                         ("layers.1.blocks.0.norm.weight", "layers.1.blocks.0.ln_1.weight"),
                         ("layers.2.blocks.8.op.A_logs", "layers.2.blocks.8.self_attention.A_logs"),
                         ("layers.2.blocks.8.op.out_norm.weight", "layers.2.blocks.8.self_attention.out_norm.weight"),
                         ("layers.0.downsample.reduction.weight", "layers.0.downsample.reduction.weight"),
                         ("classifier.norm.weight", "norm.weight"), ("classifier.head.bias", "head.bias")]:
        assert ours in v0 and theirs in old
    assert vmamba_to_official(v2, linear2d_as_conv=True)["layers.0.blocks.0.mlp.fc1.weight"].shape == (384, 96, 1, 1)


@pytest.mark.parametrize("name", list_models("vim*") + list_models("vmamba*"))
def test_key_tables_round_trip_every_full_size_model(name):
    with torch.device("meta"):
        state = create_model(name).state_dict()
    if name.startswith("vim"):
        back = vim_from_official(vim_to_official(state))
        assert detect_checkpoint(vim_to_official(state)) == ("vim", None)
    else:
        kwargs = {"old_names": True} if name.endswith("_v0") else {"linear2d_as_conv": True}
        official = vmamba_to_official(state, **kwargs)
        assert detect_checkpoint(official) == ("vmamba", "v0" if name.endswith("_v0") else "v2")
        back = vmamba_from_official(official)
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in state.items()}
    assert guess_model_name(back) == name


@pytest.mark.parametrize("name", list(CASES))
def test_official_file_loads_directly_with_identical_outputs(name, official_file):
    path, model, ema = official_file(name)
    x = _input(name)
    loaded = create_model(name, checkpoint_path=path, **small(name)).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
        from_ema = create_model(name, checkpoint_path=path, use_ema=True, **small(name)).eval()
        torch.testing.assert_close(from_ema(x), ema(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_convert_then_load_gives_identical_outputs(name, official_file, tmp_path):
    path, model, _ = official_file(name)
    depth = {k: v for k, v in small(name).items() if k in ("depth", "depths")}
    report = convert_checkpoint(path, tmp_path / "out" / f"{name}.safetensors", model_name=name, **depth)
    assert report.model_name == name and report.num_classes == 7 and report.unused_keys == []
    assert report.num_parameters == sum(p.numel() for p in model.parameters())
    config = json.loads((tmp_path / "out" / f"{name}.json").read_text())
    assert config["model"] == name and config["family"] == name.split("_")[0] and config["source"] == path.name
    loaded = create_model(name, checkpoint_path=report.output, **small(name)).eval()
    x = _input(name)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert "unused" not in report.summary() and name in report.summary()


def test_convert_guesses_the_model_and_the_input_size(tmp_path):
    with torch.device("meta"):
        state = create_model("vim_tiny_s8", num_classes=10).state_dict()
    official = {k: torch.zeros(v.shape) for k, v in vim_to_official(state).items()}
    torch.save({"model": official}, tmp_path / "ft.pth")
    report = convert_checkpoint(tmp_path / "ft.pth", tmp_path / "ft.safetensors")
    assert (report.model_name, report.num_classes, report.img_size) == ("vim_tiny_s8", 10, 224)


def test_unused_keys_are_reported_by_name(tmp_path):
    model = create_model("vmamba_tiny_v0", **small("vmamba_tiny_v0"))
    official = vmamba_to_official(model.state_dict(), old_names=True)
    official["layers.0.blocks.0.self_attention.x_proj_bias"] = torch.zeros(4, 38)
    official["absolute_pos_embed"] = torch.zeros(1, 96, 16, 16)
    torch.save({"model": official}, tmp_path / "extra.pth")
    first = r"extra.pth.*first bad key 'layers.0.blocks.0.self_attention.x_proj_bias'"
    with pytest.raises(CheckpointError, match=first):
        convert_checkpoint(tmp_path / "extra.pth", tmp_path / "x.safetensors", model_name="vmamba_tiny_v0",
                           depths=(1, 1, 1, 1))
    report = convert_checkpoint(tmp_path / "extra.pth", tmp_path / "x.safetensors", model_name="vmamba_tiny_v0",
                                allow_unused=True, depths=(1, 1, 1, 1))
    assert report.unused_keys == ["layers.0.blocks.0.self_attention.x_proj_bias", "absolute_pos_embed"]
    with pytest.raises(CheckpointError, match=r"extra.pth.*absolute_pos_embed"):
        create_model("vmamba_tiny_v0", checkpoint_path=tmp_path / "extra.pth", **small("vmamba_tiny_v0"))


def test_wrong_model_names_the_first_bad_key(official_file):
    path, _, _ = official_file("vim_tiny")
    with pytest.raises(CheckpointError, match=r"vim_tiny_official.pth does not fit vim_small: first bad key "
                                              r"'cls_token' \(shape \(1, 1, 192\) in the file, \(1, 1, 384\)"):
        create_model("vim_small", checkpoint_path=path, **small("vim_small"))
    with pytest.raises(CheckpointError, match="first bad key"):
        create_model("vim_tiny", checkpoint_path=path, **small("vim_tiny", depth=3))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_files_name_the_file(suffix, official_file, tmp_path):
    path, model, _ = official_file("vim_tiny")
    if suffix == ".safetensors":
        path = convert_checkpoint(path, tmp_path / "t.safetensors", model_name="vim_tiny", depth=2).output
    data = open(path, "rb").read()
    broken = tmp_path / f"broken{suffix}"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="broken"):
        create_model("vim_tiny", checkpoint_path=broken, **small("vim_tiny"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_checkpoint_file(tmp_path / "missing.pth")


def test_other_num_classes_img_size_and_in_chans_adapt_and_log(official_file, caplog):
    path, model, _ = official_file("vim_tiny")
    with caplog.at_level(logging.INFO, logger="mambaeye"):
        other = create_model("vim_tiny", checkpoint_path=path, **small("vim_tiny", num_classes=3, img_size=64))
    assert "classifier re-initialised: the checkpoint has 7 classes, the model 3" in caplog.text
    assert "position embedding resampled from grid 2x2 to 4x4" in caplog.text
    assert other.pos_embed.shape == (1, 17, 192)
    assert torch.equal(other.layers[1].mixer.A_b_log, model.layers[1].mixer.A_b_log)
    assert torch.count_nonzero(other.head.bias) == 0
    headless = create_model("vim_tiny", checkpoint_path=path, **small("vim_tiny", num_classes=0))
    assert isinstance(headless.head, torch.nn.Identity)
    gray = create_model("vim_tiny", checkpoint_path=path, **small("vim_tiny", in_chans=1))
    torch.testing.assert_close(gray.patch_embed.proj.weight, model.patch_embed.proj.weight.sum(1, keepdim=True))


def test_features_only_loads_the_backbone(official_file):
    path, model, _ = official_file("vmamba_tiny")
    feats = create_model("vmamba_tiny", checkpoint_path=path, features_only=True, **small("vmamba_tiny")).eval()
    x = _input("vmamba_tiny")
    with torch.no_grad():
        torch.testing.assert_close(feats(x)[-1], model.forward_intermediates(x, intermediates_only=True)[-1])


def test_detection_and_unwrapping():
    with torch.device("meta"):
        state = create_model("vmamba_small").state_dict()
    official = {f"module.{k}": torch.zeros(1) for k in vmamba_to_official(state)}
    from mambaeye.convert import unwrap_state_dict

    bare = unwrap_state_dict(official)
    assert "patch_embed.5.weight" in bare and detect_checkpoint(bare) == ("vmamba", "v2")
    assert unwrap_state_dict({"model": bare, "epoch": 3}) == bare
    with pytest.raises(ValueError, match="not a Vim or VMamba checkpoint"):
        detect_checkpoint({"encoder.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="cannot tell VMamba v2 from v0"):
        detect_checkpoint({"layers.0.blocks.0.op.A_logs": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="model_ema"):
        unwrap_state_dict({"model": bare}, use_ema=True)
    assert set(convert_state_dict(vim_to_official({"norm_f.weight": torch.zeros(2)}))) == {"norm_f.weight"}


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    from mambaeye.convert._io import atomic_write

    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")

    def failing(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temporary left behind
