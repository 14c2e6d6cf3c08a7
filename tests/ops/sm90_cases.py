"""Launches of every Triton kernel of mambaeye, for :mod:`tests.ops.test_triton_compile`.

Each case runs launchers on meta tensors and names the kernels it must reach; ``python -m tests.ops.sm90_cases``
(from the repository root, without TRITON_INTERPRET) compiles each recorded call for an H100 with
:mod:`mambaeye.ops.offline_compile` and prints one JSON object: case -> list of {kernel, registers, stack} or
{kernel, error}. The scan cases cover each constexpr of the scan kernels at least once: B/C fixed, per step and
grouped (B and C different kinds too), with and without z, D, delta_bias and softplus, float32/16, bfloat16 and
float64, d_state 1, 4 and 16, lengths that split into sequence segments, reverse and paired orders, forward with
and without saved states, backward with and without the last state's gradient.
"""

from __future__ import annotations

import json
import sys
import traceback

import torch

from mambaeye.ops.causal_conv1d import triton_conv
from mambaeye.ops.cross_scan import grid, triton_projection
from mambaeye.ops.dwconv import triton_dwconv
from mambaeye.ops.kernel_launches import META, SCAN_KERNELS, Scan, add_norm_launches, bias_gelu_launches
from mambaeye.ops.layer_norm import triton_norm
from mambaeye.ops.selective_scan import triton_scan

f32, f16, bf16, f64 = torch.float32, torch.float16, torch.bfloat16, torch.float64
SCANS = {
    "scan-vim224-step-z-bf16": Scan(128, 384, 197, 16),
    "scan-vim1248-step-z-bf16-segments": Scan(8, 384, 6085, 16, segmented=True),
    "scan-vim1248-reverse-segments": Scan(8, 384, 6085, 16, order="reverse", segmented=True),
    "scan-fixed-bc-fp32": Scan(2, 32, 300, 16, bc="fixed", dtype=f32, segmented=True),
    "scan-fixed-bc-fp16-dlast": Scan(2, 32, 300, 16, bc="fixed", dtype=f16, dlast=True, segmented=True),
    "scan-fixed-B-step-C": Scan(2, 64, 333, 16, bc="fixed", c_bc="step", dtype=f32, segmented=True),
    "scan-step-B-fixed-C-reverse": Scan(2, 64, 3000, 4, c_bc="fixed", order="reverse", segmented=True),
    "scan-vmamba-t-grouped-n1": Scan(128, 384, 3136, 1, bc="grouped", groups=4, z=False),
    "scan-vmamba-t-paired": Scan(128, 384, 3136, 1, bc="grouped", groups=4, z=False, order="paired"),
    "scan-vmamba-t-reverse": Scan(128, 384, 3136, 1, bc="grouped", groups=4, z=False, order="reverse"),
    "scan-v0-grouped-n16-paired": Scan(32, 768, 3136, 16, bc="grouped", groups=4, z=False, order="paired"),
    "scan-v0-grouped-n16": Scan(32, 768, 3136, 16, bc="grouped", groups=4, z=False),
    "scan-long1d-step-z": Scan(8, 1536, 4096, 16),
    "scan-n4-fp16-bare": Scan(2, 48, 1000, 4, dtype=f16, has_D=False, bias=False, softplus=False, segmented=True),
    "scan-fp64": Scan(2, 16, 333, 16, bc="grouped", groups=2, dtype=f64, segmented=True),
    "scan-inference-no-states": Scan(8, 384, 6085, 16, save_states=False, segmented=True),
}


