"""Vim: forward/backward of every variant, any stride-tiled size, middle class token, the official block
order, initialisation, dense features, gradient checkpointing, torch.compile."""

from __future__ import annotations

import math

import pytest
import torch

from mambaeye.layers import bimamba
from mambaeye.models import Vim, create_model
from mambaeye.models.vim import resample_pos_embed
from mambaeye.ops import available_backends

from ._small import VIM, small


def _grads_ok(model: torch.nn.Module) -> list[str]:
    """Names of parameters without a finite, non-zero-everywhere gradient."""
    bad = []
    for name, p in model.named_parameters():
        if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0:
            bad.append(name)
    return bad


@pytest.mark.parametrize("name", VIM)
def test_forward_backward_every_parameter_gets_a_gradient(name):
    model = create_model(name, **small(name))
    stride = 8 if name.endswith("_s8") else 16
    x = torch.randn(2, 3, 32, 48 if stride == 16 else 40)  # non-square, not the native 32x32
    out = model(x)
    assert out.shape == (2, 7)
    out.square().sum().backward()
    assert _grads_ok(model) == []


def test_two_resolutions_and_the_class_token_in_the_middle():
    model = create_model("vim_tiny", **small("vim_tiny", img_size=64)).eval()
    for size, tokens in (((64, 64), 16), ((48, 96), 18)):
        feats = model.forward_features(torch.randn(2, 3, *size))
        assert feats.shape == (2, tokens + 1, 192)
        assert model(torch.randn(1, 3, *size)).shape == (1, 7)
    # forward_head reads token N // 2 (N patches), where the class token was inserted
    tokens = torch.zeros(1, 19, 192)
    tokens[0, 9] = 1.0
    assert torch.equal(model.forward_head(tokens, pre_logits=True), tokens[:, 9])


def test_sizes_the_stride_does_not_tile_are_refused():
    model = create_model("vim_tiny", **small("vim_tiny"))
    with pytest.raises(ValueError, match="does not fit patch 16 / stride 16.*e.g. 64 or 80"):
        model(torch.randn(1, 3, 70, 64))
    s8 = create_model("vim_tiny_s8", **small("vim_tiny_s8"))
    assert s8(torch.randn(1, 3, 24, 40)).shape == (1, 7)  # (24 - 16) / 8 + 1 = 2 rows, 4 columns
    with pytest.raises(ValueError, match="need size >= 16"):
        s8(torch.randn(1, 3, 8, 40))
    with pytest.raises(ValueError, match=r"expected images \(B, 3, H, W\)"):
        s8(torch.randn(1, 1, 32, 32))


