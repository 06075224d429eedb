"""Readers for the fluid data VICON trains on: PDEArena NavierStokes-2D and PDEBench 2D CFD.

Every trajectory is packed into VICON's fixed channel slots (specs/vicon.md §2)::

    SLOTS = (density, vx, vy, pressure, vorticity, scalar, node_type)

with a per-dataset **channel mask** (1 = the dataset fills the slot). The node-type slot marks
boundary pixels (1) — PDEArena's closed box has a one-pixel wall on every side, PDEBench is
periodic (all 0) — and is never a target.

On-disk layouts (see ``data_cards/pdearena_ns2d.md`` and ``data_cards/pdebench_cfd2d.md``):

* **PDEArena** ``NavierStokes2D_{split}_{seed}_{buoyancy}[_{n}].h5``: one group named after the
  split holding ``u`` (smoke), ``vx``, ``vy`` of shape (N, T, X, Y) plus ``t`` (N, T), ``x`` (N, X),
  ``y`` (N, Y), ``dt``, ``dx``, ``dy``, ``buo_y`` (N,). A file belongs to a split when the split
  name is in its file name.
* **PDEBench 2D CFD** ``2D_CFD_{Rand|Turb}_M…_Eta…_Zeta…_periodic_{res}_Train.hdf5``: top-level
  ``density``, ``Vx``, ``Vy``, ``pressure`` (N, T, X, Y) and ``x-coordinate``, ``y-coordinate``,
  ``t-coordinate``. Original files carry no split; trajectories are split 80/10/10 by index.
* **VICON re-chunked** ``{split}/{i}.h5`` folders with the PDEBench keys.
* Any file may carry ``dropped_mask`` (N, T) bool (True = frame unavailable) for the
  dropped-frame rollout.

Reads are lazy: the index stores (file, trajectory) pairs; frames are read on demand through
h5py handles opened once per process (DataLoader workers open their own). Everything is
validated when the index is built (keys, ranks, shapes, frame counts, channel masks) and each
read is checked for non-finite values; problems raise :class:`geovit.DataError` naming the file,
the key and what was expected.

Public API::

    spec = SPECS["pdearena_ns2d"]                  # or "pdebench_cfd2d"
    ds = TrajectoryDataset(root, split="test", channels=None, frame_size=None, min_frames=11)
    item = ds[i]   # {"frames": (T, 7, H, W) float32, "channel_mask": (7,), "dropped": (T,) bool,
                   #  "dataset": name, "file": path, "index": n}
    pr = PromptDataset(root, split="train", num_pairs=10, max_stride=5, ...)
    item = pr[i]   # {"cond": (pairs, 7, H, W), "qoi": (pairs, 7, H, W), "channel_mask": (7,),
                   #  "stride": (), "t_cond": (pairs,)}   (QoI times = t_cond + stride)
    loaders = multi_dataset_loaders([pr_a, pr_b], batch_size=8)   # dict name -> DataLoader
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from geovit.data.checks import require_real_numeric
from geovit.errors import DataError

#: VICON's fixed physical channel slots; the last one is the node type.
SLOTS: tuple[str, ...] = ("density", "vx", "vy", "pressure", "vorticity", "scalar", "node_type")
SPLITS: tuple[str, ...] = ("train", "valid", "test")
#: PDEBench original files carry no split: trajectory fractions (VICON: 80/10/10).
SPLIT_FRACTIONS: dict[str, tuple[float, float]] = {"train": (0.0, 0.8), "valid": (0.8, 0.9), "test": (0.9, 1.0)}


@dataclass(frozen=True)
class DatasetSpec:
    """How one data family maps its HDF5 keys onto VICON's channel slots."""

    name: str
    #: slot name -> HDF5 dataset key
    fields: dict[str, str]
    #: True when the outermost pixel ring is a wall (node type 1)
    walls: bool
    description: str = ""
    coordinate_keys: tuple[str, ...] = field(default=())

    @property
    def channel_mask(self) -> tuple[int, ...]:
        """0/1 per slot of ``SLOTS``: 1 where the data set has that field."""
        return tuple(int(s in self.fields) for s in SLOTS)


