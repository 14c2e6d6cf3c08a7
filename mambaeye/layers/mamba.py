"""The Mamba-1 mixer (state-spaces/mamba ``mamba_ssm/modules/mamba_simple.py``), on (B, L, d_model).

Parameter names, shapes and initialisation are those of the official module, so its state dicts (and the
``mixer.*`` / ``mamba.*`` entries of Vim and U-Mamba checkpoints) load unchanged:

=================  ================================  ====================================================
name               shape                             initialisation
=================  ================================  ====================================================
in_proj.weight     (2 * d_inner, d_model)            nn.Linear default
conv1d.weight      (d_inner, 1, d_conv)              nn.Conv1d default (depthwise, causal)
conv1d.bias        (d_inner,)                        nn.Conv1d default (if conv_bias)
x_proj.weight      (dt_rank + 2 * d_state, d_inner)  nn.Linear default
dt_proj.weight     (d_inner, dt_rank)                U(-s, s), s = dt_scale / sqrt(dt_rank)
dt_proj.bias       (d_inner,)                        softplus^-1(dt), dt log-uniform in [dt_min, dt_max]
A_log              (d_inner, d_state)                log(1..d_state) per channel (S4D-real), float32
D                  (d_inner,)                        1, float32
out_proj.weight    (d_model, d_inner)                nn.Linear default
=================  ================================  ====================================================

The forward applies in_proj, x_proj, dt_proj and out_proj through their weights as 2-D matmuls on channel-major
activations (as mamba-ssm's fast path does), so forward hooks on those submodules do not fire.

A_log, D and dt_proj.bias are kept in float32 and tagged ``_no_weight_decay``; dt_proj.bias is also
tagged ``_no_reinit`` so model-level init loops (Vim's ``_init_weights``) leave it alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.causal_conv1d import causal_conv1d
from ..ops.selective_scan import BACKENDS, selective_scan

__all__ = ["Mamba", "dt_bias_init", "s4d_real_A_log"]


def dt_bias_init(
    d_inner: int,
    dt_min: float = 1e-3,
    dt_max: float = 0.1,
    dt_init_floor: float = 1e-4,
    device: torch.device | str | None = None,
) -> Tensor:
    """Mamba's dt bias: softplus^-1(dt) with dt log-uniform in [dt_min, dt_max], floored. (d_inner,) float32."""
    log_dt = torch.rand(d_inner, device=device) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    dt = torch.exp(log_dt).clamp(min=dt_init_floor)
    # softplus^-1(dt) = dt + log(1 - exp(-dt)), written with expm1 to stay accurate for small dt
    return dt + torch.log(-torch.expm1(-dt))


def s4d_real_A_log(d_inner: int, d_state: int, device: torch.device | str | None = None) -> Tensor:
    """S4D-real initialisation: A_log[d, n] = log(n + 1), so A = -exp(A_log) = -(1..d_state). float32."""
    a = torch.arange(1, d_state + 1, dtype=torch.float32, device=device)
    return torch.log(a).repeat(d_inner, 1)


def dt_weight_init_(weight: Tensor, dt_rank: int, dt_scale: float = 1.0, dt_init: str = "random") -> Tensor:
    """In place: U(-s, s) ("random") or s ("constant"), s = dt_scale / sqrt(dt_rank), to keep dt's variance."""
    std = dt_rank**-0.5 * dt_scale
    with torch.no_grad():
        if dt_init == "random":
            return weight.uniform_(-std, std)
        return weight.fill_(std)


def _resolve_dt_rank(dt_rank: int | str, d_model: int) -> int:
    if dt_rank == "auto":
        return math.ceil(d_model / 16)
    if isinstance(dt_rank, bool) or not isinstance(dt_rank, int) or dt_rank < 1:
        raise ValueError(f"dt_rank must be 'auto' or a positive int, got {dt_rank!r}")
    return dt_rank


