"""Parameters, FLOPs and activation memory of a model, per stage, without running it on real data.

The model runs once on the ``meta`` device (no memory, no arithmetic) under a dispatch mode that counts
operations the way the official repositories do with fvcore, so the numbers compare with the published
ones (VMamba-T 4.9G ... at 224):

- matrix products and convolutions count multiply-adds (fvcore's "flops"): M*K*N for (M, K) x (K, N);
  out_elements * C_in/groups * kernel for convolutions; biases are free;
- LayerNorm counts 5 per element (4 without affine), mean / average pooling 1 per input element;
- the selective scan counts 9*B*D*L*N + B*D*L (the D skip) + B*D*L (the z gate, when fused), as
  ``flops_selective_scan_fn`` in VMamba (after state-spaces/mamba issue 110);
- other elementwise operations (activations, additions, cross-scan copies) are free, as in fvcore.

Output shapes are as each stage returns them (VMamba v0 works channel-last: B, H, W, C).
Activation memory is the training cost: the bytes of the tensors autograd saves for backward in one forward
pass (parameters excluded, each storage once), at the model's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from ._helpers import to_2tuple

__all__ = ["profile", "ModelProfile", "StageProfile", "count_flops"]

aten = torch.ops.aten


def _mm(args, out) -> int:
    a, b = args[-2], args[-1]
    return a.shape[0] * a.shape[1] * b.shape[1]


def _bmm(args, out) -> int:
    a, b = args[-2], args[-1]
    return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


def _conv(args, out) -> int:
    x, weight, transposed = args[0], args[1], args[6]
    per_position = weight.shape[1] * math.prod(weight.shape[2:])
    return (x.numel() if transposed else out.numel()) * per_position


def _layer_norm(args, out) -> int:
    weight = args[2] if len(args) > 2 else None
    return args[0].numel() * (5 if weight is not None else 4)


def _rms_norm(args, out) -> int:
    return args[0].numel() * 4


def _mean(args, out) -> int:
    return args[0].numel()


def _scan(args, out) -> int:
    u, A, D, z = args[0], args[2], args[5], args[6]
    batch, dim, length = u.shape
    flops = 9 * batch * dim * length * A.shape[1]
    flops += batch * dim * length * ((D is not None) + (z is not None))
    return flops


def _paired_scan(args, out) -> int:
    """mambaeye.ops.cross_scan.fused's paired scan: delta (B, D, L) has every direction's channels; D skip."""
    delta, A = args[1], args[2]
    batch, dim, length = delta.shape
    return 9 * batch * dim * length * A.shape[1] + batch * dim * length


def _depthwise_conv(args, out) -> int:
    """mambaeye.ops.dwconv's fused depthwise conv + SiLU: counted as the convolution (the SiLU is free), one output
    per input element (the output may be written in two layouts)."""
    weight = args[1]
    return args[0].numel() * weight.shape[1] * math.prod(weight.shape[2:])


def _dt_projection(args, out) -> int:
    """mambaeye.ops.cross_scan.projection's dt projection: weight (K, D, R) x dts (B, K, R, L), a batched matmul."""
    weight, dts = args[0], args[1]
    return dts.shape[0] * weight.numel() * dts.shape[3]


def _flop_rules() -> dict:
    """aten ops by overload, mambaeye's custom ops by name (some register only when their module is first imported,
    e.g. the fused cross-scan's, which may be after the counter was made)."""
    rules: dict = {
        aten.mm.default: _mm,
        aten.addmm.default: _mm,
        aten.bmm.default: _bmm,
        aten.baddbmm.default: _bmm,
        aten.convolution.default: _conv,
        aten.native_layer_norm.default: _layer_norm,
        aten.mean.dim: _mean,
        aten.mean.default: _mean,
        aten._adaptive_avg_pool2d.default: _mean,
        "mambaeye::selective_scan_fwd": _scan,
        "mambaeye::paired_scan_fwd": _paired_scan,
        "mambaeye::layer_norm_channel_first_fwd": _layer_norm,
        "mambaeye::depthwise_conv2d_silu_fwd": _depthwise_conv,
        "mambaeye::dt_projection_fwd": _dt_projection,
    }
    if hasattr(aten, "_fused_rms_norm"):
        rules[aten._fused_rms_norm.default] = _rms_norm
    return rules


class _FlopCounter(TorchDispatchMode):
    def __init__(self, current: Callable[[], str]) -> None:
        super().__init__()
        self.rules = _flop_rules()
        self.current = current
        self.flops: dict[str, int] = {}
        self.scan_flops: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        rule = self.rules.get(func) or self.rules.get(func.name())
        if rule is not None:
            first = out[0] if isinstance(out, (tuple, list)) else out
            n = rule(args, first)
            label = self.current()
            self.flops[label] = self.flops.get(label, 0) + n
            if rule in (_scan, _paired_scan):
                self.scan_flops[label] = self.scan_flops.get(label, 0) + n
        return out