SPECS: dict[str, DatasetSpec] = {
    "pdearena_ns2d": DatasetSpec(
        "pdearena_ns2d", {"vx": "vx", "vy": "vy", "scalar": "u"}, walls=True,
        description="PDEArena NavierStokes-2D (buoyancy-driven smoke, closed box)",
        coordinate_keys=("t", "x", "y", "buo_y"),
    ),
    "pdebench_cfd2d": DatasetSpec(
        "pdebench_cfd2d", {"density": "density", "vx": "Vx", "vy": "Vy", "pressure": "pressure"}, walls=False,
        description="PDEBench 2D CFD (compressible Navier-Stokes, periodic)",
        coordinate_keys=("x-coordinate", "y-coordinate", "t-coordinate"),
    ),
}

class SplitNotFound(DataError):
    """The folder is readable but holds no trajectory of the requested split."""


PDEARENA_PATTERN = re.compile(r"^NavierStokes2D_(train|valid|test)_.*\.h5$")


def channel_mask_for(spec: DatasetSpec, channels: Sequence[str] | Sequence[int] | None, where: str) -> np.ndarray:
    """The dataset's channel mask, optionally narrowed to ``channels`` (slot names or a 0/1 mask)."""
    base = np.asarray(spec.channel_mask, dtype=np.float32)
    if channels is None:
        return base
    channels = list(channels)
    if channels and all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in channels):
        if len(channels) != len(SLOTS) or set(channels) - {0, 1}:
            raise DataError(f"{where}: channel mask {channels}: expected {len(SLOTS)} zeros/ones for slots {SLOTS}")
        wanted = np.asarray(channels, dtype=np.float32)
    else:
        unknown = [c for c in channels if str(c) not in SLOTS[:-1]]
        if unknown:
            raise DataError(f"{where}: unknown channel slot(s) {unknown}; expected some of {SLOTS[:-1]}")
        wanted = np.asarray([float(s in channels) for s in SLOTS], dtype=np.float32)
    mask = base * wanted
    mask[-1] = 0.0
    if mask.sum() == 0:
        raise DataError(
            f"{where}: channel mask {[int(x) for x in wanted]} matches no field of {spec.name} "
            f"(it fills slots {sorted(spec.fields)} of {SLOTS[:-1]})"
        )
    return mask


