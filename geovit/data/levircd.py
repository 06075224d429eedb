"""LEVIR-CD (and WHU-CD / CLCD) bitemporal change-detection pairs, in every layout users have.

LEVIR-CD (Chen & Shi, *Remote Sensing* 12(10):1662, 2020, doi:10.3390/rs12101662): 637 pairs of
1024x1024 RGB Google-Earth images at 0.5 m over Texas (2002-2018), split 445 / 64 / 128, with
building-change masks (0 = no change, 255 = change). See ``data_cards/levir_cd.md``.

Layouts read (detected in this order, see :func:`find_pairs`):

1. **folders per split** (original release, open-cd ``data/LEVIR-CD``, ChangeViT ``levir_cd_256``,
   CLCD with ``time1``/``time2``): ``root/{split}/{A,B,label}/<name>.png``;
2. **flat with lists** (BIT / ChangeFormer / open-cd ``LEVIR-CD-256``, ``WHU-CD-256``):
   ``root/{A,B,label}/<name>`` with the names in ``root/list/{split}.txt``;
3. **torchgeo** (``torchgeo.datasets.LEVIRCD``): ``root/{A,B,label}/{split}_{k}.png``, all splits in
   the same folders; when they are missing, ``root/{split}.zip`` is extracted (safely: no absolute
   or ``..`` member paths; only the files of that split; each file renamed into place).

Pairs are listed in the code-point order of their file names, the order of torchgeo's
``sorted(glob(...))`` (``train_10`` before ``train_2``), so sample ``k`` of a split is torchgeo's
sample ``k``; the list-file layout keeps the order of its list.

A sample is ``{"image": float32 (2, 3, H, W) (t1 then t2, values 0-255), "mask": int64 (H, W) in
{0, 1}}``. The image is torchgeo's; torchgeo's mask has an extra leading axis, ``(1, H, W)`` (for
kornia's ``VideoSequential``): ``sample["mask"][None]`` gives it. geovit's tiling, augmentation
and training code work on ``(H, W)`` masks. Labels must hold only {0, 255} (or {0, 1});
``labels="nonzero"`` instead maps every non-zero value to change, the rule of torchgeo
(``clamp(0, 1)``) and of the ChangeViT code (``ceil(label / 255)``). The default ``labels="auto"``
reads torchgeo's layout with torchgeo's rule (so its files load exactly as torchgeo loads them)
and every other layout strictly.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from geovit.errors import DataError, GeovitError

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".bmp")
#: accepted names of the (t1, t2, label) folders: LEVIR/WHU/open-cd use A/B, CLCD time1/time2.
FOLDER_NAMES = (("A", "B", "label"), ("time1", "time2", "label"))


@dataclass(frozen=True)
class Pair:
    """One bitemporal sample on disk: before (t1), after (t2) and label files."""

    t1: Path
    t2: Path
    label: Path


# ----------------------------------------------------------------------------------- layouts
def _image_files(folder: Path, prefix: str = "") -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir())
            if p.suffix.lower() in IMAGE_SUFFIXES and p.name.startswith(prefix) and not p.name.startswith(".")}


def _match_partners(folders: Sequence[Path], names: Sequence[str] | None, prefix: str = "") -> list[Pair]:
    """Pair files by identical name across (t1, t2, label) folders; name every missing partner.

    Without ``names`` the pairs come in the code-point order of the names (torchgeo's order).
    """
    listing = [_image_files(f, prefix) for f in folders]
    if names is None:
        names = sorted(set().union(*listing))
    missing = [str(f / n) for n in names for f, files in zip(folders, listing) if n not in files]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"missing partner files (every image needs the same name in "
                        f"{'/'.join(f.name for f in folders)}): {shown}")
    return [Pair(*(files[n] for files in listing)) for n in names]


def _triplet(base: Path) -> tuple[Path, Path, Path] | None:
    for names in FOLDER_NAMES:
        dirs = tuple(base / n for n in names)
        if all(d.is_dir() for d in dirs):
            return dirs
    return None


def _split_dir(root: Path, split: str) -> Path | None:
    for name in (split, split.capitalize()):  # ChangeViT's README writes Train/Val/Test
        if (root / name).is_dir():
            return root / name
    return None


def extract_split_zip(archive: Path, root: Path, split: str) -> int:
    """Extract the ``{A,B,label}/{split}_*`` members of a torchgeo LEVIR-CD zip into ``root``.

    Members with absolute paths or ``..`` components are refused. Each file is written to a
    temporary folder inside ``root`` and renamed into place, so an interrupted extraction never
    leaves a truncated PNG. Returns the number of files extracted.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise DataError(f"{archive}: not a readable zip archive") from None
    with zf, tempfile.TemporaryDirectory(prefix=".extract-", dir=root) as tmp:
        count = 0
        for info in zf.infolist():
            member = PurePosixPath(info.filename)
            if member.is_absolute() or ".." in member.parts or "\\" in info.filename:
                raise DataError(f"{archive}: refusing unsafe member path {info.filename!r}")
            if info.is_dir() or len(member.parts) != 2 or not member.name.startswith(f"{split}_"):
                continue  # torchgeo's archives also hold placeholders of the other splits
            target = root.joinpath(*member.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            staged = Path(tmp) / f"{count}{member.suffix}"
            with zf.open(info) as src, open(staged, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(staged, target)
            count += 1
    if count == 0:
        raise DataError(f"{archive}: holds no {{A,B,label}}/{split}_*.png files")
    return count


def is_torchgeo_layout(root: str | os.PathLike, split: str) -> bool:
    """True when ``split`` is read from torchgeo's flat ``{A,B,label}/{split}_*`` layout."""
    root = Path(root)
    return _split_dir(root, split) is None and not (root / "list" / f"{split}.txt").is_file()


def find_pairs(root: str | os.PathLike, split: str, *, extract: bool = True) -> list[Pair]:
    """List the (t1, t2, label) files of ``split`` under ``root`` in any supported layout.

    Args:
        root: dataset folder.
        split: ``"train"``, ``"val"`` or ``"test"``.
        extract: extract ``root/{split}.zip`` (torchgeo layout) when the split's files are absent.

    Returns:
        The pairs, in the code-point order of their names (torchgeo's ``sorted(glob(...))``
        order), or in the order of ``root/list/{split}.txt`` for the list-file layout.

    Raises:
        GeovitError: unknown ``split``.
        DataError: no layout found, partner files missing, or no pairs.
    """
    root = Path(root)
    if split not in SPLITS:
        raise GeovitError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    split_dir = _split_dir(root, split)
    if split_dir is not None:
        dirs = _triplet(split_dir)
        if dirs is None:
            raise DataError(f"{split_dir}: expected sub-folders A, B, label (or time1, time2, label)")
        pairs = _match_partners(dirs, None)
    else:
        dirs = _triplet(root)
        list_file = root / "list" / f"{split}.txt"
        if dirs is not None and list_file.is_file():
            names = [ln.strip() for ln in list_file.read_text().splitlines() if ln.strip()]
            pairs = _match_partners(dirs, names)
        else:
            archive = root / f"{split}.zip"
            has_split = dirs is not None and any(dirs[0].glob(f"{split}_*"))
            if not has_split and extract and archive.is_file():
                extract_split_zip(archive, root, split)
                dirs = _triplet(root)
            if dirs is None:
                raise DataError(
                    f"{root}: no LEVIR-CD layout found for split {split!r}; expected {root}/{split}/{{A,B,label}}/, "
                    f"{root}/{{A,B,label}}/ with {root}/list/{split}.txt, or torchgeo's "
                    f"{root}/{{A,B,label}}/{split}_*.png (or {archive.name})")
            pairs = _match_partners(dirs, None, prefix=f"{split}_")
    if not pairs:
        raise DataError(f"{root}: split {split!r} has no image pairs")
    return pairs


def check_headers(pairs: Sequence[Pair]) -> None:
    """Check, from the image headers alone, that every pair's t1, t2 and label have one size.

    Cheap (no pixel is decoded), so a mismatched pair is reported when the data set is opened,
    not when training first reaches that scene.

    Raises:
        DataError: naming the unreadable file, or the pair whose sizes differ.
    """
    for pair in pairs:
        sizes = []
        for path in (pair.t1, pair.t2, pair.label):
            try:
                with Image.open(path) as im:
                    sizes.append(im.size)
            except (OSError, SyntaxError) as err:  # PIL raises SyntaxError for some broken headers
                raise DataError(f"{path}: not a readable image ({err})") from None
        if len(set(sizes)) > 1:
            (w1, h1), (w2, h2), (wl, hl) = sizes
            raise DataError(f"size mismatch: {pair.t1} is {w1}x{h1}, {pair.t2} is {w2}x{h2} and label {pair.label} "
                            f"is {wl}x{hl}; a pair's images and label must have one size")


# ----------------------------------------------------------------------------------- reading
def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 array of an RGB image file; anything else is a :class:`DataError`."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = np.asarray(im)
    except OSError as err:
        raise DataError(f"{path}: not a readable image ({err})") from None
    if mode != "RGB" or arr.ndim != 3 or arr.shape[2] != 3:
        raise DataError(f"{path}: expected an 8-bit RGB image, got mode {mode!r} with shape {arr.shape}")
    return arr


def read_label(path: Path, labels: str = "strict") -> np.ndarray:
    """(H, W) int64 array in {0, 1} from a 0/255 (or 0/1) label image."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except OSError as err:
        raise DataError(f"{path}: not a readable label image ({err})") from None
    if arr.ndim == 3:  # some copies store grey labels as RGB
        if not (arr == arr[..., :1]).all():
            raise DataError(f"{path}: label has {arr.shape[2]} differing channels; expected a single-channel 0/255 mask")
        arr = arr[..., 0]
    if labels == "nonzero":
        return (arr > 0).astype(np.int64)
    if labels != "strict":
        raise GeovitError(f"labels={labels!r}: expected 'strict' or 'nonzero'")
    values = np.unique(arr)
    if np.isin(values, (0, 255)).all():
        return (arr == 255).astype(np.int64)
    if np.isin(values, (0, 1)).all():
        return arr.astype(np.int64)
    shown = ", ".join(str(v) for v in values[:8]) + (" ..." if len(values) > 8 else "")
    raise DataError(f"{path}: label values {{{shown}}} are not in {{0, 255}}; "
                    "use labels='nonzero' (CLI: --labels nonzero) to count every non-zero pixel as change")


def load_pair(pair: Pair, labels: str = "strict") -> dict[str, torch.Tensor]:
    """Read one pair into a sample dict, checking that t1, t2 and label have the same size."""
    a, b = read_rgb(pair.t1), read_rgb(pair.t2)
    if a.shape != b.shape:
        raise DataError(f"size mismatch: {pair.t1} is {a.shape[1]}x{a.shape[0]} but {pair.t2} is {b.shape[1]}x{b.shape[0]}")
    mask = read_label(pair.label, labels)
    if mask.shape != a.shape[:2]:
        raise DataError(f"size mismatch: label {pair.label} is {mask.shape[1]}x{mask.shape[0]} "
                        f"but {pair.t1} is {a.shape[1]}x{a.shape[0]}")
    image = torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2).float()
    return {"image": image, "mask": torch.from_numpy(mask)}


class LEVIRCD(torch.utils.data.Dataset):
    """LEVIR-CD change-detection pairs (any layout of the module docstring).

    Samples are ``{"image": float32 (2, 3, H, W), "mask": int64 (H, W)}``; torchgeo's
    ``LEVIRCD`` returns the same image and pair order, and its mask as ``(1, H, W)``
    (``sample["mask"][None]``).

    Args:
        root: dataset folder.
        split: ``"train"``, ``"val"`` or ``"test"``.
        transforms: callable on the sample dict (see :mod:`geovit.data.change_transforms`).
        labels: ``"strict"`` (labels must be 0/255 or 0/1, else :class:`DataError`),
            ``"nonzero"`` (every non-zero pixel is change, as torchgeo and ChangeViT read them), or
            ``"auto"`` (default: ``"nonzero"`` for torchgeo's layout, ``"strict"`` otherwise).
        extract: extract ``root/{split}.zip`` (torchgeo layout) when the split's files are absent.
    """

    #: expected number of 1024x1024 pairs per split of the real release
    split_sizes = {"train": 445, "val": 64, "test": 128}

    def __init__(self, root: str | os.PathLike = "data", split: str = "train", *,
                 transforms: Callable[[dict], dict] | None = None, labels: str = "auto", extract: bool = True):
        if labels not in ("auto", "strict", "nonzero"):
            raise GeovitError(f"labels={labels!r}: expected 'auto', 'strict' or 'nonzero'")
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        self.pairs = find_pairs(self.root, split, extract=extract)
        check_headers(self.pairs)
        if labels == "auto":
            labels = "nonzero" if is_torchgeo_layout(self.root, split) else "strict"
        self.labels = labels

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self.pairs):
            raise IndexError(f"index {index} out of range for {len(self.pairs)} {self.split} pairs")
        sample = load_pair(self.pairs[index], self.labels)
        return self.transforms(sample) if self.transforms is not None else sample

    def scene_size(self) -> tuple[int, int]:
        """(H, W) of the first pair (LEVIR-CD scenes all share one size)."""
        with Image.open(self.pairs[0].t1) as im:
            return im.height, im.width

    @staticmethod
    def plot(sample: dict, *, show_titles: bool = True, suptitle: str | None = None):
        """Figure with t1, t2, ground truth and (if present) ``prediction``; image values 0-255."""
        return plot_change_grid([sample], show_titles=show_titles, suptitle=suptitle)


class WHUCD(LEVIRCD):
    """WHU building change detection (Ji et al., IEEE TGRS 57(1), 2019), cut into 256 tiles.

    Usual layout (open-cd ``WHU-CD-256``, BIT): ``root/{A,B,label}/<name>`` with
    ``root/list/{train,val,test}.txt``; folder-per-split copies also load. Labels 0/255.
    """

    split_sizes = {"train": 6096, "val": 762, "test": 762}


class CLCD(LEVIRCD):
    """CLCD cropland change detection (Liu et al., IEEE JSTARS 15, 2022): 600 Gaofen-2 pairs of 512x512.

    open-cd layout ``root/{train,val,test}/{time1,time2,label}/*.png`` (A/B folder names also load).
    """

    split_sizes = {"train": 360, "val": 120, "test": 120}


# ----------------------------------------------------------------------------------- plotting
def plot_change_grid(samples: Sequence[dict], *, show_titles: bool = True, suptitle: str | None = None):
    """One row per sample: t1 | t2 | ground truth | prediction (when ``prediction`` is present).

    ``image`` holds raw 0-255 values (2, 3, H, W); ``mask``/``prediction`` are (H, W) in {0, 1}
    or probabilities.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = 4 if any("prediction" in s for s in samples) else 3
    fig, axes = plt.subplots(len(samples), cols, figsize=(3 * cols, 3 * len(samples)), squeeze=False)
    titles = ("t1 (before)", "t2 (after)", "ground truth", "prediction")
    for row, sample in zip(axes, samples):
        img = sample["image"].detach().cpu().float()
        panels = [img[0].permute(1, 2, 0).clamp(0, 255).numpy() / 255, img[1].permute(1, 2, 0).clamp(0, 255).numpy() / 255,
                  sample["mask"].detach().cpu().float().numpy()]
        if cols == 4:
            pred = sample.get("prediction")
            panels.append(pred.detach().cpu().float().numpy() if pred is not None else np.zeros_like(panels[2]))
        for ax, panel, title in zip(row, panels, titles):
            ax.imshow(panel, cmap=None if panel.ndim == 3 else "gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_axis_off()
            if show_titles:
                ax.set_title(title)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------- synthetic
def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth ground texture (H, W, 3) float in 0-255: soil/grass colours plus low-frequency noise."""
    from scipy.ndimage import zoom

    coarse = rng.normal(size=(size // 16 + 2, size // 16 + 2, 1))
    up = zoom(coarse, (16, 16, 1), order=1)[:size, :size]
    base = np.array([110.0, 120.0, 85.0]) + rng.normal(0, 8, size=3)
    return np.clip(base + 18 * up + rng.normal(0, 4, size=(size, size, 3)), 0, 255)


def _buildings(rng: np.random.Generator, size: int, count: int, taken: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Axis-aligned building footprints (y0, x0, y1, x1) not touching ``taken`` pixels."""
    boxes = []
    for _ in range(count * 10):
        if len(boxes) == count:
            break
        h, w = (int(v) for v in rng.integers(max(4, size // 32), max(6, size // 8), size=2))
        y0, x0 = (int(v) for v in rng.integers(0, size - max(h, w), size=2))
        if not taken[max(0, y0 - 2):y0 + h + 2, max(0, x0 - 2):x0 + w + 2].any():
            taken[y0:y0 + h, x0:x0 + w] = True
            boxes.append((y0, x0, y0 + h, x0 + w))
    return boxes


def _paint(img: np.ndarray, boxes, rng: np.random.Generator) -> None:
    for y0, x0, y1, x1 in boxes:
        roof = rng.choice([[200, 200, 205], [170, 80, 60], [90, 100, 120], [230, 225, 210]]) + rng.normal(0, 6, 3)
        img[y0:y1, x0:x1] = roof
        img[y1 - max(1, (y1 - y0) // 5):y1, x0:x1] *= 0.7  # shaded side


def write_synthetic(out_dir: str | os.PathLike, *, num_samples: int | None = None, seed: int = 0,
                    size: int = 256) -> Path:
    """Write SYNTHETIC LEVIR-CD-format pairs: buildings that appear between t1 and t2.

    Layout of the original release: ``out_dir/{train,val,test}/{A,B,label}/{split}_{k}.png``
    (RGB uint8 PNGs, single-channel 0/255 labels). ``num_samples`` pairs in total (default 12),
    split 60/20/20 with at least one pair per split. t2 repaints t1's ground with small colour and
    illumination changes (no change) and adds new buildings (change). Returns ``out_dir``.
    """
    out = Path(out_dir)
    total = 12 if num_samples is None else int(num_samples)
    if total < 3:
        raise GeovitError(f"num_samples={total}: need at least 3 (one pair per split)")
    if size < 32:
        raise GeovitError(f"size={size}: need at least 32 pixels")
    n_val = n_test = max(1, round(0.2 * total))
    counts = {"train": total - n_val - n_test, "val": n_val, "test": n_test}
    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        dirs = [out / split / d for d in ("A", "B", "label")]
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        for k in range(n):
            taken = np.zeros((size, size), bool)
            t1 = _texture(rng, size)
            _paint(t1, _buildings(rng, size, int(rng.integers(2, 6)), taken), rng)
            t2 = np.clip(t1 * rng.uniform(0.9, 1.1) + rng.normal(0, 3, size=t1.shape), 0, 255)
            new = _buildings(rng, size, int(rng.integers(2, 7)), taken.copy())
            _paint(t2, new, rng)
            label = np.zeros((size, size), np.uint8)
            for y0, x0, y1, x1 in new:
                label[y0:y1, x0:x1] = 255
            name = f"{split}_{k + 1}.png"
            for d, arr in zip(dirs, (t1, t2, label)):
                _save_png(d / name, arr.astype(np.uint8))
    return out


def _save_png(path: Path, arr: np.ndarray) -> None:
    from geovit._io import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
