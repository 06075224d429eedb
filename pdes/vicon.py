"""VICON: Vision In-Context Operator Network (Cao, Liu, Yang, Yu, Schaeffer, Osher; arXiv 2411.16063,
TMLR 2026; reference code github.com/Eydcao/VICON, class ``ICON_UNCROPPED``).

A prompt is a sequence of *pairs* (COND frame, QoI frame) of one trajectory, all pairs of a prompt
sharing one time stride. Every frame is a stack of ``C`` fixed physical *channel slots*
(released: density, vx, vy, pressure, vorticity, passive scalar, node type); a per-dataset channel
mask switches off the slots a dataset does not have. The last slot is always the node type
(0 interior pixel, 1 boundary pixel) and is never a physical target.

Model (paper §3, "Vision in-context operator networks"; specs/vicon.md §1):

* **Tokenisation** — each frame is cut into ``P × P`` non-overlapping ``r × r`` patches (token order
  patch-row major; inside a patch channel slowest, then pixel row, then pixel column) and embedded by
  one shared linear map (:attr:`VICON.patch_embed`, the official ``pre_proj``).
* **Positions** — two learned additive tables: the *patch position* (``P²`` rows, shared by COND and
  QoI frames) and the *function position* (``2·max_pairs`` rows: row ``2i`` for COND of pair ``i``,
  row ``2i+1`` for its QoI).  No separator, CLS or time/stride embedding: the stride is only
  conveyed by the example pairs.
* **Prompt** — ``[COND_0, QoI_0, COND_1, QoI_1, …]`` (``P²`` tokens per frame).
* **Transformer** — post-norm encoder blocks (``x = LN(x + MHA(x)); x = LN(x + FFN(x))``, exact-erf
  GELU, no final norm) with the *block-causal* mask: tokens of COND_i see pairs ``0…i−1`` and COND_i;
  tokens of QoI_i also see QoI_i; nothing attends forward.  The mask is the boolean buffer
  :attr:`VICON.mask` (True = blocked), as in the official checkpoint.
* **Output** — the encoder outputs at the COND positions are mapped back to patches
  (:attr:`VICON.head`, official ``post_proj``) and un-patchified: ``out[:, i]`` predicts
  ``qoi[:, i]`` from pairs ``0…i−1`` and ``cond[:, i]`` (teacher forcing of all pairs in one pass).

Normalisation (per prompt and channel from the COND frames, specs §1.6) lives in
:mod:`pdes.normalization`; :meth:`VICON.predict` wraps it exactly as the official pipeline.

Public API::

    model = VICON(num_channels=7, embed_dim=1024, num_heads=8, mlp_dim=2048, depth=10,
                  max_pairs=10, num_patches=8, patch_size=16)        # released size, 87.8M params
    out = model(cond, qoi, channel_mask=None)   # (B, pairs, C, H, W) -> (B, pairs, C, H, W), normalised space
    out = model(cond, qoi, last_only=True)      # (B, 1, C, H, W): only the last pair (rollout fast path)
    pred = model.predict(cond, qoi, channel_mask, last_only=False)
        # physical units, (B, pairs, C-1, H, W): normalise with COND stats -> model -> de-normalise,
        # node-type slot dropped, masked slots zeroed (official ``Trainer.get_pred``)
    model.config                                # JSON-serialisable constructor kwargs
    build(config) -> VICON                      # from ``model.config``
    vicon(**overrides) -> VICON                 # released size; registered as geovit model "vicon"
    load_official(state_dict, official_cfg) -> VICON   # family contract: also checkpoint_filter_fn, infer_config
        # official constructor cfg: {"transformer": {dim_channel, dim_token, nhead, dim_feedforward,
        #  num_layers, dropout}, demo_num, patch_num_in, patch_num_out, patch_resolution,
        #  use_patch_pos_encoding, use_func_pos_encoding, [preprocess: {scheme, eps}]}
    # also reachable as geovit.hub.load_official("vicon", "200000_params.pth", official_cfg)

``fused_attn`` (attribute on every :class:`BlockCausalAttention`, switched with
``geovit.models.layers.set_fused_attention``) selects ``F.scaled_dot_product_attention`` (default) or
a materialised ``softmax(q kᵀ) v`` with the same weights.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from geovit.errors import CheckpointError, GeovitError
from geovit.models import convert_official, find_state_dict, register_model, strip_wrapper_prefix
from geovit.models.layers import attention
from pdes.normalization import denormalize, expand_channel_mask, normalize, prompt_statistics

#: Constructor kwargs of the released model (``configs`` of the reference code, specs §6).
OFFICIAL_CONFIG: dict[str, Any] = dict(
    num_channels=7, embed_dim=1024, num_heads=8, mlp_dim=2048, depth=10, dropout=0.0,
    max_pairs=10, num_patches=8, patch_size=16, use_patch_pos_embed=True, use_func_pos_embed=True,
    norm_scheme="scale_to_eps", norm_eps=1e-4,
)


def block_causal_mask(num_blocks: int, block_size: int) -> torch.Tensor:
    """Boolean ``(n·b, n·b)`` mask, True = blocked: block ``j`` attends to blocks ``0…j`` only.

    With the prompt's frames as blocks (COND_0, QoI_0, COND_1, …) this is exactly VICON's
    "alternating block lower-triangular" mask: COND_i sees pairs ``< i`` and itself, QoI_i also COND_i.
    """
    block = torch.arange(num_blocks).repeat_interleave(block_size)
    return block[None, :] > block[:, None]


class BlockCausalAttention(nn.Module):
    """Multi-head self-attention with packed q|k|v projection and an optional boolean block mask.

    ``queries`` restricts the computed rows to the last ``queries`` tokens (all keys still used):
    the rollout fast path only needs the query COND block at the last layer.
    """

    def __init__(self, dim: int, num_heads: int, attn_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise GeovitError(f"embed_dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.fused_attn = True

    def forward(self, x: torch.Tensor, blocked: torch.Tensor | None, queries: int | None = None) -> torch.Tensor:
        """Tokens (B, N, D), ``blocked`` (N, N) bool (True = blocked) -> (B, N or queries, D)."""
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if queries is not None:
            q = q[:, :, N - queries:]
            blocked = None if blocked is None else blocked[N - queries:]
        drop = self.attn_drop if self.training else 0.0
        out = attention(q, k, v, fused=self.fused_attn, blocked=blocked, dropout_p=drop)
        return self.proj(out.transpose(1, 2).reshape(B, q.shape[2], D))


class PostNormBlock(nn.Module):
    """``x = LN(x + Drop(MHA(x))); x = LN(x + Drop(W2 Drop(GELU(W1 x))))`` (PyTorch post-norm layer)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.attn = BlockCausalAttention(dim, num_heads, attn_drop=dropout)
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.fc1 = nn.Linear(dim, mlp_dim)
        self.fc2 = nn.Linear(mlp_dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, blocked: torch.Tensor | None, queries: int | None = None) -> torch.Tensor:
        """One post-norm layer on (B, N, D); with ``queries`` only the last ``queries`` rows."""
        residual = x if queries is None else x[:, x.shape[1] - queries:]
        x = self.norm1(residual + self.drop(self.attn(x, blocked, queries)))
        mlp = self.fc2(self.drop(F.gelu(self.fc1(x))))
        return self.norm2(x + self.drop(mlp))


