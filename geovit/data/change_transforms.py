"""Tiling, augmentation and normalisation of bitemporal change-detection samples.

Samples are dicts ``{"image": float (2, 3, H, W) with values 0-255 (t1, t2), "mask": int64 (H, W)}``
(:class:`geovit.data.levircd.LEVIRCD`). Facts from the ChangeViT code (specs/changevit.md §2):

* the model trains on 256x256 crops of the 1024x1024 scenes (16 non-overlapping tiles per scene);
  :class:`ChangeTiles` cuts them on the fly, so no cropped copy of the data set is needed;
* training augmentation, in order: with p=0.5 trim a random symmetric border of 0..``int(7/224*S)``
  pixels (same offset left/right, same top/bottom) and resize back to S (bilinear image, nearest
  label); up-down flip p=0.5; left-right flip p=0.5; swap t1 and t2 p=0.5. No colour jitter,
  no rotation (:class:`ChangeAugment`);
* normalisation: ImageNet mean/std on 0-1 RGB (training at the reference HEAD; ``"imagenet"``) or
  mean = std = 0.5 (the reference's ``eval.py`` and the paper-era training; ``"half"``). geovit
  uses one choice for training, evaluation and prediction, stored in the checkpoint.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from geovit.data.transforms import Compose
from geovit.errors import DataError, GeovitError

#: name -> (mean, std) per RGB channel on the 0-1 scale
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
#: mask value of pixels that metrics and loss ignore (padding, pixels owned by another tile)
IGNORE_INDEX = 255
#: ChangeViT needs sides that are multiples of the patch size
PATCH = 16


def normalize_rgb(image: torch.Tensor, normalization: str = "imagenet") -> torch.Tensor:
    """(..., 3, H, W) 0-255 values -> z-scored float32 with the named statistics."""
    if normalization not in NORMALIZATIONS:
        raise GeovitError(f"normalization={normalization!r}: expected one of {', '.join(NORMALIZATIONS)}")
    mean, std = (torch.tensor(v, dtype=torch.float32, device=image.device).view(3, 1, 1) for v in NORMALIZATIONS[normalization])
    return (image.float() / 255.0 - mean) / std


class Normalize:
    """Sample transform: z-score both dates of ``image`` (see :data:`NORMALIZATIONS`)."""

    def __init__(self, normalization: str = "imagenet"):
        normalize_rgb(torch.zeros(3, 1, 1), normalization)  # validate the name now
        self.normalization = normalization

    def __call__(self, sample: dict) -> dict:
        return {**sample, "image": normalize_rgb(sample["image"], self.normalization)}


# ------------------------------------------------------------------------------------- tiling
def tile_origins(size: int, tile: int, stride: int | None = None) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``[0, size)``; the last one ends at ``size``."""
    stride = tile if stride is None else stride
    if tile <= 0 or stride <= 0:
        raise GeovitError(f"tile={tile}, stride={stride}: both must be positive")
    if size < tile:
        raise GeovitError(f"tile {tile} is larger than the image side {size}")
    origins = list(range(0, size - tile + 1, stride))
    if origins[-1] + tile < size:
        origins.append(size - tile)
    return origins


@dataclass(frozen=True)
class TileWindow:
    """A tile ``[y, y+h) x [x, x+w)`` and the part of it that it *owns* (counted exactly once)."""

    y: int
    x: int
    h: int
    w: int
    own_y0: int
    own_x0: int
    own_y1: int
    own_x1: int


def _owned_1d(origins: list[int], tile: int, size: int) -> list[tuple[int, int]]:
    """Owned interval of each tile: from the end of the previous owner to its own end, so the
    intervals partition ``[0, size)`` (a shifted last tile owns only the pixels not yet owned)."""
    spans, start = [], 0
    for o in origins:
        end = min(o + tile, size)
        spans.append((start, end))
        start = end
    return spans


def tile_windows(height: int, width: int, tile: int) -> list[TileWindow]:
    """Non-overlapping ``tile`` x ``tile`` windows covering an image; when a side is not a multiple
    of ``tile`` the last window is shifted inside the image and owns only the new pixels."""
    ys, xs = tile_origins(height, tile), tile_origins(width, tile)
    own_y, own_x = _owned_1d(ys, tile, height), _owned_1d(xs, tile, width)
    return [TileWindow(y, x, tile, tile, oy0, ox0, oy1, ox1)
            for y, (oy0, oy1) in zip(ys, own_y) for x, (ox0, ox1) in zip(xs, own_x)]


