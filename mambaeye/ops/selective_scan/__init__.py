"""The selective scan (S6): one interface, three backends.

``selective_scan`` has the semantics, shapes and dtypes of mamba-ssm's ``selective_scan_fn``:

==============  ===================================================  =====================================
argument        shape                                                dtype
==============  ===================================================  =====================================
u, delta, z     (B, D, L)                                            float32, float16, bfloat16 (float64)
A               (D, N)   real only: complex A is not supported       float32 (float64)
B, C            (D, N) fixed, (B, N, L) per step, (B, G, N, L)       fixed: float32; per step: u's dtype
                grouped: channel d reads group d // (D // G)         or float32
D, delta_bias   (D,)                                                 float32 (float64)
==============  ===================================================  =====================================

Backends (``backend=``):

- ``"naive"``: the sequential recurrence in :mod:`.naive`, the specification; autograd gradients.
- ``"torch"``: a chunked parallel scan in pure PyTorch with its own backward (:mod:`.torch_scan`);
  memory bounded by the chunk. The default on CPU and wherever Triton is missing.
- ``"triton"``: fused Triton kernels for CUDA (:mod:`.triton_scan`); also runs on CPU tensors under
  Triton's interpreter (``TRITON_INTERPRET=1``), which is how CI tests it.
- ``"auto"``: triton for CUDA tensors when Triton imports, else torch.

The torch and triton backends are registered as ``torch.library`` custom ops with fake implementations
and autograd formulas, so ``torch.compile(model, fullgraph=True)`` traces through them.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import torch
from torch import Tensor
from torch.utils import _python_dispatch

from .naive import selective_scan_naive

__all__ = ["selective_scan", "selective_scan_naive", "available_backends", "BACKENDS"]

BACKENDS = ("auto", "naive", "torch", "triton")
_INPUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_WEIGHT_DTYPES = (torch.float32, torch.float64)


# Looked up once at import: torch.compile cannot trace importlib inside the model's forward.
_HAS_TRITON = importlib.util.find_spec("triton") is not None


def _triton_importable() -> bool:
    return _HAS_TRITON


def _triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """The backends that can run on tensors of ``device``."""
    device = torch.device(device)
    names = ["naive", "torch"]
    if _triton_importable() and (device.type == "cuda" or _triton_interpreted()):
        names.append("triton")
    return names


def _resolve_backend(backend: str, u: Tensor) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if u.is_cuda and _triton_importable() else "torch"
    if backend == "triton":
        if not _triton_importable():
            raise RuntimeError("backend='triton' needs the triton package: pip install triton")
        if not (u.is_cuda or _triton_interpreted()):
            raise RuntimeError(
                f"backend='triton' runs on CUDA tensors (u is on {u.device}); on CPU use backend='torch', "
                "or set TRITON_INTERPRET=1 before importing triton to run the kernels in Triton's interpreter"
            )
    return backend


def _backend_module(name: str):
    return importlib.import_module(f"{__name__}.{'torch_scan' if name == 'torch' else 'triton_scan'}")


def _check_inputs(u, delta, A, B, C, D, z, delta_bias) -> None:
    """Raise a ValueError/TypeError that names the offending argument and what was expected."""
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if u.dim() != 3:
        raise ValueError(f"u must have shape (batch, dim, seqlen), got {tuple(u.shape)}")
    batch, dim, length = u.shape
    if length == 0:
        raise ValueError("u has seqlen 0: the scan needs at least one step")
    if u.dtype not in _INPUT_DTYPES:
        raise TypeError(f"u must be float32, float16, bfloat16 or float64, got {u.dtype}")
    if A.is_complex():
        raise TypeError("A is complex: mambaeye implements the real selective scan only (as Mamba for vision uses)")
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must have shape (dim={dim}, dstate), got {tuple(A.shape)}")
    dstate = A.shape[1]
    if A.dtype not in _WEIGHT_DTYPES:
        raise TypeError(f"A must be float32 (or float64), got {A.dtype}")
    for name, t in (("delta", delta), ("z", z)):
        if t is None:
            continue
        if t.shape != u.shape:
            raise ValueError(f"{name} must have u's shape {tuple(u.shape)}, got {tuple(t.shape)}")
        if t.dtype != u.dtype:
            raise TypeError(f"{name} must have u's dtype {u.dtype}, got {t.dtype}")
    for name, t in (("B", B), ("C", C)):
        if t.is_complex():
            raise TypeError(f"{name} is complex: only the real selective scan is supported")
        if t.dim() == 2:
            if t.shape != (dim, dstate):
                raise ValueError(f"fixed {name} must have shape (dim={dim}, dstate={dstate}), got {tuple(t.shape)}")
            if t.dtype not in _WEIGHT_DTYPES:
                raise TypeError(f"fixed {name} (dim, dstate) must be float32 (or float64), got {t.dtype}")
        elif t.dim() in (3, 4):
            groups = 1 if t.dim() == 3 else t.shape[1]
            expected = (batch, dstate, length) if t.dim() == 3 else (batch, groups, dstate, length)
            if tuple(t.shape) != expected:
                raise ValueError(
                    f"{name} must have shape (batch={batch}, dstate={dstate}, seqlen={length}) or "
                    f"(batch, groups, dstate, seqlen), got {tuple(t.shape)}"
                )
            if groups == 0 or dim % groups != 0:
                raise ValueError(f"{name} has {groups} groups, which must divide dim={dim}")
            if t.dtype not in (u.dtype, torch.float32):
                raise TypeError(f"per-step {name} must have u's dtype {u.dtype} or float32, got {t.dtype}")
        else:
            raise ValueError(f"{name} must be (dim, dstate), (batch, dstate, seqlen) or (batch, groups, dstate, "
                             f"seqlen), got {tuple(t.shape)}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.shape != (dim,):
            raise ValueError(f"{name} must have shape (dim={dim},), got {tuple(t.shape)}")
        if t.dtype not in _WEIGHT_DTYPES:
            raise TypeError(f"{name} must be float32 (or float64), got {t.dtype}")
    for name, t in (("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z), ("delta_bias", delta_bias)):
        if t is not None and t.device != u.device:
            raise ValueError(f"{name} is on {t.device} but u is on {u.device}: all tensors must share a device")


def _state_dtype(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------------------
# torch.library registration. The backends take normalised inputs: u, delta, z (B, D, L); B and C either fixed
# (D, N) or grouped (B, G, N, L). For the torch backend all are contiguous; the triton kernels take any batch,
# channel, group and state strides as long as L is the contiguous dimension, so views such as the channel-major
# (D, B, L) projections of the Mamba layers reach them without a copy. out has delta's layout when delta is
# dense (torch.empty_like), and each gradient its input's. The forward returns
# (out, last_state, chunk_states): chunk_states (B, D, n_chunks, N) holds the state *entering* each chunk,
# saved for the backward when gradients are needed (an empty tensor otherwise).


def _normalise(t: Tensor | None, backend: str) -> Tensor | None:
    """The layout the backend addresses: for triton any strides with L contiguous, else contiguous."""
    if t is None:
        return None
    if backend == "triton" and t.dim() >= 3 and (t.stride(-1) == 1 or t.shape[-1] == 1):
        return t
    return t.contiguous()


def _num_chunks(backend: str, u: Tensor, dstate: int) -> int:
    return _backend_module(backend).num_state_chunks(u.shape[0], u.shape[1], u.shape[2], dstate)


@torch.library.custom_op("mambaeye::selective_scan_fwd", mutates_args=())
def _scan_fwd(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    save_states: bool,
    backend: str,
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    return _fwd_impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save_states, backend, reverse)


def _fwd_impl(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save_states, backend, reverse):
    extra = {"reverse": True} if reverse else {}  # only the triton backend walks backwards (see selective_scan)
    return _backend_module(backend).selective_scan_fwd(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, save_states, **extra
    )


@_scan_fwd.register_fake
def _scan_fwd_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save_states, backend, reverse):
    batch, dim, _ = u.shape
    dstate = A.shape[1]
    state = _state_dtype(u)
    n_chunks = _num_chunks(backend, u, dstate) if save_states else 0
    shape = (batch, dim, n_chunks, dstate) if save_states else (0,)
    out = torch.empty_like(delta, dtype=u.dtype)  # as the backends: delta's layout when dense
    return out, u.new_empty(batch, dim, dstate, dtype=state), u.new_empty(shape, dtype=state)


@torch.library.custom_op("mambaeye::selective_scan_bwd", mutates_args=())
def _scan_bwd(
    dout: Tensor,
    dlast_state: Tensor | None,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    chunk_states: Tensor,
    backend: str,
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    grads = _bwd_impl(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_states, backend,
                      reverse)
    # custom ops cannot return None: an absent optional input gets an empty gradient, dropped below.
    return tuple(g if g is not None else u.new_empty(0) for g in grads)


def _bwd_impl(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_states, backend,
              reverse):
    extra = {"reverse": True} if reverse else {}
    return _backend_module(backend).selective_scan_bwd(
        dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_states, **extra
    )


@_scan_bwd.register_fake
def _scan_bwd_fake(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_states, backend,
                   reverse):
    def like(t):  # each gradient in its input's layout when that is dense (see the backends)
        return torch.empty_like(t) if t is not None else u.new_empty(0)

    return like(u), like(delta), like(A), like(B), like(C), like(D), like(z), like(delta_bias)


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, save_states, backend, reverse = inputs
    ctx.delta_softplus = delta_softplus
    ctx.backend = backend
    ctx.reverse = reverse
    ctx.has = tuple(t is not None for t in (D, z, delta_bias))
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[2])


def _backward(ctx, dout, dlast_state, _dchunk_states, bwd=None):
    u, delta, A, B, C, D, z, delta_bias, chunk_states = ctx.saved_tensors
    if chunk_states.numel() == 0:
        raise RuntimeError(
            "selective_scan: the forward ran without saving its chunk states (no input required grad then)"
        )
    if dout is None:  # only the last state was used
        dout = torch.zeros_like(delta, dtype=u.dtype)
    grads = (bwd or _scan_bwd)(
        _normalise(dout, ctx.backend), dlast_state, u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus,
        chunk_states, ctx.backend, ctx.reverse,
    )
    du, ddelta, dA, dB, dC, dD, dz, ddelta_bias = grads
    has_D, has_z, has_bias = ctx.has
    return (du, ddelta, dA, dB, dC, dD if has_D else None, dz if has_z else None,
            ddelta_bias if has_bias else None, None, None, None, None)


_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


class _ScanFunction(torch.autograd.Function):
    """The eager path: the custom op's forward, backward and saved tensors, called as an autograd.Function.

    In eager mode each call through the torch.library dispatcher costs tens of microseconds of host time, which
    made Vim-Ti at 224² (48 scans a step, ~0.16 ms each on an H100) launch-bound; torch.compile traces the
    custom op instead (it needs the registered fake implementation).
    """

    @staticmethod
    def forward(ctx, *inputs):
        ctx.set_materialize_grads(False)  # an unused output's gradient arrives as None, not zeros
        output = _fwd_impl(*inputs)
        _setup_context(ctx, inputs, output)
        ctx.mark_non_differentiable(output[2])
        return output

    @staticmethod
    def backward(ctx, dout, dlast_state, _dchunk_states):
        return _backward(ctx, dout, dlast_state, None, bwd=_bwd_impl)


def _through_custom_op(u: Tensor) -> bool:
    """The registered custom op, not the eager autograd.Function, where the op itself must be seen: under
    torch.compile (it traces the fake implementation), under a Python dispatch mode (mambaeye.models.profile's
    FLOP counter matches ``torch.ops.mambaeye.selective_scan_fwd``; FakeTensorMode) and on the meta device (the
    fake implementation gives the shapes at once instead of running the chunked torch scan op by op)."""
    return (torch.compiler.is_compiling() or u.device.type == "meta"
            or _python_dispatch._get_current_dispatch_mode() is not None)


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    backend: str = "auto",
    reverse: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan, as mamba-ssm's ``selective_scan_fn`` (see the module docstring for shapes/dtypes).

    Returns ``out`` (B, D, L) in u's dtype, and with ``return_last_state`` also the final state
    (B, D, N) in float32 (float64 for float64 inputs).

    ``reverse=True`` (not in mamba-ssm) walks the sequence from position L-1 down to 0, every input and output
    staying at its position: ``flip(scan(flip(inputs)))`` along L, which is how Vim's backward branch is
    defined; the last state is then the state after position 0. The triton backend walks backwards in its
    kernels, so no flipped copy is made; the other backends flip.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    backend = _resolve_backend(backend, u)
    if reverse and backend != "triton":
        def flip(t: Tensor | None) -> Tensor | None:  # per-step tensors only: fixed (D, N) B/C have no L
            return t.flip(-1) if t is not None and t.dim() >= 3 else t

        result = selective_scan(flip(u), flip(delta), A, flip(B), flip(C), D, flip(z), delta_bias, delta_softplus,
                                return_last_state, backend)
        return (result[0].flip(-1), result[1]) if return_last_state else result.flip(-1)
    if backend == "naive" or u.numel() == 0:  # an empty batch has nothing to launch: the reference returns it
        return selective_scan_naive(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if B.dim() == 3:
        B = B.unsqueeze(1)  # (B, N, L) -> (B, 1, N, L)
    if C.dim() == 3:
        C = C.unsqueeze(1)
    tensors = (u, delta, A, B, C, D, z, delta_bias)
    u, delta, A, B, C, D, z, delta_bias = (_normalise(t, backend) for t in tensors)
    save_states = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    scan = _scan_fwd if _through_custom_op(u) else _ScanFunction.apply
    out, last_state, _ = scan(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), save_states, backend,
                              bool(reverse))
    return (out, last_state) if return_last_state else out
