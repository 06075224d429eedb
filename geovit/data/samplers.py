"""Reproducible data order and augmentation, also across resumed and multi-process runs.

A training epoch's order is a permutation fixed by ``(seed, epoch)`` and sharded over the ranks
(:class:`EpochSampler`); per-sample augmentations draw from a generator seeded by
``(seed, epoch, index)`` (:class:`SeededAugment`). Neither depends on the global RNGs, the
number of DataLoader workers or how many batches ran before, so a run resumed from a
checkpoint sees exactly the samples and augmentations the uninterrupted run would have seen —
provided it skips the batches of the resumed epoch that were already consumed
(:func:`resume_plan`).

Public API::

    mix_seed(seed, epoch, index) -> int            # stable 32-bit seed from integers
    SeededAugment(dataset, make_transform, seed)   # make_transform(generator) -> sample transform
    EpochSampler(dataset, num_replicas, rank, shuffle=True, seed=0, skip=0)
    CycleSampler(n, length, num_replicas=1, rank=0, seed=0, stream=0, draw_seeds=False)
    resume_plan(position, epoch, batches_per_epoch) -> (epoch, batches to skip)
"""
from __future__ import annotations

import hashlib
from typing import Callable, Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler


def mix_seed(*values: int) -> int:
    """A 32-bit seed derived from integers, the same in every process and Python session.

    Unlike ``hash``, the result does not change with ``PYTHONHASHSEED``; it is the first four
    bytes (little endian) of the BLAKE2b digest of ``repr(values)``.

    Args:
        *values: integers to combine, e.g. ``(seed, epoch, index)``; their order matters.

    Returns:
        An integer in ``[0, 2**32)``.

    >>> mix_seed(0, 1, 2) == mix_seed(0, 1, 2) != mix_seed(0, 2, 1)
    True
    """
    digest = hashlib.blake2b(repr(values).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


class SeededAugment(Dataset):
    """Wrap a dataset so that each sample's random transform is a function of (seed, epoch, index).

    Item ``i`` is ``make_transform(g)(dataset[i])`` with ``g`` a fresh ``torch.Generator``
    seeded by :func:`mix_seed` ``(seed, epoch, i)``: the same item of the same epoch is always
    augmented the same way, whichever worker process reads it and whatever ran before.
    :class:`EpochSampler` calls :meth:`set_epoch` before each epoch's iterator is built.

    Args:
        dataset: the map-style dataset to augment.
        make_transform: ``make_transform(generator)`` returns the transform of one sample; it
            must draw every random number from ``generator``.
        seed: run seed.

    >>> import torch
    >>> from geovit.data.transforms import RandomFlipRotate
    >>> base = [{"image": torch.arange(4.0).reshape(1, 2, 2), "channels": torch.tensor([0])}]
    >>> aug = SeededAugment(base, lambda g: RandomFlipRotate(generator=g), seed=3)
    >>> torch.equal(aug[0]["image"], aug[0]["image"])
    True
    """

    def __init__(self, dataset: Dataset, make_transform: Callable[[torch.Generator], Callable[[dict], dict]],
                 seed: int = 0):
        self.dataset, self.make_transform, self.seed, self.epoch = dataset, make_transform, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentations of ``epoch`` from now on.

        Args:
            epoch: epoch number (0-based).
        """
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, int(index)))
        return self.make_transform(g)(self.dataset[index])


class EpochSampler(DistributedSampler):
    """A ``DistributedSampler`` whose shuffle is fixed by (seed, epoch), that can skip a resumed prefix.

    Lightning calls :meth:`set_epoch` at the start of every epoch (also after a resume), so
    each rank's order depends only on the seed, the epoch number, the number of replicas and
    the rank. :meth:`set_epoch` also forwards the epoch to a dataset that has ``set_epoch``
    (e.g. :class:`SeededAugment`). As ``DistributedSampler`` does, the shuffled indices are
    padded by repeating the first ones until every rank gets the same count (unless
    ``drop_last``), so when the dataset size is a multiple of ``num_replicas`` every index is
    drawn exactly once per epoch over all ranks.

    Args:
        *args: ``DistributedSampler`` arguments (``dataset, num_replicas, rank, shuffle,
            seed, drop_last``).
        skip: leading indices of this rank's shard to drop, once: the samples a resumed epoch
            had already consumed. The length stays the full epoch's, as Lightning counts the
            consumed batches itself.
        **kwargs: ``DistributedSampler`` keyword arguments.

    >>> shards = []
    >>> for rank in (0, 1):
    ...     sampler = EpochSampler(range(6), num_replicas=2, rank=rank, shuffle=True, seed=0)
    ...     sampler.set_epoch(1)
    ...     shards.append(list(sampler))
    >>> sorted(shards[0] + shards[1])
    [0, 1, 2, 3, 4, 5]
    """

    def __init__(self, *args, skip: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip = int(skip)

    def set_epoch(self, epoch: int) -> None:
        """Shuffle with ``epoch`` (and tell the dataset, when it has ``set_epoch``).

        Args:
            epoch: epoch number (0-based).
        """
        super().set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])


class CycleSampler(Sampler):
    """A fixed number of indices per epoch from a data set of any size, cycling through it.

    For balanced multi-data-set training (VICON's loop: every step one batch of each set, the
    epoch as long as the largest set), a small set is gone through several times per epoch.
    Cycle ``c`` of epoch ``e`` is a permutation fixed by ``(seed, stream, e, c)``, padded to a
    multiple of ``num_replicas`` and sharded like ``DistributedSampler``; the epoch's stream is
    cut at ``length`` indices per rank. With ``draw_seeds`` every item is ``(index, seed)``, the
    seed fixed by ``(seed, stream, e, rank, position)``, for data sets whose items make random
    draws (a dataset's ``__getitem__`` receives the tuple). Nothing depends on the global RNGs
    or on how many batches ran before, so :attr:`skip` (set from :func:`resume_plan`) resumes an
    epoch exactly.

    Args:
        n: data-set size.
        length: indices per rank and epoch.
        num_replicas: number of ranks.
        rank: this rank.
        seed: run seed.
        stream: tells apart several samplers of one run (e.g. the data set's position).
        draw_seeds: yield ``(index, seed)`` instead of ``index``.

    >>> s = CycleSampler(3, 7, seed=0)
    >>> s.set_epoch(0)
    >>> items = list(s)
    >>> len(items), sorted(items[:3]) == [0, 1, 2], sorted(items[3:6]) == [0, 1, 2]
    (7, True, True)
    """

    def __init__(self, n: int, length: int, *, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 stream: int = 0, draw_seeds: bool = False):
        if n < 1 or length < 0:
            raise ValueError(f"CycleSampler: n={n} must be >= 1 and length={length} >= 0")
        self.n, self.length, self.num_replicas, self.rank = int(n), int(length), int(num_replicas), int(rank)
        self.seed, self.stream, self.draw_seeds = int(seed), int(stream), bool(draw_seeds)
        self.epoch = 0
        #: leading items of the next iteration to drop, once (a resumed epoch's consumed items)
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s permutations.

        Args:
            epoch: epoch number (0-based).
        """
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator:
        order: list[int] = []
        cycle = 0
        while len(order) < self.length:
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.stream, self.epoch, cycle))
            perm = torch.randperm(self.n, generator=g).tolist()
            size = -(-self.n // self.num_replicas) * self.num_replicas  # padded as DistributedSampler
            perm = (perm * -(-size // self.n))[:size]
            order += perm[self.rank::self.num_replicas]
            cycle += 1
        order = order[: self.length]
        items: list = order
        if self.draw_seeds:
            items = [(i, mix_seed(self.seed, self.stream, self.epoch, self.rank, pos)) for pos, i in enumerate(order)]
        skip, self.skip = self.skip, 0
        return iter(items[skip:])


def resume_plan(position: tuple[int, int] | None, epoch: int, batches_per_epoch: int) -> tuple[int, int]:
    """Which epoch's order to use and how many of its batches to skip when (re)building a loader.

    ``position`` is the ``(epoch, batches consumed in it)`` a checkpoint recorded. A loader
    built for the same epoch in the middle of it skips the consumed batches; a checkpoint
    written at the end of an epoch (every batch consumed) moves on to the next epoch.
    Otherwise the epoch starts from its first batch.

    Args:
        position: ``(saved_epoch, batches_done)`` from the checkpoint, or ``None`` (fresh run).
        epoch: the trainer's current epoch.
        batches_per_epoch: batches one rank draws in an epoch (``drop_last`` loaders).

    Returns:
        ``(epoch, batches_to_skip)``.

    >>> resume_plan((2, 3), 2, 10), resume_plan((2, 10), 2, 10), resume_plan(None, 4, 10)
    ((2, 3), (3, 0), (4, 0))
    """
    if position is None:
        return epoch, 0
    saved_epoch, done = (int(v) for v in position)
    if saved_epoch == epoch and 0 < done < batches_per_epoch:
        return epoch, done
    if done >= batches_per_epoch:
        return max(epoch, saved_epoch + 1), 0
    return epoch, 0