def test_pos_embed_resampling_keeps_the_class_entry_in_the_middle():
    pos = torch.randn(1, 4 * 4 + 1, 8)
    assert resample_pos_embed(pos, (4, 4), (4, 4)) is pos
    out = resample_pos_embed(pos, (4, 4), (3, 5))
    assert out.shape == (1, 16, 8)
    assert torch.equal(out[:, 15 // 2], pos[:, 16 // 2])
    constant = torch.ones(1, 17, 8)
    torch.testing.assert_close(resample_pos_embed(constant, (4, 4), (6, 2)), torch.ones(1, 13, 8))
    with pytest.raises(ValueError, match="expected 9 patches"):
        resample_pos_embed(pos, (3, 3), (4, 4))


def _official_forward(model: Vim, x: torch.Tensor) -> torch.Tensor:
    """hustvl/Vim's loop, unfused: Block(hidden, residual) = Add -> norm -> mixer, then the final add + norm_f,
    head on token M // 2 (eval mode: drop path is the identity)."""
    x, _ = model.patch_embed(x)
    m = x.shape[1]
    x = torch.cat((x[:, :m // 2], model.cls_token.expand(x.shape[0], -1, -1), x[:, m // 2:]), dim=1)
    hidden, residual = x + model.pos_embed, None
    for layer in model.layers:
        residual = hidden if residual is None else residual + hidden
        hidden = layer.norm(residual)
        residual = residual.float()
        hidden = layer.mixer(hidden)
    hidden = model.norm_f(residual + hidden)
    return model.head(hidden[:, m // 2])


def test_matches_the_official_block_order():
    model = create_model("vim_tiny", **small("vim_tiny", depth=3)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _official_forward(model, x), rtol=1e-5, atol=1e-5)


def test_official_initialisation():
    model = create_model("vim_tiny", depth=4, img_size=32)
    mixer = model.layers[1].mixer
    assert torch.count_nonzero(mixer.dt_proj_b.bias) == 0  # zeroed by Vim's _init_weights
    assert torch.count_nonzero(mixer.dt_proj.bias) == mixer.d_inner  # tagged _no_reinit: Mamba's dt init kept
    assert torch.count_nonzero(model.head.bias) == 0 and torch.count_nonzero(model.patch_embed.proj.bias) == 0
    # out_proj: kaiming-uniform(a=sqrt 5) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)), divided by sqrt(depth)
    bound = 1 / math.sqrt(mixer.d_inner) / math.sqrt(4)
    assert mixer.out_proj.weight.abs().max() <= bound and mixer.out_proj.weight.abs().max() > 0.9 * bound
    assert 0.015 < model.pos_embed.std() < 0.025
    assert model.no_weight_decay() == {"pos_embed", "cls_token"}


def test_forward_intermediates_and_features_only():
    model = create_model("vim_small_s8", **small("vim_small_s8", depth=4, img_size=48)).eval()
    x = torch.randn(2, 3, 48, 64)  # (48-16)/8+1 = 5 rows, 7 columns
    final, maps = model.forward_intermediates(x)
    assert [m.shape for m in maps] == [(2, 384, 5, 7)] * 4  # default: the last block of each quarter
    torch.testing.assert_close(final, model.forward_features(x))
    # the map after the last block is the residual stream (before norm_f) without the class token
    nlc = model.forward_intermediates(x, indices=[-1], output_fmt="NLC", intermediates_only=True)[0]
    assert nlc.shape == (2, 35, 384)
    torch.testing.assert_close(nlc.transpose(1, 2).reshape(2, 384, 5, 7), maps[-1])

    feats = create_model("vim_tiny", features_only=True, out_indices=(0, 2), **small("vim_tiny", depth=4))
    assert feats.feature_info.channels() == [192, 192] and feats.feature_info.reduction() == [16, 16]
    assert len(feats.model.layers) == 3 and feats.model.num_classes == 0
    out = feats(torch.randn(1, 3, 64, 32))
    assert [o.shape for o in out] == [(1, 192, 4, 2)] * 2
    sum(o.sum() for o in out).backward()
    assert _grads_ok(feats) == []


def test_reset_classifier_and_global_pool():
    model = create_model("vim_tiny", **small("vim_tiny"))
    model.reset_classifier(3, global_pool="avg")
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 192)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(3, global_pool="max")


def test_gradient_checkpointing_gives_the_same_gradients():
    model = create_model("vim_tiny", **small("vim_tiny"))
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing()
    model(x).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], msg=n)


def test_drop_path_is_linear_over_the_blocks():
    model = create_model("vim_tiny", depth=5, img_size=32, drop_path_rate=0.2)
    assert [getattr(b.drop_path, "drop_prob", 0.0) for b in model.layers] == pytest.approx([0, 0.05, 0.1, 0.15, 0.2])


def test_torch_compile_fullgraph_matches_eager():
    model = create_model("vim_tiny", **small("vim_tiny", backend="torch")).eval()
    x = torch.randn(2, 3, 32, 48)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif("triton" not in available_backends("cpu"),
                    reason="needs triton and its interpreter (TRITON_INTERPRET=1, set without a GPU)")
def test_tokens_padded_for_the_triton_scan_change_nothing(monkeypatch):
    """With ALIGN_MIN_LENGTH lowered, Vim pads its 17 tokens to 24 for all blocks (triton backend): the same logits,
    features, intermediates and gradients as unpadded."""
    model = Vim(img_size=32, embed_dim=8, depth=2, d_state=4, num_classes=7, backend="triton").double()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)  # 16 patches + the class token
    results = []
    for min_length in (10**9, 0):
        monkeypatch.setattr(bimamba, "ALIGN_MIN_LENGTH", min_length)
        assert model._pad_tokens(torch.zeros(1, 17, 4)).shape[1] == (17 if min_length else 24)
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        with torch.no_grad():
            final, maps = model.forward_intermediates(x, indices=[0, 1], output_fmt="NLC")
        results.append((out.detach(), final, maps,
                        {n: p.grad.clone() for n, p in model.named_parameters()}))
    (out0, final0, maps0, g0), (out1, final1, maps1, g1) = results
    torch.testing.assert_close(out1, out0, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(final1, final0, rtol=1e-9, atol=1e-11)
    assert final1.shape == (2, 17, model.embed_dim)
    for m1, m0 in zip(maps1, maps0, strict=True):
        torch.testing.assert_close(m1, m0, rtol=1e-9, atol=1e-11)
    for n, g in g0.items():
        torch.testing.assert_close(g1[n], g, rtol=1e-8, atol=1e-10, msg=n)
