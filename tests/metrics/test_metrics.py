"""Dice and NSD on hand-made masks with hand-computed answers (2D and 3D, spacing, empty classes, errors).

A k x k (x k) block has as boundary every voxel but its interior; shifting it by one voxel along an axis puts
part of each boundary one voxel away from the other boundary, so NSD is a count of boundary voxels.
"""

from __future__ import annotations

import math

import pytest
import torch

from mambaeye.metrics import dice, normalized_surface_dice

pytest.importorskip("monai")


def _squares() -> tuple[torch.Tensor, torch.Tensor]:
    # 3x3 squares, target one row below pred: overlap 6 of 9 pixels
    pred = torch.zeros(1, 8, 8, dtype=torch.long)
    target = pred.clone()
    pred[0, 2:5, 2:5] = 1
    target[0, 3:6, 2:5] = 1
    return pred, target


def _cubes() -> tuple[torch.Tensor, torch.Tensor]:
    # 3x3x3 cubes, target one slice further along axis 0: overlap 18 of 27 voxels
    pred = torch.zeros(1, 8, 8, 8, dtype=torch.int32)
    target = pred.clone()
    pred[0, 2:5, 2:5, 2:5] = 1
    target[0, 3:6, 2:5, 2:5] = 1
    return pred, target


def test_dice_shifted_square():
    pred, target = _squares()
    got = dice(pred, target, num_classes=2)
    assert got.shape == (1, 1) and got.dtype == torch.float32
    assert got.item() == pytest.approx(2 * 6 / (9 + 9))
    # background: 64 - 9 pixels each, 64 - 12 shared
    got_bg = dice(pred, target, num_classes=2, include_background=True)
    assert got_bg[0, 0].item() == pytest.approx(2 * 52 / (55 + 55))


def test_dice_matches_monai_on_random_maps():
    from monai.metrics import compute_dice

    pred = torch.randint(0, 4, (3, 9, 11))
    target = torch.randint(0, 4, (3, 9, 11))
    oh = lambda x: torch.nn.functional.one_hot(x, 4).movedim(-1, 1).float()  # noqa: E731
    ref = compute_dice(oh(pred), oh(target), include_background=False)
    torch.testing.assert_close(dice(pred, target, 4), ref.float())


@pytest.mark.parametrize(
    "tolerance, expected",
    # 8 boundary pixels each; tolerance below the 1 mm shift: 4 + 4 lie on the other boundary -> 8/16;
    # at or above it every boundary pixel is within tolerance
    [(0.0, 0.5), (0.5, 0.5), (0.99, 0.5), (1.0, 1.0), (1.5, 1.0)],
    ids=["tol0", "tol0.5", "tol0.99", "tol1", "tol1.5"],
)
def test_nsd_shifted_square_tolerance(tolerance, expected):
    pred, target = _squares()
    got = normalized_surface_dice(pred, target, num_classes=2, tolerance=tolerance)
    assert got.shape == (1, 1)
    assert got.item() == pytest.approx(expected)


def test_nsd_anisotropic_spacing():
    pred, target = _squares()
    # rows 2 mm apart: the three shifted-edge pixels per side are 2 mm off, the other 5 within 1 mm -> 10/16
    got = normalized_surface_dice(pred, target, 2, tolerance=1.0, spacing=(2.0, 1.0))
    assert got.item() == pytest.approx(10 / 16)
    # rows 0.5 mm apart: a 0.5 mm tolerance now covers the shift
    got = normalized_surface_dice(pred, target, 2, tolerance=0.5, spacing=(0.5, 1.0))
    assert got.item() == pytest.approx(1.0)
    # 0.25 mm columns: the shifted edge stays 1 mm off, but the pixel where the other square's centre sits is
    # now 0.25 mm from its neighbour on the other boundary -> 5 + 5 of 16
    got = normalized_surface_dice(pred, target, 2, tolerance=0.5, spacing=(1.0, 0.25))
    assert got.item() == pytest.approx(10 / 16)
    # per-sample spacing in a batch of two
    pred2, target2 = pred.repeat(2, 1, 1), target.repeat(2, 1, 1)
    got = normalized_surface_dice(pred2, target2, 2, tolerance=1.0, spacing=[(1.0, 1.0), (2.0, 1.0)])
    torch.testing.assert_close(got, torch.tensor([[1.0], [10 / 16]]))


