"""Benchmark scripts on CPU: benchmarks/ab.py (revisions side by side), model_step.py (one model's step),
bias_gelu_sweep.py (the bias + GELU tile shapes, each checked against the default) and the results writer the
scripts share (ss2d_ops.py's refusal without a GPU)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from mambaeye.ops import available_backends

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ab = _load("ab")
needs_git = pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                               reason="needs a git checkout")


def _fake_tree(folder: Path, name: str) -> Path:
    tree = folder / name
    (tree / "mambaeye").mkdir(parents=True)
    (tree / "mambaeye" / "__init__.py").write_text(f"WHERE = {name!r}\n")
    return tree


def test_tree_names_are_folder_safe():
    assert ab.tree_name("main") == "main"
    assert ab.tree_name("HEAD~1") == "HEAD_1"
    assert ab.tree_name("origin/feature x") == "origin_feature_x"


def test_run_imports_each_trees_own_package_interleaved(tmp_path, capsys):
    """Each run imports the mambaeye of its tree (not the installed one), in round-major order, output tagged."""
    for name in ("b", "a"):
        _fake_tree(tmp_path, name)
    code = "import mambaeye, pathlib; print(mambaeye.WHERE, pathlib.Path.cwd().name)"
    assert ab.main(["run", str(tmp_path), "--rounds", "2", "--", "-c", code]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "|" in line]
    assert lines == ["a r1 | a a", "b r1 | b b", "a r2 | a a", "b r2 | b b"]


def test_run_substitutes_the_tree_name_and_keeps_going_after_a_failure(tmp_path, capsys):
    for name in ("good", "bad"):
        _fake_tree(tmp_path, name)
    code = "import sys; print('arg', sys.argv[1]); sys.exit(3 if sys.argv[1] == 'out-bad' else 0)"
    assert ab.main(["run", str(tmp_path), "--trees", "bad", "good", "--", "-c", code, "out-{tree}"]) == 1
    out = capsys.readouterr().out
    assert "bad r1 | arg out-bad" in out and "bad r1 | FAILED with exit status 3" in out
    assert "good r1 | arg out-good" in out and "failed runs: bad r1" in out


def test_run_refuses_missing_trees_and_empty_commands(tmp_path):
    with pytest.raises(SystemExit, match="no mambaeye source tree"):
        ab.main(["run", str(tmp_path), "--", "-c", "pass"])
    _fake_tree(tmp_path, "a")
    with pytest.raises(SystemExit, match="no mambaeye source tree"):
        ab.main(["run", str(tmp_path), "--trees", "a", "missing", "--", "-c", "pass"])
    with pytest.raises(SystemExit, match="give the command"):
        ab.main(["run", str(tmp_path), "--"])


@needs_git
def test_prepare_archives_a_revision_and_the_worktree(tmp_path):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    trees = ab.prepare(["HEAD", ab.WORKTREE], tmp_path, ROOT)
    assert [t.name for t in trees] == ["HEAD", "WORKTREE"]
    for tree in trees:
        assert (tree / "mambaeye" / "__init__.py").is_file() and (tree / "README.md").is_file()
        assert not (tree / ".git").exists()
    assert (trees[0] / "REVISION").read_text() == f"HEAD {head}\n"
    with pytest.raises(SystemExit, match="not a revision"):
        ab.prepare(["no-such-revision-anywhere"], tmp_path, ROOT)


def test_model_step_times_a_model_on_cpu(capsys):
    model_step = _load("model_step")
    argv = ["vmamba_tiny", "--device", "cpu", "--size", "32", "--batch", "1", "--dtype", "fp32", "--warmup", "1",
            "--repeats", "1"]
    assert model_step.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == ["infer", "train"]
    for line in lines:
        ms = float(line.split(": ")[1].split(" ms")[0])
        assert ms > 0 and "img/s (eager)" in line
    with pytest.raises(SystemExit):
        model_step.main(["not_a_model", "--device", "cpu"])
    assert model_step.main([*argv, "--modes", "infer", "--kwarg", "batch_second=False"]) == 0
    assert capsys.readouterr().out.startswith("vmamba_tiny batch_second=False infer 32²")
    for bad in ("batch_second", "batch_second=yes please", "2x=1"):
        with pytest.raises(SystemExit):
            model_step.main([*argv, "--kwarg", bad])


@pytest.mark.skipif("triton" not in available_backends("cpu"), reason="triton is not installed")
def test_bias_gelu_sweep_checks_every_tile_shape_on_cpu(capsys):
    """Every candidate (BLOCK_L dividing L = 49 gives 4096 rows x 1 position, 49 position blocks) gives the
    default's y, dx and dbias (the script asserts it) and a timed row."""
    sweep = _load("bias_gelu_sweep")
    assert sweep.pow2_divisor(3136) == 64 and sweep.pow2_divisor(49) == 1
    assert sweep.main(["--device", "cpu", "--batch", "1", "--stages", "4", "--tiles", "4096"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 4 ")]
    assert [r.split(" | ")[1] for r in rows] == ["default", "divisor", "16"]  # 64 and 256 are the default at L 49
    assert "4096 x 1, 49" in rows[1]


def test_script_results_land_in_the_cards_folder(tmp_path, monkeypatch):
    from mambaeye.bench._common import script_command, write_script_results

    monkeypatch.setattr("sys.argv", ["benchmarks/ss2d_ops.py", "--ops", "gather", "--out", "a b"])
    assert script_command() == "python benchmarks/ss2d_ops.py --ops gather --out 'a b'"
    folder = write_script_results(tmp_path, "NVIDIA H100 80GB HBM3", "ss2d_ops", "# table\n", dict(rows=[1, 2]))
    assert folder == tmp_path / "NVIDIA_H100_80GB_HBM3"
    assert (folder / "ss2d_ops.md").read_text() == "# table\n"
    assert json.loads((folder / "ss2d_ops.json").read_text()) == {"rows": [1, 2]}


def test_ss2d_ops_names_the_missing_gpu(capsys):
    if torch.cuda.is_available():
        pytest.skip("has a GPU: the script would time the ops")
    with pytest.raises(SystemExit):
        _load("ss2d_ops").main([])
    assert "needs a CUDA GPU" in capsys.readouterr().err
