"""ChannelViT with Hierarchical Channel Sampling (HCS).

Bao, Sivanandan, Karaletsos, "Channel Vision Transformers: An Image Is Worth 1 x 16 x 16 Words",
ICLR 2024 (arXiv 2309.16108). Written from the paper and the behaviour documented in
``specs/channelvit.md`` (the official code is CC-BY-NC and was read for facts only).

* §3.1 — every channel of the input is cut into its own patches by **one shared projection**
  ("tied image filters"); a learnable **channel embedding** is added to each channel's tokens and the
  **spatial positional table is shared** (tiled) across channels. The sequence is channel-major:
  ``[CLS, channel₁ patches…, channel₂ patches…, …]`` in the order the channels are passed.
* §3.2 — **Hierarchical Channel Sampling**: during training draw m ~ U{1..C}, then a uniformly
  random m-subset of the channels, and keep only those (per batch).
* Inference with any subset of channels: pass only the k available planes and their absolute ids.

Conformance details the released checkpoints depend on (spec §2.2): the positional grid is
resampled DINO-style (bicubic with scale factor (h+0.1)/g) for every multi-channel input, even at
the native resolution; only a token count equal to the stored table with a square input uses the
raw table.
"""
from __future__ import annotations

import math
import random
from functools import partial
from typing import Any, Mapping

import torch
from timm.models import generate_default_cfgs
from timm.models.vision_transformer import Block
from torch import nn

from geovit.channels import JUMPCP_CHANNELS, RGB_CHANNELS, SO2SAT_BANDS
from geovit.errors import CheckpointError, GeovitError
from geovit.models import convert_official, find_state_dict, register_model, strip_wrapper_prefix
from geovit.models._timm import (
    IMAGENET_MEAN, IMAGENET_STD, channel_mean_map, check_output_fmt, finish_intermediates, geovit_cfg, prune_blocks,
    take_indices,
)
from geovit.models.layers import (
    BoundChannelsMixin,
    VIT_HEADS_BY_WIDTH, VIT_SIZES, PatchEmbedPerChannel, channel_table_from_5d, tile_pos_embed, trunc_normal_init,
)
from geovit.models.channel_sampling import hcs_draw

__all__ = ["ChannelViT", "build", "checkpoint_filter_fn", "infer_config", "load_official"]