@dataclass
class StageProfile:
    """One row of the table: a stage's parameters, FLOPs (scan share), saved activations, output shape."""

    name: str
    params: int = 0
    flops: int = 0
    scan_flops: int = 0
    activation_bytes: int = 0
    output_shape: tuple[int, ...] | None = None


@dataclass
class ModelProfile:
    """Totals and per-stage rows; ``table()`` renders them (what ``mambaeye info`` prints)."""

    name: str
    input_shape: tuple[int, ...]
    params: int
    flops: int
    scan_flops: int
    activation_bytes: int
    output_shape: tuple[int, ...]
    stages: list[StageProfile] = field(default_factory=list)
    output_shapes: list[tuple[int, ...]] = field(default_factory=list)  # every output (deep supervision)

    def table(self, collapse: bool = True) -> str:
        """The per-stage table; ``collapse`` merges runs of identical blocks (Vim's 24) into one row."""
        rows = [("stage", "params", "GFLOPs", "scan GFLOPs", "act. MiB", "output")]
        for s in (_collapse(self.stages) if collapse else self.stages):
            rows.append((s.name, f"{s.params:,}", f"{s.flops / 1e9:.3f}", f"{s.scan_flops / 1e9:.3f}",
                         f"{s.activation_bytes / 2**20:.1f}", "x".join(map(str, s.output_shape or ()))))
        rows.append(("total", f"{self.params:,}", f"{self.flops / 1e9:.3f}", f"{self.scan_flops / 1e9:.3f}",
                     f"{self.activation_bytes / 2**20:.1f}", "x".join(map(str, self.output_shape))))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [f"{self.name}: input {'x'.join(map(str, self.input_shape))}, {self.params:,} parameters, "
                 f"{self.flops / 1e9:.2f} GFLOPs, {self.activation_bytes / 2**20:.0f} MiB activations saved "
                 f"for backward"]
        for i, r in enumerate(rows):
            cells = [c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths, strict=True))]
            lines.append("  ".join(cells))
            if i == 0 or i == len(rows) - 2:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _collapse(stages: list[StageProfile]) -> list[StageProfile]:
    """Runs of rows named ``prefix.i`` with equal numbers -> one row ``prefix.i-j (n x)`` with the sums."""
    out: list[StageProfile] = []
    run: list[StageProfile] = []

    def key(s: StageProfile):
        return (s.name.rsplit(".", 1)[0], s.params, s.flops, s.activation_bytes, s.output_shape)

    def flush() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            first, last = run[0].name, run[-1].name.rsplit(".", 1)[-1]
            out.append(StageProfile(
                name=f"{first}-{last} ({len(run)}x)", params=sum(s.params for s in run),
                flops=sum(s.flops for s in run), scan_flops=sum(s.scan_flops for s in run),
                activation_bytes=sum(s.activation_bytes for s in run), output_shape=run[-1].output_shape))
        run.clear()

    for s in stages:
        if run and ("." not in s.name or key(s) != key(run[0])):
            flush()
        if "." in s.name and s.name.rsplit(".", 1)[-1].isdigit():
            run.append(s)
        else:
            flush()
            out.append(s)
    flush()
    return out


