"""Offline loading of official checkpoints and geovit's own safetensors files.

``load_official(family, checkpoint, config=None)`` converts a checkpoint written by a paper's
official code into the geovit model of that family (eval mode). Each family module (the table
:data:`geovit.models.families.FAMILIES`) exposes ``load_official(state_dict, config) -> nn.Module``;
this module finds the file, reads it safely (``torch.load(..., weights_only=True)`` or
safetensors) and dispatches.

``save_converted`` / ``load_converted`` write and read geovit's own format: a safetensors file
whose metadata holds the family and the constructor config, so a model is rebuilt without code.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from geovit._io import atomic_path
from geovit.errors import CheckpointError, GeovitError
from geovit.models import families as _families
from geovit.models import load_tensors

#: family -> module (the one table, :data:`geovit.models.families.FAMILIES`).
FAMILIES: Mapping[str, str] = _families.FAMILIES


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``.pt/.pth/.ckpt/.tar`` (weights_only) or ``.safetensors`` file into a dict.

    Args:
        path: the checkpoint file.

    Returns:
        The file's top-level dict.

    Raises:
        CheckpointError: naming the file when it is missing, unreadable, or holds something
            other than a dict of tensors / nested dicts.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"checkpoint {path}: not a readable safetensors file ({err})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated zip, unsafe globals ...
        raise CheckpointError(
            f"checkpoint {path}: could not be read with torch.load(weights_only=True): {err}"
        ) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path}: expected a dict (state dict or Lightning checkpoint), got {type(obj).__name__}")
    return dict(obj)


def load_official(family: str, checkpoint: str | os.PathLike | Mapping[str, torch.Tensor], config: Mapping | None = None) -> nn.Module:
    """Build the geovit model of ``family`` from an official checkpoint, in eval mode.

    Args:
        family: a key of :data:`FAMILIES`.
        checkpoint: a file path, or its already-read content.
        config: settings the tensors cannot tell (official names; see the family's ``infer_config``).

    Returns:
        The model.

    Raises:
        GeovitError: an unknown family.
        CheckpointError: a foreign or unfitting checkpoint, naming the file.
    """
    module = _families.family_module(family)
    state = checkpoint if isinstance(checkpoint, Mapping) else read_checkpoint(checkpoint)
    try:
        model = module.load_official(dict(state), dict(config or {}))
    except CheckpointError as err:
        where = checkpoint if not isinstance(checkpoint, Mapping) else "<state dict>"
        raise CheckpointError(f"checkpoint {where}: {err}") from None
    return model.eval()


def save_converted(model: nn.Module, family: str, config: Mapping, path: str | os.PathLike) -> None:
    """Write ``model`` as safetensors with ``{"family", "config"}`` metadata (atomically).

    Args:
        model: the model; its state dict is written.
        family: a key of :data:`FAMILIES` (whose ``build(config)`` rebuilds the model).
        config: the constructor config, normally ``model.config`` (JSON-serialisable).
        path: the output ``.safetensors`` file.

    Raises:
        GeovitError: an unknown family or a config that is not JSON-serialisable.
    """
    from safetensors.torch import save_file

    if family not in FAMILIES:
        raise GeovitError(f"save_converted: unknown model family {family!r}; expected one of {', '.join(FAMILIES)}")
    try:
        config_json = json.dumps(dict(config))
    except TypeError as err:
        raise GeovitError(f"save_converted: config is not JSON-serialisable ({err})") from None

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"family": family, "config": config_json, "format": "geovit"}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_converted(path: str | os.PathLike, family: str | None = None) -> nn.Module:
    """Rebuild a model written by :func:`save_converted` (eval mode).

    The tensors go through the family's ``checkpoint_filter_fn`` with the rebuilt model, so files
    written before a layout change (e.g. ChA-MAEViT's former ``patch_embed.channel_tokens``) load.

    Args:
        path: the ``.safetensors`` file.
        family: when given, the family the file must hold.

    Returns:
        The model.

    Raises:
        CheckpointError: a missing, unreadable or foreign file, another family, or tensors that
            do not fit the stored config.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"checkpoint {path}: not a readable safetensors file ({err})") from None
    if meta.get("format") != "geovit":
        raise CheckpointError(f"checkpoint {path}: not a geovit safetensors file (no geovit metadata); "
                              "use geovit.hub.load_official for official checkpoints")
    if family is not None and meta["family"] != family:
        raise CheckpointError(f"checkpoint {path}: holds a {meta['family']!r} model, expected {family!r}")
    module = _families.family_module(meta["family"])
    model = module.build(json.loads(meta["config"]))
    try:
        state = module.checkpoint_filter_fn(read_checkpoint(path), model)
        load_tensors(model, state, family=meta["family"])
    except CheckpointError as err:
        raise CheckpointError(f"checkpoint {path}: tensors do not fit its own config: {err}") from None
    return model.eval()
