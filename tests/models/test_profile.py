"""FLOPs counted as the official repositories count them, against the published numbers; the per-stage table."""

from __future__ import annotations

import pytest
import torch

from mambaeye.models import count_flops, create_model, profile
from mambaeye.ops.selective_scan import available_backends, selective_scan

from ._small import OFFICIAL_PARAMS, PUBLISHED_GFLOPS


@pytest.mark.parametrize("name", sorted(PUBLISHED_GFLOPS))
def test_vmamba_flops_match_the_published_numbers(name):
    result = profile(name, img_size=224)
    assert result.flops / 1e9 == pytest.approx(PUBLISHED_GFLOPS[name], rel=0.01)
    assert result.params == OFFICIAL_PARAMS[name]
    assert sum(s.flops for s in result.stages) == result.flops
    assert sum(s.params for s in result.stages) == result.params


def test_counting_rules():
    # multiply-adds for matrix products and convolutions, biases free; 5 per element for an affine LayerNorm
    assert count_flops(torch.nn.Linear(10, 20), torch.zeros(3, 10)) == 3 * 10 * 20
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, groups=2)
    assert count_flops(conv, torch.zeros(1, 4, 5, 5)) == 6 * 5 * 5 * 2 * 9
    assert count_flops(torch.nn.LayerNorm(8), torch.zeros(2, 8)) == 5 * 16

    class Scan(torch.nn.Module):
        def forward(self, u):
            A = -torch.ones(u.shape[1], 4)
            Bc = torch.zeros(u.shape[0], 4, u.shape[2])
            return selective_scan(u, u, A, Bc, Bc, D=torch.ones(u.shape[1]), z=u, backend="torch")

    b, d, length, n = 2, 3, 5, 4
    assert count_flops(Scan(), torch.zeros(b, d, length)) == 9 * b * d * length * n + 2 * b * d * length


def test_vim_profile_and_table():
    small = profile("vim_tiny", img_size=224)
    assert small.params == OFFICIAL_PARAMS["vim_tiny"]
    assert small.output_shape == (1, 1000) and small.activation_bytes > 0
    # 24 identical blocks; the scan: 2 directions x 9 * D * L * N with D = 384, L = 197, N = 16, + D and z terms
    assert small.scan_flops == 24 * 2 * (9 * 384 * 197 * 16 + 2 * 384 * 197)
    table = small.table()
    assert "layers.0-23 (24x)" in table and "7,148,008" in table
    big = profile("vim_tiny", img_size=448)
    assert big.flops > 3.8 * small.flops and big.activation_bytes > 3.8 * small.activation_bytes  # 4x tokens


def test_profile_of_a_model_with_weights_leaves_it_untouched():
    model = create_model("vmamba_tiny_v0", depths=(1, 1, 1, 1), backend="naive")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = profile(model, img_size=(64, 96))
    assert result.scan_flops > 0  # counted although the model's own backend is "naive"
    assert result.stages[1].output_shape == (1, 8, 12, 192)  # v0 works channel-last
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model.layers[0].blocks[0].op.backend == "naive" and model.training


def test_profile_by_name_passes_in_chans_and_counts_every_deep_supervision_head():
    kwargs = dict(num_classes=14, spatial_dims=2, n_stages=4)
    result = profile("umamba_bot", img_size=64, in_chans=1, **kwargs)
    direct = create_model("umamba_bot", in_chans=1, **kwargs)
    assert result.input_shape == (1, 1, 64, 64)
    assert result.params == sum(p.numel() for p in direct.parameters())
    assert result.flops > 0 and result.scan_flops > 0
    assert result.output_shape == (1, 14, 64, 64)
    assert result.output_shapes == [(1, 14, 64, 64), (1, 14, 32, 32), (1, 14, 16, 16)]
    single = profile("umamba_bot", img_size=64, in_chans=1, deep_supervision=False, **kwargs)
    assert single.output_shapes == [(1, 14, 64, 64)] and single.params == result.params
    # the two extra 1x1 heads (on 128 channels at 16x16, 64 channels at 32x32) are counted
    assert result.flops - single.flops == 14 * (128 * 16 * 16 + 64 * 32 * 32)
    assert "1x14x64x64" in result.table()


def test_profile_3d_int_img_size_means_every_axis():
    result = profile("umamba_bot", img_size=32, in_chans=2, num_classes=3, spatial_dims=3, n_stages=3)
    assert result.input_shape == (1, 2, 32, 32, 32)
    assert result.output_shapes == [(1, 3, 32, 32, 32), (1, 3, 16, 16, 16)]


@pytest.mark.skipif("triton" not in available_backends("cpu"),
                    reason="needs triton under TRITON_INTERPRET=1")
def test_fused_kernels_count_as_the_operations_they_replace():
    """SS2D through the triton kernels (fused cross-scan, dt projection, conv + SiLU: custom ops, some registered
    only when first used) counts what the PyTorch composition counts."""
    from mambaeye.layers import SS2D

    x = torch.randn(1, 16, 6, 7).half()
    counts = {}
    for backend in ("torch", "triton"):
        torch.manual_seed(0)
        counts[backend] = count_flops(SS2D(16, d_state=1, channel_first=True, backend=backend).half(), x)
    assert counts["triton"] == counts["torch"] > 0
