"""Every Triton kernel compiles for an H100 (sm_90), without a GPU.

The CPU tests run the kernels in Triton's interpreter, which never compiles them; an error only the compiler sees
(a helper whose ``return`` shapes differ between ``constexpr`` branches: the H100 GPU test of fixed B/C failed on
one) would otherwise first show on a GPU. :mod:`tests.ops.sm90_cases` records each launch on meta tensors and
compiles it with Triton's own toolchain, in a child process: this one has TRITON_INTERPRET set.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="compiles Triton kernels")

from .sm90_cases import cases  # noqa: E402 (needs triton)

ROOT = pathlib.Path(__file__).resolve().parents[2]
CASES = cases()


@pytest.fixture(scope="module")
def report() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "tests.ops.sm90_cases"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, f"sm90_cases failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout)


@pytest.mark.parametrize("name", list(CASES))
def test_compiles_for_h100(report, name):
    rows = report[name]
    errors = [f"{r['kernel']}: {r['error']}" for r in rows if "error" in r]
    assert not errors, "\n\n".join(errors)
    launched = {r["kernel"] for r in rows}
    missing = set(CASES[name][1]) - launched
    assert not missing, f"{name} did not launch {sorted(missing)} (launched {sorted(launched)})"
    for r in rows:  # an sm_90 thread has at most 255 registers; anything else is a misread of cuobjdump
        assert 16 <= r["registers"] <= 255, r
