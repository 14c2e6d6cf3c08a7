"""What every suite shares: the run context (device, dtype, toy flag, environment record), timing, peak memory,
and writing the markdown / JSON / PNG outputs."""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MIB = 1024 * 1024
CALLS_PER_GRAPH = 10  # graph_replay_ms: calls of fn captured in one graph
GRAPH_REPEATS = 10  # graph_replay_ms: timed replays, median taken
# VMamba-T at 224²: stage -> (channels, grid side); the shapes of the kernel scripts in benchmarks/
VMAMBA_T_STAGES = {1: (96, 56), 2: (192, 28), 3: (384, 14), 4: (768, 7)}


def card_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"cpu-{platform.processor() or platform.machine()}-{torch.get_num_threads()}threads"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def environment(device: str, command: str | None = None) -> dict[str, Any]:
    """Card, versions, TF32 settings, date and command: recorded in every JSON."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    from mambaeye import __version__

    return dict(
        card=card_name(device),
        device=device,
        cpu_threads=torch.get_num_threads(),
        versions=dict(torch=torch.__version__, triton=triton_version, mambaeye=__version__,
                      python=platform.python_version(), cuda=torch.version.cuda),
        tf32=dict(matmul=torch.backends.cuda.matmul.allow_tf32, cudnn=torch.backends.cudnn.allow_tf32,
                  float32_matmul_precision=torch.get_float32_matmul_precision()),
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        command=command or " ".join(["mambaeye"] + [shlex.quote(a) for a in sys.argv[1:]]),
    )


def script_command() -> str:
    """How a ``benchmarks/*.py`` script was run, for its results' header: ``python <script> <args>``."""
    return "python " + " ".join([Path(sys.argv[0]).as_posix()] + [shlex.quote(a) for a in sys.argv[1:]])


def write_script_results(out_root: str | Path, card: str, name: str, md: str, payload: dict[str, Any]) -> Path:
    """A ``benchmarks/*.py`` script's results: ``<name>.md`` and ``<name>.json`` in ``out_root/<card>/`` (the card's
    name made a folder name, as ``benchmarks/results/NVIDIA_H100_80GB_HBM3``). Returns the folder."""
    out_dir = Path(out_root) / slug(card)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.md").write_text(md)
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=2))
    return out_dir


COMPILE_MODES = ["default", "reduce-overhead", "max-autotune-no-cudagraphs"]


@dataclass
class Context:
    """Everything a suite needs to know about the run."""

    suite: str
    device: str
    dtypes: list[str]
    toy: bool
    out_dir: Path
    warmup: int
    repeats: int
    command: str | None = None
    compile_mode: str | None = None  # torch.compile mode for the model suites (vim-vs-deit, vmamba); None: eager
    cuda_graphs: bool = False  # model suites: time replays of each step captured in a CUDA graph (no host cost)
    env: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = environment(self.device, self.command)

    def time_ms(self, fn: Callable[[], object]) -> float:
        return median_ms(fn, self.device, self.warmup, self.repeats)

    def graph_ms(self, fn: Callable[[], object], calls_per_graph: int = CALLS_PER_GRAPH) -> float:
        """:func:`graph_replay_ms` of ``fn`` with this run's warm-up and repeats (CUDA only)."""
        return graph_replay_ms(fn, calls_per_graph, self.repeats, self.warmup)

    def peak_mib(self, fn: Callable[[], object]) -> tuple[float | None, float | None]:
        return peak_memory_mib(fn, self.device)

    def autocast(self, dtype: str) -> contextlib.AbstractContextManager:
        return autocast(self.device, dtype)


def autocast(device: str, dtype: str) -> contextlib.AbstractContextManager:
    """fp32: no autocast; bf16 / fp16: torch.autocast on the device (weights stay fp32, as in the papers' runs)."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=DTYPES[dtype])


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_ms(fn: Callable[[], object], device: str, warmup: int = 3, repeats: int = 10) -> float:
    """Median milliseconds of ``fn()``: CUDA events after ``warmup`` calls on GPU, perf_counter on CPU."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(max(1, repeats)):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            start_t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start_t) * 1e3)
    return statistics.median(times)


def capture_cuda_graph(fn: Callable[[], Any], warmup: int = 3, calls: int = 1) -> Callable[[], Any]:
    """Capture ``calls`` consecutive calls of ``fn`` in one CUDA graph and return a function that replays them and
    returns what the last captured call returned (its tensors are overwritten by every replay). ``fn`` runs
    ``warmup`` times first on a side stream (lazy initialisation, Triton compiles, cuBLAS workspaces), as PyTorch's
    CUDA graph docs do; it must not synchronise with the host. A replay launches the recorded kernels with one
    call: timing it measures the kernels without the host's per-launch cost (what an eager step pays on a slow
    host). Capturing runs nothing: ``fn``'s side effects happen in the warm-up and then ``calls`` times a replay."""
    if calls < 1:
        raise ValueError(f"calls must be at least 1, got {calls}")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            for _ in range(calls):
                out = fn()
    except RuntimeError as err:
        if is_oom(err):
            raise
        raise RuntimeError(f"capturing {getattr(fn, '__qualname__', fn)!s} in a CUDA graph failed; a captured "
                           "function must not synchronise with the host (.item(), .cpu(), printing a CUDA tensor, "
                           f"data-dependent shapes) nor copy CPU tensors to the GPU: {err}") from err

    def replay() -> Any:
        graph.replay()
        return out

    return replay


def graph_replay_ms(fn: Callable[[], Any], calls_per_graph: int = CALLS_PER_GRAPH, repeats: int = GRAPH_REPEATS,
                    warmup: int = 3) -> float:
    """Milliseconds of GPU time a call of ``fn`` takes: ``calls_per_graph`` consecutive calls captured in one CUDA
    graph (:func:`capture_cuda_graph`, after ``warmup`` eager calls on a side stream), ``warmup`` untimed replays,
    then the median over ``repeats`` replays (CUDA events around each) of the replay's ms / ``calls_per_graph``.

    Why: timing eager calls from Python (:func:`median_ms`, ``triton.testing.do_bench``) measures the host wherever
    a call's kernels take less time than the host needs to issue them. On the device hosts an eager call of our
    layers costs 40-80 us of host time (autograd, dispatch, several Triton launches), so ops whose kernels take
    less than ~60 us, and multi-kernel layers in general, were timed as host time. A replay issues every recorded
    kernel with one host call, so the GPU runs them back to back.

    What the number includes: the recorded kernels' GPU time and the gaps between them on the GPU. Not included:
    the host's launch cost (which an eager call adds where it is host-bound) and the caching allocator's work (a
    graph's memory is fixed at capture). L2 is NOT flushed between calls (``do_bench`` flushes it before each
    call): an op whose inputs fit in L2 (50 MB on an H100) finds them there from the second call of a replay on,
    so small ops can come out faster than from a cold cache.

    ``fn`` must be capturable: no host synchronisation (``.item()``, ``.cpu()``, data-dependent shapes), no CPU
    tensors copied to the GPU per call; the tensors it reads from outside must stay alive and be changed in place
    only (a replay reads the memory captured). Its side effects (an in-place update, gradients accumulated into
    ``.grad``) happen ``warmup`` times eagerly, then ``calls_per_graph`` times a replay. CUDA only."""
    if calls_per_graph < 1 or repeats < 1:
        raise ValueError(f"calls_per_graph and repeats must be at least 1, got {calls_per_graph} and {repeats}")
    if not torch.cuda.is_available():
        raise RuntimeError("graph_replay_ms times CUDA graph replays: it needs a CUDA device")
    replay = capture_cuda_graph(fn, warmup=warmup, calls=calls_per_graph)
    return median_ms(replay, "cuda", warmup=warmup, repeats=repeats) / calls_per_graph


def graph_replay_note(calls_per_graph: int = CALLS_PER_GRAPH, repeats: int = GRAPH_REPEATS) -> str:
    """How :func:`graph_replay_ms` took the GPU times, for the results' markdown and JSON."""
    return (f"GPU times: ms a call from CUDA-graph replays of {calls_per_graph} consecutive calls (median of "
            f"{repeats} replays, divided by {calls_per_graph}): the kernels' GPU time without the host's launch cost; "
            "L2 not flushed between calls")


def peak_memory_mib(fn: Callable[[], object], device: str) -> tuple[float | None, float | None]:
    """(peak allocated MiB during ``fn()``, peak above what was allocated before it) on CUDA; (None, None) on CPU."""
    if device != "cuda":
        return None, None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return peak / MIB, (peak - base) / MIB


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


@contextlib.contextmanager
def free_memory(device: str) -> Iterator[None]:
    try:
        yield
    finally:
        if device == "cuda":
            torch.cuda.empty_cache()


def finite_positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def md_table(columns: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(v) if not isinstance(v, str) else v for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def env_header(ctx: Context, title: str) -> str:
    e = ctx.env
    v = e["versions"]
    tf32 = e["tf32"]
    return (f"# {title} on {e['card']}\n\n{e['date']}; `{e['command']}`; torch {v['torch']}, triton {v['triton']}, "
            f"mambaeye {v['mambaeye']}; dtypes {', '.join(ctx.dtypes)}; TF32 matmul {tf32['matmul']}, cudnn "
            f"{tf32['cudnn']}; warm-up {ctx.warmup}, median of {ctx.repeats} "
            f"({'CUDA events' if ctx.device == 'cuda' else 'perf_counter'})"
            + (f"; every model torch.compile(mode={ctx.compile_mode!r})" if ctx.compile_mode else "")
            + ("; every model's step captured in a CUDA graph and replayed (its eager kernels without the host's "
               "launch cost)" if ctx.cuda_graphs else "")
            + ("; **toy sizes** (reduced models and inputs: checks that the suite runs, not the papers' numbers)"
               if ctx.toy else "") + "\n")


@dataclass
class Suite:
    """A benchmark suite: ``run(ctx, args) -> SuiteResult``; ``add_arguments(parser)`` adds its own options."""

    name: str
    help: str
    run: Callable[[Context, Any], SuiteResult]
    add_arguments: Callable[[Any], None] = lambda p: None
    gpu_dtypes: list[str] = field(default_factory=lambda: ["bf16"])  # default dtypes on GPU (CPU: fp32)
    model_options: bool = False  # its models' steps go through --compile / --cuda-graphs (the others refuse them)


@dataclass
class SuiteResult:
    """What a suite returns; ``plot(path)`` draws the PNG (matplotlib already imported by the caller)."""

    rows: list[dict[str, Any]]
    markdown: str
    plot: Callable[[Any, Path], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def write_outputs(ctx: Context, result: SuiteResult) -> dict[str, Path | None]:
    """<out>/<suite>.md, .json and .png (the PNG only when matplotlib imports; the markdown says so otherwise)."""
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path | None] = {}
    png = ctx.out_dir / f"{ctx.suite}.png"
    md = result.markdown
    if result.plot is not None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            md += "\n(no plot: matplotlib is not installed)\n"
            paths["png"] = None
        else:
            result.plot(plt, png)
            plt.close("all")
            paths["png"] = png
            md += f"\n![{ctx.suite}]({png.name})\n"
    paths["md"] = ctx.out_dir / f"{ctx.suite}.md"
    paths["md"].write_text(md)
    paths["json"] = ctx.out_dir / f"{ctx.suite}.json"
    record = dict(suite=ctx.suite, **ctx.env, dtypes=ctx.dtypes, toy=ctx.toy, compile_mode=ctx.compile_mode,
                  cuda_graphs=ctx.cuda_graphs,
                  warmup=ctx.warmup, repeats=ctx.repeats, **result.extra, rows=result.rows)
    paths["json"].write_text(json.dumps(record, indent=2, default=str))
    return paths