class ChannelViT(BoundChannelsMixin, nn.Module):
    """Channel Vision Transformer (paper §3) with optional Hierarchical Channel Sampling (§3.2).

    Args follow the official constructor: ``img_size`` sets the stored positional grid
    (img_size // patch_size per side; the released checkpoints use 224), ``in_chans`` the size of the
    channel-embedding table C. ``hcs`` (official ``enable_sample``) turns HCS on in training mode;
    ``hcs_seed`` makes the draws deterministic (None: Python's global ``random``, as the official code).

    Call ``model(x, channels=ids)`` with x (B, k, H, W) holding only the k channels present and ids
    (B, k) or (k,) their absolute indices. Returns logits when ``num_classes > 0``, else the (B, D)
    CLS feature. ``default_channels`` (band names of a :mod:`geovit.channels` table, a preset such as
    ``"sentinel2"``, or ids) binds the input bands, so that ``model(x)`` means
    ``model(x, channels=those ids)`` -- what frameworks that only call ``model(x)`` (torchgeo,
    TerraTorch, timm's feature wrappers) need; see :meth:`bind_channels`. Without a binding,
    ``model(x)`` needs all ``in_chans`` channels.

    The timm model API is complete: ``forward_features`` / ``forward_head`` / ``forward_intermediates``
    / ``prune_intermediate_layers`` / ``reset_classifier`` / ``feature_info`` (one level per block).
    """

    family = "channelvit"

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 0,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        hcs: bool = True,
        hcs_seed: int | None = None,
        default_channels: Any = None,
    ):
        super().__init__()
        if isinstance(img_size, (list, tuple)):  # official configs pass [224]
            if len(set(int(v) for v in img_size)) != 1:
                raise GeovitError(f"img_size={img_size}: ChannelViT's positional grid is square")
            img_size = int(img_size[0])
        self.config: dict[str, Any] = dict(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
            embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
            drop_rate=drop_rate, attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate,
            hcs=hcs, hcs_seed=hcs_seed,
        )
        self.patch_size, self.in_chans, self.num_classes = patch_size, in_chans, num_classes
        self.embed_dim = self.num_features = embed_dim
        self.hcs = hcs
        self.hcs_rng = random.Random(hcs_seed) if hcs_seed is not None else random
        self.last_hcs_draw: list[int] | None = None

        self.patch_embed = PatchEmbedPerChannel(patch_size, in_chans, embed_dim, channel_init="random")
        grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=drop_rate,
                  attn_drop=attn_drop_rate, drop_path=dpr[i], norm_layer=norm_layer)
            for i in range(depth)
        ])
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=patch_size) for i in range(depth)]
        self._init_weights()
        self.bind_channels(default_channels)

    def _init_weights(self) -> None:
        for p in (self.cls_token, self.pos_embed):
            nn.init.trunc_normal_(p, std=0.02, a=-2.0, b=2.0)
        self.apply(trunc_normal_init)

    # -- pieces ----------------------------------------------------------------------------
    def sample_channels(self, k: int) -> list[int]:
        """HCS draw (§3.2): m ~ U{1..k}, then a random m-combination in random order (positions)."""
        return hcs_draw(k, self.hcs_rng)

    def pos_embed_for(self, k: int, h: int, w: int, height: int, width: int) -> torch.Tensor:
        """The positional embedding added to a sequence of 1 + k*h*w tokens (spec §2.2)."""
        stored = self.pos_embed.shape[1] - 1
        if k * h * w == stored and height == width:
            return self.pos_embed  # the official raw-table shortcut (untiled)
        return tile_pos_embed(self.pos_embed, 1, k, h, w)

    def prepare_tokens(self, x: torch.Tensor, channels: torch.Tensor | None = None) -> torch.Tensor:
        """Input tokens (B, 1 + k'·N, D): CLS, then channel-major patch tokens, with positions.

        Args:
            x: (B, k, H, W), H and W multiples of the patch size.
            channels: absolute ids (k,) or (B, k); default ``0..k-1``.

        Returns:
            The token sequence; in training mode with HCS only the drawn k' channels.

        Raises:
            GeovitError: bad shape or channel ids.
        """
        if x.ndim != 4:
            raise GeovitError(f"input must be (B, k, H, W); got shape {tuple(x.shape)}")
        b, k, height, width = x.shape
        p = self.patch_size
        if height % p or width % p:
            raise GeovitError(f"input size {height}x{width} is not a multiple of the patch size {p}")
        ids = self.patch_embed.resolve_channels(x, channels).ids
        if self.training and self.hcs:
            sel = self.sample_channels(k)
            self.last_hcs_draw = sel
            index = torch.as_tensor(sel, device=x.device)
            x, ids, k = x.index_select(1, index), ids.index_select(1, index), len(sel)
        tokens = self.patch_embed(x, ids).flatten(1, 2)
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        tokens = tokens + self.pos_embed_for(k, height // p, width // p, height, width)
        return self.pos_drop(tokens)

    # -- timm-style API --------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor, channels: torch.Tensor | None = None) -> torch.Tensor:
        """All tokens after the final norm: (B, 1 + k*N, D), CLS first, channel-major."""
        return self.norm(self.blocks(self.prepare_tokens(x, channels)))

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """CLS token of ``tokens`` through the head (or the CLS feature with ``pre_logits``)."""
        cls = tokens[:, 0]
        return cls if pre_logits else self.head(cls)

    def get_classifier(self) -> nn.Module:
        """The classifier head (``nn.Identity`` without classes)."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head by a new one for ``num_classes`` (0: no head); the CLS token is the pooling.

        Args:
            num_classes: number of classes.
            global_pool: accepted for timm's signature; only ``None``, ``""`` or ``"token"`` (the CLS token).

        Raises:
            GeovitError: another pooling.
        """
        if global_pool not in (None, "", "token"):
            raise GeovitError(f"global_pool={global_pool!r}: ChannelViT pools with its CLS token ('token') only")
        self.num_classes = self.config["num_classes"] = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            trunc_normal_init(self.head)

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None,
                              return_prefix_tokens: bool = False, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False, output_dict: bool = False,
                              *, channels: torch.Tensor | None = None):
        """Block outputs as spatial maps, with timm's signature and return values.

        The k channels of the input each have their own h x w patch tokens. Every intermediate is
        reduced to one map by the **mean over the channels present**: it keeps the channel width D
        and the scale of the tokens whatever k is, does not depend on the order the bands are
        passed in, and so gives a decoder the same (B, D, h, w) contract for any band subset
        (a concatenation would change width with k, a sum would change scale). In training mode
        with HCS only the sampled channels are present and averaged.

        Args:
            x: (B, k, H, W).
            indices: blocks to return: the last n (int), those indices (sequence), or all (None).
            return_prefix_tokens: pair each map with the (B, 1, D) CLS token of that block.
            norm: apply the final LayerNorm to every intermediate (before the channel mean).
            stop_early: do not run the blocks after the last requested one.
            output_fmt: ``"NCHW"`` (B, D, H/p, W/p) or ``"NLC"`` (B, H/p * W/p, D).
            intermediates_only: return only the list of intermediates.
            output_dict: return a dict (``image_intermediates``, ``image_intermediates_prefix``,
                ``image_features``) as timm's ViT.
            channels: absolute ids of the k channels (default: the bound ones, see :meth:`bind_channels`).

        Returns:
            The intermediates, or ``(final tokens (B, 1 + k*N, D) after the norm, intermediates)``.

        Raises:
            GeovitError: bad input, channel ids, indices or ``output_fmt``.
        """
        fmt = check_output_fmt(output_fmt)
        take, last = take_indices(len(self.blocks), indices)
        tokens = self.prepare_tokens(x, channels)
        p = self.patch_size
        h, w = x.shape[-2] // p, x.shape[-1] // p
        k = (tokens.shape[1] - 1) // (h * w)
        blocks = self.blocks[: last + 1] if stop_early else self.blocks
        maps, prefixes = [], []
        for i, blk in enumerate(blocks):
            tokens = blk(tokens)
            if i in take:
                y = self.norm(tokens) if norm else tokens
                maps.append(channel_mean_map(y, 1, k, h, w))
                prefixes.append(y[:, :1])
        return finish_intermediates(maps, prefixes, lambda: self.norm(tokens), h=h, w=w, output_fmt=fmt,
                                    return_prefix_tokens=return_prefix_tokens,
                                    intermediates_only=intermediates_only, output_dict=output_dict)

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the blocks after the last of ``indices`` (and the norm / head), as timm's ViT.

        Args:
            indices: the levels to keep (int: the last n).
            prune_norm: replace the final norm by an identity.
            prune_head: remove the classifier.

        Returns:
            The kept absolute indices.
        """
        return prune_blocks(self, indices, prune_norm, prune_head)

    def forward(self, x: torch.Tensor, channels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, num_classes), or the (B, D) CLS feature when ``num_classes == 0``.

        Args:
            x: (B, k, H, W) holding the k channels present.
            channels: their absolute ids, (k,) or (B, k); default ``0..k-1``.

        Returns:
            Logits or CLS feature.
        """
        return self.forward_head(self.forward_features(x, channels))

    def get_intermediate_layers(self, x: torch.Tensor, channels: torch.Tensor | None = None, n: int = 1) -> list[torch.Tensor]:
        """Tokens of the last ``n`` blocks, each through the final norm (DINO linear probing)."""
        tokens = self.prepare_tokens(x, channels)
        outs = []
        for i, blk in enumerate(self.blocks):
            tokens = blk(tokens)
            if i >= len(self.blocks) - n:
                outs.append(self.norm(tokens))
        return outs


