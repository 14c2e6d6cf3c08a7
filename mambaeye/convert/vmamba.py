"""VMamba (MzeroMiko/VMamba ``classification/models/vmamba.py``) checkpoints <-> mambaeye's VSSM.

mambaeye's VSSM uses the names of the current official code (``patch_embed.{i}``, ``layers.{i}.blocks.{j}
.{norm, op, norm2, mlp}``, ``layers.{i}.downsample``, ``classifier.{norm, head}``). The tables also accept
the names of the first releases, which the vanilla (v0) checkpoints still carry and which the official
``VSSM._load_from_state_dict`` renames: ``patch_embed.proj/norm`` -> ``patch_embed.0/2``, ``ln_1`` -> ``norm``,
``self_attention`` -> ``op``, ``norm`` / ``head`` -> ``classifier.norm`` / ``classifier.head``.

v2 models use channel-first ``Linear2d`` projections, which some checkpoints store as 1x1 conv weights
(out, in, 1, 1); they become (out, in).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from ._table import KeyTable

__all__ = [
    "VMAMBA_V2_KEY_TABLE",
    "VMAMBA_V0_KEY_TABLE",
    "is_vmamba_state_dict",
    "vmamba_version",
    "vmamba_from_official",
    "vmamba_to_official",
    "linear2d_weights_2d",
    "describe_vmamba",
]

_OP = (r"in_proj\.weight|conv2d\.weight|conv2d\.bias|x_proj_weight|dt_projs_weight|dt_projs_bias|A_logs|Ds|"
       r"out_norm\.weight|out_norm\.bias|out_proj\.weight")
_BLOCK = r"layers\.(\d+)\.blocks\.(\d+)\."
_WB = r"(weight|bias)"

_COMMON_ROWS = [
    (_BLOCK + rf"(?:norm|ln_1)\.{_WB}", r"layers.\1.blocks.\2.norm.\3"),
    (_BLOCK + rf"(?:op|self_attention)\.({_OP})", r"layers.\1.blocks.\2.op.\3"),
    (rf"(?:classifier\.)?norm\.{_WB}", r"classifier.norm.\1"),
    (rf"(?:classifier\.)?head\.{_WB}", r"classifier.head.\1"),
]

VMAMBA_V2_KEY_TABLE = KeyTable("VMamba v2", [
    (rf"patch_embed\.([0257])\.{_WB}", r"patch_embed.\1.\2"),
    *_COMMON_ROWS,
    (_BLOCK + rf"norm2\.{_WB}", r"layers.\1.blocks.\2.norm2.\3"),
    (_BLOCK + rf"mlp\.(fc1|fc2)\.{_WB}", r"layers.\1.blocks.\2.mlp.\3.\4"),
    (rf"layers\.(\d+)\.downsample\.([13])\.{_WB}", r"layers.\1.downsample.\2.\3"),
])

VMAMBA_V0_KEY_TABLE = KeyTable("VMamba v0", [
    (rf"patch_embed\.(?:0|proj)\.{_WB}", r"patch_embed.0.\1"),
    (rf"patch_embed\.(?:2|norm)\.{_WB}", r"patch_embed.2.\1"),
    *_COMMON_ROWS,
    (r"layers\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)", r"layers.\1.downsample.\2"),
])

# official checkpoints may store these Linear2d weights as 1x1 convs
_LINEAR2D_SUFFIXES = ("op.in_proj.weight", "op.out_proj.weight", "mlp.fc1.weight", "mlp.fc2.weight")

_OLD_NAMES = [  # ours -> the names of the first (v0) releases
    (".blocks.", ".norm.", ".ln_1."),
    (".blocks.", ".op.", ".self_attention."),
]


def is_vmamba_state_dict(state_dict: Mapping[str, Tensor]) -> bool:
    return any(k.endswith(("x_proj_weight", "A_logs")) for k in state_dict)


def vmamba_version(state_dict: Mapping[str, Tensor]) -> str:
    """"v2" (conv stem, MLP blocks, conv downsample) or "v0" (vanilla: patchify stem, PatchMerging, no MLP)."""
    keys = list(state_dict)
    v2 = any(k.endswith(("mlp.fc1.weight", "downsample.1.weight")) or k.startswith("patch_embed.5.") for k in keys)
    v0 = any(k.endswith("downsample.reduction.weight") or ".self_attention." in k for k in keys)
    if v2 == v0:
        raise ValueError("cannot tell VMamba v2 from v0 by the keys: expected either mlp/conv-downsample keys (v2) "
                         "or PatchMerging 'downsample.reduction' keys (v0)")
    return "v2" if v2 else "v0"


def vmamba_from_official(state_dict: Mapping[str, Tensor], version: str | None = None,
                         strict: bool = True) -> dict[str, Tensor]:
    """Official VMamba state dict (``ckpt["model"]`` or ``ckpt["model_ema"]``) -> mambaeye VSSM state dict.

    ``version``: "v2" or "v0" (detected from the keys when None). ``strict``: unmapped keys raise
    :class:`~mambaeye.convert.UnmappedKeysError`; otherwise they are dropped.
    """
    version = version or vmamba_version(state_dict)
    table = {"v2": VMAMBA_V2_KEY_TABLE, "v0": VMAMBA_V0_KEY_TABLE}[version]
    return linear2d_weights_2d(table.apply(state_dict, strict=strict)[0])


def linear2d_weights_2d(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Linear2d weights stored as 1x1 convs (out, in, 1, 1) -> (out, in); everything else unchanged."""
    out = dict(state_dict)
    for key, value in out.items():
        if key.endswith(_LINEAR2D_SUFFIXES) and value.dim() == 4:
            if value.shape[2:] != (1, 1):
                raise ValueError(f"{key}: a 4-D Linear2d weight must be (out, in, 1, 1), got {tuple(value.shape)}")
            out[key] = value.reshape(value.shape[:2])
    return out


