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
    BlockBatchSampler(n, batch_size, block_size, num_replicas=1, rank=0, seed=0, order=None)
    BlockShuffleSampler(n, block_size, window, num_replicas=1, rank=0, seed=0)
    resume_plan(position, epoch, batches_per_epoch) -> (epoch, batches to skip)
"""
from __future__ import annotations

import hashlib
from typing import Callable, Iterator, Sequence

import numpy as np
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

    Examples:
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

    Examples:
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

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """``[self[i] for i in indices]``, reading through the wrapped dataset's ``__getitems__``
        when it has one (one read for a batch, e.g. :meth:`geovit.data.so2sat.So2Sat.__getitems__`).

        Args:
            indices: dataset indices.

        Returns:
            The augmented samples, in the order of ``indices``.
        """
        read = getattr(self.dataset, "__getitems__", None)
        samples = read(list(indices)) if read is not None else [self.dataset[i] for i in indices]
        out = []
        for index, sample in zip(indices, samples):
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, int(index)))
            out.append(self.make_transform(g)(sample))
        return out


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

    Examples:
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

    Examples:
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


class _EpochOrder:
    """``set_epoch`` of the block samplers: the epoch picks the order and reaches the dataset."""

    epoch: int
    dataset: Dataset | None

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order (and tell the dataset, when it has ``set_epoch``).

        Args:
            epoch: epoch number (0-based).
        """
        self.epoch = int(epoch)
        if self.dataset is not None and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


class BlockBatchSampler(_EpochOrder, Sampler[list[int]]):
    """Training batches made of runs of consecutive rows, for one read per run (HDF5 slices).

    The positions ``0..n-1`` are cut into blocks of ``block_size`` consecutive positions; an
    epoch shuffles the blocks (a permutation fixed by ``(seed, epoch)``), concatenates them,
    pads the stream to a multiple of ``num_replicas`` by repeating its first items (as
    ``DistributedSampler`` does: with ``n`` a multiple of ``num_replicas`` every position is drawn
    exactly once per epoch over all ranks), gives rank ``r`` the ``r``-th contiguous share, cuts
    the share into batches of ``batch_size`` and shuffles each batch (fixed by
    ``(seed, epoch, rank, batch)``). A batch therefore holds about ``batch_size / block_size``
    runs of consecutive positions, which a dataset's ``__getitems__`` reads with one call each
    (``DataLoader(dataset, batch_sampler=...)`` passes a whole batch of indices to it).

    ``order`` maps positions to dataset indices: with ``order = numpy.argsort(rows)`` the runs
    are consecutive in the file even when the dataset's index order is not (So2Sat's v3 splits,
    :meth:`geovit.data.so2sat.So2Sat.storage_order`).

    Nothing depends on the global RNGs, the number of workers or on batches drawn before, so
    :attr:`skip` (batches, set from :func:`resume_plan`) resumes an epoch exactly: the batches
    after the skip are those the uninterrupted epoch yields. :meth:`set_epoch` also forwards the
    epoch to a dataset that has ``set_epoch`` (:class:`SeededAugment`). The length is the full
    epoch's batch count, as for :class:`EpochSampler`.

    Args:
        n: number of samples.
        batch_size: samples per batch.
        block_size: consecutive positions per block (1 = a plain per-sample shuffle).
        num_replicas: number of ranks.
        rank: this rank.
        seed: run seed.
        drop_last: drop the last batch of a rank's share when it is incomplete.
        order: dataset index of each position (a permutation of ``range(n)``); default identity.
        dataset: dataset whose ``set_epoch`` to call (optional).
        skip: batches of the next iteration to drop, once (a resumed epoch's consumed batches).

    Raises:
        ValueError: ``n``, ``batch_size``, ``block_size`` or the ranks are out of range, or
            ``order`` is not a permutation of ``range(n)``.

    Examples:
        >>> s = BlockBatchSampler(8, batch_size=4, block_size=2, seed=0)
        >>> s.set_epoch(0)
        >>> batches = list(s)
        >>> len(batches), sorted(i for b in batches for i in b)
        (2, [0, 1, 2, 3, 4, 5, 6, 7])
    """

    def __init__(self, n: int, batch_size: int, block_size: int = 16, *, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0, drop_last: bool = True, order: Sequence[int] | None = None, dataset=None,
                 skip: int = 0):
        if n < 1 or batch_size < 1 or block_size < 1:
            raise ValueError(f"BlockBatchSampler: n={n}, batch_size={batch_size} and block_size={block_size} "
                             "must all be >= 1")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"BlockBatchSampler: rank={rank} must be in [0, num_replicas={num_replicas})")
        self.n, self.batch_size, self.block_size = int(n), int(batch_size), int(block_size)
        self.num_replicas, self.rank, self.seed = int(num_replicas), int(rank), int(seed)
        self.drop_last = bool(drop_last)
        if order is not None:
            order = np.asarray(order, dtype=np.int64)
            if order.shape != (self.n,) or not np.array_equal(np.sort(order), np.arange(self.n)):
                raise ValueError(f"BlockBatchSampler: order must be a permutation of range({self.n})")
        self.order = order
        self.dataset = dataset
        self.epoch = 0
        self.skip = int(skip)
        #: samples of each rank's share (the padded epoch divided by the ranks)
        self.num_samples = -(-self.n // self.num_replicas)

    @property
    def sampler(self) -> "BlockBatchSampler":
        """This batch sampler itself.

        Lightning calls ``set_epoch`` before every epoch on ``loader.sampler`` and on
        ``loader.batch_sampler.sampler``, never on the batch sampler; without this, every epoch of a
        ``Trainer.fit`` would repeat epoch 0's order.
        """
        return self

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def rank_positions(self) -> np.ndarray:
        """This rank's share of the epoch's block-shuffled stream, as dataset indices (unbatched).

        Returns:
            An int64 array of ``num_samples`` indices.
        """
        stream = block_stream(self.n, self.block_size, mix_seed(self.seed, self.epoch))
        share = rank_share(stream, self.num_replicas, self.rank)
        return share if self.order is None else self.order[share]

    def __iter__(self) -> Iterator[list[int]]:
        share = self.rank_positions()
        batches = len(self)
        skip, self.skip = self.skip, 0
        for b in range(skip, batches):
            batch = share[b * self.batch_size:(b + 1) * self.batch_size]
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, self.rank, b))
            yield batch[torch.randperm(len(batch), generator=g).numpy()].tolist()


