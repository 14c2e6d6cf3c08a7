"""The selective scan (S6) as a sequential recurrence: the specification the fast backends are tested against.

For every batch b, channel d and state n (``g`` is the group of channel d)::

    delta'_t = softplus(delta_t + delta_bias)            (or delta_t + delta_bias, or delta_t)
    h_t      = exp(delta'_t * A[d, n]) * h_{t-1} + delta'_t * B[b, g, n, t] * u_t      (h_{-1} = 0)
    y_t      = sum_n C[b, g, n, t] * h_t + D[d] * u_t
    out_t    = y_t * silu(z_t)                             (when z is given)

The state is kept in float32 (float64 when u is float64); ``out`` has u's dtype. Gradients come from
autograd through this loop, so it is slow and memory hungry: use it to check, never to train.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _per_step(x: Tensor, dim: int) -> Tensor:
    """Fixed (D, N) or per-step (B, N, L) / (B, G, N, L) B or C -> a view of shape (B | 1, D, N, L)."""
    if x.dim() == 2:  # fixed: (D, N)
        return x[None, :, :, None]
    if x.dim() == 3:  # one group: (B, N, L)
        return x[:, None]
    groups = x.shape[1]  # (B, G, N, L): channel d reads group d // (D // G)
    return x.repeat_interleave(dim // groups, dim=1)


def selective_scan_naive(
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
) -> Tensor | tuple[Tensor, Tensor]:
    """Reference selective scan. Shapes as in :func:`mambaeye.ops.selective_scan`.

    u, delta, z: (B, D, L); A: (D, N); B, C: (D, N) | (B, N, L) | (B, G, N, L); D, delta_bias: (D,).
    Returns out (B, D, L) in u's dtype, and the last state h_{L-1} (B, D, N) if asked.
    """
    state_dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    batch, dim, length = u.shape
    u_f = u.to(state_dtype)
    dt = delta.to(state_dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(state_dtype)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    A = A.to(state_dtype)
    B_steps = _per_step(B.to(state_dtype), dim)  # (B | 1, D, N, L | 1)
    C_steps = _per_step(C.to(state_dtype), dim)

    h = u_f.new_zeros(batch, dim, A.shape[1])  # (B, D, N)
    ys = []
    for t in range(length):
        b_t = B_steps[..., min(t, B_steps.shape[-1] - 1)]
        c_t = C_steps[..., min(t, C_steps.shape[-1] - 1)]
        decay = torch.exp(dt[:, :, t, None] * A)  # (B, D, N)
        h = decay * h + (dt[:, :, t] * u_f[:, :, t])[:, :, None] * b_t
        ys.append((h * c_t).sum(-1))  # (B, D)
    y = torch.stack(ys, dim=-1)  # (B, D, L)
    if D is not None:
        y = y + D.to(state_dtype)[:, None] * u_f
    if z is not None:
        y = y * F.silu(z.to(state_dtype))
    out = y.to(u.dtype)
    return (out, h) if return_last_state else out