# -- registry -------------------------------------------------------------------------------------
_RELEASE = "https://github.com/insitro/ChannelViT/releases/tag/v1.0.0"
_SO2SAT_RANDOM_STATS, _SO2SAT_CITY_STATS = "3_random", "2"


def _cfg(**kwargs) -> Any:
    """timm pretrained config of a ChannelViT variant (the channel table and the data statistics)."""
    base = dict(family="channelvit", input_size=(3, 224, 224), num_classes=0, classifier="head",
                channels=RGB_CHANNELS, channel_table="rgb", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                license="cc-by-nc-4.0", paper_ids="arXiv:2309.16108",
                paper_name="Channel Vision Transformers: An Image Is Worth 1 x 16 x 16 Words")
    return geovit_cfg(**{**base, **kwargs})


def _release_cfgs() -> dict[str, Any]:
    """Data tags of every variant (``.so2sat``: the 18 bands with So2Sat v2 statistics, ``.jumpcp``: the
    8 JUMP-CP channels), then the released checkpoints' data (GitHub release v1.0.0; the files hold no
    classifier) as tags of the released variants."""
    from geovit.data.jumpcp import JUMPCP_MEAN, JUMPCP_STD
    from geovit.data.so2sat import SO2SAT_STATS

    def so2sat(version: str, split: str) -> Any:
        mean, std = SO2SAT_STATS[version]
        return _cfg(input_size=(18, 32, 32), channels=SO2SAT_BANDS, channel_table="so2sat", mean=mean, std=std,
                    origin_url=_RELEASE, notes=(f"so2sat_channelvit_small_p8_with_hcs_{split}_split_supervised.pth",))

    def jumpcp(n: int, file: str) -> Any:
        return _cfg(input_size=(n, 224, 224), channels=JUMPCP_CHANNELS[:n], channel_table="jumpcp",
                    mean=JUMPCP_MEAN[:n], std=JUMPCP_STD[:n], origin_url=_RELEASE, notes=(file,))

    data = {}
    for size in VIT_SIZES:
        for patch in (8, 16):
            mean, std = SO2SAT_STATS[_SO2SAT_CITY_STATS]
            data[f"channelvit_{size}_patch{patch}.so2sat"] = _cfg(
                input_size=(18, 32, 32), channels=SO2SAT_BANDS, channel_table="so2sat", mean=mean, std=std)
            data[f"channelvit_{size}_patch{patch}.jumpcp"] = _cfg(
                input_size=(8, 224, 224), channels=JUMPCP_CHANNELS, channel_table="jumpcp", mean=JUMPCP_MEAN,
                std=JUMPCP_STD)
    return {
        **data,
        "channelvit_small_patch8.so2sat_random_hcs": so2sat(_SO2SAT_RANDOM_STATS, "random"),
        "channelvit_small_patch8.so2sat_hard_hcs": so2sat(_SO2SAT_CITY_STATS, "hard"),
        "channelvit_small_patch8.jumpcp_cellpaint_hcs": jumpcp(
            5, "cpjump_cellpaint_channelvit_small_p8_with_hcs_supervised.pth"),
        "channelvit_small_patch8.jumpcp_cellpaint_bf_hcs": jumpcp(
            8, "cpjump_cellpaint_bf_channelvit_small_p8_with_hcs_supervised.pth"),
        "channelvit_small_patch16.imagenet_hcs": _cfg(
            origin_url=_RELEASE, notes=("imagenet_channelvit_small_p16_with_hcs_supervised.pth",)),
    }


