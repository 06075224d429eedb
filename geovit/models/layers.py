"""Layers shared by several model families (written once, used everywhere)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def resample_pos_grid_dino(grid_tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Resample a square positional grid to (h, w) exactly as DINO's ``interpolate_pos_encoding``.

    ``grid_tokens`` is (1, g*g, D) (no CLS slot). The official ChannelViT / DINO code calls
    ``F.interpolate(mode="bicubic", scale_factor=((h + 0.1) / g, (w + 0.1) / g))`` without
    ``recompute_scale_factor``: the *scale factor* (not the output size) sets the sampling grid,
    so the resample is not the identity even when h == g. Reproducing this is required to match
    released checkpoints (specs/channelvit.md §2.2). Returns (1, h*w, D).
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


def set_fused_attention(model: nn.Module, enabled: bool) -> int:
    """Switch every timm-style attention module between fused SDPA and materialised q@kᵀ.

    Returns how many modules were switched. Used by ``bench/`` to build the
    materialised-attention baseline from the very same weights.
    """
    count = 0
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = enabled
            count += 1
    return count


def trunc_normal_init(module: nn.Module, std: float = 0.02) -> None:
    """ViT init: truncated-normal Linear weights (std 0.02), zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std, a=-2.0, b=2.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
