"""Maps and embeddings of whole scenes with per-window channel availability.

What channel-adaptive models are for (ChannelViT, Bao et al. ICLR 2024, §3.1: "inference with
any subset of channels"; ChA-MAEViT, specs/chamaevit.md §1: partial channel sets): sensors that
are missing in part of a scene — clouds over the optical bands, a SAR swath that does not
cover it. :func:`predict_scene` cuts a scene (:class:`geovit.geo.scene.Scene`) into windows of
the model's input size and, in every window, feeds the model only the bands that are usable
there (:class:`geovit.geo.scene.WindowPlan`: a band unusable over more than ``max_missing`` of
the window is dropped) with their absolute channel ids: ``model(x, channels=ids)``.

Windows are grouped by the set of channels they keep and run in batches of one set, so a
scene with a few distinct sets (clear, cloudy, outside the swath) costs a few batched calls
per chunk instead of one call per window.

Streaming: the window grid is processed in chunks of bounded memory (reads of one chunk of
the inputs, results written into the outputs block by block), so memory is flat in scene size.
Outputs are published atomically as tiled, compressed Cloud-Optimized GeoTIFFs on the window
grid (``map.tif``: band 1 class, uint8, nodata 255; band 2 channels used; optional per-class
probabilities) plus a PNG preview, or, for :func:`embed_scene`, as a zarr store.

Beyond one device: ``devices`` / ``num_nodes`` shard the chunks over ranks through Lightning's
predict loop (``trainer.predict``); every rank writes its chunks' results to its own folder
beside the output and rank 0 assembles one output, the same as a single-device run. Ranks must
share that folder's file system (one machine, or a shared file system across nodes).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from geovit.errors import GeovitError
from geovit.geo.scene import Chunk, Scene, WindowPlan
from geovit.geo.sliding_window import Progress
from geovit.predict.model import SceneModel, load_model

NODATA_CLASS = 255


# --------------------------------------------------------------------------------- one chunk
@dataclass
class ChunkResult:
    """What a chunk's windows produced (``rows x cols`` windows of the grid at ``(r0, c0)``).

    Attributes:
        index: chunk index in the plan.
        r0: first window row.
        c0: first window column.
        counts: uint8 ``(rows, cols)`` number of channels used (0: nodata window).
        keep: bool ``(rows, cols, bands)`` bands used by each window.
        classes: uint8 ``(rows, cols)`` class, 255 for nodata windows (classifiers).
        probs: float32 ``(classes, rows, cols)`` softmax, NaN for nodata windows.
        features: float32 ``(rows, cols, D)``, NaN for nodata windows.
        set_counts: windows per channel set (tuple of channel ids) run by the model.
        calls: model calls made.
    """

    index: int
    r0: int
    c0: int
    counts: np.ndarray
    keep: np.ndarray
    classes: np.ndarray | None = None
    probs: np.ndarray | None = None
    features: np.ndarray | None = None
    set_counts: dict[tuple[int, ...], int] = field(default_factory=dict)
    calls: int = 0

    def to_npz(self, path: Path) -> None:
        """Save (atomically) for rank 0 to assemble."""
        from geovit._io import atomic_path

        arrays = {k: v for k, v in (("counts", self.counts), ("keep", self.keep), ("classes", self.classes),
                                    ("probs", self.probs), ("features", self.features)) if v is not None}
        meta = json.dumps({"index": self.index, "r0": self.r0, "c0": self.c0, "calls": self.calls,
                           "sets": [[list(k), v] for k, v in self.set_counts.items()]})
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, meta=np.array(meta), **arrays)

    @classmethod
    def from_npz(cls, path: Path) -> "ChunkResult":
        """Load what :meth:`to_npz` saved."""
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in ("counts", "keep", "classes", "probs", "features") if k in z}
        return cls(meta["index"], meta["r0"], meta["c0"], set_counts={tuple(k): v for k, v in meta["sets"]},
                   calls=meta["calls"], **arrays)


def run_chunk(model: SceneModel, plan: WindowPlan, chunk: Chunk, *, batch_size: int = 64, classes: bool = True,
              probabilities: bool = False, features: bool = False, device: str | torch.device | None = None) -> ChunkResult:
    """Read one chunk and run the model on its windows, batched by channel set.

    Args:
        model: the loaded model.
        plan: the window plan of the scene.
        chunk: which windows.
        batch_size: windows per model call (at most).
        classes: compute classes (classifiers).
        probabilities: keep the softmax too.
        features: compute embeddings.
        device: where the model runs (default: where it is).

    Returns:
        The chunk's :class:`ChunkResult`.
    """
    device = model.device if device is None else torch.device(device)
    win = plan.read(chunk)
    nr, nc = chunk.shape
    n, nb = nr * nc, win.keep.shape[-1]
    keep = win.keep.reshape(n, nb)
    ids_all = np.asarray(plan.scene.channel_ids, np.int64)
    res = ChunkResult(chunk.index, chunk.r0, chunk.c0, keep.sum(1).astype(np.uint8).reshape(nr, nc), win.keep.copy())
    want_logits = classes or probabilities
    cls_out = np.full(n, NODATA_CLASS, np.uint8) if want_logits else None
    prob_out = np.full((n, model.num_classes), np.nan, np.float32) if probabilities else None
    feat_out: np.ndarray | None = None
    rows, cols = np.divmod(np.arange(n), nc)
    sets, inverse = np.unique(keep, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    for g, chosen in enumerate(sets):
        kept = np.flatnonzero(chosen)
        if not len(kept):
            continue
        members = np.flatnonzero(inverse == g)
        ids = ids_all[kept]
        ids_t = torch.as_tensor(ids, device=device)
        res.set_counts[tuple(int(i) for i in ids)] = len(members)
        for b in range(0, len(members), batch_size):
            m = members[b:b + batch_size]
            ri, ci = rows[m][:, None], cols[m][:, None]
            x = model.prepare(win.data[ri, ci, kept[None, :]], win.usable[ri, ci, kept[None, :]], ids)
            xt = torch.from_numpy(np.ascontiguousarray(x)).to(device)
            if features:  # one encoder pass for both: logits = head(features)
                f = model.features(xt, ids_t)
                logits = model.head(f).float() if want_logits else None
                f = f.float().cpu().numpy()
                if feat_out is None:
                    feat_out = np.full((n, f.shape[1]), np.nan, np.float32)
                feat_out[m] = f
            else:
                logits = model.logits(xt, ids_t).float()
            res.calls += 1
            if logits is not None:
                cls_out[m] = logits.argmax(1).cpu().numpy().astype(np.uint8)
                if prob_out is not None:
                    prob_out[m] = torch.softmax(logits, 1).cpu().numpy()
    if cls_out is not None:
        res.classes = cls_out.reshape(nr, nc)
    if prob_out is not None:
        res.probs = np.ascontiguousarray(prob_out.reshape(nr, nc, -1).transpose(2, 0, 1))
    if features:
        if feat_out is None:
            feat_out = np.full((n, feature_dim(model, device)), np.nan, np.float32)
        res.features = feat_out.reshape(nr, nc, -1)
    return res


def feature_dim(model: SceneModel, device: str | torch.device | None = None) -> int:
    """Size of the model's embedding (one forward of a blank window of one channel)."""
    device = model.device if device is None else device
    x = torch.zeros(1, 1, model.window, model.window, device=device)
    return int(model.features(x, torch.as_tensor([model.channel_ids[0]], device=device)).shape[1])


