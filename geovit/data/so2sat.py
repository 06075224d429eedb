"""So2Sat LCZ42: co-registered Sentinel-1 / Sentinel-2 patches labelled with 17 local climate zones.

Reads the HDF5 files users already have, in torchgeo's layouts (Zhu et al., "So2Sat LCZ42",
IEEE GRSM 2020; data card: ``data_cards/so2sat_lcz42.md``)::

    version "2"             root/training.h5  root/validation.h5  root/testing.h5
    version "3_random"      root/random/training.h5      root/random/testing.h5
    version "3_block"       root/block/training.h5       root/block/testing.h5
    version "3_culture_10"  root/culture_10/training.h5  root/culture_10/testing.h5

Each file holds ``sen1`` (N, 32, 32, 8), ``sen2`` (N, 32, 32, 10) and ``label`` (N, 17) one-hot;
float64 in the real release, uint8 in torchgeo's test fixtures (both accepted). Samples are read
lazily per index (the real files are tens of GB), or a batch at a time with one slice read per
run of consecutive rows (:meth:`So2Sat.__getitems__`, fed by
:class:`geovit.data.samplers.BlockBatchSampler`); file handles are opened per process, so the
dataset works with DataLoader workers.

Geolocation: when ``<split file>_geo.h5`` sits beside a split file (``training_geo.h5``,
``validation_geo.h5``, ``testing_geo.h5``; keys ``epsg`` (N, 1), ``tfw`` (N, 6) world-file
parameters A, D, B, E, C, F, ``city`` (N, 1) byte strings, same rows as the image file), the
dataset exposes :attr:`So2Sat.geolocation` and every sample carries ``crs``, ``transform`` and
``city``; ``cities`` / ``exclude_cities`` then select rows by city (:func:`write_geo_h5` writes
such a file).

Splits: every version has ``"train"``, ``"validation"`` and ``"test"``. Version "2" reads each
from its own file. The v3 releases have no validation file; their ``"validation"`` split is the
validation set of torchgeo's ``So2SatDataModule`` — ``torch.utils.data.random_split`` of
``training.h5`` into ``[n - round(0.2 n), round(0.2 n)]`` rows with
``torch.Generator().manual_seed(0)`` — and their ``"train"`` split is the other part, in
``random_split``'s order (:func:`split_rows`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, random_split

from geovit.channels import SO2SAT_BANDS, resolve_channels
from geovit.data.checks import require_real_numeric
from geovit.errors import DataError, GeovitError

CLASSES: tuple[str, ...] = (
    "Compact high rise", "Compact mid rise", "Compact low rise", "Open high rise",
    "Open mid rise", "Open low rise", "Lightweight low rise", "Large low rise",
    "Sparsely built", "Heavy industry", "Dense trees", "Scattered trees", "Bush, scrub",
    "Low plants", "Bare rock or paved", "Bare soil or sand", "Water",
)

#: Files of each version (torchgeo's ``So2Sat.filenames_by_version``), keyed by the split they hold.
FILENAMES: dict[str, dict[str, str]] = {
    "2": {"train": "training.h5", "validation": "validation.h5", "test": "testing.h5"},
    "3_random": {"train": "random/training.h5", "test": "random/testing.h5"},
    "3_block": {"train": "block/training.h5", "test": "block/testing.h5"},
    "3_culture_10": {"train": "culture_10/training.h5", "test": "culture_10/testing.h5"},
}

#: Splits of every version. v3 "train" and "validation" are both rows of ``training.h5``.
SPLITS: tuple[str, str, str] = ("train", "validation", "test")

#: Fraction of ``training.h5`` that v3 versions hold out for validation (torchgeo's
#: ``So2SatDataModule(val_split_pct=0.2)``) and the seed of the generator that draws it.
VAL_SPLIT_PCT = 0.2
VAL_SPLIT_SEED = 0

#: md5 of every released file, by version and file key as in :data:`FILENAMES`; checked only with
#: ``checksum=True``. Source: torchgeo 0.10.1, ``torchgeo/datasets/so2sat.py``,
#: ``So2Sat.md5s_by_version`` (v2's training file is the same file as 3_culture_10's).
MD5: dict[str, dict[str, str]] = {
    "2": {"train": "702bc6a9368ebff4542d791e53469244",
          "validation": "71cfa6795de3e22207229d06d6f8775d",
          "test": "e81426102b488623a723beab52b31a8a"},
    "3_random": {"train": "94e2e2e667b406c2adf61e113b42204e",
                 "test": "1e15c425585ce816342d1cd779d453d8"},
    "3_block": {"train": "a91d6150e8b059dac86105853f377a11",
                "test": "6414af1ec33ace417e879f9c88066d47"},
    "3_culture_10": {"train": "702bc6a9368ebff4542d791e53469244",
                     "test": "58335ce34ca3a18424e19da84f2832fc"},
}

# ChannelViT's statistics (insitro/ChannelViT, config/transformations/so2sat.yaml): random split.
_MEAN_STD_RANDOM = (
    [-2.7661554e-05, 2.2139642e-05, 2.3079854e-05, -2.897074e-05, 0.045271896, 0.26610142,
     0.0019685407, 0.0014894817, 0.12442144, 0.11015362, 0.102517806, 0.11548226, 0.15986235,
     0.1819497, 0.17501162, 0.19551599, 0.15673669, 0.11150938],
    [0.17874631, 0.1779993, 0.46587786, 0.46137187, 4.026994, 8.289052, 2.7971811, 1.6728995,
     0.039532706, 0.047356457, 0.06560701, 0.06269057, 0.07596791, 0.08922283, 0.09054905,
     0.09972874, 0.0992988, 0.08763404],
)
# ChannelViT's statistics (insitro/ChannelViT, config/transformations/so2sat_hard.yaml): city split.
_MEAN_STD_CITY = (
    [-3.5912242e-05, -7.658551e-06, 5.937501e-05, 2.516598e-05, 0.044198506, 0.25761467,
     0.0007556685, 0.0013503395, 0.12375654, 0.109277464, 0.101086065, 0.114239536, 0.15926327,
     0.18147452, 0.17457514, 0.1950194, 0.15428114, 0.109052904],
    [0.17555329, 0.17556609, 0.4599934, 0.45599362, 2.855352, 8.322579, 2.44937, 1.464371,
     0.0395863, 0.047778852, 0.066362865, 0.063593246, 0.07744504, 0.09099384, 0.09217117,
     0.10162713, 0.09989747, 0.0877891],
)
# torchgeo 0.10.1, torchgeo/datamodules/so2sat.py, So2SatDataModule.means_per_version["3_block"]
# and stds_per_version["3_block"] (torchgeo does not say how they were computed).
_MEAN_STD_BLOCK = (
    [-0.00004632368791, 0.00001260869365, 0.00005305557337, 0.00003471369557, 0.04449937686171,
     0.26046026815721, 0.00087815394475, 0.00086889627435, 0.12381869777901, 0.10944155483024,
     0.10176911573221, 0.11465267892206, 0.15870528223797, 0.18053964470203, 0.17366821871719,
     0.19390983961551, 0.15536490486611, 0.11057334452833],
    [0.1751797, 0.1754073, 0.4610124, 0.4572122, 0.8294254, 7.1771026, 0.9642598, 0.8770835,
     0.0388311, 0.0464986, 0.0643833, 0.0616141, 0.0753004, 0.0886178, 0.0899500, 0.0991759,
     0.0983276, 0.0865943],
)

#: Per-band (mean, std) over the 18 bands (S1 then S2), by version; sources next to each table
#: above and in the data card.
SO2SAT_STATS: dict[str, tuple[list[float], list[float]]] = {
    "2": _MEAN_STD_CITY,
    "3_culture_10": _MEAN_STD_CITY,
    "3_random": _MEAN_STD_RANDOM,
    "3_block": _MEAN_STD_BLOCK,
}

_SEN1, _SEN2 = 8, 10


def _md5(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def split_rows(num_rows: int, val_split_pct: float = VAL_SPLIT_PCT, seed: int = VAL_SPLIT_SEED) -> tuple[list[int], list[int]]:
    """Rows of a v3 ``training.h5`` that form the train and the validation split.

    torchgeo's ``So2SatDataModule`` rule: ``random_split`` of the file into lengths
    ``[num_rows - round(val_split_pct * num_rows), round(val_split_pct * num_rows)]`` with
    ``torch.Generator().manual_seed(seed)``.

    Args:
        num_rows: number of rows of ``training.h5``.
        val_split_pct: fraction held out for validation (torchgeo's ``val_split_pct``).
        seed: seed of the generator (torchgeo uses 0).

    Returns:
        ``(train_rows, val_rows)``, each in ``random_split``'s order.

    Raises:
        GeovitError: ``val_split_pct`` is not in (0, 1).
    """
    if not 0.0 < val_split_pct < 1.0:
        raise GeovitError(f"val_split_pct={val_split_pct}: expected a fraction in (0, 1)")
    val_length = round(num_rows * val_split_pct)
    train, val = random_split(range(num_rows), [num_rows - val_length, val_length],
                              generator=torch.Generator().manual_seed(seed))
    return list(train.indices), list(val.indices)


class RawRows:
    """Rows of an uncompressed HDF5 dataset, read from a memory map of its file.

    HDF5 reports where the bytes of a dataset lie: one offset for contiguous storage, one per
    chunk for chunked storage. When a dataset is stored without filters (no compression), in
    the file itself, contiguously or in chunks of one row (the release's layout), row ``i``
    is ``itemsize * prod(shape[1:])`` bytes at a known offset, and ``self[a:b]`` is a view of
    the memory map (a copy only where the chunks of consecutive rows are not adjacent in the
    file). The values are those h5py reads; HDF5's per-chunk bookkeeping is skipped.

    Args:
        mm: ``numpy.memmap`` (uint8) of the whole file.
        node: the ``h5py.Dataset``.

    Raises:
        ValueError: the dataset is not stored that way (use h5py slices instead).
    """

    def __init__(self, mm: np.ndarray, node: h5py.Dataset):
        dcpl = node.id.get_create_plist()
        n, tail = node.shape[0], tuple(node.shape[1:])
        self.dtype = np.dtype(node.dtype)
        if self.dtype.kind not in "biuf" or dcpl.get_nfilters() or node.external or node.is_virtual or n == 0:
            raise ValueError(f"{node.name}: not plain uncompressed storage")
        self.row_shape, self.row_bytes = tail, int(np.prod(tail, dtype=np.int64)) * self.dtype.itemsize
        layout = dcpl.get_layout()
        if layout == h5py.h5d.CONTIGUOUS and node.id.get_offset() is not None:
            self.offsets = node.id.get_offset() + np.arange(n, dtype=np.int64) * self.row_bytes
        elif layout == h5py.h5d.CHUNKED and node.chunks == (1, *tail):
            offsets = np.full(n, -1, dtype=np.int64)

            def visit(info):
                if info.size != self.row_bytes:
                    raise ValueError(f"{node.name}: chunk of {info.size} bytes")
                offsets[info.chunk_offset[0]] = info.byte_offset
            node.id.chunk_iter(visit)
            if (offsets < 0).any():
                raise ValueError(f"{node.name}: unallocated chunks")
            self.offsets = offsets
        else:
            raise ValueError(f"{node.name}: layout {layout} with chunks {node.chunks}")
        if int(self.offsets.max()) + self.row_bytes > len(mm):
            raise ValueError(f"{node.name}: storage beyond the end of the file")
        self.mm = mm
        # runs of rows whose bytes follow each other: one view each
        self._breaks = np.flatnonzero(np.diff(self.offsets) != self.row_bytes) + 1

    def _view(self, start: int, stop: int) -> np.ndarray:
        off = int(self.offsets[start])
        flat = self.mm[off:off + (stop - start) * self.row_bytes]
        return flat.view(self.dtype).reshape(stop - start, *self.row_shape)

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(len(self.offsets))
        lo, hi = np.searchsorted(self._breaks, [start, stop], side="right")
        if lo == hi:
            return self._view(start, stop)
        edges = [start, *self._breaks[lo:hi].tolist(), stop]
        return np.concatenate([self._view(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a])


class So2Sat(Dataset):
    """So2Sat LCZ42 as a lazy map-style dataset.

    Args:
        root: folder holding the files of ``version`` (layouts in the module docstring).
        split: ``"train"``, ``"validation"`` or ``"test"``. For the v3 versions ``"train"`` and
            ``"validation"`` are torchgeo's seeded 80/20 split of ``training.h5``
            (:func:`split_rows`).
        version: ``"2"``, ``"3_random"``, ``"3_block"`` or ``"3_culture_10"``.
        bands: ``None`` (all 18, S1 then S2), a preset (``"sentinel1"``, ``"sentinel2"``,
            ``"so2sat_rgb"``) or a list / comma string of band names (``geovit.channels``).
        transform: callable applied to each sample dict (normalisation, augmentation).
        checksum: verify the file's md5 against the release (slow on the real files).
        val_split_pct: fraction of ``training.h5`` held out as the v3 validation split
            (torchgeo's default 0.2); not used by version "2".
        cities: keep only the rows of these cities (needs the geolocation file). The rows are
            then taken from the whole split file: for v3 "train" / "validation" the cities
            replace the random 80/20 split.
        exclude_cities: drop the rows of these cities (same rules as ``cities``).

    Samples are dicts: ``image`` float32 (C, 32, 32) raw values in the order asked for,
    ``channels`` LongTensor (C,) absolute band ids (0-7 Sentinel-1, 8-17 Sentinel-2),
    ``label`` int class index 0..16; with a geolocation file also ``crs`` (``"EPSG:32633"``),
    ``transform`` (6 floats, rasterio ``Affine`` order, upper-left pixel corner) and ``city``.
    ``rows`` holds the file row of every sample.

    Attributes:
        geolocation: :class:`Geolocation` of the samples (row ``i`` belongs to sample ``i``),
            or ``None`` when the split has no geolocation file.

    Raises:
        GeovitError: unknown ``version``, ``split`` or band, or a bad ``val_split_pct``, or
            ``cities`` / ``exclude_cities`` without a geolocation file or naming unknown cities.
        DataError: the file is missing, unreadable, has the wrong keys or shapes, fails the md5
            check, or is too small to hold a validation split; the geolocation file is
            unreadable, lacks a key or has another row count.
    """

    classes = CLASSES

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        version: str = "2",
        bands: str | Sequence[str] | None = None,
        transform: Callable[[dict], dict] | None = None,
        checksum: bool = False,
        val_split_pct: float = VAL_SPLIT_PCT,
        cities: Sequence[str] | None = None,
        exclude_cities: Sequence[str] | None = None,
    ):
        if version not in FILENAMES:
            raise GeovitError(f"So2Sat: unknown version {version!r}; expected one of {', '.join(FILENAMES)}")
        if split not in SPLITS:
            raise GeovitError(f"So2Sat: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        self.root = Path(root)
        self.split, self.version, self.transform = split, version, transform
        #: key of the file in FILENAMES / MD5 ("train" for the v3 validation split)
        self.file_key = split if split in FILENAMES[version] else "train"
        self.path = self.root / FILENAMES[version][self.file_key]
        sel = resolve_channels(bands if bands is not None else "so2sat", table="so2sat")
        self.band_names, self.band_ids = sel.names, np.asarray(sel.ids, dtype=np.int64)
        self._channels = torch.as_tensor(self.band_ids)
        num_rows = self._validate()
        self.geo_path = self.path.with_name(self.path.stem + "_geo.h5")
        file_geo = read_geolocation(self.geo_path, num_rows) if self.geo_path.is_file() else None
        if cities is None and exclude_cities is None:
            self.rows = self._select_rows(num_rows, val_split_pct)
        else:
            self.rows = self._city_rows(file_geo, cities, exclude_cities)
        self.geolocation: Geolocation | None = None if file_geo is None else file_geo.take(self.rows)
        if checksum:
            got, expected = _md5(self.path), MD5[version][self.file_key]
            if got != expected:
                raise DataError(f"{self.path}: md5 {got} does not match the release ({expected}); the file is corrupt or another version")
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._nodes: tuple | None = None  # (file, its datasets) of the batched reads

    # -- layout validation ------------------------------------------------------------------
    def _validate(self) -> int:
        if not self.path.is_file():
            raise DataError(
                f"{self.path}: file not found. So2Sat version {self.version!r} expects "
                f"{', '.join(str(self.root / f) for f in FILENAMES[self.version].values())} "
                "(download from mediaTUM, see data_cards/so2sat_lcz42.md)"
            )
        try:
            f = h5py.File(self.path, "r")
        except OSError as err:
            raise DataError(f"{self.path}: not a readable HDF5 file ({err})") from None
        with f:
            expected = {"sen1": (32, 32, _SEN1), "sen2": (32, 32, _SEN2), "label": (17,)}
            missing = [k for k in expected if k not in f]
            if missing:
                raise DataError(f"{self.path}: missing HDF5 key(s) {missing}; expected keys sen1 (N,32,32,8), "
                                f"sen2 (N,32,32,10), label (N,17); found {sorted(f.keys())}")
            n = f["label"].shape[0]
            for key, tail in expected.items():
                node = f[key]
                if not isinstance(node, h5py.Dataset):
                    raise DataError(f"{self.path}: key {key!r} is an HDF5 group; expected a dataset of shape (N, "
                                    f"{', '.join(map(str, tail))})")
                shape = node.shape
                if tuple(shape[1:]) != tail or shape[0] != n:
                    raise DataError(f"{self.path}: key {key!r} has shape {shape}, expected ({n}, {', '.join(map(str, tail))})")
                require_real_numeric(self.path, key, node.dtype, "So2Sat stores float64")
            if n == 0:
                raise DataError(f"{self.path}: holds 0 samples (sen1, sen2 and label have N = 0); expected N ≥ 1")
        return n

    def _select_rows(self, num_rows: int, val_split_pct: float) -> np.ndarray:
        if "validation" in FILENAMES[self.version] or self.split == "test":
            return np.arange(num_rows, dtype=np.int64)
        train, val = split_rows(num_rows, val_split_pct)
        if self.split == "validation" and not val:
            raise DataError(f"{self.path}: {num_rows} rows leave an empty validation split "
                            f"(round({val_split_pct} * {num_rows}) = 0); version {self.version!r} needs more rows")
        return np.asarray(train if self.split == "train" else val, dtype=np.int64)

    def _city_rows(self, geo: "Geolocation | None", cities, exclude_cities) -> np.ndarray:
        if geo is None:
            raise GeovitError(f"So2Sat: cities / exclude_cities need the geolocation file {self.geo_path}, "
                              "which does not exist")
        known = set(geo.city.tolist())
        keep = np.ones(len(geo.city), dtype=bool)
        for arg, names, inside in (("cities", cities, True), ("exclude_cities", exclude_cities, False)):
            if names is None:
                continue
            names = [names] if isinstance(names, str) else list(names)
            unknown = sorted(set(names) - known)
            if unknown:
                raise GeovitError(f"So2Sat: {arg}={names!r}: {unknown} not in {self.geo_path} "
                                  f"(cities: {', '.join(sorted(known))})")
            keep &= np.isin(geo.city, names) == inside
        if not keep.any():
            raise GeovitError(f"So2Sat: cities={cities!r}, exclude_cities={exclude_cities!r} leave no row of {self.path}")
        return np.flatnonzero(keep).astype(np.int64)

    def storage_order(self) -> np.ndarray:
        """Dataset indices sorted by file row: consecutive entries are (nearly) consecutive rows.

        Pass it as ``order`` to :class:`geovit.data.samplers.BlockBatchSampler` so that its
        blocks are runs of the file (the v3 splits list their rows in random order).

        Returns:
            A permutation of ``range(len(self))``.
        """
        return np.argsort(self.rows, kind="stable")

    def _h5(self) -> h5py.File:
        pid = os.getpid()
        if self._file is None or self._pid != pid:  # one handle per (worker) process
            self._file = h5py.File(self.path, "r")
            self._pid = pid
        return self._file

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"], state["_pid"], state["_nodes"] = None, None, None
        return state

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        n = len(self.rows)
        if not -n <= index < n:
            raise IndexError(f"So2Sat index {index} out of range for {n} samples")
        row = int(self.rows[index])
        f = self._h5()
        try:
            s1 = f["sen1"][row]
            s2 = f["sen2"][row]
            onehot = f["label"][row]
        except OSError as err:
            raise DataError(f"{self.path}: could not read row {row} ({err}); the file may be truncated") from None
        hwc = np.concatenate([s1, s2], axis=-1)[..., self.band_ids].astype(np.float32)
        if not np.isfinite(hwc).all():
            raise DataError(f"{self.path}: row {row} has non-finite values in bands "
                            f"{[self.band_names[i] for i in np.where(~np.isfinite(hwc).all(axis=(0, 1)))[0]]}")
        if onehot.sum() != 1:
            raise DataError(f"{self.path}: label of row {row} is not one-hot (sum {onehot.sum()})")
        sample = {
            "image": torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1))),
            "channels": self._channels.clone(),
            "label": int(np.argmax(onehot)),
        }
        if self.geolocation is not None:
            sample.update(self.geolocation.sample(index % n))
        return self.transform(sample) if self.transform is not None else sample

    #: rows between two wanted rows up to which one slice read covers both (and drops the gap)
    max_gap = 8

    def _band_groups(self) -> list[tuple[str, int, int, int]]:
        """The selected bands as runs ``(key, first, stop, out_first)`` of consecutive bands of one sensor."""
        groups: list[list] = []
        for out, band in enumerate(self.band_ids.tolist()):
            key, k = ("sen1", band) if band < _SEN1 else ("sen2", band - _SEN1)
            if groups and groups[-1][0] == key and groups[-1][2] == k:
                groups[-1][2] += 1
            else:
                groups.append([key, k, k + 1, out])
        return [tuple(g) for g in groups]

    #: read the rows of uncompressed datasets through a memory map of the file (:class:`RawRows`)
    raw_reads = True

    def _row_readers(self) -> dict:
        """Per process: ``key -> reader`` with ``reader[start:stop]`` giving those rows."""
        f = self._h5()
        if self._nodes is None or self._nodes[0] is not f:
            nodes = {key: f[key] for key in ("sen1", "sen2", "label")}
            if self.raw_reads:
                try:
                    mm = np.memmap(self.path, mode="r", dtype=np.uint8)
                    nodes = {key: RawRows(mm, node) for key, node in nodes.items()}
                except (ValueError, OSError):
                    pass  # compressed, filtered, compact or virtual storage: h5py slices
            self._nodes = (f, nodes)
        return self._nodes[1]

    def _read_runs(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Images and labels of ``rows`` (any order), one slice read per run of rows at most
        :attr:`max_gap` apart.

        Returns:
            ``(images, labels, where)``: (n, C, 32, 32) float32 and (n, 17) in row order, and
            ``where[j]``, the position of ``rows[j]`` in them.
        """
        nodes = self._row_readers()
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        cuts = np.flatnonzero(np.diff(sorted_rows) > self.max_gap) + 1
        images = np.empty((len(rows), len(self.band_ids), 32, 32), dtype=np.float32)
        labels = None
        groups = self._band_groups()
        keys = sorted({g[0] for g in groups})
        pos = 0
        for run in np.split(sorted_rows, cuts):
            start, stop = int(run[0]), int(run[-1]) + 1
            try:
                blocks = {key: nodes[key][start:stop] for key in keys}
                onehot = nodes["label"][start:stop]
            except OSError as err:
                raise DataError(f"{self.path}: could not read rows {start}..{stop - 1} ({err}); "
                                "the file may be truncated") from None
            pick = run - start
            whole = len(pick) == stop - start and bool(np.all(np.diff(run) == 1))  # the slice itself: no gather
            if labels is None:
                labels = np.empty((len(rows), 17), dtype=onehot.dtype)
            end = pos + len(run)
            labels[pos:end] = onehot if whole else onehot[pick]
            for key, k0, k1, out in groups:
                src = blocks[key][..., k0:k1] if whole else blocks[key][pick, :, :, k0:k1]
                # cast to float32 and move the bands first in one pass (values as astype(float32))
                np.copyto(images[pos:end, out:out + k1 - k0], src.transpose(0, 3, 1, 2), casting="unsafe")
            pos = end
        where = np.empty_like(order)
        where[order] = np.arange(len(order))
        return images, labels, where

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """The samples ``[self[i] for i in indices]``, read with one slice per run of rows.

        Rows of ``indices`` that lie within :attr:`max_gap` rows of each other are read by one
        ``h5py`` slice (the unwanted rows in between are dropped); values, dtypes and sample
        keys are those of :meth:`__getitem__`. A :class:`geovit.data.transforms.Normalize`
        transform is applied to the whole batch at once (the same element-wise arithmetic),
        any other transform sample by sample. ``DataLoader`` calls this with every batch of a
        batch sampler (:class:`geovit.data.samplers.BlockBatchSampler`).

        Args:
            indices: dataset indices (any order, repeats allowed).

        Returns:
            The sample dicts, in the order of ``indices``.

        Raises:
            IndexError: an index is out of range.
            DataError: unreadable rows, non-finite values or a label that is not one-hot.
        """
        from geovit.data.transforms import Normalize

        n = len(self.rows)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) == 0:
            return []
        bad = idx[(idx < -n) | (idx >= n)]
        if len(bad):
            raise IndexError(f"So2Sat index {int(bad[0])} out of range for {n} samples")
        idx = idx % n
        rows = self.rows[idx]
        nchw, onehot, where = self._read_runs(rows)
        # a non-finite value makes its band's sum non-finite (an overflowing sum only costs the exact check)
        finite = np.isfinite(nchw.sum(axis=(2, 3)))
        if not finite.all():
            finite = np.isfinite(nchw).all(axis=(2, 3))
        if not finite.all():
            i = int(np.flatnonzero(~finite.all(axis=1))[0])
            raise DataError(f"{self.path}: row {int(np.sort(rows)[i])} has non-finite values in bands "
                            f"{[self.band_names[b] for b in np.flatnonzero(~finite[i])]}")
        sums = onehot.sum(axis=1)
        if (sums != 1).any():
            i = int(np.flatnonzero(sums != 1)[0])
            raise DataError(f"{self.path}: label of row {int(np.sort(rows)[i])} is not one-hot (sum {sums[i]})")
        images = torch.from_numpy(nchw)
        transform = self.transform
        if type(transform) is Normalize:  # noqa: E721 - exactly Normalize: in place, on the whole batch
            if int(self._channels.max()) >= len(transform.mean):
                transform({"image": images[:1], "channels": self._channels})  # raises its error
            # the same element-wise (x - mean) / std as Normalize.__call__, without temporaries
            images.sub_(transform.mean[self._channels].view(1, -1, 1, 1)).div_(transform.std[self._channels].view(1, -1, 1, 1))
            transform = None
        labels = np.argmax(onehot, axis=1)[where].tolist()
        samples = []
        for j, index, label in zip(where.tolist(), idx.tolist(), labels):
            sample = {"image": images[j], "channels": self._channels.clone(), "label": label}
            if self.geolocation is not None:
                sample.update(self.geolocation.sample(index))
            samples.append(transform(sample) if transform is not None else sample)
        return samples


# -- geolocation -----------------------------------------------------------------------------------
#: keys of a ``<split>_geo.h5`` file and their shapes after the row axis
GEO_KEYS: dict[str, tuple[int, ...]] = {"epsg": (1,), "tfw": (6,), "city": (1,)}


def tfw_to_affine(tfw: np.ndarray) -> np.ndarray:
    """World-file parameters to rasterio ``Affine`` coefficients anchored at the pixel corner.

    An ESRI world file holds ``A, D, B, E, C, F``: ``x = A·col + B·row + C`` and
    ``y = D·col + E·row + F`` at pixel *centres*, ``(C, F)`` the centre of the upper-left
    pixel. ``Affine(a, b, c, d, e, f)`` maps pixel *corners*, so ``c = C - (A + B) / 2`` and
    ``f = F - (D + E) / 2``.

    Args:
        tfw: (..., 6) world-file parameters in file order.

    Returns:
        (..., 6) float64 ``(a, b, c, d, e, f)``.

    >>> tfw_to_affine(np.array([10.0, 0.0, 0.0, -10.0, 500005.0, 4999995.0])).tolist()
    [10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0]
    """
    t = np.asarray(tfw, dtype=np.float64)
    A, D, B, E, C, F = (t[..., i] for i in range(6))
    return np.stack([A, B, C - (A + B) / 2, D, E, F - (D + E) / 2], axis=-1)


class Geolocation:
    """Where So2Sat patches lie: CRS, pixel-corner transform and city of each row.

    Args:
        epsg: (N,) EPSG codes.
        transform: (N, 6) rasterio ``Affine`` coefficients ``(a, b, c, d, e, f)``, upper-left
            pixel corner.
        city: (N,) city names.
    """

    def __init__(self, epsg: np.ndarray, transform: np.ndarray, city: np.ndarray):
        self.epsg = np.asarray(epsg, dtype=np.int64).reshape(-1)
        self.transform = np.asarray(transform, dtype=np.float64).reshape(-1, 6)
        self.city = np.asarray(city, dtype=str).reshape(-1)

    def __len__(self) -> int:
        return len(self.epsg)

    def take(self, rows: np.ndarray) -> "Geolocation":
        """The geolocation of ``rows`` (in that order).

        Args:
            rows: row indices.

        Returns:
            A new :class:`Geolocation` of ``len(rows)`` rows.
        """
        return Geolocation(self.epsg[rows], self.transform[rows], self.city[rows])

    def sample(self, i: int) -> dict:
        """The sample keys of row ``i``: ``crs``, ``transform`` (tuple of 6 floats), ``city``.

        Args:
            i: row.

        Returns:
            The dict.
        """
        return {"crs": f"EPSG:{int(self.epsg[i])}", "transform": tuple(float(v) for v in self.transform[i]),
                "city": str(self.city[i])}


def read_geolocation(path: str | os.PathLike, num_rows: int | None = None) -> Geolocation:
    """Read a So2Sat ``<split>_geo.h5`` file (keys in the module docstring).

    Args:
        path: the geolocation file.
        num_rows: rows of the image file it belongs to (checked when given).

    Returns:
        The :class:`Geolocation` of every row of the file.

    Raises:
        DataError: unreadable file, missing key, wrong shape or a row count other than ``num_rows``.
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err})") from None
    with f:
        missing = [k for k in GEO_KEYS if k not in f or not isinstance(f[k], h5py.Dataset)]
        if missing:
            raise DataError(f"{path}: missing dataset(s) {missing}; a So2Sat geolocation file holds epsg (N,1), "
                            f"tfw (N,6), city (N,1); found {sorted(f.keys())}")
        n = f["epsg"].shape[0]
        for key, tail in GEO_KEYS.items():
            shape = f[key].shape
            if shape[0] != n or tuple(shape[1:]) not in (tail, () if tail == (1,) else tail):
                raise DataError(f"{path}: dataset {key!r} has shape {shape}, expected ({n}, {', '.join(map(str, tail))})")
        if num_rows is not None and n != num_rows:
            raise DataError(f"{path}: holds {n} rows but its image file holds {num_rows}; "
                            "a geolocation file must have one row per patch, in the same order")
        epsg, tfw, city = f["epsg"][()], f["tfw"][()], f["city"][()]
    city = np.asarray([c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in city.reshape(-1)], dtype=str)
    return Geolocation(epsg.reshape(-1), tfw_to_affine(tfw.reshape(-1, 6)), city)


def write_geo_h5(path: str | os.PathLike, *, epsg: np.ndarray, tfw: np.ndarray, city: Sequence[str]) -> None:
    """Write a So2Sat-format geolocation file atomically (keys ``epsg``, ``tfw``, ``city``).

    Args:
        path: the file, e.g. ``root/training_geo.h5`` beside ``root/training.h5``.
        epsg: (N,) or (N, 1) EPSG codes.
        tfw: (N, 6) world-file parameters A, D, B, E, C, F (``(C, F)`` the upper-left pixel centre).
        city: N city names.

    Raises:
        GeovitError: the three do not have the same number of rows, or ``tfw`` is not (N, 6).
    """
    from geovit._io import atomic_path

    epsg = np.asarray(epsg, dtype=np.int64).reshape(-1, 1)
    tfw = np.asarray(tfw, dtype=np.float64)
    names = np.asarray([str(c).encode("utf-8") for c in city], dtype=object).reshape(-1, 1)
    if tfw.ndim != 2 or tfw.shape[1] != 6:
        raise GeovitError(f"write_geo_h5: tfw has shape {tfw.shape}, expected (N, 6)")
    if not len(epsg) == len(tfw) == len(names):
        raise GeovitError(f"write_geo_h5: epsg, tfw and city have {len(epsg)}, {len(tfw)} and {len(names)} rows")
    with atomic_path(Path(path)) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("epsg", data=epsg)
            f.create_dataset("tfw", data=tfw)
            f.create_dataset("city", data=names, dtype=h5py.string_dtype("utf-8"))


def synthetic_geolocation(num_rows: int, seed: int = 0, cities: Sequence[tuple[str, int, float, float]] | None = None
                          ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Made-up geolocation of ``num_rows`` patches: consecutive runs of rows per city, on a grid.

    Args:
        num_rows: number of patches.
        seed: seed of the city order.
        cities: ``(name, epsg, x0, y0)`` of each city (default: four cities in UTM zones).

    Returns:
        ``(epsg, tfw, city)`` as :func:`write_geo_h5` takes them.
    """
    cities = list(cities or [("berlin", 32633, 380000.0, 5820000.0), ("paris", 32631, 440000.0, 5410000.0),
                             ("madrid", 32630, 430000.0, 4480000.0), ("rome", 32633, 280000.0, 4640000.0)])
    rng = np.random.default_rng([seed, 7])
    which = np.sort(rng.integers(0, len(cities), size=num_rows))  # rows of a city are consecutive
    epsg = np.array([cities[c][1] for c in which], dtype=np.int64)
    k = np.arange(num_rows) % 64
    x0 = np.array([cities[c][2] for c in which]) + 320.0 * (k % 8)
    y0 = np.array([cities[c][3] for c in which]) - 320.0 * (k // 8)
    tfw = np.stack([np.full(num_rows, 10.0), np.zeros(num_rows), np.zeros(num_rows), np.full(num_rows, -10.0),
                    x0 + 5.0, y0 - 5.0], axis=1)
    return epsg, tfw, [cities[c][0] for c in which]


def normalization(version: str = "2"):
    """The per-band z-score transform with the statistics of ``version`` (indexed by absolute id).

    Args:
        version: So2Sat version (keys of :data:`SO2SAT_STATS`).

    Returns:
        A :class:`geovit.data.transforms.Normalize` over the 18 absolute band ids.

    Raises:
        GeovitError: unknown ``version``.
    """
    from geovit.data.transforms import Normalize

    if version not in SO2SAT_STATS:
        raise GeovitError(f"no So2Sat statistics for version {version!r}; expected one of {', '.join(SO2SAT_STATS)}")
    mean, std = SO2SAT_STATS[version]
    return Normalize(mean, std)


# -- statistics ----------------------------------------------------------------------------------
def band_stats(dataset: So2Sat, max_samples: int | None = None, batch: int = 1024) -> dict[str, list[float]]:
    """Per-band mean and std over the rows of a split, streamed in blocks of the file.

    Args:
        dataset: the split (only its rows are counted; v3 train/validation are subsets of
            ``training.h5``).
        max_samples: count only the first ``max_samples`` samples of the split.
        batch: rows of the file read at once (never the whole file in memory).

    Returns:
        ``{"bands", "mean", "std", "num_samples"}`` for the bands the dataset selects.
    """
    from tqdm import tqdm

    f = dataset._h5()
    rows = dataset.rows if max_samples is None else dataset.rows[:max_samples]
    rows = np.sort(rows)
    total = np.zeros(len(SO2SAT_BANDS))
    total_sq = np.zeros(len(SO2SAT_BANDS))
    count = 0
    stop_row = int(rows[-1]) + 1 if len(rows) else 0
    for start in tqdm(range(0, stop_row, batch), desc=f"band stats {dataset.path.name}", unit="block"):
        stop = min(stop_row, start + batch)
        picked = rows[np.searchsorted(rows, start):np.searchsorted(rows, stop)] - start
        if not len(picked):
            continue
        block = np.concatenate([f["sen1"][start:stop], f["sen2"][start:stop]], axis=-1)[picked].astype(np.float64)
        total += block.sum(axis=(0, 1, 2))
        total_sq += np.square(block).sum(axis=(0, 1, 2))
        count += block.shape[0] * block.shape[1] * block.shape[2]
    if count == 0:
        raise DataError(f"{dataset.path}: split {dataset.split!r} has no samples to compute statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    ids = dataset.band_ids
    return {"bands": list(dataset.band_names), "mean": mean[ids].tolist(), "std": std[ids].tolist(), "num_samples": len(rows)}


def compute_band_stats_cli(args) -> int:
    """Print or write (``args.out``) the band statistics of ``args.root`` / ``args.split``.

    Args:
        args: namespace with ``root``, ``split``, ``version``, ``max_samples`` and ``out``.

    Returns:
        0 (the process exit code).
    """
    from geovit._io import atomic_write_text

    ds = So2Sat(args.root, split=args.split, version=args.version)
    stats = band_stats(ds, max_samples=args.max_samples)
    text = json.dumps(stats, indent=2)
    if args.out:
        atomic_write_text(args.out, text + "\n")
        print(f"wrote band statistics of {ds.path} to {args.out}")
    else:
        print(text)
    return 0


# -- synthetic data ------------------------------------------------------------------------------
def write_synthetic(out_dir: str | os.PathLike, *, num_samples: int | None = None, seed: int = 0,
                    version: str = "2") -> Path:
    """Write a small SYNTHETIC So2Sat-format dataset (version-2 or v3 layout) with a learnable signal.

    Same file names, keys, shapes and dtype (float64) as the release. Each class has its own
    per-band offsets in both sensors (so S1-only and S2-only models can beat chance) and its own
    isotropic texture (grain size, strength), plus noise at realistic band scales. ``num_samples``
    is the training size (default 2048); validation and test get a quarter each.
    """
    rng = np.random.default_rng(seed)
    n_train = 2048 if num_samples is None else int(num_samples)
    if n_train < 17:
        raise GeovitError(f"num_samples must be >= 17 (one per class), got {n_train}")
    root = Path(out_dir)
    mean, std = (np.asarray(a) for a in SO2SAT_STATS["2"])
    # Class "prototypes" fixed by the seed, shared by all splits. Both cues are invariant to the
    # flips / 90° rotations of the training augmentation: per-band offsets (in every band, so
    # S1-only and S2-only models can beat chance) and an isotropic texture whose grain size and
    # strength depend on the class.
    offsets = rng.normal(0.0, 1.0, size=(17, 18))
    grain = rng.uniform(0.6, 3.0, size=17)
    strength = rng.uniform(0.3, 1.5, size=17)

    def make(n: int, split_rng: np.random.Generator):
        from scipy.ndimage import gaussian_filter

        labels = split_rng.integers(0, 17, size=n)
        labels[:17] = np.arange(17)  # every class present in every split
        texture = np.empty((n, 32, 32))
        for i, c in enumerate(labels):
            field = gaussian_filter(split_rng.normal(size=(32, 32)), grain[c], mode="wrap")
            texture[i] = strength[c] * field / (field.std() + 1e-12)
        z = (offsets[labels][:, None, None, :] * 1.2 + texture[..., None]
             + split_rng.normal(0.0, 1.0, size=(n, 32, 32, 18)))
        x = mean + std * z
        onehot = np.zeros((n, 17), dtype=np.float64)
        onehot[np.arange(n), labels] = 1.0
        return x[..., :8], x[..., 8:], onehot

    sizes = {"train": n_train, "validation": max(17, n_train // 4), "test": max(17, n_train // 4)}
    for i, (split, fname) in enumerate(FILENAMES[version].items()):
        s1, s2, onehot = make(sizes[split], np.random.default_rng(seed * 1000 + i + 1))
        write_h5(root / fname, s1, s2, onehot)
    return root


def write_h5(path: Path, sen1: np.ndarray, sen2: np.ndarray, label: np.ndarray, **attrs: str) -> None:
    """Write one So2Sat-format HDF5 file (``sen1`` (N,32,32,8), ``sen2`` (N,32,32,10), one-hot
    ``label`` (N,17), chunked per patch like the release), marked synthetic, atomically.

    Args:
        path: the file.
        sen1: Sentinel-1 patches.
        sen2: Sentinel-2 patches.
        label: one-hot labels.
        **attrs: more HDF5 attributes (e.g. the generator's name).
    """
    from geovit._io import atomic_path

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("sen1", data=sen1, chunks=(1, 32, 32, 8))
            f.create_dataset("sen2", data=sen2, chunks=(1, 32, 32, 10))
            f.create_dataset("label", data=label)
            f.attrs["geovit_synthetic"] = "SYNTHETIC So2Sat-format data written by geovit; not the real release"
            f.attrs.update(attrs)
