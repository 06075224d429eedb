"""Model registry, timm-style: ``create_model("channelvit_small_patch8", in_chans=18)``.

Each model family lives in its own module (the table of families: :mod:`geovit.models.families`)
and registers its named variants with :func:`register_model`. Importing this package imports the
family modules, which registers every variant with geovit and, for the families that declare timm
pretrained configs, with timm (``timm.create_model("channelvit_small_patch8")``; see
:mod:`geovit.models._timm`). The checkpoint helpers that family modules share are exported here too.
"""
from __future__ import annotations

import warnings

from geovit.errors import GeovitError
from geovit.models._checkpoint import (
    convert_official, find_state_dict, load_tensors, strip_wrapper_prefix, unwrap_checkpoint,
)
from geovit.models._registry import (
    _load_families, create_model, get_factory, is_model, list_models, model_family, register_model,
)

__all__ = ["create_model", "get_factory", "is_model", "list_models", "model_family", "register_model",
           "convert_official", "find_state_dict", "load_tensors", "strip_wrapper_prefix", "unwrap_checkpoint"]

try:  # register every variant now, so that timm's registry holds them after this import
    _load_families()
except GeovitError as err:  # a broken plugin family: reported again on the first registry lookup
    warnings.warn(f"geovit.models: model families not loaded: {err}", UserWarning, stacklevel=2)