# ----------------------------------------------------------------------------------- sinks
def _synthetic_tag(scene: Scene) -> str | None:
    for src in scene.sources:
        ds = getattr(src, "base", None)
        if ds is not None:
            tag = ds.tags().get("GEOVIT_SYNTHETIC")
            if tag:
                return tag
    return None


class MapSink:
    """``map.tif`` (class + channels used), optional probabilities, PNG preview (see the module docstring)."""

    def __init__(self, model: SceneModel, plan: WindowPlan, out: Path, probabilities: Path | None,
                 preview: Path | None, tags: dict[str, str]):
        from geovit.geo.outputs import GridRaster, class_colours

        self.model, self.plan, self.out, self.preview = model, plan, out, preview
        self.tags = tags
        grid = dict(crs=plan.scene.crs, transform=plan.transform, height=plan.rows, width=plan.cols)
        colours = class_colours(model.class_names)
        cmap = {i: (*map(int, c), 255) for i, c in enumerate(colours)}
        cmap[NODATA_CLASS] = (0, 0, 0, 0)
        self.map = GridRaster(out, count=2, dtype="uint8", nodata=NODATA_CLASS, descriptions=("class", "channels_used"),
                              tags=tags, colormap=cmap, resampling="nearest", **grid)
        self.probs = None
        try:
            if probabilities is not None:
                self.probs = GridRaster(probabilities, count=model.num_classes, dtype="float32", nodata=float("nan"),
                                        descriptions=model.class_names, tags=tags, resampling="average", **grid)
        except BaseException:
            self.map.abort()
            raise

    def write(self, res: ChunkResult) -> None:
        """Write one chunk's classes, channel counts (and probabilities)."""
        self.map.write(np.stack([res.classes, res.counts]), res.r0, res.c0)
        if self.probs is not None:
            self.probs.write(res.probs, res.r0, res.c0)

    def commit(self) -> dict[str, str]:
        """Publish the COGs and write the preview; returns the paths."""
        from geovit.geo.outputs import write_map_preview

        outputs = {"map": str(self.map.commit())}
        if self.probs is not None:
            outputs["probabilities"] = str(self.probs.commit(predictor=True))
        if self.preview is not None:
            synthetic = "SYNTHETIC scene · " if "GEOVIT_SYNTHETIC" in self.tags else ""
            title = f"{synthetic}{self.model.family} · {Path(self.out).name} · {self.plan.rows}x{self.plan.cols} windows"
            outputs["preview"] = str(write_map_preview(self.out, self.preview, self.model.class_names, title=title))
        return outputs

    def abort(self) -> None:
        """Drop every temporary file."""
        self.map.abort()
        if self.probs is not None:
            self.probs.abort()


