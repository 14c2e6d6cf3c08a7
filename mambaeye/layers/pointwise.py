"""A Linear over the channels of a channel-first map (B, C_in, *S) -> (B, C_out, *S): VMamba's ``Linear2d``.

Two routes, by how the map is stored (:mod:`mambaeye.ops._layout`):

- batch-second ((C, B, *S) memory): one matrix product ``weight @ X`` on the (C_in, B * prod(S)) view, its output
  batch-second too, and a backward of two plain matrix products (autograd's for ``torch.mm``);
- otherwise a 1x1 convolution. cuDNN converts NCHW to NHWC and back around it, yet that beat B batched matrix
  products on the (B, C, L) view on an H100 (VMamba-T inference 28 vs 36 ms of GPU time a step: with L = 49 or a
  stride-0 weight batch cuBLAS picks slow kernels; benchmarks/NOTES.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops._layout import is_batch_second

__all__ = ["pointwise_linear"]

_CONVS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def pointwise_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``y[b, o, s] = sum_c weight[o, c] x[b, c, s] + bias[o]``: x (B, C_in, *S) with 1 to 3 spatial dimensions,
    weight (C_out, C_in), bias (C_out,) or None -> (B, C_out, *S), stored batch-second when x is (see the module
    docstring). Under autocast it computes in the autocast dtype, as a Linear or a conv would."""
    if x.dim() not in (3, 4, 5):
        raise ValueError(f"pointwise_linear: x must be (B, C, *S) with 1 to 3 spatial dimensions, got {tuple(x.shape)}")
    if weight.dim() != 2 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"pointwise_linear: weight must be (C_out, C_in={x.shape[1]}), got {tuple(weight.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"pointwise_linear: bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")
    if not is_batch_second(x):
        return _CONVS[x.dim() - 2](x, weight.view(*weight.shape, *(1,) * (x.dim() - 2)), bias)
    batch, channels, *spatial = x.shape
    x2 = x.transpose(0, 1).reshape(channels, -1)  # (C_in, B * prod(S)), a view
    y2 = torch.mm(weight, x2) if bias is None else torch.addmm(bias[:, None], weight, x2)
    return y2.view(weight.shape[0], batch, *spatial).transpose(0, 1)
