"""Loss, deep supervision, sliding window, preprocessing round trips and the patch sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mambaeye.data import Geometry
from mambaeye.segment.dataset import PatchSampler, make_train_case
from mambaeye.segment.inference import predict_probabilities, sliding_window_logits
from mambaeye.segment.losses import (
    DeepSupervisionLoss,
    DiceCELoss,
    as_output_list,
    deep_supervision_weights,
    downsample_target,
)
from mambaeye.segment.preprocess import (
    Plan,
    nonzero_bbox,
    preprocess_case,
    restore_labels,
    restore_probabilities,
)


def _plan(spacing, crop=True, normalization="zscore", classes=4, dims=2) -> Plan:
    return Plan(dims, 1, classes, {"background": 0}, ["x"], list(spacing), normalization, crop)


def test_deep_supervision_weights_halve_and_drop_the_lowest():
    assert deep_supervision_weights(1) == [1.0]
    w = deep_supervision_weights(4)
    assert w == pytest.approx([1 / 1.75, 0.5 / 1.75, 0.25 / 1.75, 0.0]) and sum(w) == pytest.approx(1.0)


def test_deep_supervision_loss_is_the_weighted_sum_on_nearest_downsampled_targets():
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 1, 16, 16))
    outs = [torch.randn(2, 3, 16, 16), torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)]
    base = DiceCELoss()
    got = DeepSupervisionLoss(base, 2)(outs, target)
    t8 = target[:, :, ::2, ::2]  # nearest (floor) downsampling by 2
    t4 = target[:, :, ::4, ::4]
    assert torch.equal(downsample_target(target, (8, 8)), t8)
    want = (base(outs[0], target) * 1 + base(outs[1], t8) * 0.5) / 1.5  # weights 1, 1/2, 0
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert base(outs[2], t4).item() > 0  # the lowest output has a loss but weight 0
    # DynUNet's training stack (B, N, K, *P) reads as N full-resolution outputs
    stack = torch.randn(2, 3, 3, 16, 16)
    assert [o.shape for o in as_output_list(stack, 2)] == [(2, 3, 16, 16)] * 3


def test_dice_ce_is_near_zero_for_a_confident_correct_prediction_and_large_otherwise():
    target = torch.randint(0, 3, (2, 1, 8, 8))
    perfect = 50.0 * nn.functional.one_hot(target[:, 0], 3).movedim(-1, 1).float()
    loss = DiceCELoss()
    assert loss(perfect, target).item() < 1e-4
    wrong = 50.0 * nn.functional.one_hot((target[:, 0] + 1) % 3, 3).movedim(-1, 1).float()
    assert loss(wrong, target).item() > 10


class _Conv(nn.Module):
    def __init__(self, dims=2):
        super().__init__()
        self.conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(2, 3, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return [y, y[..., ::2, ::2]]  # deep-supervision style list: the first is used


def test_sliding_window_is_the_model_output_when_the_patch_covers_the_image():
    torch.manual_seed(0)
    model = _Conv().eval()
    image = torch.randn(2, 24, 20)
    got = sliding_window_logits(model, image, (24, 20), overlap=0.5)
    with torch.no_grad():
        want = model(image[None])[0][0]
    assert got.shape == (3, 24, 20)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # larger than the patch: stitched windows, output on the image grid; smaller: padded and cropped back
    assert sliding_window_logits(model, torch.randn(2, 50, 37), (24, 20)).shape == (3, 50, 37)
    assert sliding_window_logits(model, torch.randn(2, 10, 9), (24, 20)).shape == (3, 10, 9)


def test_mirroring_averages_flipped_predictions():
    torch.manual_seed(0)
    model = _Conv().eval()
    image = torch.randn(2, 16, 16)
    p = predict_probabilities(model, image, (16, 16), mirror=True)
    with torch.no_grad():
        soft = lambda x: torch.softmax(model(x[None])[0][0], 0)  # noqa: E731
        want = (soft(image) + soft(image.flip(1)).flip(1) + soft(image.flip(2)).flip(2)) / 3
    torch.testing.assert_close(p, want, rtol=1e-5, atol=1e-6)
    assert torch.allclose(p.sum(0), torch.ones(16, 16))


def test_preprocessing_round_trip_recovers_the_label_map():
    rng = np.random.default_rng(0)
    label = np.zeros((20, 26), np.int64)
    label[3:17, 4:23] = rng.integers(0, 4, (14, 19))
    image = np.zeros((1, 20, 26), np.float32)
    image[0, 3:17, 4:23] = rng.random((14, 19)) + 0.5  # zero outside: the crop box is [3, 17) x [4, 23)
    geom = Geometry((1.0, 1.5), (0.0, 0.0), ((1.0, 0.0), (0.0, 1.0)))
    assert nonzero_bbox(image) == ((3, 17), (4, 23))
    # target spacing (0.5, 0.5): an integer up-sampling by 2 and 3
    x, y, props = preprocess_case(image, label, geom, _plan([0.5, 0.5]))
    assert x.shape == (1, 28, 57) and y.shape == (28, 57) and props.cropped_shape == (14, 19)
    back = restore_labels(y.numpy(), props)
    assert back.shape == label.shape and np.array_equal(back, label)
    # probabilities: a one-hot map goes back to the same labels
    onehot = nn.functional.one_hot(y, 4).movedim(-1, 0).float()
    probs = restore_probabilities(onehot, props)
    assert probs.shape == (4, 20, 26) and torch.allclose(probs.sum(0), torch.ones(20, 26))
    assert torch.equal(probs[:, :3].argmax(0), torch.zeros(3, 26, dtype=torch.long))  # background outside
    # at the native spacing: z-scored inside the crop box
    x1, _, _ = preprocess_case(image, label, geom, _plan([1.0, 1.5]))
    assert x1.shape == (1, 14, 19) and abs(x1.mean().item()) < 1e-5 and x1.std(unbiased=False).item() == \
        pytest.approx(1.0, rel=1e-4)
    # without cropping and at the native spacing nothing changes
    x2, y2, props2 = preprocess_case(image, label, geom, _plan([1.0, 1.5], crop=False))
    assert np.array_equal(y2.numpy(), label) and np.array_equal(restore_labels(y2.numpy(), props2), label)


def test_ct_normalization_clips_to_foreground_percentiles():
    image = np.linspace(-1000, 1000, 100, dtype=np.float32).reshape(1, 10, 10)
    plan = _plan([1, 1], crop=False, normalization="ct")
    plan.ct_stats = [{"lo": -100.0, "hi": 300.0, "mean": 100.0, "std": 50.0}]
    x, _, _ = preprocess_case(image, None, Geometry.identity(2), plan)
    assert x.min().item() == pytest.approx(-4.0) and x.max().item() == pytest.approx(4.0)


def test_sampler_pads_small_cases_and_oversamples_foreground():
    image = torch.randn(1, 10, 40)
    label = torch.zeros(10, 40, dtype=torch.long)
    label[4:6, 30:33] = 2  # a tiny foreground far from the centre
    case = make_train_case("c", image, label)
    sampler = PatchSampler([case], (16, 16), batch_size=3, foreground_oversample=0.34)
    rng = np.random.default_rng(0)
    hits = [0, 0, 0]
    for _ in range(30):
        x, y = sampler.sample(rng)
        assert x.shape == (3, 1, 16, 16) and y.shape == (3, 1, 16, 16)
        for i in range(3):
            hits[i] += int((y[i] == 2).any())
    assert hits[2] == 30  # the last item of each batch is centred on foreground
    assert hits[0] < 30
    x, y = sampler.sample(np.random.default_rng(1))
    assert [int((x[i, 0] != 0).any(-1).sum()) for i in range(3)] == [10, 10, 10]  # 10 rows, zero-padded to 16
    assert torch.equal(y[x == 0].unique(), torch.tensor([0]))
