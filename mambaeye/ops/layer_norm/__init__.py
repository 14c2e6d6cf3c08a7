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

from .._layout import empty_like, is_batch_second, to_batch_second
from ..selective_scan import _resolve_backend, _through_custom_op

__all__ = ["add_layer_norm_channel_first", "add_layer_norm_channel_first_ref", "layer_norm_channel_first",
           "layer_norm_channel_first_ref"]

_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 data, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _autocast_off(x: Tensor):
    """Autocast disabled for x's device type (where autocast exists for it: not on meta)."""
    if torch.amp.is_autocast_available(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()


def layer_norm_channel_first_ref(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
                                 eps: float = 1e-5, out_dtype: torch.dtype | None = None) -> Tensor:
    """The definition in PyTorch: x (B, C, *S), weight/bias (C,) or None -> (B, C, *S) in out_dtype (default x's
    dtype), computed in float32 (float64 for float64 x) with autocast off."""
    cdt = _compute_dtype(x.dtype)
    with _autocast_off(x):
        y = F.layer_norm(x.movedim(1, -1).to(cdt), (x.shape[1],), weight.to(cdt) if weight is not None else None,
                         bias.to(cdt) if bias is not None else None, eps)
    return y.movedim(-1, 1).to(out_dtype or x.dtype)


def add_layer_norm_channel_first_ref(x: Tensor, branch: Tensor, weight: Tensor | None = None,
                                     bias: Tensor | None = None, eps: float = 1e-5, branch_bias: Tensor | None = None,
                                     out_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """The definition of :func:`add_layer_norm_channel_first` in PyTorch: s = x + branch (+ branch_bias) computed
    in float32 (float64) and stored in ``torch.promote_types(x.dtype, branch.dtype)``; (s, LayerNorm(s))."""
    s_dtype = torch.promote_types(x.dtype, branch.dtype)
    cdt = _compute_dtype(s_dtype)
    with _autocast_off(x):
        r = branch.to(cdt)
        if branch_bias is not None:
            r = r + branch_bias.to(cdt).view(-1, *([1] * (x.dim() - 2)))
        s = (x.to(cdt) + r).to(s_dtype)
    return s, layer_norm_channel_first_ref(s, weight, bias, eps, out_dtype)


# --------------------------------------------------------------------------------------------------------
# torch.library registration. The ops take x (and the branch) as (B, C, L), L contiguous, weight/bias/branch_bias
# contiguous (C,) or None. The forward returns (y, mean, rstd, s): mean and rstd (B, L) float32 (float64) are saved
# for the backward when save_stats (an input requires grad), else they are empty (0,) tensors and the kernel does
# not write them; s is x + branch (+ branch_bias), or an empty (0,) tensor without a branch (custom ops cannot
# return an input or None).


@torch.library.custom_op("mambaeye::layer_norm_channel_first_fwd", mutates_args=())
def _ln_fwd(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, save_stats: bool,
            out_dtype: torch.dtype, branch: Tensor | None, branch_bias: Tensor | None, batch_second: bool,
            ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from .triton_norm import layer_norm_fwd

    y, mean, rstd, s = layer_norm_fwd(x, weight, bias, eps, save_stats, out_dtype, branch, branch_bias, batch_second)
    return y, mean, rstd, s if s is not None else x.new_empty(0)


@_ln_fwd.register_fake
def _ln_fwd_fake(x, weight, bias, eps, save_stats, out_dtype, branch, branch_bias, batch_second):
    shape = (x.shape[0], x.shape[2]) if save_stats else (0,)
    s_dtype = x.dtype if branch is None else torch.promote_types(x.dtype, branch.dtype)
    cdt = _compute_dtype(s_dtype)
    s = torch.empty_like(x, dtype=s_dtype) if branch is not None else x.new_empty(0)
    return empty_like(x, out_dtype, batch_second), x.new_empty(shape, dtype=cdt), x.new_empty(shape, dtype=cdt), s


@torch.library.custom_op("mambaeye::layer_norm_channel_first_bwd", mutates_args=())
def _ln_bwd(dy: Tensor, x: Tensor, weight: Tensor | None, bias: Tensor | None, mean: Tensor, rstd: Tensor,
            ds: Tensor | None, branch_dtype: torch.dtype | None, branch_bias: Tensor | None,
            ) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dbranch or an empty tensor when dx serves, the parameters' gradient sums (k, C)): see layer_norm_bwd."""
    from .triton_norm import layer_norm_bwd

    dx, dr, sums = layer_norm_bwd(dy, x, weight, bias, mean, rstd, ds, branch_dtype, branch_bias)
    return dx, dr if dr is not None else x.new_empty(0), sums


@_ln_bwd.register_fake
def _ln_bwd_fake(dy, x, weight, bias, mean, rstd, ds, branch_dtype, branch_bias):
    dr = torch.empty_like(x, dtype=branch_dtype) if branch_dtype not in (None, x.dtype) else x.new_empty(0)
    k = sum(t is not None for t in (weight, bias, branch_bias))
    return torch.empty_like(x), dr, x.new_empty((k, x.shape[1]), dtype=_compute_dtype(x.dtype))


def _setup_context(ctx, inputs, output):
    x, weight, bias, eps, save_stats, out_dtype, branch, branch_bias, _ = inputs
    ctx.has_branch = branch is not None
    ctx.branch_dtype = branch.dtype if branch is not None else None
    normed = output[3] if branch is not None else x
    ctx.save_for_backward(normed, weight, bias, output[1], output[2], branch_bias)


def _backward(ctx, dy, _dmean, _drstd, ds, bwd=None):
    """``bwd``: the custom op (default, what torch.compile traces) or the kernels' launcher (eager). dy or ds is
    None (eager, where gradients are not materialised) when that output did not reach the loss."""
    normed, weight, bias, mean, rstd, branch_bias = ctx.saved_tensors
    if mean.numel() == 0:
        raise RuntimeError("layer_norm_channel_first: the forward ran without saving its statistics "
                           "(no input required grad then)")
    if dy is None:
        dy = torch.zeros_like(normed)
    elif dy.stride(-1) != 1 and dy.shape[-1] > 1:
        dy = dy.contiguous()
    if not ctx.has_branch or (ds is not None and ds.numel() == 0):
        ds = None
    elif ds is not None and ds.stride(-1) != 1 and ds.shape[-1] > 1:
        ds = ds.contiguous()
    dx, dr, sums = (bwd or _ln_bwd)(dy, normed, weight, bias, mean, rstd, ds, ctx.branch_dtype, branch_bias)
    rows = iter(sums)  # the gradients of the parameters given, in this order
    dw, db, drb = (next(rows).to(t.dtype) if t is not None else None for t in (weight, bias, branch_bias))
    dbranch = (dr if dr is not None and dr.numel() else dx) if ctx.has_branch else None
    return dx, dw, db, None, None, None, dbranch, drb, None


_ln_fwd.register_autograd(_backward, setup_context=_setup_context)


class _LayerNormFunction(torch.autograd.Function):
    """Eager path without the dispatcher's per-call host cost (see selective_scan's _ScanFunction)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, save_stats, out_dtype, branch, branch_bias, batch_second):
        from .triton_norm import layer_norm_fwd

        y, mean, rstd, s = layer_norm_fwd(x, weight, bias, eps, save_stats, out_dtype, branch, branch_bias,
                                          batch_second)
        output = (y, mean, rstd, s if s is not None else x.new_empty(0))
        _setup_context(ctx, (x, weight, bias, eps, save_stats, out_dtype, branch, branch_bias, batch_second), output)
        ctx.mark_non_differentiable(*output[1:3], *(() if s is not None else output[3:]))
        ctx.set_materialize_grads(False)
        return output

    @staticmethod
    def backward(ctx, dy, dmean, drstd, ds):
        from .triton_norm import layer_norm_bwd

        return _backward(ctx, dy, dmean, drstd, ds, bwd=layer_norm_bwd)


def _check_inputs(x, weight, bias, branch=None, branch_bias=None, op: str = "layer_norm_channel_first") -> None:
    """Raise a TypeError/ValueError that names the offending argument and what was expected."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{op}: expected (B, C, *spatial), got shape {tuple(x.shape)} for x")
    if x.dtype not in _DTYPES:
        raise TypeError(f"{op}: x must be float64, float32, float16 or bfloat16, got {x.dtype}")
    if branch is not None:
        if not isinstance(branch, Tensor):
            raise TypeError(f"{op}: branch must be a torch.Tensor, got {type(branch).__name__}")
        if branch.shape != x.shape:
            raise ValueError(f"{op}: branch must have x's shape {tuple(x.shape)}, got {tuple(branch.shape)}")
        if branch.dtype not in _DTYPES:
            raise TypeError(f"{op}: branch must be float64, float32, float16 or bfloat16, got {branch.dtype}")
        if branch.device != x.device:
            raise ValueError(f"{op}: branch is on {branch.device} but x is on {x.device}")
    dim = x.shape[1]
    for name, t in (("weight", weight), ("bias", bias), ("branch_bias", branch_bias)):
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.shape != (dim,):
            raise ValueError(f"{op}: {name} must be ({dim},) for x with {dim} channels, got {tuple(t.shape)}")
        if t.dtype not in _DTYPES:
            raise TypeError(f"{op}: {name} must be float64, float32, float16 or bfloat16, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{op}: {name} is on {t.device} but x is on {x.device}")


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


def _check_out_dtype(out_dtype, op: str) -> None:
    if out_dtype is not None and out_dtype not in _DTYPES:
        raise TypeError(f"{op}: out_dtype must be float64, float32, float16 or bfloat16, got {out_dtype}")


def _triton_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float, out_dtype: torch.dtype,
                 branch: Tensor | None = None, branch_bias: Tensor | None = None, batch_second: bool = False,
                 ) -> tuple[Tensor, Tensor | None]:
    """(y, s) of the triton backend on (B, C, *S) inputs (checked), s None without a branch; y stored batch-second
    when ``batch_second``."""
    x3 = _as_bcl(x)
    b3 = _as_bcl(branch) if branch is not None else None
    save_stats = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias, branch, branch_bias))
    norm = _ln_fwd if _through_custom_op(x3) else _LayerNormFunction.apply
    y, _, _, s = norm(x3, weight.contiguous() if weight is not None else None,
                      bias.contiguous() if bias is not None else None, float(eps), save_stats, out_dtype, b3,
                      branch_bias.contiguous() if branch_bias is not None else None, batch_second)
    return y.view(x.shape), s.view(x.shape) if branch is not None else None


