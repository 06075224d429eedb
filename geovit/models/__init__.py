"""Model registry, timm-style: ``create_model("channelvit_small_patch8", in_chans=18)``.

Each model family lives in its own module and registers its named variants with
:func:`register_model`. Family modules are imported lazily on first lookup.
"""
from __future__ import annotations

import fnmatch
import importlib
from typing import Callable

from geovit.errors import GeovitError

#: Modules that define model families (imported on first use of the registry).
FAMILY_MODULES: tuple[str, ...] = (
    "geovit.models.channelvit",
    "geovit.models.chamaevit",
    "geovit.models.changevit",
    "pdes.vicon",
)

_ENTRYPOINTS: dict[str, Callable] = {}
_loaded = False


def register_model(fn: Callable) -> Callable:
    """Decorator: register a variant factory under its function name."""
    _ENTRYPOINTS[fn.__name__] = fn
    return fn


def _load_families() -> None:
    global _loaded
    if _loaded:
        return
    for name in FAMILY_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:  # a family not present in this build
            if err.name != name:
                raise
    _loaded = True


def list_models(pattern: str = "*") -> list[str]:
    _load_families()
    return sorted(n for n in _ENTRYPOINTS if fnmatch.fnmatch(n, pattern))


def create_model(name: str, **kwargs):
    """Build a registered variant; keyword arguments override the variant's defaults."""
    _load_families()
    if name not in _ENTRYPOINTS:
        raise GeovitError(f"unknown model {name!r}; expected one of: {', '.join(list_models())}")
    return _ENTRYPOINTS[name](**kwargs)