class VICON(nn.Module):
    """Vision in-context operator network (see the module docstring for the architecture)."""

    def __init__(
        self,
        num_channels: int = 7,
        embed_dim: int = 1024,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        depth: int = 10,
        dropout: float = 0.0,
        max_pairs: int = 10,
        num_patches: int = 8,
        patch_size: int = 16,
        use_patch_pos_embed: bool = True,
        use_func_pos_embed: bool = True,
        norm_scheme: str = "scale_to_eps",
        norm_eps: float = 1e-4,
    ):
        super().__init__()
        if num_channels < 2:
            raise GeovitError(f"num_channels={num_channels}: VICON needs at least one field slot plus the node-type slot")
        self.config = dict(
            num_channels=num_channels, embed_dim=embed_dim, num_heads=num_heads, mlp_dim=mlp_dim,
            depth=depth, dropout=float(dropout), max_pairs=max_pairs, num_patches=num_patches,
            patch_size=patch_size, use_patch_pos_embed=bool(use_patch_pos_embed),
            use_func_pos_embed=bool(use_func_pos_embed), norm_scheme=norm_scheme, norm_eps=float(norm_eps),
        )
        self.num_channels, self.max_pairs = num_channels, max_pairs
        self.num_patches, self.patch_size = num_patches, patch_size
        self.tokens_per_frame = num_patches * num_patches
        patch_dim = num_channels * patch_size * patch_size
        self.patch_embed = nn.Linear(patch_dim, embed_dim)
        self.patch_pos_embed = (
            nn.Parameter(torch.randn(self.tokens_per_frame, embed_dim)) if use_patch_pos_embed else None
        )
        self.func_pos_embed = nn.Parameter(torch.randn(2 * max_pairs, embed_dim)) if use_func_pos_embed else None
        self.blocks = nn.ModuleList(
            [PostNormBlock(embed_dim, num_heads, mlp_dim, dropout) for _ in range(depth)]
        )
        self.head = nn.Linear(embed_dim, patch_dim)
        self.register_buffer("mask", block_causal_mask(2 * max_pairs, self.tokens_per_frame))

    @property
    def frame_size(self) -> int:
        """Side of the square frames the model takes (num_patches · patch_size)."""
        return self.num_patches * self.patch_size

    # ----------------------------------------------------------------- tokens <-> frames
    def patchify(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, n, C, H, W) -> (B, n, P², C·r²) in the official order."""
        B, n, C = frames.shape[:3]
        P, r = self.num_patches, self.patch_size
        x = frames.reshape(B, n, C, P, r, P, r).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(B, n, P * P, C * r * r)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, n, P², C·r²) -> (B, n, C, H, W), inverse of :meth:`patchify`."""
        B, n = patches.shape[:2]
        P, r, C = self.num_patches, self.patch_size, self.num_channels
        x = patches.reshape(B, n, P, P, C, r, r).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(B, n, C, P * r, P * r)

    def _check(self, cond: torch.Tensor, qoi: torch.Tensor) -> None:
        size = self.frame_size
        expected = f"(batch, pairs, {self.num_channels}, {size}, {size})"
        if cond.ndim != 5 or tuple(cond.shape[2:]) != (self.num_channels, size, size):
            raise GeovitError(f"cond: expected shape {expected}, got {tuple(cond.shape)}")
        if qoi.shape != cond.shape:
            raise GeovitError(f"qoi: expected the shape of cond {tuple(cond.shape)}, got {tuple(qoi.shape)}")
        if not 1 <= cond.shape[1] <= self.max_pairs:
            raise GeovitError(
                f"cond/qoi: prompt has {cond.shape[1]} pairs; this model takes 1 to max_pairs={self.max_pairs} "
                "(the function-position table has 2·max_pairs rows)"
            )

    def embed(self, cond: torch.Tensor, qoi: torch.Tensor) -> torch.Tensor:
        """Token sequence ``[COND_0, QoI_0, …]`` with both position embeddings, (B, 2·n·P², D)."""
        B, n = cond.shape[:2]
        frames = torch.stack((cond, qoi), dim=2).reshape(B, 2 * n, *cond.shape[2:])
        x = self.patch_embed(self.patchify(frames))  # (B, 2n, P², D)
        if self.patch_pos_embed is not None:
            x = x + self.patch_pos_embed
        if self.func_pos_embed is not None:
            x = x + self.func_pos_embed[: 2 * n, None, :]
        return x.reshape(B, 2 * n * self.tokens_per_frame, -1)

    # ----------------------------------------------------------------- forward
    def forward(
        self, cond: torch.Tensor, qoi: torch.Tensor, channel_mask: torch.Tensor | None = None,
        *, last_only: bool = False,
    ) -> torch.Tensor:
        """Teacher-forced predictions ``out[:, i]`` of ``qoi[:, i]`` (normalised space).

        ``cond``, ``qoi``: (B, pairs, C, H, W); ``channel_mask`` is accepted for the official call
        signature and ignored (as by the official module). With ``last_only`` only the last pair is
        predicted, (B, 1, C, H, W): the query's QoI tokens are dropped (they cannot influence any
        COND output) and the last block only computes the query COND rows — same result, less work.
        """
        self._check(cond, qoi)
        n, T = cond.shape[1], self.tokens_per_frame
        x = self.embed(cond, qoi)
        if last_only:
            x = x[:, : (2 * n - 1) * T]
        L = x.shape[1]
        blocked = self.mask[:L, :L]
        for i, block in enumerate(self.blocks):
            queries = T if last_only and i == len(self.blocks) - 1 else None
            x = block(x, blocked, queries)
        if last_only:
            x = x[:, -T:].unsqueeze(1)
        else:
            x = x.reshape(x.shape[0], n, 2, T, -1)[:, :, 0]
        return self.unpatchify(self.head(x))

    @torch.no_grad()
    def predict(
        self, cond: torch.Tensor, qoi: torch.Tensor, channel_mask: torch.Tensor, *, last_only: bool = False,
    ) -> torch.Tensor:
        """Predictions in physical units as the official pipeline (``Trainer.get_pred``).

        Statistics from the COND frames (:func:`pdes.normalization.prompt_statistics`), normalise
        COND and QoI, run the model, de-normalise, drop the node-type slot, zero masked slots.
        Returns (B, pairs, C-1, H, W) (or (B, 1, C-1, H, W) with ``last_only``).
        """
        cfg = self.config
        mean, std = prompt_statistics(cond, channel_mask, eps=cfg["norm_eps"], scheme=cfg["norm_scheme"])
        out = self(normalize(cond, mean, std), normalize(qoi, mean, std), last_only=last_only)
        mask = expand_channel_mask(channel_mask, cond).to(out.dtype)
        return denormalize(out, mean, std)[:, :, :-1] * mask[:, None, :-1, None, None]


