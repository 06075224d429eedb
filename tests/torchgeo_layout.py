"""Tiny files in the on-disk layouts of torchgeo's own So2Sat and LEVIR-CD test data.

torchgeo's test suite generates its fixtures with small scripts (``tests/data/so2sat/data.py``,
``tests/data/levircd/levircd/data.py`` in torchgeo). :func:`write_torchgeo_layout` writes a tree
with the same file names, HDF5 keys, dtypes, shapes, compression, PNG modes and sizes, and zip
members, with random content of its own:

* ``so2sat/{training,validation,testing}.h5`` and ``so2sat/{random,block,culture_10}/{training,testing}.h5``
  (the v3 files are copies of the v2 training / testing files): 2 samples each, keys ``label``
  (2, 17) one-hot, ``sen1`` (2, 32, 32, 8), ``sen2`` (2, 32, 32, 10), all uint8 in {0, 1},
  gzip level 9.
* ``levircd/levircd/{A,B,label}/{train,val,test}_{0,1}.png``: 32x32 RGB images and L labels
  (a 0/255 RGB mask converted to grey, hence the levels 0, 29, 76, ... 255), plus
  ``levircd/levircd/{train,val,test}.zip``. Each zip holds every ``{A,B,label}/*.png`` of every
  split, written in the order train, val, test: the splits not generated yet are 1x1
  placeholders (``train.zip`` holds real train files, ``val.zip`` real train and val files,
  ``test.zip`` real files of all three).

:func:`describe` reduces a tree to those properties, so a generated tree can be compared with
torchgeo's files.
"""
from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

SO2SAT_FILES = ("training", "validation", "testing")
SO2SAT_V3_FOLDERS = ("random", "block", "culture_10")
LEVIRCD_SPLITS = ("train", "val", "test")
LEVIRCD_FOLDERS = ("A", "B", "label")
#: order of the members of each folder inside torchgeo's zips
LEVIRCD_MEMBER_ORDER = ("val", "test", "train")
SAMPLES = 2
SIZE = 32


def write_torchgeo_layout(root: str | Path, seed: int = 0) -> Path:
    """Write the So2Sat and LEVIR-CD trees described in the module docstring under ``root``.

    Args:
        root: folder to write into (created).
        seed: seed of the random content.

    Returns:
        ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    _write_so2sat(root / "so2sat", rng)
    _write_levircd(root / "levircd" / "levircd", rng)
    return root


def _write_so2sat(out: Path, rng: np.random.Generator) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in SO2SAT_FILES:
        label = np.eye(17, dtype=np.uint8)[rng.integers(0, 17, SAMPLES)]
        sen1 = rng.integers(0, 2, (SAMPLES, SIZE, SIZE, 8), dtype=np.uint8)
        sen2 = rng.integers(0, 2, (SAMPLES, SIZE, SIZE, 10), dtype=np.uint8)
        with h5py.File(out / f"{name}.h5", "w") as f:
            for key, data in (("label", label), ("sen1", sen1), ("sen2", sen2)):
                f.create_dataset(key, data=data, compression="gzip", compression_opts=9)
    for folder in SO2SAT_V3_FOLDERS:
        (out / folder).mkdir(exist_ok=True)
        for name in ("training", "testing"):
            shutil.copyfile(out / f"{name}.h5", out / folder / f"{name}.h5")


def _rgb(rng: np.random.Generator, size: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), "RGB")


def _label(rng: np.random.Generator, size: int) -> Image.Image:
    mask = rng.integers(0, 2, (size, size, 3), dtype=np.uint8) * 255
    return Image.fromarray(mask, "RGB").convert("L")


def _write_levircd(out: Path, rng: np.random.Generator) -> None:
    for folder in LEVIRCD_FOLDERS:
        (out / folder).mkdir(parents=True, exist_ok=True)
    names = [f"{split}_{k}.png" for split in LEVIRCD_MEMBER_ORDER for k in range(SAMPLES)]
    for split in LEVIRCD_SPLITS:  # 1x1 placeholders until a split is generated
        for k in range(SAMPLES):
            for folder in LEVIRCD_FOLDERS:
                image = _label(rng, 1) if folder == "label" else _rgb(rng, 1)
                image.save(out / folder / f"{split}_{k}.png")
    for split in LEVIRCD_SPLITS:
        for k in range(SAMPLES):
            for folder in LEVIRCD_FOLDERS:
                image = _label(rng, SIZE) if folder == "label" else _rgb(rng, SIZE)
                image.save(out / folder / f"{split}_{k}.png")
        with zipfile.ZipFile(out / f"{split}.zip", "w") as zf:
            for folder in LEVIRCD_FOLDERS:
                for name in names:
                    zf.write(out / folder / name, f"{folder}/{name}")


def _image(data: bytes) -> tuple[str, tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as im:
        return im.mode, im.size


def describe(root: str | Path, subtree: str = "") -> dict[str, object]:
    """Names, keys, dtypes, shapes (and compression, PNG modes, zip members) of a tree.

    Args:
        root: the tree.
        subtree: only files under this relative folder (e.g. ``"so2sat"``).

    Returns:
        ``{relative path: description}``: for ``.h5`` a dict key -> (shape, dtype, compression,
        level); for ``.png`` (mode, (width, height)); for ``.zip`` the list of members with their
        (mode, size).
    """
    root = Path(root)
    out: dict[str, object] = {}
    for path in sorted((root / subtree).rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_dir() or path.name.startswith("."):
            continue
        if path.suffix == ".h5":
            with h5py.File(path, "r") as f:
                out[rel] = {k: (f[k].shape, str(f[k].dtype), f[k].compression, f[k].compression_opts) for k in f}
        elif path.suffix == ".png":
            out[rel] = _image(path.read_bytes())
        elif path.suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                out[rel] = [(info.filename, *_image(zf.read(info))) for info in zf.infolist()]
        else:
            out[rel] = "file"
    return out
