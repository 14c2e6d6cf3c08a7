"""Shared test set-up.

- Without a CUDA GPU, Triton kernels run in Triton's interpreter on CPU tensors (TRITON_INTERPRET=1 must be set
  before triton is imported, hence here).
- Seeds are fixed for every test.
- In op tests, torch.empty / empty_like / Tensor.new_empty return NaN-filled tensors, so an output element that a
  kernel forgets to write fails the comparison instead of passing on leftover zeros.
- ``gpu`` tests are skipped where CUDA is absent (and deselected by default: run them with ``-m gpu``).
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

if "triton" not in sys.modules and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _fixed_seed():
    torch.manual_seed(0)


# ``with torch.device(...)`` recognises factory functions through a set that torch builds once, on first use. Build it
# now, with the real torch.empty & co.: built while _poison_empty has swapped in its wrappers (a torch.compile in an
# ops test does that), the set would hold the wrappers and ``with torch.device("meta")`` would leave later models'
# parameters on the CPU (tests/models/test_profile.py failed after tests/ops/test_causal_conv1d.py).
try:
    from torch.utils._device import _device_constructors
except ImportError:  # a private helper: nothing to prime where it is gone
    pass
else:
    _device_constructors()


def _nan_filled(factory):
    def wrapped(*args, **kwargs):
        t = factory(*args, **kwargs)
        if t.is_floating_point() or t.is_complex():
            t.fill_(float("nan"))
        return t

    return wrapped


@pytest.fixture(autouse=True)
def _poison_empty(request, monkeypatch):
    if "tests/ops" not in request.node.nodeid.replace("\\", "/"):
        return
    monkeypatch.setattr(torch, "empty", _nan_filled(torch.empty))
    monkeypatch.setattr(torch, "empty_like", _nan_filled(torch.empty_like))
    monkeypatch.setattr(torch.Tensor, "new_empty", _nan_filled(torch.Tensor.new_empty))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
