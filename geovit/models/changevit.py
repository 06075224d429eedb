"""ChangeViT: plain vision transformers for bi-temporal change detection.

Zhu, Huang, Huang, Shao, Cheng, "ChangeViT: Unleashing Plain Vision Transformers for Change
Detection", arXiv 2406.12847 (2024). Independent implementation from the paper and the facts in
``specs/changevit.md`` (the reference code is CC BY-NC-SA; none of it is copied here).

Architecture (one shared-weight encoder per time step, the time steps meet in the decoder).
Component names are the paper's (method section); § numbers refer to ``specs/changevit.md``,
which records the reference code's exact behaviour.

* **Plain ViT backbone**: patch 16, no class token, pre-norm blocks (timm ``Block``, LayerNorm eps
  1e-6, no LayerScale), final LayerNorm; all tokens reshaped to the (H/16, W/16) map ``c5``.
  The learnt 16x16 positional table is *always* resampled with DINO's bicubic
  ``scale_factor=((h+0.1)/16, (w+0.1)/16)`` rule, which is not the identity even at 256x256
  (spec §1.1; reproduced by :func:`geovit.models.layers.resample_pos_grid_dino`).
* **Detail-capture module**: ResNet-18 stem + layer1-3, no max-pool -> c2, c3, c4
  (:class:`~geovit.models.changevit_parts.DetailCapture`).
* **Feature injector**: cross-attention from ViT tokens to each detail scale, fused
  (:class:`~geovit.models.changevit_parts.FeatureInjector`).
* **Decoder** (difference modelling): ``[x, y, |x-y|]`` at four levels, top-down, to one
  change logit per pixel (:class:`~geovit.models.changevit_parts.ChangeDecoder`).

Unlike the reference (hard-coded 16x16 token grid), any input whose sides are multiples of 16
works, square or not. Inputs are RGB scaled to [0, 1] then normalised with ImageNet mean/std
(the reference's training recipe, spec §2). ``model(t1, t2)`` -- or ``model(x)`` with one
(B, 2, C, H, W) tensor, torchgeo's change-detection layout -- returns the change probability
(B, num_classes, H, W) (``num_classes=1`` as the paper); ``model.forward_logits`` the logits, and
``logits=True`` makes ``forward`` return logits (what torchgeo's ``ChangeDetectionTask`` and its
``BCEWithLogitsLoss`` expect). Official state dicts (``best_model.pth`` / ``checkpoint.pth.tar``)
load with :func:`load_official`, or through ``timm.create_model(..., pretrained=True,
pretrained_cfg_overlay=dict(file=PATH))``. :meth:`ChangeViT.forward_intermediates` follows timm's
contract (the four bi-temporal difference maps, see there); :meth:`ChangeViT.forward_trace`
returns every named feature of one pass (the conformance data's names).

Variants ``changevit_tiny`` (ViT-T: 192 wide, 6 heads) and ``changevit_small`` (ViT-S: 384
wide, 6 heads) start from random weights: the paper initialises from DeiT-Ti / DINOv2 ViT-S/14
and ImageNet ResNet-18 (spec §1.1-1.2), which cannot be downloaded in geovit's offline setting.
Pass an official checkpoint to :func:`load_official` for trained weights.
"""
from __future__ import annotations

import math
import re
from functools import partial
from typing import Mapping

import torch
from timm.layers import PatchEmbed
from timm.models import generate_default_cfgs
from timm.models.vision_transformer import Block
from torch import nn

from geovit.channels import RGB_CHANNELS
from geovit.errors import CheckpointError, GeovitError
from geovit.models import convert_official, find_state_dict, register_model, strip_wrapper_prefix
from geovit.models._timm import IMAGENET_MEAN, IMAGENET_STD, check_output_fmt, geovit_cfg, take_indices
from geovit.models.changevit_parts import DETAIL_DIMS, ChangeDecoder, DetailCapture, FeatureInjector
from geovit.models.layers import resample_pos_grid_dino, trunc_normal_init

__all__ = ["ChangeViT", "PlainViT", "VARIANTS", "build", "checkpoint_filter_fn", "infer_config", "load_official",
           "changevit_tiny", "changevit_small"]