class EmbeddingSink:
    """A zarr store of the window grid's embeddings, channels used and their ids (see :func:`embed_scene`)."""

    def __init__(self, model: SceneModel, plan: WindowPlan, out: Path, dim: int, attrs: dict[str, Any]):
        from geovit.geo.outputs import ZarrStore

        xs, ys = plan.window_centres()
        scene = plan.scene
        coords = {"y": ("y", ys), "x": ("x", xs), "feature": ("feature", np.arange(dim)),
                  "channel": ("channel", np.asarray(scene.channel_ids, np.int64)),
                  "channel_name": ("channel", np.asarray([b.name for b in scene.bands]))}
        self.store = ZarrStore(out, coords, attrs)
        cr, cc = plan.chunk_shape()
        try:
            self.store.create("embedding", ("y", "x", "feature"), (plan.rows, plan.cols, dim), (cr, cc, dim), "float32",
                              float("nan"))
            # integer variables carry no fill value, so xarray reads them as integers (not masked floats)
            self.store.create("channels_used", ("y", "x"), (plan.rows, plan.cols), (cr, cc), "uint8", None)
            self.store.create("channel_available", ("y", "x", "channel"), (plan.rows, plan.cols, len(scene.bands)),
                              (cr, cc, len(scene.bands)), "bool", None)
            if model.is_classifier:
                self.store.create("class", ("y", "x"), (plan.rows, plan.cols), (cr, cc), "uint8", None,
                                  attrs={"class_names": list(model.class_names), "nodata": NODATA_CLASS})
        except BaseException:
            self.store.abort()
            raise
        self.with_class = model.is_classifier

    def write(self, res: ChunkResult) -> None:
        """Write one chunk's embeddings, channel counts and availability (and classes)."""
        nr, nc = res.counts.shape
        region = (slice(res.r0, res.r0 + nr), slice(res.c0, res.c0 + nc))
        self.store.write("embedding", region, res.features)
        self.store.write("channels_used", region, res.counts)
        self.store.write("channel_available", region, res.keep)
        if self.with_class:
            self.store.write("class", region, res.classes)

    def commit(self) -> dict[str, str]:
        """Publish the store; returns its path."""
        return {"embeddings": str(self.store.commit())}

    def abort(self) -> None:
        """Drop the temporary store."""
        self.store.abort()


