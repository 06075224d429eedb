"""Layers shared by several model families (written once, used everywhere).

* :class:`PatchEmbedPerChannel` -- the ChannelViT-style tokeniser of ChannelViT and ChA-MAEViT:
  one shared p x p projection applied to every channel on its own plus a learned embedding per
  channel id, with the one validation of channel ids (and channel masks) both families use.
* :func:`resample_pos_grid_dino` / :func:`tile_pos_embed` -- the DINO-style bicubic resampling
  of a square positional grid and its tiling over the channels of a channel-major sequence.
* :func:`attention` -- multi-head attention core with the fused (SDPA) / materialised switch
  that :func:`set_fused_attention` flips on every module with a ``fused_attn`` attribute.
* ViT size tables and the ViT weight init.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geovit.errors import GeovitError

#: ViT width and head count per size name (DeiT / timm: tiny, small, base).
VIT_SIZES: dict[str, tuple[int, int]] = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}
#: Head count of the ViT of each width (tiny, small, base, large); checkpoints store no head count.
VIT_HEADS_BY_WIDTH: dict[int, int] = {192: 3, 384: 6, 768: 12, 1024: 16}

CHANNEL_INITS = ("orthogonal", "random", "zero")


class ChannelIds(NamedTuple):
    """Validated channel ids of a batch.

    Attributes:
        ids: (1, k) ids shared by the batch or (B, k) per sample, long; padding slots hold 0.
        valid: (B, k) bool, True = real channel, or None for an unpadded batch.
    """

    ids: Tensor
    valid: Tensor | None


class BoundChannelsMixin:
    """``bind_channels`` / ``default_channels`` of the multi-channel families (ChannelViT, ChA-MAEViT).

    The family keeps a :class:`PatchEmbedPerChannel` as ``self.patch_embed`` and its settings in
    ``self.config``; the bound ids live in both, so they are saved with converted files.
    """

    def bind_channels(self, channels: Any) -> list[int] | None:
        """Bind the input bands: ``model(x)`` then uses these ids (an explicit ``channels=`` still wins).

        Args:
            channels: band names of one :mod:`geovit.channels` table (``["S2_B02", "S2_B03"]``), a preset
                (``"sentinel2"``), absolute ids, or None to unbind.

        Returns:
            The bound ids (also ``config["default_channels"]``), or None.

        Raises:
            GeovitError: unknown names, repeated ids or ids outside the channel table.
        """
        ids = self.patch_embed.bind_channels(channels)
        self.config["default_channels"] = ids
        return ids

    @property
    def default_channels(self) -> list[int] | None:
        """The bound input channel ids (see :meth:`bind_channels`), or None."""
        return self.config.get("default_channels")


class PatchEmbedPerChannel(nn.Module):
    """Shared per-channel patch projection plus one learned embedding per channel id.

    ChannelViT §3.1 ("tied image filters") and ChA-MAEViT §3 tokenise alike: every channel is cut
    into its own p x p patches by one projection, and the embedding of the channel's absolute id
    is added to each of its patch tokens. Submodules: ``proj`` is the official
    ``Conv3d(1, D, (1, p, p))`` (weight (D, 1, 1, p, p), with bias), applied as the equivalent
    per-channel 2-D convolution; ``channel_embed`` is an ``nn.Embedding(num_channels, D)``. The
    other official layout, a (1, D, C, 1, 1) parameter (ChannelViT's DINO class, ChA-MAEViT's
    ``channel_tokens``), maps onto it with :func:`channel_table_from_5d`.

    Args:
        patch_size: side p of the square patches.
        num_channels: size C of the channel table (ids ``0..C-1``).
        embed_dim: token width D.
        channel_init: ``"orthogonal"`` (orthonormal per-channel vectors), ``"random"``
            (truncated normal, std 0.02) or ``"zero"``.

    Raises:
        GeovitError: ``channel_init`` is not one of :data:`CHANNEL_INITS`.
    """

    def __init__(self, patch_size: int, num_channels: int, embed_dim: int, channel_init: str = "random"):
        super().__init__()
        if channel_init not in CHANNEL_INITS:
            raise GeovitError(f"channel_init: {channel_init!r}, expected one of {CHANNEL_INITS}")
        self.patch_size, self.num_channels = patch_size, num_channels
        # bound input channels (see bind_channels); a buffer so it follows .to(device), not in the state dict
        self.register_buffer("default_ids", None, persistent=False)
        self.proj = nn.Conv3d(1, embed_dim, kernel_size=(1, patch_size, patch_size), stride=(1, patch_size, patch_size))
        self.channel_embed = nn.Embedding(num_channels, embed_dim)
        with torch.no_grad():
            if channel_init == "orthogonal":
                table = torch.empty(embed_dim, num_channels)
                nn.init.orthogonal_(table)  # orthonormal columns: one per channel
                self.channel_embed.weight.copy_(table.t())
            elif channel_init == "random":
                nn.init.trunc_normal_(self.channel_embed.weight, std=0.02, a=-2.0, b=2.0)
            else:
                self.channel_embed.weight.zero_()

    def resolve_channels(self, x: Tensor, channels: Any = None, channel_mask: Any = None) -> ChannelIds:
        """Validate the channel ids (and padding mask) of an input ``x`` (B, k, H, W).

        Args:
            x: the input batch; only its shape (and, with ``channel_mask``, its padding) is read.
            channels: absolute ids, (k,) shared or (B, k) per sample; None means ``0..k-1``.
            channel_mask: optional (B, k) bool, True = real channel, for padded batches; padded
                channels must be zero and their ids are ignored.

        Returns:
            The validated :class:`ChannelIds`.

        Raises:
            GeovitError: naming ``channels`` / ``channel_mask`` and what was expected.
        """
        b, k = x.shape[:2]
        valid = None if channel_mask is None else _check_channel_mask(x, channel_mask)
        if channels is None and self.default_ids is not None:
            bound = self.default_ids
            if k != bound.numel():
                raise GeovitError(f"x has {k} channels but the model is bound to {bound.numel()} input channels "
                                  f"(default_channels={bound.tolist()}); pass channels= with the absolute ids of "
                                  f"the {k} channels present")
            return ChannelIds(bound.to(x.device)[None], valid)
        if channels is None:
            if k != self.num_channels:
                fewer = "" if k > self.num_channels else (
                    ", and without channels= the model cannot tell which of them these are; bind the input bands "
                    "once with default_channels=[...] (create_model) or model.bind_channels([...])")
                raise GeovitError(f"x has {k} channels but the model's channel table has {self.num_channels} "
                                  f"(in_chans={self.num_channels}){fewer}; pass channels= with the absolute "
                                  "channel ids")
            return ChannelIds(torch.arange(k, device=x.device)[None], valid)
        try:
            ids = torch.as_tensor(channels, device=x.device)
        except (TypeError, ValueError, RuntimeError):
            raise GeovitError("channels: expected a (k,) or (B, k) array of integer channel ids (pad ragged "
                              "per-sample lists to k and pass channel_mask)") from None
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise GeovitError(f"channels: expected integer channel ids, got dtype {ids.dtype}")
        ids = ids.long()
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or ids.shape[1] != k or ids.shape[0] not in (1, b):
            raise GeovitError(f"channels: shape {tuple(torch.as_tensor(channels).shape)}, expected ({k},) or "
                              f"({b}, {k}) to match x of shape {tuple(x.shape)}")
        real = ids if valid is None else ids.expand(b, k)[valid]
        if real.numel() and (int(real.min()) < 0 or int(real.max()) >= self.num_channels):
            bad = sorted({int(i) for i in real[(real < 0) | (real >= self.num_channels)]})
            raise GeovitError(f"channels: ids {bad} fall outside the model's channel table "
                              f"0..{self.num_channels - 1} (in_chans={self.num_channels})")
        if valid is not None:
            ids = ids.expand(b, k).masked_fill(~valid, 0)
        return ChannelIds(ids, valid)

    def bind_channels(self, channels: Any) -> list[int] | None:
        """Bind the input bands: later calls without ``channels=`` use these ids.

        Args:
            channels: band names of a geovit channel table, a preset name (``"sentinel2"``), absolute
                ids, or None to unbind; see :func:`resolve_channel_spec`.

        Returns:
            The bound ids, or None.

        Raises:
            GeovitError: unknown names, repeated or out-of-table ids.
        """
        ids = resolve_channel_spec(channels, self.num_channels)
        device = self.proj.weight.device
        self.default_ids = None if ids is None else torch.tensor(ids, dtype=torch.long, device=device)
        return ids

    def project(self, x: Tensor) -> Tensor:
        """Raw patch embeddings (B, k, N, D) of x (B, k, H, W), before channel embeddings.

        N = (H/p)·(W/p) patches per channel, row-major; one shared projection for every channel.
        """
        b, k, height, width = x.shape
        weight = self.proj.weight.squeeze(2)  # (D, 1, p, p)
        out = F.conv2d(x.reshape(b * k, 1, height, width), weight, self.proj.bias, stride=self.patch_size)
        return out.reshape(b, k, out.shape[1], -1).transpose(2, 3)

    def channel_tokens(self, ids: Tensor, valid: Tensor | None = None) -> Tensor:
        """Channel embeddings (n, k, D) of ids (n, k); padding slots (``valid`` False) get zeros."""
        tokens = self.channel_embed(ids)
        return tokens if valid is None else tokens * valid[..., None].to(tokens.dtype)

    def forward(self, x: Tensor, channels: Any = None, channel_mask: Any = None) -> Tensor:
        """Tokens (B, k, N, D): patch embeddings plus their channel's embedding.

        Args:
            x: (B, k, H, W) holding the k channels present, H and W multiples of the patch size.
            channels: absolute ids of those channels, see :meth:`resolve_channels`.
            channel_mask: optional (B, k) padding mask, see :meth:`resolve_channels`.

        Returns:
            (B, k, N, D); flatten dims 1-2 for the channel-major sequence.
        """
        ch = self.resolve_channels(x, channels, channel_mask)
        return self.project(x) + self.channel_tokens(ch.ids, ch.valid)[:, :, None, :]


def resolve_channel_spec(channels: Any, num_channels: int, table: str | None = None) -> list[int] | None:
    """Absolute channel ids of a band list given by names, a preset, or ids.

    Args:
        channels: None; a preset name or comma list of names (``"sentinel2"``, ``"S2_B04,S2_B03"``);
            a sequence of band names of one geovit channel table (:mod:`geovit.channels`); or a
            sequence / 1-d tensor of integer ids.
        num_channels: size of the model's channel table (ids must be below it).
        table: the channel table the names belong to, when known (e.g. from ``pretrained_cfg``).

    Returns:
        The ids in the given order, or None for ``channels=None``.

    Raises:
        GeovitError: naming ``default_channels`` and what was expected.
    """
    if channels is None:
        return None
    if isinstance(channels, Tensor):
        channels = channels.tolist()
    if isinstance(channels, str) or (isinstance(channels, (list, tuple)) and channels
                                     and all(isinstance(c, str) for c in channels)):
        from geovit.channels import resolve_channels

        try:
            ids = list(resolve_channels(channels if isinstance(channels, str) else list(channels), table).ids)
        except GeovitError as err:
            raise GeovitError("default_channels: " + str(err).removeprefix("--channels: ")) from None
    else:
        try:
            ids = [int(c) for c in channels]
        except (TypeError, ValueError):
            raise GeovitError(f"default_channels: {channels!r}; expected band names, a preset name or integer "
                              "channel ids") from None
        if any(isinstance(c, float) and not float(c).is_integer() for c in channels):
            raise GeovitError(f"default_channels: {channels!r}; expected integer channel ids")
    if not ids:
        raise GeovitError("default_channels: empty list; expected at least one band")
    if len(set(ids)) != len(ids):
        raise GeovitError(f"default_channels: ids {ids} name a channel twice")
    bad = [i for i in ids if not 0 <= i < num_channels]
    if bad:
        raise GeovitError(f"default_channels: ids {bad} fall outside the model's channel table 0..{num_channels - 1} "
                          f"(in_chans={num_channels})")
    return ids


def _check_channel_mask(x: Tensor, channel_mask: Any) -> Tensor:
    b, k = x.shape[:2]
    valid = torch.as_tensor(channel_mask, device=x.device)
    if valid.dtype != torch.bool or tuple(valid.shape) != (b, k):
        raise GeovitError(f"channel_mask: expected a bool tensor of shape {(b, k)} (True = real channel), "
                          f"got {valid.dtype} {tuple(valid.shape)}")
    if not bool(valid.any(dim=1).all()):
        raise GeovitError("channel_mask: every sample needs at least one real channel (a row is all False)")
    padding = x.detach()[~valid]
    if padding.numel() and bool((padding != 0).any()):
        rows = sorted({int(i) for i in (~valid).nonzero()[:, 0][padding.flatten(1).ne(0).any(1)]})
        raise GeovitError(f"channel_mask disagrees with x: samples {rows} hold non-zero data in channels "
                          "marked as padding (padded channels must be zero)")
    return valid


def channel_table_from_5d(table: Tensor) -> Tensor:
    """Official (1, D, C, 1, 1) channel parameter -> the (C, D) ``channel_embed.weight``."""
    return table[0, :, :, 0, 0].t().contiguous()


def resample_pos_grid_dino(grid_tokens: Tensor, h: int, w: int) -> Tensor:
    """Resample a square positional grid to (h, w) exactly as DINO's ``interpolate_pos_encoding``.

    The official ChannelViT / DINO code calls ``F.interpolate(mode="bicubic",
    scale_factor=((h + 0.1) / g, (w + 0.1) / g))`` without ``recompute_scale_factor``: the *scale
    factor* (not the output size) sets the sampling grid, so the resample is not the identity even
    when h == g. Reproducing this is required to match released checkpoints (specs/channelvit.md §2.2).

    Args:
        grid_tokens: (1, g*g, D) positional rows of the patch grid (no CLS slot).
        h: output grid height.
        w: output grid width.

    Returns:
        (1, h*w, D).

    Raises:
        ValueError: the table is not a square grid, or the resample misses (h, w).
    """
    n, dim = grid_tokens.shape[1], grid_tokens.shape[2]
    g = int(math.sqrt(n))
    if g * g != n:
        raise ValueError(f"positional table has {n} patch slots, which is not a square grid")
    grid = grid_tokens.reshape(1, g, g, dim).permute(0, 3, 1, 2)
    out = F.interpolate(
        grid, scale_factor=((h + 0.1) / g, (w + 0.1) / g), mode="bicubic", align_corners=False
    )
    if out.shape[-2:] != (h, w):  # the official code asserts this too
        raise ValueError(f"bicubic resample of a {g}x{g} grid gave {tuple(out.shape[-2:])}, expected {(h, w)}")
    return out.permute(0, 2, 3, 1).reshape(1, h * w, dim)


def tile_pos_embed(pos_embed: Tensor, num_prefix: int, num_channels: int, h: int, w: int) -> Tensor:
    """Positional embedding of a channel-major sequence: prefix rows as stored, grid resampled and tiled.

    Args:
        pos_embed: (1, num_prefix + g*g, D) table: rows of the extra tokens (CLS, memory), then the grid.
        num_prefix: number of extra-token rows in front.
        num_channels: how many channels share the spatial grid (the grid is repeated that often).
        h: token-grid height of the input.
        w: token-grid width of the input.

    Returns:
        (1, num_prefix + num_channels*h*w, D); the grid goes through :func:`resample_pos_grid_dino`.
    """
    grid = resample_pos_grid_dino(pos_embed[:, num_prefix:], h, w)
    return torch.cat([pos_embed[:, :num_prefix], grid.repeat(1, num_channels, 1)], dim=1)


def attention(q: Tensor, k: Tensor, v: Tensor, *, fused: bool = True, blocked: Tensor | None = None,
              dropout_p: float = 0.0) -> Tensor:
    """Scaled dot-product attention of (B, h, Nq, d) queries over (B, h, Nk, d) keys / values.

    Args:
        q: queries.
        k: keys.
        v: values.
        fused: ``F.scaled_dot_product_attention`` when True, else the materialised
            ``softmax(q kᵀ / √d) v`` with the same result (the benchmark baseline).
        blocked: optional bool mask broadcastable to (B, h, Nq, Nk), True = may not attend.
        dropout_p: attention dropout probability (pass 0 in eval mode).

    Returns:
        (B, h, Nq, d).
    """
    if fused:
        allowed = None if blocked is None else ~blocked
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if blocked is not None:
        scores = scores.masked_fill(blocked, float("-inf"))
    attn = scores.softmax(dim=-1)
    if dropout_p > 0:
        attn = F.dropout(attn, dropout_p)
    return attn @ v


def set_fused_attention(model: nn.Module, enabled: bool) -> int:
    """Switch every timm-style attention module between fused SDPA and materialised q@kᵀ.

    Used by ``bench/`` to build the materialised-attention baseline from the very same weights.

    Args:
        model: any module; every submodule with a ``fused_attn`` attribute is switched.
        enabled: True for fused SDPA, False for the materialised path.

    Returns:
        How many modules were switched.
    """
    count = 0
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = enabled
            count += 1
    return count


def trunc_normal_init(module: nn.Module, std: float = 0.02) -> None:
    """ViT init: truncated-normal Linear weights (std 0.02), zero biases, unit LayerNorms.

    Args:
        module: applied to one module (use ``model.apply(trunc_normal_init)``).
        std: standard deviation of the Linear weights.
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std, a=-2.0, b=2.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
