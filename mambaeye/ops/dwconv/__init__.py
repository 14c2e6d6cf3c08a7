"""SiLU(depthwise 2D convolution) of a channel-first map: the conv + activation that SS2D applies before its scan.

    y[b, c] = silu(conv2d(x[b, c], weight[c, 0], padding=K // 2) + bias[c]),   weight (C, 1, K, K), K odd

PyTorch runs the depthwise convolution (about 3x the time of reading and writing the map once, on an H100 in
bf16) and the SiLU as two passes. The ``triton`` backend's forward is one pass (:mod:`.triton_dwconv`; H100,
VMamba-T's stages at batch 128: 420 -> 231, 213 -> 107, 109 -> 66, 61 -> 27 us), which also writes the
convolution before the SiLU when a backward will follow; the backward runs SiLU's derivative
(``aten.silu_backward``) and then one kernel for dx (the conv of the gradient with the kernel flipped) and the
per-tile partial sums of dweight and dbias (PyTorch's depthwise backward is two kernels that take ~7 ms of a
VMamba-T training step on an H100). Computed in float32 (float64 for float64 x) with the weight as given
(autocast would round it to bf16 first); outputs and dx in x's dtype, dweight and dbias in the weight's.

``sources=2`` writes the output as the fused cross-scan's two sources, (B, 2, C, H * W) row-major then
column-major, from the conv's own registers (no map written and copied again by ``cross_scan.grid.spread``); its
backward sums the two sources' gradients in the pass that applies SiLU's derivative
(``cross_scan.grid.gather_silu_grad``).

Backends take the selective scan's names: "auto" (triton for CUDA tensors when Triton imports, else torch),
"triton" (CUDA, or CPU under TRITON_INTERPRET=1), "torch" / "naive" (``F.silu(F.conv2d(...))``). The triton path
is a ``torch.library`` custom op (fake and autograd registered), so ``torch.compile(fullgraph=True)`` traces it;
eager calls go through an autograd.Function over the same launcher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..layer_norm import _DTYPES
from ..selective_scan import _resolve_backend, _through_custom_op

__all__ = ["depthwise_conv2d_silu", "depthwise_conv2d_silu_ref"]


def depthwise_conv2d_silu_ref(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The definition in PyTorch (what SS2D computed before): silu(conv2d(x, weight, bias, groups=C))."""
    return F.silu(F.conv2d(x, weight, bias, padding=weight.shape[-1] // 2, groups=x.shape[1]))


def _spread_ref(y: Tensor, batch_second: bool = False) -> Tensor:
    """(B, C, H, W) -> (B, 2, C, H * W): y row-major, then column-major (``grid.spread(y, 2, 1)`` in PyTorch),
    stored as (2, C, B, H * W) with ``batch_second``."""
    if batch_second:
        stored = torch.stack([y.flatten(2), y.transpose(2, 3).flatten(2)]).transpose(1, 2).contiguous()
        return stored.permute(2, 0, 1, 3)  # (2, C, B, H * W) -> (B, 2, C, H * W)
    return torch.stack([y.flatten(2), y.transpose(2, 3).flatten(2)], 1)


# torch.library registration. save_pre: also return the convolution before the SiLU (when a backward will
# follow: saving it costs one write, recomputing it in the backward a whole convolution); else an empty tensor.
# sources: 1 (the map) or 2 (the map row-major and column-major, see depthwise_conv2d_silu); batch_second: the
# two sources' layout (triton_dwconv.sources_empty).
@torch.library.custom_op("mambaeye::depthwise_conv2d_silu_fwd", mutates_args=())
def _fwd(x: Tensor, weight: Tensor, bias: Tensor | None, save_pre: bool, sources: int,
         batch_second: bool) -> tuple[Tensor, Tensor]:
    from .triton_dwconv import dwconv_silu_fwd

    return dwconv_silu_fwd(x, weight, bias, save_pre, sources, batch_second)


@_fwd.register_fake
def _fwd_fake(x, weight, bias, save_pre, sources, batch_second):
    from .triton_dwconv import sources_empty

    y = x.new_empty(x.shape) if sources == 1 else sources_empty(x, batch_second)
    return y, (x.new_empty(x.shape) if save_pre else y.new_empty(0))


@torch.library.custom_op("mambaeye::depthwise_conv2d_silu_bwd", mutates_args=())
def _bwd(dpre: Tensor, x: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    return _bwd_impl(dpre, x, weight, bias)


@_bwd.register_fake
def _bwd_fake(dpre, x, weight, bias):
    return torch.empty_like(x), torch.empty_like(weight), torch.empty_like(bias) if bias is not None else x.new_empty(0)


def _bwd_impl(dpre, x, weight, bias):
    """(dx, dweight, dbias or an empty tensor) in x's, weight's and bias' dtypes (the sums are float32 or float64
    until then)."""
    from .triton_dwconv import dwconv_bwd

    dx, dw, db = dwconv_bwd(dpre, x, weight, bias is not None)
    return dx, dw.to(weight.dtype), (db.to(bias.dtype) if bias is not None else x.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, weight, bias, _, sources, _ = inputs
    ctx.has_bias, ctx.sources = bias is not None, sources
    ctx.save_for_backward(x, weight, bias, output[1])


def _backward(ctx, dy, _dpre=None, bwd=None, dy2=None):
    """Through SiLU's derivative (at the saved convolution, else recomputed) - for two sources in the same pass
    that sums their gradients back onto the map (:func:`..cross_scan.grid.gather_silu_grad`), and with ``dy2``
    (the gradient of the output's second consumer, see :func:`depthwise_conv2d_silu`'s ``consumers``) that sum
    too - then one kernel for the convolution's gradients (:func:`.triton_dwconv.dwconv_bwd`). ``bwd``: the custom
    op (what torch.compile traces) or :func:`_bwd_impl` (eager)."""
    if dy is None and dy2 is None:  # no output took part in the loss (gradients not materialised as zeros)
        return None, None, None, None, None, None
    x, weight, bias, pre = ctx.saved_tensors
    if pre.numel() == 0:
        pre = F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype) if ctx.has_bias else None,
                       padding=weight.shape[-1] // 2, groups=x.shape[1])
    if dy is None:  # only the second consumer's output took part in the loss
        dy, dy2 = dy2, None
    if ctx.sources == 2:
        from ..cross_scan.grid import gather_silu_grad

        batch, channels, height, width = x.shape
        shape = (batch, 2, 1, channels, height * width)
        dpre = gather_silu_grad(dy.reshape(shape), pre, dy2.reshape(shape) if dy2 is not None else None)
    else:
        dy = dy + dy2 if dy2 is not None else dy
        dpre = torch.ops.aten.silu_backward(dy.to(pre.dtype), pre).contiguous()  # one kernel, as autograd's SiLU
    dx, dw, db = (bwd or _bwd)(dpre, x, weight, bias if ctx.has_bias else None)
    return dx, dw, (db if ctx.has_bias else None), None, None, None


_fwd.register_autograd(_backward, setup_context=_setup_context)


class _DwConvSiluFunction(torch.autograd.Function):
    """Eager path without the dispatcher's per-call host cost (see selective_scan's _ScanFunction). With
    ``consumers`` 2 the output is returned twice - itself and a view of it - as two outputs of this one node, so
    that their gradients reach the backward apart and are summed there, in the pass that applies SiLU's
    derivative, instead of by autograd first (one more read and write of both)."""

    @staticmethod
    def forward(ctx, x, weight, bias, save_pre, sources, batch_second, consumers):
        from .triton_dwconv import dwconv_silu_fwd

        ctx.set_materialize_grads(False)  # pre's gradient arrives as None, not as a zero-filled map (a whole pass)
        y, pre = dwconv_silu_fwd(x, weight, bias, save_pre, sources, batch_second)
        _setup_context(ctx, (x, weight, bias, save_pre, sources, batch_second), (y, pre))
        ctx.mark_non_differentiable(pre)
        return (y, pre) if consumers == 1 else (y, y.view_as(y), pre)

    @staticmethod
    def backward(ctx, *grads):
        dy, dy2 = (grads[0], None) if len(grads) == 2 else grads[:2]
        return (*_backward(ctx, dy, bwd=_bwd_impl, dy2=dy2), None)


def _check_inputs(x, weight, bias) -> None:
    """Raise a TypeError/ValueError that names the offending argument and what was expected."""
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if name == "bias" and t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"depthwise_conv2d_silu: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _DTYPES:
            raise TypeError(f"depthwise_conv2d_silu: {name} must be float64, float32, float16 or bfloat16, "
                            f"got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"depthwise_conv2d_silu: {name} is on {t.device} but x is on {x.device}")
    if x.dim() != 4:
        raise ValueError(f"depthwise_conv2d_silu: expected x of shape (B, C, H, W), got {tuple(x.shape)}")
    channels, k = x.shape[1], weight.shape[-1]
    if weight.shape != (channels, 1, k, k) or k % 2 == 0:
        raise ValueError(f"depthwise_conv2d_silu: weight must be (C={channels}, 1, K, K) with K odd, "
                         f"got {tuple(weight.shape)}")
    if bias is not None and bias.shape != (channels,):
        raise ValueError(f"depthwise_conv2d_silu: bias must be ({channels},), got {tuple(bias.shape)}")


def depthwise_conv2d_silu(x: Tensor, weight: Tensor, bias: Tensor | None = None, backend: str = "auto",
                          sources: int = 1, consumers: int = 1,
                          batch_second: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """silu(depthwise conv2d(x, weight, bias)) with zero padding K // 2 (same size out): x (B, C, H, W), weight
    (C, 1, K, K) with K odd, bias (C,) or None; returns (B, C, H, W) in x's dtype (contiguous from the triton
    backend, which reads x in place when H, W are contiguous and copies it first otherwise). ``backend``: "auto",
    "triton", "torch" or "naive" (see the module docstring).

    ``sources=2`` returns (B, 2, C, H * W) instead: the output row-major, then column-major - the two sources of
    VMamba's fused cross-scan (``mambaeye.ops.cross_scan.grid.spread(y, 2, 1)``), written by the conv's own pass
    (no (B, C, H, W) output written and read back), with the backward's sum of the two sources fused into SiLU's
    derivative. With ``batch_second`` the two sources are stored as (2, C, B, H * W) (the returned (B, 2, C, H * W)
    is a permuted view: every source channel one contiguous row over the batch, so that the cross-scan's
    per-direction projections are plain matrix products; :func:`mambaeye.ops.cross_scan.scan_inputs`).

    ``consumers=2`` returns the output twice, ``(y, y_again)`` (the same memory), for two consumers: the eager
    triton path gets their gradients apart and sums them in its own backward pass - with ``sources=2`` in the one
    that also sums the two sources - instead of autograd adding them first. Elsewhere (other backends, and the
    custom op torch.compile traces, whose outputs may not alias) both are ``y`` and autograd adds."""
    _check_inputs(x, weight, bias)
    if sources not in (1, 2):
        raise ValueError(f"depthwise_conv2d_silu: sources must be 1 (the map) or 2 (row- and column-major), "
                         f"got {sources!r}")
    if consumers not in (1, 2):
        raise ValueError(f"depthwise_conv2d_silu: consumers must be 1 or 2, got {consumers!r}")
    if batch_second and sources != 2:
        raise ValueError("depthwise_conv2d_silu: batch_second is a layout of the two sources; it needs sources=2")
    if _resolve_backend(backend, x) != "triton" or x.numel() == 0:
        y = depthwise_conv2d_silu_ref(x, weight, bias)
        y = y if sources == 1 else _spread_ref(y, batch_second)
    else:
        if x.stride(3) != 1 or x.stride(2) != x.shape[3]:
            x = x.contiguous()
        weight = weight.contiguous()
        save_pre = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
        if _through_custom_op(x):
            y = _fwd(x, weight, bias, save_pre, sources, batch_second)[0]
        else:
            outputs = _DwConvSiluFunction.apply(x, weight, bias, save_pre, sources, batch_second, consumers)
            return outputs[0] if consumers == 1 else outputs[:2]
    return y if consumers == 1 else (y, y)
