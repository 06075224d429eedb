"""So2Sat LCZ42: co-registered Sentinel-1 / Sentinel-2 patches labelled with 17 local climate zones.

Reads the HDF5 files users already have, in torchgeo's layouts (Zhu et al., "So2Sat LCZ42",
IEEE GRSM 2020; data card: ``data_cards/so2sat_lcz42.md``)::

    version "2"             root/training.h5  root/validation.h5  root/testing.h5
    version "3_random"      root/random/training.h5      root/random/testing.h5
    version "3_block"       root/block/training.h5       root/block/testing.h5
    version "3_culture_10"  root/culture_10/training.h5  root/culture_10/testing.h5

Each file holds ``sen1`` (N, 32, 32, 8), ``sen2`` (N, 32, 32, 10) and ``label`` (N, 17) one-hot;
float64 in the real release, uint8 in torchgeo's test fixtures (both accepted). Samples are read
lazily per index (the real files are tens of GB); file handles are opened per process, so the
dataset works with DataLoader workers.

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

    Samples are dicts: ``image`` float32 (C, 32, 32) raw values in the order asked for,
    ``channels`` LongTensor (C,) absolute band ids (0-7 Sentinel-1, 8-17 Sentinel-2),
    ``label`` int class index 0..16. ``rows`` holds the file row of every sample.

    Raises:
        GeovitError: unknown ``version``, ``split`` or band, or a bad ``val_split_pct``.
        DataError: the file is missing, unreadable, has the wrong keys or shapes, fails the md5
            check, or is too small to hold a validation split.
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
        self.rows = self._select_rows(num_rows, val_split_pct)
        if checksum:
            got, expected = _md5(self.path), MD5[version][self.file_key]
            if got != expected:
                raise DataError(f"{self.path}: md5 {got} does not match the release ({expected}); the file is corrupt or another version")
        self._file: h5py.File | None = None
        self._pid: int | None = None

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

    def _h5(self) -> h5py.File:
        pid = os.getpid()
        if self._file is None or self._pid != pid:  # one handle per (worker) process
            self._file = h5py.File(self.path, "r")
            self._pid = pid
        return self._file

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"], state["_pid"] = None, None
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
        return self.transform(sample) if self.transform is not None else sample


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
