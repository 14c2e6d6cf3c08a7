"""Reading checkpoint files safely: ``torch.load(weights_only=True)`` or safetensors, never arbitrary pickles.

Official training checkpoints hold more than weights: VMamba's (Swin's trainer) store the yacs ``config``,
Vim's (DeiT's trainer) the argparse ``args``, some a numpy ``max_accuracy``. ``weights_only=True`` refuses
those globals. Rather than falling back to a full unpickle, :func:`load_checkpoint_file` retries with an
inert stand-in class for each refused global: the stand-in records nothing and runs no code, and the
tensors, which is all we read, load unchanged.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["CheckpointError", "load_checkpoint_file", "unwrap_state_dict", "save_safetensors"]

_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
# wrappers used by the official trainers and common tools, in order of preference
_STATE_DICT_KEYS = ("model", "state_dict", "module", "network_weights")
_EMA_KEYS = ("model_ema", "state_dict_ema", "ema")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model; the message names file and key."""


def _stand_in(full_name: str) -> type:
    module, _, name = full_name.rpartition(".")

    def new(cls, *args, **kwargs):
        return dict.__new__(cls)

    def init(self, *args, **kwargs):
        pass

    def setstate(self, state):
        pass

    return type(name, (dict,), {"__module__": module, "__qualname__": name, "__new__": new, "__init__": init,
                                "__setstate__": setstate})


def _torch_load(path: Path) -> Any:
    stand_ins: dict[str, type] = {}
    while True:
        try:
            with torch.serialization.safe_globals([(cls, name) for name, cls in stand_ins.items()]):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            match = _UNSUPPORTED_GLOBAL.search(str(err))
            if match is None or match.group(1) in stand_ins or len(stand_ins) >= 64:
                raise
            stand_ins[match.group(1)] = _stand_in(match.group(1))


def unwrap_state_dict(obj: Any, use_ema: bool = False, source: str = "checkpoint") -> dict[str, Tensor]:
    """The tensors of a checkpoint object: ``obj["model"]`` (or ``model_ema`` with ``use_ema``), ``state_dict``,
    or ``obj`` itself when it is already a flat name -> tensor mapping. A ``module.`` prefix (DDP) is removed."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a dict of tensors or a training checkpoint dict, "
                              f"got {type(obj).__name__}")
    for key in _EMA_KEYS if use_ema else _STATE_DICT_KEYS:
        if isinstance(obj.get(key), Mapping) and obj[key]:
            obj = obj[key]
            break
    else:
        if use_ema:
            raise CheckpointError(f"{source}: use_ema=True but the file has none of {list(_EMA_KEYS)}; "
                                  f"top-level keys: {sorted(obj)[:10]}")
    state_dict = {}
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            raise CheckpointError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor; top-level "
                                  f"keys are {sorted(obj)[:10]} (expected a state dict or 'model' / 'model_ema')")
        state_dict[key[len("module."):] if key.startswith("module.") else key] = value
    return state_dict


def read_checkpoint_object(path: str | Path) -> Any:
    """What a checkpoint file holds: a .safetensors file's tensors, or a torch file's object read with
    ``weights_only=True``. Errors (missing, truncated or not a checkpoint) raise naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {err}") from err
    try:
        return _torch_load(path)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot read it as a torch checkpoint with weights_only=True "
                              f"(truncated or corrupt, or not a checkpoint?): {err}") from err


def checkpoint_state_dict(obj: Any, path: str | Path, use_ema: bool = False) -> dict[str, Tensor]:
    """The flat state dict of what :func:`read_checkpoint_object` returned (``use_ema`` applies to torch
    files only: a .safetensors file holds one state dict)."""
    path = Path(path)
    return unwrap_state_dict(obj, use_ema=use_ema and path.suffix != ".safetensors", source=str(path))


def load_checkpoint_file(path: str | Path, use_ema: bool = False) -> dict[str, Tensor]:
    """Read ``path`` (.safetensors, or a torch file read with ``weights_only=True``) into a flat state dict.

    Errors (missing, truncated or not a checkpoint) raise :class:`CheckpointError` naming the file.
    """
    return checkpoint_state_dict(read_checkpoint_object(path), path, use_ema=use_ema)


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file over ``path``: a crash or a full disk leaves the
    old file (or none), never a truncated one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_safetensors(state_dict: Mapping[str, Tensor], path: str | Path,
                     metadata: dict[str, str] | None = None) -> None:
    """Write contiguous, unshared copies of the tensors (safetensors refuses shared storage), atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().clone() for k, v in state_dict.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