def layer_norm_channel_first(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
                             eps: float = 1e-5, backend: str = "auto", out_dtype: torch.dtype | None = None,
                             batch_second: bool = False) -> Tensor:
    """LayerNorm over dim 1 of x (B, C, *S) (S: any number of spatial dimensions, none included).

    x float64/float32/float16/bfloat16; weight, bias (C,) or None, in any of those dtypes (all computed in float32,
    float64 for float64 x).
    Returns (B, C, *S) in ``out_dtype`` (default: x's dtype), also under autocast (see the module docstring for
    the math); a float32 ``out_dtype`` for bf16 x gives what ``F.layer_norm`` gives under autocast.

    The triton backend reads x in place when its spatial dimensions are contiguous (the flattened L has stride 1;
    batch and channel strides are free, so channel-sliced views are not copied); otherwise (e.g. channels_last
    storage) it calls ``x.contiguous()`` first. y is dense: x's strides when x is dense with contiguous spatial
    dimensions, else the same order of dimensions. ``batch_second``: y is stored batch-second instead, whatever x's
    layout (:mod:`mambaeye.ops._layout`; the triton backend writes it so, the others copy - as they do for a
    batch-second x, so that the layout carries through a model on any backend).
    ``backend``: "auto", "triton", "torch" or "naive" (see the module docstring).
    """
    _check_inputs(x, weight, bias)
    _check_out_dtype(out_dtype, "layer_norm_channel_first")
    if _resolve_backend(backend, x) != "triton" or x.numel() == 0:
        y = layer_norm_channel_first_ref(x, weight, bias, eps, out_dtype)
        return to_batch_second(y) if batch_second or is_batch_second(x) else y
    return _triton_norm(x, weight, bias, eps, out_dtype or x.dtype, batch_second=batch_second)[0]


