"""VMamba v2 / v0: forward/backward of every variant, sizes, the 4 stage maps, official layout and init,
gradient checkpointing, torch.compile, the blocks' fused residual adds against the plain formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mambaeye.models import VSSM, create_model
from mambaeye.models.vmamba import LayerNorm2d, Mlp, PatchMerging2D, VSSBlock, VSSStage
from mambaeye.ops import available_backends

from ._small import VMAMBA, small
from .test_vim import _grads_ok


@pytest.mark.parametrize("name", VMAMBA)
def test_forward_backward_every_parameter_gets_a_gradient(name):
    model = create_model(name, **small(name))
    out = model(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 7)
    out.square().sum().backward()
    assert _grads_ok(model) == []


@pytest.mark.parametrize("name", ["vmamba_tiny", "vmamba_tiny_v0"])
def test_features_only_gives_four_maps_at_strides_4_to_32(name):
    feats = create_model(name, features_only=True, **small(name))
    assert feats.feature_info.reduction() == [4, 8, 16, 32]
    assert feats.feature_info.channels() == [96, 192, 384, 768]
    for h, w in ((64, 96), (96, 32)):
        maps = feats(torch.randn(2, 3, h, w))
        assert [tuple(m.shape) for m in maps] == [(2, 96 * 2**i, h // 4 // 2**i, w // 4 // 2**i) for i in range(4)]
    sum(m.mean() for m in maps).backward()
    assert _grads_ok(feats) == []  # the unused classifier norm and head were pruned


def test_out_indices_prune_the_later_stages():
    feats = create_model("vmamba_small", features_only=True, out_indices=(1, 2), **small("vmamba_small"))
    assert len(feats.model.layers) == 3 and isinstance(feats.model.layers[-1].downsample, torch.nn.Identity)
    assert [m.shape[1:] for m in feats(torch.randn(1, 3, 64, 64))] == [(192, 8, 8), (384, 4, 4)]


def test_intermediates_are_the_stage_outputs_before_downsampling():
    model = create_model("vmamba_tiny", **small("vmamba_tiny")).eval()
    x = torch.randn(1, 3, 64, 64)
    final, maps = model.forward_intermediates(x)
    torch.testing.assert_close(final, model.forward_features(x))
    stage_in = model.layers[0].forward_blocks(model.patch_embed(x))
    torch.testing.assert_close(maps[0], stage_in)
    torch.testing.assert_close(maps[1], model.layers[1].forward_blocks(model.layers[0].downsample(stage_in)))


@pytest.mark.parametrize("size", [(70, 64), (64, 48), (16, 32)])
def test_sizes_not_divisible_by_32_are_refused(size):
    model = create_model("vmamba_tiny", **small("vmamba_tiny"))
    with pytest.raises(ValueError, match="divisible by 32"):
        model(torch.randn(1, 3, *size))


def test_two_resolutions():
    model = create_model("vmamba_tiny_v0", **small("vmamba_tiny_v0")).eval()
    assert model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 768, 2, 2)
    assert model.forward_features(torch.randn(1, 3, 32, 160)).shape == (1, 768, 1, 5)
    assert model(torch.randn(1, 3, 32, 160)).shape == (1, 7)


def test_official_layout_v2_and_v0():
    with torch.device("meta"):
        v2 = create_model("vmamba_tiny")
        v0 = create_model("vmamba_tiny_v0")
    k2, k0 = v2.state_dict(), v0.state_dict()
    assert {k for k in k2 if k.startswith("patch_embed.")} == {f"patch_embed.{i}.{w}" for i in (0, 2, 5, 7)
                                                                 for w in ("weight", "bias")}
    assert k2["layers.0.downsample.1.weight"].shape == (192, 96, 3, 3)
    assert k2["layers.2.blocks.7.mlp.fc1.weight"].shape == (1536, 384)
    assert k2["layers.0.blocks.0.op.x_proj_weight"].shape == (4, 6 + 2, 96)  # ssm_ratio 1, d_state 1
    assert "layers.0.blocks.0.op.conv2d.bias" not in k2 and "layers.3.downsample.1.weight" not in k2
    assert k2["classifier.head.weight"].shape == (1000, 768)
    assert k0["patch_embed.0.weight"].shape == (96, 3, 4, 4)
    assert k0["layers.0.downsample.reduction.weight"].shape == (192, 384)
    assert k0["layers.0.downsample.norm.weight"].shape == (384,)
    assert k0["layers.2.blocks.8.op.in_proj.weight"].shape == (1536, 384)  # x and z
    assert not any(".mlp." in k or ".norm2." in k for k in k0)


def test_patch_merging_order():
    pm = PatchMerging2D(2, 3)
    x = torch.randn(1, 4, 6, 2)  # (B, H, W, C)
    expected = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
    torch.testing.assert_close(pm(x), pm.reduction(pm.norm(expected)))
    odd = pm(torch.randn(1, 5, 3, 2))  # padded
    assert odd.shape == (1, 3, 2, 3)
    cf = PatchMerging2D(2, 3, channel_first=True)
    cf.load_state_dict(pm.state_dict())
    torch.testing.assert_close(cf(x.permute(0, 3, 1, 2)), pm(x).permute(0, 3, 1, 2))


def test_layer_norm_2d():
    norm = LayerNorm2d(5)
    x = torch.randn(2, 5, 3, 4)
    torch.testing.assert_close(norm(x), F.layer_norm(x.permute(0, 2, 3, 1), (5,)).permute(0, 3, 1, 2))


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.skipif(
    "triton" not in available_backends("cpu"), reason="needs triton under TRITON_INTERPRET=1"))])
def test_channel_first_mlp_is_the_channel_last_mlp(backend, monkeypatch):
    """The channel-first MLP (fc1 as a 1x1 conv without bias, bias + GELU fused) equals nn.Linear -> GELU ->
    nn.Linear on the permuted map, forward and gradients; fc1's hooks still fire."""
    from mambaeye.ops import bias_gelu

    if backend == "triton":
        fused = bias_gelu.bias_gelu_channel_first
        monkeypatch.setattr("mambaeye.models.vmamba.bias_gelu_channel_first",
                            lambda x, b: fused(x, b, backend="triton"))
    first, last = Mlp(6, 24, channel_first=True), Mlp(6, 24, channel_first=False)
    last.load_state_dict(first.state_dict())
    seen = []
    first.fc1.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    x = torch.randn(2, 6, 5, 7, requires_grad=True)
    y = first(x)
    y_ref = last(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    assert seen == [(2, 24, 5, 7)]
    grads = torch.autograd.grad(y.square().sum(), [x, first.fc1.weight, first.fc1.bias])
    grads_ref = torch.autograd.grad(y_ref.square().sum(), [x, last.fc1.weight, last.fc1.bias])
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)