@register_model
def vicon(**kwargs) -> VICON:
    """VICON at the released size (87.8 M parameters); keyword arguments override the defaults."""
    return VICON(**{**OFFICIAL_CONFIG, **kwargs})


# ----------------------------------------------------------------- family contract (geovit.families)
def build(config: Mapping[str, Any]) -> VICON:
    """Rebuild a VICON from its ``model.config`` (geovit constructor kwargs).

    Args:
        config: constructor keywords, a subset of :data:`OFFICIAL_CONFIG`'s keys.

    Returns:
        The model (random weights).

    Raises:
        GeovitError: unknown keys.
    """
    unknown = set(config) - set(OFFICIAL_CONFIG)
    if unknown:
        raise GeovitError(f"VICON config: unknown keys {sorted(unknown)}; expected a subset of {sorted(OFFICIAL_CONFIG)}")
    return VICON(**dict(config))


#: official state-dict name -> geovit name (per layer names use ``{}`` for the layer index)
_TOP_KEYS = {
    "pre_proj.weight": "patch_embed.weight", "pre_proj.bias": "patch_embed.bias",
    "post_proj.weight": "head.weight", "post_proj.bias": "head.bias",
    "patch_pos_encoding": "patch_pos_embed", "func_pos_encoding": "func_pos_embed", "mask": "mask",
}
_LAYER_KEYS = {
    "self_attn.in_proj_weight": "attn.qkv.weight", "self_attn.in_proj_bias": "attn.qkv.bias",
    "self_attn.out_proj.weight": "attn.proj.weight", "self_attn.out_proj.bias": "attn.proj.bias",
    "linear1.weight": "fc1.weight", "linear1.bias": "fc1.bias",
    "linear2.weight": "fc2.weight", "linear2.bias": "fc2.bias",
    "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
}