#: timm pretrained configs: one untagged (RGB, ImageNet statistics) per variant, data tags and the
#: official releases (``timm.create_model("channelvit_tiny_patch8.so2sat")`` builds the 18-band model;
#: ``channelvit_small_patch8.so2sat_random_hcs`` describes the released So2Sat file). No weights are
#: hosted: pass ``pretrained_cfg_overlay=dict(file=PATH)``.
default_cfgs = generate_default_cfgs({
    **{f"channelvit_{size}_patch{patch}": _cfg() for size in VIT_SIZES for patch in (8, 16)},
    **_release_cfgs(),
})


def _variant(size: str, patch: int, /, **kwargs) -> ChannelViT:
    dim, heads = VIT_SIZES[size]
    cfg = dict(patch_size=patch, embed_dim=dim, depth=12, num_heads=heads, mlp_ratio=4.0, qkv_bias=True)
    cfg.update(kwargs)
    return ChannelViT(**cfg)


@register_model
def channelvit_tiny_patch8(**kwargs) -> ChannelViT:
    """ChannelViT-T/8 (192 wide, 3 heads, depth 12); keyword arguments override."""
    return _variant("tiny", 8, **kwargs)


@register_model
def channelvit_tiny_patch16(**kwargs) -> ChannelViT:
    """ChannelViT-T/16 (192 wide, 3 heads, depth 12); keyword arguments override."""
    return _variant("tiny", 16, **kwargs)


@register_model
def channelvit_small_patch8(**kwargs) -> ChannelViT:
    """ChannelViT-S/8 (384 wide, 6 heads; the So2Sat / JUMP-CP releases); keyword arguments override."""
    return _variant("small", 8, **kwargs)


@register_model
def channelvit_small_patch16(**kwargs) -> ChannelViT:
    """ChannelViT-S/16 (384 wide, 6 heads; the ImageNet releases); keyword arguments override."""
    return _variant("small", 16, **kwargs)


@register_model
def channelvit_base_patch8(**kwargs) -> ChannelViT:
    """ChannelViT-B/8 (768 wide, 12 heads, depth 12); keyword arguments override."""
    return _variant("base", 8, **kwargs)


@register_model
def channelvit_base_patch16(**kwargs) -> ChannelViT:
    """ChannelViT-B/16 (768 wide, 12 heads, depth 12); keyword arguments override."""
    return _variant("base", 16, **kwargs)


# -- family contract (official checkpoints) ----------------------------------------------------------
def build(config: Mapping[str, Any]) -> ChannelViT:
    """Rebuild a :class:`ChannelViT` from its ``model.config`` (constructor keywords).

    Args:
        config: constructor keywords.

    Returns:
        The model (random weights).
    """
    return ChannelViT(**dict(config))


