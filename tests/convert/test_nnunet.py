"""nnU-Net U-Mamba results folders: plans.json + dataset.json rebuild the network, checkpoint_final.pth loads
(create_model) and converts (mambaeye convert) with identical outputs."""

from __future__ import annotations

import json

import pytest
import torch

from mambaeye.cli import main
from mambaeye.convert import CheckpointError, convert_checkpoint
from mambaeye.models import create_model
from mambaeye.models.umamba import (
    UMamba,
    num_segmentation_heads,
    umamba_from_plans,
    umamba_kwargs_from_plans,
)

# small configurations: 2D (newer "architecture" layout) and anisotropic 3D (older flat keys)
ARCH_2D = dict(n_stages=3, features_per_stage=[8, 16, 32], kernel_sizes=[[3, 3]] * 3,
               strides=[[1, 1], [2, 2], [2, 2]], n_conv_per_stage=[2, 2, 2], n_conv_per_stage_decoder=[2, 2])
ARCH_3D = dict(n_stages=3, features_per_stage=[8, 16, 32], kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3]],
               strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]], n_conv_per_stage=[2, 2, 2], n_conv_per_stage_decoder=[2, 2])
PATCH = {"2d": [32, 32], "3d_fullres": [8, 16, 16]}


def _plans_new(configuration: str, arch: dict) -> dict:
    arch_kwargs = {**arch, "conv_op": "torch.nn.modules.conv.Conv2d", "conv_bias": True,
                   "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                   "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                   "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    return {"dataset_name": "Dataset001_Test", "plans_name": "nnUNetPlans", "configurations": {
        configuration: {"data_identifier": "nnUNetPlans_" + configuration, "batch_size": 2,
                        "patch_size": PATCH[configuration], "spacing": [1.0] * len(PATCH[configuration]),
                        "architecture": {
                            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                            "arch_kwargs": arch_kwargs,
                            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}},
        "3d_cascade_fullres": {"inherits_from": configuration}}}


def _plans_old(configuration: str, arch: dict) -> dict:
    return {"dataset_name": "Dataset001_Test", "plans_name": "nnUNetPlans", "configurations": {
        configuration: {"data_identifier": "nnUNetPlans_" + configuration, "batch_size": 2,
                        "patch_size": PATCH[configuration], "UNet_class_name": "PlainConvUNet",
                        "UNet_base_num_features": arch["features_per_stage"][0],
                        "unet_max_num_features": arch["features_per_stage"][-1],
                        "n_conv_per_stage_encoder": arch["n_conv_per_stage"],
                        "n_conv_per_stage_decoder": arch["n_conv_per_stage_decoder"],
                        "num_pool_per_axis": [2] * len(PATCH[configuration]),
                        "pool_op_kernel_sizes": arch["strides"], "conv_kernel_sizes": arch["kernel_sizes"]}}}


DATASET_2D = {"channel_names": {"0": "T1", "1": "T2"}, "labels": {"background": 0, "liver": 1, "kidney": 2},
              "numTraining": 4, "file_ending": ".nii.gz"}
DATASET_3D = {"modality": {"0": "CT"}, "labels": {"background": 0, "a": 1, "b": 2, "ignore": 3}}

CASES = {  # id: (variant, configuration, plans, dataset, arch)
    "bot-2d-new-layout": ("bot", "2d", _plans_new("2d", ARCH_2D), DATASET_2D, ARCH_2D),
    "enc-3d-old-layout": ("enc", "3d_fullres", _plans_old("3d_fullres", ARCH_3D), DATASET_3D, ARCH_3D),
}


def _official(model: UMamba) -> dict:
    """The state dict in nnU-Net's layout, with the aliases its module tree adds."""
    weights = {}
    for key, value in model.state_dict().items():
        weights[key] = value.clone()
        if key.startswith("encoder."):
            weights["decoder." + key] = value.clone()
        for part, index in ((".conv1.conv.", 0), (".conv1.norm.", 1), (".conv2.conv.", 0), (".conv2.norm.", 1)):
            if part in key:
                alias = key.replace(part, f".{part.split('.')[1]}.all_modules.{index}.")
                weights[alias] = value.clone()
                if key.startswith("encoder."):
                    weights["decoder." + alias] = value.clone()
    return weights


def _results_folder(tmp_path, case: str):
    """nnUNet_results/Dataset001_Test/<trainer>__nnUNetPlans__<configuration>/{plans,dataset}.json, fold_0/ckpt."""
    variant, configuration, plans, dataset, arch = CASES[case]
    torch.manual_seed(0)
    spatial_dims = len(PATCH[configuration])
    channels = len(dataset.get("channel_names", dataset.get("modality")))
    original = UMamba(spatial_dims=spatial_dims, in_channels=channels, num_classes=num_segmentation_heads(dataset),
                      input_size=PATCH[configuration], mamba="bottleneck" if variant == "bot" else "encoder",
                      **arch).eval()
    with torch.no_grad():  # the InstanceNorm affines away from their initial 1 / 0
        for name, p in original.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    trainer = f"nnUNetTrainerUMamba{variant.capitalize()}"
    folder = tmp_path / "Dataset001_Test" / f"{trainer}__nnUNetPlans__{configuration}"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    checkpoint = folder / "fold_0" / "checkpoint_final.pth"
    torch.save({
        "network_weights": _official(original),
        "optimizer_state": {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.99, "params": [0, 1]}]},
        "grad_scaler_state": None, "logging": {"ema_fg_dice": [0.5]}, "_best_ema": 0.5, "current_epoch": 1000,
        "init_args": {"plans": plans, "configuration": configuration, "fold": 0, "dataset_json": dataset,
                      "unpack_dataset": True, "device": torch.device("cpu")},
        "trainer_name": trainer, "inference_allowed_mirroring_axes": (0, 1),
    }, checkpoint)
    x = torch.randn(2, channels, *PATCH[configuration])
    return original, checkpoint, x