def block_stream(n: int, block_size: int, seed: int) -> np.ndarray:
    """``0..n-1`` cut into blocks of ``block_size`` consecutive values, in a block order shuffled by ``seed``.

    Args:
        n: number of items.
        block_size: items per block (the last block may be shorter).
        seed: seed of the block permutation.

    Returns:
        An int64 array, a permutation of ``range(n)``.
    """
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randperm(-(-n // block_size), generator=g).numpy()
    starts = blocks * block_size
    lengths = np.minimum(starts + block_size, n) - starts
    # item j of the stream: the start of its block + its offset inside the block
    return np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths) + np.arange(n)


def rank_share(stream: np.ndarray, num_replicas: int, rank: int) -> np.ndarray:
    """Rank ``rank``'s contiguous share of ``stream``, padded as ``DistributedSampler`` pads.

    Args:
        stream: the epoch's items.
        num_replicas: number of ranks.
        rank: this rank.

    Returns:
        ``ceil(len(stream) / num_replicas)`` items; the stream's first items repeat at the end
        to make the shares equal.
    """
    per_rank = -(-len(stream) // num_replicas)
    total = per_rank * num_replicas
    if total > len(stream):
        stream = np.concatenate([stream, np.resize(stream, total - len(stream))])
    return stream[rank * per_rank:(rank + 1) * per_rank]


class BlockShuffleSampler(_EpochOrder, Sampler[int]):
    """Indices in blocks of consecutive ones, blocks shuffled, then mixed ``window`` blocks at a time.

    For datasets whose consecutive indices share an expensive resource: the tiles of one
    scene (:class:`geovit.data.change_transforms.ChangeTiles`, ``block_size`` = tiles per
    scene). An epoch shuffles the blocks (fixed by ``(seed, epoch)``), then shuffles the items
    of every ``window`` consecutive blocks together (fixed by ``(seed, epoch, window number)``),
    so a dataset that caches the last ``window`` resources loads each once per epoch while a
    batch still mixes ``window`` of them. Ranks get contiguous shares of the stream, padded as
    ``DistributedSampler`` pads (every index once per epoch when ``n`` is a multiple of
    ``num_replicas``). :attr:`skip` (items) resumes an epoch exactly; :meth:`set_epoch`
    forwards to a dataset with ``set_epoch``; the length is the full share, as for
    :class:`EpochSampler`.

    Args:
        n: number of items.
        block_size: consecutive indices per block.
        window: blocks mixed together.
        num_replicas: number of ranks.
        rank: this rank.
        seed: run seed.
        dataset: dataset whose ``set_epoch`` to call (optional).
        skip: leading items of the next iteration to drop, once.

    Raises:
        ValueError: an argument out of range.

    Examples:
        >>> s = BlockShuffleSampler(8, block_size=4, window=1, seed=0)
        >>> items = list(s)
        >>> sorted(items[:4]) in ([0, 1, 2, 3], [4, 5, 6, 7]), sorted(items)
        (True, [0, 1, 2, 3, 4, 5, 6, 7])
    """

    def __init__(self, n: int, block_size: int, window: int = 4, *, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0, dataset=None, skip: int = 0):
        if n < 1 or block_size < 1 or window < 1:
            raise ValueError(f"BlockShuffleSampler: n={n}, block_size={block_size} and window={window} must be >= 1")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"BlockShuffleSampler: rank={rank} must be in [0, num_replicas={num_replicas})")
        self.n, self.block_size, self.window = int(n), int(block_size), int(window)
        self.num_replicas, self.rank, self.seed = int(num_replicas), int(rank), int(seed)
        self.dataset, self.epoch, self.skip = dataset, 0, int(skip)

    def __len__(self) -> int:
        return -(-self.n // self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        stream = block_stream(self.n, self.block_size, mix_seed(self.seed, self.epoch))
        span = self.block_size * self.window
        for w, start in enumerate(range(0, self.n, span)):
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, w))
            part = stream[start:start + span]
            stream[start:start + span] = part[torch.randperm(len(part), generator=g).numpy()]
        share = rank_share(stream, self.num_replicas, self.rank).tolist()
        skip, self.skip = self.skip, 0
        return iter(share[skip:])


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

    Examples:
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
