"""Fused Triton kernels for the selective scan (forward and backward).

Reference: :mod:`.naive` (the recurrence) and mamba-ssm's ``selective_scan_fn``. Measurements and the
history of each design choice: benchmarks/NOTES.md.

Layout of the work. One program owns ``BLOCK_D`` channels of one batch element (all in one group of B and C,
so it reads one (N, L) row of each) and walks the sequence in tiles of ``BLOCK_L`` steps. A tile is a
(BLOCK_L, BLOCK_N, BLOCK_D) block of the recurrence ``h_t = a_t h_{t-1} + x_t`` with ``a_t = exp(dt_t A)`` and
``x_t = dt_t B_t u_t``. L comes first so that Triton's default layout puts the lanes on channels and states
and keeps a tile's steps inside each thread: ``tl.associative_scan`` along axis 0 with the combine
``(a1, x1) . (a2, x2) = (a1 a2, a2 x1 + x2)`` is then a sequential loop in registers, after the state entering
the tile has been folded into its first step. The state stays in registers from tile to tile: the forward
writes only ``out``, the last state and, when a backward will follow, the state entering each tile
(B, D, n_tiles, N) in fp32.

Parallelism. Programs are (channel block, batch); when that is too few to fill the GPU (long sequences at
small batch) the forward also splits L into segments: :func:`_scan_segment_kernel` computes each segment's end
state from zero and its total decay ``exp(A * sum dt)``, and each segment's program chains those into its
entering state. ``PREFETCH`` loads the next tile while the current one is scanned (a tuning switch of the
forward and backward kernels; the segment passes always load one tile ahead, see :func:`_segment_tile_loads`).

The backward walks the tiles in reverse. It recomputes the tile's forward from the saved entering state,
then solves the adjoint recurrence ``g_t = C_t dy_t + a_{t+1} g_{t+1}`` on the tile flipped along L (flip, forward
scan, flip: free register renames here, where Triton lowers a reverse associative_scan to warp shuffles). A register
tile cannot be shifted to line a_{t+1} up with step t, so the scan carries ``G_t = a_t g_t`` beside g
(:func:`_combine_adjoint`) and each step uses its own decay. It forms every gradient in registers; ``a_t h_{t-1}``
is read as ``h_t - x_t``, which avoids a second shift.
dB/dC of per-step B/C are summed over the program's channels and added with fp32 atomics into a
(B, G, N, L) buffer - no (B, D, N, L) buffer exists anywhere. Gradients of per-channel parameters (A, D,
delta_bias, fixed B/C) are written per (batch, channel) and summed over the batch by PyTorch.

Visiting orders (:func:`_seq_index`): the scan step l is read from, and written to, memory position l (plain) or
L - 1 - l (``reverse``, Vim's backward branch), so no flipped copy of the inputs or outputs is ever made. ``paired``:
the groups of B/C come in pairs that scan the same sequence of u forward (even group) and backward (odd group) - u
has half the channels of delta, du sums each pair's two groups, and dout may be one per pair (both groups read it as
they read u). VMamba's fused cross-scan (mambaeye.ops.cross_scan.fused) is the pairs (row, reversed row) and
(column, reversed column) of a grid. Walking backwards, the positions of a tile descend and Triton loads them
element by element; where L and the strides are multiples of 4 or more (``VEC``, :func:`_vector_width`) the kernels
instead read such tiles as chunks of 16 bytes in memory order and reverse each chunk in registers (``FLIP_TILES``,
:func:`_flipped_tile`: vector loads): the forward and its segment pass for a reverse scan, forward and backward for
a paired one (which then runs its forward and backward groups as two launches, ``PAIR_HALF``, each with its
direction a constexpr). H100, VMamba-T's 56x56 stage: paired backward 1.70 -> 1.36 ms, what the plain scan takes;
Vim-Ti at 1248^2 with aligned tokens: see benchmarks/NOTES.md.

Numerics: everything is computed in fp32 (fp64 for fp64 inputs); ``exp2`` of ``dt * A * log2(e)`` is always of
a non-positive number for A < 0, so nothing overflows.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from .._layout import strides_by_vector

__all__ = ["num_state_chunks", "selective_scan_fwd", "selective_scan_bwd"]


def _block_n(dstate: int) -> int:
    return triton.next_power_of_2(dstate)


# Longest tile in steps; tests lower it to force many tiles at small L.
MAX_TILE_L = 32


def _block_l(length: int, dstate: int, free: bool = False) -> int:
    """Steps per tile, held inside each thread. Also the spacing of the saved states, so the same in forward and
    backward: depends on (L, N) only. ``free``: a forward that saves no states (inference) may take longer tiles.
    H100 sweeps (benchmarks/scan_sweep.py): with states N=16 -> 8 steps, N=1 -> 32; free N=16 -> 16 where the
    forward keeps 8-channel blocks (_launch_config). Free N=1 stays at 32: 64 took the plain scan's forward at
    VMamba-T's stage 1 0.500 -> 0.462 ms, but VMamba-T inference 21.56 -> 22.05 ms (the fused SS2D scans).
    Refuted: N=1 with states on 8-step x 32-channel tiles (fewer SASS instructions a tile offline, saved states 4x
    denser): VMamba-T training 57.2 -> 68.7 ms a step on an H100 (benchmarks/NOTES.md, 2026-12-07)."""
    cap = (16 if free else 8) if _block_n(dstate) >= 8 else 32
    return max(2, min(triton.next_power_of_2(length), cap, MAX_TILE_L))


def num_state_chunks(batch: int, dim: int, length: int, dstate: int) -> int:
    return triton.cdiv(length, _block_l(length, dstate))


def _block_d(dim: int, groups: int, wanted: int) -> int:
    """Largest power of two <= wanted that divides the channels of a group (a tile never straddles groups)."""
    per_group = dim // groups
    block = 1
    while block * 2 <= wanted and per_group % (block * 2) == 0:
        block *= 2
    return block


def _groups(t: Tensor) -> int:
    return 1 if t.dim() == 2 else t.shape[1]


@triton.jit
def _combine(a1, x1, a2, x2):
    # (a1, x1) then (a2, x2): h -> a2 (a1 h + x1) + x2
    return a1 * a2, a2 * x1 + x2


@triton.jit
def _softplus(x):
    """log(1 + e^x). In fp32: max(x, 0) + log1p(y) with y = e^-|x| in (0, 1], log1p(y) = y P(y) with P a degree-8
    minimax fit of log1p(y) / y on [0, 1] (relative error 4e-8 before fp32 rounding; 2e-7 in fp32 Horner). One MUFU
    (ex2) and ~11 FMA-pipe instructions, where libdevice's logf of 1 + e^x took ~30 (H100 SASS,
    benchmarks/scan_ir.py: the loop of VMamba-T's stage-1 forward 518 -> 360 instructions) and lost the answer for
    x < -16, where 1 + e^x rounds to 1. An earlier form, 2 atanh(y / (2 + y)), spent a second MUFU on the division;
    against it this one is faster everywhere (H100, bf16, fwd ms: vmamba_t_stage1 0.515 -> 0.475, vim_ti_1248 0.420
    -> 0.404, long_1d 0.596 -> 0.561; benchmarks/NOTES.md).
    Relative error against float64 below 1e-6 for x > -20 (the rounding of x log2(e); 4e-6 at x = -80). fp64
    inputs keep libdevice's log."""
    if x.dtype == tl.float64:
        return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))
    y = tl.exp2(-tl.abs(x) * 1.4426950408889634)
    p = y * 0.005384060004 - 0.03011095916
    p = p * y + 0.07921073403
    p = p * y - 0.1374662201
    p = p * y + 0.1914511656
    p = p * y - 0.2485294587
    p = p * y + 0.3332034358
    p = p * y - 0.4999955259
    p = p * y + 0.9999999745
    return tl.maximum(x, 0.0) + y * p


@triton.jit
def _combine_adjoint(al1, b1, ga1, de1, al2, b2, ga2, de2):
    # Affine maps of the carry G entering a run of the adjoint, in scan order (steps last to first): the run's last
    # g = al G + b and the G it passes on = ga G + de. Step k: g_k = c_k + G, G' = a_k g_k, i.e. (1, c_k, a_k, a_k c_k).
    return al2 * ga1, al2 * de1 + b2, ga2 * ga1, ga2 * de1 + de2


@triton.jit
def _adjoint_tile(decay, c, carry, offs_t, BLOCK_L: tl.constexpr):
    """The adjoint recurrence ``g_t = c_t + a_{t+1} g_{t+1}`` over a (BLOCK_L, BLOCK_N, BLOCK_D) tile, entered at its
    last step by ``carry`` (``a_{t1} g_{t1}`` from the tile on its right). Returns (g, ``a_{t0} g_{t0}``: the carry
    for the tile on its left). A reverse scan as flip, forward scan, flip: L is inside each thread, so the flips
    are free register renames, while associative_scan(reverse=True) lowers to ~20 shuffles an element (Triton
    3.6-3.8). Each step's own decay a_t enters through G_t = a_t g_t, which the scan carries beside g
    (_combine_adjoint), so that no a_{t+1} - a shifted tile, which registers cannot hold - is computed: no second
    exp and no second read and softplus of delta."""
    c = tl.where(offs_t[:, None, None] == BLOCK_L - 1, c + carry[None, :, :], c)
    a = tl.flip(decay, 0)
    cf = tl.flip(c, 0)
    _, g, _, G = tl.associative_scan((tl.full(a.shape, 1.0, a.dtype), cf, a, a * cf), 0, _combine_adjoint)
    g = tl.flip(g, 0)
    return g, tl.sum(tl.where(offs_t[:, None, None] == BLOCK_L - 1, G, 0.0), 0)