def _rename(key: str, top: Mapping[str, str], layer: Mapping[str, str], prefix: tuple[str, str],
            target: tuple[str, str]) -> str | None:
    """Rename ``key`` with the tables (prefix ``a.b.{i}.name`` -> ``c.{i}.name``), None if unknown."""
    if key in top:
        return top[key]
    parts = key.split(".", len(prefix) + 1)
    if len(parts) == len(prefix) + 2 and tuple(parts[: len(prefix)]) == prefix and parts[-1] in layer:
        return ".".join((*target, parts[-2], layer[parts[-1]]))
    return None


def _geovit_name(key: str) -> str | None:
    return _rename(key, _TOP_KEYS, _LAYER_KEYS, ("transformer", "layers"), ("blocks",))


def _official_name(key: str) -> str:
    inverse = _rename(key, {v: k for k, v in _TOP_KEYS.items()}, {v: k for k, v in _LAYER_KEYS.items()},
                      ("blocks",), ("transformer", "layers"))
    return inverse or key


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: VICON | None = None) -> dict[str, torch.Tensor]:
    """Official ``{step}_params.pth`` state dict (``ICON_UNCROPPED``) -> geovit keys.

    Lightning-style nesting (``state_dict``) and DataParallel ``module.`` prefixes are removed; a
    geovit state dict passes unchanged.

    Args:
        state_dict: the file's content.
        model: when given, the positional tables the model does not use are dropped and a file
            without the ``mask`` buffer (older exports) gets the model's own mask.

    Returns:
        geovit-keyed tensors.

    Raises:
        CheckpointError: keys of neither layout, or a mask that is not boolean.
    """
    tensors = find_state_dict(state_dict)
    official = any(k == "pre_proj.weight" or k.endswith(".pre_proj.weight") for k in tensors)
    anchor = "pre_proj.weight" if official else "patch_embed.weight"
    state = strip_wrapper_prefix(tensors, anchor, family="VICON",
                                 layout=" (expected the official pre_proj / transformer.layers / post_proj layout)")
    if official:
        renamed = {_geovit_name(k): v for k, v in state.items()}
        unknown = [k for k in state if _geovit_name(k) is None]
        if unknown:
            raise CheckpointError(f"not an official VICON state dict: unexpected keys {unknown[:5]}")
        state = renamed
    if model is not None:
        for key, table in (("patch_pos_embed", model.patch_pos_embed), ("func_pos_embed", model.func_pos_embed)):
            if table is None:
                state.pop(key, None)
        state.setdefault("mask", model.mask)  # older exports without the buffer: rebuild it
    if "mask" in state and state["mask"].dtype != torch.bool:
        raise CheckpointError(f"tensor 'mask' has dtype {state['mask'].dtype}, expected torch.bool (True = blocked)")
    return state


