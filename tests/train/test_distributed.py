"""Data-parallel training on CPU: two processes (gloo) started by torchrun, as a user would start them."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("timm")

from mambaeye.train import evaluate, load_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY = {"model": "vmamba_tiny", "model_kwargs": {"depths": [1, 1, 1, 1], "dims": 8}, "img_size": 32, "in_chans": 1,
        "dataset": "digits", "train_subset": 64, "val_subset": 37, "batch_size": 16, "lr": 3e-3,
        "warmup_epochs": 0.5, "ema": True, "ema_decay": 0.9, "seed": 0, "progress": False, "device": "cpu", "epochs": 2}


def _torchrun(args: list[str], timeout: float = 120) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                               "MASTER_PORT")}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])), OMP_NUM_THREADS="1")
    # --standalone: a local rendezvous on a free port, so parallel test runs do not collide
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    # a session of its own, so that a hung run is ended with all its workers
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun hung for {timeout} s:\n{stdout[-3000:]}\n{stderr[-6000:]}")
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{stdout[-3000:]}\n{stderr[-6000:]}"
    return stdout + stderr


WORKER = """
import json, sys
from pathlib import Path
import torch
from mambaeye.cli import main
from mambaeye.train import TrainConfig, engine, train
from mambaeye.train.distributed import barrier, init_distributed, shutdown

out, config, base = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
# joined here, so each train() leaves the group to this script (a process group cannot be re-joined once left)
info, _ = init_distributed("cpu")

# the command line, as `torchrun --nproc_per_node=2 -m mambaeye train --config ...` runs it
argv = [a for k, v in base.items() for a in (f"--{k.replace('_', '-')}", v if isinstance(v, str) else json.dumps(v))]
assert main(["train", "--config", config, "--output-dir", str(out / "full"), *argv]) == 0

real_seed = engine._epoch_seed

def stop_at_second_epoch(seed, epoch, r):  # every rank stops at the same point, after epoch 1's checkpoint
    if epoch == 1:
        raise KeyboardInterrupt
    return real_seed(seed, epoch, r)

cfg = TrainConfig.from_dict({**base, "output_dir": str(out / "resumed")})
engine._epoch_seed = stop_at_second_epoch
try:
    barrier(info)
    train(cfg)
    sys.exit("not interrupted")
except KeyboardInterrupt:
    pass
engine._epoch_seed = real_seed
torch.manual_seed(1234 + info.rank)  # a different process state must not matter
barrier(info)  # rank 0's checkpoint is on disk before any rank reads it
cfg.resume = "auto"
resumed = train(cfg)
torch.save({"model": resumed["model"].state_dict(), "history": resumed["history"]}, out / f"rank{info.rank}.pt")
shutdown(info)
"""


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """One torchrun launch (process start-up dominates): a 2-epoch run from the command line, then the same
    run interrupted after epoch 1 and resumed."""
    out = tmp_path_factory.mktemp("ddp")
    (out / "worker.py").write_text(textwrap.dedent(WORKER))
    log = _torchrun([str(out / "worker.py"), str(out), str(REPO / "configs" / "classification_digits.yaml"),
                     json.dumps(TINY)])
    return out, log


def test_torchrun_two_processes_run_folder(ddp_runs):
    out, log = ddp_runs
    run = out / "full"
    assert log.count("epoch 2/2:") == 2, log  # only rank 0 logs: once for the full run, once for the resumed one
    for name in ("config.yaml", "metrics.csv", "metrics.json", "loss.png", "accuracy.png", "last.pt", "best.pt"):
        assert (run / name).is_file(), name
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
    history = json.loads((run / "metrics.json").read_text())
    with open(run / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    assert [row["epoch"] for row in history] == [1, 2]
    # 37 val images over 2 ranks: shards of 19 and 18, where a padding sampler would count 38
    assert all(row["val_n"] == 37 for row in history)
    ckpt = load_checkpoint(run)
    assert ckpt["world_size"] == 2 and ckpt["epoch"] == 1 and ckpt["config"]["batch_size"] == 16
    assert not any(k.startswith("module.") for k in ckpt["model"])  # the unwrapped model is saved
    # the sharded, summed validation equals a single-process evaluation of the same weights
    row = history[-1]
    for use_ema, prefix in ((False, "val"), (True, "val_ema")):
        single = evaluate(run / "last.pt", use_ema=use_ema, progress=False, device="cpu")
        assert single["n"] == 37
        assert row[f"{prefix}_top1"] == pytest.approx(single["top1"], abs=1e-9)
        assert row[f"{prefix}_top5"] == pytest.approx(single["top5"], abs=1e-9)
        assert row[f"{prefix}_loss"] == pytest.approx(single["loss"], rel=1e-5)
    assert 0 <= row["val_top1"] <= row["val_top5"] <= 100
    assert history[1]["train_loss"] < history[0]["train_loss"]


def test_ddp_resume_equals_uninterrupted_and_ranks_agree(ddp_runs):
    out, _ = ddp_runs
    full, resumed = load_checkpoint(out / "full"), load_checkpoint(out / "resumed")
    ranks = [torch.load(out / f"rank{r}.pt") for r in (0, 1)]
    for state in (resumed["model"], ranks[0]["model"], ranks[1]["model"]):
        assert state.keys() == full["model"].keys()
        for k in state:
            assert torch.equal(state[k], full["model"][k]), k
    assert all(torch.equal(full["ema"][k], resumed["ema"][k]) for k in full["ema"])

    def strip(h):
        return [{k: v for k, v in row.items() if k != "time_s"} for row in h]

    assert strip(resumed["history"]) == strip(full["history"])
    assert strip(ranks[1]["history"]) == strip(full["history"])  # every rank returns the summed metrics
