"""The model registry: ``register_model``, ``create_model``, ``list_models``, and registration with timm.

Named variants are small functions decorated with :func:`register_model` in one file per family
(``vim.py``, ``vmamba.py``), as in timm. Each family module may define ``default_cfgs``: variant name ->
a dict of timm ``PretrainedCfg`` fields (input size, mean, std, crop_pct, ...), which becomes the model's
``pretrained_cfg`` / ``default_cfg``.

When timm is installed, every variant is also registered with timm under the same name, so
``timm.create_model("vim_tiny")`` works once mambaeye.models has been imported. Names that timm already
uses are refused at registration. timm is not imported for this: if it is already imported the variants
are registered at once, otherwise an import hook registers them right after ``import timm`` (importing
timm costs seconds, and most mambaeye commands do not need it).
"""

from __future__ import annotations

import fnmatch
import importlib.abc
import importlib.util
import logging
import sys
import warnings
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "is_model", "model_entrypoint", "get_default_cfg"]

_logger = logging.getLogger(__name__)

_model_entrypoints: dict[str, Callable[..., nn.Module]] = {}
_model_default_cfgs: dict[str, dict[str, Any]] = {}
_model_family: dict[str, str] = {}
_registered_with_timm: set[str] = set()


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register a variant function under its ``__name__`` (and with timm, when timm is present)."""
    name = fn.__name__
    if name in _model_entrypoints:
        raise ValueError(f"model {name!r} is already registered (by {_model_entrypoints[name].__module__})")
    module = sys.modules[fn.__module__]
    _model_entrypoints[name] = fn
    _model_default_cfgs[name] = dict(getattr(module, "default_cfgs", {}).get(name, {}))
    _model_family[name] = fn.__module__.rsplit(".", 1)[-1]
    if "timm" in sys.modules:
        _register_with_timm([name])
    return fn


def is_model(name: str) -> bool:
    return name in _model_entrypoints


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The variant function registered as ``name``; a KeyError lists close names."""
    try:
        return _model_entrypoints[name]
    except KeyError:
        close = [n for n in _model_entrypoints if n.split("_")[0] == name.split("_")[0]] or sorted(_model_entrypoints)
        raise KeyError(f"unknown model {name!r}; registered models include: {', '.join(sorted(close))}") from None


def get_default_cfg(name: str) -> dict[str, Any]:
    """A copy of the variant's pretrained cfg (input size, mean, std, crop_pct, released file, ...)."""
    model_entrypoint(name)
    return dict(_model_default_cfgs[name])


def list_models(pattern: str = "*", family: str | None = None) -> list[str]:
    """Registered model names matching the shell-style ``pattern``, sorted; ``family``: "vim", "vmamba"."""
    names = [n for n in _model_entrypoints if fnmatch.fnmatchcase(n, pattern)]
    if family is not None:
        names = [n for n in names if _model_family[n] == family]
    return sorted(names)


def create_model(
    model_name: str,
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    num_classes: int = 1000,
    in_chans: int = 3,
    img_size: int | tuple[int, int] | None = None,
    features_only: bool = False,
    out_indices: tuple[int, ...] | list[int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model.

    - ``pretrained=True``: load the released official weights from the local checkpoint folder
      (:func:`mambaeye.models.checkpoint_dir`); a missing file raises an error naming the file to put there.
    - ``checkpoint_path``: an official ``.pth`` (Vim, VMamba v2 or v0, old or new key names, ``model`` /
      ``model_ema`` / bare) or a file written by ``mambaeye convert``. A different ``num_classes``
      re-initialises the head, a different ``img_size`` interpolates Vim's position embedding (both logged).
    - ``img_size``: the native input size (Vim: sizes its position embedding; any size the stride divides
      still runs). ``features_only``: a backbone that returns feature maps ``(B, C, H', W')`` at
      ``out_indices`` (VMamba: the 4 stages, strides 4/8/16/32; Vim: the chosen blocks, stride = patch stride).
    - Other keyword arguments go to the model class (``drop_path_rate``, ``backend``, ``depths``, ...).
    """
    fn = model_entrypoint(model_name)
    if img_size is not None:
        kwargs["img_size"] = img_size
    if out_indices is not None:
        kwargs["out_indices"] = out_indices
    return fn(pretrained=pretrained, checkpoint_path=checkpoint_path, num_classes=num_classes, in_chans=in_chans,
              features_only=features_only, **kwargs)


# ------------------------------------------------------------------------------------------------------
# timm


def _register_with_timm(names: list[str]) -> None:
    try:
        from timm.models import _registry as timm_registry
    except ImportError as err:  # timm present but broken: mambaeye works without it
        warnings.warn(f"could not register mambaeye models with timm: {err}", stacklevel=2)
        return
    for name in names:
        if name in _registered_with_timm:
            continue
        if timm_registry.is_model(name):
            raise RuntimeError(f"mambaeye model name {name!r} clashes with a timm model of the same name")
        timm_registry.register_model(_model_entrypoints[name])
        _registered_with_timm.add(name)


class _TimmImportHook(importlib.abc.MetaPathFinder):
    """Registers mambaeye's models with timm right after timm is first imported."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "timm":
            return None
        for finder in sys.meta_path:  # whichever finder would have found timm, wrapped
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _uninstall_timm_hook()
        _register_with_timm(list(_model_entrypoints))

    def __getattr__(self, name):  # is_package, get_code, get_resource_reader, ... of the real loader
        return getattr(self._loader, name)


_timm_hook = _TimmImportHook()


def _uninstall_timm_hook() -> None:
    if _timm_hook in sys.meta_path:
        sys.meta_path.remove(_timm_hook)


def _install_timm_hook() -> None:
    """Called once by mambaeye.models after the variants are registered."""
    if "timm" in sys.modules:
        _register_with_timm(list(_model_entrypoints))
    elif importlib.util.find_spec("timm") is not None and _timm_hook not in sys.meta_path:
        sys.meta_path.insert(0, _timm_hook)
