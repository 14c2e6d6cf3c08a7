"""U-Mamba_Bot / U-Mamba_Enc: exact official sizes, 2D and 3D forward/backward, deep supervision, the fp32
Mamba layer under autocast, argument and input-size errors, nnU-Net checkpoint aliases."""

from __future__ import annotations

import pytest
import torch

from mambaeye.models import create_model
from mambaeye.models.umamba import MambaLayer, UMamba, checkpoint_filter_fn, plan_strides


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _features(n: int, cap: int) -> list[int]:
    return [min(32 * 2**i, cap) for i in range(n)]


# ARCHITECTURES.md / issue 5: 1 input channel, 14 classes, kernels 3, 2 convs per stage, deep supervision
OFFICIAL = [
    ("umamba_bot", dict(spatial_dims=2, n_stages=8, features_per_stage=_features(8, 512),
                        strides=[1, 2, 2, 2, 2, 2, 2, 2]), 64_818_914),
    ("umamba_enc", dict(spatial_dims=2, n_stages=8, features_per_stage=_features(8, 512),
                        strides=[1, 2, 2, 2, 2, 2, 2, 2], input_size=(512, 448)), 63_935_154),
    ("umamba_bot", dict(spatial_dims=3, n_stages=6, features_per_stage=_features(6, 320),
                        strides=[1, 2, 2, 2, 2, 2]), 42_130_054),
    ("umamba_enc", dict(spatial_dims=3, n_stages=6, features_per_stage=_features(6, 320),
                        strides=[1, 2, 2, 2, 2, 2], input_size=(128, 128, 128)), 42_760_582),
    ("umamba_bot", dict(spatial_dims=2, n_stages=7, strides=2), 47_533_012),
    ("umamba_enc", dict(spatial_dims=2, n_stages=7, input_size=(320, 320)), 47_015_538),
]


@pytest.mark.parametrize("name, kwargs, params", OFFICIAL,
                         ids=[f"{n}-{k['spatial_dims']}d-S{k['n_stages']}" for n, k, _ in OFFICIAL])
def test_parameter_count_is_exactly_official(name, kwargs, params):
    with torch.device("meta"):
        model = create_model(name, in_chans=1, num_classes=14, kernel_sizes=3, n_conv_per_stage=2,
                             n_conv_per_stage_decoder=2, deep_supervision=True, **kwargs)
    assert _count(model) == params


def test_official_state_dict_layout():
    with torch.device("meta"):
        bot = create_model("umamba_bot", in_chans=1, num_classes=14, n_stages=4)
        enc = create_model("umamba_enc", in_chans=1, num_classes=14, n_stages=4, input_size=(64, 64))
    keys = set(bot.state_dict())
    for key in ("encoder.stem.0.conv1.weight", "encoder.stem.0.norm1.bias", "encoder.stem.0.conv3.weight",
                "encoder.stem.1.conv1.conv.weight", "encoder.stem.1.conv2.norm.weight",
                "encoder.stages.0.0.conv1.bias", "encoder.stages.3.0.conv3.weight",
                "mamba_layer.norm.weight", "mamba_layer.mamba.A_log", "mamba_layer.mamba.in_proj.weight",
                "mamba_layer.mamba.conv1d.weight", "mamba_layer.mamba.x_proj.weight",
                "mamba_layer.mamba.dt_proj.bias", "mamba_layer.mamba.D", "mamba_layer.mamba.out_proj.weight",
                "decoder.stages.0.0.conv1.weight", "decoder.upsample_layers.0.conv.weight",
                "decoder.seg_layers.2.bias"):
        assert key in keys, key
    # 2D Enc: Mamba after stages 1 and 3 (every other, ending on the last), Identity elsewhere
    enc_keys = set(enc.state_dict())
    assert "encoder.mamba_layers.1.mamba.A_log" in enc_keys and "encoder.mamba_layers.3.norm.weight" in enc_keys
    assert not any(k.startswith(("encoder.mamba_layers.0.", "encoder.mamba_layers.2.", "mamba_layer."))
                   for k in enc_keys)


def _small(spatial_dims: int, **kwargs) -> dict:
    features = [4, 8, 8, 16] if spatial_dims == 2 else [4, 8, 16]
    return dict(spatial_dims=spatial_dims, n_stages=len(features), features_per_stage=features, **kwargs)


CASES = [
    ("umamba_bot", 2, (2, 3, 32, 32)),
    ("umamba_enc", 2, (2, 3, 32, 32)),
    ("umamba_bot", 3, (1, 2, 16, 16, 16)),
    ("umamba_enc", 3, (1, 2, 16, 16, 16)),
]


