"""Entry points through which other packages extend geovit.

Three groups, declared in a distribution's ``pyproject.toml``::

    [project.entry-points."geovit.commands"]   # add_commands(subparsers) of a CLI module
    [project.entry-points."geovit.families"]   # a model-family module (geovit.models.families)
    [project.entry-points."geovit.datasets"]   # a sequence of geovit.data.registry.DatasetInfo

geovit's own ``pdes`` and ``causal`` packages register themselves this way, so geovit never
names them in strings. Entry points are read once per process.
"""
from __future__ import annotations

import functools
from importlib.metadata import entry_points
from typing import Any

from geovit.errors import GeovitError

GROUPS = ("geovit.commands", "geovit.families", "geovit.datasets")


@functools.lru_cache(maxsize=None)
def _entry_points(group: str) -> tuple:
    return tuple(sorted(entry_points(group=group), key=lambda ep: ep.name))


def entry_point_names(group: str) -> list[str]:
    """Names registered under ``group`` without importing them."""
    return [ep.name for ep in _entry_points(group)]


def entry_point_values(group: str) -> dict[str, str]:
    """``name -> "module:attr"`` strings registered under ``group`` (nothing is imported)."""
    return {ep.name: ep.value for ep in _entry_points(group)}


def load_entry_points(group: str) -> dict[str, Any]:
    """Load every entry point of ``group``: ``name -> loaded object``.

    A plugin that is installed but fails to import raises :class:`GeovitError` naming it; a
    plugin whose package is absent from this build (``ModuleNotFoundError`` for its own module)
    is left out.

    Raises:
        GeovitError: ``group`` is not one of :data:`GROUPS`, or a plugin fails to load.
    """
    if group not in GROUPS:
        raise GeovitError(f"entry-point group {group!r}: expected one of {', '.join(GROUPS)}")
    loaded: dict[str, Any] = {}
    for ep in _entry_points(group):
        try:
            loaded[ep.name] = ep.load()
        except ModuleNotFoundError as err:
            if err.name and ep.value.split(":")[0].startswith(err.name):
                continue  # the plugin's package is not part of this installation
            raise GeovitError(f"plugin {ep.name!r} ({group} = {ep.value!r}) failed to load: {err}") from err
    return loaded