# ------------------------------------------------------------------------------------ driver
def _shard_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.ranks"


def _make_module(model: SceneModel, plan: WindowPlan, chunks: list[Chunk], kwargs: dict, folder: Path,
                 progress: bool | None):
    """The LightningModule whose predict loop runs this rank's chunks and saves their results."""
    import lightning as L
    from torch.utils.data import DataLoader

    class ScenePredictModule(L.LightningModule):
        """Rank ``r`` of ``world`` runs chunks ``r, r + world, ...``; results go to ``folder/rank{r}``."""

        def __init__(self):
            super().__init__()
            self.net = model.module

        def predict_dataloader(self):
            rank, world = self.trainer.global_rank, self.trainer.world_size
            # a rank without chunks still joins the loop (Lightning refuses empty loaders): index -1 is skipped
            return DataLoader([c.index for c in chunks[rank::world]] or [-1], batch_size=1, collate_fn=_first)

        def on_predict_start(self) -> None:
            rank, world = self.trainer.global_rank, self.trainer.world_size
            self.folder = folder / f"rank{rank}"
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True, exist_ok=True)
            if self.device.type == "cpu":  # ranks on one machine share its cores
                local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
            mine = sum(c.shape[0] * c.shape[1] for c in chunks[rank::world])
            self.bar = Progress(mine, f"predict [rank {rank}/{world}]", enabled=(False if progress is False else None)
                                if rank == 0 else False)

        def predict_step(self, index: int, batch_idx: int) -> None:
            if index < 0:
                return
            res = run_chunk(model, plan, chunks[index], device=self.device, **kwargs)
            res.to_npz(self.folder / f"chunk{index:07d}.npz")
            self.bar.update(int(res.counts.size))

        def on_predict_end(self) -> None:
            self.bar.close()

    return ScenePredictModule()


def _first(batch: list) -> Any:
    return batch[0]


