"""Sample-dict transforms for multi-channel images.

Samples are dicts with ``image`` (C, H, W) float tensor and ``channels`` (C,) absolute channel
ids. Normalisation statistics are indexed by the *absolute* id, so they stay right after
channel selection (the z-score is applied per band, as ChannelViT does before sub-selection).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from geovit.errors import GeovitError


class Compose:
    """Apply sample transforms (``dict -> dict``) in order."""
    def __init__(self, transforms: Sequence[Callable[[dict], dict]]):
        self.transforms = list(transforms)

    def __call__(self, sample: dict) -> dict:
        for t in self.transforms:
            sample = t(sample)
        return sample


class Normalize:
    """Per-band z-score ``(x - mean[id]) / std[id]`` using the sample's absolute channel ids."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        self.std = torch.as_tensor(std, dtype=torch.float32)
        if self.mean.shape != self.std.shape or self.mean.ndim != 1:
            raise GeovitError(f"Normalize: mean and std must be 1-D of equal length, got {tuple(self.mean.shape)} and {tuple(self.std.shape)}")
        if not torch.all(self.std > 0):
            raise GeovitError("Normalize: every std must be > 0")

    def __call__(self, sample: dict) -> dict:
        ids = sample["channels"]
        if int(ids.max()) >= len(self.mean):
            raise GeovitError(f"Normalize: channel id {int(ids.max())} has no statistics (table of {len(self.mean)})")
        m = self.mean[ids].view(-1, 1, 1)
        s = self.std[ids].view(-1, 1, 1)
        return {**sample, "image": (sample["image"] - m) / s}


class RandomFlipRotate:
    """Random 90° rotation (k ∈ {0,1,2,3}) then independent flips along each spatial axis (p=0.5).

    The So2Sat training augmentation of ChannelViT (specs/channelvit.md §4.2).
    """

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator

    def __call__(self, sample: dict) -> dict:
        g = self.generator
        img = sample["image"]
        k = int(torch.randint(0, 4, (1,), generator=g))
        img = torch.rot90(img, k, dims=(-2, -1))
        if torch.rand(1, generator=g) < 0.5:
            img = img.flip(-1)
        if torch.rand(1, generator=g) < 0.5:
            img = img.flip(-2)
        return {**sample, "image": img.contiguous()}


class SelectChannels:
    """Keep only the channels whose absolute ids are listed (in that order)."""

    def __init__(self, ids: Sequence[int]):
        self.ids = torch.as_tensor(list(ids), dtype=torch.long)

    def __call__(self, sample: dict) -> dict:
        have = sample["channels"].tolist()
        try:
            pos = [have.index(i) for i in self.ids.tolist()]
        except ValueError:
            missing = sorted(set(self.ids.tolist()) - set(have))
            raise GeovitError(f"channels {missing} are not in this sample (it has {have})") from None
        return {**sample, "image": sample["image"][pos], "channels": self.ids.clone()}


class Resize:
    """Bilinear, antialiased resize of ``image`` to ``size × size`` (no-op when already that size)."""

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, sample: dict) -> dict:
        import torch.nn.functional as F

        img = sample["image"]
        if tuple(img.shape[-2:]) == (self.size, self.size):
            return sample
        img = F.interpolate(img[None], size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)[0]
        return {**sample, "image": img}
