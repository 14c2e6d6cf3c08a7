"""Multi-process training with PyTorch's own engine (DDP), started by ``torchrun``.

    torchrun --nproc_per_node=2 -m mambaeye train --config configs/... [--key value ...]

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them everything here is a no-op and a
run is a single process. Each rank takes ``cuda:LOCAL_RANK`` (NCCL) on GPUs, or the CPU (gloo). Only rank 0
writes files; metrics are summed over ranks with :func:`all_reduce_sum`. Evaluation shards the data with
:class:`ShardSampler`, which (unlike ``DistributedSampler``) pads nothing, so every sample counts exactly once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

__all__ = ["DistInfo", "init_distributed", "resolve_device", "all_reduce_sum", "wrap_ddp", "unwrap", "barrier",
           "shutdown", "ShardSampler"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its host."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str, info: DistInfo | None = None) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; under torchrun a CUDA device becomes ``cuda:LOCAL_RANK``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available")
        if info is not None and info.enabled:
            dev = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(dev)
    return dev


def init_distributed(device: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group that torchrun describes in the environment (once); return (info, this rank's device)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(), resolve_device(device)
    info = DistInfo(rank=int(os.environ["RANK"]), world_size=world_size,
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    dev = resolve_device(device, info)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return info, dev


def all_reduce_sum(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Sum a list of numbers over all ranks (float64 on ``device``); identity in a single process."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def wrap_ddp(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` when running under torchrun, else ``model`` itself."""
    if not info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (what checkpoints store)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Leave the process group (call at the end of a torchrun job)."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of ``range(n)``, in order: a split of a dataset for evaluation
    where each sample lands on exactly one rank (ranks may get one sample more or less than others)."""

    def __init__(self, n: int, info: DistInfo) -> None:
        self.n, self.rank, self.world_size = n, info.rank, info.world_size

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))
