"""VICON's LightningDataModule (the data sets themselves are registered in :mod:`pdes.datasets`).

Public API::

    roots = pdes.datasets.resolve_vicon_data(None, out)   # [OUT/synthetic_data/vicon_default/ns2d, .../cfd2d]
    dm = VICONDataModule(roots, num_pairs=10, max_stride=5, batch_size=8)
    dm.setup("fit"); dm.frame_size; dm.train_dataloader()   # {name: batch} with one batch per data set
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

from geovit.data.datamodules import GeovitDataModule
from geovit.errors import DataError, GeovitError

class VICONDataModule(GeovitDataModule):
    """Training prompts of several fluid data sets; every step takes one batch of each.

    As the official loop, batches are balanced by data set, not by size: the train loader is a
    Lightning ``CombinedLoader`` (``"max_size_cycle"``) over one shuffled loader per data set
    (batch ``min(batch_size, len(set))``, resumable: see :meth:`train_dataloader`) and yields
    ``{name: batch}``; the validation loader walks every set's ``valid`` split once, in order
    (``"max_size"``). Prompts draw a stride and COND times per item (:class:`pdes.data.PromptDataset`;
    training draws seeded by ``(seed, epoch, position)``, validation ones by ``(seed + 1, index)``,
    the same every epoch). A missing ``valid``
    split is allowed (:attr:`has_validation` is then False and the val loader is empty).

    Args:
        roots: data-set folders (PDEArena shard folder, PDEBench ``.hdf5`` folder or file, VICON
            ``{split}/`` folder), one per data set.
        num_pairs: (condition, QoI) pairs per prompt.
        max_stride: largest time stride between a condition and its QoI.
        channels: slot names to train on (default: every field of each set).
        frame_size: average-pool frames to this side (default: the stored one, which must then
            agree between the sets).
        batch_size: prompts per data set and step.
        num_workers: DataLoader worker processes (per data set).
        seed: seed of the order and of the prompt draws.

    Examples:
        >>> import tempfile
        >>> from pdes.synthetic import write_synthetic_ns2d
        >>> root = write_synthetic_ns2d(Path(tempfile.mkdtemp()) / "ns2d", num_samples=2)
        >>> dm = VICONDataModule([root], num_pairs=3, max_stride=2, batch_size=2)
        >>> dm.setup("fit")
        >>> dm.frame_size, dm.has_validation
        (32, True)
        >>> batch, _, _ = next(iter(dm.train_dataloader()))
        >>> tuple(next(iter(batch.values()))["cond"].shape)
        (2, 3, 7, 32, 32)
    """

    splits = ("train", "valid", "test")

    def __init__(self, roots: Sequence[str | os.PathLike], num_pairs: int = 10, max_stride: int = 5,
                 channels: Sequence[str] | None = None, frame_size: int | None = None, batch_size: int = 8,
                 num_workers: int = 0, seed: int = 0):
        if isinstance(roots, (str, os.PathLike)):
            roots = [roots]
        roots = [Path(r) for r in roots]
        if not roots:
            raise GeovitError("roots=[]: expected at least one data-set folder")
        super().__init__(roots[0], batch_size=batch_size, num_workers=num_workers, seed=seed, augment=False)
        from pdes.data import SLOTS

        self.roots = roots
        self.num_pairs = int(num_pairs)
        self.max_stride = int(max_stride)
        self.channels = None if channels is None else list(channels)
        self.requested_frame_size = frame_size
        self.train_datasets: list | None = None
        self.val_datasets: list | None = None
        self.test_datasets: list | None = None
        self._frame: int | None = None
        #: VICON's fixed channel slots (``pdes.data.SLOTS``); the model has one input per slot
        self.slot_names: tuple[str, ...] = SLOTS

    @property
    def channel_names(self) -> tuple[str, ...]:
        """VICON's fixed channel slots (``pdes.data.SLOTS``)."""
        return self.slot_names

    @property
    def channel_ids(self) -> tuple[int, ...]:
        """Slot indices ``0 .. len(SLOTS) - 1``."""
        return tuple(range(len(self.slot_names)))

    @property
    def frame_size(self) -> int:
        """Side of the frames every data set delivers (sets up ``"fit"`` when needed)."""
        self.setup("fit")
        return self._frame

    @property
    def has_validation(self) -> bool:
        """Whether any data set has a ``valid`` split (sets up ``"fit"`` when needed)."""
        self.setup("fit")
        return bool(self.val_datasets)

    def _prompts(self, split: str, seed: int, optional: bool) -> list:
        from pdes.data import PromptDataset, SplitNotFound

        out = []
        for root in self.roots:
            try:
                out.append(PromptDataset(root, split, num_pairs=self.num_pairs, max_stride=self.max_stride, seed=seed,
                                         channels=self.channels, frame_size=self.requested_frame_size))
            except SplitNotFound:
                if not optional:
                    raise
        return out

    def setup(self, stage: str | None = None) -> None:
        """Open the prompt datasets a stage needs (each once).

        Args:
            stage: ``"fit"`` (train + valid), ``"validate"``, ``"test"``/``"predict"``, or ``None`` (all).

        Raises:
            DataError: the sets deliver different frame sizes, or a folder holds no train split.
        """
        from pdes.data import check_same_frames

        if self.train_datasets is None and stage in ("fit", "validate", "test", "predict", None):
            train = self._prompts("train", self.seed, optional=False)
            sizes = {d.frame_size for d in train}
            if len(sizes) > 1:
                raise DataError(f"roots: data sets have different frame sizes {sorted(sizes)}; pass frame_size= a "
                                "common size (frames are average-pooled by an integer factor)")
            self._frame = sizes.pop()
            self.train_datasets = train
        if self.val_datasets is None and stage in ("fit", "validate", None):
            self.val_datasets = self._prompts("valid", self.seed + 1, optional=True)
            check_same_frames(self.train_datasets + self.val_datasets, self._frame)
        if self.test_datasets is None and stage in ("test", "predict", None):
            self.test_datasets = self._prompts("test", self.seed + 2, optional=True)
            check_same_frames(self.test_datasets, self._frame)

    def _combined(self, datasets: list, *, mode: str, shuffle: bool):
        from lightning.pytorch.utilities import CombinedLoader

        from pdes.data import multi_dataset_loaders

        loaders = multi_dataset_loaders(datasets, self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                                        seed=self.seed)
        return CombinedLoader(loaders, mode=mode)

    def batches_per_epoch(self, world_size: int | None = None) -> int:
        """Steps of one training epoch: the largest set's batch count (``"max_size_cycle"``).

        Args:
            world_size: number of ranks (default: the attached trainer's, else 1).

        Returns:
            The count.
        """
        self.setup("fit")
        world = self._world()[0] if world_size is None else int(world_size)
        return max(math.ceil(math.ceil(len(d) / world) / min(self.batch_size, len(d))) for d in self.train_datasets)

    def split_dataloader(self, split: str):
        """Prompts of one split of every data set, in order (``"max_size"``).

        Args:
            split: ``"train"``, ``"valid"`` or ``"test"``.

        Returns:
            The loader.

        Raises:
            DataError: a data set has no such split.
        """
        self.setup("fit")
        datasets = self._prompts(split, self.seed + 1, optional=False)
        from pdes.data import check_same_frames

        check_same_frames(datasets, self._frame)
        return self._combined(datasets, mode="max_size", shuffle=False)

    def train_dataloader(self):
        """One batch of every data set per step (``CombinedLoader``), resumable mid-epoch.

        An epoch is :meth:`batches_per_epoch` steps; each set's loader draws that many batches
        from a :class:`~geovit.data.samplers.CycleSampler` (its own shuffles fixed by seed,
        epoch and set; per-item prompt draws seeded likewise), so smaller sets cycle and a run
        resumed from a mid-epoch checkpoint skips exactly the consumed batches.
        """
        from lightning.pytorch.utilities import CombinedLoader
        from torch.utils.data import DataLoader

        from geovit.data.samplers import CycleSampler, resume_plan

        self.setup("fit")
        world, rank = self._world()
        steps = self.batches_per_epoch(world)
        epoch = 0 if self.trainer is None else int(self.trainer.current_epoch)
        epoch, skip = resume_plan(self._resume_position(), epoch, steps)
        loaders = {}
        for i, ds in enumerate(self.train_datasets):
            bs = min(self.batch_size, len(ds))
            sampler = CycleSampler(len(ds), steps * bs, num_replicas=world, rank=rank, seed=self.seed, stream=i,
                                   draw_seeds=True)
            sampler.set_epoch(epoch)
            sampler.skip = skip * bs
            loaders[f"{i}:{ds.name}"] = DataLoader(ds, batch_size=bs, sampler=sampler, drop_last=True,
                                                   num_workers=self.num_workers, persistent_workers=False)
        return CombinedLoader(loaders, mode="max_size_cycle")

    def val_dataloader(self):
        """Every validation prompt once, in order (``"max_size"``); ``[]`` without validation data."""
        self.setup("validate")
        return self._combined(self.val_datasets, mode="max_size", shuffle=False) if self.val_datasets else []

    def test_dataloader(self):
        """Every test prompt once, in order (``"max_size"``); ``[]`` without test data."""
        self.setup("test")
        return self._combined(self.test_datasets, mode="max_size", shuffle=False) if self.test_datasets else []
