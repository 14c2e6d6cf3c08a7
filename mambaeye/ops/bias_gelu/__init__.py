"""GELU(x + bias) over dim 1 of a channel-first x (B, C, *S): an MLP's first bias and activation in one pass.

    y[b, c, s] = gelu(x[b, c, s] + bias[c]),   gelu(v) = v * Phi(v)  (exact, erf: nn.GELU's default)
    dx = dy * gelu'(x + bias),   dbias[c] = sum_{b, s} dx[b, c, s],   gelu'(v) = Phi(v) + v * phi(v)

VMamba's channel-first MLP runs ``fc1`` as a 1x1 convolution: cuDNN does not fuse the bias there, so PyTorch adds
it in a separate broadcast pass (on an H100 the largest single item of VMamba-T's inference, 3.7 ms of 28 a step at
batch 128), and GELU is one more pass. The ``triton`` backend reads x once and writes y once; its backward reads x
and dy once, writes dx and sums dbias from one partial a program. Computed in float32 (float64 for float64 x),
output in x's dtype, also under autocast.

Backends take the selective scan's names: "auto" (triton for CUDA tensors when Triton imports, else torch),
"triton" (CUDA, or CPU under TRITON_INTERPRET=1), "torch" / "naive" (the reference, autograd gradients). The
triton path is a ``torch.library`` custom op (fake implementation and autograd formula registered), so
``torch.compile(fullgraph=True)`` traces it; eager calls go through an autograd.Function over the same launchers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..layer_norm import _DTYPES, _as_bcl, _autocast_off, _compute_dtype
from ..selective_scan import _resolve_backend, _through_custom_op

__all__ = ["bias_gelu_channel_first", "bias_gelu_channel_first_ref"]


def bias_gelu_channel_first_ref(x: Tensor, bias: Tensor) -> Tensor:
    """The definition in PyTorch: x (B, C, *S), bias (C,) -> gelu(x + bias) in x's dtype, computed in float32
    (float64 for float64 x) with autocast off."""
    cdt = _compute_dtype(x.dtype)
    with _autocast_off(x):
        y = F.gelu(x.to(cdt) + bias.to(cdt).view(-1, *(1,) * (x.dim() - 2)))
    return y.to(x.dtype)


# torch.library registration: x (B, C, L) with L contiguous, bias contiguous (C,).
@torch.library.custom_op("mambaeye::bias_gelu_channel_first_fwd", mutates_args=())
def _fwd(x: Tensor, bias: Tensor) -> Tensor:
    from .triton_bias_gelu import bias_gelu_fwd

    return bias_gelu_fwd(x, bias)


@_fwd.register_fake
def _fwd_fake(x, bias):
    return torch.empty_like(x)


@torch.library.custom_op("mambaeye::bias_gelu_channel_first_bwd", mutates_args=())
def _bwd(dy: Tensor, x: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    from .triton_bias_gelu import bias_gelu_bwd

    return bias_gelu_bwd(dy, x, bias)


@_bwd.register_fake
def _bwd_fake(dy, x, bias):
    return torch.empty_like(x), torch.empty_like(bias)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, dy, bwd=None):
    """``bwd``: the custom op (default, what torch.compile traces) or the kernels' launcher (eager)."""
    x, bias = ctx.saved_tensors
    if dy.stride(-1) != 1 and dy.shape[-1] > 1:
        dy = dy.contiguous()
    return (bwd or _bwd)(dy, x, bias)


_fwd.register_autograd(_backward, setup_context=_setup_context)


class _BiasGeluFunction(torch.autograd.Function):
    """Eager path without the dispatcher's per-call host cost (see selective_scan's _ScanFunction)."""

    @staticmethod
    def forward(ctx, x, bias):
        from .triton_bias_gelu import bias_gelu_fwd

        y = bias_gelu_fwd(x, bias)
        _setup_context(ctx, (x, bias), y)
        return y

    @staticmethod
    def backward(ctx, dy):
        from .triton_bias_gelu import bias_gelu_bwd

        return _backward(ctx, dy, bwd=bias_gelu_bwd)


def _check_inputs(x, bias) -> None:
    """Raise a TypeError/ValueError that names the offending argument and what was expected."""
    for name, t in (("x", x), ("bias", bias)):
        if not isinstance(t, Tensor):
            raise TypeError(f"bias_gelu_channel_first: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _DTYPES:
            raise TypeError(f"bias_gelu_channel_first: {name} must be float64, float32, float16 or bfloat16, "
                            f"got {t.dtype}")
    if x.dim() < 2:
        raise ValueError(f"bias_gelu_channel_first: expected x of shape (B, C, *spatial), got {tuple(x.shape)}")
    if bias.shape != (x.shape[1],):
        raise ValueError(f"bias_gelu_channel_first: bias must be ({x.shape[1]},) for x with {x.shape[1]} channels, "
                         f"got {tuple(bias.shape)}")
    if bias.device != x.device:
        raise ValueError(f"bias_gelu_channel_first: bias is on {bias.device} but x is on {x.device}")


def bias_gelu_channel_first(x: Tensor, bias: Tensor, backend: str = "auto") -> Tensor:
    """gelu(x + bias) over dim 1 of x (B, C, *S) (any number of spatial dimensions, none included).

    x float64/float32/float16/bfloat16, bias (C,) in any of those dtypes; returns (B, C, *S) in x's dtype, also
    under autocast (arithmetic in float32, float64 for float64 x). The triton backend reads x in place when its
    spatial dimensions are contiguous (batch and channel strides are free), else copies it first (e.g.
    channels_last storage). ``backend``: "auto", "triton", "torch" or "naive" (see the module docstring).
    """
    _check_inputs(x, bias)
    if _resolve_backend(backend, x) != "triton" or x.numel() == 0:
        return bias_gelu_channel_first_ref(x, bias)
    x3 = _as_bcl(x)
    op = _fwd if _through_custom_op(x3) else _BiasGeluFunction.apply
    return op(x3, bias.contiguous()).view(x.shape)
