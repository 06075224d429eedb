"""torchgeo's sample conventions for geovit's change-detection datasets.

torchgeo's change-detection datasets (``torchgeo.datasets.LEVIRCD`` and its ``ChangeDetectionTask``)
exchange samples ``{"image": float (2, C, H, W) (t1 then t2), "mask": int64 (1, H, W)}``; the
leading mask axis is there for kornia's ``VideoSequential``. geovit's datasets
(:class:`geovit.data.levircd.LEVIRCD`, :class:`~geovit.data.levircd.WHUCD`,
:class:`~geovit.data.levircd.CLCD`, :class:`geovit.data.change_transforms.ChangeTiles`) return the
same image and an (H, W) mask. :class:`TorchgeoChangeDataset` wraps any of them and returns
torchgeo's keys, dtypes and shapes, so their samples (and every layout geovit reads) feed torchgeo's
datamodules, augmentations and trainers unchanged; :func:`torchgeo_levircd` builds the wrapped
LEVIR-CD split in one call. Nothing here imports torchgeo.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import torch
from torch.utils.data import Dataset

from geovit.errors import DataError

__all__ = ["TorchgeoChangeDataset", "to_torchgeo_change_sample", "torchgeo_levircd"]


def to_torchgeo_change_sample(sample: Mapping[str, Any]) -> dict[str, Any]:
    """One geovit change sample in torchgeo's convention.

    Args:
        sample: ``{"image": (2, C, H, W), "mask": (H, W) or (1, H, W), ...}``; other keys pass through.

    Returns:
        A new dict with ``image`` float32 (2, C, H, W) and ``mask`` int64 (1, H, W).

    Raises:
        DataError: missing keys or shapes that are not a bitemporal pair with its mask.
    """
    missing = [k for k in ("image", "mask") if k not in sample]
    if missing:
        raise DataError(f"change sample: missing keys {missing}; expected 'image' (2, C, H, W) and 'mask' (H, W)")
    image, mask = torch.as_tensor(sample["image"]), torch.as_tensor(sample["mask"])
    if image.ndim != 4 or image.shape[0] != 2:
        raise DataError(f"change sample: 'image' has shape {tuple(image.shape)}, expected (2, C, H, W) (t1, t2)")
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or mask.shape[0] != 1 or mask.shape[1:] != image.shape[2:]:
        raise DataError(f"change sample: 'mask' has shape {tuple(torch.as_tensor(sample['mask']).shape)}, expected "
                        f"{tuple(image.shape[2:])} or (1, {image.shape[2]}, {image.shape[3]}) to match 'image'")
    if mask.is_floating_point():
        raise DataError(f"change sample: 'mask' has dtype {mask.dtype}, expected integer class values")
    return {**sample, "image": image.float(), "mask": mask.long()}


class TorchgeoChangeDataset(Dataset):
    """A geovit change dataset whose samples follow torchgeo (see the module docstring).

    Args:
        dataset: any dataset of geovit change samples (``LEVIRCD``, ``ChangeTiles`` ...).
        transforms: applied to each torchgeo-keyed sample (torchgeo's own ``transforms`` argument).
    """

    def __init__(self, dataset: Dataset, transforms: Callable[[dict], dict] | None = None):
        self.dataset = dataset
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = to_torchgeo_change_sample(self.dataset[index])
        return self.transforms(sample) if self.transforms is not None else sample

    def __getattr__(self, name: str) -> Any:
        """Attributes of the wrapped dataset (``pairs``, ``split``, ``plot`` ...)."""
        if name in ("dataset", "transforms"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def torchgeo_levircd(root: str | os.PathLike = "data", split: str = "train", *,
                     transforms: Callable[[dict], dict] | None = None, **kwargs: Any) -> TorchgeoChangeDataset:
    """geovit's LEVIR-CD reader (any layout, see :mod:`geovit.data.levircd`) with torchgeo's sample keys.

    Args:
        root: dataset folder.
        split: ``"train"``, ``"val"`` or ``"test"``.
        transforms: applied to each torchgeo-keyed sample.
        **kwargs: passed to :class:`geovit.data.levircd.LEVIRCD` (``labels``, ``extract``).

    Returns:
        The wrapped dataset; on torchgeo's own files its samples equal ``torchgeo.datasets.LEVIRCD``'s.
    """
    from geovit.data.levircd import LEVIRCD

    return TorchgeoChangeDataset(LEVIRCD(root, split, **kwargs), transforms=transforms)