_DINO_HEAD = ("head.mlp", "head.last_layer")


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: ChannelViT | None = None) -> dict[str, torch.Tensor]:
    """Official ChannelViT file (any layout) -> geovit keys.

    Accepts the flat supervised layout (released files), the DINO layout (channel embedding a
    (1, D, C, 1, 1) parameter; ``teacher.``/``student.`` prefixes, the teacher is taken) and
    Lightning checkpoints (``state_dict`` with ``backbone.*`` and ``classifier.*``, which becomes
    ``head.*``); a geovit state dict passes unchanged.

    Args:
        state_dict: the file's content.
        model: when given, a classifier the model has no head for (``num_classes=0``) is dropped.

    Returns:
        geovit-keyed tensors.

    Raises:
        CheckpointError: not a ChannelViT checkpoint.
    """
    tensors = find_state_dict(state_dict)
    out = strip_wrapper_prefix(tensors, "cls_token", family="ChannelViT")
    out = {k: v for k, v in out.items() if not k.startswith(_DINO_HEAD)}
    if "head.weight" not in out:
        out.update({"head." + k[len("classifier."):]: v for k, v in tensors.items() if k.startswith("classifier.")})
    if "patch_embed.channel_embed" in out:  # non-HCS / DINO layout (1, D, C, 1, 1)
        out["patch_embed.channel_embed.weight"] = channel_table_from_5d(out.pop("patch_embed.channel_embed"))
    proj = out.get("patch_embed.proj.weight")
    if proj is None or proj.ndim != 5 or "patch_embed.channel_embed.weight" not in out:
        raise CheckpointError("not a ChannelViT checkpoint: expected patch_embed.proj.weight of shape "
                              "(D, 1, 1, p, p) and a channel embedding (patch_embed.channel_embed[.weight])")
    if model is not None and model.num_classes == 0:
        out = {k: v for k, v in out.items() if not k.startswith("head.")}
    return out


_CONFIG_KEYS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias",
                "num_classes")


def infer_config(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Constructor config from the tensor shapes of a geovit-keyed state dict.

    Args:
        state_dict: output of :func:`checkpoint_filter_fn`.
        config: official constructor keywords that override (``num_heads`` for widths without
            an official head count; ``num_classes=0`` drops a stored classifier).

    Returns:
        Constructor keywords.

    Raises:
        CheckpointError: unknown config keys, or no head count for the width.
    """
    sd, config = state_dict, dict(config or {})
    dim = sd["cls_token"].shape[-1]
    patch = sd["patch_embed.proj.weight"].shape[-1]
    grid = math.isqrt(sd["pos_embed"].shape[1] - 1)
    depth = 1 + max((int(k.split(".")[1]) for k in sd if k.startswith("blocks.")), default=-1)
    hidden = sd["blocks.0.mlp.fc1.weight"].shape[0] if depth else 4 * dim
    cfg: dict[str, Any] = dict(
        img_size=grid * patch, patch_size=patch, in_chans=sd["patch_embed.channel_embed.weight"].shape[0],
        embed_dim=dim, depth=depth, num_heads=VIT_HEADS_BY_WIDTH.get(dim), mlp_ratio=hidden / dim,
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        num_classes=sd["head.weight"].shape[0] if "head.weight" in sd else 0,
    )
    unknown = set(config) - set(_CONFIG_KEYS)
    if unknown:
        raise CheckpointError(f"unknown config keys {sorted(unknown)}; expected some of {sorted(_CONFIG_KEYS)}")
    cfg.update(config)
    if isinstance(cfg["img_size"], (list, tuple)):
        cfg["img_size"] = int(cfg["img_size"][0])
    if cfg["num_heads"] is None:
        raise CheckpointError(f"embed_dim {dim} has no official head count; pass config={{'num_heads': ...}}")
    if cfg["embed_dim"] % cfg["num_heads"]:
        raise CheckpointError(f"embed_dim {cfg['embed_dim']} is not divisible by num_heads {cfg['num_heads']}")
    return cfg


def load_official(state_dict: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> ChannelViT:
    """Official ChannelViT checkpoint (any layout) -> geovit :class:`ChannelViT` in eval mode.

    Args:
        state_dict: the file's content (see :func:`checkpoint_filter_fn`).
        config: see :func:`infer_config`.

    Returns:
        The loaded model.

    Raises:
        CheckpointError: a foreign file or tensors that do not fit.
    """
    return convert_official(state_dict, config, filter_fn=checkpoint_filter_fn, infer_fn=infer_config,
                            build_fn=build, family="ChannelViT")
