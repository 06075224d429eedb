"""CHAMMI: single-cell images with 3, 4 or 5 channels (Chen et al., NeurIPS 2023 D&B; Zenodo 7988357).

Three sub-datasets ("chunks") with different channel sets, as ChA-MAEViT trains on them
(specs/chamaevit.md §7). The release stores every cell in *tape format*: the C channel planes
side by side along the width, an ``H × (W·C)`` grey image (``W = channel_width``). Layout::

    root/Allen/enriched_meta.csv   WTC-11 (hiPSC), 3 channels, .ome.tiff
    root/HPA/enriched_meta.csv     Human Protein Atlas, 4 channels, .png
    root/CP/enriched_meta.csv      Cell Painting (LINCS), 5 channels, .png
    root/<file_path>               e.g. Allen/<name>.ome.tiff (paths are relative to root)

``enriched_meta.csv`` columns read here: ``file_path``, ``channel_width``, ``train_test_split``
(``Train``, ``Task_one`` … ``Task_four``) and the label column (``Label`` by default; CHAMMI's
OOD tasks also use ``cell_type``, ``Plate``, ``Structure``…). Other columns are ignored.

Channel ids index the 12-channel table ``"chammi"`` registered below (Allen 0-2, HPA 3-6,
CP 7-11), the vocabulary ChA-MAEViT's channel tokens use. Labels are indices into
:attr:`CHAMMI.classes`, the sorted ``(chunk, label)`` pairs of the whole metadata of the chunks
asked for, so the encoding is the same for every split.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from geovit.channels import register_table
from geovit.data.transforms import Resize
from geovit.errors import DataError, GeovitError

#: chunk -> (channel names in file order, file suffix). Names from the CHAMMI paper (Table 1).
CHUNKS: dict[str, tuple[tuple[str, ...], str]] = {
    "Allen": (("Allen_nucleus", "Allen_membrane", "Allen_protein"), ".ome.tiff"),
    "HPA": (("HPA_microtubules", "HPA_protein", "HPA_nucleus", "HPA_er"), ".png"),
    "CP": (("CP_nucleus", "CP_er", "CP_rna", "CP_golgi_actin", "CP_mito"), ".png"),
}

CHAMMI_CHANNELS: tuple[str, ...] = tuple(c for names, _ in CHUNKS.values() for c in names)
register_table("chammi", CHAMMI_CHANNELS, presets={
    "chammi_allen": CHUNKS["Allen"][0], "chammi_hpa": CHUNKS["HPA"][0], "chammi_cp": CHUNKS["CP"][0],
})

_OFFSETS = {}
_o = 0
for _chunk, (_names, _) in CHUNKS.items():
    _OFFSETS[_chunk] = _o
    _o += len(_names)

REQUIRED_COLUMNS = ("file_path", "channel_width", "train_test_split")
SPLITS = ("Train", "Task_one", "Task_two", "Task_three", "Task_four")


def chunk_channel_ids(chunk: str) -> list[int]:
    """Absolute ids (in the ``chammi`` table) of a chunk's channels, in file order."""
    return list(range(_OFFSETS[chunk], _OFFSETS[chunk] + len(CHUNKS[chunk][0])))


def unfold_tape(tape: np.ndarray, channel_width: int, num_channels: int, where: str = "image") -> np.ndarray:
    """``H × (W·C)`` tape image → ``(C, H, W)`` (channel c is columns c·W … (c+1)·W − 1)."""
    if tape.ndim != 2:
        raise DataError(f"{where}: image has shape {tape.shape}, expected a 2-D tape image H × (W·C)")
    h, total = tape.shape
    if channel_width <= 0 or total != channel_width * num_channels:
        raise DataError(f"{where}: tape width {total} != channel_width {channel_width} × {num_channels} channels")
    return np.ascontiguousarray(tape.reshape(h, num_channels, channel_width).transpose(1, 0, 2))