class ChangeTiles(torch.utils.data.Dataset):
    """Tiles of the scenes of ``base`` (a dataset of full-scene samples), cut on the fly.

    Args:
        base: dataset returning raw samples (e.g. ``LEVIRCD(root, split)`` without transforms).
        tile: tile side (multiple of 16); ``0`` = whole scenes.
        transforms: applied to each tile sample.
        mark_unowned: set the mask of pixels owned by another (overlapping) tile to
            :data:`IGNORE_INDEX`, so every scene pixel is counted exactly once (evaluation).
        pad: pad whole scenes whose sides are not multiples of 16 (mask = ignore) instead of raising.
        cache_scenes: decoded scenes kept per process (least recently used dropped): tiles of
            a cached scene are cut without decoding it again. Visit the tiles of a few scenes at a
            time (:class:`geovit.data.samplers.BlockShuffleSampler`) to decode each scene once.
    """

    def __init__(self, base, tile: int = 256, *, transforms: Callable[[dict], dict] | None = None,
                 mark_unowned: bool = False, pad: bool = False, cache_scenes: int = 2):
        if tile < 0 or tile % PATCH:
            raise GeovitError(f"--tile {tile}: must be 0 (whole scenes) or a positive multiple of {PATCH}")
        self.base, self.tile, self.transforms = base, tile, transforms
        self.mark_unowned, self.pad = mark_unowned, pad
        self._cache: OrderedDict[int, dict] = OrderedDict()
        self._cache_size = cache_scenes
        height, width = base.scene_size()
        self.scene_hw = (height, width)
        if tile == 0:
            if (height % PATCH or width % PATCH) and not pad:
                raise DataError(f"{base.pairs[0].t1}: scene is {width}x{height}, sides must be multiples of "
                                f"{PATCH} for whole-scene processing; pass --pad or choose --tile")
            self.windows = [TileWindow(0, 0, height, width, 0, 0, height, width)]
        else:
            if tile > min(height, width):
                raise DataError(f"{base.pairs[0].t1}: scene is {width}x{height}, smaller than --tile {tile}")
            self.windows = tile_windows(height, width, tile)

    def __len__(self) -> int:
        return len(self.base) * len(self.windows)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()  # worker processes decode their own scenes
        return state

    def _scene(self, index: int) -> dict:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        scene = self.base[index]
        if tuple(scene["mask"].shape) != self.scene_hw:
            raise DataError(f"{self.base.pairs[index].t1}: scene is {scene['mask'].shape[1]}x{scene['mask'].shape[0]}, "
                            f"but the first scene is {self.scene_hw[1]}x{self.scene_hw[0]}; all scenes must share one size")
        self._cache[index] = scene
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return scene

    def __getitem__(self, index: int) -> dict:
        scene_idx, win_idx = divmod(index, len(self.windows))
        scene, win = self._scene(scene_idx), self.windows[win_idx]
        image = scene["image"][..., win.y:win.y + win.h, win.x:win.x + win.w]
        mask = scene["mask"][win.y:win.y + win.h, win.x:win.x + win.w].clone()
        if self.mark_unowned:
            owned = torch.zeros_like(mask, dtype=torch.bool)
            owned[win.own_y0 - win.y:win.own_y1 - win.y, win.own_x0 - win.x:win.own_x1 - win.x] = True
            mask[~owned] = IGNORE_INDEX
        sample = {"image": image, "mask": mask}
        if self.tile == 0 and self.pad:
            sample = pad_to_multiple(sample, PATCH)
        return self.transforms(sample) if self.transforms is not None else sample


def pad_to_multiple(sample: dict, multiple: int) -> dict:
    """Zero-pad image and pad mask with :data:`IGNORE_INDEX` at the bottom/right to multiples."""
    h, w = sample["mask"].shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == pw == 0:
        return sample
    return {**sample, "image": F.pad(sample["image"], (0, pw, 0, ph)),
            "mask": F.pad(sample["mask"], (0, pw, 0, ph), value=IGNORE_INDEX)}


# ------------------------------------------------------------------------------- augmentation
class ChangeAugment:
    """The ChangeViT training augmentation (module docstring), on raw 0-255 samples.

    ``max_border`` defaults to ``int(7 / 224 * side)`` (8 px for 256 tiles), as the reference.
    """

    def __init__(self, p_trim: float = 0.5, p_flip: float = 0.5, p_swap: float = 0.5,
                 max_border: int | None = None, generator: torch.Generator | None = None):
        self.p_trim, self.p_flip, self.p_swap = p_trim, p_flip, p_swap
        self.max_border = max_border
        self.generator = generator

    def _coin(self, p: float) -> bool:
        return bool(torch.rand(1, generator=self.generator) < p)

    def __call__(self, sample: dict) -> dict:
        image, mask = sample["image"], sample["mask"]
        h, w = mask.shape[-2:]
        if self._coin(self.p_trim):
            border = int(7 / 224 * min(h, w)) if self.max_border is None else self.max_border
            by, bx = (int(v) for v in torch.randint(0, border + 1, (2,), generator=self.generator))
            if by or bx:
                image = F.interpolate(image[..., by:h - by, bx:w - bx], size=(h, w), mode="bilinear", align_corners=False)
                mask = F.interpolate(mask[None, None, by:h - by, bx:w - bx].float(), size=(h, w), mode="nearest")[0, 0].long()
        if self._coin(self.p_flip):
            image, mask = image.flip(-2), mask.flip(-2)
        if self._coin(self.p_flip):
            image, mask = image.flip(-1), mask.flip(-1)
        if self._coin(self.p_swap):
            image = image.flip(0)
        return {**sample, "image": image.contiguous(), "mask": mask.contiguous()}


def make_transforms(train: bool, normalization: str = "imagenet") -> Compose:
    """Training: augment then normalise; evaluation: normalise only."""
    steps = [ChangeAugment()] if train else []
    return Compose([*steps, Normalize(normalization)])
