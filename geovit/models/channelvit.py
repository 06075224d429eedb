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
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from geovit.errors import CheckpointError, GeovitError
from geovit.models import register_model
from geovit.models.layers import resample_pos_grid_dino, trunc_normal_init

#: Official head count per width (the size factories of the reference code).
OFFICIAL_NUM_HEADS: dict[int, int] = {192: 3, 384: 6, 768: 12, 1024: 16}


def as_channel_ids(channels: torch.Tensor | None, batch: int, k: int, num_channels: int, device) -> torch.Tensor:
    """Validate channel ids and broadcast them to a (B, k) LongTensor (default ``arange(k)``)."""
    if channels is None:
        if k > num_channels:
            raise GeovitError(f"input has {k} channels but the model's channel table has {num_channels}; "
                              "pass channels=ids to say which channels these are")
        return torch.arange(k, device=device).expand(batch, k)
    ids = torch.as_tensor(channels, device=device)
    if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise GeovitError(f"channels must be integer channel ids, got dtype {ids.dtype}")
    ids = ids.long()
    if ids.ndim == 1:
        ids = ids.expand(batch, -1)
    if ids.ndim != 2 or ids.shape != (batch, k):
        raise GeovitError(f"channels has shape {tuple(torch.as_tensor(channels).shape)}; expected ({k},) or "
                          f"({batch}, {k}) to match the input's {k} channels")
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= num_channels:
        raise GeovitError(f"channel id {hi if hi >= num_channels else lo} is outside the model's channel table "
                          f"(ids must be in 0..{num_channels - 1})")
    return ids


