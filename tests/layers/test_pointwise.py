"""The batch-second layout helpers (mambaeye.ops._layout) and pointwise_linear: the matrix-product route on
batch-second maps against the 1x1 conv on batch-first ones, forward, gradients and layouts; errors name the problem."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mambaeye.layers.pointwise import pointwise_linear
from mambaeye.ops._layout import empty_like, is_batch_second, to_batch_second


def test_layout_helpers():
    x = torch.randn(3, 4, 5, 6)
    assert not is_batch_second(x)
    y = to_batch_second(x)
    assert is_batch_second(y) and y.shape == x.shape and torch.equal(y, x)
    assert y.stride() == (30, 90, 6, 1)
    assert to_batch_second(y) is y
    assert is_batch_second(x[:1])  # one image: batch-first and batch-second at once
    empty = empty_like(torch.empty(3, 4, 5), torch.float16, batch_second=True)
    assert empty.shape == (3, 4, 5) and empty.dtype == torch.float16 and is_batch_second(empty)
    assert not is_batch_second(y[:, :, :, :3])  # rows cut: no longer one contiguous (C, B * L) block


@pytest.mark.parametrize("spatial", [(5,), (4, 6), (2, 3, 4)], ids=["1d", "2d", "3d"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_batch_second_matches_the_conv_route(spatial, with_bias):
    """One matrix product on a batch-second map gives the 1x1 conv's result on the batch-first one, stored
    batch-second; the gradients of x, weight and bias agree too (x's in x's layout)."""
    weight = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, dtype=torch.float64, requires_grad=True) if with_bias else None
    x = torch.randn(3, 4, *spatial, dtype=torch.float64)
    x_first = x.clone().requires_grad_(True)
    x_second = to_batch_second(x).requires_grad_(True)
    y_first, y_second = pointwise_linear(x_first, weight, bias), pointwise_linear(x_second, weight, bias)
    assert not is_batch_second(y_first) and is_batch_second(y_second)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(spatial)]
    expected = conv(x, weight.detach().view(7, 4, *(1,) * len(spatial)), bias.detach() if with_bias else None)
    torch.testing.assert_close(y_first, expected)
    torch.testing.assert_close(y_second, expected)
    params = [weight] + ([bias] if with_bias else [])
    dy = torch.randn_like(expected)
    g_first = torch.autograd.grad(y_first, [x_first, *params], dy)
    g_second = torch.autograd.grad(y_second, [x_second, *params], to_batch_second(dy))
    for a, b in zip(g_first, g_second, strict=True):
        torch.testing.assert_close(a, b)
    assert is_batch_second(g_second[0])


def test_autocast_runs_in_the_autocast_dtype():
    x = to_batch_second(torch.randn(2, 4, 3, 3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = pointwise_linear(x, torch.randn(5, 4), torch.randn(5))
    assert y.dtype == torch.bfloat16 and is_batch_second(y)


@pytest.mark.parametrize("x, weight, bias, match", [
    (torch.randn(2, 4), torch.randn(5, 4), None, r"x must be \(B, C, \*S\) with 1 to 3 spatial dimensions"),
    (torch.randn(2, 4, 3, 3), torch.randn(5, 3), None, r"weight must be \(C_out, C_in=4\)"),
    (torch.randn(2, 4, 3, 3), torch.randn(5, 4, 1, 1), None, r"weight must be \(C_out, C_in=4\)"),
    (torch.randn(2, 4, 3, 3), torch.randn(5, 4), torch.randn(4), r"bias must be \(5,\)"),
])
def test_bad_arguments_name_the_problem(x, weight, bias, match):
    with pytest.raises(ValueError, match=match):
        pointwise_linear(x, weight, bias)