def _stage_launches():
    """The other kernels at VMamba-T's stage 1 (C 96, 56x56) and 3 (C 384, 14x14), batch 128, bf16, plus the
    float32 residual stream of an add + norm."""
    cases = {}
    for stage, (dim, side) in {1: (96, 56), 3: (384, 14)}.items():
        length = side * side

        def layer_norm(dim=dim, length=length):
            add_norm_launches(dim, length)[2]()  # float32 stream + bf16 branch; then a plain bf16 norm without
            # bias or saved statistics
            branch = torch.empty(128, dim, length, device=META, dtype=bf16)
            w, stats = torch.empty(dim, device=META), torch.empty(128, length, device=META)
            triton_norm.layer_norm_fwd(branch, w, None, 1e-6, False)
            triton_norm.layer_norm_bwd(branch, branch, None, None, stats, stats)

        def dwconv(dim=dim, side=side):
            x = torch.empty(128, dim, side, side, device=META, dtype=bf16)
            w, b = torch.empty(dim, 1, 3, 3, device=META), torch.empty(dim, device=META)
            triton_dwconv.dwconv_silu_fwd(x, w, b, True)
            triton_dwconv.dwconv_silu_fwd(x, w, None, False)
            triton_dwconv.dwconv_silu_fwd(x, w, b, True, sources=2)  # written as the cross-scan's two sources
            triton_dwconv.dwconv_silu_fwd(x, w, b, True, sources=2, batch_second=True)  # stored (2, C, B, L)
            triton_dwconv.dwconv_bwd(x, x, w, True)

        def dt_projection(dim=dim, length=length):
            triton_projection.dt_projection_fwd(torch.empty(4, dim, 6, device=META),
                                                torch.empty(128, 4, 6, length, device=META, dtype=bf16))

        def cross_grid(dim=dim, side=side):
            x = torch.empty(128, dim, side, side, device=META, dtype=bf16)
            s = grid._spread_impl(x, 2, 2)
            grid._gather_impl(s, side, side)
            grid._gather_impl(s[:, :, :1], side, side, x)  # times SiLU's derivative (gather_silu_grad)
            grid._gather_impl(s[:, :, :1], side, side, x, s[:, :, 1:])  # of two consumers' gradients
            bs = torch.empty(2, 1, dim, 128, side * side, device=META, dtype=bf16).permute(3, 0, 1, 2, 4)
            grid._gather_impl(bs, side, side, x, bs)  # batch-second sources' gradients

        cases[f"layer-norm-stage{stage}"] = (triton_norm, ("_ln_fwd_kernel", "_ln_bwd_kernel"), layer_norm)
        cases[f"bias-gelu-stage{stage}"] = bias_gelu_launches(dim, length)
        cases[f"dwconv-stage{stage}"] = (triton_dwconv, ("_dwconv_silu_fwd_kernel", "_dwconv_bwd_kernel"), dwconv)
        cases[f"dt-projection-stage{stage}"] = (triton_projection, ("_dt_projection_kernel",), dt_projection)
        cases[f"cross-grid-stage{stage}"] = (grid, ("_spread_kernel", "_gather_kernel"), cross_grid)
    return cases


def _causal_conv1d():
    x = torch.empty(8, 384, 6085, device=META, dtype=bf16)
    w, b = torch.empty(384, 4, device=META), torch.empty(384, device=META)
    for reverse in (False, True):
        triton_conv.conv_fwd(x, w, b, True, reverse)
        triton_conv.conv_bwd(x, x, w, b, True, reverse)
    triton_conv.conv_fwd(x.float(), w, None, False, False)


def cases() -> dict[str, tuple[object, tuple[str, ...], object]]:
    """name -> (module, kernels that must be launched, launch())."""
    out = {name: (triton_scan, scan.kernels(), scan.launch) for name, scan in SCANS.items()}
    out.update(_stage_launches())
    out["causal-conv1d"] = (triton_conv, ("_conv_fwd_kernel", "_conv_bwd_grad_kernel", "_conv_bwd_dx_kernel"),
                            _causal_conv1d)
    return out


def _all_kernels(module) -> tuple[str, ...]:
    return SCAN_KERNELS if module is triton_scan else tuple(n for n in vars(module) if n.endswith("_kernel"))


def main() -> None:
    from mambaeye.ops.offline_compile import compile_sm90, record, registers_and_stack, sass

    report = {}
    for name, (module, _, launch) in cases().items():
        rows = []
        try:
            recorders = record(module, _all_kernels(module), launch)
        except Exception:  # the launcher itself failed: report it against the case
            report[name] = [{"kernel": "<launcher>", "error": traceback.format_exc(limit=-3)}]
            continue
        for kernel, recorder in recorders.items():
            for _, args, kwargs in recorder.calls:
                try:
                    registers, stack = registers_and_stack(sass(compile_sm90(recorder.fn, args, kwargs))[1])
                    rows.append({"kernel": kernel, "registers": registers, "stack": stack})
                except Exception as e:  # a compile error: the chain's last two name the line and the cause
                    chain = [e]
                    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
                        chain.append(chain[-1].__cause__ or chain[-1].__context__)
                    error = "\n".join(f"{type(c).__name__}: {str(c)[-1200:]}" for c in chain[-2:])
                    rows.append({"kernel": kernel, "error": error})
        report[name] = rows
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