# ---------------------------------------------------------------------------- discovery
@dataclass(frozen=True)
class _Source:
    """One HDF5 file (and group) contributing trajectories ``[start, stop)`` of one spec."""

    path: str
    group: str  # "" for top-level keys
    spec: str
    start: int
    stop: int
    shape: tuple[int, int, int, int]
    has_dropped: bool


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _h5(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 file ({err})") from None


def _detect(f, split: str) -> tuple[str, str] | None:
    """(spec name, group) for an open file, or None."""
    arena = SPECS["pdearena_ns2d"].fields.values()
    bench = SPECS["pdebench_cfd2d"].fields.values()
    if split in f and hasattr(f[split], "keys") and any(k in f[split] for k in arena):
        return "pdearena_ns2d", split
    if any(k in f for k in bench):
        return "pdebench_cfd2d", ""
    return None


def _validate(path: Path, f, spec: DatasetSpec, group: str, min_frames: int) -> tuple[tuple[int, int, int, int], bool]:
    g = f[group] if group else f
    prefix = f"{group}/" if group else ""
    shape = None
    for slot, key in spec.fields.items():
        if key not in g:
            raise DataError(
                f"{path}: missing key '{prefix}{key}' ({slot}); a {spec.description} file holds "
                f"{', '.join(prefix + k for k in spec.fields.values())} of shape (N, T, X, Y)"
            )
        ds = g[key]
        require_real_numeric(path, prefix + key, ds.dtype, "float32 or float64")
        if ds.ndim != 4:
            raise DataError(f"{path}: key '{prefix}{key}' has shape {ds.shape} (rank {ds.ndim}); expected rank 4 (N, T, X, Y)")
        if shape is None:
            shape = tuple(int(s) for s in ds.shape)
        elif tuple(ds.shape) != shape:
            raise DataError(f"{path}: key '{prefix}{key}' has shape {ds.shape}; expected {shape} like the other fields")
    if shape[0] == 0:
        raise DataError(f"{path}: key '{prefix}{next(iter(spec.fields.values()))}' holds 0 trajectories; expected N ≥ 1")
    if shape[1] < min_frames:
        raise DataError(
            f"{path}: key '{prefix}{next(iter(spec.fields.values()))}' has {shape[1]} frames per trajectory; "
            f"the prompt needs at least {min_frames}"
        )
    has_dropped = "dropped_mask" in g
    if has_dropped and tuple(g["dropped_mask"].shape) != shape[:2]:
        raise DataError(f"{path}: key '{prefix}dropped_mask' has shape {g['dropped_mask'].shape}; expected (N, T) = {shape[:2]}")
    return shape, has_dropped


def discover(root: str | os.PathLike, split: str, min_frames: int = 2) -> list[_Source]:
    """Find and validate the trajectories of ``split`` under ``root`` (folder or single file)."""
    if split not in SPLITS:
        raise DataError(f"split {split!r}: expected one of {SPLITS}")
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data folder not found")
    whole_file = False  # True: every trajectory of a file belongs to the split (VICON folders)
    if root.is_file():
        files = [root]
    elif any(PDEARENA_PATTERN.match(p.name) for p in root.iterdir()):
        files = sorted((p for p in root.iterdir() if PDEARENA_PATTERN.match(p.name) and f"_{split}_" in p.name),
                       key=_natural_key)
    elif (root / split).is_dir():
        files = sorted((root / split).glob("*.h5"), key=_natural_key)
        whole_file = True
    else:
        files = sorted([*root.glob("*.hdf5"), *root.glob("*.h5")], key=_natural_key)
    if not files:
        raise SplitNotFound(
            f"{root}: no {split} data found; expected PDEArena shards NavierStokes2D_{split}_*.h5, "
            f"a VICON folder {split}/*.h5, or PDEBench 2D CFD .hdf5 files"
        )
    sources = []
    for path in files:
        with _h5(path) as f:
            found = _detect(f, split)
            if found is None and PDEARENA_PATTERN.match(path.name):
                raise DataError(f"{path}: a PDEArena shard without the group '{split}' (groups: {sorted(f.keys())}); "
                                f"each shard holds one split, named in its file name")
            if found is None:
                raise DataError(
                    f"{path}: neither a PDEArena NavierStokes2D file (group '{split}' with u, vx, vy) nor a "
                    f"PDEBench 2D CFD file (density, Vx, Vy, pressure); keys present: {sorted(f.keys())}"
                )
            name, group = found
            spec = SPECS[name]
            shape, has_dropped = _validate(path, f, spec, group, min_frames)
        n = shape[0]
        if name == "pdebench_cfd2d" and not whole_file:
            lo, hi = SPLIT_FRACTIONS[split]
            start, stop = int(round(lo * n)), int(round(hi * n))
        else:
            start, stop = 0, n
        if stop > start:
            sources.append(_Source(str(path), group, name, start, stop, shape, has_dropped))
    if not sources:
        raise SplitNotFound(f"{root}: the {split} split is empty (too few trajectories for an 80/10/10 split)")
    specs = {s.spec for s in sources}
    if len(specs) > 1:
        raise DataError(f"{root}: mixes {sorted(specs)} files; give each data set as its own --data folder")
    sizes = {s.shape[1:] for s in sources}
    if len(sizes) > 1:
        raise DataError(f"{root}: files disagree on (T, X, Y): {sorted(sizes)}; expected one resolution per data set")
    return sources


# ---------------------------------------------------------------------------- datasets
class TrajectoryDataset(Dataset):
    """Whole trajectories packed into VICON's channel slots (lazy, one HDF5 read per field).

    ``frame_size``: average-pool frames down to this size (VICON pools PDEBench 512² by 4×4 to 128²);
    it must divide the stored size. ``min_frames``: trajectories shorter than this are an error.
    """

    def __init__(
        self, root: str | os.PathLike, split: str = "train", *, channels=None,
        frame_size: int | None = None, min_frames: int = 2, dtype: torch.dtype = torch.float32,
    ):
        self.root = str(root)
        self.split = split
        self.sources = discover(root, split, min_frames=min_frames)
        self.spec = SPECS[self.sources[0].spec]
        self.channel_mask = channel_mask_for(self.spec, channels, f"--data {root}")
        T, X, Y = self.sources[0].shape[1:]
        if X != Y:
            raise DataError(f"{self.sources[0].path}: frames are {X}x{Y}; VICON needs square frames")
        self.num_frames = T
        self.stored_size = X
        self.frame_size = X if frame_size is None else int(frame_size)
        if self.frame_size <= 0 or X % self.frame_size:
            raise DataError(f"{self.sources[0].path}: frames of {X}x{X} cannot be average-pooled to "
                            f"{self.frame_size}x{self.frame_size} (expected a divisor of {X})")
        self.dtype = dtype
        self._offsets = np.cumsum([0] + [s.stop - s.start for s in self.sources])
        self._handles: dict[str, object] = {}
        self._pid = os.getpid()

    @property
    def name(self) -> str:
        """``<spec name>:<folder name>``, the name used in logs and error messages."""
        return f"{self.spec.name}:{Path(self.root).name}"

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getstate__(self):  # DataLoader workers open their own handles
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def _group(self, source: _Source):
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        f = self._handles.get(source.path)
        if f is None:
            f = self._handles[source.path] = _h5(Path(source.path))
        return f[source.group] if source.group else f

    def locate(self, index: int) -> tuple[_Source, int]:
        """The source file and its trajectory index holding trajectory ``index`` of the whole set.

        Raises:
            IndexError: ``index`` outside ``[0, len(self))``.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"trajectory {index} out of range for {len(self)} trajectories")
        k = int(np.searchsorted(self._offsets, index, side="right")) - 1
        source = self.sources[k]
        return source, source.start + index - int(self._offsets[k])

    def read(self, index: int, times: Sequence[int] | None = None) -> torch.Tensor:
        """Frames ``(len(times) or T, C, H, W)`` of trajectory ``index`` in channel-slot layout."""
        source, n = self.locate(index)
        g = self._group(source)
        if times is None:
            sel, back = slice(None), None
            count = self.num_frames
        else:
            uniq, back = np.unique(np.asarray(times, dtype=np.int64), return_inverse=True)
            sel, count = list(uniq), len(uniq)
        X = self.stored_size
        out = np.zeros((count, len(SLOTS), X, X), dtype=np.float32)
        for slot, key in self.spec.fields.items():
            c = SLOTS.index(slot)
            if self.channel_mask[c] == 0:
                continue
            arr = np.asarray(g[key][n, sel], dtype=np.float64)
            if not np.all(np.isfinite(arr)):
                bad = int(np.argwhere(~np.isfinite(arr).reshape(arr.shape[0], -1).all(axis=1))[0, 0])
                raise DataError(
                    f"{source.path}: key '{source.group + '/' if source.group else ''}{key}' trajectory {n} has "
                    f"non-finite values (NaN/inf) at frame {bad if times is None else int(sel[bad])}; expected finite fields"
                )
            out[:, c] = arr
        frames = torch.from_numpy(out)
        factor = X // self.frame_size
        if factor > 1:
            frames = torch.nn.functional.avg_pool2d(frames, factor)
        if self.spec.walls:
            frames[:, -1] = 0.0
            frames[:, -1, 0, :] = frames[:, -1, -1, :] = 1.0
            frames[:, -1, :, 0] = frames[:, -1, :, -1] = 1.0
        if back is not None:
            frames = frames[torch.from_numpy(back)]
        return frames.to(self.dtype)

    def dropped(self, index: int) -> torch.Tensor:
        """``(T,)`` bool, True where the frame is unavailable (all False without ``dropped_mask``)."""
        source, n = self.locate(index)
        if not source.has_dropped:
            return torch.zeros(self.num_frames, dtype=torch.bool)
        return torch.from_numpy(np.asarray(self._group(source)["dropped_mask"][n], dtype=bool))

    def __getitem__(self, index: int) -> dict:
        source, n = self.locate(index)
        return {
            "frames": self.read(index),
            "channel_mask": torch.from_numpy(self.channel_mask.copy()),
            "dropped": self.dropped(index),
            "dataset": self.spec.name,
            "file": source.path,
            "index": n,
        }


class PromptDataset(TrajectoryDataset):
    """Training prompts: each item draws one stride and sorted COND times (official sampling).

    Only the frames a prompt uses are read. Item ``i`` draws from a generator seeded by
    ``(seed, i)``, so an item is the same prompt in every process and run; a training sampler
    passes ``(i, draw_seed)`` instead (:class:`geovit.data.samplers.CycleSampler` with
    ``draw_seeds=True``) so that each epoch draws new prompts, still independent of what ran
    before — which is what makes a resumed run draw what the uninterrupted one would have.
    """

    def __init__(self, root, split: str = "train", *, num_pairs: int = 10, max_stride: int = 5,
                 seed: int = 0, **kwargs):
        kwargs.setdefault("min_frames", max_stride + 1)
        super().__init__(root, split, **kwargs)
        self.num_pairs, self.max_stride, self.seed = num_pairs, max_stride, seed

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        from geovit.data.samplers import mix_seed
        from pdes.losses import sample_prompt_times

        if isinstance(index, tuple):
            index, draw_seed = (int(v) for v in index)
        else:
            index = int(index)
            draw_seed = mix_seed(self.seed, index)
        t_cond, t_qoi, stride = sample_prompt_times(
            self.num_frames, self.num_pairs, self.max_stride, batch_size=1,
            generator=torch.Generator().manual_seed(draw_seed),
        )
        times = torch.cat([t_cond[0], t_qoi[0]]).tolist()
        frames = self.read(index, times)
        return {
            "cond": frames[: self.num_pairs],
            "qoi": frames[self.num_pairs:],
            "channel_mask": torch.from_numpy(self.channel_mask.copy()),
            "stride": stride[0],
            "t_cond": t_cond[0],
        }


def multi_dataset_loaders(
    datasets: Iterable[TrajectoryDataset], batch_size: int, *, shuffle: bool = True, num_workers: int = 0,
    seed: int = 0, drop_last: bool = False,
) -> dict[str, DataLoader]:
    """One DataLoader per data set, keyed by a unique name (each step takes one batch of each).

    Combine them with ``lightning.pytorch.utilities.CombinedLoader(loaders, "max_size_cycle")``:
    every step concatenates a mini-batch of every data set, balanced by data set, not by size
    (as the official training loop).
    """
    loaders: dict[str, DataLoader] = {}
    for i, ds in enumerate(datasets):
        key = f"{i}:{ds.name}"
        gen = torch.Generator().manual_seed(seed + i)
        loaders[key] = DataLoader(
            ds, batch_size=min(batch_size, len(ds)), shuffle=shuffle, num_workers=num_workers,
            generator=gen, drop_last=drop_last, persistent_workers=num_workers > 0,
        )
    return loaders


def check_same_frames(datasets: Sequence[TrajectoryDataset], frame_size: int) -> None:
    """Every data set must deliver ``frame_size``² frames (the model's patch grid × patch size)."""
    for ds in datasets:
        if ds.frame_size != frame_size:
            raise DataError(
                f"--data {ds.root}: frames are {ds.frame_size}x{ds.frame_size} but the model takes "
                f"{frame_size}x{frame_size} (num_patches * patch_size); set frame_size/num_patches/patch_size"
            )