def run_plan(model: SceneModel, plan: WindowPlan, make_sink: Callable[[], Any], out: Path, *, batch_size: int,
             classes: bool, probabilities: bool, features: bool, device: str | torch.device | None = None,
             devices: int = 1, num_nodes: int = 1, accelerator: str = "auto", strategy: str = "ddp",
             progress: bool | None = True, desc: str = "predict") -> dict[str, Any]:
    """Run every chunk of ``plan`` and feed the results to the sink ``make_sink()`` builds.

    One device: a plain loop on ``device``. ``devices * num_nodes > 1``: Lightning's predict loop
    shards the chunks, rank 0 assembles (see the module docstring); other ranks return
    ``{"rank": r}`` without writing outputs.

    Returns:
        Statistics (windows, channel sets, model calls, seconds, outputs) — on rank 0.
    """
    if batch_size < 1:
        raise GeovitError(f"--batch-size {batch_size}: expected a positive integer")
    if devices < 1 or num_nodes < 1:
        raise GeovitError(f"--devices {devices} / --num-nodes {num_nodes}: expected positive integers")
    chunks = plan.chunks()
    kwargs = dict(batch_size=batch_size, classes=classes, probabilities=probabilities, features=features)
    t0 = time.perf_counter()
    set_counts: dict[tuple[int, ...], int] = {}
    calls = 0

    def account(res: ChunkResult) -> None:
        nonlocal calls
        calls += res.calls
        for k, v in res.set_counts.items():
            set_counts[k] = set_counts.get(k, 0) + v

    world = devices * num_nodes
    if world == 1:
        if device is not None:
            model.to(device)
        sink = make_sink()
        bar = Progress(plan.num_windows, desc, enabled=False if progress is False else None)
        try:
            for chunk in chunks:
                res = run_chunk(model, plan, chunk, device=device, **kwargs)
                sink.write(res)
                account(res)
                bar.update(int(res.counts.size))
            bar.close()
            outputs = sink.commit()
        except BaseException:
            sink.abort()
            raise
        rank = 0
    else:
        import lightning as L

        folder = _shard_folder(out)
        trainer = L.Trainer(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, use_distributed_sampler=False)
        module = _make_module(model, plan, chunks, kwargs, folder, progress)
        try:
            with _quiet_lightning():
                trainer.predict(module, return_predictions=False)
            trainer.strategy.barrier("geovit-predict-done")
            rank = trainer.global_rank
            if rank != 0:
                return {"rank": rank}
            sink = make_sink()
            try:
                for chunk in chunks:
                    res = ChunkResult.from_npz(folder / f"rank{chunk.index % world}" / f"chunk{chunk.index:07d}.npz")
                    sink.write(res)
                    account(res)
                outputs = sink.commit()
            except BaseException:
                sink.abort()
                raise
        finally:
            if trainer.global_rank == 0:
                shutil.rmtree(folder, ignore_errors=True)
    seconds = time.perf_counter() - t0
    used = sum(set_counts.values())
    from geovit.channels import TABLES

    names = TABLES[plan.scene.table]
    sets = sorted(({"channels": [names[i] for i in k], "num_channels": len(k), "windows": v}
                   for k, v in set_counts.items()), key=lambda d: -d["windows"])
    return {"rank": rank, "windows": plan.num_windows, "windows_used": used, "nodata_windows": plan.num_windows - used,
            "rows": plan.rows, "cols": plan.cols, "window": plan.window, "stride": plan.stride,
            "channel_sets": sets, "model_calls": calls, "chunks": len(chunks), "world_size": world,
            "seconds": seconds, "windows_per_s": plan.num_windows / max(seconds, 1e-9), "outputs": outputs,
            "notes": list(plan.scene.notes)}


@contextlib.contextmanager
def _quiet_lightning():
    import logging
    import warnings

    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*predict returned None.*")
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            yield
    finally:
        logger.setLevel(level)


# -------------------------------------------------------------------------------- public API
def _model(checkpoint_or_model, classifier: bool, class_names, device) -> SceneModel:
    if isinstance(checkpoint_or_model, SceneModel):
        return checkpoint_or_model
    return load_model(checkpoint_or_model, classifier=classifier, class_names=class_names,
                      map_location=device if device is not None else "cpu")


def _scene_tags(model: SceneModel, plan: WindowPlan, max_missing: float) -> dict[str, str]:
    scene = plan.scene
    tags = {"GEOVIT_PRODUCT": "geovit predict window-grid map", "CLASSES": json.dumps(list(model.class_names)),
            "CHANNEL_TABLE": scene.table, "CHANNELS": json.dumps({b.channel_id: b.name for b in scene.bands}),
            "WINDOW": str(plan.window), "STRIDE": str(plan.stride), "MAX_MISSING": str(max_missing),
            "MODEL_FAMILY": model.family, "CHECKPOINT": Path(model.checkpoint).name,
            "INPUTS": json.dumps([Path(s.name).name for s in scene.sources])}
    synthetic = _synthetic_tag(scene)
    if synthetic:
        tags["GEOVIT_SYNTHETIC"] = synthetic
    return tags


