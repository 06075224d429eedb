"""JUMP-CP single-cell crops as released for ChannelViT / ContextViT (specs/channelvit.md §4.3).

One ``8 × 224 × 224`` ``.npy`` array per cell from compound plate BR00116991 (Chandrasekaran et
al., JUMP Cell Painting, cpg0000), channels 0-4 fluorescence (Mito, AGP, RNA, ER, DNA) and 5-7
brightfield (HighZBF, LowZBF, Brightfield), listed in a metadata table. Layout geovit reads
(data card ``data_cards/jump_cp.md`` states what was assumed)::

    root/metadata.csv          (or metadata.parquet when pyarrow/fastparquet is installed)
    root/<path column>         one (8, H, W) array per cell, any real dtype (uint8 in our writer)

Metadata columns: ``path`` (relative to ``root`` or absolute) and ``label`` (int; the compound's
gene target from the plate map, 0 = negative control, 161 classes in the release) are required;
``ID``, ``well_loc``, ``plate`` are kept when present. The split is the official one: a
random permutation of the table rows with numpy seed 0, 60 / 20 / 20 % train / valid / test
(``channelvit/data/jumpcp.py``), unless the table has its own ``split`` column.

Images are read lazily (memory-mapped), one file per index.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from geovit.channels import JUMPCP_CHANNELS, resolve_channels
from geovit.data.checks import require_real_numeric
from geovit.errors import DataError, GeovitError

#: Per-channel mean / std of raw intensities (ChannelViT ``config/transformations/cell.yaml``).
JUMPCP_MEAN = (4.031743599139058, 1.565935237087539, 3.77367898215863, 3.4605251427133257,
               4.1723172504050225, 6.780529773318951, 6.787385700135139, 6.778120829362721)
JUMPCP_STD = (17.318438884455695, 12.015918256263747, 16.966058078452495, 15.064776266287147,
              17.964118200870608, 21.638766346725316, 21.670565699654457, 21.639488585095584)

SPLITS = ("train", "valid", "test")
_SPLIT_ALIASES = {"validation": "valid", "val": "valid"}
NUM_CHANNELS = len(JUMPCP_CHANNELS)


def read_metadata(path: Path):
    """Read the cell table (CSV or parquet) and check its columns; raises DataError naming the file."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{path}: metadata table not found; JUMP-CP expects root/metadata.csv (or .parquet) "
                        "with columns path,label (see data_cards/jump_cp.md)")
    try:
        df = pd.read_parquet(path) if path.suffix in {".parquet", ".pq"} else pd.read_csv(path)
    except ImportError as err:
        raise DataError(f"{path}: reading parquet needs pyarrow or fastparquet ({err}); or provide metadata.csv") from None
    except Exception as err:  # pandas parser errors, truncated files
        raise DataError(f"{path}: not a readable table ({err})") from None
    missing = [c for c in ("path", "label") if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; expected at least path,label, found {list(df.columns)}")
    labels = pd.to_numeric(df["label"], errors="coerce")
    if labels.isna().any() or (labels < 0).any() or (labels % 1 != 0).any():
        bad = int(np.flatnonzero((labels.isna() | (labels < 0) | (labels % 1 != 0)).to_numpy())[0])
        raise DataError(f"{path}: column 'label' row {bad} is {df['label'].iloc[bad]!r}; expected a non-negative integer class")
    df["label"] = labels.astype(np.int64)
    return df.reset_index(drop=True)


def official_split(num_rows: int, split: str, seed: int = 0) -> np.ndarray:
    """Row indices of ``split``: numpy-seeded permutation, 60/20/20 (ChannelViT's ``get_split``)."""
    perm = np.random.RandomState(seed).permutation(num_rows)
    train_end = int(0.6 * num_rows)
    valid_end = int(0.2 * num_rows) + train_end
    return {"train": perm[:train_end], "valid": perm[train_end:valid_end], "test": perm[valid_end:]}[split]


class JUMPCP(Dataset):
    """JUMP-CP single cells as a lazy map-style dataset.

    Args:
        root: folder with ``metadata.csv`` (or the table given by ``metadata``) and the arrays.
        split: ``"train"``, ``"valid"`` (alias ``"validation"``), ``"test"`` or ``"all"``.
        channels: ``None`` (all 8), a preset (``"jumpcp_fluorescence"``, ``"jumpcp_brightfield"``)
            or channel names / ids; the image keeps only these, in this order.
        transform: callable applied to each sample dict (e.g. ``Normalize(JUMPCP_MEAN, JUMPCP_STD)``).
        metadata: table file name inside ``root`` (default: ``metadata.csv``, else ``metadata.parquet``).

    Samples: ``image`` float32 (C, H, W) raw intensities, ``channels`` LongTensor (C,) absolute
    ids (0 Mito … 7 Brightfield), ``label`` int.
    """

    channel_names = JUMPCP_CHANNELS

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 channels: str | Sequence[str] | Sequence[int] | None = None,
                 transform: Callable[[dict], dict] | None = None, metadata: str | None = None,
                 split_seed: int = 0):
        self.root = Path(root)
        split = _SPLIT_ALIASES.get(split, split)
        if split not in (*SPLITS, "all"):
            raise GeovitError(f"JUMPCP: unknown split {split!r}; expected one of train, valid, test, all")
        self.split, self.transform = split, transform
        self.metadata_path = self._find_metadata(metadata)
        df = read_metadata(self.metadata_path)
        self.num_classes = int(df["label"].max()) + 1 if len(df) else 0  # over every split
        if split != "all":
            if "split" in df.columns:
                rows = np.flatnonzero(df["split"].astype(str).str.lower().map(lambda s: _SPLIT_ALIASES.get(s, s)) == split)
            else:
                rows = np.sort(official_split(len(df), split, split_seed))
            df = df.iloc[rows].reset_index(drop=True)
        self.paths = [self._resolve(p) for p in df["path"].astype(str)]
        self.targets = df["label"].to_numpy(dtype=np.int64)
        self.ids = df["ID"].astype(str).tolist() if "ID" in df.columns else [Path(p).stem for p in self.paths]
        self._channels = torch.as_tensor(_channel_ids(channels), dtype=torch.long)

    def _find_metadata(self, name: str | None) -> Path:
        if not self.root.is_dir():
            raise DataError(f"{self.root}: JUMP-CP folder not found")
        if name is not None:
            return self.root / name
        for candidate in ("metadata.csv", "metadata.parquet"):
            if (self.root / candidate).is_file():
                return self.root / candidate
        return self.root / "metadata.csv"

    def _resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def labels(self) -> np.ndarray:
        """Class index of every sample, in dataset order (a copy)."""
        return self.targets.copy()

    def __len__(self) -> int:
        return len(self.paths)

    def load_array(self, index: int) -> np.ndarray:
        """The raw (8, H, W) array of cell ``index`` (memory-mapped), checked."""
        path = self.paths[index]
        if not path.is_file():
            raise DataError(f"{path}: cell image not found (row {index} of {self.metadata_path}, column 'path')")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise DataError(f"{path}: not a readable .npy array ({err})") from None
        if arr.ndim != 3 or arr.shape[0] != NUM_CHANNELS:
            raise DataError(f"{path}: array has shape {arr.shape}, expected ({NUM_CHANNELS}, H, W) "
                            "(channels Mito, AGP, RNA, ER, DNA, HighZBF, LowZBF, Brightfield)")
        require_real_numeric(path, "array", arr.dtype, "JUMP-CP cells: any real dtype")
        return arr

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"JUMPCP index {index} out of range for {len(self)} cells")
        index = index % len(self)
        arr = self.load_array(index)
        image = np.asarray(arr[self._channels.numpy()], dtype=np.float32)
        if not np.isfinite(image).all():
            raise DataError(f"{self.paths[index]}: non-finite pixel values")
        sample = {"image": torch.from_numpy(image), "channels": self._channels.clone(),
                  "label": int(self.targets[index])}
        return self.transform(sample) if self.transform is not None else sample


