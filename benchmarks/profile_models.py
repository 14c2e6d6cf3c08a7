"""Where a model's GPU time goes: torch.profiler's CUDA kernel table for a few steps of a named case.

    python benchmarks/profile_models.py                       # every case
    python benchmarks/profile_models.py --cases vim_ti_1248   # one case; --rows 30 for a longer table
    python benchmarks/profile_models.py --cases vmamba_t_224 --ops   # and the aten ops (input shapes) behind them

Cases (bf16 autocast, random inputs): vim_ti_1248 (inference, batch 8, 1248²), vim_ti_224_train (batch 128,
forward + backward), vmamba_t_224 (inference, batch 128), vmamba_t_224_train, and the SS2D layer alone at
benchmarks/ss2d.py's shapes (``ss2d_<case>``, ``ss2d_<case>_train``; batch 128, channel-first; its input stored
batch-second, as VMamba's blocks see it, with ``--batch-second``). Prints, per
case, the median step time and the kernels sorted by total CUDA time, so the next optimisation is chosen from
a measurement.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from mambaeye import create_model
from mambaeye.layers import SS2D
from mambaeye.ops._layout import to_batch_second

try:  # run as `python benchmarks/profile_models.py`: benchmarks/ is on sys.path
    from ss2d import CASES as SS2D_CASES
except ImportError:
    SS2D_CASES = {}

CASES = {
    # name: (model, img_size, batch, train)
    "vim_ti_1248": ("vim_tiny", 1248, 8, False),
    "vim_ti_224": ("vim_tiny", 224, 128, False),
    "vim_ti_224_train": ("vim_tiny", 224, 128, True),
    "vmamba_t_224": ("vmamba_tiny", 224, 128, False),
    "vmamba_t_224_train": ("vmamba_tiny", 224, 128, True),
    # the same model with channels-last activations (B, H, W, C): nn.Linear / nn.LayerNorm instead of 1x1 convs
    "vmamba_t_224_cl": ("vmamba_tiny:cl", 224, 128, False),
    "vmamba_t_224_cl_train": ("vmamba_tiny:cl", 224, 128, True),
}
for _case in SS2D_CASES:
    CASES[f"ss2d_{_case}"] = ("ss2d", _case, 128, False)
    CASES[f"ss2d_{_case}_train"] = ("ss2d", _case, 128, True)


def _make_module(model_name: str, size, batch: int, batch_second: bool = False):
    """(module, input) of a case: a model on images, or an SS2D layer on a channel-first map (stored batch-second
    with ``batch_second``: mambaeye.ops._layout)."""
    if model_name == "ss2d":
        kwargs, side, _ = SS2D_CASES[size]
        layer = SS2D(**kwargs, channel_first=True).cuda()
        x = torch.randn(batch, kwargs["d_model"], side, side, device="cuda")
        return layer, (to_batch_second(x) if batch_second else x).requires_grad_()
    name, _, layout = model_name.partition(":")
    extra = dict(channel_first=False) if layout == "cl" else {}
    return create_model(name, img_size=size, **extra).cuda(), torch.randn(batch, 3, size, size, device="cuda")


def make_step(name: str, compile_mode: str | None = None, batch_second: bool = False):
    model_name, size, batch, train = CASES[name]
    model, x = _make_module(model_name, size, batch, batch_second)
    model.train(train)
    # inference times the models' forward_features (no head); the SS2D layer and training the whole forward
    forward = model.forward_features if model_name != "ss2d" and not train else model.forward
    if compile_mode:
        forward = torch.compile(forward, mode=None if compile_mode == "default" else compile_mode)
    graphs = compile_mode == "reduce-overhead"  # CUDA graphs: each step must be marked (outputs are reused)
    target = torch.randint(0, 1000, (batch,), device="cuda")

    def step():
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast("cuda", torch.bfloat16), torch.set_grad_enabled(train):
            y = forward(x)
            if train and model_name != "ss2d":
                y = F.cross_entropy(y.float(), target)
        if train:
            y.backward(torch.ones_like(y) if model_name == "ss2d" else None)
            for p in model.parameters():  # no accumulation into a previous step's (CUDA-graph-owned) gradients
                p.grad = None
            x.grad = None  # the SS2D cases' input is a leaf: no float32 add of each step's gradient into the last
    return step, batch


def _op_table(prof, rows: int) -> str:
    """The aten ops (with their input shapes) that launched the most GPU time: where a kernel comes from."""
    ops = [e for e in prof.key_averages(group_by_input_shape=True) if e.key.startswith("aten::")]
    ops.sort(key=lambda e: e.device_time_total, reverse=True)
    lines = ["| aten op | input shapes | GPU ms (3 steps) | calls |", "|---|---|---|---|"]
    for e in ops[:rows]:
        lines.append(f"| {e.key} | {str(e.input_shapes)[:110]} | {e.device_time_total / 1e3:.3f} | {e.count} |")
    return "\n".join(lines)


def profile(name: str, rows: int, compile_mode: str | None = None, ops: bool = False,
            batch_second: bool = False) -> None:
    step, batch = make_step(name, compile_mode, batch_second)
    for _ in range(3):  # with --compile the first call compiles
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    ms = sorted(times)[2] * 1e3
    activities = [torch.profiler.ProfilerActivity.CUDA] + ([torch.profiler.ProfilerActivity.CPU] if ops else [])
    with torch.profiler.profile(activities=activities, record_shapes=ops) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    how = f", torch.compile mode={compile_mode}" if compile_mode else ""
    print(f"\n## {name}{how}: {ms:.2f} ms/step, {batch / ms * 1e3:.1f} img/s (3 profiled steps below)")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=90))
    if ops:
        print(_op_table(prof, rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--rows", type=int, default=22)
    p.add_argument("--compile", default=None, choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"],
                   help="torch.compile the model with this mode first")
    p.add_argument("--ops", action="store_true", help="also list the aten ops (with input shapes) by GPU time")
    p.add_argument("--batch-second", action="store_true", help="the SS2D cases' input stored batch-second")
    args = p.parse_args()
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    for name in args.cases:
        profile(name, args.rows, args.compile, args.ops, args.batch_second)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