@contextlib.contextmanager
def _planned_scene(model: SceneModel, rasters: Sequence[Any], *, bands, masks, reproject: bool, resampling: str,
                   stride: int | None, max_missing: float, batch_size: int, gdal_cache_mb: int, chunk_mb: float):
    """The opened :class:`Scene`, its :class:`WindowPlan` for ``model`` and the output tags (GDAL cache bounded)."""
    import rasterio

    with rasterio.Env(GDAL_CACHEMAX=gdal_cache_mb * 2**20), \
            Scene(rasters, table=model.channel_table, bands=bands, masks=masks, channel_ids=model.channel_ids,
                  reproject=reproject, resampling=resampling) as scene:
        plan = WindowPlan(scene, model.window, stride, max_missing, chunk_bytes=int(chunk_mb * 2**20),
                          min_chunk_windows=batch_size)
        yield scene, plan, _scene_tags(model, plan, max_missing)


def predict_scene(checkpoint: str | os.PathLike | SceneModel, rasters: Sequence[Any], out: str | os.PathLike, *,
                  bands: Sequence[str | Sequence[str] | None] | None = None, masks: Sequence[str] = (),
                  max_missing: float = 0.1, stride: int | None = None, batch_size: int = 64,
                  probabilities: str | os.PathLike | None = None, preview: str | os.PathLike | bool = True,
                  reproject: bool = False, resampling: str = "bilinear", class_names: Sequence[str] | None = None,
                  device: str | torch.device | None = None, devices: int = 1, num_nodes: int = 1,
                  accelerator: str = "auto", strategy: str = "ddp", progress: bool | None = True,
                  gdal_cache_mb: int = 16, chunk_mb: float = 8.0) -> dict[str, Any]:
    """Class map of a scene on its window grid; see the module docstring.

    Args:
        checkpoint: a ``geovit train`` / ``geovit pretrain`` classifier checkpoint (or run folder),
            or a loaded :class:`~geovit.predict.model.SceneModel`.
        rasters: input rasters (GeoTIFF paths, zarr stores, ``xarray`` cubes); the first sets the grid.
        out: the map GeoTIFF (COG): band 1 class (uint8, nodata 255), band 2 channels used.
        bands: band names per raster (see :class:`~geovit.geo.scene.Scene`).
        masks: mask specs (see :class:`~geovit.geo.scene.Scene`).
        max_missing: a band unusable over more than this share of a window is dropped there.
        stride: step between windows (default: the window size).
        batch_size: windows per model call.
        probabilities: also write the per-class probabilities here (float32 COG, NaN nodata).
        preview: PNG preview path, ``True`` (``out`` with ``.png``) or ``False``.
        reproject: warp rasters on other grids onto the first one's (GeoTIFFs and zarr cubes).
        resampling: resampling of reprojected data bands (``rasterio.enums.Resampling`` name).
        class_names: override the class names.
        device: device of a single-device run (default: cuda when present, else cpu).
        devices: devices per node; more than one shards through Lightning (``accelerator``,
            ``strategy``; run from a script or the command line, not an interactive session).
        num_nodes: nodes.
        accelerator: Lightning accelerator of a sharded run.
        strategy: Lightning strategy of a sharded run.
        progress: ``None`` / ``True``: progress bar on a terminal, lines otherwise; ``False``: quiet.
        gdal_cache_mb: GDAL's block cache during the run (bounds the memory of reads and writes).
        chunk_mb: memory budget of the input windows of one chunk (float32 values of every band).

    Returns:
        Statistics: windows, nodata windows, channel sets and their window counts, model calls,
        seconds, windows/s, output paths, notes about unused bands (``{"rank": r}`` on ranks > 0).

    Raises:
        GeovitError: bad input (see :class:`~geovit.geo.scene.Scene` and
            :func:`~geovit.predict.model.load_model`); no output is left behind.
    """
    out = Path(out)
    if device is None and devices * num_nodes == 1:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _model(checkpoint, True, class_names, device)
    prob_path = Path(probabilities) if probabilities is not None else None
    preview_path = (out.with_suffix(".png") if preview is True else Path(preview)) if preview else None
    with _planned_scene(model, rasters, bands=bands, masks=masks, reproject=reproject, resampling=resampling,
                        stride=stride, max_missing=max_missing, batch_size=batch_size, gdal_cache_mb=gdal_cache_mb,
                        chunk_mb=chunk_mb) as (scene, plan, tags):
        stats = run_plan(model, plan, lambda: MapSink(model, plan, out, prob_path, preview_path, tags), out,
                         batch_size=batch_size, classes=True, probabilities=prob_path is not None, features=False,
                         device=device, devices=devices, num_nodes=num_nodes, accelerator=accelerator,
                         strategy=strategy, progress=progress)
        if stats.get("rank", 0) == 0:
            stats["synthetic"] = "GEOVIT_SYNTHETIC" in tags
            stats["transform"] = list(plan.transform)[:6]
            stats["crs"] = None if scene.crs is None else scene.crs.to_string()
            if stats["windows_used"] == 0:
                stats["warning"] = ("no window had a usable band (all inputs nodata or masked there): "
                                    f"the map is all nodata ({NODATA_CLASS})")
    return stats