class PlainViT(nn.Module):
    """Plain ViT without class token; returns the final-LayerNorm tokens as a (B, C, h, w) map."""

    def __init__(self, img_size: int = 256, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 192, depth: int = 12, num_heads: int = 6, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.0):
        super().__init__()
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, strict_img_size=False)
        grid = img_size // patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, embed_dim))
        norm = partial(nn.LayerNorm, eps=1e-6)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linspace(0, rate, depth)
        self.blocks = nn.Sequential(*(Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm,
                                            drop_path=dpr[i]) for i in range(depth)))
        self.norm = norm(embed_dim)

    def interpolate_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """Positional table actually added for an (h, w) token grid: (1, h*w, C)."""
        return resample_pos_grid_dino(self.pos_embed, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> final-LayerNorm token map (B, C, H/p, W/p)."""
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self.patch_embed(x) + self.interpolate_pos_embed(h, w).to(x.dtype)
        tokens = self.norm(self.blocks(tokens))
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w)


class ChangeViT(nn.Module):
    """Siamese plain ViT + detail capture + feature injector + difference decoder.

    ``model(t1, t2)`` or ``model(x)`` with x (B, 2, C, H, W) -> change probability
    (B, num_classes, H, W) (t1 = before, t2 = after, both normalised float (B, in_chans, H, W),
    H and W multiples of ``patch_size``); with ``logits=True`` the logits instead.
    ``num_classes`` is the number of output maps (1: binary change, as the paper);
    ``drop_path_rate`` is stochastic depth over the ViT blocks (training only, 0 as the reference).
    """

    def __init__(self, embed_dim: int = 192, depth: int = 12, num_heads: int = 6, *,
                 img_size: int = 256, patch_size: int = 16, in_chans: int = 3, mlp_ratio: float = 4.0,
                 injector_heads: int = 8, decoder_decay: int = 4, detail_dropout: float = 0.01,
                 num_classes: int = 1, logits: bool = False, drop_path_rate: float = 0.0):
        super().__init__()
        if num_classes < 1:
            raise GeovitError(f"ChangeViT num_classes={num_classes}: expected at least 1 output map")
        if isinstance(img_size, (list, tuple)):  # (H, W) as frameworks pass it; the stored grid is square
            if len(set(int(v) for v in img_size)) != 1:
                raise GeovitError(f"ChangeViT img_size={img_size}: the stored positional grid is square")
            img_size = int(img_size[0])
        if patch_size != 16:
            raise GeovitError(f"ChangeViT patch_size={patch_size}: the decoder upsamples c5 to the "
                              "1/8 detail map, so only patch_size=16 is supported")
        if embed_dim % num_heads or embed_dim % injector_heads:
            raise GeovitError(f"ChangeViT embed_dim={embed_dim} must be divisible by num_heads={num_heads} "
                              f"and injector_heads={injector_heads}")
        self.config = dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads, img_size=img_size,
                           patch_size=patch_size, in_chans=in_chans, mlp_ratio=mlp_ratio,
                           injector_heads=injector_heads, decoder_decay=decoder_decay,
                           detail_dropout=detail_dropout, num_classes=num_classes, logits=logits,
                           drop_path_rate=drop_path_rate)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.logits = logits
        self.vit = PlainViT(img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, drop_path_rate)
        self.detail_capture = DetailCapture(in_chans, detail_dropout)
        self.feature_injector = FeatureInjector(embed_dim, num_heads=injector_heads)
        self.decoder = ChangeDecoder(embed_dim, decay=decoder_decay, num_classes=num_classes)
        dims = (*DETAIL_DIMS, embed_dim)
        self.feature_info = [dict(module=f"decoder.difference.{i}", num_chs=d, reduction=2 ** (i + 1))
                             for i, d in enumerate(dims)]
        self._init_weights()

    def _init_weights(self) -> None:
        """Spec §1.6: trunc-normal(0.02) ViT linears and pos table; Kaiming (fan_in, ReLU) convs
        in injector fuse and decoder; transposed convs and injector linears keep PyTorch defaults."""
        self.vit.apply(trunc_normal_init)
        nn.init.trunc_normal_(self.vit.pos_embed, std=0.02)
        convs = [self.feature_injector.fuse, *(m for m in self.decoder.modules() if type(m) is nn.Conv2d)]
        for conv in convs:
            nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")

    # ----------------------------------------------------------------------------- inputs
    def split_pair(self, t1, t2=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(t1, t2)`` of the inputs: two (B, C, H, W) tensors, or one (B, 2, C, H, W) tensor as t1.

        Raises:
            GeovitError: one input that is not a (B, 2, C, H, W) tensor.
        """
        if t2 is not None:
            return t1, t2
        if isinstance(t1, (tuple, list)) and len(t1) == 2:
            return t1[0], t1[1]
        if not isinstance(t1, torch.Tensor) or t1.ndim != 5 or t1.shape[1] != 2:
            shape = tuple(t1.shape) if isinstance(t1, torch.Tensor) else type(t1).__name__
            raise GeovitError(f"ChangeViT input: expected t1 and t2, each (B, {self.in_chans}, H, W), or one "
                              f"(B, 2, {self.in_chans}, H, W) tensor (torchgeo's change layout), got {shape}")
        return t1[:, 0], t1[:, 1]

    def check_inputs(self, t1: torch.Tensor, t2: torch.Tensor) -> None:
        """Raise :class:`GeovitError` unless t1, t2 are equal-shape (B, in_chans, H, W) float
        tensors with H and W positive multiples of the patch size."""
        p = self.patch_size
        for name, x in (("t1", t1), ("t2", t2)):
            if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != self.in_chans:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise GeovitError(f"ChangeViT input {name}: expected a (B, {self.in_chans}, H, W) tensor, got {shape}")
            if not x.is_floating_point():
                raise GeovitError(f"ChangeViT input {name}: expected a normalised float tensor, got {x.dtype}")
            h, w = x.shape[-2:]
            if h == 0 or w == 0 or h % p or w % p:
                raise GeovitError(f"ChangeViT input {name}: height and width must be positive multiples of {p}, "
                                  f"got {h}x{w}; pad or crop to {max(p, math.ceil(h / p) * p)}x"
                                  f"{max(p, math.ceil(w / p) * p)}")
        if t1.shape != t2.shape:
            raise GeovitError(f"ChangeViT inputs t1 {tuple(t1.shape)} and t2 {tuple(t2.shape)} must have the same shape")

    # ----------------------------------------------------------------------------- forward
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One time step (shared weights): ``(c2, c3, c4, vit_c5, injected_c5)``."""
        c2, c3, c4 = self.detail_capture(x)
        c5 = self.vit(x)
        return c2, c3, c4, c5, self.feature_injector(c5, (c2, c3, c4))

    def _encode_pair(self, t1: torch.Tensor, t2: torch.Tensor):
        if self.training:  # separate passes: BatchNorm statistics per time step, as the reference
            return self.encode(t1), self.encode(t2)
        both = self.encode(torch.cat([t1, t2], dim=0))  # eval: one batched pass, same result
        return tuple(f[: t1.shape[0]] for f in both), tuple(f[t1.shape[0]:] for f in both)

    def _decode(self, f1, f2) -> torch.Tensor:
        """Decoder on (c2, c3, c4, injected c5) of both time steps (the raw ViT map is skipped)."""
        return self.decoder((*f1[:3], f1[4]), (*f2[:3], f2[4]))

    def forward_trace(self, t1: torch.Tensor, t2: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """All features of one forward pass, named as in the conformance data.

        Keys: ``pos_embed_interp`` (1, h*w, C); for ``s`` in ``t1, t2``: ``c2_s`` (B, 64, H/2, W/2),
        ``c3_s`` (B, 128, H/4, W/4), ``c4_s`` (B, 256, H/8, W/8), ``vit_s`` (B, C, H/16, W/16),
        ``inj_s`` (B, C, H/16, W/16); ``logits`` and ``prob`` (B, num_classes, H, W).
        """
        t1, t2 = self.split_pair(t1, t2)
        self.check_inputs(t1, t2)
        f1, f2 = self._encode_pair(t1, t2)
        out = {"pos_embed_interp": self.vit.interpolate_pos_embed(t1.shape[-2] // self.patch_size,
                                                                  t1.shape[-1] // self.patch_size)}
        for tag, feats in (("t1", f1), ("t2", f2)):
            out.update({f"{name}_{tag}": f for name, f in zip(("c2", "c3", "c4", "vit", "inj"), feats)})
        out["logits"] = self._decode(f1, f2)
        out["prob"] = out["logits"].sigmoid()
        return out

    def forward_intermediates(self, x, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False,
                              output_dict: bool = False):
        """The bi-temporal feature pyramid, with timm's signature and return values.

        Level l (0-3) is the decoder's difference map ``difference[l]([x_l, y_l, |x_l - y_l|])`` of the
        two time steps' features at stride 2, 4, 8 (detail capture c2-c4) and 16 (injected ViT map
        c5): (B, 64, H/2, W/2), (B, 128, H/4, W/4), (B, 256, H/8, W/8), (B, embed_dim, H/16, W/16),
        the maps the decoder fuses top-down (``feature_info`` lists them). They are what a
        segmentation decoder of another framework (TerraTorch) needs from a change backbone.

        Args:
            x: (B, 2, C, H, W) (torchgeo's layout) or a ``(t1, t2)`` pair.
            indices: levels to return: the last n (int), those indices (sequence), or all (None).
            norm: accepted for timm's signature; the difference maps have no final norm (no effect).
            stop_early: skip the ViT branch when no requested level needs it (levels 0-2 only).
            output_fmt: ``"NCHW"`` or ``"NLC"`` (B, h*w, C_l).
            intermediates_only: return only the list.
            output_dict: return ``{"image_intermediates", "image_features"}``.

        Returns:
            The maps, or ``(logits (B, num_classes, H, W), maps)``.

        Raises:
            GeovitError: bad inputs, indices or ``output_fmt``.
        """
        fmt = check_output_fmt(output_fmt)
        take, last = take_indices(len(self.feature_info), indices)
        t1, t2 = self.split_pair(x)
        self.check_inputs(t1, t2)
        if stop_early and last < 3 and intermediates_only:
            both = self.detail_capture(torch.cat([t1, t2], dim=0))
            f1, f2 = tuple(f[: t1.shape[0]] for f in both), tuple(f[t1.shape[0]:] for f in both)
        else:
            e1, e2 = self._encode_pair(t1, t2)
            f1, f2 = (*e1[:3], e1[4]), (*e2[:3], e2[4])
        wanted = take if intermediates_only else range(len(self.feature_info))
        diffs = {i: self.decoder.difference_map(i, f1[i], f2[i]) for i in wanted}
        maps = [diffs[i] for i in take]
        if fmt == "NLC":
            maps = [m.flatten(2).transpose(1, 2) for m in maps]

        def final() -> torch.Tensor:
            return self.decoder.fuse(*(diffs[i] for i in range(4)))

        if output_dict:
            out = {"image_intermediates": maps}
            if not intermediates_only:
                out["image_features"] = final()
            return out
        return maps if intermediates_only else (final(), maps)

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Keep the parts ``forward_intermediates`` needs for ``indices`` (a feature backbone).

        ``prune_head`` removes the decoder's top-down path and change head (``up_c*``, ``head``), which
        the difference maps do not use; the pruned model serves ``forward_intermediates`` only.

        Args:
            indices: the levels to keep (int: the last n).
            prune_norm: accepted for timm's signature (nothing to prune).
            prune_head: remove the decoder's upsampling path and head.

        Returns:
            The kept absolute indices.
        """
        take, _ = take_indices(len(self.feature_info), indices)
        if prune_head:
            for name in ("up_c5", "up_c4", "up_c3", "head"):
                if hasattr(self.decoder, name):
                    delattr(self.decoder, name)
        return take

    def get_classifier(self) -> nn.Module:
        """The final 3x3 convolution that makes the ``num_classes`` change maps."""
        return self.decoder.head[1]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new final convolution for ``num_classes`` output maps (Kaiming init, as the decoder's convs).

        Args:
            num_classes: number of output maps (at least 1).
            global_pool: accepted for timm's signature (a dense model has no pooling); must be None / "".

        Raises:
            GeovitError: ``num_classes < 1`` or a pooling.
        """
        if num_classes < 1 or global_pool not in (None, ""):
            raise GeovitError(f"ChangeViT reset_classifier({num_classes}, {global_pool!r}): expected at least "
                              "1 output map and no pooling")
        old = self.decoder.head[1]
        conv = nn.Conv2d(old.in_channels, num_classes, 3, padding=1, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        self.decoder.head[1] = conv
        self.num_classes = self.config["num_classes"] = num_classes

    def forward_logits(self, t1: torch.Tensor, t2: torch.Tensor | None = None) -> torch.Tensor:
        """Change logits (B, num_classes, H, W) at full input resolution (inputs as :meth:`forward`)."""
        t1, t2 = self.split_pair(t1, t2)
        self.check_inputs(t1, t2)
        return self._decode(*self._encode_pair(t1, t2))

    def forward(self, t1: torch.Tensor, t2: torch.Tensor | None = None) -> torch.Tensor:
        """Change probability (B, num_classes, H, W) = sigmoid of :meth:`forward_logits` (the logits
        themselves when built with ``logits=True``).

        Args:
            t1: before, (B, C, H, W); or both time steps as one (B, 2, C, H, W) tensor.
            t2: after, (B, C, H, W); None when ``t1`` holds both.

        Returns:
            (B, num_classes, H, W).
        """
        out = self.forward_logits(t1, t2)
        return out if self.logits else out.sigmoid()


# --------------------------------------------------------------------------------- variants
VARIANTS: dict[str, dict] = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=6),   # ChangeViT-T (DeiT-Ti width, 6 heads)
    "small": dict(embed_dim=384, depth=12, num_heads=6),  # ChangeViT-S (DINOv2 ViT-S width)
}


def build(config: Mapping) -> ChangeViT:
    """Rebuild a model from its ``model.config`` (constructor keyword arguments).

    Args:
        config: constructor keywords.

    Returns:
        The model (random weights).

    Raises:
        GeovitError: unknown keywords or invalid settings.
    """
    try:
        return ChangeViT(**dict(config))
    except TypeError as err:
        raise GeovitError(f"ChangeViT config {dict(config)}: {err}") from None


#: timm pretrained configs: RGB pairs normalised with ImageNet statistics, 256 px, 1 change map.
#: No weights are hosted: pass ``pretrained_cfg_overlay=dict(file=PATH)`` (``best_model.pth`` ...).
default_cfgs = generate_default_cfgs({
    f"changevit_{size}": geovit_cfg(
        family="changevit", input_size=(3, 256, 256), num_classes=1, classifier="decoder.head.1",
        mean=IMAGENET_MEAN, std=IMAGENET_STD, channels=RGB_CHANNELS, channel_table="rgb",
        first_conv=("vit.patch_embed.proj", "detail_capture.conv1"), license="cc-by-nc-sa-4.0",
        paper_ids="arXiv:2406.12847", origin_url="https://github.com/zhuduowang/ChangeViT",
        paper_name="ChangeViT: Unleashing Plain Vision Transformers for Change Detection")
    for size in VARIANTS
})


@register_model
def changevit_tiny(**kwargs) -> ChangeViT:
    """ChangeViT-T (11.7M used parameters), random init (no pretrained download offline)."""
    return build({**VARIANTS["tiny"], **kwargs})


@register_model
def changevit_small(**kwargs) -> ChangeViT:
    """ChangeViT-S (32.2M used parameters), random init (no pretrained download offline)."""
    return build({**VARIANTS["small"], **kwargs})


# --------------------------------------------------------------------------- official weights
#: official key prefix -> geovit key prefix (first match wins).
_KEY_MAP: tuple[tuple[str, str], ...] = (
    ("encoder.vit.", "vit."),
    ("encoder.resnet.", "detail_capture."),
    ("decoder.structure_enhance.", "feature_injector."),
    ("decoder.mlp.", "decoder.difference."),
    ("decoder.classfier.", "decoder.head."),
    ("decoder.up_c", "decoder.up_c"),
)
#: official keys that the reference stores but never uses in its forward pass.
_UNUSED = re.compile(r"^(encoder\.vit\.mask_token|encoder\.resnet\.(layer4|fc)\..*)$")
_ANCHOR = "encoder.vit.pos_embed"


def checkpoint_filter_fn(state_dict: Mapping, model: ChangeViT | None = None) -> dict[str, torch.Tensor]:
    """Official ChangeViT file -> geovit keys (unused ``mask_token``/``layer4``/``fc`` dropped).

    Accepts ``best_model.pth`` (flat), ``checkpoint.pth.tar`` (nested under ``state_dict``, with
    wrapper prefixes such as ``module.``) and geovit state dicts (passed unchanged).

    Args:
        state_dict: the file's content.
        model: accepted for the family contract; the mapping does not depend on it.

    Returns:
        geovit-keyed tensors.

    Raises:
        CheckpointError: not a ChangeViT checkpoint, or a key of neither layout (named).
    """
    tensors = find_state_dict(state_dict)
    if "vit.pos_embed" in tensors:  # already geovit keys
        for key in tensors:
            if not key.startswith(tuple(new for _, new in _KEY_MAP)):
                raise CheckpointError(f"unexpected key {key!r}: not part of geovit's ChangeViT layout")
        return tensors
    layout = " (expected the official encoder.vit.* / encoder.resnet.* / decoder.* layout)"
    state = strip_wrapper_prefix(tensors, _ANCHOR, family="ChangeViT", layout=layout)
    return {_geovit_key(k): v for k, v in state.items() if not _UNUSED.match(k)}


def _geovit_key(key: str) -> str:
    for old, new in _KEY_MAP:
        if key.startswith(old):
            return new + key[len(old):]
    raise CheckpointError(f"unexpected key {key!r}: not part of the official ChangeViT layout")


def _official_key(key: str) -> str:
    """Inverse of :func:`_geovit_key`, for error messages in the user's key names."""
    for old, new in _KEY_MAP:
        if key.startswith(new):
            return old + key[len(new):]
    return key


def infer_config(state_dict: Mapping[str, torch.Tensor], config: Mapping | None = None) -> dict:
    """Constructor config for a geovit-keyed state dict; explicit ``config`` entries must agree.

    ``embed_dim``, ``depth``, ``img_size``, ``in_chans`` come from tensor shapes; ``num_heads``
    cannot be read off the weights and defaults to 6 (both official variants use 6).

    Args:
        state_dict: output of :func:`checkpoint_filter_fn`.
        config: constructor keywords to use (or check against the tensors).

    Returns:
        Constructor keywords.

    Raises:
        CheckpointError: a required tensor is missing or the config contradicts the tensors.
    """
    state, config = state_dict, dict(config or {})
    try:
        pos, patch = state["vit.pos_embed"], state["vit.patch_embed.proj.weight"]
    except KeyError as err:
        raise CheckpointError(f"missing key {_official_key(err.args[0])!r}") from None
    grid = math.isqrt(pos.shape[1]) if pos.ndim == 3 else 0
    if grid == 0 or grid * grid != pos.shape[1]:
        raise CheckpointError(f"key 'encoder.vit.pos_embed': shape {tuple(pos.shape)}, expected (1, g*g, C) "
                              "for a square g x g patch grid without class token")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"vit\.blocks\.(\d+)\.", k))}
    inferred = dict(embed_dim=int(pos.shape[-1]), depth=max(blocks) + 1 if blocks else 0,
                    img_size=grid * int(patch.shape[-1]), patch_size=int(patch.shape[-1]),
                    in_chans=int(patch.shape[1]))
    if "decoder.head.1.weight" in state:
        inferred["num_classes"] = int(state["decoder.head.1.weight"].shape[0])
    for key, value in inferred.items():
        if key in config and config[key] != value:
            raise CheckpointError(f"config {key}={config[key]!r} but the checkpoint's tensors imply {value!r}")
    return {"num_heads": 6, **config, **inferred}


def load_official(state_dict: Mapping, config: Mapping | None = None) -> ChangeViT:
    """Build a :class:`ChangeViT` from an official checkpoint, in eval mode.

    Args:
        state_dict: ``best_model.pth`` state dict or a ``checkpoint.pth.tar`` dict
            (``{"state_dict": ..., "epoch": ...}``).
        config: may give ``embed_dim, depth, num_heads`` (and other constructor kwargs); omitted
            ones are inferred from the tensors where possible (``num_heads`` defaults to 6).

    Returns:
        The loaded model.

    Raises:
        CheckpointError: a foreign file, a contradicting config, or tensors that do not fit
            (keys named as in the official file).
    """
    return convert_official(state_dict, config, filter_fn=checkpoint_filter_fn, infer_fn=infer_config,
                            build_fn=build, family="ChangeViT", describe=_official_key)
