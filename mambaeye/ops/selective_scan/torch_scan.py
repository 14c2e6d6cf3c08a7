"""The ``torch`` backend of the selective scan: a chunked parallel scan in pure PyTorch, with its own backward.

Per batch b, channel d (group g) and state n, with ``a_t = exp(dt_t * A[d, n])`` and
``x_t = dt_t * B[b, g, n, t] * u_t``, the scan is the linear recurrence ``h_t = a_t * h_{t-1} + x_t``
read out as ``y_t = sum_n C[b, g, n, t] * h_t``; see :mod:`.naive` for the full specification.

Memory. The sequence is cut into *segments* whose (B, D, segment, N) working arrays fit in
``_SEGMENT_BUDGET_BYTES`` each (the forward holds two such arrays, the backward four); the state is
carried from one segment to the next, and the state entering every segment is what the forward saves for
the backward (``chunk_states``, (B, D, n_segments, N)). Nothing of shape (B, D, L, N) is ever built.

Within a segment of Ls steps (padded at the end to nc * T, where ``T ~ sqrt(Ls)``), step ``l = c * T + t``
lives at index ``[t, ..., c]`` of a (T, B, G, D // G, N, nc) array, so every time step of every chunk is
one contiguous slab and the recurrence runs over all nc chunks at once:

1. *chunk ends*: ``T`` slab steps give the state each chunk ends in when started from zero;
2. *chunk entries*: ``nc`` small (B, D, N) steps chain the chunks, using each chunk's total decay
   ``exp(A * sum(dt))`` (one exp of the summed log-decay), and give the true state entering each chunk;
3. *states*: ``T`` in-place ``addcmul_`` over the slabs run the recurrence again, every chunk started
   from its true entry state, turning the inputs x_t into the states h_t.

Numerics: every exponential is of a one-step or one-chunk log-decay ``dt * A`` (<= 0 for A <= 0), never a
cumulative product inverted or a growing positive exponent; exp is evaluated as exp2 with A * log2(e)
(faster on CPU, same accuracy). Arithmetic is in float32 (float64 for float64 inputs).

Channels are split as (G, D // G) so grouped B and C (T, B, G, 1, N, nc) broadcast over the channels of
their group without being copied per channel. Padded steps have ``dt = 0`` (decay 1, input 0), so they
carry the state unchanged and contribute nothing.

The backward processes the segments in reverse: it recomputes the segment's states from the saved entry
state, runs the reverse recurrence ``g_t = C_t dy_t + a_{t+1} g_{t+1}`` (``g`` = dL/dh_t, plus
``dlast_state`` at the very end) with the same chunked scheme, and forms all gradients from ``h``, ``g``
and ``a``:

- ``du_t = dt_t sum_n g_t B_t + D dy_t``, ``ddt_t = u_t sum_n g_t B_t + sum_n A g_t a_t h_{t-1}``,
- ``dA = sum_{b,t} dt_t g_t a_t h_{t-1}``, ``dB_t = sum_{d in g} g_t dt_t u_t``, ``dC_t = sum_{d in g} h_t dy_t``,

then chains ``ddt`` through softplus and ``delta_bias``. ``a_t h_{t-1}`` is formed without a shifted
copy of ``h``: the previous step's slab, or for ``t = 0`` the chunk's entry state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["num_state_chunks", "selective_scan_fwd", "selective_scan_bwd"]

# Bytes of one (B, D, segment, N) float32 array; tests may lower it (or _MAX_SEGMENT) to force many segments.
_SEGMENT_BUDGET_BYTES = 8 * 2**20
_MAX_SEGMENT: int | None = None
_LOG2_E = math.log2(math.e)


# ----------------------------------------------------------------------------------------------------
# Segments and the chunked layout


def _segment_steps(batch: int, dim: int, dstate: int) -> int:
    """Longest segment whose (B, D, segment, N) float32 array fits the budget."""
    steps = max(1, _SEGMENT_BUDGET_BYTES // (4 * batch * dim * dstate))
    return steps if _MAX_SEGMENT is None else max(1, min(steps, _MAX_SEGMENT))


def num_state_chunks(batch: int, dim: int, length: int, dstate: int) -> int:
    """Number of segments (states saved by the forward) for these sizes."""
    return -(-length // _segment_steps(batch, dim, dstate))


def _segments(length: int, n_segments: int) -> list[tuple[int, int]]:
    """Balanced [start, stop) bounds of the segments; the backward rebuilds them from n_segments."""
    size = -(-length // n_segments)
    return [(start, min(start + size, length)) for start in range(0, length, size)]


@dataclass(frozen=True)
class _Chunks:
    """A segment of ``length`` steps as nc chunks of T steps: step c * T + t sits at [t, ..., c]."""

    length: int
    T: int
    nc: int

    @classmethod
    def for_length(cls, length: int) -> _Chunks:
        # The python loops cost ~2 T + nc ops per segment (two slab passes, the chunk chain): T ~ sqrt(length / 2).
        T = max(1, round(math.sqrt(length / 2)))
        return cls(length, T, -(-length // T))

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """A (..., length) tensor as its full chunks (..., nc - 1, T) and its last chunk (..., T - pad)."""
        full = (self.nc - 1) * self.T
        return x[..., :full].unflatten(-1, (self.nc - 1, self.T)), x[..., full:]

    def to_chunks(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        """(..., length) -> (T, ..., nc) in ``dtype``, padded steps zero."""
        out = x.new_empty((self.T, *x.shape[:-1], self.nc), dtype=dtype)
        full, last = self.split(x)
        steps = out.movedim(0, -1)  # (..., nc, T) view of out
        steps[..., :-1, :].copy_(full)
        steps[..., -1, : last.shape[-1]].copy_(last)
        steps[..., -1, last.shape[-1] :].zero_()
        return out

    def from_chunks(self, x: Tensor, dest: Tensor) -> None:
        """Write (T, ..., nc) into ``dest`` (..., length), dropping the padded steps."""
        full, last = self.split(dest)
        steps = x.movedim(0, -1)
        full.copy_(steps[..., :-1, :])
        last.copy_(steps[..., -1, : last.shape[-1]])


def _groups(B: Tensor, C: Tensor) -> int:
    """Channel groups of the layout: the per-step B and C broadcast over D // groups channels each."""
    groups = 1
    for x in (B, C):
        if x.dim() == 4:
            groups = math.lcm(groups, x.shape[1])
    return groups