def _stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The rows: the stem, each entry of ``model.layers``, the rest as "head"."""
    rows = []
    if hasattr(model, "patch_embed"):
        rows.append(("patch_embed", model.patch_embed))
    for i, layer in enumerate(getattr(model, "layers", [])):
        rows.append((f"layers.{i}", layer))
    return rows


def count_flops(model: nn.Module, x: Tensor) -> int:
    """FLOPs (fvcore convention, see the module docstring) of ``model(x)``."""
    counter = _FlopCounter(lambda: "")
    with counter, torch.no_grad():
        model(x)
    return sum(counter.flops.values())


def profile(
    model: nn.Module | str,
    img_size: int | tuple[int, int] | None = None,
    batch_size: int = 1,
    in_chans: int | None = None,
    **create_kwargs,
) -> ModelProfile:
    """Parameters, FLOPs (official counting) and training activation memory of ``model`` on one input.

    ``model``: a module, or a registered name (built on the meta device with ``create_kwargs``).
    ``img_size``: the input size (default: the model's native one from its pretrained cfg or ``input_size``,
    else 224); an int means the same along each of the model's ``spatial_dims`` axes (2 or 3).
    ``in_chans``: the input channels; with a name it is also passed to ``create_model`` (segmentation
    networks take it as ``in_channels``).
    A forward that returns a list / tuple (deep-supervision heads) is counted whole; ``output_shape`` is the
    first output's, ``output_shapes`` lists them all.
    Returns a :class:`ModelProfile`; ``print(profile("vmamba_tiny").table())`` gives the per-stage table.
    """
    name = model if isinstance(model, str) else type(model).__name__
    if isinstance(model, str):
        from ._registry import create_model

        if in_chans is not None:
            create_kwargs.setdefault("in_chans", in_chans)
        with torch.device("meta"):
            model = create_model(model, **create_kwargs)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    dims = getattr(model, "spatial_dims", 2)
    native = getattr(model, "input_size", None)
    if img_size is not None:
        size = (img_size,) * dims if isinstance(img_size, int) else tuple(img_size)
    elif isinstance(native, (tuple, list)) and len(native) == dims:
        size = tuple(native)
    else:
        size = to_2tuple(tuple(cfg.get("input_size", (3, 224, 224))[1:])) if dims == 2 else (128,) * dims
    chans = getattr(model, "in_chans", None) or in_chans or cfg.get("input_size", (3,))[0]
    param = next(model.parameters())
    x = torch.zeros(batch_size, chans, *size, device=param.device, dtype=param.dtype)
    if x.device.type != "meta":
        model = _meta_copy(model)
        x = x.to("meta")

    # the scan is counted through the selective_scan custom op, which backend="naive" bypasses
    restore = [(m, m.backend) for m in model.modules() if getattr(m, "backend", None) == "naive"]
    for m, _ in restore:
        m.backend = "torch"

    stages = _stages(model)
    stack = ["head"]
    hooks = []
    for label, module in stages:
        hooks.append(module.register_forward_pre_hook(lambda m, a, label=label: stack.append(label)))
        hooks.append(module.register_forward_hook(lambda m, a, o: None if stack.pop() else None))
    outputs: dict[str, tuple[int, ...]] = {}

    def record(label: str, output) -> None:
        outputs[label] = tuple(_first(output).shape)

    for label, module in stages:
        hooks.append(module.register_forward_hook(lambda m, a, o, label=label: record(label, o)))

    param_storages = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, tuple[str, int]] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage._cdata not in param_storages and storage._cdata not in saved:
            saved[storage._cdata] = (stack[-1], storage.nbytes())
        return t

    was_training = model.training
    model.eval()
    try:
        counter = _FlopCounter(lambda: stack[-1])
        with counter, torch.no_grad():
            out = model(x)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.enable_grad():
            model(x.requires_grad_(False))
    finally:
        for h in hooks:
            h.remove()
        for m, backend in restore:
            m.backend = backend
        model.train(was_training)

    rows = []
    for label, module in [*stages, ("head", None)]:
        if module is None:
            staged = {id(p) for _, mod in stages for p in mod.parameters()}
            params = sum(p.numel() for p in model.parameters() if id(p) not in staged)
        else:
            params = sum(p.numel() for p in module.parameters())
        rows.append(StageProfile(
            name=label, params=params, flops=counter.flops.get(label, 0), scan_flops=counter.scan_flops.get(label, 0),
            activation_bytes=sum(n for lab, n in saved.values() if lab == label),
            output_shape=outputs.get(label, tuple(_first(out).shape) if module is None else None),
        ))
    return ModelProfile(
        name=name, input_shape=tuple(x.shape), params=sum(p.numel() for p in model.parameters()),
        flops=sum(counter.flops.values()), scan_flops=sum(counter.scan_flops.values()),
        activation_bytes=sum(n for _, n in saved.values()), output_shape=tuple(_first(out).shape), stages=rows,
        output_shapes=[tuple(t.shape) for t in _tensors(out)],
    )


def _tensors(output) -> list[Tensor]:
    """The tensors of a forward's output: itself, or those of a (nested) list / tuple / dict, in order."""
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors(item)]
    return []


def _first(output) -> Tensor:
    tensors = _tensors(output)
    if not tensors:
        raise TypeError(f"the model's forward returned no tensor: {type(output).__name__}")
    return tensors[0]


def _meta_copy(model: nn.Module) -> nn.Module:
    """A structural copy of ``model`` on the meta device (the weights themselves are not copied)."""
    import copy

    memo = {id(p): nn.Parameter(p.detach().to("meta"), requires_grad=p.requires_grad) for p in model.parameters()}
    memo.update({id(b): b.to("meta") for b in model.buffers()})
    return copy.deepcopy(model, memo)
