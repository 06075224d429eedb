"""Hierarchical Channel Sampling (HCS) draws shared by the channel-adaptive models.

Bao et al., "Channel Vision Transformers", ICLR 2024, §3.2: during training draw a channel count
m ~ U{low..high} (the paper: U{1..C}), then a uniformly random m-subset of the C channels, in
random order. ChA-MAEViT's reference code offers the same draw (``training_sample: hcs``), once
per batch for a regular batch and once per sample for a padded batch.

The draws use Python's ``random`` module (the global one unless an ``rng`` is given), as both
reference implementations do; geovit's training tasks re-seed it before every step
(:func:`geovit.tasks.base.seed_step`), so a resumed run draws the same subsets.
"""
from __future__ import annotations

import random
from typing import Any

from geovit.errors import GeovitError

__all__ = ["check_count_bounds", "hcs_draw"]


def check_count_bounds(low: int, high: int | None, what: str = "channel_sampling") -> None:
    """Raise :class:`GeovitError` unless ``1 <= low`` and ``low <= high`` (``high`` None: no cap).

    Args:
        low: fewest channels a draw keeps.
        high: most channels a draw keeps (None: all of them).
        what: the setting's name prefix, for the message.
    """
    if isinstance(low, bool) or not isinstance(low, int) or low < 1:
        raise GeovitError(f"{what}_min={low!r}: expected an integer >= 1 (a draw keeps at least one channel)")
    if high is not None and (isinstance(high, bool) or not isinstance(high, int) or high < low):
        raise GeovitError(f"{what}_max={high!r}: expected null or an integer >= {what}_min={low}")


def hcs_draw(k: int, rng: Any = None, low: int = 1, high: int | None = None) -> list[int]:
    """One HCS draw over ``k`` channels: positions of the kept channels, in random order.

    m ~ U{min(low, k)..min(high, k)}, then ``rng.sample(range(k), m)``. With the default bounds
    this is the paper's draw (m ~ U{1..k}) and makes the same two calls as ChannelViT's.

    Args:
        k: channels present (≥ 1).
        rng: a :class:`random.Random` (default: the global ``random`` module).
        low: fewest channels kept (clipped to ``k``).
        high: most channels kept (None: ``k``; clipped to ``k``).

    Returns:
        ``m`` distinct positions in ``0..k-1``.

    Raises:
        GeovitError: ``k < 1`` or bad bounds.
    """
    if k < 1:
        raise GeovitError(f"channel sampling: the input has {k} channels; nothing to draw from")
    check_count_bounds(low, high)
    rng = random if rng is None else rng
    top = k if high is None else min(high, k)
    m = rng.randint(min(low, top), top)
    return rng.sample(range(k), m)