def _bc_chunks(x: Tensor, ch: _Chunks, start: int, groups: int, dtype: torch.dtype) -> Tensor:
    """B or C for one segment: fixed (D, N) -> (1, 1, G, D/G, N, 1); per step -> (T, B, G, 1, N, nc)."""
    if x.dim() == 2:
        return x.to(dtype).view(1, 1, groups, -1, x.shape[1], 1)
    batch, gx, dstate, _ = x.shape
    seg = x[..., start : start + ch.length].unsqueeze(2)  # (B, Gx, 1, N, Ls)
    seg = seg.expand(batch, gx, groups // gx, dstate, ch.length)  # groups of the layout refine x's groups
    return ch.to_chunks(seg, dtype).view(ch.T, batch, groups, 1, dstate, ch.nc)


def _bc_grad_to(dx: Tensor, x: Tensor, ch: _Chunks, start: int, groups: int, dest: Tensor) -> None:
    """Accumulate a chunked gradient of B or C into ``dest`` (x's shape, state dtype)."""
    if x.dim() == 2:  # fixed: dx is already reduced to (G, D/G, N)
        dest += dx.reshape(dest.shape)
        return
    batch, gx, dstate, _ = x.shape  # dx: (T, B, G, N, nc); fold the layout's groups back onto x's
    dx = dx.view(ch.T, batch, gx, groups // gx, dstate, ch.nc).sum(3)
    ch.from_chunks(dx, dest[..., start : start + ch.length])


def _softplus(x: Tensor) -> Tensor:
    """softplus(x) = max(x, 0) + log1p(exp(-|x|)), ~4x faster than F.softplus on CPU (torch's log1p is slow).

    log1p(e) is computed as log(v) - ((v - 1) - e) / v with v = 1 + e: the second term corrects the
    rounding of v to first order, so the result is accurate to a few ulps even where v rounds to 1.
    Unlike F.softplus there is no threshold (x > 20 gives x + exp(-x), which rounds to x anyway).
    """
    e = torch.exp(-x.abs())
    v = e + 1
    log1p = torch.log(v).sub_((v - 1).sub_(e).div_(v))
    return log1p.add_(x.clamp(min=0))


def _delta(delta: Tensor, delta_bias: Tensor | None, dtype: torch.dtype) -> Tensor:
    """delta (+ delta_bias) in the state dtype, before the softplus."""
    pre = delta.to(dtype)
    return pre + delta_bias.to(dtype)[:, None] if delta_bias is not None else pre


# ----------------------------------------------------------------------------------------------------
# The chunked scan of one segment. Shapes: slabs (B, G, Dg, N, nc); full arrays (T, B, G, Dg, N, nc).


def _decays(dt: Tensor, A2: Tensor) -> Tensor:
    """a_t = exp(dt_t A) = 2^(dt_t A log2 e) (T, B, G, Dg, N, nc).

    ``A2`` is A * log2(e): exp2 is ~3x faster than exp on CPU. dt_t A is the exact log-decay of one step,
    so no exp of a growing (or positive, for A <= 0) sum is ever taken.
    """
    return torch.mul(dt, A2).exp2_()


def _chunk_decay(dt: Tensor, A2: Tensor) -> Tensor:
    """Total decay of each chunk, exp(A * sum_t dt_t) (B, G, Dg, N, nc): the product of its a_t, in one exp."""
    return torch.exp2(dt.sum(0) * A2[0])


def _chain_chunks(ends: Tensor, decay: Tensor, first: Tensor) -> tuple[Tensor, Tensor]:
    """Sequential scan over the chunks: s_0 = first, s_{c+1} = decay_c * s_c + ends_c.

    ``ends`` and ``decay`` (B, G, Dg, N, nc); ``first`` (B, G, Dg, N). Returns s_0 ... s_{nc-1} as
    (B, G, Dg, N, nc) (the state entering each chunk) and s_nc (the state leaving the last one).
    """
    ends, decay = ends.movedim(-1, 0).contiguous(), decay.movedim(-1, 0).contiguous()
    states = ends.new_empty((ends.shape[0] + 1, *first.shape))
    states[0] = first
    s = states.unbind(0)  # unbind once: indexing inside the loop costs more than the tiny addcmul
    for e, d, prev, nxt in zip(ends.unbind(0), decay.unbind(0), s[:-1], s[1:], strict=True):
        torch.addcmul(e, d, prev, out=nxt)
    return states[:-1].movedim(0, -1).contiguous(), s[-1]


def _forward_states(a: Tensor, x: Tensor, decay: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
    """h_t = a_t h_{t-1} + x_t, in place: x holds x_t on entry and h_t on exit (a is left unchanged).

    Returns the state entering every chunk (B, G, Dg, N, nc) and the segment's last state (B, G, Dg, N).
    """
    T, xs, as_ = x.shape[0], x.unbind(0), a.unbind(0)  # the slabs of one step
    # Pass 1: the state each chunk ends in when it starts from zero (two ping-pong slabs).
    end, spare = xs[0].clone(), torch.empty_like(xs[0])
    for t in range(1, T):
        torch.addcmul(xs[t], as_[t], end, out=spare)
        end, spare = spare, end
    entry, last = _chain_chunks(end, decay, h0)
    # Pass 2: the states, every chunk started from its true entry state.
    xs[0].addcmul_(as_[0], entry)
    for t in range(1, T):
        xs[t].addcmul_(as_[t], xs[t - 1])
    return entry, last


def _reverse_states(a: Tensor, w: Tensor, decay: Tensor, g_after: Tensor) -> Tensor:
    """g_t = w_t + a_{t+1} g_{t+1}, in place: w holds C_t dy_t on entry and g_t = dL/dh_t on exit.

    ``g_after`` is a_{t+1} g_{t+1} of the step just after the segment (dlast_state after the last one).
    Returns a_0 g_0 of the segment's first step: the same quantity for the segment before.
    """
    T, ws, as_ = w.shape[0], w.unbind(0), a.unbind(0)
    # Pass 1: each chunk's g_0 when nothing flows in from after it.
    first, spare = ws[-1].clone(), torch.empty_like(ws[0])
    for t in range(T - 2, -1, -1):
        torch.addcmul(ws[t], as_[t + 1], first, out=spare)
        first, spare = spare, first
    # What flows into chunk c from after it, e_c = a_0 g_0 of chunk c + 1: the forward's chain run over the
    # chunks in reverse order, e_{nc-1} = g_after, e_c = (a_0 g_0 from zero of chunk c + 1) + decay_{c+1} e_{c+1}.
    exits, _ = _chain_chunks((as_[0] * first).flip(-1), decay.flip(-1), g_after)
    # Pass 2: g, every chunk started from what flows into its last step.
    ws[-1].add_(exits.flip(-1))
    for t in range(T - 2, -1, -1):
        ws[t].addcmul_(as_[t + 1], ws[t + 1])
    return as_[0][..., 0] * ws[0][..., 0]


def _segment_forward(dt, dtu, A2, B, C, h0) -> tuple[Tensor, Tensor]:
    """y_t = sum_n C_t h_t (T, B, G, Dg, 1, nc) and the last state for one segment."""
    a = _decays(dt, A2)
    h = torch.mul(dtu, B)  # x_t = dt_t u_t B_t
    _, last = _forward_states(a, h, _chunk_decay(dt, A2), h0)
    y = torch.mul(h, C, out=a).sum(4, keepdim=True)  # a is free now: reuse it for the product
    return y, last


# ----------------------------------------------------------------------------------------------------
# Forward


def selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, save_states: bool):
    """(out (B, D, L) u.dtype, last_state (B, D, N), states entering each segment or an empty tensor)."""
    sdt = torch.float64 if u.dtype == torch.float64 else torch.float32
    batch, dim, length = u.shape
    dstate = A.shape[1]
    groups = _groups(B, C)
    lay = (batch, groups, dim // groups, dstate)  # layout of a state slab
    pre = _delta(delta, delta_bias, sdt)
    dt = _softplus(pre) if delta_softplus else pre
    dtu = dt * u.to(sdt)
    A2 = A.to(sdt).view(1, 1, groups, dim // groups, dstate, 1) * _LOG2_E

    n_seg = num_state_chunks(batch, dim, length, dstate)
    states = u.new_empty((batch, dim, n_seg, dstate) if save_states else (0,), dtype=sdt)
    y = u.new_empty((batch, dim, length), dtype=sdt)
    h = u.new_zeros(lay, dtype=sdt)
    for i, (start, stop) in enumerate(_segments(length, n_seg)):
        if save_states:
            states[:, :, i] = h.view(batch, dim, dstate)
        ch = _Chunks.for_length(stop - start)
        chunk = (ch.T, *lay[:3], 1, ch.nc)
        dt6 = ch.to_chunks(dt[..., start:stop], sdt).view(chunk)
        dtu6 = ch.to_chunks(dtu[..., start:stop], sdt).view(chunk)
        B6 = _bc_chunks(B, ch, start, groups, sdt)
        C6 = _bc_chunks(C, ch, start, groups, sdt)
        y6, h = _segment_forward(dt6, dtu6, A2, B6, C6, h)
        ch.from_chunks(y6.view(ch.T, batch, dim, ch.nc), y[..., start:stop])

    if D is not None:
        y.addcmul_(D.to(sdt)[:, None], u.to(sdt))
    if z is not None:
        y.mul_(F.silu(z.to(sdt)))
    return y.to(u.dtype), h.reshape(batch, dim, dstate).clone(), states


# ----------------------------------------------------------------------------------------------------
# Backward


@dataclass
class _Grads:
    """Accumulators in the state dtype: per-step (B, D, L) results and the parameter gradients."""

    y: Tensor  # recomputed sum_n C h (needed for dz)
    du: Tensor  # scan part of du (D dy is added at the end)
    ddt: Tensor  # dL/d dt (after the softplus)
    dA: Tensor
    dB: Tensor
    dC: Tensor


def _segment_backward(dt, dtu, u, dy, A, B, C, h0, g_after, fixed_B: bool, fixed_C: bool, need_y: bool):
    """Gradients of one segment. Per-channel inputs (T, B, G, Dg, 1, nc).

    Returns (y or None, du, ddt) per channel, dA (G, Dg, N), dB and dC (fixed: (G, Dg, N), per step:
    (T, B, G, N, nc)) and a_0 g_0 of the segment's first step for the segment before it.
    """
    A2 = A * _LOG2_E
    a = _decays(dt, A2)
    decay = _chunk_decay(dt, A2)
    h = torch.mul(dtu, B)
    entry, _ = _forward_states(a, h, decay, h0)
    g = torch.mul(C, dy)
    g_before = _reverse_states(a, g, decay, g_after)

    tmp = torch.empty_like(h)
    y = torch.mul(h, C, out=tmp).sum(4, keepdim=True) if need_y else None  # only the z gate needs y
    fixed_dims = (0, 1, 5)  # a fixed (D, N) weight sums over batch, chunk steps and chunks
    dC = torch.mul(h, dy, out=tmp).sum(fixed_dims if fixed_C else 3)
    dB = torch.mul(g, dtu, out=tmp).sum(fixed_dims if fixed_B else 3)
    gB = torch.mul(g, B, out=tmp).sum(4, keepdim=True)  # sum_n g_t B_t
    # q_t = g_t a_t h_{t-1}, in a's buffer: h_{t-1} is the previous slab, or the chunk's entry state at t = 0.
    q = a.mul_(g)
    q[1:].mul_(h[:-1])
    q[0].mul_(entry)
    dA = torch.mul(q, dt, out=tmp).sum(fixed_dims)
    ddt = torch.mul(q, A, out=tmp).sum(4, keepdim=True).addcmul_(gB, u)
    return y, gB.mul_(dt), ddt, dA, dB, dC, g_before


def selective_scan_bwd(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_states):
    """(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias), each in its input's dtype; None for absent inputs."""
    sdt = torch.float64 if u.dtype == torch.float64 else torch.float32
    batch, dim, length = u.shape
    dstate = A.shape[1]
    groups = _groups(B, C)
    lay = (batch, groups, dim // groups, dstate)
    pre = _delta(delta, delta_bias, sdt)
    dt = _softplus(pre) if delta_softplus else pre
    u_s = u.to(sdt)
    dtu = dt * u_s
    dout_s = dout.to(sdt)
    dy = dout_s * F.silu(z.to(sdt)) if z is not None else dout_s
    A6 = A.to(sdt).view(1, 1, groups, dim // groups, dstate, 1)

    acc = _Grads(
        y=u.new_empty((batch, dim, length), dtype=sdt),
        du=u.new_empty((batch, dim, length), dtype=sdt),
        ddt=u.new_empty((batch, dim, length), dtype=sdt),
        dA=A.new_zeros(A.shape, dtype=sdt),
        dB=B.new_zeros(B.shape, dtype=sdt),
        dC=C.new_zeros(C.shape, dtype=sdt),
    )
    g_after = dlast_state.to(sdt).reshape(lay) if dlast_state is not None else u.new_zeros(lay, dtype=sdt)
    segments = _segments(length, chunk_states.shape[2])
    for i in range(len(segments) - 1, -1, -1):
        start, stop = segments[i]
        ch = _Chunks.for_length(stop - start)
        chunk = (ch.T, *lay[:3], 1, ch.nc)

        h0 = chunk_states[:, :, i].to(sdt).reshape(lay)
        y6, du6, ddt6, dA, dB, dC, g_after = _segment_backward(
            *(ch.to_chunks(x[..., start:stop], sdt).view(chunk) for x in (dt, dtu, u_s, dy)), A6,
            _bc_chunks(B, ch, start, groups, sdt), _bc_chunks(C, ch, start, groups, sdt),
            h0, g_after, B.dim() == 2, C.dim() == 2, z is not None,
        )  # fmt: skip
        for src, dest in ((y6, acc.y), (du6, acc.du), (ddt6, acc.ddt)):
            if src is not None:
                ch.from_chunks(src.view(ch.T, batch, dim, ch.nc), dest[..., start:stop])
        acc.dA += dA.reshape(dim, dstate)
        _bc_grad_to(dB, B, ch, start, groups, acc.dB)
        _bc_grad_to(dC, C, ch, start, groups, acc.dC)

    return _finish_grads(acc, dout_s, dy, u_s, pre, u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def _finish_grads(acc, dout_s, dy, u_s, pre, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """The elementwise tail: D's skip term, the silu(z) gate, softplus and bias; cast to input dtypes."""
    du = acc.du
    dD = dz = ddelta_bias = None
    if D is not None:
        du.addcmul_(dy, D.to(du.dtype)[:, None])
        dD = (dy * u_s).sum((0, 2)).to(D.dtype)
    if z is not None:
        y = acc.y.addcmul_(D.to(u_s.dtype)[:, None], u_s) if D is not None else acc.y
        sig = torch.sigmoid(z.to(u_s.dtype))
        # d silu(z)/dz = sig (1 + z (1 - sig))
        dz = (dout_s * y * sig * (1 + z.to(u_s.dtype) * (1 - sig))).to(z.dtype)
    ddelta = acc.ddt.mul_(torch.sigmoid(pre)) if delta_softplus else acc.ddt  # softplus' = sigmoid
    if delta_bias is not None:
        ddelta_bias = ddelta.sum((0, 2)).to(delta_bias.dtype)
    return (
        du.to(u.dtype), ddelta.to(delta.dtype), acc.dA.to(A.dtype), acc.dB.to(B.dtype), acc.dC.to(C.dtype),
        dD, dz, ddelta_bias,
    )  # fmt: skip
