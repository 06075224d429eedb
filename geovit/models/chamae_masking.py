"""Dynamic Channel-Patch (DCP) masking of ChA-MAEViT (Pham et al., NeurIPS 2025, §3.1).

Each training step draws one strategy for the whole batch (``np.random.rand()``, as the official
code, so seeding numpy and torch reproduces its masks):

* ``PATCH_MASKING_ONLY`` -- every channel keeps ``int((1 - r) * P)`` of its ``P`` patches, at
  independent random positions (same count per channel);
* ``CHANNEL_MASKING_ONLY`` -- whole channels are hidden. In a regular batch ``k ~ U{0..C-1}``
  (``U{1..C-1}`` with ``at_least_one``) channels are hidden, the same ones for every sample, so
  at least one channel always stays visible. In a padded batch (``valid`` given) each sample hides
  ``floor(u * n_valid)`` of its own valid channels, never a padding channel;
* ``BOTH_MASKING`` -- the channel draw, then the patch draw on top of it.

The masks are returned as :class:`DCPMasks`, in the layout of the official implementation
(token index = channel * P + patch, channel-major).
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from geovit.errors import GeovitError

PATCH = "PATCH_MASKING_ONLY"
CHANNEL = "CHANNEL_MASKING_ONLY"
BOTH = "BOTH_MASKING"
STRATEGIES = (PATCH, CHANNEL, BOTH)

#: noise value of padding tokens (the official ``LARGE_VALUE_FOR_PADDING``): sorts them last.
PADDING_NOISE = 99.0


@dataclass
class DCPMasks:
    """The masks of one DCP draw (every tensor has the batch first; L = C * P).

    ``strategy``: one of :data:`STRATEGIES`.
    ``tokens_to_keep``: long (B, N_vis), indices into the L patch tokens fed to the encoder
    (padded batches: rows padded with index 0, see ``mae_patch_masks``).
    ``ind_restore``: long (B, L), inverse of the shuffle; un-shuffles ``[visible ; mask tokens]``.
    ``mask``: bool (B, L), loss mask: True = hidden (to reconstruct) and not padding.
    ``visibles``: bool (B, L), True = visible patch.
    ``channels_sampled``: bool (B, C), channel not fully hidden and not padding.
    ``mae_patch_masks``: bool (B, N_vis) for padded batches (True = real kept token), else None.
    """

    strategy: str
    tokens_to_keep: Tensor
    ind_restore: Tensor
    mask: Tensor
    visibles: Tensor
    channels_sampled: Tensor
    mae_patch_masks: Tensor | None = None

    @property
    def skip_decoder(self) -> bool:
        """Official skip rule: regular batch, channel-only draw that hid no channel."""
        return (self.mae_patch_masks is None and self.strategy == CHANNEL
                and bool(self.channels_sampled[0].all()))

    def to(self, device: torch.device | str) -> "DCPMasks":
        """The same masks with every tensor on ``device``."""
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), Tensor)})

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (the form ``pretrain_step(masks=...)`` also accepts)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def coerce(cls, masks: "DCPMasks | Mapping[str, Any]") -> "DCPMasks":
        """Accept a :class:`DCPMasks` or a mapping with its field names (tensors or arrays)."""
        if isinstance(masks, DCPMasks):
            return masks
        if not isinstance(masks, Mapping):
            raise GeovitError(f"masks: expected DCPMasks or a dict with keys {[f.name for f in fields(cls)]}, "
                              f"got {type(masks).__name__}")
        names = {f.name for f in fields(cls)}
        missing = sorted(names - {"mae_patch_masks"} - set(masks))
        unknown = sorted(set(masks) - names)
        if missing or unknown:
            raise GeovitError(f"masks: missing keys {missing}, unknown keys {unknown}; expected {sorted(names)}")
        values = {k: (torch.as_tensor(v) if k != "strategy" and v is not None else v) for k, v in masks.items()}
        return cls(**values)

    def check(self, batch: int, num_channels: int, patches_per_channel: int, padded: bool) -> None:
        """Raise :class:`GeovitError` when these masks do not fit a (batch, C, P) input."""
        length = num_channels * patches_per_channel
        if self.strategy not in STRATEGIES:
            raise GeovitError(f"masks.strategy: {self.strategy!r}, expected one of {STRATEGIES}")
        expected = {"ind_restore": (batch, length), "mask": (batch, length), "visibles": (batch, length),
                    "channels_sampled": (batch, num_channels)}
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise GeovitError(f"masks.{name}: shape {tuple(getattr(self, name).shape)}, expected {shape} "
                                  f"for a batch of {batch} x {num_channels} channels x {patches_per_channel} patches")
        keep = self.tokens_to_keep
        if keep.ndim != 2 or keep.shape[0] != batch or keep.shape[1] > length:
            raise GeovitError(f"masks.tokens_to_keep: shape {tuple(keep.shape)}, expected ({batch}, N_vis <= {length})")
        if keep.numel() and (int(keep.min()) < 0 or int(keep.max()) >= length):
            raise GeovitError(f"masks.tokens_to_keep: indices must lie in [0, {length})")
        if padded != (self.mae_patch_masks is not None):
            raise GeovitError("masks.mae_patch_masks: required exactly for padded batches (channel_mask given)")
        if padded and tuple(self.mae_patch_masks.shape) != tuple(keep.shape):
            raise GeovitError(f"masks.mae_patch_masks: shape {tuple(self.mae_patch_masks.shape)}, "
                              f"expected {tuple(keep.shape)} (same as tokens_to_keep)")


def check_mask_ratio(ratio: float, name: str = "dcp_mask_ratio") -> float:
    """Raise :class:`GeovitError` naming ``name`` unless the mask ratio lies in (0, 1)."""
    ratio = float(ratio)
    if not 0.0 < ratio < 1.0:
        raise GeovitError(f"{name}: {ratio} is outside (0, 1); it is the fraction of patches hidden per channel")
    return ratio


def check_strategy_probabilities(p_patch: float, p_channel: float) -> None:
    """Raise :class:`GeovitError` unless both DCP strategy probabilities lie in [0, 1] and sum to at most 1."""
    if not (0.0 <= p_patch <= 1.0 and 0.0 <= p_channel <= 1.0 and p_patch + p_channel <= 1.0 + 1e-9):
        raise GeovitError(f"dcp_p_patch={p_patch}, dcp_p_channel={p_channel}: expected probabilities in [0, 1] "
                          "with dcp_p_patch + dcp_p_channel <= 1 (the rest is BOTH masking)")


def sample_dcp_strategy(p_patch: float, p_channel: float) -> str:
    """One draw per batch: patch-only, channel-only, else both (numpy RNG, as the official code)."""
    s = np.random.rand()
    if s < p_patch:
        return PATCH
    if s < p_patch + p_channel:
        return CHANNEL
    return BOTH


def channel_masking(batch: int, num_channels: int, at_least_one: bool, valid: Tensor | None,
                    device: torch.device) -> Tensor:
    """Bool (B, C), True = channel hidden. See the module docstring for the two cases."""
    hidden = torch.zeros(batch, num_channels, dtype=torch.bool, device=device)
    if valid is None:
        # k ~ U{0..C-1} (U{1..C-1} with at_least_one): one channel always stays visible. The official
        # code calls randint(1, 1) for a single-channel batch with at_least_one and crashes; here
        # that case draws k = 0 (nothing to hide).
        low = 1 if at_least_one and num_channels > 1 else 0
        k = int(torch.randint(low, max(num_channels, 1), (1,), device=device).item())
        if k > 0:
            hidden[:, torch.randperm(num_channels, device=device)[:k]] = True
        return hidden
    n_valid = valid.sum(dim=1)
    u = torch.rand(batch, device=device)
    k = (u * n_valid.to(u.dtype)).to(torch.long)
    if at_least_one:
        k = k.clamp(min=1)
    scores = torch.rand(batch, num_channels, device=device).masked_fill_(~valid, 1e6)
    order = torch.argsort(scores, dim=1)
    first_k = torch.arange(num_channels, device=device).expand(batch, -1) < k[:, None]
    return hidden.scatter_(1, order, first_k)


def patch_masking(batch: int, num_channels: int, patches_per_channel: int, ratio: float,
                  device: torch.device) -> tuple[Tensor, int]:
    """Bool (B, C*P), True = patch hidden; each channel keeps ``int((1-r)*P)`` random patches."""
    keep = int((1 - ratio) * patches_per_channel)
    noise = torch.rand(batch, num_channels, patches_per_channel, device=device)
    kept = torch.argsort(noise, dim=-1)[:, :, :keep]
    hidden = torch.ones(batch, num_channels, patches_per_channel, dtype=torch.bool, device=device)
    hidden.scatter_(2, kept, False)
    return hidden.flatten(1), keep


def dynamic_channel_patch_masking(batch: int, num_channels: int, patches_per_channel: int, ratio: float,
                                  strategy: str, at_least_one: bool = False, valid: Tensor | None = None,
                                  device: torch.device | str = "cpu") -> DCPMasks:
    """Draw the DCP masks for a batch of ``num_channels`` x ``patches_per_channel`` tokens.

    ``valid`` (B, C) bool marks real channels of a padded batch (None for a regular batch).
    Random draws follow the official call order (channel draw, then patch draw).
    """
    check_mask_ratio(ratio)
    if strategy not in STRATEGIES:
        raise GeovitError(f"DCP strategy {strategy!r}: expected one of {STRATEGIES}")
    device = torch.device(device)
    P = patches_per_channel
    noise = torch.zeros(batch, num_channels * P, device=device)
    channels_kept = torch.ones(batch, num_channels, dtype=torch.bool, device=device)
    keep = P
    if strategy in (CHANNEL, BOTH):
        hidden_channels = channel_masking(batch, num_channels, at_least_one, valid, device)
        noise += hidden_channels.repeat_interleave(P, dim=1).float()
        channels_kept = ~hidden_channels
    if strategy in (PATCH, BOTH):
        hidden_patches, keep = patch_masking(batch, num_channels, P, ratio, device)
        noise += hidden_patches.float()
    if valid is not None:
        noise.masked_fill_(~valid.repeat_interleave(P, dim=1), PADDING_NOISE)
        channels_kept = channels_kept & valid

    shuffled = torch.argsort(noise, dim=1)
    ind_restore = torch.argsort(shuffled, dim=1)
    per_channel = P if strategy == CHANNEL else keep
    if valid is not None:
        n_keep = channels_kept.sum(dim=1) * per_channel
        width = int(n_keep.max().item())
        mae_patch_masks = torch.arange(width, device=device)[None, :] < n_keep[:, None]
        tokens_to_keep = torch.where(mae_patch_masks, shuffled[:, :width], torch.zeros_like(shuffled[:, :width]))
    else:
        width = int(channels_kept[0].sum().item()) * per_channel
        tokens_to_keep, mae_patch_masks = shuffled[:, :width], None
    return DCPMasks(
        strategy=strategy,
        tokens_to_keep=tokens_to_keep,
        ind_restore=ind_restore,
        mask=(noise > 0) & (noise < PADDING_NOISE),
        visibles=noise == 0,
        channels_sampled=channels_kept,
        mae_patch_masks=mae_patch_masks,
    )