@triton.jit
def _load_bc(ptr, stride_n, offs_d, offs_n, pos, step_mask, dstate, FIXED: tl.constexpr, DT: tl.constexpr):
    """B or C as a tile that broadcasts against (BLOCK_L, BLOCK_N, BLOCK_D).

    fixed (D, N) -> (1, BLOCK_N, BLOCK_D); per step (B, G, N, L) -> (BLOCK_L, BLOCK_N, 1), the tile's steps read at
    memory positions pos (see _seq_index) where step_mask (BLOCK_L,) holds; ptr then points at this program's
    (batch, group) (N, L) block. The mask is built from comparisons of the step index with bounds that are
    multiples of BLOCK_L or VEC, so that the compiler sees it constant over aligned groups of steps and loads
    them with vector instructions (a tl.where on the step index hides that: one 2-byte load a step).
    """
    return _bc_tile(_load_bc_raw(ptr, stride_n, offs_d, offs_n, pos, step_mask, dstate, FIXED), FIXED, DT)


@triton.jit
def _load_bc_raw(ptr, stride_n, offs_d, offs_n, pos, step_mask, dstate, FIXED: tl.constexpr):
    """:func:`_load_bc`'s load alone: (BLOCK_N, BLOCK_D) fixed or (BLOCK_L, BLOCK_N) per step, in B/C's dtype and
    the load's own layout (few registers: what a prefetch keeps across an iteration)."""
    if FIXED:  # one return: the compiler checks every return's shape, constexpr branch or not
        raw = tl.load(ptr + offs_d[None, :] * dstate + offs_n[:, None], mask=offs_n[:, None] < dstate, other=0.0)
    else:
        mask = (offs_n[None, :] < dstate) & step_mask[:, None]
        raw = tl.load(ptr + offs_n[None, :] * stride_n + pos[:, None], mask=mask, other=0.0)
    return raw


@triton.jit
def _bc_tile(raw, FIXED: tl.constexpr, DT: tl.constexpr):
    """A :func:`_load_bc_raw` tile in DT, shaped to broadcast against (BLOCK_L, BLOCK_N, BLOCK_D)."""
    if FIXED:
        tile = raw.to(DT)[None, :, :]
    else:
        tile = raw.to(DT)[:, :, None]
    return tile


