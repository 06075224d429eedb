"""Batching samples whose channel sets differ (CHAMMI: 3, 4 and 5 channels in one batch).

``pad_channels_collate`` stacks sample dicts (``image`` (C_i, H, W), ``channels`` (C_i,)
absolute ids, optional ``label``) into one padded batch, the layout ChA-MAEViT trains CHAMMI
with (specs/chamaevit.md §7: ``channel_ids_list`` + ``valid_channel_masks``):

* ``image`` (B, Cmax, H, W): each sample's channels first, zeros after;
* ``channels`` (B, Cmax) LongTensor: absolute ids, padded slots hold 0 (never read: masked);
* ``channel_mask`` (B, Cmax) bool: True where a slot holds a real channel;
* ``label`` (B,) LongTensor when every sample has an integer label;
* any other key: a list of the per-sample values.

:func:`shared_channels` tells whether a batch is "regular" (every sample has the same ids, no
padding), in which case models take the cheaper shared-ids path (``channels`` (C,), no mask).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from geovit.errors import DataError

_CORE = ("image", "channels", "channel_mask", "label")


def pad_channels_collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pad a list of sample dicts with different channel counts into one batch (see module doc)."""
    if not samples:
        raise DataError("pad_channels_collate: empty batch")
    images = [torch.as_tensor(s["image"]) for s in samples]
    ids = [torch.as_tensor(s["channels"], dtype=torch.long).reshape(-1) for s in samples]
    size = tuple(images[0].shape[-2:])
    for i, (img, cid) in enumerate(zip(images, ids)):
        if img.ndim != 3:
            raise DataError(f"pad_channels_collate: sample {i} image has shape {tuple(img.shape)}, expected (C, H, W)")
        if tuple(img.shape[-2:]) != size:
            raise DataError(f"pad_channels_collate: sample {i} image is {tuple(img.shape[-2:])} but sample 0 is {size}; "
                            "resize images to one size before batching (e.g. CHAMMI(image_size=...))")
        if cid.numel() != img.shape[0]:
            raise DataError(f"pad_channels_collate: sample {i} has {img.shape[0]} image channels but "
                            f"{cid.numel()} channel ids")
    batch_size, cmax = len(samples), max(img.shape[0] for img in images)
    first = images[0]
    if all(img.shape == first.shape and img.dtype == first.dtype for img in images) and all(
            torch.equal(cid, ids[0]) for cid in ids[1:]):
        # a regular batch (So2Sat): the same layout without zero-filling and copying sample by sample
        image = torch.stack(images)
        channels = ids[0].expand(batch_size, -1).clone()
        mask = torch.ones(batch_size, cmax, dtype=torch.bool)
    else:
        image = first.new_zeros((batch_size, cmax, *size))
        channels = torch.zeros(batch_size, cmax, dtype=torch.long)
        mask = torch.zeros(batch_size, cmax, dtype=torch.bool)
        for i, (img, cid) in enumerate(zip(images, ids)):
            c = img.shape[0]
            image[i, :c] = img
            channels[i, :c] = cid
            mask[i, :c] = True
    batch: dict[str, Any] = {"image": image, "channels": channels, "channel_mask": mask}
    if all(isinstance(s.get("label"), (int, torch.Tensor)) and not isinstance(s.get("label"), bool) for s in samples):
        batch["label"] = torch.as_tensor([int(s["label"]) for s in samples], dtype=torch.long)
    for key in samples[0]:
        if key not in _CORE:
            batch[key] = [s.get(key) for s in samples]
    return batch


def shared_channels(batch: dict[str, Any]) -> torch.Tensor | None:
    """The (C,) ids shared by every sample of a padded batch with no padding, else ``None``."""
    mask, channels = batch["channel_mask"], batch["channels"]
    if not bool(mask.all()):
        return None
    if not bool((channels == channels[:1]).all()):
        return None
    return channels[0]