def add_layer_norm_channel_first(x: Tensor, branch: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
                                 eps: float = 1e-5, branch_bias: Tensor | None = None, backend: str = "auto",
                                 out_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """A residual add and the next pre-norm in one pass: returns (s, LayerNorm(s)) with s = x + branch (+
    ``branch_bias`` per channel), the norm over dim 1 as in :func:`layer_norm_channel_first`.

    x, branch (B, C, *S) of the same shape, float64/float32/float16/bfloat16 (e.g. a float32 residual stream and a
    bf16 branch under autocast); weight, bias, branch_bias (C,) or None. s is in ``torch.promote_types(x.dtype,
    branch.dtype)`` (what ``x + branch`` gives), computed in float32 (float64) with the branch bias added before
    rounding, and normalised as stored; LayerNorm(s) in ``out_dtype`` (default: s's dtype).

    The triton backend reads x and branch once and writes s and y once (an add followed by a norm reads s again);
    its backward takes the gradient reaching s from the rest of the network, adds the norm's, and writes the sum
    once for x and, when its dtype differs, once more for the branch; branch_bias' gradient is reduced in the
    same pass. Used by VMamba's blocks for the bias of the MLP's fc2 (a 1x1 convolution's bias would be one more
    pass forward and a reduction backward).
    """
    op = "add_layer_norm_channel_first"
    if branch is None:
        raise TypeError(f"{op}: branch must be a torch.Tensor, got None (use layer_norm_channel_first)")
    _check_inputs(x, weight, bias, branch, branch_bias, op=op)
    _check_out_dtype(out_dtype, op)
    if _resolve_backend(backend, x) != "triton" or x.numel() == 0:
        s, y = add_layer_norm_channel_first_ref(x, branch, weight, bias, eps, branch_bias, out_dtype)
        return (s, to_batch_second(y)) if is_batch_second(x) else (s, y)
    s_dtype = torch.promote_types(x.dtype, branch.dtype)
    y, s = _triton_norm(x, weight, bias, eps, out_dtype or s_dtype, branch, branch_bias)
    return s, y
