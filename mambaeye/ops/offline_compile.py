"""Compile mambaeye's Triton kernels for an H100 (sm_90) on a machine without a GPU, exactly as a launch would.

A launcher (say ``triton_scan.selective_scan_fwd``) runs on meta tensors with its kernels swapped for
:class:`Recorder` s, so the grid, arguments, strides, constexprs, ``num_warps`` and ``maxnreg`` of each call are the
real ones; :func:`compile_sm90` then compiles a recorded call to a cubin with Triton's own toolchain (its bundled
ptxas), and :func:`sass` reads it back with the bundled nvdisasm and cuobjdump.
The launches themselves (meta tensors at named shapes) are in :mod:`.kernel_launches`.

Two users:
- ``benchmarks/scan_ir.py`` prints what a kernel costs (registers, spills, SASS) before any GPU time is spent.
- ``tests/ops/test_triton_compile.py`` compiles every kernel variant in CI. Triton's interpreter, which runs the
  kernels on CPU tensors there, never compiles them, so an error that only the compiler sees (a ``return`` whose
  shape differs between ``constexpr`` branches, say) would otherwise first show on a GPU.

Needs Triton's compiler, which ``TRITON_INTERPRET=1`` replaces: with it set, ``@triton.jit`` gives interpreted
functions that cannot be compiled. Run in a process without it (the test starts one).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

H100 = GPUTarget("cuda", 90, 32)
_POINTER_TYPES = {torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.float32: "*fp32", torch.float64: "*fp64",
                  torch.int32: "*i32", torch.int64: "*i64"}


@dataclass
class Recorder:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args, **kwargs)`` records the call."""

    fn: object
    calls: list[tuple[tuple, tuple, dict]] = field(default_factory=list)

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((grid, args, kwargs))


def record(module, names: Iterable[str], launch: Callable[[], object]) -> dict[str, Recorder]:
    """Run ``launch()`` with ``module``'s kernels ``names`` swapped for recorders; returns them by name (a kernel
    that ``launch`` did not call has an empty ``calls``)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("offline compilation needs Triton's compiler; unset TRITON_INTERPRET (it is '1')")
    recorders = {name: Recorder(getattr(module, name)) for name in names}
    saved = {name: getattr(module, name) for name in names}
    try:
        for name, recorder in recorders.items():
            setattr(module, name, recorder)
        launch()
    finally:
        for name, fn in saved.items():
            setattr(module, name, fn)
    return recorders


def compile_sm90(fn, args: tuple, kwargs: dict):
    """Compile one recorded call of kernel ``fn`` for an H100. Tensors become pointers of their dtype with the
    16-byte alignment of an allocation; integers divisible by 16 get the divisibility hint a real launch gives them.
    Returns Triton's compiled kernel (``.asm`` holds "ttgir", "ptx" and "cubin")."""
    kwargs = dict(kwargs)
    options = {"num_warps": kwargs.pop("num_warps", 4)}
    for option in ("num_stages", "maxnreg"):  # launch options, not kernel arguments
        if option in kwargs:
            options[option] = kwargs.pop(option)
    signature, attrs = {}, {}
    for i, (name, value) in enumerate(zip(fn.arg_names, args, strict=False)):
        if isinstance(value, torch.Tensor):
            if value.dtype not in _POINTER_TYPES:
                raise ValueError(f"{fn.__name__}: argument {name} has dtype {value.dtype}, which offline compilation "
                                 f"does not map to a Triton pointer type (known: {sorted(map(str, _POINTER_TYPES))})")
            signature[name] = _POINTER_TYPES[value.dtype]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif value is None:
            signature[name] = "constexpr"
            kwargs[name] = None
        elif isinstance(value, bool):
            signature[name] = "i1"
        elif isinstance(value, float):
            signature[name] = "fp32"
        else:
            signature[name] = "i64" if abs(value) >= 2**31 else "i32"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    constexprs = {name: kwargs[name] for name in fn.arg_names if name in kwargs}
    signature.update({name: "constexpr" for name in constexprs})
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=H100, options=options)


def sass(compiled) -> tuple[str, str]:
    """(SASS listing, cuobjdump's resource usage) of a compiled kernel, from Triton's bundled tools."""
    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        listing = subprocess.run([f"{bindir}/nvdisasm", "-c", f.name], capture_output=True, text=True, check=True)
        usage = subprocess.run([f"{bindir}/cuobjdump", "-res-usage", f.name], capture_output=True, text=True,
                               check=True)
    return listing.stdout, usage.stdout


def registers_and_stack(usage: str) -> tuple[int, int]:
    """(registers a thread, stack bytes: spills and local arrays) from cuobjdump's resource usage."""
    return int(re.search(r"REG:(\d+)", usage).group(1)), int(re.search(r"STACK:(\d+)", usage).group(1))
