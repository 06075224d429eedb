"""Reading foreign checkpoints: one unwrap helper and one strict load for every model family.

A family module's ``checkpoint_filter_fn`` maps a file of the paper's official code to geovit
keys; the pieces every family needs for that live here:

* :func:`find_state_dict` -- the flat tensor dict inside Lightning / DINO / DataParallel nesting
  (``state_dict``, ``model``, ``model_state_dict``, ``teacher`` entries);
* :func:`strip_wrapper_prefix` -- the one wrapper prefix (``module.``, ``model.``, ``backbone.``,
  ``teacher.backbone.`` ...) in front of a family's anchor key, stripped;
* :func:`load_tensors` -- strict load with errors naming the (official) key, its shape and the
  config;
* :func:`convert_official` -- filter, infer the config, build, filter against the model, load.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from torch import Tensor, nn

from geovit.errors import CheckpointError, GeovitError

#: entries of a checkpoint dict that hold the network's weights, looked into in this order.
NESTED_KEYS: tuple[str, ...] = ("state_dict", "model", "model_state_dict", "teacher")


def _is_container(value: Any) -> bool:
    return isinstance(value, Mapping) and not isinstance(value, Tensor)


def find_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """The flat ``name -> tensor`` dict of a checkpoint.

    Follows the first of :data:`NESTED_KEYS` that holds a dict (repeatedly: Lightning's
    ``state_dict``, a training script's ``model``, DINO's ``teacher``), then keeps the tensors.

    Args:
        checkpoint: what ``torch.load`` / safetensors returned.

    Returns:
        The tensors, keys unchanged.
    """
    state: Mapping[str, Any] = checkpoint
    while True:
        inner = next((state[k] for k in NESTED_KEYS if k in state and _is_container(state[k])), None)
        if inner is None:
            break
        state = inner
    return {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, Tensor)}


def strip_wrapper_prefix(state: Mapping[str, Tensor], anchor: str, *, family: str, layout: str = "") -> dict[str, Tensor]:
    """The tensors under the wrapper prefix of ``anchor``, with the prefix stripped.

    The prefix is what stands before ``anchor`` in the keys that end with it (``module.``,
    ``backbone.``, ``teacher.backbone.`` ...); a ``student`` copy is passed over for any other,
    then the shortest prefix wins. Keys outside the prefix (a Lightning classifier, a DINO loss
    centre) are left out.

    Args:
        state: flat tensors, e.g. from :func:`find_state_dict`.
        anchor: a key every checkpoint of the family has (``"cls_token"``).
        family: the family's display name for the error message.
        layout: a description of the expected layout for the error message.

    Returns:
        The stripped sub-dict.

    Raises:
        CheckpointError: no key ends with ``anchor``.
    """
    prefixes = [k[: -len(anchor)] for k in state if k == anchor or k.endswith("." + anchor)]
    if not prefixes:
        sample = ", ".join(list(state)[:5]) or "none"
        raise CheckpointError(f"not a {family} checkpoint: no {anchor!r} key (also looked under wrapper prefixes "
                              f"such as 'module.', 'backbone.', 'teacher.'){layout}; found keys such as {sample}")
    prefix = min(prefixes, key=lambda p: ("student" in p.split("."), len(p)))
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def unwrap_checkpoint(checkpoint: Mapping[str, Any], anchor: str, *, family: str, layout: str = "") -> dict[str, Tensor]:
    """:func:`find_state_dict` then :func:`strip_wrapper_prefix` (see both)."""
    return strip_wrapper_prefix(find_state_dict(checkpoint), anchor, family=family, layout=layout)


def load_tensors(model: nn.Module, state: Mapping[str, Tensor], *, family: str,
                 describe: Callable[[str], str] | None = None) -> nn.Module:
    """Strict load of geovit-keyed ``state`` into ``model``; floating tensors take the model's dtype.

    Args:
        model: a freshly built model with a ``config`` attribute.
        state: geovit-keyed tensors (a family's ``checkpoint_filter_fn`` output).
        family: display name for the messages.
        describe: maps a geovit key to the name the user's file uses (default: unchanged).

    Returns:
        ``model``, loaded.

    Raises:
        CheckpointError: tensors missing, left over, or of the wrong shape or dtype, naming
            the keys and the config.
    """
    name = describe or (lambda k: k)
    config = getattr(model, "config", {})
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(f"{len(missing)} {family} weights missing, e.g. {[name(k) for k in missing[:6]]}")
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(f"{len(unexpected)} keys do not fit config {config}, e.g. "
                              f"{[name(k) for k in unexpected[:6]]}")
    tensors = {}
    for key, value in state.items():
        want = expected[key]
        if tuple(value.shape) != tuple(want.shape):
            raise CheckpointError(f"key {name(key)!r}: shape {tuple(value.shape)}, expected {tuple(want.shape)} "
                                  f"for config {config}")
        if value.dtype != want.dtype:
            if not (value.is_floating_point() and want.is_floating_point()):
                raise CheckpointError(f"key {name(key)!r}: dtype {value.dtype}, expected {want.dtype}")
            value = value.to(want.dtype)
        tensors[key] = value
    model.load_state_dict(tensors, strict=True)
    return model


def convert_official(state_dict: Mapping[str, Any], config: Mapping[str, Any] | None, *,
                     filter_fn: Callable[..., dict[str, Tensor]],
                     infer_fn: Callable[[Mapping[str, Tensor], Mapping[str, Any] | None], dict[str, Any]],
                     build_fn: Callable[[Mapping[str, Any]], nn.Module], family: str,
                     describe: Callable[[str], str] | None = None) -> nn.Module:
    """The ``load_official`` of every family, from that family's contract functions.

    ``filter_fn(state_dict)`` -> geovit keys; ``infer_fn(keys, config)`` -> constructor config;
    ``build_fn(config)``; ``filter_fn(keys, model)`` (adapts to the built model); strict load.

    Args:
        state_dict: the official file's content (any nesting the family accepts).
        config: the user's settings (official names) for what the tensors cannot tell.
        filter_fn: the family's ``checkpoint_filter_fn``.
        infer_fn: the family's ``infer_config``.
        build_fn: the family's ``build``.
        family: display name for the messages.
        describe: maps geovit keys back to the official names in messages.

    Returns:
        The model in eval mode.

    Raises:
        CheckpointError: for a foreign file, a config the tensors contradict, or tensors that do
            not fit (a bad config is reported as a :class:`CheckpointError` too).
    """
    state = filter_fn(state_dict)
    try:
        model = build_fn(infer_fn(state, config))
    except CheckpointError:
        raise
    except GeovitError as err:
        raise CheckpointError(str(err)) from None
    return load_tensors(model, filter_fn(state, model), family=family, describe=describe).eval()

