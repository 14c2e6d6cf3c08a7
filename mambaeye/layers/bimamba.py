"""Vim's bidirectional mixer, ``bimamba_type="v2"`` (hustvl/Vim ``mamba-1p1p1/mamba_ssm/modules/mamba_simple.py``).

One in_proj and one out_proj are shared; the forward branch has Mamba's parameters (conv1d, x_proj,
dt_proj, A_log, D), the backward branch its own copies with a ``_b`` suffix (conv1d_b, x_proj_b,
dt_proj_b, A_b_log, D_b) and runs on the reversed sequence, z reversed too. The two gated outputs are summed,
halved when ``divide_out`` (Vim's ``if_devide_out=True``, used by every released Vim model), then out_proj.

Initialisation, as in the official module: the forward branch is Mamba's; A_b_log is S4D-real and D_b is 1
(float32, ``_no_weight_decay``); conv1d_b, x_proj_b and dt_proj_b keep PyTorch's default nn.Conv1d /
nn.Linear init (Vim does not apply Mamba's dt init to dt_proj_b). ``backward_dt_init="mamba"`` gives
dt_proj_b Mamba's dt init instead. Vim's model-level ``_init_weights`` later zeroes every nn.Linear bias
not tagged ``_no_reinit``, which includes dt_proj_b.bias: that belongs to the model, not to this layer.

Aligned sequences. The Triton scan and conv load a step range as one 16-byte vector only where L and the row
strides are multiples of 8 (bf16); Vim's L = H' W' + 1 is odd. A caller may pad the sequence to
:func:`aligned_length` and pass the true length: ``BiMamba(hidden, length)``. Vim pads its tokens once for all
blocks. H100 (benchmarks/NOTES.md), Vim-Ti at 1248^2 (L 6085 -> 6088), batch 8 inference: 33.6 -> 29.1 ms a step;
at 512^2 (L 1025 -> 1032), batch 32: inference 18.0 -> 16.7 ms, training 89.6 -> 87.8 ms; at 224^2 (L 197 -> 200)
training lost 1.6% (the padding's copies outweigh the scan's gain), hence ``ALIGN_MIN_LENGTH``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ops.selective_scan import _resolve_backend
from .mamba import (
    Mamba,
    _fp32_param,
    dt_bias_init,
    dt_weight_init_,
    in_proj_channel_major,
    mamba_ssm_branch,
    out_proj_channel_major,
    s4d_real_A_log,
)

__all__ = ["BiMamba", "aligned_length"]

ALIGN = 8  # steps: 16 bytes of bf16
ALIGN_MIN_LENGTH = 1024  # shorter sequences run unpadded (see the module docstring)


def aligned_length(length: int, backend: str, x: Tensor) -> int:
    """The length to pad a sequence of ``length`` steps to before BiMamba, for the scan ``backend`` on x's device:
    the next multiple of ``ALIGN`` where the scan runs on Triton and the sequence is long, else ``length``."""
    if length < ALIGN_MIN_LENGTH or _resolve_backend(backend, x) != "triton":
        return length
    return -(-length // ALIGN) * ALIGN


class BiMamba(Mamba):
    """Bidirectional Mamba mixer (Vim "v2") on (B, L, d_model) -> (B, L, d_model).

    Same arguments as :class:`Mamba`, plus ``divide_out`` (average the two directions instead of summing)
    and ``backward_dt_init`` ("torch": Vim's default nn.Linear init of dt_proj_b; "mamba": Mamba's dt init).
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
        divide_out: bool = True,
        backward_dt_init: str = "torch",
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if backward_dt_init not in ("torch", "mamba"):
            raise ValueError(f"backward_dt_init must be 'torch' or 'mamba', got {backward_dt_init!r}")
        self.divide_out = divide_out
        self.backward_dt_init = backward_dt_init
        super().__init__(
            d_model, d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank, dt_min=dt_min, dt_max=dt_max,
            dt_init=dt_init, dt_scale=dt_scale, dt_init_floor=dt_init_floor, conv_bias=conv_bias, bias=bias,
            backend=backend, device=device, dtype=dtype,
        )

    def _make_extra_parameters(self) -> None:
        factory = {"device": self.out_proj.weight.device, "dtype": self.out_proj.weight.dtype}
        d_inner, device = self.d_inner, self.A_log.device
        self.conv1d_b = nn.Conv1d(d_inner, d_inner, self.d_conv, padding=self.d_conv - 1, groups=d_inner,
                                  bias=self.conv1d.bias is not None, **factory)
        self.x_proj_b = nn.Linear(d_inner, self.dt_rank + 2 * self.d_state, bias=False, **factory)
        self.dt_proj_b = nn.Linear(self.dt_rank, d_inner, bias=True, **factory)
        self.dt_proj_b.bias = _fp32_param(torch.empty(d_inner, device=device))
        self.A_b_log = _fp32_param(torch.empty(d_inner, self.d_state, device=device))
        self.D_b = _fp32_param(torch.empty(d_inner, device=device))

    def reset_parameters(self) -> None:
        """The official initialisation (see the module docstring)."""
        super().reset_parameters()
        self.conv1d_b.reset_parameters()
        self.x_proj_b.reset_parameters()
        if self.backward_dt_init == "mamba":
            dt_weight_init_(self.dt_proj_b.weight, self.dt_rank, self.dt_scale, self.dt_init)
            bias = dt_bias_init(self.d_inner, self.dt_min, self.dt_max, self.dt_init_floor, self.A_b_log.device)
        else:
            # nn.Linear's default: weight kaiming-uniform(a=sqrt(5)), bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            self.dt_proj_b.reset_parameters()
            bound = self.dt_rank**-0.5
            bias = torch.empty(self.d_inner).uniform_(-bound, bound)
        with torch.no_grad():
            self.dt_proj_b.bias.copy_(bias)
            self.A_b_log.copy_(s4d_real_A_log(self.d_inner, self.d_state, self.A_b_log.device))
            self.D_b.fill_(1.0)

    def forward(self, hidden_states: Tensor, length: int | None = None) -> Tensor:
        """hidden_states: (B, L, d_model) -> (B, L, d_model).

        ``length``: the true sequence length where the caller padded hidden_states (see :func:`aligned_length`);
        the tokens from ``length`` on may hold anything and affect only the outputs there.
        """
        self._check_input(hidden_states)
        total = hidden_states.shape[1]
        if length is not None and not 0 < length <= total:
            raise ValueError(f"length must be in [1, {total}] (the padded sequence's length), got {length}")
        xz = in_proj_channel_major(hidden_states, self.in_proj.weight, self.in_proj.bias)  # (B, 2 * d_inner, L)
        if length is not None and length < total:
            xz[:, :self.d_inner, length:] = 0  # x: the reversed conv reads past the end: zeros, as its own padding
        x, z = xz.chunk(2, dim=1)
        y = mamba_ssm_branch(
            x, z, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
            self.dt_proj.bias, self.A_log, self.D, backend=self.backend, length=length,
        )
        y_b = mamba_ssm_branch(
            x, z, self.conv1d_b.weight, self.conv1d_b.bias, self.x_proj_b.weight, self.dt_proj_b.weight,
            self.dt_proj_b.bias, self.A_b_log, self.D_b, reverse=True, backend=self.backend, length=length,
        )  # already in the original order
        # (B, d_inner, L); the average in one kernel: lerp(y, y_b, 0.5) = (y + y_b) / 2
        y = torch.lerp(y, y_b, 0.5) if self.divide_out else y + y_b
        return out_proj_channel_major(y, self.out_proj.weight, self.out_proj.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", divide_out={self.divide_out}"
