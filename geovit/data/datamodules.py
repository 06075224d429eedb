"""LightningDataModules for geovit's datasets: splits, transforms, samplers and loaders in one place.

Every DataModule works with any ``lightning.Trainer`` (``trainer.fit(module, datamodule=dm)``)
and on its own (``dm.setup("fit"); dm.train_dataloader()``). They share one behaviour
(:class:`GeovitDataModule`):

* **train loader**: :class:`~geovit.data.samplers.EpochSampler` — a shuffle fixed by
  ``(seed, epoch)``, sharded over the attached trainer's ranks (one rank without a trainer), or
  the batch sampler a subclass returns from :meth:`GeovitDataModule.make_train_batch_sampler`
  (So2Sat: :class:`~geovit.data.samplers.BlockBatchSampler`, batched HDF5 reads) —
  seeded per-sample augmentation (:class:`~geovit.data.samplers.SeededAugment`) when
  ``augment``, ``drop_last=True``. When the trainer's LightningModule has a ``resume_position``
  attribute ``(epoch, batches_done)`` (read from its checkpoint), the loader skips the batches
  of that epoch already consumed (:func:`~geovit.data.samplers.resume_plan`), so a resumed run
  sees the same samples as an uninterrupted one;
* **val / test loaders**: in order, sharded with ``DistributedSampler(shuffle=False)`` under
  more than one rank;
* what a task needs to build its model: ``channel_table``, ``channel_ids``, ``channel_names``,
  ``image_size`` and, for labelled data sets, ``num_classes``.

DataModules never know whether their folder holds real or synthetic data
(:func:`geovit.data.registry.resolve_data` decides that).
"""
from __future__ import annotations

import math
import operator
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from geovit.channels import TABLES, ChannelSelection, resolve_channels
from geovit.data.collate import pad_channels_collate
from geovit.data.levircd import LEVIRCD
from geovit.data.samplers import BlockBatchSampler, BlockShuffleSampler, EpochSampler, SeededAugment, resume_plan
from geovit.data.transforms import Compose, RandomFlipRotate, Resize
from geovit.errors import GeovitError

Transform = Callable[[dict], dict]


def _int_at_least(name: str, value: Any, low: int) -> int:
    try:
        number = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        number = None
    if number is None or number < low:
        raise GeovitError(f"{name}={value!r}: expected an integer >= {low}")
    return number


def select_channels(table: str, channels: str | Sequence[str] | Sequence[int] | None, arg: str) -> ChannelSelection:
    """Resolve a DataModule's channel argument against ``table``.

    Args:
        table: channel table name (``geovit.channels.TABLES`` key).
        channels: ``None`` (the whole table), a preset, a comma string or list of channel names,
            or a list of absolute channel ids.
        arg: the argument's name, for messages (e.g. ``"bands"``).

    Returns:
        The resolved selection.

    Raises:
        GeovitError: unknown names / presets, or ids outside the table; the message names ``arg``.

    >>> select_channels("so2sat", "sentinel1", "bands").ids
    (0, 1, 2, 3, 4, 5, 6, 7)
    """
    names = TABLES[table]
    if channels is not None and not isinstance(channels, str):
        channels = list(channels)
        if channels and all(isinstance(c, int) and not isinstance(c, bool) for c in channels):
            bad = [c for c in channels if not 0 <= c < len(names)]
            if bad:
                raise GeovitError(f"{arg}={channels!r}: channel ids {bad} are outside table {table!r} "
                                  f"(ids 0..{len(names) - 1})")
            return ChannelSelection(table, tuple(names[c] for c in channels), tuple(channels))
    try:
        return resolve_channels(table if channels is None else channels, table=table)
    except GeovitError as err:
        raise GeovitError(f"{arg}={channels!r} (channel table {table!r}): {err}") from None


def check_image_size(image_size: Any) -> int:
    """``image_size`` as a positive int, else a GeovitError naming it.

    Args:
        image_size: requested side in pixels.

    Returns:
        The side.

    Raises:
        GeovitError: not a positive integer.
    """
    try:
        side = operator.index(image_size) if not isinstance(image_size, bool) else 0
    except TypeError:
        side = 0
    if side <= 0:
        raise GeovitError(f"image_size={image_size!r}: expected a positive number of pixels")
    return side


