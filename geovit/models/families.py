"""The one table of model families: geovit's own and those of installed plugins.

A family is a module exposing the family contract (see CONTRIBUTING.md):

* ``checkpoint_filter_fn(state_dict, model=None) -> dict`` -- a file of the paper's official code
  (or an already converted geovit state dict) -> geovit keys; with ``model``, also adapted to it;
* ``infer_config(state_dict, config=None) -> dict`` -- constructor config from the geovit-keyed
  tensors plus the user's ``config``;
* ``build(config) -> nn.Module`` -- from ``model.config``;
* ``load_official(state_dict, config=None) -> nn.Module`` -- the three above, strict, eval mode.

Other packages add families with an entry point of group ``geovit.families`` whose value is
the module (``myfamily = "mypackage.myfamily"``); geovit never names them itself.
"""
from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Iterator, Mapping

from geovit.errors import GeovitError
from geovit.plugins import entry_point_values, load_entry_points

#: entry-point group through which other packages add families.
ENTRY_POINT_GROUP = "geovit.families"
#: geovit's own families: name -> module.
BUILTIN_FAMILIES: dict[str, str] = {
    "channelvit": "geovit.models.channelvit",
    "chamaevit": "geovit.models.chamaevit",
    "changevit": "geovit.models.changevit",
}
#: what every family module defines.
CONTRACT: tuple[str, ...] = ("checkpoint_filter_fn", "infer_config", "build", "load_official")


class FamilyTable(Mapping[str, str]):
    """Read-only mapping family name -> module path, read from the entry points on first use."""

    def __init__(self) -> None:
        self._table: dict[str, str] | None = None

    def _get(self) -> dict[str, str]:
        if self._table is None:
            table = dict(BUILTIN_FAMILIES)
            for name, value in entry_point_values(ENTRY_POINT_GROUP).items():
                if name in table:
                    warnings.warn(f"model family plugin {name!r} ({value}) is ignored: geovit's own family "
                                  f"{name!r} has that name", UserWarning, stacklevel=3)
                    continue
                table[name] = value
            self._table = table
        return self._table

    def __getitem__(self, name: str) -> str:
        return self._get()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __repr__(self) -> str:
        return f"FamilyTable({self._get()!r})"


#: family name -> module path (geovit's own families, then the entry points).
FAMILIES: Mapping[str, str] = FamilyTable()


def family_module(name: str) -> ModuleType:
    """Import the module of family ``name`` and check that it fulfils the family contract.

    Args:
        name: a key of :data:`FAMILIES`.

    Returns:
        The module.

    Raises:
        GeovitError: an unknown family (naming the known ones), a plugin whose package is not
            installed, or a module that lacks part of :data:`CONTRACT`.
    """
    if name not in FAMILIES:
        raise GeovitError(f"unknown model family {name!r}; expected one of {', '.join(FAMILIES)}")
    if name in BUILTIN_FAMILIES:
        module = importlib.import_module(BUILTIN_FAMILIES[name])
    else:
        module = load_entry_points(ENTRY_POINT_GROUP).get(name)
        if module is None:
            raise GeovitError(f"model family {name!r} is declared by an entry point ({FAMILIES[name]}) "
                              "but its package is not installed")
    missing = [f for f in CONTRACT if not callable(getattr(module, f, None))]
    if missing:
        raise GeovitError(f"model family {name!r} ({FAMILIES[name]}) lacks {', '.join(missing)}; a family "
                          f"module defines {', '.join(CONTRACT)}")
    return module


def import_families() -> None:
    """Import every family module whose package is installed (their variants register then).

    Raises:
        GeovitError: a family fails :func:`family_module`'s checks (other than being absent).
    """
    available = set(BUILTIN_FAMILIES) | set(load_entry_points(ENTRY_POINT_GROUP))
    for name in FAMILIES:
        if name in available:
            family_module(name)