def embed_scene(checkpoint: str | os.PathLike | SceneModel, rasters: Sequence[Any], out: str | os.PathLike, *,
                bands: Sequence[str | Sequence[str] | None] | None = None, masks: Sequence[str] = (),
                max_missing: float = 0.1, stride: int | None = None, batch_size: int = 64, reproject: bool = False,
                resampling: str = "bilinear",
                device: str | torch.device | None = None, devices: int = 1, num_nodes: int = 1,
                accelerator: str = "auto", strategy: str = "ddp", progress: bool | None = True,
                gdal_cache_mb: int = 16, chunk_mb: float = 8.0) -> dict[str, Any]:
    """Embeddings of a scene's window grid, written as an ``xarray`` Dataset in a zarr store.

    The store (read it with :func:`geovit.predict.read_embeddings`) holds ``embedding``
    ``(y, x, feature)`` float32 (NaN for windows without a usable band), ``channels_used``
    ``(y, x)``, ``channel_available`` ``(y, x, channel)`` (which channel ids each window used;
    coordinate ``channel`` = ids, ``channel_name``), ``class`` ``(y, x)`` for classifiers, and
    coordinates ``x`` / ``y``: window centres in the scene's CRS (attribute ``crs``, WKT;
    ``transform``: the window grid's). Arguments as :func:`predict_scene`; any checkpoint of
    either family (encoders without head included).

    Returns:
        Statistics as :func:`predict_scene`.
    """
    out = Path(out)
    if device is None and devices * num_nodes == 1:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _model(checkpoint, False, None, device)
    with _planned_scene(model, rasters, bands=bands, masks=masks, reproject=reproject, resampling=resampling,
                        stride=stride, max_missing=max_missing, batch_size=batch_size, gdal_cache_mb=gdal_cache_mb,
                        chunk_mb=chunk_mb) as (scene, plan, tags):
        attrs = {"kind": "window grid", "crs": "" if scene.crs is None else scene.crs.to_wkt(),
                 "crs_name": "" if scene.crs is None else scene.crs.to_string(),
                 "transform": list(plan.transform)[:6], "scene_transform": list(scene.transform)[:6],
                 "window": plan.window, "stride": plan.stride, "max_missing": float(max_missing),
                 "model_family": model.family, "checkpoint": Path(model.checkpoint).name,
                 "channel_table": scene.table, "feature": "cls" if model.family == "channelvit" else "fused",
                 "inputs": [Path(s.name).name for s in scene.sources]}
        if "GEOVIT_SYNTHETIC" in tags:
            attrs["synthetic"] = tags["GEOVIT_SYNTHETIC"]
        dim = feature_dim(model, device if devices * num_nodes == 1 else "cpu")
        stats = run_plan(model, plan, lambda: EmbeddingSink(model, plan, out, dim, attrs), out,
                         batch_size=batch_size, classes=model.is_classifier, probabilities=False, features=True,
                         device=device, devices=devices, num_nodes=num_nodes, accelerator=accelerator,
                         strategy=strategy, progress=progress, desc="embed")
    return stats