def _plain_block(block: VSSBlock, x: torch.Tensor) -> torch.Tensor:
    """The block's definition with its own modules: x + dp(op(norm(x))), then x + dp(mlp(norm2(x)))."""
    x = x + block.drop_path(block.op(block.norm(x)))
    return x if block.mlp is None else x + block.drop_path(block.mlp(block.norm2(x)))


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.skipif(
    "triton" not in available_backends("cpu"), reason="needs triton under TRITON_INTERPRET=1"))])
@pytest.mark.parametrize("kind", ["fc2_bias_deferred", "mlp_dropout", "no_mlp", "channel_last"])
def test_stage_with_fused_residual_adds_is_the_plain_composition(kind, backend, monkeypatch):
    """VSSStage hands each block's last residual add (and fc2's bias, where no dropout follows it) on to the next
    block's norm: output and every gradient equal the blocks applied one by one as x + f(norm(x))."""
    from mambaeye.ops import layer_norm

    if backend == "triton":
        fused = layer_norm.add_layer_norm_channel_first
        monkeypatch.setattr("mambaeye.models.vmamba.add_layer_norm_channel_first",
                            lambda *a, **k: fused(*a, **{**k, "backend": "triton"}))
    channel_first = kind != "channel_last"
    blocks = [VSSBlock(8, mlp_ratio=0.0 if kind == "no_mlp" else 2.0, channel_first=channel_first,
                       mlp_drop_rate=0.1 if kind == "mlp_dropout" else 0.0, backend="torch") for _ in range(3)]
    stage = VSSStage(blocks, torch.nn.Identity()).double().eval()  # eval: dropout is the identity
    for name, p in stage.named_parameters():  # the norms' weight 1 / bias 0 and fc2's zero bias would hide mistakes
        if name.endswith(("norm.weight", "norm.bias", "norm2.weight", "norm2.bias", "fc2.bias")):
            torch.nn.init.normal_(p, 0.5, 0.3)
    deferred = [b.mlp is not None and b.mlp.can_defer_bias for b in blocks]
    assert deferred == [kind == "fc2_bias_deferred"] * 3
    shape = (2, 8, 5, 7) if channel_first else (2, 5, 7, 8)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    y = stage(x)
    y_ref = x
    for block in blocks:
        y_ref = _plain_block(block, y_ref)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(blocks[0](x), _plain_block(blocks[0], x))
    params = [x, *stage.parameters()]
    for g, g_ref in zip(torch.autograd.grad(y.square().sum(), params),
                        torch.autograd.grad(y_ref.square().sum(), params), strict=True):
        torch.testing.assert_close(g, g_ref)


def test_mlp_refuses_to_leave_its_bias_before_a_dropout():
    with pytest.raises(ValueError, match="add_bias=False needs channel_first=True and no dropout"):
        Mlp(4, 8, drop=0.1, channel_first=True)(torch.randn(1, 4, 2, 2), add_bias=False)
    with pytest.raises(ValueError, match="add_bias=False needs channel_first=True"):
        Mlp(4, 8)(torch.randn(1, 2, 2, 4), add_bias=False)


