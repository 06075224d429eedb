"""ChA-MAEViT: channel-aware masked autoencoding for multi-channel ViTs.

Pham, Caicedo, Plummer, "ChA-MAEViT: Unifying Channel-Aware Masked Autoencoders and
Multi-Channel Vision Transformers for Improved Cross-Channel Learning", NeurIPS 2025
(arXiv 2503.19331); official code github.com/chaudatascience/cha_mae_vit. Written from the paper
and the dossier ``specs/chamaevit.md`` (facts only).

* §3 encoder: ChannelViT-style tokens -- one shared p×p patch projection, a learned channel token
  (orthogonal init) *added* to every patch of its channel, channel-major token order; a CLS token
  and memory tokens that take part in every encoder and decoder layer but are never pooled; one
  spatial positional table shared by all channels, resampled DINO-style (bicubic with
  ``scale_factor=(g'+0.1)/g``) whenever more than one channel is present, even at native size;
  pre-norm blocks with LayerScale (timm ``Block``, fused attention).
* §3.1 Dynamic Channel-Patch masking: :mod:`geovit.models.chamae_masking`.
* §3.2 hybrid token fusion: a learned query cross-attends the final patch tokens (Set-Transformer
  MAB, heads concatenated along the *token* axis, scale 1/√D as the official code), then
  ``cls * sigmoid(o)`` (``cls_attn_pooling_sigmoid``) or ``cls + o`` (``cls_attn_pooling``);
  the paper's MLP after the fusion is the classifier head Linear(D,4D)-GELU-Linear(4D,K).
* §3.3 channel-aware decoder: a single decoder for all channels; visible outputs + mask tokens,
  un-shuffled, with the *encoder's* channel tokens and positions added; per-channel patch
  reconstruction (Linear D -> p²). ``decoder={"decoder_type": "camae_decoder"}`` is the ablation
  of Table 4, "w/o channel-aware decoder (separate decoders)": CA-MAE's decoder (Kraus et al.,
  CVPR 2024) with one decoder per channel (:class:`CAMAEDecoder`).
* Options of the reference code (``configs/model/multi_channel_vit.yaml``), off by default:
  ``use_self_image_norm`` -- every channel of every image is standardised over its H x W pixels
  (InstanceNorm2d without parameters, eps 1e-5) before the encoder, so the reconstruction
  targets are self-normalised too; ``channel_sampling="hcs"`` -- Hierarchical Channel Sampling
  (ChannelViT §3.2) of the input channels in :meth:`ChAMAEViT.pretrain_step`, before DCP.
* §3.4 losses (:mod:`geovit.models.chamae_losses`):
  ``loss = mae_λ·[(1-λf)·recon + λf·fourier] + ce_λ·CE + proxy_λ·proxy + w_tok·token_div +
  w_ch·channel_div``.

Interfaces: ``model(x, channels=ids, channel_mask=None)`` is the downstream path (no masking, as
the official ``eval()`` forward) and returns logits, or the fused feature when
``num_classes == 0``; :meth:`ChAMAEViT.pretrain_step` runs the joint objective with DCP masking.
State-dict keys equal the official ones but for the channel table (the shared
:class:`~geovit.models.layers.PatchEmbedPerChannel`), which :func:`checkpoint_filter_fn` maps;
:func:`load_official` is then a strict load.
"""
from __future__ import annotations

import copy
import math
from functools import partial
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from timm.models import generate_default_cfgs
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from geovit.channels import JUMPCP_CHANNELS, SO2SAT_BANDS
from geovit.errors import CheckpointError, GeovitError
from geovit.models import convert_official, register_model, unwrap_checkpoint
from geovit.models._timm import (
    channel_mean_map, check_output_fmt, finish_intermediates, geovit_cfg, prune_blocks, take_indices,
)
from geovit.models.chamae_losses import (
    fourier_loss, norm_pix, patchify, proxy_loss, reconstruction_loss, token_diversification_loss, unpatchify,
)
from geovit.models.chamae_masking import (
    DCPMasks, check_mask_ratio, check_strategy_probabilities, dynamic_channel_patch_masking, sample_dcp_strategy,
)
from geovit.models.channel_sampling import check_count_bounds, hcs_draw
from geovit.models.layers import (
    BoundChannelsMixin,
    CHANNEL_INITS, VIT_HEADS_BY_WIDTH, VIT_SIZES, ChannelIds, PatchEmbedPerChannel, channel_table_from_5d,
    tile_pos_embed, trunc_normal_init,
)

__all__ = ["CAMAEDecoder", "ChAMAEViT", "ChannelAwareDecoder", "DCPMasks", "build", "checkpoint_filter_fn",
           "infer_config", "load_official", "self_image_norm"]

POOLINGS = ("cls_attn_pooling_sigmoid", "cls_attn_pooling", "cls_token")
MAE_LOSS_NORMS = ("norm_pix_loss", "instance_norm", None)
#: ``decoder.decoder_type``: the shared channel-aware decoder (§3.3) or CA-MAE's per-channel decoders.
DECODER_TYPES = ("chamaevit_decoder", "camae_decoder")
#: ``channel_sampling``: none, or Hierarchical Channel Sampling (the reference's ``training_sample: hcs``).
CHANNEL_SAMPLINGS = (None, "hcs")
#: eps of the reference's InstanceNorm2d (``use_self_image_norm`` and ``mae_loss_norm="instance_norm"``).
SELF_NORM_EPS = 1e-5

#: Channel-aware decoder settings (the ``decoder`` block of the official config). Depth 1 and
#: 16 heads as every official run; DCP "Alternate" (0.5 / 0.5, r = 0.75) as the official yaml.
DEFAULT_DECODER: dict[str, Any] = {
    "decoder_type": "chamaevit_decoder", "depth": 1, "num_heads": 16, "mlp_ratio": 4.0, "qkv_bias": False,
    "embed_dim": None,
    "dcp_mask_ratio": 0.75, "dcp_p_patch": 0.5, "dcp_p_channel": 0.5, "dcp_at_least_mask_one_channel": False,
}
#: official decoder keys that carry no information for geovit (accepted, then dropped).
_DECODER_IGNORED = ("norm_layer", "mask_recon_fourier_loss")


_norm_layer = partial(nn.LayerNorm, eps=1e-6)


