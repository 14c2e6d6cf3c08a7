"""Swin-UMamba / Swin-UMamba†: exact official sizes, official key layout and checkpoint round trip,
forward/backward with deep supervision, loading a vanilla VMamba-T checkpoint into the encoder, errors."""

from __future__ import annotations

import pytest
import torch

from mambaeye.convert.vmamba import vmamba_to_official
from mambaeye.models import create_model
from mambaeye.models.swin_umamba import PatchExpand, PatchMerging3D, SwinUMamba, SwinUMambaD, load_encoder_checkpoint

OFFICIAL_PARAMS = {"swin_umamba": 59_889_368, "swin_umamba_d": 27_497_720}  # 1 input channel, 14 classes

# narrow widths, fewer blocks, no drop path (a dropped branch would get no gradient)
SMALL = {
    "swin_umamba": dict(feat_size=(8, 16, 32, 64, 128), depths=(1, 1, 2, 1), drop_path_rate=0.0),
    "swin_umamba_d": dict(dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), drop_path_rate=0.0,
                          decoder_drop_path_rate=0.0),
}
# deep-supervision output strides, highest resolution first
DS_STRIDES = {"swin_umamba": [1, 2, 4, 8], "swin_umamba_d": [1, 4, 8, 16]}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_is_exactly_official(name):
    with torch.device("meta"):
        model = create_model(name, in_chans=1, num_classes=14, deep_supervision=True)
    assert _count(model) == OFFICIAL_PARAMS[name]


