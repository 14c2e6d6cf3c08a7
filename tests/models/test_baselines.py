"""The MONAI comparison networks (unet, segresnet, unetr, swinunetr) through create_model, in 2D and 3D."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("monai")

from mambaeye.models import create_model, list_models  # noqa: E402

_TINY_VIT = dict(hidden_size=48, mlp_dim=96, num_heads=4, features_per_stage=8)
_TINY_SWIN = dict(features_per_stage=12, depths=(1, 1, 1, 1))

CASES = [
    ("unet", 2, 32, dict(input_size=(32, 32))),
    ("unet", 3, 16, dict(input_size=16)),
    ("segresnet", 2, 32, dict()),
    ("segresnet", 3, 16, dict()),
    ("unetr", 2, 32, dict(input_size=32, **_TINY_VIT)),
    ("unetr", 3, 32, dict(input_size=32, **_TINY_VIT)),
    ("swinunetr", 2, 64, dict(_TINY_SWIN)),
    ("swinunetr", 3, 64, dict(_TINY_SWIN)),
]


def test_registered():
    assert {"unet", "segresnet", "unetr", "swinunetr"} <= set(list_models())


@pytest.mark.parametrize("name, dims, size, kwargs", CASES)
def test_forward_shapes_2d_and_3d(name, dims, size, kwargs):
    torch.manual_seed(0)
    model = create_model(name, in_chans=2, num_classes=3, spatial_dims=dims, **kwargs).eval()
    assert (model.in_chans, model.num_classes, model.spatial_dims) == (2, 3, dims)
    with torch.no_grad():
        y = model(torch.randn(1, 2, *([size] * dims)))
    assert y.shape == (1, 3, *([size] * dims))


def test_unet_is_nnunet_like_and_deep_supervision_gives_every_decoder_head():
    model = create_model("unet", in_chans=1, num_classes=4, spatial_dims=2, input_size=(64, 32))
    # U-Mamba's plan: halve each axis while it stays >= 4; features min(32 * 2^i, 512)
    assert model.strides == [(1, 1), (2, 2), (2, 2), (2, 2), (2, 1)]
    assert model.total_stride == (16, 8) and model.features_per_stage == [32, 64, 128, 256, 512]
    y = model.train()(torch.randn(2, 1, 64, 32))
    assert y.shape == (2, 4, 4, 64, 32)  # MONAI stacks the n_stages - 1 heads on dim 1, at full resolution
    plain = create_model("unet", in_chans=1, num_classes=4, spatial_dims=2, input_size=(64, 32),
                         deep_supervision=False)
    assert plain.train()(torch.randn(1, 1, 64, 32)).shape == (1, 4, 64, 32)


@pytest.mark.parametrize("name, dims, size, kwargs, bad", [
    ("unet", 2, 32, dict(input_size=(32, 32)), (36, 32)),
    ("segresnet", 3, 16, dict(), (16, 16, 12)),
    ("unetr", 2, 32, dict(input_size=32, **_TINY_VIT), (64, 64)),
    ("swinunetr", 2, 64, dict(_TINY_SWIN), (48, 64)),
])
def test_sizes_the_network_cannot_take_are_refused(name, dims, size, kwargs, bad):
    model = create_model(name, in_chans=1, num_classes=2, spatial_dims=dims, **kwargs)
    with pytest.raises(ValueError, match="total stride|input_size"):
        model(torch.randn(1, 1, *bad))
    with pytest.raises(ValueError, match="expected input of shape"):
        model(torch.randn(1, 3, *([size] * dims)))


@pytest.mark.parametrize("name, kwargs, match", [
    ("unetr", dict(input_size=(40, 40)), "multiple of 16"),
    ("swinunetr", dict(input_size=(48, 48)), "multiple of 32"),
    ("swinunetr", dict(features_per_stage=20), "multiple of 12"),
    ("unet", dict(spatial_dims=4), "spatial_dims"),
    ("segresnet", dict(deep_supervision=True), "deep supervision"),
])
def test_bad_arguments_raise_value_error(name, kwargs, match):
    kwargs = {"spatial_dims": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        create_model(name, in_chans=1, num_classes=2, **kwargs)


def test_missing_monai_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "monai", None)  # import monai -> ImportError
    monkeypatch.setitem(sys.modules, "monai.networks", None)
    with pytest.raises(ImportError, match=r"pip install mambaeye\[seg\]"):
        create_model("segresnet", in_chans=1, num_classes=2, spatial_dims=2)