@triton.jit
def _shared_rows(b, offs_d, direction, u_dim, share, stride_b, stride_d):
    """(BD,) start of each channel's sequence in a (B, ., L) tensor that the ``share`` groups of each pair read as
    one (u; dout and du one per pair) - share 1: one row per channel of dim. Channel offs_d of group ``direction``
    (= d0 // u_dim) reads row (direction // share) * u_dim + offs_d % u_dim."""
    return b * stride_b + ((direction // share) * u_dim + offs_d % u_dim) * stride_d


@triton.jit
def _seq_index(offs_l, length, direction, PAIRED: tl.constexpr, REVERSE: tl.constexpr):
    """Memory position of scan step offs_l: the step itself, or L - 1 - step when walking backwards (REVERSE:
    every channel; PAIRED: the odd groups ``direction`` of B/C)."""
    if PAIRED:
        pos = tl.where(direction % 2 == 1, length - 1 - offs_l, offs_l)
    elif REVERSE:
        pos = length - 1 - offs_l
    else:
        pos = offs_l
    return pos


@triton.jit
def _flipped_tile(tile, lo, length, offs_t, BLOCK_L: tl.constexpr, CHUNK: tl.constexpr):
    """A backward walking scan's tile in chunks of memory order (FLIP_TILES): step l is at position L - 1 - l, so
    the steps tile * BLOCK_L + offs_t lie at the ascending run p0 = L - (tile + 1) * BLOCK_L, ... flipped. The
    tile's rows are taken in chunks of CHUNK steps (16 bytes of the input: one vector load a thread): chunk c =
    offs_t // CHUNK is read from the run's chunk BLOCK_L / CHUNK - 1 - c in memory order, so the compiler sees
    contiguous, aligned addresses (where :func:`_seq_index`'s descending positions are loaded element by element),
    and :func:`_steps` puts the tile in step order by reversing each chunk, inside each thread's registers (a
    flip of the whole tile moves elements between the lanes that hold its chunks: shuffles).
    Returns (positions, mask of those whose step lies in [lo, L)), both (BLOCK_L,)."""
    chunk = BLOCK_L // CHUNK - 1 - offs_t // CHUNK
    pos = length - (tile + 1) * BLOCK_L + chunk * CHUNK + offs_t % CHUNK
    return pos, (pos >= 0) & (pos < length - lo)


@triton.jit
def _steps(x, FLIP_TILES: tl.constexpr, CHUNK: tl.constexpr):
    """A (BLOCK_L, BLOCK_D) tile read by :func:`_flipped_tile` in step order: each chunk of CHUNK rows reversed. Its
    own inverse, so it also turns a tile back into :func:`_flipped_tile`'s order for a store. The identity without
    FLIP_TILES."""
    if FLIP_TILES:
        chunks = tl.reshape(x, (x.shape[0] // CHUNK, CHUNK, x.shape[1]))
        x = tl.reshape(tl.flip(chunks, 1), (x.shape[0], x.shape[1]))
    return x


@triton.jit
def _segment_tile_loads(u_ptr, delta_ptr, B_blk, row_u, row, stride_B_n, offs_d, offs_n, offs_t, tile, end_tile,
                        length, dstate, direction, B_FIXED: tl.constexpr, PAIRED: tl.constexpr, REVERSE: tl.constexpr,
                        FLIP_TILES: tl.constexpr, BLOCK_L: tl.constexpr, CHUNK: tl.constexpr):
    """_scan_segment_kernel's inputs of one tile, as loaded: u and delta (BLOCK_L, BLOCK_D) in their own dtype (in
    FLIP_TILES' chunk order) and B as :func:`_load_bc_raw` reads it; nothing is read for a tile at or past
    end_tile."""
    offs_l = tile * BLOCK_L + offs_t
    in_seg = (offs_l < length) & (offs_l < end_tile * BLOCK_L)
    pos = _seq_index(offs_l, length, direction, PAIRED, REVERSE)
    if FLIP_TILES:
        tpos, tmask = _flipped_tile(tile, 0, length, offs_t, BLOCK_L, CHUNK)
        io_pos, io_mask = tpos[:, None], tmask[:, None] & (tile < end_tile)
    else:
        io_pos, io_mask = pos[:, None], in_seg[:, None]
    u = tl.load(u_ptr + row_u[None, :] + io_pos, mask=io_mask, other=0.0)
    dt = tl.load(delta_ptr + row[None, :] + io_pos, mask=io_mask, other=0.0)
    return u, dt, _load_bc_raw(B_blk, stride_B_n, offs_d, offs_n, pos, in_seg, dstate, B_FIXED)


@triton.jit
def _scan_segment_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, bias_ptr, hend_ptr, dtsum_ptr,
    dim, length, dstate, tiles_per_seg, n_seg, dim_per_group_B, stride_B_b, stride_B_g, stride_B_n, u_dim, u_share,
    stride_u_b, stride_u_d, stride_delta_b, stride_delta_d,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, B_FIXED: tl.constexpr, DT: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, PAIRED: tl.constexpr,
    REVERSE: tl.constexpr, FLIP_TILES: tl.constexpr, CHUNK: tl.constexpr, VEC: tl.constexpr,
):
    """Pass 1 of a sequence split across programs: each segment's end state from a zero start, and sum(dt)
    over the segment (its total decay is exp(A * sum dt)). hend: (B, D, n_seg, N); dtsum: (B, D, n_seg).
    FLIP_TILES (with REVERSE): u and delta read in chunks of memory order, as the main pass (_flipped_tile)."""
    length, stride_u_b, stride_u_d = length * VEC, stride_u_b * VEC, stride_u_d * VEC  # see _vector_width
    stride_delta_b, stride_delta_d = stride_delta_b * VEC, stride_delta_d * VEC
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    seg = tl.program_id(2)
    d0 = pid_d * BLOCK_D
    offs_d = d0 + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_L)
    gB = d0 // dim_per_group_B
    B_blk = B_ptr + b * stride_B_b + gB * stride_B_g  # this (batch, group)'s (N, L) block (strides 0 if fixed)
    n_mask = offs_n[:, None] < dstate
    A2 = tl.load(A_ptr + offs_d[None, :] * dstate + offs_n[:, None], mask=n_mask, other=0.0).to(DT) * 1.4426950408889634
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d).to(DT)
    direction = d0 // u_dim
    row = b * stride_delta_b + offs_d * stride_delta_d
    row_u = _shared_rows(b, offs_d, direction, u_dim, u_share, stride_u_b, stride_u_d)  # u shared by a pair
    h = tl.zeros((BLOCK_N, BLOCK_D), dtype=DT)
    dt_total = tl.zeros((BLOCK_D,), dtype=DT)
    # Each tile's inputs are loaded one iteration ahead, while the previous tile is scanned. Without it the loop
    # waits on its loads: H100 ncu at vim_ti_1248, 2.3 of the 5.4 cycles between a warp's instructions. Its raw
    # loads keep few registers (scan_ir.py: 161 -> 132 at L 6085, 80 -> 96 at 6088). H100, vim_ti_1248: forward
    # 0.386 -> 0.367 ms, forward+backward 1.709 -> 1.676 (NOTES).
    first_tile = seg * tiles_per_seg
    end_tile = first_tile + tiles_per_seg
    u_in, dt_in, B_in = _segment_tile_loads(u_ptr, delta_ptr, B_blk, row_u, row, stride_B_n, offs_d, offs_n, offs_t,
                                            first_tile, end_tile, length, dstate, direction, B_FIXED, PAIRED, REVERSE,
                                            FLIP_TILES, BLOCK_L, CHUNK)
    for tile in range(first_tile, end_tile):
        u_ld, dt_ld, B_ld = _segment_tile_loads(u_ptr, delta_ptr, B_blk, row_u, row, stride_B_n, offs_d, offs_n,
                                                offs_t, tile + 1, end_tile, length, dstate, direction, B_FIXED,
                                                PAIRED, REVERSE, FLIP_TILES, BLOCK_L, CHUNK)
        l_mask = (tile * BLOCK_L + offs_t)[:, None] < length
        u = _steps(u_in.to(DT), FLIP_TILES, CHUNK)
        dt = _steps(dt_in.to(DT), FLIP_TILES, CHUNK)
        if HAS_BIAS:
            dt += bias[None, :]
        if SOFTPLUS:
            dt = _softplus(dt)
        dt = tl.where(l_mask, dt, 0.0)
        decay = tl.exp2(dt[:, None, :] * A2[None, :, :])
        x = (dt * u)[:, None, :] * _bc_tile(B_in, B_FIXED, DT)
        x = tl.where(offs_t[:, None, None] == 0, x + decay * h[None, :, :], x)
        _, hs = tl.associative_scan((decay, x), 0, _combine)
        h = tl.sum(tl.where(offs_t[:, None, None] == BLOCK_L - 1, hs, 0.0), 0)
        dt_total += tl.sum(dt, 0)
        u_in, dt_in, B_in = u_ld, dt_ld, B_ld
    tl.store(hend_ptr + ((b * dim + offs_d[None, :]) * n_seg + seg) * dstate + offs_n[:, None], h, mask=n_mask)
    tl.store(dtsum_ptr + (b * dim + offs_d) * n_seg + seg, dt_total)


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
    out_ptr, last_ptr, states_ptr, hend_ptr, dtsum_ptr,
    dim, length, dstate, n_tiles, tiles_per_seg, n_seg,
    dim_per_group_B, dim_per_group_C, stride_B_b, stride_B_g, stride_B_n, stride_C_b, stride_C_g, stride_C_n,
    u_dim, u_share, stride_u_b, stride_u_d, stride_delta_b, stride_delta_d, stride_z_b, stride_z_d,
    stride_out_b, stride_out_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    B_FIXED: tl.constexpr, C_FIXED: tl.constexpr, SAVE_STATES: tl.constexpr, DT: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, PREFETCH: tl.constexpr,
    PAIRED: tl.constexpr, REVERSE: tl.constexpr, FLIP_TILES: tl.constexpr, CHUNK: tl.constexpr, VEC: tl.constexpr,
    PAIR_HALF: tl.constexpr,
):
    # Tiles are (BLOCK_L, BLOCK_N, BLOCK_D): L first, so Triton's default layout puts the lanes on channels and
    # states and keeps the whole L extent of a tile inside each thread - the scan is then a sequential loop.
    # With n_seg > 1 the sequence is split across programs (axis 2): segment s enters with the state chained
    # from the end states of segments 0..s-1 that _scan_segment_kernel wrote.
    # L and the (batch, channel) strides come divided by VEC (_vector_width): multiplied back by the constexpr,
    # groups of VEC steps are known to be aligned and are loaded with vector instructions.
    # FLIP_TILES (with REVERSE): u, delta, z and out are read and written in chunks of CHUNK steps in memory order,
    # each chunk reversed in registers (_flipped_tile), as the backward does; B and C stay in step order.
    # PAIR_HALF: one half of a paired scan - the even groups of B/C (forward) or, with REVERSE, the odd ones - so
    # that the direction is a constexpr and the tiles are loaded as vectors (the backward's PAIR_HALF).
    length, stride_u_b, stride_u_d = length * VEC, stride_u_b * VEC, stride_u_d * VEC
    stride_delta_b, stride_delta_d, stride_z_b, stride_z_d = (stride_delta_b * VEC, stride_delta_d * VEC,
                                                              stride_z_b * VEC, stride_z_d * VEC)
    stride_out_b, stride_out_d = stride_out_b * VEC, stride_out_d * VEC
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    seg = tl.program_id(2)
    d0 = pid_d * BLOCK_D
    if PAIR_HALF:
        d0 = (d0 // u_dim) * 2 * u_dim + REVERSE * u_dim + d0 % u_dim
    offs_d = d0 + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_L)
    gB = d0 // dim_per_group_B
    gC = d0 // dim_per_group_C
    B_blk = B_ptr + b * stride_B_b + gB * stride_B_g  # this (batch, group)'s (N, L) blocks (strides 0 if fixed)
    C_blk = C_ptr + b * stride_C_b + gC * stride_C_g
    n_mask = offs_n[:, None] < dstate
    nd_ptrs = (b * dim + offs_d[None, :]) * dstate + offs_n[:, None]  # (BN, BD) into (B, D, N)

    # exp(dt A) = exp2(dt A log2(e)): one ex2 per element
    A2 = tl.load(A_ptr + offs_d[None, :] * dstate + offs_n[:, None], mask=n_mask, other=0.0).to(DT) * 1.4426950408889634
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d).to(DT)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d).to(DT)

    # paired: a pair of groups shares one sequence of u; delta, z and out have all dim channels
    # (BD,) start of each channel's sequence (each is contiguous along L; batch and channel strides are free)
    direction = d0 // u_dim
    row = b * stride_out_b + offs_d * stride_out_d
    row_dt = b * stride_delta_b + offs_d * stride_delta_d
    row_z = b * stride_z_b + offs_d * stride_z_d
    row_u = _shared_rows(b, offs_d, direction, u_dim, u_share, stride_u_b, stride_u_d)  # u shared by a pair
    h = tl.zeros((BLOCK_N, BLOCK_D), dtype=DT)
    for prev in range(seg):  # h_end(s) = exp(A sum dt over s) h_end(s-1) + h_end from zero(s)
        dt_sum = tl.load(dtsum_ptr + (b * dim + offs_d) * n_seg + prev).to(DT)
        h_end = tl.load(hend_ptr + ((b * dim + offs_d[None, :]) * n_seg + prev) * dstate + offs_n[:, None],
                        mask=n_mask, other=0.0).to(DT)
        h = tl.exp2(A2 * dt_sum[None, :]) * h + h_end
    first_tile = seg * tiles_per_seg
    end_tile = tl.minimum(first_tile + tiles_per_seg, n_tiles)
    # With PREFETCH the next tile's inputs are loaded while this tile is scanned (software pipelining; loads
    # past the end are fully masked and move nothing). It costs registers, so it is a tuning switch.
    offs_first = first_tile * BLOCK_L + offs_t
    first = offs_first[:, None] < length
    pos_first = _seq_index(offs_first, length, direction, PAIRED, REVERSE)
    if FLIP_TILES:
        fpos, fmask = _flipped_tile(first_tile, 0, length, offs_t, BLOCK_L, CHUNK)
        io_first, first = fpos[:, None], fmask[:, None]
    else:
        io_first = pos_first[:, None]
    u_in = tl.load(u_ptr + row_u[None, :] + io_first, mask=first & PREFETCH, other=0.0)
    dt_in = tl.load(delta_ptr + row_dt[None, :] + io_first, mask=first & PREFETCH, other=0.0)
    z_in = tl.load(z_ptr + row_z[None, :] + io_first, mask=first & PREFETCH & HAS_Z, other=0.0)
    Bt = _load_bc(B_blk, stride_B_n, offs_d, offs_n, pos_first, offs_first < length, dstate, B_FIXED, DT)
    Ct = _load_bc(C_blk, stride_C_n, offs_d, offs_n, pos_first, offs_first < length, dstate, C_FIXED, DT)
    for tile in range(first_tile, end_tile):
        offs_l = tile * BLOCK_L + offs_t
        l_mask = offs_l[:, None] < length
        offs_ld = offs_l + BLOCK_L * PREFETCH
        pos_ld = _seq_index(offs_ld, length, direction, PAIRED, REVERSE)
        if FLIP_TILES:  # (BL, 1) positions in memory order, of this tile's outputs and of the tile loaded now
            tpos, tmask = _flipped_tile(tile, 0, length, offs_t, BLOCK_L, CHUNK)
            out_pos, out_mask = tpos[:, None], tmask[:, None]
            tpos, tmask = _flipped_tile(tile + PREFETCH, 0, length, offs_t, BLOCK_L, CHUNK)
            io_ld, mask_ld = tpos[:, None], tmask[:, None] & (tile + PREFETCH < end_tile)
        else:
            out_pos, out_mask = _seq_index(offs_l, length, direction, PAIRED, REVERSE)[:, None], l_mask
            io_ld = pos_ld[:, None]
            mask_ld = (offs_ld[:, None] < length) & (offs_ld[:, None] < end_tile * BLOCK_L)
        u_ld = tl.load(u_ptr + row_u[None, :] + io_ld, mask=mask_ld, other=0.0)
        dt_ld = tl.load(delta_ptr + row_dt[None, :] + io_ld, mask=mask_ld, other=0.0)
        z_ld = tl.load(z_ptr + row_z[None, :] + io_ld, mask=mask_ld & HAS_Z, other=0.0)
        bc_ld = (offs_ld < length) & (offs_ld < end_tile * BLOCK_L)  # past the segment: masked out
        Bt_ld = _load_bc(B_blk, stride_B_n, offs_d, offs_n, pos_ld, bc_ld, dstate, B_FIXED, DT)
        if PREFETCH:
            Ct_ld = _load_bc(C_blk, stride_C_n, offs_d, offs_n, pos_ld, bc_ld, dstate, C_FIXED, DT)
        else:
            u_in, dt_in, z_in, Bt = u_ld, dt_ld, z_ld, Bt_ld

        u = _steps(u_in.to(DT), FLIP_TILES, CHUNK)
        dt = _steps(dt_in.to(DT), FLIP_TILES, CHUNK)
        if HAS_BIAS:
            dt += bias[None, :]
        if SOFTPLUS:
            dt = _softplus(dt)
        dt = tl.where(l_mask, dt, 0.0)  # padding steps: decay 1, input 0, so the state passes through

        if SAVE_STATES:
            tl.store(states_ptr + ((b * dim + offs_d[None, :]) * n_tiles + tile) * dstate + offs_n[:, None], h,
                     mask=n_mask)

        decay = tl.exp2(dt[:, None, :] * A2[None, :, :])  # (BL, BN, BD)
        x = (dt * u)[:, None, :] * Bt
        x = tl.where(offs_t[:, None, None] == 0, x + decay * h[None, :, :], x)  # enter with the carried state
        _, hs = tl.associative_scan((decay, x), 0, _combine)
        if not PREFETCH:  # C loaded only now, not live during the scan: 160 -> 128 registers (H100 fwd ms:
            # vmamba_v0_stage1 1.46 -> 1.26, vim_ti_224 0.173 -> 0.168, long_1d 0.945 -> 0.934)
            Ct = _load_bc(C_blk, stride_C_n, offs_d, offs_n, pos_ld, bc_ld, dstate, C_FIXED, DT)
        y = tl.sum(hs * Ct, 1)  # (BL, BD)
        h = tl.sum(tl.where(offs_t[:, None, None] == BLOCK_L - 1, hs, 0.0), 0)

        if HAS_D:
            y += Dv[None, :] * u
        if HAS_Z:
            zt = _steps(z_in.to(DT), FLIP_TILES, CHUNK)
            y *= zt * tl.sigmoid(zt)
        tl.store(out_ptr + row[None, :] + out_pos, _steps(y, FLIP_TILES, CHUNK).to(out_ptr.dtype.element_ty),
                 mask=out_mask)

        if PREFETCH:
            u_in, dt_in, z_in, Bt, Ct = u_ld, dt_ld, z_ld, Bt_ld, Ct_ld

    tl.store(last_ptr + nd_ptrs, h, mask=n_mask & (seg == n_seg - 1))