def test_official_module_names():
    with torch.device("meta"):
        net = create_model("swin_umamba", in_chans=1, num_classes=14)
        net_d = create_model("swin_umamba_d", in_chans=1, num_classes=14)
    keys, keys_d = set(net.state_dict()), set(net_d.state_dict())
    for key in ("stem.0.weight", "stem.1.weight", "vssm_encoder.patch_embed.0.weight",
                "vssm_encoder.layers.2.blocks.8.op.A_logs", "vssm_encoder.layers.2.downsample.reduction.weight",
                "encoder1.layer.conv1.conv.weight", "encoder1.layer.conv3.conv.weight",
                "encoder5.layer.conv2.conv.weight", "decoder6.transp_conv.conv.weight",
                "decoder2.conv_block.conv3.conv.weight", "decoder1.layer.conv1.conv.weight",
                "out_layers.3.conv.conv.bias"):
        assert key in keys, key
    assert "decoder1.layer.conv3.conv.weight" not in keys  # same width: identity residual, as MONAI
    for key in ("vssm_encoder.layers.0.blocks.1.norm.weight", "decoder.expand_layers.0.expand.weight",
                "decoder.expand_layers.3.norm.weight", "decoder.concat_back_dim.2.bias",
                "decoder.stages.2.blocks.1.op.x_proj_weight", "decoder.seg_layers.3.weight"):
        assert key in keys_d, key
    assert net_d.state_dict()["decoder.expand_layers.3.expand.weight"].shape == (16 * 96, 96)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_backward_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = create_model(name, in_chans=2, num_classes=3, **SMALL[name])
    outs = model(torch.randn(2, 2, 32, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 3, 32 // s, 64 // s) for s in DS_STRIDES[name]]
    sum(o.pow(2).mean() for o in outs).backward()
    missing = [k for k, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_3d_forward_backward_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = create_model(name, in_chans=1, num_classes=2, spatial_dims=3, **SMALL[name])
    assert model.vssm_encoder.layers[0].blocks[0].op.directions == 6  # SS2D over volumes
    outs = model(torch.randn(1, 1, 32, 32, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 2, 32 // s, 32 // s, 64 // s) for s in DS_STRIDES[name]]
    sum(o.pow(2).mean() for o in outs).backward()
    missing = [k for k, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 1, D, H, W\)"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="ImageNet weights are 2D"):
        load_encoder_checkpoint(model, "unused.pth")


def test_3d_patch_merging_and_expanding():
    x = torch.arange(2 * 4 * 4 * 4 * 3, dtype=torch.float32).reshape(2, 4, 4, 4, 3)
    merge = PatchMerging3D(3, 6)
    torch.nn.init.eye_(merge.reduction.weight)  # keep the first 6 of the 24 concatenated features
    merge.norm = torch.nn.Identity()
    y = merge(x)
    assert y.shape == (2, 2, 2, 2, 6)
    torch.testing.assert_close(y[0, 1, 0, 1], torch.cat([x[0, 2, 0, 2], x[0, 2, 1, 2]]))  # H offset first
    up2, up4 = PatchExpand(8, 2, spatial_dims=3), PatchExpand(8, 4, spatial_dims=3)
    assert up2(torch.randn(1, 2, 3, 4, 8)).shape == (1, 4, 6, 8, 4)
    assert up4(torch.randn(1, 2, 3, 4, 8)).shape == (1, 8, 12, 16, 8)
    assert up2.expand.weight.shape == (4 * 8, 8) and up4.expand.weight.shape == (64 * 8, 8)


@pytest.mark.parametrize("cls", [SwinUMamba, SwinUMambaD])
def test_errors_and_single_output_without_deep_supervision(cls):
    name = "swin_umamba" if cls is SwinUMamba else "swin_umamba_d"
    model = cls(in_channels=1, num_classes=4, deep_supervision=False, **SMALL[name]).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 32, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 4, 32, 64)
    with pytest.raises(ValueError, match="not divisible by the network's total stride 32"):
        model(torch.randn(1, 1, 32, 48))
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 1, H, W\)"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        cls(spatial_dims=1)


def _to_official_names(state_dict: dict) -> dict:
    """Ours -> the official Swin-UMamba layout (ARCHITECTURES.md), written independently of the converter."""
    out = {}
    for key, value in state_dict.items():
        key = key.replace(".norm.", ".ln_1.") if ".blocks." in key else key
        key = key.replace(".op.", ".self_attention.")
        key = key.replace("vssm_encoder.patch_embed.0.", "vssm_encoder.patch_embed.proj.")
        key = key.replace("vssm_encoder.patch_embed.2.", "vssm_encoder.patch_embed.norm.")
        for i in range(4):
            key = key.replace(f"vssm_encoder.layers.{i}.downsample.", f"vssm_encoder.downsamples.{i}.")
        out[key] = value
    return out


@pytest.mark.parametrize("name", sorted(SMALL))
def test_official_layout_checkpoint_loads_with_identical_outputs(name, tmp_path):
    torch.manual_seed(0)
    source = create_model(name, in_chans=1, num_classes=3, **SMALL[name]).eval()
    official = _to_official_names(source.state_dict())
    assert any(".self_attention." in k for k in official) and any(".downsamples." in k for k in official)
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": official, "trainer_name": "nnUNetTrainerSwinUMamba"}, path)
    torch.manual_seed(1)
    loaded = create_model(name, in_chans=1, num_classes=3, checkpoint_path=str(path), **SMALL[name]).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        for a, b in zip(source(x), loaded(x), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_vanilla_vmamba_checkpoint_fills_every_encoder_weight(name, tmp_path):
    dims = SMALL[name]["feat_size"][1:] if name == "swin_umamba" else SMALL[name]["dims"]
    torch.manual_seed(0)
    vmamba = create_model("vmamba_tiny_v0", dims=list(dims), depths=(1, 1, 2, 1), num_classes=10)
    with torch.no_grad():
        for p in vmamba.parameters():
            p.add_(torch.rand_like(p) + 0.5)  # far from any initialisation
    official = vmamba_to_official(vmamba.state_dict(), old_names=True)  # the vanilla release's key names
    path = tmp_path / "vssmtiny_dp01_ckpt_epoch_292.pth"
    torch.save({"model": official, "epoch": 292}, path)

    model = create_model(name, in_chans=1, num_classes=3, **SMALL[name])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loaded = load_encoder_checkpoint(model, path)
    after = model.state_dict()
    layer_keys = [k for k in after if k.startswith("vssm_encoder.layers.")]
    assert set(layer_keys) <= set(loaded)
    for key in layer_keys:
        assert not torch.equal(before[key], after[key]), key
        assert torch.equal(after[key], vmamba.state_dict()[key[len("vssm_encoder."):]]), key
    # the patch embed takes the stem's 8 channels (Swin-UMamba) or 1 channel (†), not RGB: left as it was
    assert torch.equal(before["vssm_encoder.patch_embed.0.weight"], after["vssm_encoder.patch_embed.0.weight"])
    assert not any(k.startswith(("decoder", "encoder", "stem", "out_layers")) for k in loaded)

    via_kwarg = create_model(name, in_chans=1, num_classes=3, encoder_checkpoint=str(path), **SMALL[name])
    assert torch.equal(via_kwarg.state_dict()["vssm_encoder.layers.2.blocks.1.op.A_logs"],
                       after["vssm_encoder.layers.2.blocks.1.op.A_logs"])


def test_freeze_encoder_keeps_only_the_patch_embed_trainable():
    model = SwinUMambaD(in_channels=1, num_classes=2, **SMALL["swin_umamba_d"])
    model.freeze_encoder()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("vssm_encoder.layers.") for n in frozen)
    assert all(p.requires_grad for p in model.vssm_encoder.patch_embed.parameters())
    model.unfreeze_encoder()
    assert all(p.requires_grad for p in model.parameters())


def test_encoder_checkpoint_of_another_width_is_refused(tmp_path):
    vmamba = create_model("vmamba_tiny_v0", dims=24, depths=(1, 1, 2, 1), num_classes=10)
    path = tmp_path / "other.pth"
    torch.save({"model": vmamba_to_official(vmamba.state_dict(), old_names=True)}, path)
    with pytest.raises(ValueError, match="not a vanilla VMamba-T checkpoint"):
        create_model("swin_umamba", in_chans=1, num_classes=3, encoder_checkpoint=str(path), **SMALL["swin_umamba"])


def test_bf16_autocast_training_steps_stay_finite():
    torch.manual_seed(0)
    model = create_model("swin_umamba_d", in_chans=1, num_classes=3, **SMALL["swin_umamba_d"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(2, 1, 32, 32), torch.randint(0, 3, (2, 32, 32))
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x)[0].float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_unetr_blocks_match_monai(spatial_dims):
    blocks = pytest.importorskip("monai.networks.blocks")
    from mambaeye.models.swin_umamba import UnetOutBlock, UnetrBasicBlock, UnetrUpBlock

    torch.manual_seed(0)
    size = (8,) * spatial_dims
    pairs = [
        (UnetrBasicBlock(3, 5, spatial_dims), blocks.UnetrBasicBlock(spatial_dims, 3, 5, 3, 1, "instance", True),
         (torch.randn(2, 3, *size),)),
        (UnetrBasicBlock(5, 5, spatial_dims), blocks.UnetrBasicBlock(spatial_dims, 5, 5, 3, 1, "instance", True),
         (torch.randn(2, 5, *size),)),
        (UnetrUpBlock(6, 4, spatial_dims), blocks.UnetrUpBlock(spatial_dims, 6, 4, 3, 2, "instance", True),
         (torch.randn(2, 6, *(s // 2 for s in size)), torch.randn(2, 4, *size))),
        (UnetOutBlock(4, 3, spatial_dims), blocks.UnetOutBlock(spatial_dims, 4, 3), (torch.randn(2, 4, *size),)),
    ]
    for ours, theirs, inputs in pairs:
        assert set(ours.state_dict()) == set(theirs.state_dict())
        ours.load_state_dict(theirs.state_dict())
        torch.testing.assert_close(ours(*inputs), theirs(*inputs))
