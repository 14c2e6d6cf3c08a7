"""A/B revisions of mambaeye on one machine: the same command on each revision's source tree, interleaved.

Timings on one GPU kind differ by up to ~15% between machines (benchmarks/NOTES.md), so a change is judged only
against its baseline measured in the same call on the same machine, with the revisions' runs interleaved so that
drift (clocks, heat, neighbours) hits them alike.

Here, with git - one source tree per revision (``git archive``; ``WORKTREE`` is the checkout with its uncommitted
changes to tracked files):

    python benchmarks/ab.py prepare main WORKTREE --into .dev/ab

On the GPU machine, which needs no git (carry the folder):

    python benchmarks/ab.py run .dev/ab --rounds 2 -- benchmarks/scan_directions.py --out /tmp/ab/{tree}
    python benchmarks/ab.py run .dev/ab -- benchmarks/model_step.py vmamba_tiny

``run`` starts ``python3 ARGS...`` once per tree and round, inside the tree and with the tree first on PYTHONPATH,
so that each run imports that tree's mambaeye even where another one is pip-installed (editable installs resolve
after PYTHONPATH). ``{tree}`` in an argument becomes the tree's name. Each output line is printed as
``<tree> r<round> | <line>``; a run that fails is reported and the others go on (exit status 1 at the end).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

WORKTREE = "WORKTREE"


def tree_name(rev: str) -> str:
    """A folder name for a revision: main -> main, HEAD~1 -> HEAD_1, origin/x -> origin_x."""
    from mambaeye.bench._common import slug  # here, not at the top: `run` needs no mambaeye outside the trees

    return slug(rev)


def resolve(rev: str, repo: Path) -> str:
    """The commit to archive: ``rev`` itself, or for WORKTREE a commit of the uncommitted changes to tracked files
    (``git stash create``; HEAD when there are none)."""
    if rev == WORKTREE:
        stash = subprocess.run(["git", "stash", "create"], cwd=repo, check=True, capture_output=True, text=True)
        rev = stash.stdout.strip() or "HEAD"
    out = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=repo, capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise SystemExit(f"ab.py prepare: {rev!r} is not a revision of {repo}: {out.stderr.strip()}")
    return out.stdout.strip()


def prepare(revs: list[str], into: Path, repo: Path) -> list[Path]:
    """Extract each revision's tracked files into ``into/<tree_name(rev)>`` (replacing what was there) and write
    its commit into the tree's REVISION file."""
    names = [tree_name(rev) for rev in revs]
    if len(set(names)) != len(names):
        raise SystemExit(f"ab.py prepare: revisions {revs} give the same folder name twice: {names}")
    trees = []
    for rev, name in zip(revs, names, strict=True):
        commit = resolve(rev, repo)
        tree = into / name
        if tree.exists():
            shutil.rmtree(tree)
        tree.mkdir(parents=True)
        archive = subprocess.Popen(["git", "archive", commit], cwd=repo, stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(tree)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise SystemExit(f"ab.py prepare: git archive {commit} failed")
        (tree / "REVISION").write_text(f"{rev} {commit}\n")
        print(f"{name}: {rev} = {commit[:12]} -> {tree}")
        trees.append(tree)
    return trees


def find_trees(folder: Path, names: list[str] | None) -> list[Path]:
    """The trees under ``folder`` (each a folder holding mambaeye/), in ``names`` order if given, else sorted."""
    if names:
        trees = [folder / n for n in names]
    else:
        trees = sorted(p for p in folder.iterdir() if (p / "mambaeye").is_dir()) if folder.is_dir() else []
    missing = [str(t) for t in trees if not (t / "mambaeye").is_dir()]
    if missing or not trees:
        raise SystemExit(f"ab.py run: no mambaeye source tree at {missing or folder} (make them with `prepare`)")
    return trees


def run(trees: list[Path], args: list[str], rounds: int) -> int:
    """Run ``python3 args`` in each tree, ``rounds`` times interleaved; print the output tagged; 1 if any failed."""
    if not args:
        raise SystemExit("ab.py run: give the command's arguments after --, e.g. -- benchmarks/scan.py")
    failed = []
    for r in range(1, rounds + 1):
        for tree in trees:
            tag = f"{tree.name} r{r}"
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                [str(tree.resolve()), *filter(None, [os.environ.get("PYTHONPATH")])]), PYTHONUNBUFFERED="1")
            cmd = [sys.executable, *(a.replace("{tree}", tree.name) for a in args)]
            proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
            for line in proc.stdout:
                print(f"{tag} | {line.rstrip()}", flush=True)
            if proc.wait() != 0:
                failed.append(tag)
                print(f"{tag} | FAILED with exit status {proc.returncode}", flush=True)
    if failed:
        print(f"failed runs: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)
    pp = sub.add_parser("prepare", help="one source tree per revision (needs git)")
    pp.add_argument("revs", nargs="+", help=f"revisions to compare; {WORKTREE} = the checkout's uncommitted state")
    pp.add_argument("--into", type=Path, required=True, help="folder for the trees")
    pp.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    pr = sub.add_parser("run", help="run a python command on each tree, interleaved (no git needed)",
                        usage="ab.py run FOLDER [--trees NAME ...] [--rounds N] -- PYTHON_ARGS ...",
                        epilog="after the options: -- and then python3's arguments (a script and its options)")
    pr.add_argument("folder", type=Path, help="the folder `prepare` filled")
    pr.add_argument("--trees", nargs="+", default=None, help="tree names, in run order (default: all, sorted)")
    pr.add_argument("--rounds", type=int, default=1)
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    argv, args = argv[:split], argv[split + 1:]
    a = p.parse_args(argv)
    if a.verb == "prepare":
        if args:
            p.error(f"prepare takes no command (got {' '.join(args)})")
        prepare(a.revs, a.into, a.repo)
        return 0
    if a.rounds < 1:
        raise SystemExit(f"ab.py run: --rounds must be at least 1, got {a.rounds}")
    return run(find_trees(a.folder, a.trees), args, a.rounds)


if __name__ == "__main__":
    raise SystemExit(main())
