"""Model construction and the throughput / memory measurement shared by the model suites."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._common import Context, capture_cuda_graph, free_memory, is_oom


def create_timm(name: str, **kwargs: Any) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False, **kwargs)


def create_mambaeye(name: str, **kwargs: Any) -> nn.Module:
    from mambaeye import create_model

    return create_model(name, **kwargs)


def set_plain_attention(model: nn.Module) -> int:
    """timm attention modules -> the unfused softmax(q k^T) v path; returns how many were switched."""
    n = 0
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
            n += 1
    return n


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure(ctx: Context, build: Callable[[], nn.Module], batch: int, img_size: int, dtype: str, mode: str,
            row: dict[str, Any]) -> dict[str, Any]:
    """Time ``mode`` ("infer": forward_features under no_grad; "train": forward + cross-entropy + backward) on a
    random (batch, 3, img_size, img_size) input; fill ``row`` with ms, img/s, peak memory and a status.

    With ``ctx.compile_mode`` the timed function (forward_features, or the whole model for training) goes through
    ``torch.compile(mode=...)`` first (compilation happens in the untimed first call); under "reduce-overhead"
    (CUDA graphs) each step is marked as a new one, and the gradients are dropped after each step as always. With
    ``ctx.cuda_graphs`` the step is captured in a CUDA graph after the memory measurement and its replays are timed
    (``row["cuda_graph"]``)."""
    row.update(img_size=img_size, batch=batch, dtype=dtype, mode=mode, status="ok", ms=None, img_per_s=None,
               peak_mib=None, peak_above_base_mib=None, cuda_graph=ctx.cuda_graphs)
    model = x = None
    with free_memory(ctx.device):
        try:
            model = build().to(ctx.device)
            row["params"] = n_params(model)
            x = torch.randn(batch, 3, img_size, img_size, device=ctx.device)
            model.train(mode == "train")
            forward = _compiled(model.forward_features if mode == "infer" else model, ctx.compile_mode)
            graphs = ctx.compile_mode == "reduce-overhead"
            if mode == "infer":
                def step():
                    if graphs:
                        torch.compiler.cudagraph_mark_step_begin()
                    with torch.no_grad(), ctx.autocast(dtype):
                        return forward(x)
            else:
                target = torch.randint(0, getattr(model, "num_classes", 1000) or 1, (batch,), device=ctx.device)

                def step():
                    if graphs:
                        torch.compiler.cudagraph_mark_step_begin()
                    with ctx.autocast(dtype):
                        loss = nn.functional.cross_entropy(forward(x).float(), target)
                    loss.backward()
                    for p in model.parameters():
                        p.grad = None

            step()  # first call (compile / autotune) outside the memory measurement
            row["peak_mib"], row["peak_above_base_mib"] = ctx.peak_mib(step)
            if ctx.cuda_graphs:
                step = capture_cuda_graph(step)
            row["ms"] = ctx.time_ms(step)
            row["img_per_s"] = batch / row["ms"] * 1e3
        except (RuntimeError, ValueError, AssertionError) as err:  # OOM, or a size the model cannot take: recorded
            row["status"] = "OOM" if is_oom(err) else f"error: {type(err).__name__}: {str(err)[:160]}"
        finally:
            model = x = forward = step = None  # drop the references before the next model is built
    return row


def _compiled(fn: Callable, compile_mode: str | None) -> Callable:
    """``fn``, or ``torch.compile(fn, mode=compile_mode)`` on a fresh dynamo cache (each model, size and mode of a
    suite compiles anew instead of hitting the recompile limit and falling back to eager)."""
    if not compile_mode:
        return fn
    torch._dynamo.reset()
    return torch.compile(fn, mode=None if compile_mode == "default" else compile_mode)
