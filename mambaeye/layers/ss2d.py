"""VMamba's SS2D mixer (MzeroMiko/VMamba ``classification/models/vmamba.py``) and its 3D extension.

Data path (one class for 2D and 3D through ``spatial_dims``)::

    in_proj -> [x, z = split; z = SiLU(z)] -> depthwise conv (k x k, "same") -> SiLU
            -> cross_selective_scan (K directions, sum, out_norm)          [mambaeye.ops.cross_scan]
            -> [y * z] -> out_proj -> dropout

Parameters, named as in the official checkpoints (K = directions, Di = d_inner = int(ssm_ratio * d_model),
R = dt_rank, N = d_state):

=================  ==================  ===================================================================
name               shape               initialisation (official "v0" initialize)
=================  ==================  ===================================================================
in_proj.weight     (Di or 2 Di, C)     nn.Linear default; 2 Di (x and z) when with_z
conv2d.weight      (Di, 1, k, k)       nn.Conv2d default (``conv3d.weight`` (Di, 1, k, k, k) in 3D)
conv2d.bias        (Di,)               nn.Conv2d default, when conv_bias
x_proj_weight      (K, R + 2N, Di)     nn.Linear default per direction: U(-1/sqrt(Di), 1/sqrt(Di))
dt_projs_weight    (K, Di, R)          U(-s, s), s = dt_scale / sqrt(R)
dt_projs_bias      (K, Di)             softplus^-1(dt), dt log-uniform in [dt_min, dt_max], float32
A_logs             (K * Di, N)         log(1..N) (S4D-real), float32
Ds                 (K * Di,)           1, float32
out_norm.weight    (Di,)               1   (LayerNorm over channels)
out_norm.bias      (Di,)               0
out_proj.weight    (C, Di)             nn.Linear default
=================  ==================  ===================================================================

VMamba v2 blocks (forward_type "v05_noz"): ``SS2D(C, d_state=1, ssm_ratio=1.0 or 2.0, d_conv=3,
conv_bias=False, with_z=False, channel_first=True)``. VMamba v0 / Swin-UMamba: ``SS2D(C, d_state=16,
ssm_ratio=2.0, d_conv=3, conv_bias=True, with_z=True, force_fp32=True)``.

``directions``: 1 (row-major), 2 (row-major and reversed) or 4 (official) in 2D; 1, 2 or 6 in 3D. Unlike
VMamba's "v051d"/"v052d" ablations, which keep 4 parameter sets and scan duplicated sequences, K here is the
number of parameter sets. A_logs, Ds and dt_projs_bias are tagged ``_no_weight_decay``.

``fused`` (default: on with the triton backend in 2D) runs the scan with the direction order inside the
kernels (:mod:`mambaeye.ops.cross_scan.fused`) instead of writing re-ordered copies; False forces the
explicit PyTorch cross-scan/merge reference. With the triton backend in 2D the depthwise conv and its SiLU are
also one kernel (:mod:`mambaeye.ops.dwconv`), reading ``conv2d``'s parameters without calling the module (its
hooks do not fire there); with 4 fused directions that kernel writes the scan's row- and column-major layouts
itself (``cross_selective_scan(..., conv_weight=...)``). Channel-first, in_proj and out_proj are
:func:`mambaeye.layers.pointwise.pointwise_linear`: on a map stored batch-second (how VSSM stores its maps) each is
one matrix product, and the output keeps that layout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops._layout import is_batch_second
from ..ops.cross_scan import cross_selective_scan, default_directions, valid_directions
from ..ops.selective_scan import _resolve_backend
from .mamba import _fp32_param, _resolve_dt_rank, check_ssm_args, dt_bias_init, s4d_real_A_log
from .pointwise import pointwise_linear

__all__ = ["SS2D", "SS3D"]


class SS2D(nn.Module):
    """2D (or 3D) selective-scan mixer.

    Input and output: (B, H, W, C), or (B, C, H, W) with ``channel_first``; in 3D (B, D, H, W, C) or
    (B, C, D, H, W). ``directions=None`` means all: 4 in 2D, 6 in 3D. ``d_conv <= 1`` means no conv (the
    SiLU is still applied, as in VMamba). ``backend`` is passed to :func:`mambaeye.ops.selective_scan`.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 1,
        ssm_ratio: float = 1.0,
        dt_rank: int | str = "auto",
        d_conv: int = 3,
        conv_bias: bool = False,
        with_z: bool = False,
        directions: int | None = None,
        channel_first: bool = False,
        spatial_dims: int = 2,
        bias: bool = False,
        dropout: float = 0.0,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        force_fp32: bool = False,
        backend: str = "auto",
        fused: bool | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if directions is None:
            directions = default_directions(spatial_dims)
        if directions not in valid_directions(spatial_dims):
            raise ValueError(f"directions must be one of {valid_directions(spatial_dims)} for "
                             f"spatial_dims={spatial_dims}, got {directions!r}")
        if isinstance(d_conv, bool) or not isinstance(d_conv, int) or d_conv < 0:
            raise ValueError(f"d_conv must be a non-negative int, got {d_conv!r}")
        if d_conv > 1 and d_conv % 2 == 0:
            raise ValueError(f"d_conv must be odd (a 'same' depthwise conv), or <= 1 for no conv; got {d_conv}")
        if not (isinstance(ssm_ratio, (int, float)) and ssm_ratio > 0):
            raise ValueError(f"ssm_ratio must be > 0, got {ssm_ratio!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        d_inner = int(ssm_ratio * d_model) if isinstance(d_model, int) else 0
        check_ssm_args(d_model, d_state, d_inner, dt_min, dt_max, dt_init, dt_scale, dt_init_floor, backend)

        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = d_inner
        self.dt_rank = _resolve_dt_rank(dt_rank, d_model)
        self.d_conv = d_conv
        self.with_z = with_z
        self.directions = directions
        self.channel_first = channel_first
        self.spatial_dims = spatial_dims
        self.force_fp32 = force_fp32
        self.backend = backend
        self.fused = fused
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self.dt_init, self.dt_scale = dt_init, dt_scale
        factory = {"device": device, "dtype": dtype}
        k, rank = directions, self.dt_rank

        self.in_proj = nn.Linear(d_model, d_inner * (2 if with_z else 1), bias=bias, **factory)
        self._conv_name = f"conv{spatial_dims}d"
        if d_conv > 1:
            conv_cls = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
            conv = conv_cls(d_inner, d_inner, d_conv, padding=(d_conv - 1) // 2, groups=d_inner, bias=conv_bias,
                            **factory)
            self.add_module(self._conv_name, conv)
        self.x_proj_weight = nn.Parameter(torch.empty(k, rank + 2 * d_state, d_inner, **factory))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, rank, **factory))
        self.dt_projs_bias = _fp32_param(torch.empty(k, d_inner, device=device))
        self.A_logs = _fp32_param(torch.empty(k * d_inner, d_state, device=device))
        self.Ds = _fp32_param(torch.empty(k * d_inner, device=device))
        self.out_norm = nn.LayerNorm(d_inner, **factory)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias, **factory)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_parameters()

    @property
    def conv(self) -> nn.Module | None:
        """The depthwise conv (registered as ``conv2d`` or ``conv3d``), or None when d_conv <= 1."""
        return self._modules.get(self._conv_name)

    def reset_parameters(self) -> None:
        """The official initialisation (see the module docstring)."""
        for m in (self.in_proj, self.conv, self.out_norm, self.out_proj):
            if m is not None:
                m.reset_parameters()
        k, d_inner = self.directions, self.d_inner
        bound = 1 / math.sqrt(d_inner)  # nn.Linear(d_inner, R + 2N)'s default init, one per direction
        std = self.dt_rank**-0.5 * self.dt_scale
        with torch.no_grad():
            self.x_proj_weight.uniform_(-bound, bound)
            if self.dt_init == "random":
                self.dt_projs_weight.uniform_(-std, std)
            else:
                self.dt_projs_weight.fill_(std)
            for i in range(k):
                self.dt_projs_bias[i].copy_(dt_bias_init(d_inner, self.dt_min, self.dt_max, self.dt_init_floor,
                                                         self.A_logs.device))
            self.A_logs.copy_(s4d_real_A_log(k * d_inner, self.d_state, self.A_logs.device))
            self.Ds.fill_(1.0)

    def _check_input(self, x: Tensor) -> None:
        ndim = 2 + self.spatial_dims
        channels = x.shape[1] if self.channel_first else x.shape[-1]
        if x.dim() != ndim or channels != self.d_model:
            grid = "H, W" if self.spatial_dims == 2 else "D, H, W"
            layout = f"(B, C={self.d_model}, {grid})" if self.channel_first else f"(B, {grid}, C={self.d_model})"
            raise ValueError(f"expected input of shape {layout}, got {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, *spatial, C), or (B, C, *spatial) with channel_first -> same shape (channel-first: stored
        batch-second when x is, :mod:`mambaeye.ops._layout`)."""
        self._check_input(x)
        batch_second = self.channel_first and is_batch_second(x)
        if self.channel_first:
            xz = pointwise_linear(x, self.in_proj.weight, self.in_proj.bias)  # (B, Di[*2], *S)
            z = None
            if self.with_z:
                x, z = xz.chunk(2, dim=1)
                z = F.silu(z)
            else:
                x = xz
        else:
            xz = self.in_proj(x)  # (B, *S, Di[*2])
            z = None
            if self.with_z:
                x, z = xz.chunk(2, dim=-1)
                z = F.silu(z)
            else:
                x = xz
            x = x.movedim(-1, 1).contiguous()  # (B, Di, *S)
        conv = self.conv
        conv_args = {}
        if conv is not None and self.spatial_dims == 2 and conv.kernel_size[0] % 2 == 1 and (
                _resolve_backend(self.backend, x) == "triton"):
            # SiLU(conv) in one pass inside the cross-scan, which may write it in the scan's layouts at once
            conv_args = dict(conv_weight=conv.weight, conv_bias=conv.bias)
        else:
            x = F.silu(conv(x) if conv is not None else x)

        y = cross_selective_scan(
            x, self.x_proj_weight, self.dt_projs_weight, self.dt_projs_bias, self.A_logs, self.Ds,
            out_norm=True, out_norm_weight=self.out_norm.weight, out_norm_bias=self.out_norm.bias,
            out_norm_eps=self.out_norm.eps, channel_last=not self.channel_first, force_fp32=self.force_fp32,
            backend=self.backend, fused=self.fused, batch_second=batch_second, **conv_args,
        )  # (B, Di, *S) or (B, *S, Di)
        if z is not None:
            y = y * z
        if self.channel_first:
            out = pointwise_linear(y, self.out_proj.weight, self.out_proj.bias)
        else:
            out = self.out_proj(y)
        return self.dropout(out)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, dt_rank={self.dt_rank}, "
                f"directions={self.directions}, spatial_dims={self.spatial_dims}, with_z={self.with_z}, "
                f"channel_first={self.channel_first}, backend={self.backend!r}")


class SS3D(SS2D):
    """:class:`SS2D` for volumes: ``SS2D(..., spatial_dims=3)``; 6 directions by default (see
    :func:`mambaeye.ops.cross_scan.scan_orders`). Input (B, D, H, W, C) or, channel_first, (B, C, D, H, W)."""

    def __init__(self, d_model: int, **kwargs) -> None:
        if kwargs.setdefault("spatial_dims", 3) != 3:
            raise ValueError(f"SS3D is 3D: spatial_dims must be 3, got {kwargs['spatial_dims']!r}")
        super().__init__(d_model, **kwargs)