def test_layer_norm_2d_output_dtype_under_autocast():
    """Pre-norms hand the autocast dtype to their matmul; the stem/downsample norms keep float32 (the official
    model's residual stream under autocast), like F.layer_norm does."""
    x = torch.randn(2, 5, 3, 4).bfloat16()
    ref = F.layer_norm(x.float().permute(0, 2, 3, 1), (5,)).permute(0, 3, 1, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pre, residual = LayerNorm2d(5)(x), LayerNorm2d(5, autocast_output=False)(x)
    assert (pre.dtype, residual.dtype) == (torch.bfloat16, torch.float32)
    torch.testing.assert_close(residual, ref)
    torch.testing.assert_close(pre.float(), ref, atol=2e-2, rtol=2e-2)
    assert LayerNorm2d(5)(x.float()).dtype == torch.float32  # no autocast: x's dtype
    model = create_model("vmamba_tiny", depths=(1, 1, 1, 1))
    assert model.patch_embed[-1].autocast_output is False
    assert model.layers[0].downsample[-1].autocast_output is False
    assert model.layers[0].blocks[0].norm.autocast_output is True


def test_official_initialisation():
    model = create_model("vmamba_tiny", depths=(1, 1, 2, 1))
    fc1 = model.layers[2].blocks[1].mlp.fc1
    # trunc_normal_(std=0.02) as timm's: truncated at +-2 absolute, i.e. practically a plain normal
    assert 0.019 < fc1.weight.std() < 0.021 and abs(fc1.weight.mean()) < 1e-3
    assert torch.count_nonzero(fc1.bias) == 0
    op = model.layers[2].blocks[1].op
    assert 0.017 < op.in_proj.weight.std() < 0.021
    assert torch.equal(op.out_norm.weight, torch.ones(384))
    assert torch.equal(op.A_logs[:, 0], torch.zeros(4 * 384))  # log(1): SS2D's S4D-real init kept
    assert op.dt_projs_bias.min() < 0  # softplus^-1 of dt in [1e-3, 0.1]: SS2D's dt init kept


def test_gradient_checkpointing_gives_the_same_gradients():
    model = create_model("vmamba_tiny", **small("vmamba_tiny"))
    x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing()
    model(x).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], msg=n)


def test_drop_path_and_constructor_checks():
    model = VSSM(depths=(1, 2, 1, 1), dims=16, drop_path_rate=0.4)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for s in model.layers for b in s.blocks]
    assert rates == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="one width per stage"):
        VSSM(depths=(1, 1), dims=[8, 16, 32])
    with pytest.raises(ValueError, match="downsample_version"):
        VSSM(depths=(1, 1), dims=8, downsample_version="v2")


@pytest.mark.parametrize("name", ["vmamba_tiny", "vmamba_tiny_v0"])
def test_torch_compile_fullgraph_matches_eager(name):
    model = create_model(name, **small(name, backend="torch")).eval()
    x = torch.randn(2, 3, 64, 96)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)


def test_batch_second_maps_are_the_default_layout_and_change_nothing():
    """Channel-first VSSM stores its stage maps batch-second by default (every 1x1 projection one matrix product):
    the blocks see batch-second maps, and the logits, the returned maps (contiguous NCHW) and every gradient equal
    those of the same weights run batch-first."""
    from mambaeye.ops._layout import is_batch_second

    kwargs = dict(depths=(1, 2), dims=8, num_classes=5, backend="torch")
    second, first = VSSM(**kwargs), VSSM(**kwargs, batch_second=False)
    assert second.batch_second and not first.batch_second
    assert not VSSM(**kwargs, channel_first=False, patchembed_version="v1", downsample_version="v1").batch_second
    first.load_state_dict(second.state_dict())
    seen = []
    for stage in second.layers:
        for block in stage.blocks:
            block.op.register_forward_pre_hook(lambda module, args: seen.append(is_batch_second(args[0])))
    x = torch.randn(3, 3, 64, 32)
    y_second, y_first = second(x), first(x)
    assert seen == [True] * 3
    torch.testing.assert_close(y_second, y_first)
    feats = second.forward_intermediates(x, intermediates_only=True)
    assert all(m.is_contiguous() for m in feats) and second.forward_features(x).is_contiguous()
    for m, m_ref in zip(feats, first.forward_intermediates(x, intermediates_only=True), strict=True):
        torch.testing.assert_close(m, m_ref)
    grads = torch.autograd.grad(y_second.square().sum(), list(second.parameters()))
    grads_ref = torch.autograd.grad(y_first.square().sum(), list(first.parameters()))
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)


def test_batch_second_needs_channel_first():
    with pytest.raises(ValueError, match="batch_second is a layout of channel-first maps"):
        VSSM(depths=(1, 1), dims=8, channel_first=False, batch_second=True)
