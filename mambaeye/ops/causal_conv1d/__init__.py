"""Depthwise causal conv1d with an optional SiLU: the short convolution in front of every Mamba scan.

    y[b, d, l] = act(bias[d] + sum_j weight[d, K-1-j] * x[b, d, l - j])     (causal, j = 0..K-1)
    y[b, d, l] = act(bias[d] + sum_j weight[d, K-1-j] * x[b, d, l + j])     (reverse: anti-causal)

The causal form is ``F.conv1d(x, weight, bias, padding=K-1, groups=D)[..., :L]`` (mamba-ssm's ``causal_conv1d_fn``
and the ``torch`` path below); ``reverse=True`` is the same conv applied to the flipped sequence and flipped back,
which is what Vim's backward branch computes, without flipping anything.

The ``triton`` backend reads x in place whatever its batch/channel strides (L must be the contiguous dimension)
and writes y in x's layout when x is dense, so the channel-major (D, B, L) activations of the Mamba layers are
never copied; PyTorch's depthwise conv1d would make them contiguous first and runs a generic kernel (about 8x
slower than memory speed on an H100 at Vim's shapes, benchmarks/profile_models.py). Its backward recomputes the
pre-activation and reduces dweight/dbias with fp32 atomics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..selective_scan import _resolve_backend, _through_custom_op

__all__ = ["causal_conv1d", "causal_conv1d_ref"]

_ACTIVATIONS = (None, "silu")


def causal_conv1d_ref(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None,
                      reverse: bool = False) -> Tensor:
    """The definition in PyTorch: x (B, D, L), weight (D, K), bias (D,) -> (B, D, L)."""
    width = weight.shape[-1]
    w = weight.reshape(weight.shape[0], 1, width)
    if reverse:
        y = F.conv1d(x, w.flip(-1), bias, padding=width - 1, groups=x.shape[1])[..., width - 1:]
    else:
        y = F.conv1d(x, w, bias, padding=width - 1, groups=x.shape[1])[..., : x.shape[-1]]
    return F.silu(y) if activation == "silu" else y


@torch.library.custom_op("mambaeye::causal_conv1d_fwd", mutates_args=())
def _conv_fwd(x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool, reverse: bool) -> Tensor:
    from .triton_conv import conv_fwd

    return conv_fwd(x, weight, bias, silu, reverse)


@_conv_fwd.register_fake
def _conv_fwd_fake(x, weight, bias, silu, reverse):
    return torch.empty_like(x)


@torch.library.custom_op("mambaeye::causal_conv1d_bwd", mutates_args=())
def _conv_bwd(dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool,
              reverse: bool) -> tuple[Tensor, Tensor, Tensor]:
    from .triton_conv import conv_bwd

    dx, dw, db = conv_bwd(dy, x, weight, bias, silu, reverse)
    return dx, dw, db if db is not None else weight.new_empty(0)  # custom ops cannot return None


@_conv_bwd.register_fake
def _conv_bwd_fake(dy, x, weight, bias, silu, reverse):
    return torch.empty_like(x), torch.empty_like(weight), (torch.empty_like(bias) if bias is not None
                                                           else weight.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, weight, bias, silu, reverse = inputs
    ctx.silu, ctx.reverse, ctx.has_bias = silu, reverse, bias is not None
    ctx.save_for_backward(x, weight, bias)


def _backward(ctx, dy, bwd=None):
    """``bwd``: the custom op (default, what torch.compile traces) or the kernels' launcher (eager)."""
    x, weight, bias = ctx.saved_tensors
    if dy.stride(-1) != 1:
        dy = dy.contiguous()
    dx, dw, db = (bwd or _conv_bwd)(dy, x, weight, bias, ctx.silu, ctx.reverse)
    return dx, dw, db if ctx.has_bias else None, None, None


_conv_fwd.register_autograd(_backward, setup_context=_setup_context)


class _ConvFunction(torch.autograd.Function):
    """Eager path without the dispatcher's per-call host cost (see selective_scan's _ScanFunction)."""

    @staticmethod
    def forward(ctx, x, weight, bias, silu, reverse):
        from .triton_conv import conv_fwd

        _setup_context(ctx, (x, weight, bias, silu, reverse), None)
        return conv_fwd(x, weight, bias, silu, reverse)

    @staticmethod
    def backward(ctx, dy):
        from .triton_conv import conv_bwd

        return _backward(ctx, dy, bwd=conv_bwd)


def causal_conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None,
                  reverse: bool = False, backend: str = "auto") -> Tensor:
    """Depthwise causal (or, with ``reverse``, anti-causal) conv1d, then ``activation`` (None or "silu").

    x: (B, D, L) float64/float32/float16/bfloat16 (accumulated in float32, or float64); weight (D, K) or (D, 1, K) as
    nn.Conv1d stores it; bias (D,) or None. Returns (B, D, L) in x's dtype. ``backend`` takes the selective
    scan's names, so a layer passes its one setting to both: "auto" (triton for CUDA tensors when Triton
    imports, else torch), "triton", or "torch" / "naive" (both PyTorch's conv1d, :func:`causal_conv1d_ref`).
    """
    if x.dim() != 3:
        raise ValueError(f"causal_conv1d: x must be (batch, dim, length), got shape {tuple(x.shape)}")
    dim = x.shape[1]
    if weight.dim() == 3:
        if weight.shape[1] != 1:
            raise ValueError(f"causal_conv1d: a depthwise weight is (dim, 1, width), got {tuple(weight.shape)}")
        weight = weight[:, 0]
    if weight.dim() != 2 or weight.shape[0] != dim:
        raise ValueError(f"causal_conv1d: weight must be ({dim}, width) for x with {dim} channels, "
                         f"got {tuple(weight.shape)}")
    if bias is not None and bias.shape != (dim,):
        raise ValueError(f"causal_conv1d: bias must be ({dim},), got {tuple(bias.shape)}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"causal_conv1d: activation must be one of {_ACTIVATIONS}, got {activation!r}")
    if _resolve_backend(backend, x) != "triton":
        return causal_conv1d_ref(x, weight, bias, activation, reverse)
    if x.stride(-1) != 1 and x.shape[-1] > 1:
        x = x.contiguous()
    conv = _conv_fwd if _through_custom_op(x) else _ConvFunction.apply
    return conv(x, weight.contiguous(), bias.contiguous() if bias is not None else None, activation == "silu",
                bool(reverse))