@pytest.mark.parametrize("name, dims, shape", CASES, ids=[f"{n}-{d}d" for n, d, _ in CASES])
def test_forward_backward_every_parameter_gets_a_gradient(name, dims, shape):
    torch.manual_seed(0)
    kwargs = _small(dims, input_size=shape[2:]) if name == "umamba_enc" else _small(dims)
    model = create_model(name, num_classes=5, in_chans=shape[1], **kwargs)
    outs = model(torch.randn(shape))
    n = len(kwargs["features_per_stage"])
    # deep supervision: one output per decoder stage, highest resolution first, each halving the size
    assert [tuple(o.shape) for o in outs] == [(shape[0], 5, *(s // 2**i for s in shape[2:])) for i in range(n - 1)]
    sum(o.pow(2).mean() for o in outs).backward()
    missing = [k for k, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_without_deep_supervision_one_full_resolution_output():
    model = UMamba(**_small(2), in_channels=1, num_classes=4, deep_supervision=False).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 16, 24))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 4, 16, 24)


def test_enc_channel_token_mode_where_few_voxels():
    # 32x32 input, strides 1,2,2,2: stage 3 is 4x4 = 16 voxels <= 16 channels -> scans over the channels
    model = UMamba(**_small(2), in_channels=1, num_classes=2, mamba="encoder", input_size=(32, 32))
    layer = model.encoder.mamba_layers[3]
    assert isinstance(layer, MambaLayer) and layer.channel_token and layer.dim == 16
    assert not model.encoder.mamba_layers[1].channel_token and model.encoder.mamba_layers[1].dim == 8
    with pytest.raises(ValueError, match="stage 3 scans over channels with 16 voxels"):
        model(torch.randn(1, 1, 64, 64))


def test_mamba_layer_runs_in_fp32_under_bf16_autocast_and_trains_without_nan():
    torch.manual_seed(0)
    model = UMamba(**_small(2), in_channels=1, num_classes=3, mamba="encoder", input_size=(32, 32))
    seen = []
    for layer in (model.encoder.mamba_layers[1], model.encoder.mamba_layers[3]):
        layer.mamba.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(2, 1, 32, 32), torch.randint(0, 3, (2, 32, 32))
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs = model(x)
            loss = torch.nn.functional.cross_entropy(outs[0].float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
        assert outs[0].dtype == torch.bfloat16  # the convolutions did run under autocast
    assert seen and all(d == (torch.float32, torch.float32) for d in seen)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_sizes_the_total_stride_does_not_divide_are_refused():
    model = UMamba(**_small(2), in_channels=1, num_classes=2)  # total stride 8
    with pytest.raises(ValueError, match="not divisible by the network's total stride"):
        model(torch.randn(1, 1, 32, 36))
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 1, H, W\)"):
        model(torch.randn(1, 2, 32, 32))


@pytest.mark.parametrize("kwargs, match", [
    (dict(spatial_dims=4, n_stages=3), "spatial_dims"),
    (dict(n_stages=3, strides=[1, 2]), "strides needs one entry per stage"),
    (dict(n_stages=3, kernel_sizes=[3, 3, (3, 3, 3)]), "kernel_sizes"),
    (dict(n_stages=3, features_per_stage=[4, 8]), "features_per_stage"),
    (dict(n_stages=3, mamba="encoder"), "needs input_size"),
    (dict(n_stages=3, input_size=(32, 32, 32)), "input_size must be 2"),
    (dict(n_stages=3, mamba="middle"), "mamba must be"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UMamba(**kwargs)


def test_defaults_follow_an_nnunet_like_plan():
    assert plan_strides((128, 128, 128)) == [(1, 1, 1)] + [(2, 2, 2)] * 5
    assert plan_strides((512, 448)) == [(1, 1)] + [(2, 2)] * 6 + [(2, 1)]
    with torch.device("meta"):
        model = UMamba(spatial_dims=3, input_size=(128, 128, 128), num_classes=2)
    assert model.n_stages == 6 and model.features_per_stage == [32, 64, 128, 256, 320, 320]
    assert model.total_stride == (32, 32, 32)
    with torch.device("meta"):  # nothing given: 512x512 in 2D, as the official 8-stage setting
        bot, enc = create_model("umamba_bot"), create_model("umamba_enc", num_classes=14, in_chans=1)
    assert bot.n_stages == 8 and bot.input_size == (512, 512) and bot.features_per_stage[-1] == 512
    assert enc.channel_token_tokens == {5: 256, 7: 16}  # 16x16 and 4x4 maps scan over their 512 channels


def test_nnunet_checkpoint_aliases_are_dropped_and_the_rest_loads():
    model = UMamba(**_small(2), in_channels=1, num_classes=2)
    official = {}
    for key, value in model.state_dict().items():  # the nnU-Net module tree lists some tensors twice
        official[key] = value.clone() + 1
        if key.startswith("encoder."):
            official["decoder." + key] = official[key]
        if ".conv1.conv." in key:
            official[key.replace(".conv1.conv.", ".conv1.all_modules.0.")] = official[key]
    filtered = checkpoint_filter_fn(official, model)
    assert set(filtered) == set(model.state_dict())
    model.load_state_dict(filtered)
    assert torch.equal(model.decoder.seg_layers[0].bias, official["decoder.seg_layers.0.bias"])


@pytest.mark.parametrize("name, dims", [("umamba_bot", 2), ("umamba_enc", 3)])
def test_nnunet_checkpoint_file_gives_identical_outputs(name, dims, tmp_path):
    torch.manual_seed(0)
    size = (32, 32) if dims == 2 else (16, 16, 16)
    kwargs = _small(dims, input_size=size) if name == "umamba_enc" else _small(dims)
    source = create_model(name, in_chans=1, num_classes=3, **kwargs).eval()
    weights = dict(source.state_dict())
    weights.update({"decoder." + k: v for k, v in source.state_dict().items() if k.startswith("encoder.")})
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": weights, "trainer_name": "nnUNetTrainerUMambaBot", "current_epoch": 1000}, path)
    torch.manual_seed(1)
    loaded = create_model(name, in_chans=1, num_classes=3, checkpoint_path=str(path), **kwargs).eval()
    x = torch.randn(1, 1, *size)
    with torch.no_grad():
        for a, b in zip(source(x), loaded(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_runs_on_the_meta_device_for_shape_and_flop_profiling():
    with torch.device("meta"):
        model = create_model("umamba_enc", in_chans=1, num_classes=3, **_small(2, input_size=(32, 32)))
        outs = model(torch.empty(1, 1, 32, 32))
    assert outs[0].shape == (1, 3, 32, 32) and outs[0].device.type == "meta"
