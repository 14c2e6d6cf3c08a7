"""LayerNorm over the channels (dim 1) of a channel-first tensor x (B, C, *S), in x's dtype.

    mean[b, s] = 1/C sum_c x[b, c, s]          var[b, s] = 1/C sum_c (x[b, c, s] - mean[b, s])^2    (biased)
    y[b, c, s] = (x[b, c, s] - mean[b, s]) / sqrt(var[b, s] + eps) * weight[c] + bias[c]

The definition is PyTorch's ``F.layer_norm`` over the last dimension of the channel-last view,
``F.layer_norm(x.movedim(1, -1).float(), (C,), weight, bias, eps).movedim(-1, 1).to(x.dtype)``
(:func:`layer_norm_channel_first_ref`): statistics and arithmetic in float32 (float64 for float64 x), output in
x's dtype whatever the parameters' dtype (bf16 x with fp32 weight gives bf16 y). Under ``torch.autocast`` the op
is not upcast: y keeps x's dtype with either backend.

VMamba normalises its (B, C, H, W) activations with ``F.layer_norm(x.permute(0, 2, 3, 1), ...)``; under bf16
autocast that converts to fp32, copies to contiguous and writes fp32 outputs. The ``triton`` backend reads x once
(any batch/channel strides, so channel slices are not copied) and writes y once in x's dtype; its backward reads
x and dy once, recomputes xhat from the saved (B, L) mean and rstd and reduces dweight/dbias through per-program
partial sums (deterministic, no atomics).

    dx = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat)),  g = weight * dy,  xhat = (x - mean) * rstd
    dweight = sum_{b, s} dy * xhat,  dbias = sum_{b, s} dy

Backends take the selective scan's names: "auto" (triton for CUDA tensors when Triton imports, else torch),
"triton" (CUDA, or CPU under TRITON_INTERPRET=1), "torch" / "naive" (the reference, autograd gradients). The
triton path is a ``torch.library`` custom op (fake implementation and autograd formula registered), so
``torch.compile(fullgraph=True)`` traces it; eager calls go through an autograd.Function over the same launchers.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..selective_scan import _resolve_backend, _through_custom_op

__all__ = ["layer_norm_channel_first", "layer_norm_channel_first_ref"]

_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _autocast_off(x: Tensor):
    """Autocast disabled for x's device type (where autocast exists for it: not on meta)."""
    if torch.amp.is_autocast_available(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()


def layer_norm_channel_first_ref(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
                                 eps: float = 1e-5, out_dtype: torch.dtype | None = None) -> Tensor:
    """The definition in PyTorch: x (B, C, *S), weight/bias (C,) or None -> (B, C, *S) in out_dtype (default x's
    dtype), computed in float32 (float64 for float64 x) with autocast off."""
    cdt = _compute_dtype(x)
    with _autocast_off(x):
        y = F.layer_norm(x.movedim(1, -1).to(cdt), (x.shape[1],), weight.to(cdt) if weight is not None else None,
                         bias.to(cdt) if bias is not None else None, eps)
    return y.movedim(-1, 1).to(out_dtype or x.dtype)


# --------------------------------------------------------------------------------------------------------
# torch.library registration. The ops take x as (B, C, L), L contiguous, weight/bias contiguous (C,) or None.
# The forward returns (y, mean, rstd); mean and rstd (B, L) float32 (float64) are saved for the backward when
# save_stats (an input requires grad), else they are empty (0,) tensors and the kernel does not write them.


@torch.library.custom_op("mambaeye::layer_norm_channel_first_fwd", mutates_args=())
def _ln_fwd(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, save_stats: bool,
            out_dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    from .triton_norm import layer_norm_fwd

    return layer_norm_fwd(x, weight, bias, eps, save_stats, out_dtype)


@_ln_fwd.register_fake
def _ln_fwd_fake(x, weight, bias, eps, save_stats, out_dtype):
    shape = (x.shape[0], x.shape[2]) if save_stats else (0,)
    cdt = _compute_dtype(x)
    return torch.empty_like(x, dtype=out_dtype), x.new_empty(shape, dtype=cdt), x.new_empty(shape, dtype=cdt)


@torch.library.custom_op("mambaeye::layer_norm_channel_first_bwd", mutates_args=())
def _ln_bwd(dy: Tensor, x: Tensor, weight: Tensor | None, bias: Tensor | None, mean: Tensor,
            rstd: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    from .triton_norm import layer_norm_bwd

    dx, dw, db = layer_norm_bwd(dy, x, weight, bias, mean, rstd)
    # custom ops cannot return None: an absent weight/bias gets an empty gradient, dropped by _backward
    return dx, dw if dw is not None else x.new_empty(0), db if db is not None else x.new_empty(0)


@_ln_bwd.register_fake
def _ln_bwd_fake(dy, x, weight, bias, mean, rstd):
    return (torch.empty_like(x), torch.empty_like(weight) if weight is not None else x.new_empty(0),
            torch.empty_like(bias) if bias is not None else x.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, weight, bias, eps, save_stats, out_dtype = inputs
    ctx.has_weight, ctx.has_bias = weight is not None, bias is not None
    ctx.save_for_backward(x, weight, bias, output[1], output[2])


def _backward(ctx, dy, _dmean, _drstd, bwd=None):
    """``bwd``: the custom op (default, what torch.compile traces) or the kernels' launcher (eager)."""
    x, weight, bias, mean, rstd = ctx.saved_tensors
    if mean.numel() == 0:
        raise RuntimeError("layer_norm_channel_first: the forward ran without saving its statistics "
                           "(no input required grad then)")
    if dy.stride(-1) != 1 and dy.shape[-1] > 1:
        dy = dy.contiguous()
    dx, dw, db = (bwd or _ln_bwd)(dy, x, weight, bias, mean, rstd)
    return dx, dw if ctx.has_weight else None, db if ctx.has_bias else None, None, None, None


_ln_fwd.register_autograd(_backward, setup_context=_setup_context)


class _LayerNormFunction(torch.autograd.Function):
    """Eager path without the dispatcher's per-call host cost (see selective_scan's _ScanFunction)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, save_stats, out_dtype):
        from .triton_norm import layer_norm_fwd

        output = layer_norm_fwd(x, weight, bias, eps, save_stats, out_dtype)
        _setup_context(ctx, (x, weight, bias, eps, save_stats, out_dtype), output)
        ctx.mark_non_differentiable(output[1], output[2])
        return output

    @staticmethod
    def backward(ctx, dy, dmean, drstd):
        from .triton_norm import layer_norm_bwd

        return _backward(ctx, dy, dmean, drstd, bwd=layer_norm_bwd)


def _check_inputs(x, weight, bias) -> None:
    """Raise a TypeError/ValueError that names the offending argument and what was expected."""
    if not isinstance(x, Tensor):
        raise TypeError(f"layer_norm_channel_first: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"layer_norm_channel_first: expected (B, C, *spatial), got shape {tuple(x.shape)}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"layer_norm_channel_first: x must be float64, float32, float16 or bfloat16, got {x.dtype}")
    dim = x.shape[1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"layer_norm_channel_first: {name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.shape != (dim,):
            raise ValueError(f"layer_norm_channel_first: {name} must be ({dim},) for x with {dim} channels, "
                             f"got {tuple(t.shape)}")
        if t.dtype not in _DTYPES:
            raise TypeError(f"layer_norm_channel_first: {name} must be float64, float32, float16 or bfloat16, "
                            f"got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"layer_norm_channel_first: {name} is on {t.device} but x is on {x.device}")


def _as_bcl(x: Tensor) -> Tensor:
    """x (B, C, *S) as a (B, C, L) view, L = prod(S), keeping its batch/channel strides; copied (.contiguous())
    only when the spatial dimensions are not contiguous among themselves (e.g. channels_last)."""
    expected = 1
    for size, stride in zip(reversed(x.shape[2:]), reversed(x.stride()[2:]), strict=True):
        if size != 1 and stride != expected:
            x = x.contiguous()
            break
        expected *= size
    return x.view(x.shape[0], x.shape[1], math.prod(x.shape[2:]))


def layer_norm_channel_first(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
                             eps: float = 1e-5, backend: str = "auto", out_dtype: torch.dtype | None = None) -> Tensor:
    """LayerNorm over dim 1 of x (B, C, *S) (S: any number of spatial dimensions, none included).

    x float64/float32/float16/bfloat16; weight, bias (C,) or None, in any of those dtypes (all computed in float32,
    float64 for float64 x).
    Returns (B, C, *S) in ``out_dtype`` (default: x's dtype), also under autocast (see the module docstring for
    the math); a float32 ``out_dtype`` for bf16 x gives what ``F.layer_norm`` gives under autocast.

    The triton backend reads x in place when its spatial dimensions are contiguous (the flattened L has stride 1;
    batch and channel strides are free, so channel-sliced views are not copied); otherwise (e.g. channels_last
    storage) it calls ``x.contiguous()`` first. y is dense: x's strides when x is dense with contiguous spatial
    dimensions, else the same order of dimensions.
    ``backend``: "auto", "triton", "torch" or "naive" (see the module docstring).
    """
    _check_inputs(x, weight, bias)
    if out_dtype is not None and out_dtype not in _DTYPES:
        raise TypeError(f"layer_norm_channel_first: out_dtype must be float64, float32, float16 or bfloat16, "
                        f"got {out_dtype}")
    if _resolve_backend(backend, x) != "triton" or x.numel() == 0:
        return layer_norm_channel_first_ref(x, weight, bias, eps, out_dtype)
    x3 = _as_bcl(x)
    save_stats = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    norm = _ln_fwd if _through_custom_op(x3) else _LayerNormFunction.apply
    y, _, _ = norm(x3, weight.contiguous() if weight is not None else None,
                   bias.contiguous() if bias is not None else None, float(eps), save_stats, out_dtype or x.dtype)
    return y.view(x.shape)