@triton.jit
def _bwd_segment_tile_loads(dout_ptr, delta_ptr, z_ptr, C_blk, row_do, row_dt, row_z, stride_C_n, offs_d, offs_n,
                            offs_t, tile, first_tile, length, dstate, direction, HAS_Z: tl.constexpr,
                            C_FIXED: tl.constexpr, PAIRED: tl.constexpr, REVERSE: tl.constexpr, BLOCK_L: tl.constexpr):
    """_scan_bwd_segment_kernel's inputs of one tile, as loaded: delta, dout and z (BLOCK_L, BLOCK_D) in their own
    dtypes (z a placeholder without HAS_Z) and C as :func:`_load_bc_raw` reads it; nothing is read for a tile
    before first_tile (the segment is walked from its end)."""
    offs_l = tile * BLOCK_L + offs_t
    in_seg = (offs_l < length) & (offs_l >= first_tile * BLOCK_L)
    pos = _seq_index(offs_l, length, direction, PAIRED, REVERSE)
    dt = tl.load(delta_ptr + row_dt[None, :] + pos[:, None], mask=in_seg[:, None], other=0.0)
    dy = tl.load(dout_ptr + row_do[None, :] + pos[:, None], mask=in_seg[:, None], other=0.0)
    z = tl.load(z_ptr + row_z[None, :] + pos[:, None], mask=in_seg[:, None] & HAS_Z, other=0.0)
    return dt, dy, z, _load_bc_raw(C_blk, stride_C_n, offs_d, offs_n, pos, in_seg, dstate, C_FIXED)


@triton.jit
def _scan_bwd_segment_kernel(
    dout_ptr, delta_ptr, A_ptr, C_ptr, z_ptr, bias_ptr, cz_ptr, dtsum_ptr,
    dim, length, dstate, n_tiles, tiles_per_seg, n_seg, dim_per_group_C, stride_C_b, stride_C_g, stride_C_n,
    u_dim, dout_share, stride_dout_b, stride_dout_d, stride_delta_b, stride_delta_d, stride_z_b, stride_z_d,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, C_FIXED: tl.constexpr,
    DT: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, PAIRED: tl.constexpr,
    REVERSE: tl.constexpr, VEC: tl.constexpr,
):
    """Pass 1 of the backward split along L: the adjoint carry ``a_{t0} g_{t0}`` that leaves each segment to
    the left when a zero carry enters it from the right, and sum(dt) over the segment (the carry entering from
    the right leaves multiplied by exp(A * sum dt)). cz: (B, D, n_seg, N); dtsum: (B, D, n_seg). Segment 0's
    summary is never read: the programs are segments 1 .. n_seg - 1."""
    length, stride_dout_b, stride_dout_d = length * VEC, stride_dout_b * VEC, stride_dout_d * VEC  # _vector_width
    stride_delta_b, stride_delta_d, stride_z_b, stride_z_d = (stride_delta_b * VEC, stride_delta_d * VEC,
                                                              stride_z_b * VEC, stride_z_d * VEC)
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    seg = tl.program_id(2) + 1
    d0 = pid_d * BLOCK_D
    offs_d = d0 + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_L)
    gC = d0 // dim_per_group_C
    C_blk = C_ptr + b * stride_C_b + gC * stride_C_g  # this (batch, group)'s (N, L) block (strides 0 if fixed)
    n_mask = offs_n[:, None] < dstate
    A2 = tl.load(A_ptr + offs_d[None, :] * dstate + offs_n[:, None], mask=n_mask, other=0.0).to(DT) * 1.4426950408889634
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d).to(DT)
    direction = d0 // u_dim
    row_do = _shared_rows(b, offs_d, direction, u_dim, dout_share, stride_dout_b, stride_dout_d)
    row_dt = b * stride_delta_b + offs_d * stride_delta_d
    row_z = b * stride_z_b + offs_d * stride_z_d
    carry = tl.zeros((BLOCK_N, BLOCK_D), dtype=DT)
    dt_total = tl.zeros((BLOCK_D,), dtype=DT)
    first_tile = seg * tiles_per_seg
    end_tile = tl.minimum(first_tile + tiles_per_seg, n_tiles)
    # the segment's tiles, last first, each one's inputs loaded an iteration ahead (as _scan_segment_kernel)
    dt_in, dy_in, z_in, C_in = _bwd_segment_tile_loads(
        dout_ptr, delta_ptr, z_ptr, C_blk, row_do, row_dt, row_z, stride_C_n, offs_d, offs_n, offs_t, end_tile - 1,
        first_tile, length, dstate, direction, HAS_Z, C_FIXED, PAIRED, REVERSE, BLOCK_L)
    for i in range(first_tile, end_tile):
        tile = first_tile + end_tile - 1 - i
        dt_ld, dy_ld, z_ld, C_ld = _bwd_segment_tile_loads(
            dout_ptr, delta_ptr, z_ptr, C_blk, row_do, row_dt, row_z, stride_C_n, offs_d, offs_n, offs_t, tile - 1,
            first_tile, length, dstate, direction, HAS_Z, C_FIXED, PAIRED, REVERSE, BLOCK_L)
        l_mask = (tile * BLOCK_L + offs_t)[:, None] < length
        dt = dt_in.to(DT)
        dy = dy_in.to(DT)
        if HAS_Z:
            zt = z_in.to(DT)
            dy *= zt * tl.sigmoid(zt)
        if HAS_BIAS:
            dt += bias[None, :]
        if SOFTPLUS:
            dt = _softplus(dt)
        dt = tl.where(l_mask, dt, 0.0)
        decay = tl.exp2(dt[:, None, :] * A2[None, :, :])
        _, carry = _adjoint_tile(decay, _bc_tile(C_in, C_FIXED, DT) * dy[:, None, :], carry, offs_t, BLOCK_L)
        dt_total += tl.sum(dt, 0)
        dt_in, dy_in, z_in, C_in = dt_ld, dy_ld, z_ld, C_ld
    tl.store(cz_ptr + ((b * dim + offs_d[None, :]) * n_seg + seg) * dstate + offs_n[:, None], carry, mask=n_mask)
    tl.store(dtsum_ptr + (b * dim + offs_d) * n_seg + seg, dt_total)