def _assert_same_outputs(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        ya, yb = a.eval()(x), b.eval()(x)
    assert len(ya) == len(yb) == a.n_stages - 1  # deep supervision
    for p, q in zip(ya, yb, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_create_model_rebuilds_the_network_from_the_results_folder(case, tmp_path):
    original, checkpoint, x = _results_folder(tmp_path, case)
    variant = CASES[case][0]
    torch.manual_seed(1)
    loaded = create_model(f"umamba_{variant}", checkpoint_path=str(checkpoint))  # no architecture arguments
    assert (loaded.in_chans, loaded.num_classes) == (original.in_chans, original.num_classes)
    assert loaded.strides == original.strides and loaded.kernel_sizes == original.kernel_sizes
    _assert_same_outputs(original, loaded, x)


@pytest.mark.parametrize("case", sorted(CASES))
def test_convert_gives_a_file_that_rebuilds_the_same_network(case, tmp_path):
    original, checkpoint, x = _results_folder(tmp_path, case)
    out = tmp_path / "converted" / "umamba.safetensors"
    report = convert_checkpoint(checkpoint, out)
    variant = CASES[case][0]
    assert report.model_name == f"umamba_{variant}" and report.family == "umamba"
    assert report.num_parameters == sum(p.numel() for p in original.parameters())
    assert len(report.unused_keys) == len(report.missing_keys) == 0
    config = json.loads(out.with_suffix(".json").read_text())
    assert config["nnunet"]["configuration"] == CASES[case][1]
    rebuilt = create_model(config["model"], checkpoint_path=str(out), **config["model_kwargs"])
    _assert_same_outputs(original, rebuilt, x)


def test_cli_convert(tmp_path, capsys):
    original, checkpoint, x = _results_folder(tmp_path, "bot-2d-new-layout")
    out = tmp_path / "cli.safetensors"
    assert main(["convert", str(checkpoint), str(out)]) == 0
    assert "umamba_bot" in capsys.readouterr().out
    config = json.loads(out.with_suffix(".json").read_text())
    _assert_same_outputs(original, create_model(config["model"], checkpoint_path=str(out),
                                                **config["model_kwargs"]), x)


@pytest.mark.parametrize("case", sorted(CASES))
def test_umamba_from_plans_paths_or_dicts(case, tmp_path):
    variant, configuration, plans, dataset, arch = CASES[case]
    original, checkpoint, _ = _results_folder(tmp_path, case)
    folder = checkpoint.parent.parent
    from_files = umamba_from_plans(folder / "plans.json", folder / "dataset.json", configuration, variant)
    from_dicts = umamba_from_plans(plans, dataset, configuration, variant)
    shapes = {k: v.shape for k, v in original.state_dict().items()}
    for model in (from_files, from_dicts):
        assert {k: v.shape for k, v in model.state_dict().items()} == shapes
        assert model.mamba == original.mamba and model.input_size == tuple(PATCH[configuration])
    # the cascade configuration inherits the architecture
    inherited = umamba_kwargs_from_plans(_plans_new(configuration, arch), dataset, "3d_cascade_fullres", variant)
    assert inherited == umamba_kwargs_from_plans(_plans_new(configuration, arch), dataset, configuration, variant)


def test_both_plans_layouts_give_the_same_arguments():
    for configuration, arch, dataset in (("2d", ARCH_2D, DATASET_2D), ("3d_fullres", ARCH_3D, DATASET_3D)):
        new = umamba_kwargs_from_plans(_plans_new(configuration, arch), dataset, configuration, "enc")
        old = umamba_kwargs_from_plans(_plans_old(configuration, arch), dataset, configuration, "enc")
        assert new == old
        assert new["input_size"] == PATCH[configuration] and new["mamba"] == "encoder"


def test_dataset_json_heads_and_channels():
    assert num_segmentation_heads(DATASET_2D) == 3
    assert num_segmentation_heads(DATASET_3D) == 3  # the ignore label is not a head
    regions = {"labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing": 3},
               "regions_class_order": [1, 2, 3]}
    assert num_segmentation_heads(regions) == 3
    kwargs = umamba_kwargs_from_plans(_plans_new("2d", ARCH_2D), DATASET_2D, "2d")
    assert (kwargs["in_channels"], kwargs["num_classes"], kwargs["spatial_dims"]) == (2, 3, 2)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="'3d_lowres' is not in the plans; it has: 2d"):
        umamba_kwargs_from_plans(_plans_new("2d", ARCH_2D), DATASET_2D, "3d_lowres")
    with pytest.raises(ValueError, match="UNet_base_num_features"):
        broken = _plans_old("2d", ARCH_2D)
        del broken["configurations"]["2d"]["UNet_base_num_features"]
        umamba_kwargs_from_plans(broken, DATASET_2D, "2d")
    _, checkpoint, _ = _results_folder(tmp_path, "bot-2d-new-layout")
    obj = torch.load(checkpoint, weights_only=True)
    obj["network_weights"]["decoder.encoder.stem.0.conv1.weight"] += 1  # an alias that disagrees
    bad = checkpoint.with_name("checkpoint_best.pth")
    torch.save(obj, bad)
    with pytest.raises(CheckpointError, match="differs from 'encoder.stem.0.conv1.weight'"):
        convert_checkpoint(bad, tmp_path / "bad.safetensors")
    (checkpoint.parent.parent / "plans.json").unlink()
    with pytest.raises(CheckpointError, match="plans.json and dataset.json"):
        convert_checkpoint(checkpoint, tmp_path / "out.safetensors")