def test_metrics_3d_shifted_cube():
    pred, target = _cubes()
    assert dice(pred, target, 2).item() == pytest.approx(2 * 18 / 54)
    # 26 boundary voxels each; 16 of them lie on the other boundary (the shared slabs minus the two centres)
    got = normalized_surface_dice(pred, target, 2, tolerance=0.5)
    assert got.item() == pytest.approx(32 / 52)
    assert normalized_surface_dice(pred, target, 2, tolerance=1.0).item() == pytest.approx(1.0)
    # 2 mm slices: the 9-voxel end face is 2 mm off, the other centre-adjacent voxel 1 mm -> 17/26
    got = normalized_surface_dice(pred, target, 2, tolerance=1.0, spacing=(2.0, 1.0, 1.0))
    assert got.item() == pytest.approx(17 / 26)


def test_empty_class_conventions():
    pred, target = _squares()
    # class 2 in neither map, class 3 only in pred
    pred[0, 7, 7] = 3
    d = dice(pred, target, num_classes=4)
    n = normalized_surface_dice(pred, target, num_classes=4, tolerance=1.0)
    torch.testing.assert_close(d, torch.tensor([[2 * 6 / 18, 1.0, 0.0]]))
    torch.testing.assert_close(n, torch.tensor([[1.0, 1.0, 0.0]]))
    # and the other way round: a class only in the target scores 0 as well
    d_rev = dice(target, pred, 4)
    n_rev = normalized_surface_dice(target, pred, 4, tolerance=1.0)
    assert d_rev[0, 2].item() == 0.0 and n_rev[0, 2].item() == 0.0
    # nnU-Net v2 style: NaN for both-empty, nanmean over the classes
    d_nan = dice(pred, target, 4, empty_value=math.nan)
    n_nan = normalized_surface_dice(pred, target, 4, tolerance=1.0, empty_value=math.nan)
    assert torch.isnan(d_nan[0, 1]) and torch.isnan(n_nan[0, 1])
    assert torch.nanmean(d_nan).item() == pytest.approx((2 / 3 + 0.0) / 2)
    # all-background maps: every foreground class is empty
    zeros = torch.zeros(2, 5, 5, 5, dtype=torch.uint8)
    torch.testing.assert_close(dice(zeros, zeros, 3), torch.ones(2, 2))
    torch.testing.assert_close(normalized_surface_dice(zeros, zeros, 3, 2.0), torch.ones(2, 2))


def test_errors():
    pred, target = _squares()
    with pytest.raises(TypeError, match="integer label map"):
        dice(pred.float(), target, 2)
    with pytest.raises(TypeError, match="integer label map"):
        normalized_surface_dice(pred, target.bool(), 2, 1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        dice(pred, target[:, :7], 2)
    with pytest.raises(ValueError, match=r"\(B, H, W\) or \(B, D, H, W\)"):
        dice(pred[0], target[0], 2)
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        dice(pred * 2, target, 2)
    with pytest.raises(ValueError, match="outside"):
        dice(pred - 1, target, 2)
    with pytest.raises(ValueError, match="num_classes"):
        dice(pred, target, 0)
    with pytest.raises(ValueError, match="spacing"):
        normalized_surface_dice(pred, target, 2, 1.0, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        normalized_surface_dice(pred, target, 2, 1.0, spacing=(0.0, 1.0))
    with pytest.raises(ValueError, match="tolerance"):
        normalized_surface_dice(pred, target, 3, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="tolerance"):
        normalized_surface_dice(pred, target, 2, -1.0)