@triton.jit
def _scan_bwd_kernel(
    dout_ptr, dlast_ptr, u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, states_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr, cz_ptr, dtsum_ptr,
    dim, length, dstate, n_tiles, tiles_per_seg, n_seg,
    dim_per_group_B, dim_per_group_C, stride_B_b, stride_B_g, stride_B_n, stride_C_b, stride_C_g, stride_C_n,
    u_dim, u_share, dout_share, du_share, stride_dout_b, stride_dout_d, stride_u_b, stride_u_d, stride_delta_b,
    stride_delta_d,
    stride_z_b, stride_z_d, stride_du_b, stride_du_d, stride_ddelta_b, stride_ddelta_d, stride_dz_b, stride_dz_d,
    stride_dB_b, stride_dB_g, stride_dB_n, stride_dC_b, stride_dC_g, stride_dC_n,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    B_FIXED: tl.constexpr, C_FIXED: tl.constexpr, HAS_DLAST: tl.constexpr, DT: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr, PREFETCH: tl.constexpr,
    PAIRED: tl.constexpr, REVERSE: tl.constexpr, SPLIT: tl.constexpr, PAIR_HALF: tl.constexpr,
    DU_ADD: tl.constexpr, FLIP_TILES: tl.constexpr, CHUNK: tl.constexpr, VEC: tl.constexpr,
):
    # SPLIT (n_seg > 1): the sequence is split across programs (axis 2): segment s enters (from the right) with
    # the carry chained from the summaries of segments s+1 .. n_seg-1 that _scan_bwd_segment_kernel wrote, and
    # writes its per-channel gradients into its own slice (seg * batch + b) of dA, dD, ... (summed on the host).
    # A constexpr so that the unsplit kernel carries none of it (H100: 17% slower bwd at long_1d with it).
    # PAIR_HALF: one half of a paired scan, every other group of B/C - the even ones (forward) or, with REVERSE, the
    # odd ones - so that the direction is a constexpr; with du_share 2 both halves write du per pair, the second
    # (DU_ADD) adding what the first wrote. FLIP_TILES (with REVERSE): the (BLOCK_L, BLOCK_D) tiles are
    # read and written in chunks of CHUNK steps in memory order, each chunk reversed in registers (_flipped_tile).
    # L and the (batch, channel) strides come divided by VEC (_vector_width).
    length, stride_dout_b, stride_dout_d = length * VEC, stride_dout_b * VEC, stride_dout_d * VEC
    stride_u_b, stride_u_d, stride_delta_b, stride_delta_d = (stride_u_b * VEC, stride_u_d * VEC,
                                                              stride_delta_b * VEC, stride_delta_d * VEC)
    stride_z_b, stride_z_d = stride_z_b * VEC, stride_z_d * VEC
    stride_du_b, stride_du_d = stride_du_b * VEC, stride_du_d * VEC
    stride_ddelta_b, stride_ddelta_d = stride_ddelta_b * VEC, stride_ddelta_d * VEC
    stride_dz_b, stride_dz_d = stride_dz_b * VEC, stride_dz_d * VEC
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    if SPLIT:
        seg = tl.program_id(2)
        first_tile = seg * tiles_per_seg
        end_tile = tl.minimum(first_tile + tiles_per_seg, n_tiles)
        sb = seg * tl.num_programs(1) + b  # this program's slice of the per-channel gradients
    else:
        first_tile = 0
        end_tile = n_tiles
        sb = b
    d0 = pid_d * BLOCK_D
    if PAIR_HALF:
        d0 = (d0 // u_dim) * 2 * u_dim + REVERSE * u_dim + d0 % u_dim
    offs_d = d0 + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    offs_t = tl.arange(0, BLOCK_L)
    gB = d0 // dim_per_group_B
    gC = d0 // dim_per_group_C
    B_blk = B_ptr + b * stride_B_b + gB * stride_B_g  # this (batch, group)'s (N, L) blocks (strides 0 if fixed)
    C_blk = C_ptr + b * stride_C_b + gC * stride_C_g
    n_mask = offs_n[:, None] < dstate
    nd_ptrs = (b * dim + offs_d[None, :]) * dstate + offs_n[:, None]  # (BN, BD) into (B, D, N)
    nd_out = (sb * dim + offs_d[None, :]) * dstate + offs_n[:, None]  # into (n_seg * B, D, N)

    A = tl.load(A_ptr + offs_d[None, :] * dstate + offs_n[:, None], mask=n_mask, other=0.0).to(DT)
    A2 = A * 1.4426950408889634
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d).to(DT)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d).to(DT)

    # carry = a_{t+1} g_{t+1} seen from the last step of the tile being processed; at the end: dL/dh_{L-1}
    if HAS_DLAST:
        carry = tl.load(dlast_ptr + nd_ptrs, mask=n_mask, other=0.0).to(DT)
    else:
        carry = tl.zeros((BLOCK_N, BLOCK_D), dtype=DT)
    if SPLIT:
        for i in range(seg + 1, n_seg):  # carry(s) = exp(A sum dt over s+1) carry(s+1) + cz(s+1), from the end
            nxt = n_seg + seg - i
            dt_sum = tl.load(dtsum_ptr + (b * dim + offs_d) * n_seg + nxt).to(DT)
            cz = tl.load(cz_ptr + ((b * dim + offs_d[None, :]) * n_seg + nxt) * dstate + offs_n[:, None],
                         mask=n_mask, other=0.0).to(DT)
            carry = tl.exp2(A2 * dt_sum[None, :]) * carry + cz
    dA_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=DT)
    dB_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=DT)
    dC_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=DT)
    dD_acc = tl.zeros((BLOCK_D,), dtype=DT)
    dbias_acc = tl.zeros((BLOCK_D,), dtype=DT)

    # du is written per channel of dim, or per channel of u (du_share 2: each pair summed, see DU_ADD)
    direction = d0 // u_dim
    row_do = _shared_rows(b, offs_d, direction, u_dim, dout_share, stride_dout_b, stride_dout_d)  # as u, if shared
    row_dt = b * stride_delta_b + offs_d * stride_delta_d
    row_z = b * stride_z_b + offs_d * stride_z_d
    row_u = _shared_rows(b, offs_d, direction, u_dim, u_share, stride_u_b, stride_u_d)  # u shared by a pair
    row_du = _shared_rows(b, offs_d, direction, u_dim, du_share, stride_du_b, stride_du_d)
    row_ddt = b * stride_ddelta_b + offs_d * stride_ddelta_d
    row_dz = b * stride_dz_b + offs_d * stride_dz_d
    # the segment's tiles in reverse; with PREFETCH the previous tile's inputs are loaded while this one is
    # processed
    last = (end_tile - 1) * BLOCK_L + offs_t
    lmask = (last[:, None] < length) & PREFETCH
    lpos1 = _seq_index(last, length, direction, PAIRED, REVERSE)
    lpos = lpos1[:, None]
    if FLIP_TILES:  # memory order
        fpos, fmask = _flipped_tile(end_tile - 1, 0, length, offs_t, BLOCK_L, CHUNK)
        lpos, lmask = fpos[:, None], fmask[:, None] & PREFETCH
    u_in = tl.load(u_ptr + row_u[None, :] + lpos, mask=lmask, other=0.0)
    dt_in = tl.load(delta_ptr + row_dt[None, :] + lpos, mask=lmask, other=0.0)
    dout_in = tl.load(dout_ptr + row_do[None, :] + lpos, mask=lmask, other=0.0)
    z_in = tl.load(z_ptr + row_z[None, :] + lpos, mask=lmask & HAS_Z, other=0.0)
    # per-step B and C (one element a lane: no vector loads either way) always in step order
    Bt = _load_bc(B_blk, stride_B_n, offs_d, offs_n, lpos1, last < length, dstate, B_FIXED, DT)
    Ct = _load_bc(C_blk, stride_C_n, offs_d, offs_n, lpos1, last < length, dstate, C_FIXED, DT)
    for i in range(first_tile, end_tile):
        tile = first_tile + end_tile - 1 - i
        offs_l = tile * BLOCK_L + offs_t
        l_mask = offs_l[:, None] < length
        pos = _seq_index(offs_l, length, direction, PAIRED, REVERSE)
        pos2 = pos[:, None]  # (BL, 1)
        offs_ld = offs_l - BLOCK_L * PREFETCH
        mask_ld = (offs_ld[:, None] < length) & (offs_ld[:, None] >= first_tile * BLOCK_L)
        pos_ld1 = _seq_index(offs_ld, length, direction, PAIRED, REVERSE)
        pos_ld = pos_ld1[:, None]
        if FLIP_TILES:
            tpos, tmask = _flipped_tile(tile - PREFETCH, first_tile * BLOCK_L, length, offs_t, BLOCK_L,
                                        CHUNK)
            pos_ld, mask_ld = tpos[:, None], tmask[:, None]
        u_ld = tl.load(u_ptr + row_u[None, :] + pos_ld, mask=mask_ld, other=0.0)
        dt_ld = tl.load(delta_ptr + row_dt[None, :] + pos_ld, mask=mask_ld, other=0.0)
        dout_ld = tl.load(dout_ptr + row_do[None, :] + pos_ld, mask=mask_ld, other=0.0)
        z_ld = tl.load(z_ptr + row_z[None, :] + pos_ld, mask=mask_ld & HAS_Z, other=0.0)
        bc_ld = (offs_ld < length) & (offs_ld >= first_tile * BLOCK_L)  # before the segment: masked out
        Bt_ld = _load_bc(B_blk, stride_B_n, offs_d, offs_n, pos_ld1, bc_ld, dstate, B_FIXED, DT)
        Ct_ld = _load_bc(C_blk, stride_C_n, offs_d, offs_n, pos_ld1, bc_ld, dstate, C_FIXED, DT)
        if not PREFETCH:
            u_in, dt_in, dout_in, z_in, Bt, Ct = u_ld, dt_ld, dout_ld, z_ld, Bt_ld, Ct_ld

        u = _steps(u_in.to(DT), FLIP_TILES, CHUNK)
        dt_raw = _steps(dt_in.to(DT), FLIP_TILES, CHUNK)
        if HAS_BIAS:
            dt_raw += bias[None, :]
        if SOFTPLUS:
            dt = _softplus(dt_raw)
        else:
            dt = dt_raw
        dt = tl.where(l_mask, dt, 0.0)
        dout = _steps(dout_in.to(DT), FLIP_TILES, CHUNK)
        if FLIP_TILES:  # where this tile's outputs are written: memory order
            tpos, tmask = _flipped_tile(tile, 0, length, offs_t, BLOCK_L, CHUNK)
            out_pos, out_mask = tpos[:, None], tmask[:, None]
        else:
            out_pos, out_mask = pos2, l_mask
        h0 = tl.load(states_ptr + ((b * dim + offs_d[None, :]) * n_tiles + tile) * dstate + offs_n[:, None],
                     mask=n_mask, other=0.0).to(DT)

        # recompute the forward of this tile
        decay = tl.exp2(dt[:, None, :] * A2[None, :, :])  # a_t, (BL, BN, BD)
        dtu = dt * u
        x = dtu[:, None, :] * Bt
        x_in = tl.where(offs_t[:, None, None] == 0, x + decay * h0[None, :, :], x)
        _, h = tl.associative_scan((decay, x_in), 0, _combine)

        if HAS_Z:
            zt = _steps(z_in.to(DT), FLIP_TILES, CHUNK)
            sig = tl.sigmoid(zt)
            y = tl.sum(h * Ct, 1)
            if HAS_D:
                y += Dv[None, :] * u
            dz = dout * y * sig * (1.0 + zt * (1.0 - sig))
            tl.store(dz_ptr + row_dz[None, :] + out_pos,
                     _steps(dz, FLIP_TILES, CHUNK).to(dz_ptr.dtype.element_ty), mask=out_mask)
            dy = dout * zt * sig
        else:
            dy = dout

        # adjoint: g_t = C_t dy_t + a_{t+1} g_{t+1}
        g, carry = _adjoint_tile(decay, Ct * dy[:, None, :], carry, offs_t, BLOCK_L)

        gB_sum = tl.sum(g * Bt, 1)  # (BL, BD): sum_n g B
        g_ah = g * (h - x)  # g_t a_t h_{t-1}
        ddt = u * gB_sum + tl.sum(g_ah * A[None, :, :], 1)
        du = dt * gB_sum
        if HAS_D:
            du += Dv[None, :] * dy
            dD_acc += tl.sum(dy * u, 0)
        dA_acc += tl.sum(g_ah * dt[:, None, :], 0)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(dt_raw)
        ddt = tl.where(l_mask, ddt, 0.0)
        if HAS_BIAS:
            dbias_acc += tl.sum(ddt, 0)
        du = _steps(du, FLIP_TILES, CHUNK)
        if DU_ADD:  # the pair's other direction, written by the launch before this one
            du += tl.load(du_ptr + row_du[None, :] + out_pos, mask=out_mask, other=0.0).to(DT)
        tl.store(du_ptr + row_du[None, :] + out_pos, du.to(du_ptr.dtype.element_ty), mask=out_mask)
        tl.store(ddelta_ptr + row_ddt[None, :] + out_pos,
                 _steps(ddt, FLIP_TILES, CHUNK).to(ddelta_ptr.dtype.element_ty), mask=out_mask)

        # dB_t = sum_d g_t dt_t u_t ; dC_t = sum_d h_t dy_t
        gx = g * dtu[:, None, :]
        hdy = h * dy[:, None, :]
        bc_mask = (offs_n[None, :] < dstate) & l_mask
        if B_FIXED:
            dB_acc += tl.sum(gx, 0)
        else:
            bc_ptrs = b * stride_dB_b + gB * stride_dB_g + offs_n[None, :] * stride_dB_n + pos[:, None]
            tl.atomic_add(dB_ptr + bc_ptrs, tl.sum(gx, 2), mask=bc_mask, sem="relaxed")
        if C_FIXED:
            dC_acc += tl.sum(hdy, 0)
        else:
            bc_ptrs = b * stride_dC_b + gC * stride_dC_g + offs_n[None, :] * stride_dC_n + pos[:, None]
            tl.atomic_add(dC_ptr + bc_ptrs, tl.sum(hdy, 2), mask=bc_mask, sem="relaxed")

        if PREFETCH:
            u_in, dt_in, dout_in, z_in, Bt, Ct = u_ld, dt_ld, dout_ld, z_ld, Bt_ld, Ct_ld

    tl.store(dA_ptr + nd_out, dA_acc, mask=n_mask)
    if B_FIXED:
        tl.store(dB_ptr + nd_out, dB_acc, mask=n_mask)
    if C_FIXED:
        tl.store(dC_ptr + nd_out, dC_acc, mask=n_mask)
    if HAS_D:
        tl.store(dD_ptr + sb * dim + offs_d, dD_acc)
    if HAS_BIAS:
        tl.store(dbias_ptr + sb * dim + offs_d, dbias_acc)


