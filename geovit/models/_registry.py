"""The model registry: named variants, timm-style (``create_model("channelvit_small_patch8")``).

Family modules register each variant with an explicit :func:`register_model` function; the
family modules themselves are imported on the first lookup, through the one family table
:mod:`geovit.models.families` (geovit's families and the ``geovit.families`` entry points).
"""
from __future__ import annotations

import difflib
import fnmatch
import warnings
from typing import Callable, TypeVar

from torch import nn

from geovit.errors import GeovitError

F = TypeVar("F", bound=Callable[..., nn.Module])

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_state = {"loaded": False, "loading": False}


def register_model(fn: F | None = None, *, timm: bool | None = None):
    """Decorator: register a variant factory under its function name (with geovit and timm).

    ``@register_model`` or ``@register_model(timm=...)``. The variant becomes a timm model too
    (``timm.create_model(name)``, see :mod:`geovit.models._timm`) when its module declares a timm
    pretrained config for it, as timm's own modules do: ``default_cfgs = generate_default_cfgs({...})``
    above the decorated functions (``timm=True`` / ``False`` forces the choice). timm's entry point
    looks the factory up here by name on every call: one registry, seen from both sides.

    Args:
        fn: a function ``(**overrides) -> nn.Module``; its ``__name__`` is the model name.
        timm: register with timm as well (default: when the module's ``default_cfgs`` names it).

    Returns:
        ``fn`` unchanged (or the decorator, when called with keywords only).

    Warns:
        UserWarning: another factory is already registered under that name (the new one
            replaces it).
    """
    if fn is None:
        return lambda f: register_model(f, timm=timm)
    name = fn.__name__
    old = _MODELS.get(name)
    if old is not None and old is not fn:
        warnings.warn(f"register_model: model name {name!r} is already registered by {old.__module__}; "
                      f"the factory from {fn.__module__} replaces it", UserWarning, stacklevel=2)
    _MODELS[name] = fn
    from geovit.models import _timm

    if timm or (timm is None and _timm.wants_timm(fn)):
        _timm.register_timm(name, fn)
    return fn


def get_factory(name: str) -> Callable[..., nn.Module]:
    """The registered factory of ``name``.

    Args:
        name: a name from :func:`list_models`.

    Returns:
        The factory function.

    Raises:
        GeovitError: ``name`` is not registered.
    """
    _load_families()
    if name not in _MODELS:
        raise _unknown(name)
    return _MODELS[name]


def _load_families() -> None:
    if _state["loaded"] or _state["loading"]:
        return
    from geovit.models.families import import_families

    _state["loading"] = True
    try:
        import_families()
        _state["loaded"] = True
    finally:
        _state["loading"] = False


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted.

    Args:
        pattern: ``fnmatch`` pattern, e.g. ``"chamaevit_*"``.

    Returns:
        The matching names.
    """
    _load_families()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model.

    Args:
        name: a model name.

    Returns:
        True when :func:`create_model` knows it.
    """
    _load_families()
    return name in _MODELS


def _unknown(name: str) -> GeovitError:
    close = difflib.get_close_matches(name, list(_MODELS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return GeovitError(f"unknown model {name!r}{hint}; expected one of: {', '.join(sorted(_MODELS))}")


def model_family(name: str) -> str:
    """The family (a key of :data:`geovit.models.families.FAMILIES`) whose module registered ``name``.

    Args:
        name: a name from :func:`list_models`.

    Returns:
        The family name, e.g. ``"chamaevit"`` (what :func:`geovit.hub.save_converted` needs).

    Raises:
        GeovitError: ``name`` is not registered, or was registered outside every family module.
    """
    from geovit.models.families import FAMILIES

    _load_families()
    if name not in _MODELS:
        raise _unknown(name)
    module = _MODELS[name].__module__
    for family, path in FAMILIES.items():
        if path.split(":")[0] == module:
            return family
    raise GeovitError(f"model {name!r} is registered by {module}, which is no family module "
                      f"(families: {', '.join(FAMILIES)})")


#: keywords that only timm's builder understands; :func:`create_model` hands them to ``timm.create_model``.
TIMM_KEYWORDS: tuple[str, ...] = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "features_only",
                                  "out_indices", "feature_cls")


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered variant; keyword arguments override the variant's defaults.

    Args:
        name: a name from :func:`list_models`.
        **kwargs: constructor overrides (``in_chans=18``, ``depth=2``, ``default_channels=[...]`` ...);
            with any of :data:`TIMM_KEYWORDS` (``pretrained=True, pretrained_cfg_overlay=dict(file=...)``,
            ``features_only=True`` ...) the model is built by ``timm.create_model`` (timm variants only).

    Returns:
        The model (randomly initialised unless weights were asked for).

    Raises:
        GeovitError: ``name`` is not registered (the message lists the known names), or timm
            keywords for a variant that is not a timm model.
    """
    _load_families()
    if name not in _MODELS:
        raise _unknown(name)
    wanted = [k for k in TIMM_KEYWORDS if k in kwargs]
    if wanted:
        import timm

        if not timm.is_model(name):
            raise GeovitError(f"create_model({name!r}): {', '.join(wanted)} need a timm model, and {name!r} is "
                              "registered with geovit only")
        return timm.create_model(name, **kwargs)
    return _MODELS[name](**kwargs)