def fold_tape(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` → ``H × (W·C)`` tape image (inverse of :func:`unfold_tape`)."""
    c, h, w = image.shape
    return np.ascontiguousarray(image.transpose(1, 0, 2).reshape(h, c * w))


def _read_image(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        if path.name.endswith((".tif", ".tiff")):
            import tifffile

            arr = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im)
    except Exception as err:  # corrupt / truncated files
        raise DataError(f"{path}: not a readable image ({err})") from None
    arr = np.squeeze(arr)
    return arr


class CHAMMI(Dataset):
    """CHAMMI as a lazy map-style dataset over one or more chunks.

    Args:
        root: the CHAMMI folder (holding ``Allen/``, ``HPA/``, ``CP/``).
        split: a ``train_test_split`` value (``"Train"``, ``"Task_one"`` …; case-insensitive),
            or ``None`` for every row.
        chunks: which sub-datasets to read (default all three).
        label_column: the metadata column used as the class.
        scale: divide integer images by their dtype's maximum (255 for 8-bit PNG, 65535 for
            16-bit TIFF) so chunks stored at different bit depths share one [0, 1] range.
        image_size: resize every cell to ``image_size²`` (bilinear) so chunks batch together;
            ``None`` keeps the native size (it differs per chunk).
        transform: callable applied to each sample dict.

    Samples: ``image`` float32 (C, H, W) with C = 3 / 4 / 5, ``channels`` LongTensor (C,)
    absolute ids in the ``chammi`` table, ``label`` int, ``chunk`` str.
    """

    channel_names = CHAMMI_CHANNELS

    def __init__(self, root: str | os.PathLike, split: str | None = "Train",
                 chunks: Sequence[str] = tuple(CHUNKS), label_column: str = "Label",
                 image_size: int | None = 224, scale: bool = True, transform: Callable[[dict], dict] | None = None):
        import pandas as pd

        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: CHAMMI folder not found")
        unknown = [c for c in chunks if c not in CHUNKS]
        if unknown:
            raise GeovitError(f"CHAMMI: unknown chunk(s) {unknown}; expected some of {', '.join(CHUNKS)}")
        self.image_size, self.transform, self.label_column, self.scale = image_size, transform, label_column, scale
        frames, vocab = [], []
        for chunk in chunks:
            meta = self.root / chunk / "enriched_meta.csv"
            if not meta.is_file():
                raise DataError(f"{meta}: metadata not found; CHAMMI expects root/{chunk}/enriched_meta.csv")
            try:
                df = pd.read_csv(meta, low_memory=False)
            except Exception as err:
                raise DataError(f"{meta}: not a readable CSV ({err})") from None
            missing = [c for c in (*REQUIRED_COLUMNS, label_column) if c not in df.columns]
            if missing:
                raise DataError(f"{meta}: missing column(s) {missing}; expected {list(REQUIRED_COLUMNS) + [label_column]}, "
                                f"found {list(df.columns)}")
            widths = pd.to_numeric(df["channel_width"], errors="coerce")
            if widths.isna().any() or (widths <= 0).any():
                bad = int(np.flatnonzero((widths.isna() | (widths <= 0)).to_numpy())[0])
                raise DataError(f"{meta}: column 'channel_width' row {bad} is {df['channel_width'].iloc[bad]!r}; "
                                "expected a positive integer (pixels per channel plane)")
            if df[label_column].isna().any():
                bad = int(np.flatnonzero(df[label_column].isna().to_numpy())[0])
                raise DataError(f"{meta}: column {label_column!r} is empty at row {bad}")
            vocab += [(chunk, str(v)) for v in sorted(df[label_column].astype(str).unique())]
            if split is not None:
                df = df[df["train_test_split"].astype(str).str.lower() == split.lower()]
            frames.append(pd.DataFrame({"chunk": chunk, "file_path": df["file_path"].astype(str),
                                        "channel_width": widths.loc[df.index].astype(int),
                                        "label": df[label_column].astype(str), "row": df.index}))
        table = pd.concat(frames, ignore_index=True)
        if split is not None and len(table) == 0:
            raise DataError(f"{self.root}: no rows with train_test_split == {split!r} in chunks {list(chunks)}; "
                            f"CHAMMI splits are {', '.join(SPLITS)}")
        self.classes: list[tuple[str, str]] = vocab
        index = {c: i for i, c in enumerate(vocab)}
        self.chunks = table["chunk"].tolist()
        self.paths = [self.root / p for p in table["file_path"]]
        self.widths = table["channel_width"].to_numpy()
        self.rows = table["row"].to_numpy()
        self.targets = np.asarray([index[(c, l)] for c, l in zip(table["chunk"], table["label"])], dtype=np.int64)

    @property
    def num_classes(self) -> int:
        """Number of classes (the training classes of the release's metadata)."""
        return len(self.classes)

    def labels(self) -> np.ndarray:
        """Class index of every sample, in dataset order (a copy)."""
        return self.targets.copy()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"CHAMMI index {index} out of range for {len(self)} cells")
        index = index % len(self)
        chunk, path = self.chunks[index], self.paths[index]
        names, suffix = CHUNKS[chunk]
        if not path.name.endswith(suffix):
            raise DataError(f"{path}: {chunk} images are {suffix} files (row {self.rows[index]} of "
                            f"{self.root / chunk / 'enriched_meta.csv'}, column 'file_path')")
        tape = _read_image(path)
        if tape.ndim == 3 and tape.shape[0] == len(names):  # a plane stack (C, H, W) instead of a tape
            image = tape.astype(np.float32)
        else:
            image = unfold_tape(tape, int(self.widths[index]), len(names), where=str(path)).astype(np.float32)
        if self.scale and np.issubdtype(tape.dtype, np.integer):
            image /= float(np.iinfo(tape.dtype).max)
        if not np.isfinite(image).all():
            raise DataError(f"{path}: non-finite pixel values")
        sample = {"image": torch.from_numpy(image), "channels": torch.as_tensor(chunk_channel_ids(chunk), dtype=torch.long),
                  "label": int(self.targets[index]), "chunk": chunk}
        if self.image_size is not None:
            sample = Resize(self.image_size)(sample)
        return self.transform(sample) if self.transform is not None else sample


# -- synthetic data ------------------------------------------------------------------------------
#: Labels of the synthetic writer: Allen / HPA names are CHAMMI Train classes; CP names are illustrative.
SYNTH_LABELS = {
    "Allen": ("M0", "M1M2", "M3"),
    "HPA": ("golgi apparatus", "microtubules", "mitochondria", "nuclear speckles"),
    "CP": ("BRD-A29260609", "BRD-K04185004", "DMSO"),
}
SYNTH_SIZES = {"Allen": 40, "HPA": 48, "CP": 32}


def write_synthetic(out_dir: str | os.PathLike, *, num_samples: int | None = None, seed: int = 0,
                    sizes: dict[str, int] | None = None) -> Path:
    """Write a SYNTHETIC CHAMMI-format set: per chunk ``enriched_meta.csv`` + tape images.

    Allen cells are 16-bit ``.ome.tiff``, HPA and CP 8-bit ``.png``, each ``S × (S·C)`` with
    chunk-specific sizes (default 40 / 48 / 32 px, smaller than the release).
    The label sets which channel carries a bright blob and its radius. ``num_samples`` is per
    chunk (default 12); about a quarter of rows go to ``Task_one``, the rest to ``Train``.
    """
    import pandas as pd
    import tifffile
    from PIL import Image

    from geovit._io import atomic_path, atomic_write_text

    n = 12 if num_samples is None else int(num_samples)
    rng = np.random.default_rng(seed)
    root = Path(out_dir)
    sizes = {**SYNTH_SIZES, **(sizes or {})}
    for chunk, (names, suffix) in CHUNKS.items():
        labels, s, c = SYNTH_LABELS[chunk], sizes[chunk], len(CHUNKS[chunk][0])
        if n < len(labels):
            raise GeovitError(f"num_samples must be >= {len(labels)} per chunk, got {n}")
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s - 0.5
        rows = []
        for i in range(n):
            k = i % len(labels) if i < len(labels) else int(rng.integers(len(labels)))
            cy, cx = rng.uniform(-0.1, 0.1, size=2)
            r2 = (xx - cx) ** 2 + (yy - cy) ** 2
            planes = 0.15 * np.exp(-r2 / 0.03)[None].repeat(c, 0) + rng.normal(0, 0.02, size=(c, s, s))
            planes[k % c] += np.exp(-r2 / (0.005 * (1 + k)))
            planes = np.clip(planes, 0, 1)
            tape = fold_tape(planes)
            name = f"{chunk.lower()}_{i:05d}{suffix}"
            with atomic_path(root / chunk / name) as tmp:
                if suffix == ".ome.tiff":
                    tifffile.imwrite(tmp, (tape * 65535).astype(np.uint16), ome=True)
                else:
                    Image.fromarray((tape * 255).astype(np.uint8), mode="L").save(tmp, format="PNG")
            split = "Task_one" if i >= len(labels) and i % 4 == 3 else "Train"
            rows.append({"file_path": f"{chunk}/{name}", "ID": f"{chunk}_{i:05d}", "channel_width": s,
                         "train_test_split": split, "Label": labels[k]})
        atomic_write_text(root / chunk / "enriched_meta.csv", pd.DataFrame(rows).to_csv(index=False))
    atomic_write_text(root / "SYNTHETIC.txt", "SYNTHETIC CHAMMI-format data written by geovit; not the real release.\n")
    return root
