"""Per-prompt, per-channel normalisation of VICON prompts (specs/vicon.md §1.6; official
``Trainer`` with ``loss.scale = "bc"`` and ``preprocess.scheme = scale_to_eps``).

For every prompt (batch element) and channel slot, the mean and the **unbiased** standard deviation
are taken over all COND frames of the prompt and all pixels — QoI frames never enter the statistics,
so at inference they come from the example CONDs plus the query COND. Slots with channel mask 0 and
the last slot (node type) are left untouched (mean 0, std 1). A std below ``eps`` becomes ``eps``
(``scale_to_eps``, released) or 1 (``scale_to_one``).

Public API::

    mean, std = prompt_statistics(cond, channel_mask, eps=1e-4, scheme="scale_to_eps")
        # cond (B, pairs, C, H, W); channel_mask (B, C) or (C,) -> mean, std of shape (B, 1, C, 1, 1)
    expand_channel_mask(channel_mask, cond) -> (B, C) bool
    normalize(x, mean, std)      # (x - mean) / std, broadcasting over (B, pairs, C, H, W)
    denormalize(x, mean, std)    # x * std + mean
"""
from __future__ import annotations

import torch

from geovit.errors import GeovitError

SCHEMES = ("scale_to_eps", "scale_to_one")


def expand_channel_mask(channel_mask, cond: torch.Tensor) -> torch.Tensor:
    """Channel mask as a boolean (B, C) tensor for ``cond`` (B, pairs, C, H, W); (C,) is broadcast."""
    B, C = cond.shape[0], cond.shape[2]
    mask = torch.as_tensor(channel_mask, device=cond.device)
    if mask.ndim == 1:
        mask = mask.expand(B, -1)
    if tuple(mask.shape) != (B, C):
        raise GeovitError(f"channel_mask: expected shape ({B}, {C}) or ({C},) for cond {tuple(cond.shape)}, "
                          f"got {tuple(mask.shape)}")
    return mask != 0


def prompt_statistics(
    cond: torch.Tensor, channel_mask, eps: float = 1e-4, scheme: str = "scale_to_eps"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and floored unbiased std of the COND frames per prompt and channel, (B, 1, C, 1, 1) each."""
    if cond.ndim != 5:
        raise GeovitError(f"cond: expected (batch, pairs, channels, H, W), got shape {tuple(cond.shape)}")
    if scheme not in SCHEMES:
        raise GeovitError(f"normalisation scheme {scheme!r}: expected one of {SCHEMES}")
    active = expand_channel_mask(channel_mask, cond).clone()
    active[:, -1] = False  # node-type slot
    mean = cond.mean(dim=(1, 3, 4), keepdim=True)
    std = cond.std(dim=(1, 3, 4), keepdim=True, correction=1)
    floor = eps if scheme == "scale_to_eps" else 1.0
    std = torch.where(std < eps, torch.full_like(std, floor), std)
    keep = active[:, None, :, None, None]
    return torch.where(keep, mean, torch.zeros_like(mean)), torch.where(keep, std, torch.ones_like(std))


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` with the statistics of :func:`prompt_statistics` (broadcast over frames and pixels)."""
    return (x - mean) / std


def denormalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`: ``x * std + mean``."""
    return x * std + mean