class HybridTokenFusion(nn.Module):
    """Attention pooling of the patch tokens by a learned query (the official ``MAB``, §3.2).

    Q = fc_q(query), K = fc_k(X), V = fc_v(X); the h heads are stacked along the token axis, so
    the one query of each head attends over all h·L head-keys, with scale 1/√D; then
    O = Q + softmax(QKᵀ/√D)V re-assembled to (B, 1, D), and O + ReLU(fc_o(O)).
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.dim, self.num_heads = dim, num_heads
        self.fc_q = nn.Linear(dim, dim)
        self.fc_k = nn.Linear(dim, dim)
        self.fc_v = nn.Linear(dim, dim)
        self.fc_o = nn.Linear(dim, dim)

    def forward(self, query: Tensor, x: Tensor) -> Tensor:
        """Query (1, D) pools the tokens x (B, L, D) -> (B, 1, D)."""
        b, length, d = x.shape
        h, dh = self.num_heads, d // self.num_heads
        q = self.fc_q(query).reshape(1, h, dh).expand(b, h, dh)                # (B, h, dh)
        k = self.fc_k(x).reshape(b, length, h, dh).transpose(1, 2).reshape(b, h * length, dh)
        v = self.fc_v(x).reshape(b, length, h, dh).transpose(1, 2).reshape(b, h * length, dh)
        o = q + F.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(d))
        o = o.reshape(b, 1, d)
        return o + F.relu(self.fc_o(o))


class ChannelAwareDecoder(nn.Module):
    """One decoder shared by all channels (§3.3); no LayerScale, key mask = channel padding only."""

    def __init__(self, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float, qkv_bias: bool):
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, norm_layer=_norm_layer,
                  act_layer=nn.GELU) for _ in range(depth)
        ])
        self.norm = _norm_layer(embed_dim)

    def forward(self, latent: Tensor, ind_restore: Tensor, channel_tokens: Tensor, pos_embed: Tensor,
                num_extra_tokens: int, attn_mask: Tensor | None) -> Tensor:
        """``latent`` (B, E + N_vis, D) projected encoder output -> decoder tokens (B, E + L, D)."""
        b, _, d = latent.shape
        length = ind_restore.shape[1]
        visible = latent[:, num_extra_tokens:]
        filler = self.mask_token.expand(b, length - visible.shape[1], d)
        patches = torch.cat([visible, filler], dim=1)
        patches = torch.gather(patches, 1, ind_restore[..., None].expand(-1, -1, d))  # un-shuffle
        patches = patches + channel_tokens
        x = torch.cat([latent[:, :num_extra_tokens], patches], dim=1) + pos_embed
        for blk in self.blocks:
            x = blk(x, attn_mask=attn_mask)
        return self.norm(x)


class CrossAttention(nn.Module):
    """Multi-head cross-attention of CA-MAE's decoder: queries ``x`` attend the tokens of ``context``.

    Keys as the reference: ``q`` and ``kv`` without bias, ``proj`` with bias, 8 heads, scale
    head_dim^-1/2.
    """

    def __init__(self, dim: int, num_heads: int = 8):
        super().__init__()
        if dim % num_heads:
            raise GeovitError(f"embed_dim={dim}: CA-MAE's decoder cross-attention has {num_heads} heads; "
                              f"use an embed_dim divisible by {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """x (B, N, D) attends context (B, M, D); ``key_mask`` bool (B, 1, 1, M), True = attendable."""
        b, n, d = x.shape
        h = self.num_heads
        q = self.q(x).reshape(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(context).reshape(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        return self.proj(o.transpose(1, 2).reshape(b, n, d))


class CAMAEDecoder(nn.Module):
    """One decoder per channel, CA-MAE style (Kraus et al., CVPR 2024): the ablation of ChA-MAEViT
    Table 4 ("w/o channel-aware decoder (separate decoders)").

    The layout (and so the checkpoint keys) of the ``CAMAEDecoder`` the reference code imports:
    ``mask_token``; a zero ``placeholder`` (stored, never trained); one ``modality_tokens.{c}``
    (1, 1, D) per channel id of the table; a shared ``cross_attention`` (``q``, ``kv``, ``proj``)
    and ``mlp`` (``fc1``, ``fc2``) with ``query_norm`` / ``context_norm`` / ``out_norm``; and
    ``decoders.{c}.{j}``, ``depth`` pre-norm blocks per channel id. No final norm.

    Forward (§3.3 ablation): visible outputs + mask tokens are un-shuffled; each patch gets the
    encoder's positional embedding and the *decoder's own* modality token of its channel (not the
    encoder's channel token); every channel's tokens cross-attend all patch tokens of the sample
    (real channels only), with no residual, then ``x + mlp(out_norm(x))``; then the tokens of
    each channel run through the decoder of its channel id alone (attention within the channel).
    Padded channel slots output the placeholder. (The reference's regular-batch path takes the
    modality tokens in ascending id order but the decoders in input order; here both follow the
    input order, which is the same for ascending ids.)
    """

    def __init__(self, num_channels: int, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float,
                 qkv_bias: bool):
        super().__init__()
        from timm.layers import Mlp

        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("placeholder", torch.zeros(1, 1, embed_dim))
        self.modality_tokens = nn.ParameterList([nn.Parameter(torch.zeros(1, 1, embed_dim))
                                                 for _ in range(num_channels)])
        self.cross_attention = CrossAttention(embed_dim)
        self.mlp = Mlp(embed_dim, hidden_features=int(embed_dim * mlp_ratio))
        self.decoders = nn.ModuleList([
            nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                                  norm_layer=_norm_layer, act_layer=nn.GELU) for _ in range(depth)])
            for _ in range(num_channels)
        ])
        self.context_norm = _norm_layer(embed_dim)
        self.query_norm = _norm_layer(embed_dim)
        self.out_norm = _norm_layer(embed_dim)

    def forward(self, latent: Tensor, ind_restore: Tensor, ids: Tensor, pos_embed: Tensor, num_extra_tokens: int,
                valid: Tensor | None) -> Tensor:
        """``latent`` (B, E + N_vis, D) projected encoder output -> decoder tokens (B, E + L, D).

        ``ids`` (n, C) absolute channel ids (n = 1: shared by the batch); ``valid`` (B, C) bool
        for padded batches, else None.
        """
        b, _, d = latent.shape
        e, length, c = num_extra_tokens, ind_restore.shape[1], ids.shape[1]
        per = length // c
        visible = latent[:, e:]
        patches = torch.cat([visible, self.mask_token.expand(b, length - visible.shape[1], d)], dim=1)
        patches = torch.gather(patches, 1, ind_restore[..., None].expand(-1, -1, d))  # un-shuffle
        table = torch.cat(list(self.modality_tokens), dim=0).reshape(-1, d)  # (C_table, D)
        modality = table[ids]
        if valid is not None:
            modality = torch.where(valid[..., None], modality, self.placeholder.reshape(1, 1, d))
        patches = patches + pos_embed[:, e:] + modality.repeat_interleave(per, dim=1)
        extra = latent[:, :e] + pos_embed[:, :e] + self.placeholder
        key_mask = None if valid is None else valid.repeat_interleave(per, dim=1)[:, None, None, :]
        y = self.cross_attention(self.query_norm(patches), self.context_norm(patches), key_mask)
        y = (y + self.mlp(self.out_norm(y))).reshape(b, c, per, d)
        if valid is None and ids.shape[0] == 1:  # one channel set for the batch: decoder m on channel m
            out = torch.stack([self.decoders[int(i)](y[:, m]) for m, i in enumerate(ids[0].tolist())], dim=1)
        else:  # per-sample ids: each channel id's decoder runs once, on every token group carrying it
            ids = ids.expand(b, c)
            real = torch.ones_like(ids, dtype=torch.bool) if valid is None else valid
            out = self.placeholder.expand(b, c, per, d).clone()
            for i in torch.unique(ids[real]).tolist():
                sel = real & (ids == i)
                out[sel] = self.decoders[i](y[sel])
        return torch.cat([extra, out.flatten(1, 2)], dim=1)


def self_image_norm(x: Tensor, eps: float = SELF_NORM_EPS) -> tuple[Tensor, Tensor, Tensor]:
    """Standardise every channel of every image over its pixels (InstanceNorm2d, no parameters).

    ``(x - mean) / sqrt(var + eps)`` with mean and the *biased* var over (H, W) of each (image,
    channel), as the reference's ``use_self_image_norm`` / ``mae_loss_norm="instance_norm"``.
    An all-zero (padding) channel stays zero.

    Returns:
        The normalised batch, and the (B, C, 1, 1) mean and std used (to map predictions back).
    """
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = (x.var(dim=(2, 3), unbiased=False, keepdim=True) + eps).sqrt()
    return (x - mean) / std, mean, std


def _scatter_channels(values: Tensor, positions: Tensor, kept: Tensor, num_channels: int) -> Tensor:
    """Put per-slot channel values (B, C', ...) back at their input positions (B, C, ...); zeros elsewhere."""
    b = values.shape[0]
    spare = num_channels  # slots that hold no channel are written to a spare channel, then dropped
    index = positions.masked_fill(~kept, spare)
    index = index.reshape(b, -1, *([1] * (values.ndim - 2))).expand_as(values)
    out = values.new_zeros((b, num_channels + 1, *values.shape[2:]))
    return out.scatter(1, index, values)[:, :num_channels]


def _key_mask(num_extra: int, tokens_valid: Tensor) -> Tensor:
    """Boolean key mask (B, 1, 1, E + N): extra tokens always attendable."""
    extra = torch.ones(tokens_valid.shape[0], num_extra, dtype=torch.bool, device=tokens_valid.device)
    return torch.cat([extra, tokens_valid.bool()], dim=1)[:, None, None, :]


class ChAMAEViT(BoundChannelsMixin, nn.Module):
    """ChA-MAEViT encoder, hybrid token fusion, classifier head and channel-aware decoder.

    Constructor keywords are the official ones (``decoder`` is a dict, see
    :data:`DEFAULT_DECODER`). Class defaults are the official yaml's, with the settings every
    official run uses where the yaml holds a placeholder (LayerScale ``init_values=1``, decoder
    depth 1, λ_task = 0.01). ``in_chans`` is the size of the channel table (channel ids
    ``0..in_chans-1``); an input may carry any subset of it, in any order. ``default_channels``
    binds the input bands so that ``model(x)`` needs no ``channels=`` (see :meth:`bind_channels`);
    ``drop_path_rate`` is stochastic depth over the encoder blocks (training only; 0 as the
    official runs). The encoder offers timm's API (``forward_intermediates``, ``feature_info``,
    ``prune_intermediate_layers``, ``reset_classifier``).

    Options of the reference code, off by default (the official runs use none of them):

    * ``decoder={"decoder_type": "camae_decoder"}``: one decoder per channel (:class:`CAMAEDecoder`),
      the "separate decoders" ablation of the paper's Table 4, instead of the shared
      channel-aware decoder (§3.3);
    * ``use_self_image_norm``: every channel of every image is standardised over its pixels
      (:func:`self_image_norm`) before the encoder, in every forward; the reconstruction target
      is then the standardised image (``mae_loss_norm`` applies on top of it; with
      ``mae_loss_norm=None`` the target is exactly the self-normalised image, CA-MAE's target);
    * ``channel_sampling="hcs"``: Hierarchical Channel Sampling (ChannelViT §3.2, the reference's
      ``training_sample: hcs``) in :meth:`pretrain_step`: m ~ U{channel_sampling_min ..
      channel_sampling_max} of the C input channels (bounds clipped to C; max None = C) are kept,
      once per batch for a regular batch and once per sample for a padded one (Python's
      ``random``, re-seeded every step by the training task), then DCP masks the kept channels.
      In the reference HCS replaces DCP (``training_sample`` is one or the other); running both is
      geovit's combination.
    """

    def __init__(
        self, img_size: int | tuple[int, int] | list[int] = 224, patch_size: int = 16, in_chans: int = 8,
        num_classes: int = 0, embed_dim: int = 384, depth: int = 11, num_heads: int = 6, mlp_ratio: float = 4.0,
        qkv_bias: bool = True, encoder_pooling: str = "cls_attn_pooling_sigmoid", num_memory_tokens: int = 4,
        init_values: float | None = 1.0, channel_tokens_init: str = "orthogonal", decoder: Mapping | None = None,
        mae_lambda: float = 0.99, mae_loss_norm: str | None = "norm_pix_loss", mae_recon_fourier_lambda: float = 0.01,
        mask_recon_fourier_loss: bool = True, cross_entropy_lambda: float = 0.01, cross_entropy_temperature: float = 5.0,
        proxy_loss_lambda: float = 0.0, proxy_temperature: float = 0.11, num_proxies: int = 0,
        use_proxy_head: bool = False, diverse_patch_token_weight: float = 1e-5, diverse_patch_token_gamma_s: float = 1.0,
        diverse_patch_token_gamma_d: float = 4.0, diverse_channel_token_weight: float = 1e-4,
        diverse_channel_token_temperature: float = 0.1, drop_path_rate: float = 0.0, default_channels: Any = None,
        use_self_image_norm: bool = False, channel_sampling: str | None = None, channel_sampling_min: int = 1,
        channel_sampling_max: int | None = None,
    ):
        super().__init__()
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(int(s) for s in img_size)
        if len(size) != 2 or size[0] != size[1] or size[0] % patch_size:
            raise GeovitError(f"img_size: {img_size}, expected a square size divisible by patch_size={patch_size}")
        if encoder_pooling not in POOLINGS:
            raise GeovitError(f"encoder_pooling: {encoder_pooling!r}, expected one of {POOLINGS}")
        if channel_tokens_init not in CHANNEL_INITS:
            raise GeovitError(f"channel_tokens_init: {channel_tokens_init!r}, expected one of {CHANNEL_INITS}")
        if mae_loss_norm not in MAE_LOSS_NORMS:
            raise GeovitError(f"mae_loss_norm: {mae_loss_norm!r}, expected one of {MAE_LOSS_NORMS}")
        if embed_dim % num_heads:
            raise GeovitError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        if dict(decoder or {}).get("decoder_type", "chamaevit_decoder") not in DECODER_TYPES:
            raise GeovitError(f"decoder.decoder_type: {dict(decoder)['decoder_type']!r}, expected one of "
                              f"{DECODER_TYPES} (the channel-aware decoder, or CA-MAE's per-channel decoders)")
        if isinstance(channel_sampling, str) and channel_sampling.lower() in ("none", ""):
            channel_sampling = None
        if isinstance(channel_sampling, str):
            channel_sampling = channel_sampling.lower()
        if channel_sampling not in CHANNEL_SAMPLINGS:
            raise GeovitError(f"channel_sampling: {channel_sampling!r}, expected one of {CHANNEL_SAMPLINGS}")
        check_count_bounds(channel_sampling_min, channel_sampling_max)
        if not isinstance(use_self_image_norm, bool):
            raise GeovitError(f"use_self_image_norm: {use_self_image_norm!r}, expected true or false")
        dec = {**DEFAULT_DECODER, **{k: v for k, v in dict(decoder or {}).items() if k not in _DECODER_IGNORED}}
        unknown = sorted(set(dec) - set(DEFAULT_DECODER))
        if unknown:
            raise GeovitError(f"decoder: unknown keys {unknown}; expected some of {sorted(DEFAULT_DECODER)}")
        if dec["embed_dim"] not in (None, embed_dim):
            raise GeovitError(f"decoder.embed_dim={dec['embed_dim']}: the channel-aware decoder adds the encoder's "
                              f"channel tokens and positions, so it must equal embed_dim={embed_dim} (or be null)")
        check_mask_ratio(dec["dcp_mask_ratio"], "decoder.dcp_mask_ratio")
        check_strategy_probabilities(dec["dcp_p_patch"], dec["dcp_p_channel"])

        self.config = {
            "img_size": size[0], "patch_size": patch_size, "in_chans": in_chans, "num_classes": num_classes,
            "embed_dim": embed_dim, "depth": depth, "num_heads": num_heads, "mlp_ratio": float(mlp_ratio),
            "qkv_bias": bool(qkv_bias), "encoder_pooling": encoder_pooling, "num_memory_tokens": num_memory_tokens,
            "init_values": init_values, "channel_tokens_init": channel_tokens_init, "decoder": dec,
            "mae_lambda": mae_lambda, "mae_loss_norm": mae_loss_norm, "mae_recon_fourier_lambda": mae_recon_fourier_lambda,
            "mask_recon_fourier_loss": mask_recon_fourier_loss, "cross_entropy_lambda": cross_entropy_lambda,
            "cross_entropy_temperature": cross_entropy_temperature, "proxy_loss_lambda": proxy_loss_lambda,
            "proxy_temperature": proxy_temperature, "num_proxies": num_proxies, "use_proxy_head": use_proxy_head,
            "diverse_patch_token_weight": diverse_patch_token_weight,
            "diverse_patch_token_gamma_s": diverse_patch_token_gamma_s,
            "diverse_patch_token_gamma_d": diverse_patch_token_gamma_d,
            "diverse_channel_token_weight": diverse_channel_token_weight,
            "diverse_channel_token_temperature": diverse_channel_token_temperature,
            "drop_path_rate": drop_path_rate, "use_self_image_norm": use_self_image_norm,
            "channel_sampling": channel_sampling, "channel_sampling_min": channel_sampling_min,
            "channel_sampling_max": channel_sampling_max,
        }
        self.img_size, self.patch_size, self.in_chans = size[0], patch_size, in_chans
        self.num_features = self.embed_dim = embed_dim
        self.num_classes = num_classes
        self.encoder_pooling = encoder_pooling
        self.num_memory_tokens = num_memory_tokens
        self.num_extra_tokens = 1 + num_memory_tokens
        self.grid_size = size[0] // patch_size
        self.num_patches_per_channel = self.grid_size ** 2
        # DCP settings live on the instance (the official attributes; tests force strategies with them).
        self.dcp_mask_ratio = dec["dcp_mask_ratio"]
        self.dcp_p_patch, self.dcp_p_channel = dec["dcp_p_patch"], dec["dcp_p_channel"]
        self.dcp_at_least_mask_one_channel = bool(dec["dcp_at_least_mask_one_channel"])
        self.decoder_type = dec["decoder_type"]
        #: how the shared patch projection runs: "matmul" (default) or "conv" (see :meth:`_project`)
        self.patch_projection = "matmul"
        self.use_self_image_norm = use_self_image_norm
        self.channel_sampling = channel_sampling
        self.channel_sampling_min, self.channel_sampling_max = channel_sampling_min, channel_sampling_max

        # --- encoder (§3) ---------------------------------------------------------------
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        if encoder_pooling != "cls_token":
            self.pooling_query = nn.Parameter(torch.zeros(1, embed_dim))
        if num_memory_tokens > 0:
            self.memory_tokens = nn.Parameter(torch.zeros(1, num_memory_tokens, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_extra_tokens + self.num_patches_per_channel, embed_dim))
        if diverse_channel_token_weight > 0:
            self.channel_token_proxies = nn.Parameter(torch.empty(in_chans, embed_dim))
        if proxy_loss_lambda > 0:
            if num_proxies <= 0:
                raise GeovitError(f"num_proxies={num_proxies}: the proxy loss (proxy_loss_lambda > 0) needs >= 1 proxy")
            self.output_proxies = nn.Parameter(torch.empty(num_proxies, embed_dim))
        self.patch_embed = PatchEmbedPerChannel(patch_size, in_chans, embed_dim, channel_tokens_init)
        if encoder_pooling != "cls_token":
            self.attn_pooling = HybridTokenFusion(embed_dim, num_heads)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linspace(0, rate, depth)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, init_values=init_values,
                  drop_path=dpr[i], norm_layer=_norm_layer, act_layer=nn.GELU) for i in range(depth)
        ])
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=patch_size) for i in range(depth)]
        self.norm = _norm_layer(embed_dim)
        # --- heads and decoder (§3.2-3.4) ----------------------------------------------------
        if num_classes > 0:
            self.classifier_head = nn.Sequential(nn.Linear(embed_dim, 4 * embed_dim), nn.GELU(),
                                                 nn.Linear(4 * embed_dim, num_classes))
        if proxy_loss_lambda > 0:
            self.proxy_head = nn.Linear(embed_dim, embed_dim) if use_proxy_head else nn.Identity()
        if mae_lambda > 0:
            if self.decoder_type == "camae_decoder":
                self.decoder = CAMAEDecoder(in_chans, embed_dim, dec["depth"], dec["num_heads"], dec["mlp_ratio"],
                                            dec["qkv_bias"])
            else:
                self.decoder = ChannelAwareDecoder(embed_dim, dec["depth"], dec["num_heads"], dec["mlp_ratio"],
                                                   dec["qkv_bias"])
            self.encoder_decoder_proj = nn.Linear(embed_dim, embed_dim)
            self.decoder_pred = nn.Linear(embed_dim, patch_size ** 2)
        self._init_weights()
        self.bind_channels(default_channels)

    def _init_weights(self) -> None:
        for p in [self.pos_embed, self.cls_token, getattr(self, "memory_tokens", None), getattr(self, "pooling_query", None)]:
            if p is not None:
                nn.init.trunc_normal_(p, std=0.02)
        for name in ("channel_token_proxies", "output_proxies"):
            if hasattr(self, name):
                nn.init.orthogonal_(getattr(self, name))
        self.apply(trunc_normal_init)
        if hasattr(self, "decoder"):
            nn.init.normal_(self.decoder.mask_token, std=0.02)
            for token in getattr(self.decoder, "modality_tokens", ()):
                nn.init.normal_(token, std=0.02)

    # ------------------------------------------------------------------ input checking
    def _resolve_channels(self, x: Tensor, channels: Any, channel_mask: Tensor | None) -> ChannelIds:
        if not torch.is_tensor(x) or x.ndim != 4:
            raise GeovitError(f"x: expected a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
        h, w = x.shape[-2:]
        p = self.patch_size
        if h % p or w % p or x.shape[1] < 1:
            raise GeovitError(f"x: spatial size {h}x{w} is not divisible by patch_size={p} (or no channels)")
        return self.patch_embed.resolve_channels(x, channels, channel_mask)

    # ------------------------------------------------------------------ encoder
    def interpolate_pos_encoding(self, num_channels: int, grid_h: int, grid_w: int) -> Tensor:
        """Positional embedding (1, E + C*h*w, D): extra rows as is, the grid tiled over channels.

        As the official code, the grid is bicubically resampled (DINO quirk: scale factor
        (h+0.1)/g, not the identity at native size) unless C == 1 at the native grid.
        """
        if num_channels == 1 and grid_h == grid_w == self.grid_size:
            return self.pos_embed
        return tile_pos_embed(self.pos_embed, self.num_extra_tokens, num_channels, grid_h, grid_w)

    def _encode(self, x: Tensor, ch: ChannelIds, masks: DCPMasks | None):
        """Tokens -> encoder output. Returns (tokens (B, E+N, D), raw patch embeddings (B, C, P, D),
        channel tokens (n, C, D), positional embedding (1, E+C*P, D))."""
        seq, raw, chan, pos, key_mask = self._embed(x, ch, masks)
        for blk in self.blocks:
            seq = blk(seq, attn_mask=key_mask)
        return self.norm(seq), raw, chan, pos

    def _project(self, x: Tensor) -> Tensor:
        """Raw patch embeddings (B, C, P, D): the shared p×p projection as one matmul.

        The same numbers as the Conv3d of §2.1 (``patch_embed.proj``, whose weights it uses): a
        stride-p conv with a p×p kernel is a Linear over the flattened patches. The matmul form
        is used because its backward is a plain matmul, where the CPU conv backward is many times
        slower; ``patch_projection="conv"`` keeps the convolution (the reference's path).
        """
        if self.patch_projection == "conv":
            return self.patch_embed.project(x)
        b, c, h, w = x.shape
        proj = self.patch_embed.proj
        patches = patchify(x, self.patch_size).reshape(b, c, -1, self.patch_size ** 2)
        return F.linear(patches, proj.weight.reshape(proj.weight.shape[0], -1), proj.bias)

    def _embed(self, x: Tensor, ch: ChannelIds, masks: DCPMasks | None):
        """Input sequence (B, E+N, D), raw patch embeddings, channel tokens, positions, attention key mask."""
        b, c, h, w = x.shape
        p, e = self.patch_size, self.num_extra_tokens
        raw = self._project(x)
        chan = self.patch_embed.channel_tokens(ch.ids, ch.valid)
        tokens = (raw + chan[:, :, None, :]).flatten(1, 2)
        pos = self.interpolate_pos_encoding(c, h // p, w // p)
        tokens = tokens + pos[:, e:]
        extra = [self.cls_token] + ([self.memory_tokens] if self.num_memory_tokens else [])
        extra = torch.cat(extra, dim=1) + pos[:, :e]
        key_mask = None
        if masks is not None:
            tokens = torch.gather(tokens, 1, masks.tokens_to_keep[..., None].expand(-1, -1, tokens.shape[-1]))
            if masks.mae_patch_masks is not None:
                key_mask = _key_mask(e, masks.mae_patch_masks)
        elif ch.valid is not None:
            key_mask = _key_mask(e, ch.valid.repeat_interleave(raw.shape[2], dim=1))
        seq = torch.cat([extra.expand(b, -1, -1), tokens], dim=1)
        return seq, raw, chan, pos, key_mask

    def _fuse(self, tokens: Tensor) -> Tensor:
        """Hybrid token fusion (§3.2): the downstream feature (B, D)."""
        cls = tokens[:, 0]
        if self.encoder_pooling == "cls_token":
            return cls
        pooled = self.attn_pooling(self.pooling_query, tokens[:, self.num_extra_tokens:]).squeeze(1)
        if self.encoder_pooling == "cls_attn_pooling_sigmoid":
            return cls * torch.sigmoid(pooled)
        if self.encoder_pooling == "cls_attn_pooling":
            return cls + pooled
        raise GeovitError(f"encoder_pooling: {self.encoder_pooling!r}, expected one of {POOLINGS}")

    def _normalise_input(self, x: Tensor) -> Tensor:
        """The input the encoder sees: self-normalised per image and channel with ``use_self_image_norm``."""
        return self_image_norm(x)[0] if self.use_self_image_norm else x

    def forward_tokens(self, x: Tensor, channels: Any = None, channel_mask: Tensor | None = None) -> Tensor:
        """Final encoder tokens (B, E + C*P, D): [cls, memory..., patches channel-major], unmasked."""
        ch = self._resolve_channels(x, channels, channel_mask)
        return self._encode(self._normalise_input(x), ch, None)[0]

    def forward_features(self, x: Tensor, channels: Any = None, channel_mask: Tensor | None = None) -> Tensor:
        """The fused feature (B, D) of the unmasked input (the CHAMMI kNN / probe feature)."""
        return self._fuse(self.forward_tokens(x, channels, channel_mask))

    def forward_head(self, feat: Tensor, pre_logits: bool = False) -> Tensor:
        """Classifier logits of the fused feature (B, D), or the feature itself (``pre_logits`` or no head)."""
        if pre_logits or self.num_classes == 0:
            return feat
        return self.classifier_head(feat)

    def get_classifier(self) -> nn.Module:
        """The classifier MLP (``nn.Identity`` without classes)."""
        return getattr(self, "classifier_head", nn.Identity())

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier MLP Linear(D,4D)-GELU-Linear(4D,K) for ``num_classes`` (0: none).

        Args:
            num_classes: number of classes.
            global_pool: accepted for timm's signature; only None / ``""`` (the model's own fusion).

        Raises:
            GeovitError: another pooling.
        """
        if global_pool not in (None, ""):
            raise GeovitError(f"global_pool={global_pool!r}: ChA-MAEViT pools with its hybrid token fusion only")
        if hasattr(self, "classifier_head"):
            del self.classifier_head
        self.num_classes = self.config["num_classes"] = num_classes
        if num_classes > 0:
            d = self.embed_dim
            self.classifier_head = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, num_classes))
            self.classifier_head.apply(trunc_normal_init)

    def forward_intermediates(self, x: Tensor, indices: int | list[int] | None = None,
                              return_prefix_tokens: bool = False, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False, output_dict: bool = False,
                              *, channels: Any = None, channel_mask: Tensor | None = None):
        """Encoder block outputs as spatial maps, with timm's signature and return values.

        Every intermediate's channel-major patch tokens are reduced to one (B, D, h, w) map by the
        **mean over the channels present** (padded channels of a ``channel_mask`` are left out): the
        width and scale stay the same for any number of channels and the map does not depend on
        the order of the bands, so a decoder sees one contract for every band subset. The prefix
        tokens are the CLS and memory tokens. No masking: this is the downstream path.

        Args:
            x: (B, C, H, W).
            indices: blocks to return: the last n (int), those indices (sequence), or all (None).
            return_prefix_tokens: pair each map with the (B, 1 + memory, D) prefix tokens of that block.
            norm: apply the final LayerNorm to every intermediate (before the channel mean).
            stop_early: do not run the blocks after the last requested one.
            output_fmt: ``"NCHW"`` (B, D, H/p, W/p) or ``"NLC"`` (B, H/p * W/p, D).
            intermediates_only: return only the list.
            output_dict: return a dict as timm's ViT.
            channels: absolute channel ids (default: the bound ones, see :meth:`bind_channels`).
            channel_mask: (B, C) bool padding mask, as in :meth:`forward`.

        Returns:
            The intermediates, or ``(final encoder tokens after the norm, intermediates)``.

        Raises:
            GeovitError: bad input, channel ids, indices or ``output_fmt``.
        """
        fmt = check_output_fmt(output_fmt)
        take, last = take_indices(len(self.blocks), indices)
        ch = self._resolve_channels(x, channels, channel_mask)
        seq, _, _, _, key_mask = self._embed(self._normalise_input(x), ch, None)
        p, e = self.patch_size, self.num_extra_tokens
        h, w = x.shape[-2] // p, x.shape[-1] // p
        blocks = self.blocks[: last + 1] if stop_early else self.blocks
        maps, prefixes = [], []
        for i, blk in enumerate(blocks):
            seq = blk(seq, attn_mask=key_mask)
            if i in take:
                y = self.norm(seq) if norm else seq
                maps.append(channel_mean_map(y, e, x.shape[1], h, w, ch.valid))
                prefixes.append(y[:, :e])
        return finish_intermediates(maps, prefixes, lambda: self.norm(seq), h=h, w=w, output_fmt=fmt,
                                    return_prefix_tokens=return_prefix_tokens,
                                    intermediates_only=intermediates_only, output_dict=output_dict)

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Keep what ``forward_intermediates`` needs for ``indices`` (a feature backbone), as timm.

        Drops the blocks after the last requested one; ``prune_norm`` the final norm;
        ``prune_head`` the classifier, the token fusion and the pretraining parts (decoder,
        proxies), which a feature backbone never runs (so no parameter sits unused in
        distributed training). A pruned model serves ``forward_intermediates`` only.

        Args:
            indices: the levels to keep (int: the last n).
            prune_norm: replace the final norm by an identity.
            prune_head: remove the heads as above.

        Returns:
            The kept absolute indices.
        """
        take = prune_blocks(self, indices, prune_norm, prune_head)
        if prune_head:
            for name in ("attn_pooling", "pooling_query", "decoder", "encoder_decoder_proj", "decoder_pred",
                         "proxy_head", "output_proxies", "channel_token_proxies"):
                if hasattr(self, name):
                    delattr(self, name)
            self.encoder_pooling = "cls_token"
        return take

    def forward(self, x: Tensor, channels: Any = None, channel_mask: Tensor | None = None) -> Tensor:
        """Logits (B, num_classes), or the fused feature (B, D) when ``num_classes == 0``.

        ``channels``: absolute channel ids, (C,) shared or (B, C) per sample; default
        ``arange(C)``. ``channel_mask``: (B, C) bool, True = real channel, for padded batches
        (padded channels must be zero; their tokens are excluded as attention keys).
        """
        return self.forward_head(self.forward_features(x, channels, channel_mask))

    # ------------------------------------------------------------------ pretraining
    def sample_masks(self, batch: int, num_channels: int, channel_mask: Tensor | None = None,
                     device: torch.device | str = "cpu", strategy: str | None = None) -> DCPMasks:
        """Draw DCP masks with the instance's ``dcp_*`` settings (strategy drawn unless given)."""
        check_mask_ratio(self.dcp_mask_ratio)
        check_strategy_probabilities(self.dcp_p_patch, self.dcp_p_channel)
        if strategy is None:
            strategy = sample_dcp_strategy(self.dcp_p_patch, self.dcp_p_channel)
        return dynamic_channel_patch_masking(batch, num_channels, self.num_patches_per_channel, self.dcp_mask_ratio,
                                             strategy, self.dcp_at_least_mask_one_channel, channel_mask, device)

    def pretrain_step(self, x: Tensor, channels: Any = None, channel_mask: Tensor | None = None,
                      masks: DCPMasks | Mapping | None = None, labels: Tensor | None = None) -> dict[str, Any]:
        """One ChA-MAEViT training forward: DCP masking, encoder, fusion, decoder, every loss.

        Masking and the decoder always run here (whatever ``self.training``); dropout-free, so
        the result only depends on the masks. ``x`` is (B, C, H, W) with H == W == img_size;
        ``channels`` / ``channel_mask`` as in :meth:`forward`; ``masks`` injects a
        :class:`DCPMasks` (or a dict of its fields) instead of drawing one; ``labels`` (B,) long
        class indices enable the supervised terms (CE on the classifier head, proxy loss).

        Returns a dict (L = C * P tokens, P = (H/p)², all losses are 0-dim tensors):

        * ``"loss"``: total to backprop = mae_lambda·loss_mae + cross_entropy_lambda·loss_ce
          + proxy_loss_lambda·loss_proxy + diverse_patch_token_weight·loss_token_diversity
          + diverse_channel_token_weight·loss_channel_diversity;
        * ``"loss_mae"`` = (1-λf)·loss_recon + λf·loss_fourier (λf = mae_recon_fourier_lambda);
        * ``"loss_recon"``: pixel MSE on hidden patches (norm-pix target); ``"loss_fourier"``;
        * ``"loss_ce"``, ``"loss_proxy"``: unweighted supervised terms (0 without ``labels``);
        * ``"loss_task"`` = cross_entropy_lambda·loss_ce + proxy_loss_lambda·loss_proxy;
        * ``"loss_token_diversity"``, ``"loss_channel_diversity"``: DiChaViT regularisers;
          every ``loss_*`` except ``loss`` and ``loss_task`` is unweighted;
        * ``"logits"``: classifier logits (B, num_classes), or the fused feature if no head;
        * ``"features"``: fused feature (B, D) of the masked input;
        * ``"pred"``: raw decoder output (B, L, p²) in the loss's target space (None if skipped);
        * ``"reconstruction"``: (B, C, H, W) prediction mapped back to the input's pixel space
          (norm-pix: per-patch mean/std of the input patch re-applied; instance_norm: the
          per-channel stats); zeros when the decoder was skipped;
        * ``"pixel_mask"``: (B, C, H, W) bool, True where the input was hidden (padding False);
        * ``"masks"``: the :class:`DCPMasks` used (pass it back as ``masks=`` to repeat a step);
        * ``"decoder_skipped"``: bool, True for a regular-batch channel-only draw that hid
          nothing (official rule: no decoder, MAE terms 0);
        * ``"channels_drawn"``: (B, C) bool, the input channels channel sampling kept (all True
          without it). With ``channel_sampling``, ``masks`` / ``pred`` / the losses refer to the
          kept channels only (in draw order), while ``reconstruction`` and ``pixel_mask`` keep the
          input's channel layout (zeros / False for channels not drawn). Channel sampling runs only
          when the masks are drawn here (injected ``masks`` fix the whole draw).

        With ``use_self_image_norm`` the losses are computed on the self-normalised input and
        ``reconstruction`` is mapped back with each image's per-channel mean and std.
        """
        if not hasattr(self, "decoder"):
            raise GeovitError("pretrain_step: this model was built with mae_lambda=0 (no decoder to pretrain)")
        ch = self._resolve_channels(x, channels, channel_mask)
        full_channels = x.shape[1]
        drawn = None
        if self.channel_sampling == "hcs" and masks is None:
            x, ch, drawn = self._sample_channels(x, ch)
        stats = None
        if self.use_self_image_norm:
            x, mean, std = self_image_norm(x)
            stats = (mean, std)
        b, c, h, w = x.shape
        if h != w:
            raise GeovitError(f"pretrain_step: x is {h}x{w}; the reconstruction target needs square images")
        P = (h // self.patch_size) ** 2
        if masks is None:
            masks = self.sample_masks(b, c, ch.valid, x.device)
        else:
            masks = DCPMasks.coerce(masks).to(x.device)
            masks.check(b, c, P, ch.valid is not None)
        out = self._pretrain_losses(x, ch, masks, labels)
        if stats is not None and not out["decoder_skipped"]:  # back to the input's pixel space
            out["reconstruction"] = out["reconstruction"] * stats[1] + stats[0]
        out["channels_drawn"] = torch.ones(b, full_channels, dtype=torch.bool, device=x.device)
        if drawn is not None:
            positions, kept = drawn
            out["channels_drawn"] = _scatter_channels(kept, positions, kept, full_channels).bool()
            out["reconstruction"] = _scatter_channels(out["reconstruction"], positions, kept, full_channels)
            out["pixel_mask"] = _scatter_channels(out["pixel_mask"], positions, kept, full_channels)
        return out

    def _sample_channels(self, x: Tensor, ch: ChannelIds) -> tuple[Tensor, ChannelIds, tuple[Tensor, Tensor]]:
        """HCS of the input channels (ChannelViT §3.2; the reference's ``training_sample: hcs``).

        Regular batch: one draw for the batch, ``x[:, draw]``. Padded batch: one draw per sample
        over its real channels, repacked to the front (zeros after), as the reference does.

        Returns:
            The kept channels, their ids (and padding mask), and ``(positions, kept)``: for every
            kept slot, the channel position in the original input (B, C') and whether the slot
            holds a channel (B, C').
        """
        b, c, height, width = x.shape
        lo, hi = self.channel_sampling_min, self.channel_sampling_max
        if ch.valid is None:
            index = torch.as_tensor(hcs_draw(c, None, lo, hi), device=x.device)
            positions = index[None].expand(b, -1)
            kept = torch.ones_like(positions, dtype=torch.bool)
            return x.index_select(1, index), ChannelIds(ch.ids.index_select(1, index), None), (positions, kept)
        rows = []
        for real in ch.valid.cpu():
            where = real.nonzero().flatten().tolist()
            rows.append([where[j] for j in hcs_draw(len(where), None, lo, hi)])
        width_c = max(len(r) for r in rows)
        positions = torch.tensor([r + [0] * (width_c - len(r)) for r in rows], device=x.device)
        kept = torch.arange(width_c, device=x.device)[None] < torch.tensor([len(r) for r in rows], device=x.device)[:, None]
        sub = torch.gather(x, 1, positions[..., None, None].expand(-1, -1, height, width))
        sub = sub * kept[..., None, None].to(sub.dtype)
        ids = torch.gather(ch.ids.expand(b, c), 1, positions).masked_fill(~kept, 0)
        return sub, ChannelIds(ids, kept), (positions, kept)

    def _pretrain_losses(self, x: Tensor, ch: ChannelIds, masks: DCPMasks, labels: Tensor | None) -> dict[str, Any]:
        """Encoder, fusion, heads, decoder and every loss term for prepared input and masks."""
        b, c = x.shape[:2]
        tokens, raw, chan, pos = self._encode(x, ch, masks)
        feat = self._fuse(tokens)
        logits = self.forward_head(feat)
        zero = feat.new_zeros(())
        out: dict[str, Any] = {"masks": masks, "features": feat, "logits": logits, "decoder_skipped": masks.skip_decoder}

        # supervised terms (§3.4, λ_task)
        out["loss_ce"] = out["loss_proxy"] = zero
        if labels is not None:
            labels = self._check_labels(labels, b, x.device)
            if self.num_classes > 0 and self.config["cross_entropy_lambda"] > 0:
                out["loss_ce"] = F.cross_entropy(logits / self.config["cross_entropy_temperature"], labels)
            if self.config["proxy_loss_lambda"] > 0:
                out["loss_proxy"] = proxy_loss(self.output_proxies, self.proxy_head(feat), labels,
                                               math.sqrt(1.0 / self.config["proxy_temperature"]))
        out["loss_task"] = (self.config["cross_entropy_lambda"] * out["loss_ce"]
                            + self.config["proxy_loss_lambda"] * out["loss_proxy"])

        # DiChaViT regularisers, on the raw patch embeddings and the channel tokens
        cfg = self.config
        out["loss_token_diversity"] = out["loss_channel_diversity"] = zero
        if cfg["diverse_patch_token_weight"] > 0:
            out["loss_token_diversity"] = token_diversification_loss(
                raw, masks.visibles, cfg["diverse_patch_token_gamma_s"], cfg["diverse_patch_token_gamma_d"])
        if cfg["diverse_channel_token_weight"] > 0:
            present = ch.ids.expand(b, c)[ch.valid if ch.valid is not None else masks.channels_sampled]
            present = torch.unique(present)
            if present.numel():
                table = self.patch_embed.channel_embed.weight
                out["loss_channel_diversity"] = proxy_loss(self.channel_token_proxies, table[present], present,
                                                           math.sqrt(1.0 / cfg["diverse_channel_token_temperature"]))

        # channel-aware decoder and reconstruction terms (§3.3)
        out.update(self._reconstruct(x, tokens, chan, pos, ch, masks))
        out["loss"] = (cfg["mae_lambda"] * out["loss_mae"] + out["loss_task"]
                       + cfg["diverse_patch_token_weight"] * out["loss_token_diversity"]
                       + cfg["diverse_channel_token_weight"] * out["loss_channel_diversity"])
        return out

    def _check_labels(self, labels: Any, batch: int, device: torch.device) -> Tensor:
        labels = torch.as_tensor(labels, device=device)
        if labels.shape != (batch,) or labels.is_floating_point():
            raise GeovitError(f"labels: expected {batch} integer class indices, got {labels.dtype} {tuple(labels.shape)}")
        labels = labels.long()
        n = self.num_classes if self.num_classes > 0 else self.config["num_proxies"]
        if labels.numel() and (int(labels.min()) < 0 or (n > 0 and int(labels.max()) >= n)):
            raise GeovitError(f"labels: values must lie in 0..{n - 1}, got {sorted({int(v) for v in labels})}")
        return labels

    def _reconstruct(self, x: Tensor, tokens: Tensor, chan: Tensor, pos: Tensor, ch: ChannelIds,
                     masks: DCPMasks) -> dict[str, Any]:
        b, c, h, w = x.shape
        p, e, cfg = self.patch_size, self.num_extra_tokens, self.config
        P = (h // p) ** 2
        pixel_mask = masks.mask.reshape(b, c, h // p, w // p).repeat_interleave(p, 2).repeat_interleave(p, 3)
        zero = x.new_zeros(())
        if masks.skip_decoder:
            return {"pred": None, "reconstruction": torch.zeros_like(x), "pixel_mask": pixel_mask,
                    "loss_recon": zero, "loss_fourier": zero, "loss_mae": zero}
        latent = self.encoder_decoder_proj(tokens)
        if self.decoder_type == "camae_decoder":
            dec = self.decoder(latent, masks.ind_restore, ch.ids, pos, e, ch.valid)
        else:
            key_mask = None if ch.valid is None else _key_mask(e, ch.valid.repeat_interleave(P, dim=1))
            chan_patches = chan.repeat_interleave(P, dim=1)  # (n, L, D)
            dec = self.decoder(latent, masks.ind_restore, chan_patches, pos, e, key_mask)
        pred = self.decoder_pred(dec)[:, e:]

        source = x.float()
        if cfg["mae_loss_norm"] == "instance_norm":
            source, mean, std = self_image_norm(source)
        target = patchify(source, p)
        if cfg["mae_loss_norm"] == "norm_pix_loss":
            target, t_mean, t_std = norm_pix(target)
            shown = unpatchify(pred * t_std + t_mean, c, h, w, p)
        else:
            shown = unpatchify(pred, c, h, w, p)
            if cfg["mae_loss_norm"] == "instance_norm":
                shown = shown * std + mean
        recon = reconstruction_loss(pred, target, masks.mask)
        lam_f = cfg["mae_recon_fourier_lambda"]
        fourier = zero
        if lam_f > 0:
            fourier = fourier_loss(pred, target, masks.mask if cfg["mask_recon_fourier_loss"] else None, c)
        return {"pred": pred, "reconstruction": shown, "pixel_mask": pixel_mask, "loss_recon": recon,
                "loss_fourier": fourier, "loss_mae": (1 - lam_f) * recon + lam_f * fourier}


# ---------------------------------------------------------------------- family contract
def build(config: Mapping[str, Any]) -> ChAMAEViT:
    """Rebuild from ``model.config`` (or any subset of the constructor keywords).

    Args:
        config: constructor keywords.

    Returns:
        The model (random weights).

    Raises:
        GeovitError: unknown keys or invalid settings.
    """
    config = copy.deepcopy(dict(config))
    allowed = set(ChAMAEViT.__init__.__code__.co_varnames[1:ChAMAEViT.__init__.__code__.co_argcount])
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise GeovitError(f"chamaevit config: unknown keys {unknown}; expected some of {sorted(allowed)}")
    return ChAMAEViT(**config)


#: official constructor keywords that do not change the eval-mode network (accepted and dropped).
_OFFICIAL_IGNORED = ("attention_cls", "qk_scale", "drop_rate", "attn_drop_rate", "drop_path_rate", "norm_layer",
                     "training_sample", "proxy_orthogonal_init", "model_size", "use_channel_tokens")
_CHANNEL_TABLE = "patch_embed.channel_embed.weight"
#: tensors only a ChA-MAEViT has (tells a geovit-keyed ChA-MAEViT state dict from a ChannelViT one).
_OWN_TENSORS = ("memory_tokens", "pooling_query", "decoder.mask_token", "blocks.0.ls1.gamma",
                "classifier_head.0.weight", "channel_token_proxies", "output_proxies")


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: ChAMAEViT | None = None) -> dict[str, Tensor]:
    """Official ChA-MAEViT state dict -> geovit keys.

    The official keys are geovit's but for the channel table: ``patch_embed.channel_tokens``
    (1, D, C, 1, 1) becomes ``patch_embed.channel_embed.weight`` (C, D). Wrapper prefixes
    (``module.``, ``_orig_mod.``) and Lightning nesting are removed; a geovit state dict passes.

    Args:
        state_dict: ``model.safetensors`` of a ``checkpoint-*/`` folder or
            ``torch.save(model.state_dict())``.
        model: the model it is for; when given, a geovit-keyed dict is taken as ChA-MAEViT's
            even without a tensor only ChA-MAEViT has.

    Returns:
        geovit-keyed tensors.

    Raises:
        CheckpointError: not a ChA-MAEViT checkpoint (a ChannelViT one is named as such).
    """
    state = unwrap_checkpoint(state_dict, "cls_token", family="ChA-MAEViT")
    if "patch_embed.channel_tokens" in state:
        tokens = state.pop("patch_embed.channel_tokens")
        if tokens.ndim != 5:
            raise CheckpointError(f"key 'patch_embed.channel_tokens': shape {tuple(tokens.shape)}, "
                                  "expected (1, D, C, 1, 1)")
        state[_CHANNEL_TABLE] = channel_table_from_5d(tokens)
    elif model is None and not any(k in state for k in _OWN_TENSORS):
        hint = ""
        if any(k.startswith("patch_embed.channel_embed") for k in state):
            hint = " (a ChannelViT / DiChaViT checkpoint? load it with family 'channelvit')"
        raise CheckpointError("not a ChA-MAEViT checkpoint: no 'patch_embed.channel_tokens' (1, D, C, 1, 1) and "
                              f"none of the tensors only ChA-MAEViT has ({', '.join(_OWN_TENSORS)}){hint}")
    return state


def infer_config(state_dict: Mapping[str, Tensor], config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Constructor keywords: what the tensors determine, then the given official ``config``.

    Args:
        state_dict: geovit-keyed tensors (output of :func:`checkpoint_filter_fn`).
        config: official constructor keywords; anything the tensors determine may be omitted,
            and what is given must agree with them.

    Returns:
        Constructor keywords of :class:`ChAMAEViT`.

    Raises:
        CheckpointError: a required tensor is missing or the config disagrees with the tensors.
    """
    state, config = state_dict, dict(config or {})

    def shape(key: str) -> tuple[int, ...]:
        return tuple(state[key].shape)

    for key, ndim in ((_CHANNEL_TABLE, 2), ("patch_embed.proj.weight", 5), ("pos_embed", 3), ("cls_token", 3)):
        if key not in state or state[key].ndim != ndim:
            raise CheckpointError(f"not a ChA-MAEViT checkpoint: key {key!r} ({ndim}-d tensor) is missing")
    dim = shape("cls_token")[2]
    patch = shape("patch_embed.proj.weight")[-1]
    memory = shape("memory_tokens")[1] if "memory_tokens" in state else 0
    grid = shape("pos_embed")[1] - 1 - memory
    side = math.isqrt(grid)
    if side * side != grid:
        raise CheckpointError(f"pos_embed {shape('pos_embed')} with {memory} memory tokens leaves {grid} grid slots, "
                              "not a square grid")
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    per_channel = any(k.startswith("decoder.decoders.") for k in state)
    if per_channel:  # CA-MAE's per-channel decoders: decoder.decoders.{channel}.{block}.*
        dec_depth = len({k.split(".")[3] for k in state if k.startswith("decoder.decoders.0.")})
        dec_prefix = "decoder.decoders.0.0"
    else:
        dec_depth = len({k.split(".")[2] for k in state if k.startswith("decoder.blocks.")})
        dec_prefix = "decoder.blocks.0"
    derived: dict[str, Any] = {
        "img_size": side * patch, "patch_size": patch, "in_chans": shape(_CHANNEL_TABLE)[0],
        "embed_dim": dim, "depth": depth, "num_memory_tokens": memory,
        "mlp_ratio": shape("blocks.0.mlp.fc1.weight")[0] / dim if depth else 4.0,
        "qkv_bias": "blocks.0.attn.qkv.bias" in state,
        "init_values": 1.0 if "blocks.0.ls1.gamma" in state else None,
        "num_classes": shape("classifier_head.2.weight")[0] if "classifier_head.2.weight" in state else 0,
        "num_proxies": shape("output_proxies")[0] if "output_proxies" in state else 0,
        "use_proxy_head": "proxy_head.weight" in state,
    }
    user = {k: v for k, v in dict(config).items() if k not in _OFFICIAL_IGNORED}
    sample = str(dict(config).get("training_sample") or "").lower()
    if sample.startswith("hcs") and "channel_sampling" not in user:  # the reference's HCS (training only)
        user["channel_sampling"] = "hcs"
    # switches whose presence the tensors reveal: keep the user's weight, or the official default
    switches = {"encoder_pooling": ("pooling_query", "cls_attn_pooling_sigmoid", "cls_token"),
                "cross_entropy_lambda": ("classifier_head.0.weight", 0.01, 0.0),
                "proxy_loss_lambda": ("output_proxies", 0.01, 0.0),
                "diverse_channel_token_weight": ("channel_token_proxies", 1e-4, 0.0),
                "mae_lambda": ("decoder.mask_token", 0.99, 0.0)}
    for name, (key, on, off) in switches.items():
        present = key in state
        value = user.get(name, on if present else off)
        if (value not in (0, 0.0, "cls_token")) != present:
            raise CheckpointError(f"config {name}={value!r} disagrees with the checkpoint "
                                  f"({'has' if present else 'has no'} {key!r})")
        derived[name] = value
    if "num_heads" not in user:
        if dim not in VIT_HEADS_BY_WIDTH:
            raise CheckpointError(f"embed_dim={dim}: pass num_heads in config (cannot be read from the tensors)")
        derived["num_heads"] = VIT_HEADS_BY_WIDTH[dim]
    decoder = dict(user.pop("decoder", None) or {})
    if per_channel:
        given_type = decoder.get("decoder_type", "camae_decoder")
        if given_type != "camae_decoder":
            raise CheckpointError(f"config decoder.decoder_type={given_type!r} disagrees with the checkpoint "
                                  "(it holds per-channel decoders 'decoder.decoders.*': 'camae_decoder')")
        decoder["decoder_type"] = "camae_decoder"
    elif "decoder.mask_token" in state and decoder.get("decoder_type", "chamaevit_decoder") != "chamaevit_decoder":
        raise CheckpointError(f"config decoder.decoder_type={decoder['decoder_type']!r} disagrees with the "
                              "checkpoint (it holds the shared channel-aware decoder 'decoder.blocks.*')")
    if dec_depth:
        decoder["depth"] = dec_depth
        decoder["qkv_bias"] = f"{dec_prefix}.attn.qkv.bias" in state
        decoder["mlp_ratio"] = shape(f"{dec_prefix}.mlp.fc1.weight")[0] / dim
    for key, value in user.items():
        if key in derived and key not in switches and key != "num_heads" and value is not None:
            want = derived[key]
            got = value[0] if key == "img_size" and isinstance(value, (list, tuple)) else value
            if got != want and not (key == "mlp_ratio" and math.isclose(float(got), float(want))):
                raise CheckpointError(f"config {key}={value!r} disagrees with the checkpoint tensors ({key}={want!r})")
    merged = {**user, **{k: v for k, v in derived.items() if k not in user or k in switches}, "decoder": decoder}
    return merged


def load_official(state_dict: Mapping[str, Tensor], config: Mapping[str, Any] | None = None) -> ChAMAEViT:
    """Build a :class:`ChAMAEViT` from an official state dict, in eval mode.

    Args:
        state_dict: ``model.safetensors`` of a ``checkpoint-*/`` folder, or
            ``torch.save(model.state_dict())`` (see :func:`checkpoint_filter_fn`).
        config: the official constructor keywords; anything the tensors determine may be omitted.

    Returns:
        The loaded model.

    Raises:
        CheckpointError: a foreign file, a contradicting config, or tensors that do not fit.
    """
    return convert_official(state_dict, config, filter_fn=checkpoint_filter_fn, infer_fn=infer_config,
                            build_fn=build, family="ChA-MAEViT")


# ---------------------------------------------------------------------- registry
#: Official per-dataset recipes (specs/chamaevit.md §7). Encoder depth 11 (+ 1 decoder block).
RECIPES: dict[str, dict[str, Any]] = {
    "so2sat": dict(img_size=32, in_chans=18, num_classes=17, num_memory_tokens=8, encoder_pooling="cls_attn_pooling",
                   cross_entropy_lambda=0.01, cross_entropy_temperature=10.0, diverse_patch_token_weight=1e-5,
                   diverse_patch_token_gamma_s=1.0, diverse_patch_token_gamma_d=4.0, diverse_channel_token_weight=1e-4,
                   decoder={"dcp_p_patch": 0.0, "dcp_p_channel": 0.0, "dcp_mask_ratio": 0.25}),
    "jumpcp": dict(img_size=224, in_chans=8, num_classes=161, num_memory_tokens=4,
                   encoder_pooling="cls_attn_pooling_sigmoid", cross_entropy_lambda=0.01, cross_entropy_temperature=5.0,
                   diverse_patch_token_weight=1e-6, diverse_patch_token_gamma_s=1.0, diverse_patch_token_gamma_d=4.0,
                   diverse_channel_token_weight=1e-3,
                   decoder={"dcp_p_patch": 0.5, "dcp_p_channel": 0.5, "dcp_mask_ratio": 0.25}),
    "chammi": dict(img_size=224, in_chans=12, num_classes=0, num_memory_tokens=4,
                   encoder_pooling="cls_attn_pooling_sigmoid", cross_entropy_lambda=0.0, proxy_loss_lambda=0.01,
                   proxy_temperature=0.11, num_proxies=14, use_proxy_head=True, diverse_patch_token_weight=1e-3,
                   diverse_patch_token_gamma_s=0.5, diverse_patch_token_gamma_d=1.0, diverse_channel_token_weight=1e-4,
                   decoder={"dcp_p_patch": 0.5, "dcp_p_channel": 0.5, "dcp_mask_ratio": 0.75}),
}


def _recipe_cfg(recipe: str) -> Any:
    """timm pretrained config of a recipe: its data's channel table, statistics and classes."""
    from geovit.data.chammi import CHAMMI_CHANNELS
    from geovit.data.jumpcp import JUMPCP_MEAN, JUMPCP_STD
    from geovit.data.so2sat import CLASSES, SO2SAT_STATS

    common = dict(family="chamaevit", classifier="classifier_head", license="mit", paper_ids="arXiv:2503.19331",
                  origin_url="https://github.com/chaudatascience/cha_mae_vit",
                  paper_name="ChA-MAEViT: Unifying Channel-Aware Masked Autoencoders and Multi-Channel Vision "
                             "Transformers for Improved Cross-Channel Learning")
    r = RECIPES[recipe]
    size = (r["in_chans"], r["img_size"], r["img_size"])
    if recipe == "so2sat":  # the official loader reads So2Sat v2's files
        mean, std = SO2SAT_STATS["2"]
        return geovit_cfg(input_size=size, num_classes=r["num_classes"], mean=mean, std=std, channels=SO2SAT_BANDS,
                          channel_table="so2sat", label_names=CLASSES, **common)
    if recipe == "jumpcp":
        return geovit_cfg(input_size=size, num_classes=r["num_classes"], mean=JUMPCP_MEAN, std=JUMPCP_STD,
                          channels=JUMPCP_CHANNELS, channel_table="jumpcp", **common)
    return geovit_cfg(input_size=size, num_classes=r["num_classes"], mean=(0.0,) * 12, std=(1.0,) * 12,
                      channels=CHAMMI_CHANNELS, channel_table="chammi",
                      notes=("CHAMMI normalises each sub-dataset with its own statistics (mean 0 / std 1 here)",),
                      **common)


#: timm pretrained configs, one per variant: the recipe's data (no weights are hosted; pass
#: ``pretrained_cfg_overlay=dict(file=PATH)`` with an official ``model.safetensors``).
default_cfgs = generate_default_cfgs({
    **{f"chamaevit_{size}_patch8": _recipe_cfg("so2sat") for size in VIT_SIZES},
    **{f"chamaevit_{size}_patch16": _recipe_cfg("jumpcp") for size in VIT_SIZES},
    "chamaevit_small_patch16_chammi": _recipe_cfg("chammi"),
})


def _create(size: str, patch: int, recipe: str, /, **overrides) -> ChAMAEViT:
    dim, heads = VIT_SIZES[size]
    kwargs = copy.deepcopy(RECIPES[recipe])
    kwargs.update(patch_size=patch, embed_dim=dim, num_heads=heads, depth=11)
    decoder = {**kwargs.pop("decoder"), **dict(overrides.pop("decoder", None) or {})}
    kwargs.update(overrides)
    return ChAMAEViT(decoder=decoder, **kwargs)


@register_model
def chamaevit_tiny_patch8(**kwargs) -> ChAMAEViT:
    """ViT-Ti/8, official So2Sat recipe (18 bands, 32², 17 classes, 8 memory tokens, additive fusion,
    DCP Combination r=0.25, CE T=10); keyword arguments override."""
    return _create("tiny", 8, "so2sat", **kwargs)


@register_model
def chamaevit_small_patch8(**kwargs) -> ChAMAEViT:
    """ViT-S/8, official So2Sat recipe (see :func:`chamaevit_tiny_patch8`); keyword arguments override."""
    return _create("small", 8, "so2sat", **kwargs)


@register_model
def chamaevit_base_patch8(**kwargs) -> ChAMAEViT:
    """ViT-B/8, official So2Sat recipe (see :func:`chamaevit_tiny_patch8`); keyword arguments override."""
    return _create("base", 8, "so2sat", **kwargs)


@register_model
def chamaevit_tiny_patch16(**kwargs) -> ChAMAEViT:
    """ViT-Ti/16, official JUMP-CP recipe (8 channels, 224², 161 classes, 4 memory tokens, sigmoid fusion,
    DCP Alternate r=0.25, CE T=5); keyword arguments override."""
    return _create("tiny", 16, "jumpcp", **kwargs)


@register_model
def chamaevit_small_patch16(**kwargs) -> ChAMAEViT:
    """ViT-S/16, official JUMP-CP recipe (see :func:`chamaevit_tiny_patch16`); keyword arguments override."""
    return _create("small", 16, "jumpcp", **kwargs)


@register_model
def chamaevit_base_patch16(**kwargs) -> ChAMAEViT:
    """ViT-B/16, official JUMP-CP recipe (see :func:`chamaevit_tiny_patch16`); keyword arguments override."""
    return _create("base", 16, "jumpcp", **kwargs)


@register_model
def chamaevit_small_patch16_chammi(**kwargs) -> ChAMAEViT:
    """ViT-S/16, official CHAMMI recipe (12-id channel table, proxy loss with 14 proxies, sigmoid fusion,
    DCP Alternate r=0.75); keyword arguments override."""
    return _create("small", 16, "chammi", **kwargs)