def vmamba_to_official(state_dict: Mapping[str, Tensor], old_names: bool = False,
                       linear2d_as_conv: bool = False) -> dict[str, Tensor]:
    """The inverse: mambaeye VSSM state dict -> official layout. ``old_names`` writes the first releases'
    names (ln_1, self_attention, patch_embed.proj/norm, norm, head), as the vanilla checkpoints have them;
    ``linear2d_as_conv`` stores Linear2d weights as (out, in, 1, 1)."""
    out = {}
    for key, value in state_dict.items():
        new = key
        if linear2d_as_conv and key.endswith(_LINEAR2D_SUFFIXES) and value.dim() == 2:
            value = value[:, :, None, None]
        if old_names:
            for marker, ours, theirs in _OLD_NAMES:
                if marker in new:
                    new = new.replace(ours, theirs, 1)
            new = new.replace("patch_embed.0.", "patch_embed.proj.").replace("patch_embed.2.", "patch_embed.norm.")
            if new.startswith("classifier."):
                new = new[len("classifier."):]
        out[new] = value
    return out


def describe_vmamba(state_dict: Mapping[str, Tensor]) -> dict:
    """Architecture facts read from the keys and shapes of a mambaeye-layout state dict: version, dims[0],
    depths, d_state, ssm_ratio, in_chans, num_classes."""
    version = "v2" if "patch_embed.5.weight" in state_dict else "v0"
    stem = state_dict["patch_embed.5.weight" if version == "v2" else "patch_embed.0.weight"]
    dim = stem.shape[0]
    in_chans = state_dict["patch_embed.0.weight"].shape[1]
    depths: dict[int, int] = {}
    for key in state_dict:
        if key.startswith("layers.") and ".blocks." in key:
            parts = key.split(".")
            stage, block = int(parts[1]), int(parts[3])
            depths[stage] = max(depths.get(stage, 0), block + 1)
    first = "layers.0.blocks.0.op."
    d_state = state_dict[first + "A_logs"].shape[1]
    k = state_dict[first + "x_proj_weight"].shape[0]
    ssm_ratio = state_dict[first + "Ds"].shape[0] / k / dim
    head = state_dict.get("classifier.head.weight")
    return dict(version=version, dim=dim, depths=tuple(depths[i] for i in sorted(depths)), d_state=d_state,
                ssm_ratio=ssm_ratio, in_chans=in_chans, num_classes=0 if head is None else head.shape[0])
