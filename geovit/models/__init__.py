"""Model registry, timm-style: ``create_model("channelvit_small_patch8", in_chans=18)``.

Each model family lives in its own module (the table of families: :mod:`geovit.models.families`)
and registers its named variants with :func:`register_model`; family modules are imported lazily
on the first lookup. The checkpoint helpers that family modules share are exported here too.
"""
from __future__ import annotations

from geovit.models._checkpoint import (
    convert_official, find_state_dict, load_tensors, strip_wrapper_prefix, unwrap_checkpoint,
)
from geovit.models._registry import create_model, is_model, list_models, model_family, register_model

__all__ = ["create_model", "is_model", "list_models", "model_family", "register_model", "convert_official",
           "find_state_dict", "load_tensors", "strip_wrapper_prefix", "unwrap_checkpoint"]