def check_ssm_args(
    d_model: int,
    d_state: int,
    d_inner: int,
    dt_min: float,
    dt_max: float,
    dt_init: str,
    dt_scale: float,
    dt_init_floor: float,
    backend: str,
) -> None:
    """Eager checks shared by the Mamba, BiMamba and SS2D constructors."""
    for name, value in (("d_model", d_model), ("d_state", d_state)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if d_inner < 1:
        raise ValueError(f"the inner width (expand / ssm_ratio times d_model) must be >= 1, got {d_inner}")
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
    if dt_init not in ("random", "constant"):
        raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
    if not dt_scale > 0:
        raise ValueError(f"dt_scale must be > 0, got {dt_scale}")
    if dt_init_floor < 0:
        raise ValueError(f"dt_init_floor must be >= 0, got {dt_init_floor}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _fp32(t: Tensor) -> Tensor:
    """The scan's weights are float32 whatever the activations' dtype; float64 stays (for gradient checks)."""
    return t if t.dtype == torch.float64 else t.float()


def _fp32_param(data: Tensor) -> nn.Parameter:
    p = nn.Parameter(data.float())
    p._no_weight_decay = True
    return p


def channel_major(t: Tensor) -> Tensor:
    """(B, D, L) -> the (D, B * L) matrix of its values: a view when t is stored channel-major, else a copy."""
    return t.transpose(0, 1).reshape(t.shape[1], -1)


def in_proj_channel_major(hidden_states: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """nn.Linear on (B, L, d_model), returned as (B, out, L) stored channel-major, i.e. (out, B, L) in memory.

    One 2-D matmul, weight @ hidden^T, as mamba-ssm computes its in_proj: every tensor of the branch after it
    (conv output, dt, B, C, delta, the scan output) is then a view of a (channels, B * L) matrix, and the
    projections between them are plain matmuls - no transposed copies.
    """
    batch, length, _ = hidden_states.shape
    flat = hidden_states.reshape(batch * length, -1).t()  # (d_model, B * L), a view
    out = torch.mm(weight, flat) if bias is None else torch.addmm(bias[:, None], weight, flat)
    return out.view(-1, batch, length).transpose(0, 1)


def out_proj_channel_major(y: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """nn.Linear over the channels of y (B, D, L) -> (B, L, out); no copy when y is stored channel-major."""
    batch, _, length = y.shape
    return F.linear(channel_major(y).t(), weight, bias).view(batch, length, -1)


def mamba_ssm_branch(
    x: Tensor,
    z: Tensor | None,
    conv_weight: Tensor,
    conv_bias: Tensor | None,
    x_proj_weight: Tensor,
    dt_proj_weight: Tensor,
    dt_proj_bias: Tensor,
    A_log: Tensor,
    D: Tensor,
    reverse: bool = False,
    backend: str = "auto",
    length: int | None = None,
) -> Tensor:
    """The Mamba-1 inner path: depthwise conv + SiLU, x_proj -> (dt, B, C), dt_proj, selective scan, gate.

    x, z: (B, d_inner, L), best stored channel-major (see :func:`in_proj_channel_major`); conv_weight
    (d_inner, 1, d_conv); x_proj_weight (R + 2N, d_inner); dt_proj_weight (d_inner, R); dt_proj_bias (d_inner,);
    A_log (d_inner, N); D (d_inner,). Returns y * silu(z): (B, d_inner, L), channel-major on the triton path.

    ``reverse`` computes, in the original order, what the forward path computes on the flipped sequence
    (Vim's backward branch): flip(branch(flip(x), flip(z))). Nothing is flipped: the conv is anti-causal,
    x_proj / dt_proj are per-position, and the scan walks the sequence backwards
    (``selective_scan(..., reverse=True)``).

    ``length``: the sequence's true length when the caller padded it (:class:`~mambaeye.layers.BiMamba`): x must be
    zero from there on. Delta is set to -inf there (softplus -> 0: decay 1, input 0), so the state passes the
    padding unchanged in either direction and the outputs before ``length`` are those of the unpadded sequence.
    """
    batch, d_inner, total = x.shape
    x = causal_conv1d(x, conv_weight, conv_bias, "silu", reverse=reverse, backend=backend)

    dstate = A_log.shape[1]
    rank = dt_proj_weight.shape[1]
    x_dbl = torch.mm(x_proj_weight, channel_major(x))  # (R + 2N, B * L)
    delta = torch.mm(dt_proj_weight, x_dbl[:rank])  # (d_inner, B * L); its bias is added in the scan (fp32)

    def per_batch(m: Tensor) -> Tensor:  # (C, B * L) -> (B, C, L) view
        return m.view(-1, batch, total).transpose(0, 1)

    delta, B, C = per_batch(delta), per_batch(x_dbl[rank:rank + dstate]), per_batch(x_dbl[rank + dstate:])
    # under autocast the projections and the conv may come out in different dtypes: the scan wants u's
    delta, B, C = delta.to(x.dtype), B.to(x.dtype), C.to(x.dtype)
    if length is not None and length < total:
        delta[..., length:] = float("-inf")  # in place: its gradient there is zero, as it should be
    z = z.to(x.dtype) if z is not None else None
    A = -torch.exp(_fp32(A_log))
    scan_args = dict(D=_fp32(D), delta_bias=_fp32(dt_proj_bias), delta_softplus=True, backend=backend)
    # reverse: the scan walks L backwards in place (no flipped copies with the triton backend)
    return selective_scan(x, delta, A, B, C, z=z, reverse=reverse, **scan_args)


class Mamba(nn.Module):
    """Mamba-1 mixer on (B, L, d_model) -> (B, L, d_model).

    in_proj -> (x, z); x: causal depthwise conv1d + SiLU -> x_proj -> (dt, B, C) -> dt_proj -> selective scan
    with D skip and SiLU(z) gate -> out_proj. ``d_inner = int(expand * d_model)``, ``dt_rank = "auto"`` is
    ceil(d_model / 16). ``backend`` is passed to :func:`mambaeye.ops.selective_scan`.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(d_conv, bool) or not isinstance(d_conv, int) or d_conv < 1:
            raise ValueError(f"d_conv must be a positive int, got {d_conv!r}")
        if not (isinstance(expand, (int, float)) and expand > 0):
            raise ValueError(f"expand must be > 0, got {expand!r}")
        d_inner = int(expand * d_model) if isinstance(d_model, int) else 0
        check_ssm_args(d_model, d_state, d_inner, dt_min, dt_max, dt_init, dt_scale, dt_init_floor, backend)
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = d_inner
        self.dt_rank = _resolve_dt_rank(dt_rank, d_model)
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self.dt_init, self.dt_scale = dt_init, dt_scale
        self.backend = backend
        factory = {"device": device, "dtype": dtype}

        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=bias, **factory)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, padding=d_conv - 1, groups=d_inner, bias=conv_bias,
                                **factory)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True, **factory)
        self.dt_proj.bias = _fp32_param(torch.empty(d_inner, device=device))
        self.dt_proj.bias._no_reinit = True
        self.A_log = _fp32_param(torch.empty(d_inner, d_state, device=device))
        self.D = _fp32_param(torch.empty(d_inner, device=device))
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias, **factory)
        self._make_extra_parameters()
        self.reset_parameters()

    def _make_extra_parameters(self) -> None:
        """Hook for subclasses (BiMamba's backward branch), run before the first reset_parameters."""

    def reset_parameters(self) -> None:
        """The official initialisation (see the module docstring)."""
        for m in (self.in_proj, self.conv1d, self.x_proj, self.out_proj):
            m.reset_parameters()
        dt_weight_init_(self.dt_proj.weight, self.dt_rank, self.dt_scale, self.dt_init)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt_bias_init(self.d_inner, self.dt_min, self.dt_max, self.dt_init_floor,
                                                 self.A_log.device))
            self.A_log.copy_(s4d_real_A_log(self.d_inner, self.d_state, self.A_log.device))
            self.D.fill_(1.0)

    def _check_input(self, hidden_states: Tensor) -> None:
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(
                f"expected input of shape (B, L, d_model={self.d_model}), got {tuple(hidden_states.shape)}"
            )

    def forward(self, hidden_states: Tensor) -> Tensor:
        """hidden_states: (B, L, d_model) -> (B, L, d_model)."""
        self._check_input(hidden_states)
        xz = in_proj_channel_major(hidden_states, self.in_proj.weight, self.in_proj.bias)  # (B, 2 * d_inner, L)
        x, z = xz.chunk(2, dim=1)
        y = mamba_ssm_branch(
            x, z, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
            self.dt_proj.bias, self.A_log, self.D, backend=self.backend,
        )  # (B, d_inner, L)
        return out_proj_channel_major(y, self.out_proj.weight, self.out_proj.bias)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, d_conv={self.d_conv}, "
                f"dt_rank={self.dt_rank}, backend={self.backend!r}")