def _channel_ids(channels) -> list[int]:
    if channels is None:
        return list(range(NUM_CHANNELS))
    if not isinstance(channels, str) and all(isinstance(c, (int, np.integer)) for c in channels):
        ids = [int(c) for c in channels]
        bad = [c for c in ids if not 0 <= c < NUM_CHANNELS]
        if bad:
            raise GeovitError(f"JUMPCP: channel ids {bad} outside 0..{NUM_CHANNELS - 1}")
        return ids
    return list(resolve_channels(channels, table="jumpcp").ids)


def normalization():
    """Per-channel z-score with ChannelViT's JUMP-CP statistics (indexed by absolute id)."""
    from geovit.data.transforms import Normalize

    return Normalize(JUMPCP_MEAN, JUMPCP_STD)


# -- synthetic data ------------------------------------------------------------------------------
def write_synthetic(out_dir: str | os.PathLike, *, num_samples: int | None = None, seed: int = 0,
                    num_classes: int = 4, image_size: int = 224) -> Path:
    """Write a SYNTHETIC JUMP-CP-format set: ``metadata.csv`` + one (8, S, S) uint8 ``.npy`` per cell.

    Each cell is a bright blob (nucleus in DNA, a ring in AGP/ER, speckles in Mito/RNA, a soft
    shadow in the brightfield planes); the class (0 = control) sets which fluorescence channel
    is brightened and the blob's elongation, so a model can learn it from fluorescence or from
    brightfield alone. ``num_samples`` defaults to 40.
    """
    import pandas as pd

    from geovit._io import atomic_path, atomic_write_text

    n = 40 if num_samples is None else int(num_samples)
    if n < num_classes:
        raise GeovitError(f"num_samples must be >= num_classes ({num_classes}), got {n}")
    rng = np.random.default_rng(seed)
    root = Path(out_dir)
    s = int(image_size)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s - 0.5
    rows = []
    for i in range(n):
        label = i % num_classes if i < num_classes else int(rng.integers(num_classes))
        cy, cx = rng.uniform(-0.1, 0.1, size=2)
        stretch = 1.0 + 0.6 * label / max(1, num_classes - 1)
        r2 = ((xx - cx) * stretch) ** 2 + ((yy - cy) / stretch) ** 2
        cell = np.exp(-r2 / 0.02)
        nucleus = np.exp(-r2 / 0.004)
        ring = np.exp(-((np.sqrt(r2) - 0.12) ** 2) / 0.001)
        speck = cell * (rng.random((s, s)) < 0.05)
        planes = np.stack([speck, ring, speck, ring * 0.8, nucleus,
                           1 - 0.3 * cell, 1 - 0.2 * cell, 1 - 0.25 * cell]).astype(np.float32)
        planes[5:] *= 0.25 * (1 + 0.3 * stretch)
        if label > 0:
            planes[(label - 1) % 5] += 0.8 * cell
        planes += rng.normal(0, 0.03, size=planes.shape).astype(np.float32)
        arr = np.clip(planes * 120, 0, 255).astype(np.uint8)
        well = f"{'ABCDEFGHIJKLMNOP'[label % 16]}{1 + i % 24:02d}"
        cell_id = f"BR00116991_{well}_{1 + i % 9}_{i:05d}"
        rel = Path("BR00116991") / well / f"{cell_id}.npy"
        with atomic_path(root / rel) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, arr)
        rows.append({"ID": cell_id, "plate": "BR00116991", "well_loc": well, "path": rel.as_posix(), "label": label})
    atomic_write_text(root / "metadata.csv", pd.DataFrame(rows).to_csv(index=False))
    atomic_write_text(root / "SYNTHETIC.txt", "SYNTHETIC JUMP-CP-format data written by geovit; not the real release.\n")
    return root