class KeepChannels:
    """Sample transform: keep the channels whose ids are in ``ids``, in the sample's own order.

    Unlike :class:`geovit.data.transforms.SelectChannels`, ids a sample lacks are not an error,
    so one transform serves samples with different channel sets (CHAMMI's chunks).

    Args:
        ids: absolute channel ids to keep.

    >>> import torch
    >>> out = KeepChannels([2, 0])({"image": torch.zeros(3, 4, 4), "channels": torch.tensor([0, 1, 2])})
    >>> out["channels"].tolist(), tuple(out["image"].shape)
    ([0, 2], (2, 4, 4))
    """

    def __init__(self, ids: Sequence[int]):
        self.ids = {int(i) for i in ids}

    def __call__(self, sample: dict) -> dict:
        keep = [i for i, c in enumerate(sample["channels"].tolist()) if c in self.ids]
        return {**sample, "image": sample["image"][keep], "channels": sample["channels"][keep]}


def _innermost(dataset: Dataset) -> Dataset:
    while isinstance(dataset, SeededAugment):
        dataset = dataset.dataset
    return dataset


class GeovitDataModule(L.LightningDataModule):
    """Base of geovit's DataModules: the train / val / test splits of one dataset folder.

    Subclasses set :attr:`dataset_name`, :attr:`splits`, ``self.selection`` (a
    :class:`~geovit.channels.ChannelSelection`) and implement :meth:`build_dataset`; they may
    override :meth:`make_augmentation` (default: random 90° rotation and flips) and
    ``self.collate_fn`` (default :func:`~geovit.data.collate.pad_channels_collate`).

    Args:
        root: dataset folder.
        batch_size: samples per rank and step (every loader).
        num_workers: DataLoader worker processes.
        seed: seed of the training order and of the augmentations.
        augment: augment the training split.

    Attributes:
        train_dataset, val_dataset, test_dataset: the datasets, after :meth:`setup`.

    Examples:
        A DataModule over an in-memory dataset (the subclass supplies only the splits):

        >>> import torch
        >>> from geovit.channels import resolve_channels
        >>> class Squares(GeovitDataModule):
        ...     splits = ("train", "val", "test")
        ...     def __init__(self, **kwargs):
        ...         super().__init__(".", **kwargs)
        ...         self.selection = resolve_channels("rgb")
        ...     def build_dataset(self, split, train):
        ...         n = 10 if train else 4
        ...         return [{"image": torch.full((3, 8, 8), float(i)), "channels": torch.arange(3), "label": i % 2}
        ...                 for i in range(n)]
        >>> dm = Squares(batch_size=4, augment=True)
        >>> [tuple(b["image"].shape) for b in dm.train_dataloader()]  # drop_last: 10 samples -> 2 batches
        [(4, 3, 8, 8), (4, 3, 8, 8)]
        >>> [len(b["label"]) for b in dm.val_dataloader()], dm.channel_names
        ([4], ('red', 'green', 'blue'))
    """

    #: registry name of the dataset (geovit.data.registry)
    dataset_name: str = ""
    #: the dataset class's names of the (train, validation, test) splits
    splits: tuple[str, str, str] = ("train", "val", "test")

    def __init__(self, root: str | os.PathLike, *, batch_size: int = 32, num_workers: int = 0, seed: int = 0,
                 augment: bool = False):
        super().__init__()
        self.root = Path(root)
        self.batch_size = _int_at_least("batch_size", batch_size, 1)
        self.num_workers = _int_at_least("num_workers", num_workers, 0)
        self.seed = int(seed)
        self.augment = bool(augment)
        self.collate_fn: Callable[[list], Any] = pad_channels_collate
        self.selection: ChannelSelection | None = None
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None
        self.test_dataset: Dataset | None = None

    # -- what subclasses provide ----------------------------------------------------------------
    def build_dataset(self, split: str, train: bool) -> Dataset:
        """The dataset of ``split`` with its deterministic transforms (normalisation, resizing).

        Args:
            split: one of :attr:`splits`.
            train: ``True`` for the training split (augmentation is added on top when ``augment``).

        Returns:
            A map-style dataset of sample dicts.
        """
        raise NotImplementedError

    def make_augmentation(self) -> Callable[[torch.Generator], Transform]:
        """Factory ``make(generator) -> transform`` of the training augmentation (picklable).

        Returns:
            By default :class:`~geovit.data.transforms.RandomFlipRotate` (rotation by k·90°, flips).
        """
        return RandomFlipRotate

    def make_train_sampler(self, dataset: Dataset, world: int, rank: int):
        """The per-sample training sampler (used when :meth:`make_train_batch_sampler` gives ``None``).

        It must have ``set_epoch``, a ``skip`` attribute (samples to drop once) and ``len`` =
        samples per rank and epoch.

        Args:
            dataset: the training dataset (augmentation wrapper included).
            world: number of ranks.
            rank: this rank.

        Returns:
            Here :class:`~geovit.data.samplers.EpochSampler` (a shuffle fixed by ``(seed, epoch)``).
        """
        return EpochSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed, drop_last=False)

    def make_train_batch_sampler(self, dataset: Dataset, world: int, rank: int):
        """The training batch sampler, or ``None`` for the per-sample :class:`EpochSampler` order.

        A subclass returns a batch sampler with ``set_epoch``, a ``skip`` attribute (batches to
        drop once) and ``len`` = batches per rank and epoch (``drop_last``), e.g.
        :class:`~geovit.data.samplers.BlockBatchSampler`.

        Args:
            dataset: the training dataset (augmentation wrapper included).
            world: number of ranks.
            rank: this rank.

        Returns:
            ``None`` here.
        """
        return None

    # -- what a task reads ----------------------------------------------------------------------
    @property
    def channel_table(self) -> str | None:
        """Name of the channel table the ids index (``geovit.channels.TABLES``)."""
        return None if self.selection is None else self.selection.table

    @property
    def channel_ids(self) -> tuple[int, ...]:
        """Absolute ids of the channels the samples carry."""
        return () if self.selection is None else self.selection.ids

    @property
    def channel_names(self) -> tuple[str, ...]:
        """Names of the channels the samples carry, in the order of :attr:`channel_ids`."""
        return () if self.selection is None else self.selection.names

    # -- Lightning hooks ------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Open the splits a stage needs (each once).

        Args:
            stage: ``"fit"`` (train + val), ``"validate"`` (val), ``"test"`` or ``"predict"``
                (test), or ``None`` (all three).
        """
        if stage in ("fit", None) and self.train_dataset is None:
            ds = self.build_dataset(self.splits[0], train=True)
            self.train_dataset = SeededAugment(ds, self.make_augmentation(), seed=self.seed) if self.augment else ds
        if stage in ("fit", "validate", None) and self.val_dataset is None:
            self.val_dataset = self.build_dataset(self.splits[1], train=False)
        if stage in ("test", "predict", None) and self.test_dataset is None:
            self.test_dataset = self.build_dataset(self.splits[2], train=False)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (1, 0) if trainer is None else (int(trainer.world_size), int(trainer.global_rank))

    def batches_per_epoch(self, world_size: int | None = None) -> int:
        """Training batches one rank draws per epoch (``drop_last``; sets up ``"fit"`` if needed).

        Args:
            world_size: number of ranks (default: the attached trainer's, else 1).

        Returns:
            The count (0 when ``batch_size`` exceeds a rank's shard).
        """
        self.setup("fit")
        world = self._world()[0] if world_size is None else int(world_size)
        return math.ceil(len(self.train_dataset) / world) // self.batch_size

    def _resume_position(self) -> tuple[int, int] | None:
        module = getattr(self.trainer, "lightning_module", None) if self.trainer is not None else None
        return getattr(module, "resume_position", None)

    def train_dataloader(self) -> DataLoader:
        """Shuffled, sharded, augmented training batches (see the module docstring).

        Returns:
            The loader.

        Raises:
            GeovitError: ``batch_size`` is larger than one rank's share of the training split.
        """
        self.setup("fit")
        world, rank = self._world()
        ds = self.train_dataset
        batch_sampler = self.make_train_batch_sampler(ds, world, rank)
        if batch_sampler is None:
            sampler = self.make_train_sampler(ds, world, rank)
            batches = len(sampler) // self.batch_size
        else:
            sampler, batches = batch_sampler, len(batch_sampler)
        if batches < 1:
            raise GeovitError(f"batch_size={self.batch_size}: larger than the {self.splits[0]} split "
                              f"({len(ds)} samples over {world} process(es)); lower it")
        epoch = 0 if self.trainer is None else int(self.trainer.current_epoch)
        epoch, skip = resume_plan(self._resume_position(), epoch, batches)
        sampler.skip = skip * (self.batch_size if batch_sampler is None else 1)
        # set now (Lightning sets it again before iterating): worker processes copy the dataset early
        sampler.set_epoch(epoch)
        common = dict(collate_fn=self.collate_fn, num_workers=self.num_workers, persistent_workers=False,
                      pin_memory=torch.cuda.is_available())
        if batch_sampler is not None:
            return DataLoader(ds, batch_sampler=batch_sampler, **common)
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, drop_last=True, **common)

    def _eval_loader(self, ds: Dataset) -> DataLoader:
        world, rank = self._world()
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=False) if world > 1 else None
        return DataLoader(ds, batch_size=self.batch_size, shuffle=False, sampler=sampler, collate_fn=self.collate_fn,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available())

    def val_dataloader(self) -> DataLoader:
        """Validation batches in order.

        Returns:
            The loader.
        """
        self.setup("validate")
        return self._eval_loader(self.val_dataset)

    def test_dataloader(self) -> DataLoader:
        """Test batches in order.

        Returns:
            The loader.
        """
        self.setup("test")
        return self._eval_loader(self.test_dataset)

    def split_dataloader(self, split: str) -> DataLoader:
        """Batches of any split of the dataset, unaugmented and in order (e.g. to score ``"train"``).

        Args:
            split: a split name of the dataset class (e.g. one of :attr:`splits`).

        Returns:
            The loader (a fresh dataset: no augmentation, whatever ``augment`` says).
        """
        return self._eval_loader(self.build_dataset(split, train=False))

    def predict_dataloader(self) -> DataLoader:
        """The test split in order (for ``trainer.predict``).

        Returns:
            The loader.
        """
        return self.test_dataloader()


class So2SatDataModule(GeovitDataModule):
    """So2Sat LCZ42 patches, normalised with the statistics of ``version``.

    The splits are ``So2Sat(split=...)``'s ``"train"``, ``"validation"`` and ``"test"`` for every
    version (for v3, train / validation are torchgeo's seeded 80/20 split of ``training.h5``).

    Args:
        root: So2Sat folder (layouts in :mod:`geovit.data.so2sat`).
        version: ``"2"``, ``"3_random"``, ``"3_block"`` or ``"3_culture_10"``.
        bands: ``None`` (all 18), a preset (``"sentinel1"``, ``"sentinel2"``, ``"so2sat_rgb"``),
            band names or absolute ids.
        batch_size: samples per rank and step (see :class:`GeovitDataModule`).
        num_workers: DataLoader worker processes.
        seed: seed of the training order and of the augmentations.
        augment: augment the training split.
        reads: ``"block"`` (default): training batches of runs of ``block_size`` consecutive
            file rows (blocks shuffled, then each batch; :class:`~geovit.data.samplers.BlockBatchSampler`),
            read with one HDF5 slice per run; ``"sample"``: the per-sample shuffle of
            :class:`~geovit.data.samplers.EpochSampler`. Both give the same samples, values and
            augmentation per index, only the order differs.
        block_size: consecutive rows per block with ``reads="block"``.
        val_cities: hold these cities of the training file out as the validation split (the
            training split is the other cities' rows); needs the split's geolocation file
            (:mod:`geovit.data.so2sat`). ``None``: the version's validation split.

    Examples:
        >>> import tempfile
        >>> from geovit.data.so2sat import write_synthetic
        >>> root = write_synthetic(Path(tempfile.mkdtemp()) / "so2sat", num_samples=17)
        >>> dm = So2SatDataModule(root, version="2", bands="sentinel2", batch_size=8)
        >>> batch = next(iter(dm.train_dataloader()))
        >>> tuple(batch["image"].shape), dm.num_classes, dm.channel_ids[0]
        ((8, 10, 32, 32), 17, 8)
    """

    dataset_name = "so2sat"
    splits = ("train", "validation", "test")
    #: So2Sat patches are 32x32
    image_size = 32

    def __init__(self, root: str | os.PathLike, version: str = "2",
                 bands: str | Sequence[str] | Sequence[int] | None = None, *, batch_size: int = 64, num_workers: int = 0,
                 seed: int = 0, augment: bool = True, reads: str = "block", block_size: int = 16,
                 val_cities: Sequence[str] | None = None):
        super().__init__(root, batch_size=batch_size, num_workers=num_workers, seed=seed, augment=augment)
        from geovit.data import so2sat

        if version not in so2sat.FILENAMES:
            raise GeovitError(f"version={version!r}: expected one of {', '.join(so2sat.FILENAMES)}")
        if reads not in ("block", "sample"):
            raise GeovitError(f"reads={reads!r}: expected 'block' or 'sample'")
        self.reads = reads
        self.block_size = _int_at_least("block_size", block_size, 1)
        if isinstance(val_cities, str):
            val_cities = [c for c in val_cities.split(",") if c]
        if val_cities is not None and not list(val_cities):
            raise GeovitError("val_cities=[]: name at least one city (or None for the version's validation split)")
        self.val_cities = None if val_cities is None else [str(c) for c in val_cities]
        self.version = version
        self.selection = select_channels("so2sat", bands, "bands")
        self.normalization = so2sat.normalization(version)

    @property
    def num_classes(self) -> int:
        """The 17 local climate zones."""
        from geovit.data.so2sat import CLASSES

        return len(CLASSES)

    def build_dataset(self, split: str, train: bool) -> Dataset:
        """``So2Sat(root, split, version, bands)``, normalised (see :meth:`GeovitDataModule.build_dataset`)."""
        from geovit.data.so2sat import So2Sat

        kwargs: dict[str, Any] = {}
        if self.val_cities is not None and split in self.splits[:2]:
            # both from the training file: the held-out cities are the validation split
            kwargs = {"cities": self.val_cities} if split == self.splits[1] else {"exclude_cities": self.val_cities}
            split = self.splits[0]
        return So2Sat(self.root, split=split, version=self.version, bands=list(self.selection.names),
                      transform=self.normalization, **kwargs)

    def make_train_batch_sampler(self, dataset: Dataset, world: int, rank: int) -> BlockBatchSampler | None:
        """:class:`~geovit.data.samplers.BlockBatchSampler` over the file order (``reads="block"``).

        Args:
            dataset: the training dataset.
            world: number of ranks.
            rank: this rank.

        Returns:
            The batch sampler, or ``None`` with ``reads="sample"``.
        """
        if self.reads == "sample":
            return None
        return BlockBatchSampler(len(dataset), self.batch_size, self.block_size, num_replicas=world, rank=rank,
                                 seed=self.seed, drop_last=True, order=_innermost(dataset).storage_order(),
                                 dataset=dataset)


class _LabelledCells(GeovitDataModule):
    """Shared by the microscopy DataModules: class count from the training split, image size."""

    def __init__(self, root, image_size: int, **kwargs):
        super().__init__(root, **kwargs)
        self.image_size = check_image_size(image_size)

    @property
    def num_classes(self) -> int:
        """Number of classes of the dataset (read from the training split, set up when needed)."""
        self.setup("fit")
        return int(_innermost(self.train_dataset).num_classes)


class JUMPCPDataModule(_LabelledCells):
    """JUMP-CP single cells: the official 60/20/20 split, normalised and resized.

    Args:
        root: JUMP-CP folder (``metadata.csv`` + arrays, see :mod:`geovit.data.jumpcp`).
        channels: ``None`` (all 8), a preset (``"jumpcp_fluorescence"``, ``"jumpcp_brightfield"``),
            channel names or absolute ids.
        image_size: resize cells to ``image_size²`` (release: 224).
        batch_size: samples per rank and step (see :class:`GeovitDataModule`).
        num_workers: DataLoader worker processes.
        seed: seed of the training order and of the augmentations.
        augment: augment the training split.

    Examples:
        >>> import tempfile
        >>> from geovit.data.jumpcp import write_synthetic
        >>> root = write_synthetic(Path(tempfile.mkdtemp()) / "jumpcp", num_samples=20, image_size=32)
        >>> dm = JUMPCPDataModule(root, channels="jumpcp_fluorescence", image_size=16, batch_size=4)
        >>> dm.setup("fit")
        >>> len(dm.train_dataset), len(dm.val_dataset), dm.num_classes
        (12, 4, 4)
        >>> tuple(next(iter(dm.train_dataloader()))["image"].shape)
        (4, 5, 16, 16)
    """

    dataset_name = "jumpcp"
    splits = ("train", "valid", "test")

    def __init__(self, root: str | os.PathLike, channels: str | Sequence[str] | Sequence[int] | None = None,
                 image_size: int = 224, *, batch_size: int = 32, num_workers: int = 0, seed: int = 0,
                 augment: bool = True):
        super().__init__(root, image_size, batch_size=batch_size, num_workers=num_workers, seed=seed, augment=augment)
        self.selection = select_channels("jumpcp", channels, "channels")

    def build_dataset(self, split: str, train: bool) -> Dataset:
        """``JUMPCP(root, split, channels)``, normalised then resized to ``image_size``."""
        from geovit.data.jumpcp import JUMPCP, normalization

        return JUMPCP(self.root, split=split, channels=list(self.selection.ids),
                      transform=Compose([normalization(), Resize(self.image_size)]))


class CHAMMIDataModule(_LabelledCells):
    """CHAMMI cells of the chunks that hold the asked channels, resized to one size.

    Batches mix 3-, 4- and 5-channel cells: they are padded (``channel_mask``) by
    :func:`~geovit.data.collate.pad_channels_collate`. CHAMMI has no validation split; the
    in-distribution ``Task_one`` serves by default (set ``val_split`` / ``test_split`` to
    ``"Task_two"`` … ``"Task_four"`` for the out-of-distribution tasks).

    Args:
        root: CHAMMI folder (``Allen/``, ``HPA/``, ``CP/`` with ``enriched_meta.csv``).
        channels: ``None`` (all 12), a preset (``"chammi_allen"``, ``"chammi_hpa"``,
            ``"chammi_cp"``), channel names or absolute ids of the ``"chammi"`` table.
        image_size: resize cells to ``image_size²`` (default 224).
        val_split: the ``train_test_split`` value used for validation.
        test_split: the one used for testing.
        batch_size: samples per rank and step (see :class:`GeovitDataModule`).
        num_workers: DataLoader worker processes.
        seed: seed of the training order and of the augmentations.
        augment: augment the training split.

    Examples:
        >>> import tempfile
        >>> from geovit.data.chammi import write_synthetic
        >>> root = write_synthetic(Path(tempfile.mkdtemp()) / "chammi", num_samples=8)
        >>> dm = CHAMMIDataModule(root, channels="chammi_hpa", image_size=32, batch_size=2)
        >>> batch = next(iter(dm.train_dataloader()))
        >>> tuple(batch["image"].shape), dm.channel_table
        ((2, 4, 32, 32), 'chammi')
    """

    dataset_name = "chammi"

    def __init__(self, root: str | os.PathLike, channels: str | Sequence[str] | Sequence[int] | None = None,
                 image_size: int = 224, *, val_split: str = "Task_one", test_split: str = "Task_one",
                 batch_size: int = 32, num_workers: int = 0, seed: int = 0, augment: bool = True):
        super().__init__(root, image_size, batch_size=batch_size, num_workers=num_workers, seed=seed, augment=augment)
        from geovit.data.chammi import CHUNKS, SPLITS, chunk_channel_ids  # also registers the "chammi" table

        for arg, value in (("val_split", val_split), ("test_split", test_split)):
            if value not in SPLITS:
                raise GeovitError(f"{arg}={value!r}: expected one of {', '.join(SPLITS)}")
        self.splits = ("Train", val_split, test_split)
        self.selection = select_channels("chammi", channels, "channels")
        self.chunks = [c for c in CHUNKS if set(chunk_channel_ids(c)) & set(self.selection.ids)]

    def build_dataset(self, split: str, train: bool) -> Dataset:
        """``CHAMMI(root, split, chunks)`` resized, keeping only the asked channels."""
        from geovit.data.chammi import CHAMMI

        return CHAMMI(self.root, split=split, chunks=self.chunks, image_size=self.image_size,
                      transform=KeepChannels(self.selection.ids))


class ChangeTrainAugment:
    """Factory of the ChangeViT training transform: augment raw tiles, then normalise (picklable).

    Args:
        normalization: ``"imagenet"`` or ``"half"`` (:data:`geovit.data.change_transforms.NORMALIZATIONS`).
    """

    def __init__(self, normalization: str):
        self.normalization = normalization

    def __call__(self, generator: torch.Generator) -> Transform:
        from geovit.data.change_transforms import ChangeAugment, Normalize

        return Compose([ChangeAugment(generator=generator), Normalize(self.normalization)])


class LEVIRCDDataModule(GeovitDataModule):
    """Bitemporal change-detection tiles of LEVIR-CD (and WHU-CD, CLCD: ``dataset_class``).

    Scenes are cut into ``tile``-sized tiles on the fly; training tiles get the ChangeViT
    augmentation (random border trim, flips, date swap; seeded) then normalisation; val / test
    tiles are normalised and mark the pixels another tile owns as ignored, so each scene pixel
    is scored once. Batches are ``{"image": (B, 2, 3, T, T), "mask": (B, T, T)}``.

    Args:
        root: dataset folder (any layout of :mod:`geovit.data.levircd`).
        tile: tile side, a multiple of 16 (0 = whole scenes).
        normalization: ``"imagenet"`` or ``"half"``.
        labels: ``"auto"``, ``"strict"`` or ``"nonzero"`` (see :class:`~geovit.data.levircd.LEVIRCD`).
        dataset_class: :class:`~geovit.data.levircd.LEVIRCD`, ``WHUCD`` or ``CLCD``.
        batch_size: samples per rank and step (see :class:`GeovitDataModule`).
        num_workers: DataLoader worker processes.
        seed: seed of the training order and of the augmentations.
        augment: augment the training split.
        scene_window: training order: the tiles of this many scenes are shuffled together,
            scene groups in a random order (:class:`~geovit.data.samplers.BlockShuffleSampler`),
            and each (worker) process keeps the last ``scene_window`` decoded scenes, so a
            scene is decoded once per process and epoch instead of once per tile. ``0``: every
            tile shuffled on its own (a scene decoded for nearly every tile). The augmentation
            of a tile is the same either way (seeded by tile index and epoch).

    Examples:
        >>> import tempfile
        >>> from geovit.data.levircd import write_synthetic
        >>> root = write_synthetic(Path(tempfile.mkdtemp()) / "levir", num_samples=5, size=64)
        >>> dm = LEVIRCDDataModule(root, tile=32, batch_size=4)
        >>> batch = next(iter(dm.train_dataloader()))
        >>> tuple(batch["image"].shape), len(dm.plot_samples(2))
        ((4, 2, 3, 32, 32), 2)
    """

    dataset_name = "levircd"
    splits = ("train", "val", "test")

    def __init__(self, root: str | os.PathLike, tile: int = 256, normalization: str = "imagenet", labels: str = "auto",
                 dataset_class: type[LEVIRCD] = LEVIRCD, *, batch_size: int = 16, num_workers: int = 0, seed: int = 0,
                 augment: bool = True, scene_window: int = 4):
        super().__init__(root, batch_size=batch_size, num_workers=num_workers, seed=seed, augment=augment)
        self.scene_window = _int_at_least("scene_window", scene_window, 0)
        from geovit.data.change_transforms import NORMALIZATIONS, PATCH

        if isinstance(tile, bool) or not isinstance(tile, int) or tile < 0 or tile % PATCH:
            raise GeovitError(f"tile={tile!r}: expected 0 (whole scenes) or a positive multiple of {PATCH}")
        if normalization not in NORMALIZATIONS:
            raise GeovitError(f"normalization={normalization!r}: expected one of {', '.join(NORMALIZATIONS)}")
        if labels not in ("auto", "strict", "nonzero"):
            raise GeovitError(f"labels={labels!r}: expected 'auto', 'strict' or 'nonzero'")
        if not (isinstance(dataset_class, type) and issubclass(dataset_class, LEVIRCD)):
            raise GeovitError(f"dataset_class={dataset_class!r}: expected LEVIRCD or a subclass (WHUCD, CLCD)")
        self.tile, self.normalization, self.labels, self.dataset_class = tile, normalization, labels, dataset_class
        self.dataset_name = dataset_class.__name__.lower()  # levircd, whucd, clcd: the registry names
        self.collate_fn = default_collate
        self.selection = select_channels("rgb", None, "channels")
        self._val_scenes: LEVIRCD | None = None

    @property
    def image_size(self) -> int:
        """Tile side (with ``tile=0``: the larger scene side, read from the training split)."""
        if self.tile:
            return self.tile
        self.setup("fit")
        return max(_innermost(self.train_dataset).scene_hw)

    def _scenes(self, split: str) -> LEVIRCD:
        try:
            return self.dataset_class(self.root, split, labels=self.labels)
        except GeovitError as err:
            if split != self.splits[1]:
                raise
            raise GeovitError(f"{err}\n(geovit picks the checkpoint on the val split, never on test: "
                              "create a val split, e.g. a few train scenes moved to val/)") from None

    def make_augmentation(self) -> Callable[[torch.Generator], Transform]:
        """ChangeViT's training augmentation, then normalisation (:class:`ChangeTrainAugment`)."""
        return ChangeTrainAugment(self.normalization)

    def build_dataset(self, split: str, train: bool) -> Dataset:
        """Tiles of ``split``: raw for augmented training (normalised after), else normalised."""
        from geovit.data.change_transforms import ChangeTiles, make_transforms

        scenes = self._scenes(split)
        if split == self.splits[1]:
            self._val_scenes = scenes
        normalize = make_transforms(False, self.normalization)
        if train:
            return ChangeTiles(scenes, self.tile, transforms=None if self.augment else normalize,
                               cache_scenes=max(2, self.scene_window))
        return ChangeTiles(scenes, self.tile, transforms=normalize, mark_unowned=True)

    def make_train_sampler(self, dataset: Dataset, world: int, rank: int):
        """Tiles of ``scene_window`` scenes mixed, scene groups shuffled (``scene_window=0``: per tile).

        Args:
            dataset: the training tiles (augmentation wrapper included).
            world: number of ranks.
            rank: this rank.

        Returns:
            A :class:`~geovit.data.samplers.BlockShuffleSampler` (or the per-tile
            :class:`~geovit.data.samplers.EpochSampler`).
        """
        if self.scene_window == 0:
            return super().make_train_sampler(dataset, world, rank)
        tiles = _innermost(dataset)
        return BlockShuffleSampler(len(dataset), len(tiles.windows), self.scene_window, num_replicas=world,
                                   rank=rank, seed=self.seed, dataset=dataset)

    def plot_samples(self, k: int = 4) -> list[dict]:
        """``k`` raw (0-255, unnormalised) validation tiles spread over the split, for plots.

        Args:
            k: how many (fewer when the split has fewer tiles).

        Returns:
            Sample dicts ``{"image": (2, 3, T, T), "mask": (T, T)}``.
        """
        from geovit.data.change_transforms import ChangeTiles

        self.setup("validate")
        raw = ChangeTiles(self._val_scenes, self.tile)
        k = min(int(k), len(raw))
        return [raw[i * len(raw) // k] for i in range(k)] if k > 0 else []
