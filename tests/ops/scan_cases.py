"""Inputs and comparison helpers for the selective-scan tests (CPU and GPU)."""

from __future__ import annotations

import torch

from mambaeye.ops import selective_scan

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def case_id(**dims) -> str:
    """Readable test ids such as B2-D8-L63-N16."""
    return "-".join(f"{k}{v}" for k, v in dims.items())


def make_inputs(batch, dim, length, dstate, bc="step", groups=1, z=True, D=True, bias=True,
                dtype=torch.float64, device="cpu") -> dict:
    """Random scan inputs. bc: "fixed" (D, N), "step" (B, N, L) or "grouped" (B, G, N, L)."""
    weight = torch.float64 if dtype == torch.float64 else torch.float32
    kw = dict(device=device)

    def bc_tensor():
        if bc == "fixed":
            return torch.randn(dim, dstate, dtype=weight, **kw)
        if bc == "step":
            return torch.randn(batch, dstate, length, dtype=dtype, **kw)
        return torch.randn(batch, groups, dstate, length, dtype=dtype, **kw)

    return dict(
        u=torch.randn(batch, dim, length, dtype=dtype, **kw),
        delta=(0.5 * torch.randn(batch, dim, length, dtype=torch.float64, **kw)).to(dtype),
        A=-(torch.rand(dim, dstate, dtype=weight, **kw) + 0.5),
        B=bc_tensor(),
        C=bc_tensor(),
        D=torch.randn(dim, dtype=weight, **kw) if D else None,
        z=torch.randn(batch, dim, length, dtype=dtype, **kw) if z else None,
        delta_bias=0.5 * torch.randn(dim, dtype=weight, **kw) if bias else None,
    )


def to(inputs: dict, dtype=None, device=None) -> dict:
    """A detached copy; floating tensors cast to dtype (the reference runs everything in float64)."""
    return {k: (v.detach().to(device=device or v.device, dtype=dtype or v.dtype) if v is not None else None)
            for k, v in inputs.items()}


def scan_with_grads(inputs: dict, backend: str, softplus: bool, seed: int = 7, reverse: bool = False,
                    flip_out: bool = False):
    """out, last state and the gradient of a fixed random loss of both w.r.t. every input.

    flip_out: the loss weights see out flipped along L (to compare a reversed scan with a flipped one).
    """
    leaves = {k: (v.detach().clone().requires_grad_(True) if v is not None else None) for k, v in inputs.items()}
    out, last = selective_scan(**leaves, delta_softplus=softplus, return_last_state=True, backend=backend,
                               reverse=reverse)
    if flip_out:
        out = out.flip(-1)
    gen = torch.Generator().manual_seed(seed)
    w_out = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device)
    w_last = torch.randn(last.shape, generator=gen, dtype=torch.float64).to(out.device)
    loss = (out.double() * w_out).sum() + (last.double() * w_last).sum()
    loss.backward()
    grads = {k: (v.grad if v is not None else None) for k, v in leaves.items()}
    return out.detach(), last.detach(), grads


def assert_compiled_matches_eager(fn, inputs, loss=lambda out: out) -> None:
    """``torch.compile(fn, fullgraph=True, backend="aot_eager")`` (which traces an op's registered custom op) gives
    fn's eager output (an autograd.Function), and the same gradients of ``loss(output)`` for every input."""
    ref = fn(*inputs)
    grads_ref = torch.autograd.grad(loss(ref), inputs)
    out = torch.compile(fn, fullgraph=True, backend="aot_eager")(*inputs)
    grads = torch.autograd.grad(loss(out), inputs)
    torch.testing.assert_close(out, ref)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref)


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """||got - ref|| / ||ref|| in float64 (NaN anywhere gives NaN, which fails every bound)."""
    got, ref = got.detach().double().cpu(), ref.detach().double().cpu()
    return ((got - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def assert_matches(got, ref, tol: float) -> None:
    out, last, grads = got
    out_r, last_r, grads_r = ref
    assert out.shape == out_r.shape
    errors = {"out": rel_err(out, out_r), "last_state": rel_err(last, last_r)}
    for name in GRAD_NAMES:
        if grads_r[name] is None:
            assert grads[name] is None, name
            continue
        assert grads[name] is not None, f"no gradient for {name}"
        assert grads[name].shape == grads_r[name].shape, name
        errors["d" + name] = rel_err(grads[name], grads_r[name])
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"relative errors above {tol:g}: {bad}"


class LaunchRecorder:
    """Wraps a @triton.jit kernel: ``kernel[grid](...)`` launches it and appends (grid, keyword arguments) to
    ``launches``."""

    def __init__(self, kernel, launches):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append((grid, kwargs))
            return self.kernel[grid](*args, **kwargs)

        return launch
