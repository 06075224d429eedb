"""geovit's variants as timm models: registration, pretrained files, feature extraction.

A family module opts its variants into timm the way timm's own model modules do: a module-level
``default_cfgs = generate_default_cfgs({...})`` defined above the ``@register_model`` functions
(:func:`geovit.models.register_model` then also registers each named variant with
``timm.models.register_model``). The timm entry point looks the factory up in geovit's registry
on every call, so the two registries cannot disagree.

``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))`` reads
``PATH`` with :func:`geovit.hub.read_checkpoint` (weights only) and maps it with the family's
``checkpoint_filter_fn``: an official file of any layout :func:`geovit.hub.load_official` reads,
or a geovit ``.safetensors`` file. As in timm, the variant and the keyword arguments define the
architecture and the file must fit it; what the tensors alone tell and the caller did not pass
(the channel-table size ``in_chans``, the stored positional grid ``img_size``, ``num_classes``)
is taken from the file, and a different ``num_classes`` than the file's gets a new, randomly
initialised classifier. geovit hosts no weights: ``pretrained=True`` without a file is an error.

``features_only=True`` wraps the model in timm's ``FeatureGetterNet`` (``out_indices`` selects
the levels: default the last three blocks of a ViT, every level of ChangeViT's pyramid), which
calls the model's ``forward_intermediates``.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Mapping, Sequence

from timm.models import PretrainedCfg, build_model_with_cfg, resolve_pretrained_cfg
from timm.models import register_model as _timm_register_model
from timm.models._features import FeatureGetterNet, feature_take_indices
from torch import Tensor, nn

from geovit.errors import CheckpointError, GeovitError

#: ImageNet statistics (inputs scaled to [0, 1]); timm's defaults.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: constructor keywords that the tensors of a file determine and that default to the file's values.
FILE_DEFAULTS: tuple[str, ...] = ("in_chans", "img_size", "num_classes")
#: constructor keywords read off the tensors that a file and the model must agree on (named in errors).
ARCH_KEYS: tuple[str, ...] = ("patch_size", "embed_dim", "depth", "mlp_ratio", "qkv_bias", "num_memory_tokens",
                              "init_values", "num_proxies", "use_proxy_head", "in_chans", "img_size")
#: feature levels ``features_only=True`` returns when ``out_indices`` is not given (timm's ViT default).
DEFAULT_NUM_FEATURE_LEVELS = 3
#: values of ``output_fmt`` the geovit models accept.
OUTPUT_FORMATS = ("NCHW", "NLC")


@dataclasses.dataclass
class GeovitPretrainedCfg(PretrainedCfg):
    """timm's pretrained config plus the channel table of the weights.

    Attributes:
        channels: band name of every absolute channel id (the rows of the channel embedding), when known.
        channel_table: the :mod:`geovit.channels` table those names come from.
        family: the geovit model family (:data:`geovit.models.families.FAMILIES`).
    """

    channels: tuple[str, ...] | None = None
    channel_table: str | None = None
    family: str | None = None


def geovit_cfg(*, family: str, input_size: tuple[int, int, int], num_classes: int, classifier: str | None,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
               channels: Sequence[str] | None = None, channel_table: str | None = None,
               **extra: Any) -> GeovitPretrainedCfg:
    """A pretrained config for a geovit variant (``default_cfgs`` entries of the family modules).

    Args:
        family: the model family.
        input_size: (table size / input channels, H, W) of the weights' data.
        num_classes: classes of the head (0 for none).
        classifier: module prefix of the classifier (dropped when ``num_classes`` changes).
        mean: per-channel mean of the data (ImageNet's when None).
        std: per-channel std of the data (ImageNet's when None).
        channels: band names by absolute channel id.
        channel_table: the :mod:`geovit.channels` table of those names.
        **extra: other :class:`timm.models.PretrainedCfg` fields (``license``, ``paper_ids`` ...).

    Returns:
        The config.
    """
    return GeovitPretrainedCfg(
        family=family, input_size=tuple(input_size), num_classes=num_classes, classifier=classifier,
        mean=tuple(mean) if mean is not None else IMAGENET_MEAN, std=tuple(std) if std is not None else IMAGENET_STD,
        channels=tuple(channels) if channels is not None else None, channel_table=channel_table,
        crop_pct=1.0, interpolation="bicubic", first_conv=extra.pop("first_conv", None), **extra)


def wants_timm(fn: Callable[..., nn.Module]) -> bool:
    """Whether ``fn``'s module declares a timm pretrained config for it (``default_cfgs[fn.__name__]``)."""
    module = sys.modules.get(fn.__module__)
    return fn.__name__ in (getattr(module, "default_cfgs", None) or {})


def register_timm(name: str, fn: Callable[..., nn.Module]) -> None:
    """Register the geovit variant ``name`` with timm (once; the entry point looks ``fn`` up by name).

    Args:
        name: the variant name.
        fn: its geovit factory (its module's ``default_cfgs`` supplies the pretrained configs).
    """
    from timm.models._registry import _model_entrypoints

    if getattr(_model_entrypoints.get(name), "_geovit_variant", None) == name:
        return

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return create_timm_model(name, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = fn.__module__
    entrypoint.__doc__ = fn.__doc__
    entrypoint._geovit_variant = name  # type: ignore[attr-defined]
    _timm_register_model(entrypoint)


# ------------------------------------------------------------------------------------------ building
def create_timm_model(name: str, pretrained: bool = False, pretrained_cfg: Any = None,
                      pretrained_cfg_overlay: Mapping[str, Any] | None = None, cache_dir: Any = None,
                      features_only: bool = False, out_indices: Any = None, feature_cls: Any = None,
                      **kwargs: Any) -> nn.Module:
    """What ``timm.create_model(name, ...)`` runs for a geovit variant (see the module docstring).

    Args:
        name: a registered geovit variant.
        pretrained: load the weights named by the pretrained config (``file`` or ``state_dict``).
        pretrained_cfg: timm's pretrained config (a tag, a dict or a config).
        pretrained_cfg_overlay: fields replacing those of the config, e.g. ``dict(file=PATH)``.
        cache_dir: accepted for timm's signature (geovit never downloads).
        features_only: return timm's ``FeatureGetterNet`` over ``forward_intermediates``.
        out_indices: feature levels (int: the last n; sequence: those indices).
        feature_cls: only ``None`` / ``"getter"`` (the other timm feature wrappers hook modules, whose
            outputs are token sequences here, not maps).
        **kwargs: constructor keywords (``in_chans``, ``num_classes``, ``img_size``, ``drop_path_rate``,
            ``embed_dim``, ``depth``, ``num_heads``, ``default_channels`` ...).

    Returns:
        The model, in training mode as every timm model (call ``.eval()`` before inference: ChannelViT's
        channel sampling and dropout are active in training mode).

    Raises:
        GeovitError: an unknown name or an unsupported feature wrapper.
        CheckpointError: no weight file, or a file that does not fit the model.
    """
    from geovit.models import _registry
    from geovit.models.families import family_module

    factory = _registry.get_factory(name)
    family_name = _registry.model_family(name)
    family = family_module(family_name)
    if feature_cls not in (None, "getter", FeatureGetterNet):
        raise GeovitError(f"{name}: feature_cls={feature_cls!r}; geovit models support timm's 'getter' feature "
                          "wrapper only (it calls forward_intermediates)")
    cfg = resolve_pretrained_cfg(name, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=pretrained_cfg_overlay)
    state, source, file_cfg = None, None, {}
    if pretrained:
        state, source = _read_pretrained(cfg, name)
        state = family.checkpoint_filter_fn(state)
        file_cfg = _file_config(family, state, kwargs)
        for key in FILE_DEFAULTS:
            if key in file_cfg and key not in kwargs:
                kwargs[key] = file_cfg[key]
        updates = {"num_classes": file_cfg.get("num_classes", cfg.num_classes)}
        if "in_chans" in file_cfg:
            updates["input_size"] = (file_cfg["in_chans"], *cfg.input_size[1:])
        cfg = dataclasses.replace(cfg, **updates)
    cfg = _fit_channel_table(cfg, kwargs.get("in_chans", cfg.input_size[0]))
    if isinstance(kwargs.get("default_channels"), (str, list, tuple)) and getattr(cfg, "channel_table", None):
        from geovit.models.layers import resolve_channel_spec

        kwargs["default_channels"] = resolve_channel_spec(kwargs["default_channels"], cfg.input_size[0],
                                                          cfg.channel_table)

    def build(**build_kwargs: Any) -> nn.Module:
        model = factory(**build_kwargs)
        if state is not None:
            _load_pretrained(model, family, family_name, state, file_cfg, cfg, name, source)
        return model

    model = build_model_with_cfg(build, name, pretrained=False, pretrained_cfg=cfg, cache_dir=cache_dir, **kwargs)
    if features_only:
        model = features_wrapper(model, out_indices)
    return model


def features_wrapper(model: nn.Module, out_indices: Any = None) -> FeatureGetterNet:
    """timm's ``FeatureGetterNet`` over ``model.forward_intermediates`` (what ``features_only=True`` returns).

    Args:
        model: a geovit model with ``feature_info`` and ``forward_intermediates``.
        out_indices: feature levels; default every level of a pyramid (levels of different strides,
            ChangeViT), else the last :data:`DEFAULT_NUM_FEATURE_LEVELS` blocks (ViTs, as timm's).

    Returns:
        The wrapper; its ``feature_info.channels()`` / ``.reduction()`` describe the maps.
    """
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    if out_indices is None:
        levels = len(model.feature_info)
        pyramid = len({f["reduction"] for f in model.feature_info}) > 1
        out_indices = levels if pyramid else min(DEFAULT_NUM_FEATURE_LEVELS, levels)
    wrapped = FeatureGetterNet(model, out_indices=out_indices)
    for key in ("num_classes", "classifier", "global_pool"):
        cfg.pop(key, None)
    wrapped.pretrained_cfg = wrapped.default_cfg = cfg
    if hasattr(model, "in_chans"):
        wrapped.in_chans = model.in_chans
    return wrapped


def _fit_channel_table(cfg: PretrainedCfg, in_chans: int) -> PretrainedCfg:
    """The config with ``input_size[0] = in_chans``; its channel names dropped unless they number ``in_chans``."""
    updates: dict[str, Any] = {"input_size": (int(in_chans), *cfg.input_size[1:])}
    channels = getattr(cfg, "channels", None)
    if channels is not None and len(channels) != in_chans:
        updates.update(channels=None, channel_table=None)
    return dataclasses.replace(cfg, **updates)


def _read_pretrained(cfg: PretrainedCfg, name: str) -> tuple[dict, str]:
    if cfg.state_dict:
        return dict(cfg.state_dict), "<pretrained_cfg state_dict>"
    if cfg.file:
        from geovit.hub import read_checkpoint

        return read_checkpoint(cfg.file), str(cfg.file)
    where = cfg.url or cfg.hf_hub_id
    hint = f" (the config names {where}, but geovit loads weights offline only)" if where else ""
    raise CheckpointError(f"{name}: pretrained=True but no weight file is given{hint}; pass "
                          "pretrained_cfg_overlay=dict(file=PATH) with an official checkpoint or a geovit "
                          ".safetensors file (geovit hosts no weights)")


def _file_config(family: Any, state: Mapping[str, Tensor], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """What the tensors say about the constructor config ({} when the family cannot tell)."""
    try:
        return dict(family.infer_config(state, {"num_heads": kwargs.get("num_heads", 1)}))
    except GeovitError:
        return {}


def _classifier_prefixes(cfg: PretrainedCfg) -> tuple[str, ...]:
    classifier = cfg.classifier
    if not classifier:
        return ()
    return (classifier,) if isinstance(classifier, str) else tuple(classifier)


def _load_pretrained(model: nn.Module, family: Any, family_name: str, state: Mapping[str, Tensor],
                     file_cfg: Mapping[str, Any], cfg: PretrainedCfg, name: str, source: str) -> None:
    from geovit.models import load_tensors

    tensors = dict(family.checkpoint_filter_fn(state, model))
    own = model.state_dict()
    file_classes = file_cfg.get("num_classes")
    if file_classes is not None and file_classes != getattr(model, "num_classes", file_classes):
        # a new head, as timm does when num_classes differs from the weights'
        for prefix in _classifier_prefixes(cfg):
            for key in [k for k in tensors if k.startswith(prefix + ".")]:
                del tensors[key]
            tensors.update({k: v for k, v in own.items() if k.startswith(prefix + ".")})
    try:
        load_tensors(model, tensors, family=family_name)
    except CheckpointError as err:
        config = getattr(model, "config", {})
        differ = {k: file_cfg[k] for k in ARCH_KEYS if k in file_cfg and k in config and file_cfg[k] != config[k]}
        hint = ""
        if differ:
            mine = ", ".join(f"{k}={config[k]!r}" for k in differ)
            theirs = ", ".join(f"{k}={v!r}" for k, v in differ.items())
            hint = (f"; the file holds {theirs} where {name} with these arguments builds {mine}: pass "
                    f"{theirs} (and the head count num_heads, which no tensor stores) to create_model")
        raise CheckpointError(f"checkpoint {source}: {err}{hint}") from None


# ------------------------------------------------------------------------- forward_intermediates
def check_output_fmt(output_fmt: Any) -> str:
    """The ``output_fmt`` string, checked against :data:`OUTPUT_FORMATS`."""
    fmt = str(getattr(output_fmt, "value", output_fmt))
    if fmt not in OUTPUT_FORMATS:
        raise GeovitError(f"output_fmt={output_fmt!r}: expected one of {', '.join(OUTPUT_FORMATS)}")
    return fmt


def take_indices(num_levels: int, indices: Any) -> tuple[list[int], int]:
    """timm's ``feature_take_indices`` with a :class:`GeovitError` for indices out of range."""
    try:
        return feature_take_indices(num_levels, indices)
    except AssertionError as err:
        raise GeovitError(f"indices={indices!r}: {err} (the model has {num_levels} feature levels)") from None


def prune_blocks(model: nn.Module, indices: Any, prune_norm: bool, prune_head: bool) -> list[int]:
    """timm's ``prune_intermediate_layers`` for a ViT with ``blocks``, ``feature_info``, ``norm``.

    Keeps the blocks up to the last of ``indices``; ``prune_norm`` replaces the final norm by an
    identity, ``prune_head`` calls ``reset_classifier(0)``.

    Args:
        model: the ViT (changed in place).
        indices: the levels to keep (int: the last n).
        prune_norm: drop the final norm.
        prune_head: drop the classifier.

    Returns:
        The kept absolute indices.
    """
    take, last = take_indices(len(model.blocks), indices)
    model.blocks = model.blocks[: last + 1]
    model.feature_info = model.feature_info[: last + 1]
    if prune_norm:
        model.norm = nn.Identity()
    if prune_head:
        model.reset_classifier(0)
    return take


def channel_mean_map(tokens: Tensor, num_prefix: int, num_channels: int, h: int, w: int,
                     valid: Tensor | None = None) -> Tensor:
    """Channel-major patch tokens -> one spatial map per location: the mean over the channels present.

    Args:
        tokens: (B, num_prefix + k*h*w, D), the prefix (CLS, memory) first, then channel-major patches.
        num_prefix: number of prefix tokens.
        num_channels: k.
        h: token-grid height.
        w: token-grid width.
        valid: optional (B, k) bool mask of real channels (padded channels are left out of the mean).

    Returns:
        (B, h*w, D).
    """
    b, _, d = tokens.shape
    patches = tokens[:, num_prefix:].reshape(b, num_channels, h * w, d)
    if valid is None:
        return patches.mean(dim=1)
    weight = valid.to(patches.dtype)[:, :, None, None]
    return (patches * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)


def finish_intermediates(intermediates: list[Tensor], prefixes: list[Tensor] | None, final: Callable[[], Tensor],
                         *, h: int, w: int, output_fmt: str, return_prefix_tokens: bool, intermediates_only: bool,
                         output_dict: bool):
    """Format (B, h*w, D) intermediates as timm's ViT ``forward_intermediates`` returns them.

    Args:
        intermediates: per level (B, h*w, D) maps in token order.
        prefixes: per level prefix tokens (B, P, D), or None.
        final: computes the final features (only called when they are returned).
        h: token-grid height.
        w: token-grid width.
        output_fmt: ``"NCHW"`` (B, D, h, w) or ``"NLC"`` (B, h*w, D).
        return_prefix_tokens: pair every intermediate with its prefix tokens.
        intermediates_only: return the list only.
        output_dict: return ``{"image_intermediates", "image_intermediates_prefix", "image_features"}``.

    Returns:
        A list, a ``(final, list)`` tuple or a dict, as timm.
    """
    if output_fmt == "NCHW":
        intermediates = [y.reshape(y.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous() for y in intermediates]
    if output_dict:
        out: dict[str, Any] = {"image_intermediates": intermediates}
        if prefixes is not None and return_prefix_tokens:
            out["image_intermediates_prefix"] = prefixes
        if not intermediates_only:
            out["image_features"] = final()
        return out
    if return_prefix_tokens and prefixes is not None:
        intermediates = list(zip(intermediates, prefixes, strict=True))
    if intermediates_only:
        return intermediates
    return final(), intermediates