def compute_dtype(u: Tensor):
    """(torch, Triton) dtype the kernels compute and accumulate in: float64 for float64 inputs, else float32."""
    return (torch.float64, tl.float64) if u.dtype == torch.float64 else (torch.float32, tl.float32)


def _bc_args(t: Tensor, dim: int) -> tuple[int, int, int, int]:
    """(channels per group, batch, group and state strides) of a fixed (D, N) or grouped (B, G, N, L) B/C."""
    if t.dim() == 2:
        return dim, 0, 0, 0
    return dim // t.shape[1], t.stride(0), t.stride(1), t.stride(2)


def _bd_strides(t: Tensor | None, vec: int) -> tuple[int, int]:
    """(batch, channel) strides // vec of a (B, D, L) tensor whose rows are contiguous along L; (0, 0) for None."""
    return (t.stride(0) // vec, t.stride(1) // vec) if t is not None else (0, 0)


def _vector_width(length: int, *tensors: Tensor | None) -> int:
    """VEC: the largest of 16, 8, 4 (else 1) dividing L and every (batch, channel) stride of the (B, D, L) tensors.

    The kernels get L and those strides divided by VEC and multiply them back by the constexpr, so the compiler
    knows that VEC consecutive steps from a multiple of VEC are aligned and loads them with one instruction
    (Triton's own hint is divisibility by 16 only: VMamba's 14x14 stage, L 196, was loaded element by element;
    with VEC 4 its grouped backward is 2392 -> 1888 SASS instructions and 0.520 -> 0.441 ms on an H100)."""
    return strides_by_vector(length, *(t for t in tensors if t is not None))[0]


# A backward walking scan reads its tiles in memory order and reverses them in registers (FLIP_TILES) only where
# VEC >= FLIP_TILES_MIN_VEC: with scalar loads the reversal is pure cost (H100, VMamba-T's 14x14 stage, L 196:
# paired backward 515 -> 607 us with whole tiles flipped across lanes and scalar loads; with VEC 4 and chunks
# reversed inside each thread 512 -> 464 us, the VMamba-T training step 67.29 -> 66.88 ms; benchmarks/NOTES.md).
FLIP_TILES_MIN_VEC = 4


def _flip_chunk(block_l: int, u: Tensor) -> int:
    """CHUNK of FLIP_TILES: the steps of one 16-byte vector load of u, at most a tile (see _flipped_tile)."""
    return min(block_l, 16 // u.element_size())


def _walk_launches(paired: bool, reverse: bool, vec: int) -> list[dict]:
    """The launches of a forward or backward kernel, each as its (PAIRED, REVERSE, FLIP_TILES, PAIR_HALF) flags.

    A scan walking backwards reads its tiles in memory order where that gives vector loads (FLIP_TILES, VEC >=
    FLIP_TILES_MIN_VEC); a paired one then runs as two launches, its forward groups and its backward ones
    (PAIR_HALF), so that each has its direction a constexpr. Elsewhere one launch (a paired scan's direction read
    at run time, its loads and stores element by element)."""
    if paired and vec >= FLIP_TILES_MIN_VEC:
        return [dict(PAIRED=False, REVERSE=half, FLIP_TILES=half, PAIR_HALF=True) for half in (False, True)]
    return [dict(PAIRED=bool(paired), REVERSE=bool(reverse), FLIP_TILES=bool(reverse) and vec >= FLIP_TILES_MIN_VEC,
                 PAIR_HALF=False)]


def _launch_config(batch: int, dim: int, B: Tensor, C: Tensor, dstate: int, length: int, backward: bool,
                   save_states: bool = True):
    """(BLOCK_D, BLOCK_N, BLOCK_L, num_warps, PREFETCH): lanes over channels and states, L inside each thread.

    From benchmarks/scan_sweep.py on an H100 (tables in benchmarks/NOTES.md): small tiles and one warp win - more
    programs in flight hide the latency of the sequential loop, and the backward's larger live set does not
    spill. The backward takes 8 channels; between MIN_PROGRAMS and 2048 programs of 8 it narrows them to 4
    (long_1d). The forward at N >= 8 takes 16 channels (a warp's tile of 2048 elements: 64 a thread) unless that
    alone would drop it below MIN_PROGRAMS and split the sequence; then 8 channels and, when it saves no states,
    16 steps (the same 2048 elements). Forward without saved states (ms): vim_ti_224 0.153 -> 0.130 (16
    channels), vmamba_v0_stage1 1.024 -> 0.780 (16 channels), long_1d 0.776 -> 0.696 (8 x 16 steps; 16
    channels would split it: 0.863), vim_ti_1248 0.525 -> 0.454 (split either way). With too few programs
    (long sequences at small batch: below MIN_PROGRAMS) forward and backward split the sequence
    (_num_segments). vim_ti_1248 bwd: 2.00 ms unsplit with 4 channels, 1.90 split with 4, 1.40 split with 8.
    Loading the next tile ahead pays for small N, where the loop is memory-bound. (It also paid in the backward
    below 1024 programs - vim_ti_1248 fwd+bwd 2.88 -> 2.55 ms before the backward split; split, it makes no
    difference there (1.402 vs 1.403 ms) and spills.)
    """
    block_n = _block_n(dstate)
    groups = math.lcm(_groups(B), _groups(C))
    if backward:
        wanted = 4 if MIN_PROGRAMS <= batch * dim // 8 < 2048 else 8  # below MIN_PROGRAMS the sequence is split
    elif block_n >= 8 and not batch * dim // 16 < MIN_PROGRAMS <= batch * dim // 8:
        wanted = 16
    else:
        wanted = 8
    block_d = _block_d(dim, groups, wanted)
    block_l = _block_l(length, dstate, free=not backward and not save_states and block_d == 8)
    tile = block_d * block_n * block_l  # one warp per 1024 elements of a backward tile, 2048 of a forward one
    num_warps = min(8, max(1, tile // (1024 if backward else 2048)))
    return block_d, block_n, block_l, num_warps, block_n < 8


# Below MIN_PROGRAMS (batch x channel blocks) forward and backward split the sequence across programs until
# about TARGET_PROGRAMS run. H100: vim_ti_1248 (384 programs) fwd 1.04 -> 0.53 ms split, bwd 2.00 -> 1.40;
# long_1d (1536 programs) and vmamba_v0_stage1 (3072) got slower split (fwd 0.74 -> 1.10, 1.08 -> 1.46 ms;
# fwd+bwd with MIN_PROGRAMS 4096: 4.50 -> 5.47, 5.43 -> 6.45). Fewer, longer segments won at vim_ti_1248 (H100,
# 2026-12-07, TARGET_PROGRAMS 8192 -> 4096: fwd 0.405 -> 0.386 ms, fwd+bwd 1.779 -> 1.708; Vim-Ti 1248² batch 8
# inference 287.8 -> 295.0 img/s, training 63.4 -> 64.8). Tests raise the thresholds to force splits.
MIN_PROGRAMS = 1024
TARGET_PROGRAMS = 4096


# Register caps (Triton's ``maxnreg``) for the N >= 16 kernels without z (VMamba's v0 SS2D): there the backward
# compiles to 232-247 registers, 8 one-warp programs an SM; at 224 it keeps 9 with no spills (benchmarks/scan_ir.py,
# every v0 stage, and N 32). With z (Vim, long_1d) it needs 255 and a cap spills: H100 vim_ti_224 fwd+bwd 0.711 ->
# 0.739 ms. Below N 16 a cap only frees the compiler to take more (N 8 backward: 128 -> 167 registers).
# The forward (168-188 registers, 10-12 programs an SM) takes 168. H100, bf16, ms: vmamba_v0_stage1 fwd 0.72 ->
# 0.695, fwd+bwd 4.25 -> 4.03; v0 SS2D layer (batch 128) fwd+bwd 25.29 -> 24.64 (fwd 5.66 -> 5.69); a cap of 128 on
# the forward (spills) gained no more.
FWD_MAX_REGISTERS_NO_Z = 168
BWD_MAX_REGISTERS_NO_Z = 224


def _register_cap(dstate: int, has_z: bool, backward: bool) -> dict:
    """``maxnreg`` launch option of the forward / backward kernels (empty: the compiler's choice)."""
    if dstate < 16 or has_z:
        return {}
    return {"maxnreg": BWD_MAX_REGISTERS_NO_Z if backward else FWD_MAX_REGISTERS_NO_Z}


def _num_segments(programs: int, n_tiles: int) -> int:
    """Sequence segments wanted (forward and backward): enough programs to fill the GPU, at least 16 tiles each.

    Splitting costs a first pass over the inputs (each segment's end state, or adjoint carry, from zero), about
    half a forward, so it pays only where batch * dim alone leaves the GPU mostly idle (long sequences at small
    batch).
    """
    if programs >= MIN_PROGRAMS:
        return 1
    return max(1, min(triton.cdiv(TARGET_PROGRAMS, programs), n_tiles // 16))


def _segments(programs: int, n_tiles: int) -> tuple[int, int]:
    """(n_seg, tiles_per_seg): _num_segments rounded so that every segment has tiles (the last may have fewer)."""
    tiles_per_seg = triton.cdiv(n_tiles, _num_segments(programs, n_tiles))
    return triton.cdiv(n_tiles, tiles_per_seg), tiles_per_seg


def _u_sharing(u, delta, B, paired: bool, reverse: bool) -> tuple[int, int]:
    """(u_dim, u_share): group g of B/C reads channels (g // u_share) * u_dim + [0, u_dim) of u."""
    if not paired:
        return u.shape[1], 1
    groups = _groups(B)
    if reverse or groups % 2 or u.shape[1] * 2 != delta.shape[1]:
        raise ValueError(f"paired scan: B/C need an even number of groups (got {groups}) and u half the channels "
                         f"of delta (got {u.shape[1]} and {delta.shape[1]}), without reverse")
    return delta.shape[1] // groups, 2


def selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, save_states, paired=False,
                       reverse=False):
    """The scan; ``reverse`` walks L from the end (outputs stay at their positions). ``paired``: u (B, D/2, L)
    holds one sequence per pair of B/C groups (B, 2P, N, L); the even group of a pair scans it forward, the odd
    one backward; delta (B, D, L) and out (B, D, L) have every group's channels (see the module docstring)."""
    batch, dim, length = delta.shape
    u_dim, u_share = _u_sharing(u, delta, B, paired, reverse)
    dstate = A.shape[1]
    state_dtype, DT = compute_dtype(u)
    block_d, block_n, block_l, num_warps, prefetch = _launch_config(batch, dim, B, C, dstate, length, False,
                                                                    bool(save_states))
    n_tiles = triton.cdiv(length, block_l)
    out = torch.empty_like(delta, dtype=u.dtype)  # delta's layout when it is dense, else contiguous
    last = torch.empty(batch, dim, dstate, device=u.device, dtype=state_dtype)
    states = (torch.empty(batch, dim, n_tiles, dstate, device=u.device, dtype=state_dtype) if save_states
              else u.new_empty(0, dtype=state_dtype))
    dpg_B, *B_strides = _bc_args(B, dim)
    dpg_C, *C_strides = _bc_args(C, dim)
    n_seg, tiles_per_seg = _segments(batch * (dim // block_d), n_tiles)
    vec = _vector_width(length, u, delta, z, out)
    launches = _walk_launches(paired, reverse, vec)
    chunk = dict(CHUNK=_flip_chunk(block_l, u), VEC=vec)
    caps = _register_cap(dstate, z is not None, backward=False)
    hend = torch.empty(batch, dim, n_seg, dstate, device=u.device, dtype=state_dtype)
    dtsum = torch.empty(batch, dim, n_seg, device=u.device, dtype=state_dtype)
    if n_seg > 1:  # the last segment's summary is never read
        _scan_segment_kernel[(dim // block_d, batch, n_seg - 1)](
            u, delta, A, B, delta_bias if delta_bias is not None else u, hend, dtsum,
            dim, length // vec, dstate, tiles_per_seg, n_seg, dpg_B, *B_strides, u_dim, u_share,
            *_bd_strides(u, vec), *_bd_strides(delta, vec),
            HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus), B_FIXED=B.dim() == 2, DT=DT,
            BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_L=block_l, PAIRED=bool(paired), REVERSE=bool(reverse),
            FLIP_TILES=bool(reverse) and vec >= FLIP_TILES_MIN_VEC, **chunk, num_warps=num_warps, **caps,
        )
    for launch in launches:
        _scan_fwd_kernel[(dim // len(launches) // block_d, batch, n_seg)](
            u, delta, A, B, C, D if D is not None else u, z if z is not None else u,
            delta_bias if delta_bias is not None else u,
            out, last, states, hend, dtsum,
            dim, length // vec, dstate, n_tiles, tiles_per_seg, n_seg, dpg_B, dpg_C, *B_strides, *C_strides,
            u_dim, u_share, *_bd_strides(u, vec), *_bd_strides(delta, vec), *_bd_strides(z, vec),
            *_bd_strides(out, vec),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
            B_FIXED=B.dim() == 2, C_FIXED=C.dim() == 2, SAVE_STATES=bool(save_states), DT=DT,
            BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_L=block_l, PREFETCH=prefetch, **launch, **chunk,
            num_warps=num_warps, **caps,
        )
    return out, last, states


def selective_scan_bwd(dout, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_states,
                       paired=False, reverse=False):
    """Gradients of :func:`selective_scan_fwd`, each in its input's shape.

    ``paired``: du sums the two groups of each pair (both read the same u); dout is either per group (delta's
    shape) or, where both groups of every pair get the same output gradient (VMamba's merge sums each pair), one
    per pair (u's shape), read by both groups as u is."""
    batch, dim, length = delta.shape
    u_dim, u_share = _u_sharing(u, delta, B, paired, reverse)
    dout_share = u_share if paired and dout.shape == u.shape else 1
    if dout_share == 1 and dout.shape != delta.shape:
        raise ValueError(f"dout must have delta's shape {tuple(delta.shape)}"
                         + (f" or, paired, u's {tuple(u.shape)}" if paired else "") + f"; got {tuple(dout.shape)}")
    dstate = A.shape[1]
    state_dtype, DT = compute_dtype(u)
    block_d, block_n, block_l, num_warps, prefetch = _launch_config(batch, dim, B, C, dstate, length, True)
    n_tiles = triton.cdiv(length, block_l)
    if chunk_states.shape != (batch, dim, n_tiles, dstate):
        raise RuntimeError(f"saved chunk states have shape {tuple(chunk_states.shape)}, "
                           f"expected {(batch, dim, n_tiles, dstate)}")
    # each gradient in its input's layout when that is dense, else contiguous (the op's fake does the same)
    du = torch.empty_like(u)
    ddelta = torch.empty_like(delta)
    dz = torch.empty_like(z) if z is not None else None
    n_seg, tiles_per_seg = _segments(batch * (dim // block_d), n_tiles)
    # per-channel gradients: one slice per (segment, batch element), summed below
    per_channel = (n_seg * batch, dim, dstate)
    dA = torch.empty(per_channel, device=u.device, dtype=state_dtype)
    dB = (torch.empty(per_channel, device=u.device, dtype=state_dtype) if B.dim() == 2
          else torch.zeros_like(B, dtype=state_dtype))
    dC = (torch.empty(per_channel, device=u.device, dtype=state_dtype) if C.dim() == 2
          else torch.zeros_like(C, dtype=state_dtype))
    dD = torch.empty(n_seg * batch, dim, device=u.device, dtype=state_dtype) if D is not None else None
    dbias = torch.empty(n_seg * batch, dim, device=u.device, dtype=state_dtype) if delta_bias is not None else None
    cz = torch.empty(batch, dim, n_seg, dstate, device=u.device, dtype=state_dtype)
    dtsum = torch.empty(batch, dim, n_seg, device=u.device, dtype=state_dtype)
    dpg_B, *B_strides = _bc_args(B, dim)
    dpg_C, *C_strides = _bc_args(C, dim)
    placeholder = du
    vec = _vector_width(length, dout, u, delta, z, du, ddelta, dz)
    flags = dict(HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=bool(delta_softplus),
                 C_FIXED=C.dim() == 2, DT=DT, BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_L=block_l)
    if n_seg > 1:  # the first segment's summary is never read
        _scan_bwd_segment_kernel[(dim // block_d, batch, n_seg - 1)](
            dout, delta, A, C, z if z is not None else placeholder,
            delta_bias if delta_bias is not None else placeholder, cz, dtsum,
            dim, length // vec, dstate, n_tiles, tiles_per_seg, n_seg, dpg_C, *C_strides, u_dim, dout_share,
            *_bd_strides(dout, vec), *_bd_strides(delta, vec), *_bd_strides(z, vec), **flags, PAIRED=bool(paired),
            REVERSE=bool(reverse), VEC=vec, num_warps=num_warps,
        )
    # The two launches of a paired scan (_walk_launches) write du per pair, the second (DU_ADD) adding to what the
    # first wrote; one launch of a paired scan writes du per group (du_k), summed over each pair below.
    launches = [dict(launch, DU_ADD=launch["PAIR_HALF"] and launch["REVERSE"])
                for launch in _walk_launches(paired, reverse, vec)]
    du_k = du
    if len(launches) == 2:
        du_share = u_share
    else:
        du_share = 1
        if paired:
            du_k = torch.empty_like(delta, dtype=u.dtype)
    for launch in launches:
        _scan_bwd_kernel[(dim // len(launches) // block_d, batch, n_seg)](
            dout, dlast_state.contiguous() if dlast_state is not None else placeholder, u, delta, A, B, C,
            D if D is not None else placeholder, z if z is not None else placeholder,
            delta_bias if delta_bias is not None else placeholder, chunk_states,
            du_k, ddelta, dz if dz is not None else placeholder, dA, dB, dC,
            dD if dD is not None else placeholder, dbias if dbias is not None else placeholder, cz, dtsum,
            dim, length // vec, dstate, n_tiles, tiles_per_seg, n_seg, dpg_B, dpg_C, *B_strides, *C_strides, u_dim,
            u_share, dout_share, du_share,
            *(s for t in (dout, u, delta, z, du_k, ddelta, dz) for s in _bd_strides(t, vec)),
            *_bc_args(dB, dim)[1:], *_bc_args(dC, dim)[1:],
            HAS_D=D is not None, B_FIXED=B.dim() == 2, HAS_DLAST=dlast_state is not None, PREFETCH=prefetch,
            SPLIT=n_seg > 1, CHUNK=_flip_chunk(block_l, u), VEC=vec, **flags, **launch,
            num_warps=num_warps, **_register_cap(dstate, z is not None, backward=True),
        )
    if du_k is not du:  # each pair's two directions: an elementwise add of two views (PyTorch's reduction kernel
        # over this size-2 middle dimension ran at a third of the copy bandwidth in bf16)
        pairs = du_k.view(batch, _groups(B) // 2, 2, -1, length)
        torch.add(pairs[:, :, 0], pairs[:, :, 1], out=du.view(batch, _groups(B) // 2, -1, length))
    dA = dA.sum(0).to(A.dtype)
    dB = dB.sum(0).to(B.dtype) if B.dim() == 2 else dB.to(B.dtype)
    dC = dC.sum(0).to(C.dtype) if C.dim() == 2 else dC.to(C.dtype)
    dD = dD.sum(0).to(D.dtype) if D is not None else None
    dbias = dbias.sum(0).to(delta_bias.dtype) if delta_bias is not None else None
    return du, ddelta, dA, dB, dC, dD, dz, dbias
