"""Two processes (gloo on CPU) train one segmentation run together: it completes, only rank 0 writes files,
and the metrics are sums over both ranks."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from .conftest import TINY_2D, tiny_cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data_dir: str, out: str, log_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from mambaeye.segment import engine

    writes = []
    real_save, real_history = engine.save_checkpoint_atomic, engine._write_history
    engine.save_checkpoint_atomic = lambda obj, path: (writes.append(str(path)), real_save(obj, path))[1]
    engine._write_history = lambda *a: (writes.append("history"), real_history(*a))[1]
    # batch 4 over 2 ranks: 2 patches per rank and step; 2 validation cases: one per rank
    cfg = tiny_cfg(TINY_2D, data_dir, out, batch_size=4, epochs=1, iterations_per_epoch=2, val_cases=[
        "mni152brain2d_000", "mni152brain2d_001"])
    result = engine.train(cfg)
    weights = sum(float(v.double().sum()) for v in result["model"].state_dict().values())
    with open(os.path.join(log_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"writes": writes, "history": result["history"], "weights": weights,
                   "evaluated": result["evaluation"] is not None}, f)


def test_two_process_gloo_training(mni2d, tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    logs = tmp_path / "logs"
    logs.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(mni2d), str(tmp_path / "run"), str(logs)), nprocs=2, join=True)
    r0, r1 = (json.loads((logs / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r1["writes"] == [] and not r1["evaluated"]  # rank 1 writes nothing
    assert any(w.endswith("last.pt") for w in r0["writes"]) and "history" in r0["writes"] and r0["evaluated"]
    assert (tmp_path / "run" / "evaluation" / "report.md").is_file()
    row0, row1 = r0["history"][0], r1["history"][0]
    assert row0["train_patches"] == 2 * 2 * 2  # iterations x per-rank batch x ranks: summed over ranks
    assert row0["val_n"] == 2  # one validation case per rank, counted on both
    strip = lambda r: {k: v for k, v in r.items() if k != "time_s"}  # noqa: E731
    assert strip(row0) == strip(row1)  # every rank holds the reduced metrics
    assert r0["weights"] == r1["weights"]  # DDP kept the replicas equal