def infer_config(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Translate the official constructor config (``ICON_UNCROPPED(cfg)``) to VICON kwargs.

    The tensors cannot tell the head count or the normalisation, so the official config is
    required; the tensors are checked against it when the model is loaded.

    Args:
        state_dict: geovit-keyed tensors (unused: the config decides).
        config: the official constructor config: ``{"transformer": {dim_channel, dim_token,
            nhead, dim_feedforward, num_layers, dropout}, demo_num, patch_num_in, patch_num_out,
            patch_resolution, use_patch_pos_encoding, use_func_pos_encoding, [preprocess:
            {scheme, eps}]}``.

    Returns:
        Constructor keywords of :class:`VICON`.

    Raises:
        CheckpointError: no config, a missing key, or unequal patch grids.
    """
    if not config:
        raise CheckpointError("config: the official VICON constructor config is required "
                              "(e.g. the 'constructor_cfg' of the conformance config.json)")
    cfg = config
    try:
        tr = cfg["transformer"]
        if cfg["patch_num_in"] != cfg["patch_num_out"]:
            raise CheckpointError(
                f"config: patch_num_in={cfg['patch_num_in']} != patch_num_out={cfg['patch_num_out']} "
                "(the uncropped VICON needs equal patch grids)"
            )
        pre = cfg.get("preprocess", {}) or {}
        return dict(
            num_channels=int(tr["dim_channel"]), embed_dim=int(tr["dim_token"]), num_heads=int(tr["nhead"]),
            mlp_dim=int(tr["dim_feedforward"]), depth=int(tr["num_layers"]), dropout=float(tr.get("dropout", 0.0)),
            max_pairs=int(cfg["demo_num"]), num_patches=int(cfg["patch_num_in"]),
            patch_size=int(cfg["patch_resolution"]),
            use_patch_pos_embed=bool(cfg.get("use_patch_pos_encoding", True)),
            use_func_pos_embed=bool(cfg.get("use_func_pos_encoding", True)),
            norm_scheme=str(pre.get("scheme", "scale_to_eps")), norm_eps=float(pre.get("eps", 1e-4)),
        )
    except KeyError as err:
        raise CheckpointError(
            f"config: missing key {err} of the official VICON constructor config "
            "(transformer.{dim_channel,dim_token,nhead,dim_feedforward,num_layers}, demo_num, "
            "patch_num_in, patch_num_out, patch_resolution)"
        ) from None


def load_official(state_dict: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> VICON:
    """Build a VICON from an official ``{step}_params.pth`` state dict and constructor config.

    The stored boolean ``mask`` buffer (True = blocked) is honoured: it replaces the mask built
    from the config (its shape must be ``(2·demo_num·P²)²``).

    Args:
        state_dict: the file's content (see :func:`checkpoint_filter_fn`).
        config: the official constructor config (see :func:`infer_config`).

    Returns:
        The loaded model, in eval mode.

    Raises:
        CheckpointError: no config, a foreign file, or tensors that do not fit the config.
    """
    return convert_official(state_dict, config, filter_fn=checkpoint_filter_fn, infer_fn=infer_config,
                            build_fn=build, family="VICON", describe=_official_name)