class PatchEmbedPerChannel(nn.Module):
    """Shared per-channel patch projection plus channel embedding (paper §3.1).

    ``proj`` is stored as the official ``Conv3d(1, D, (1, p, p))`` (weight (D, 1, 1, p, p), with bias)
    and applied as the equivalent per-channel 2-D convolution.
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(1, embed_dim, kernel_size=(1, patch_size, patch_size), stride=(1, patch_size, patch_size))
        self.channel_embed = nn.Embedding(in_chans, embed_dim)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """(B, k, H, W), ids (B, k) -> tokens (B, k*h*w, D) in channel-major order."""
        b, k, height, width = x.shape
        p = self.patch_size
        weight = self.proj.weight.squeeze(2)  # (D, 1, p, p)
        tokens = F.conv2d(x.reshape(b * k, 1, height, width), weight, self.proj.bias, stride=p)
        dim, h, w = tokens.shape[1:]
        tokens = tokens.reshape(b, k, dim, h * w).transpose(2, 3)  # (B, k, N, D)
        tokens = tokens + self.channel_embed(ids).unsqueeze(2)
        return tokens.reshape(b, k * h * w, dim)


class ChannelViT(nn.Module):
    """Channel Vision Transformer (paper §3) with optional Hierarchical Channel Sampling (§3.2).

    Args follow the official constructor: ``img_size`` sets the stored positional grid
    (img_size // patch_size per side; the released checkpoints use 224), ``in_chans`` the size of the
    channel-embedding table C. ``hcs`` (official ``enable_sample``) turns HCS on in training mode;
    ``hcs_seed`` makes the draws deterministic (None: Python's global ``random``, as the official code).

    Call ``model(x, channels=ids)`` with x (B, k, H, W) holding only the k channels present and ids
    (B, k) or (k,) their absolute indices. Returns logits when ``num_classes > 0``, else the (B, D)
    CLS feature.
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
    ):
        super().__init__()
        if isinstance(img_size, (list, tuple)):  # official configs pass [224]
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

        self.patch_embed = PatchEmbedPerChannel(patch_size, in_chans, embed_dim)
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
        self._init_weights()

    def _init_weights(self) -> None:
        for p in (self.cls_token, self.pos_embed, self.patch_embed.channel_embed.weight):
            nn.init.trunc_normal_(p, std=0.02, a=-2.0, b=2.0)
        self.apply(trunc_normal_init)

    # -- pieces ----------------------------------------------------------------------------
    def sample_channels(self, k: int) -> list[int]:
        """HCS draw (§3.2): m ~ U{1..k}, then a random m-combination in random order (positions)."""
        m = self.hcs_rng.randint(1, k)
        return self.hcs_rng.sample(range(k), m)

    def pos_embed_for(self, k: int, h: int, w: int, height: int, width: int) -> torch.Tensor:
        """The positional embedding added to a sequence of 1 + k*h*w tokens (spec §2.2)."""
        stored = self.pos_embed.shape[1] - 1
        if k * h * w == stored and height == width:
            return self.pos_embed  # the official raw-table shortcut (untiled)
        grid = resample_pos_grid_dino(self.pos_embed[:, 1:], h, w)
        return torch.cat([self.pos_embed[:, :1], grid.repeat(1, k, 1)], dim=1)

    def prepare_tokens(self, x: torch.Tensor, channels: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4:
            raise GeovitError(f"input must be (B, k, H, W); got shape {tuple(x.shape)}")
        b, k, height, width = x.shape
        p = self.patch_size
        if height % p or width % p:
            raise GeovitError(f"input size {height}x{width} is not a multiple of the patch size {p}")
        ids = as_channel_ids(channels, b, k, self.in_chans, x.device)
        if self.training and self.hcs:
            sel = self.sample_channels(k)
            self.last_hcs_draw = sel
            index = torch.as_tensor(sel, device=x.device)
            x, ids, k = x.index_select(1, index), ids.index_select(1, index), len(sel)
        tokens = self.patch_embed(x, ids)
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        tokens = tokens + self.pos_embed_for(k, height // p, width // p, height, width)
        return self.pos_drop(tokens)

    # -- timm-style API --------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor, channels: torch.Tensor | None = None) -> torch.Tensor:
        """All tokens after the final norm: (B, 1 + k*N, D), CLS first, channel-major."""
        return self.norm(self.blocks(self.prepare_tokens(x, channels)))

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        cls = tokens[:, 0]
        return cls if pre_logits else self.head(cls)

    def forward(self, x: torch.Tensor, channels: torch.Tensor | None = None) -> torch.Tensor:
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
_SIZES = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}


def _variant(size: str, patch: int, **kwargs) -> ChannelViT:
    dim, heads = _SIZES[size]
    cfg = dict(patch_size=patch, embed_dim=dim, depth=12, num_heads=heads, mlp_ratio=4.0, qkv_bias=True)
    cfg.update(kwargs)
    return ChannelViT(**cfg)


@register_model
def channelvit_tiny_patch8(**kwargs) -> ChannelViT:
    return _variant("tiny", 8, **kwargs)


@register_model
def channelvit_tiny_patch16(**kwargs) -> ChannelViT:
    return _variant("tiny", 16, **kwargs)


@register_model
def channelvit_small_patch8(**kwargs) -> ChannelViT:
    return _variant("small", 8, **kwargs)


@register_model
def channelvit_small_patch16(**kwargs) -> ChannelViT:
    return _variant("small", 16, **kwargs)


@register_model
def channelvit_base_patch8(**kwargs) -> ChannelViT:
    return _variant("base", 8, **kwargs)


@register_model
def channelvit_base_patch16(**kwargs) -> ChannelViT:
    return _variant("base", 16, **kwargs)


# -- official checkpoints ---------------------------------------------------------------------------
def build(config: Mapping[str, Any]) -> ChannelViT:
    return ChannelViT(**dict(config))


_PREFIXES = ("teacher.backbone.", "teacher.", "module.backbone.", "backbone.", "module.")


def checkpoint_filter_fn(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """Official file -> (geovit backbone state dict, classifier tensors or None).

    Accepts the flat supervised layout, the DINO layout (channel embedding (1, D, C, 1, 1);
    ``teacher.``/``student.`` prefixes, the teacher is taken) and Lightning checkpoints
    (``state_dict`` with ``backbone.*`` and ``classifier.*``).
    """
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    elif "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    classifier = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("classifier.")}
    prefix = next((p for p in _PREFIXES if any(k.startswith(p + "cls_token") for k in tensors)), "")
    if not prefix and "cls_token" not in tensors:
        raise CheckpointError("not a ChannelViT checkpoint: no cls_token (also looked under "
                              f"{', '.join(repr(p) for p in _PREFIXES)})")
    out = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    out = {k: v for k, v in out.items() if not k.startswith(("head.mlp", "head.last_layer"))}  # DINO head
    if "patch_embed.channel_embed" in out:  # non-HCS / DINO layout (1, D, C, 1, 1)
        emb = out.pop("patch_embed.channel_embed")
        out["patch_embed.channel_embed.weight"] = emb[0, :, :, 0, 0].t().contiguous()
    proj = out.get("patch_embed.proj.weight")
    if proj is None or proj.ndim != 5 or "patch_embed.channel_embed.weight" not in out:
        raise CheckpointError("not a ChannelViT checkpoint: expected patch_embed.proj.weight of shape "
                              "(D, 1, 1, p, p) and a channel embedding (patch_embed.channel_embed[.weight])")
    return out, (classifier or None)


def infer_config(sd: Mapping[str, torch.Tensor], classifier: Mapping[str, torch.Tensor] | None,
                 config: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor config from tensor shapes; ``config`` (official names) overrides."""
    dim = sd["cls_token"].shape[-1]
    patch = sd["patch_embed.proj.weight"].shape[-1]
    grid = math.isqrt(sd["pos_embed"].shape[1] - 1)
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    hidden = sd["blocks.0.mlp.fc1.weight"].shape[0]
    num_classes = 0
    if "head.weight" in sd:
        num_classes = sd["head.weight"].shape[0]
    elif classifier is not None and "weight" in classifier:
        num_classes = classifier["weight"].shape[0]
    cfg: dict[str, Any] = dict(
        img_size=grid * patch, patch_size=patch, in_chans=sd["patch_embed.channel_embed.weight"].shape[0],
        embed_dim=dim, depth=depth, num_heads=OFFICIAL_NUM_HEADS.get(dim), mlp_ratio=hidden / dim,
        qkv_bias="blocks.0.attn.qkv.bias" in sd, num_classes=num_classes,
    )
    allowed = {"img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias", "num_classes"}
    unknown = set(config) - allowed
    if unknown:
        raise CheckpointError(f"unknown config keys {sorted(unknown)}; expected some of {sorted(allowed)}")
    cfg.update(config)
    if isinstance(cfg["img_size"], (list, tuple)):
        cfg["img_size"] = int(cfg["img_size"][0])
    if cfg["num_heads"] is None:
        raise CheckpointError(f"embed_dim {dim} has no official head count; pass config={{'num_heads': ...}}")
    if cfg["embed_dim"] % cfg["num_heads"]:
        raise CheckpointError(f"embed_dim {cfg['embed_dim']} is not divisible by num_heads {cfg['num_heads']}")
    return cfg


def load_official(state: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> ChannelViT:
    """Official ChannelViT checkpoint (any layout) -> geovit :class:`ChannelViT` in eval mode."""
    sd, classifier = checkpoint_filter_fn(state)
    cfg = infer_config(sd, classifier, dict(config or {}))
    model = ChannelViT(**cfg)
    if classifier is not None and cfg["num_classes"] > 0:
        sd = {**sd, "head.weight": classifier["weight"], "head.bias": classifier["bias"]}
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as err:  # shape mismatch
        raise CheckpointError(f"tensors do not fit a ChannelViT with {cfg}: {err}") from None
    if missing or unexpected:
        raise CheckpointError(f"tensors do not fit a ChannelViT with {cfg}: missing {missing[:6]}, unexpected {unexpected[:6]}")
    return model.eval()
