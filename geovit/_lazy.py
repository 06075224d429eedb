"""Lazy public names of a package (PEP 562): heavy modules are imported on first use only."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_getattr(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``exports[name]`` (a module path) when ``name`` is used.

    Args:
        package: the package's name, for the error.
        exports: public name -> the module that defines it.

    Returns:
        The function to assign to the package's ``__getattr__``.
    """
    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
