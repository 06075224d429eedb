"""Embeddings of a dataset split, and the reader other packages use for any geovit embedding store.

:func:`embed_dataset` encodes every sample of a split of a registered dataset
(:mod:`geovit.data.registry`; So2Sat, JUMP-CP, CHAMMI) with a trained model's frozen encoder —
ChannelViT's CLS feature, ChA-MAEViT's fused feature (the probe feature of
:mod:`geovit.tasks.probe`) — and writes an ``xarray`` Dataset in a zarr store: ``embedding``
``(sample, feature)`` with coordinates ``label`` and ``row`` (position in the dataset's files)
per sample, and ``channels`` ``(sample, slot)``: the channel ids each sample was encoded with (``-1`` pads
samples with fewer channels). Geolocated samples (So2Sat with its ``<split>_geo.h5`` files) add the
per-sample coordinates of the patch centres (:class:`geovit.geo.points.PatchPoints`): ``city``,
``epsg`` and ``x`` / ``y`` in the patch's own CRS, ``lon`` / ``lat`` in EPSG:4326.

:func:`read_embeddings` opens a store written by :func:`embed_dataset` or
:func:`geovit.predict.embed_scene` and checks it; :func:`embeddings_at` returns the embedding
of the window that contains each of a list of points (e.g. the locations of study units), the
one call a downstream estimator needs to reuse a scene's embeddings instead of re-encoding.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from geovit.errors import DataError, GeovitError
from geovit.predict.model import SceneModel, load_model


def _datamodule(model: SceneModel, data: str | os.PathLike, batch_size: int, channels: str | None):
    from geovit.channels import TABLES
    from geovit.data.registry import get_dataset

    hp = model.hparams
    dataset = hp.get("dataset") or ("so2sat" if model.channel_table == "so2sat" else None)
    if dataset is None:
        raise GeovitError(f"checkpoint {model.checkpoint}: does not say which dataset it was trained on")
    info = get_dataset(dataset)
    spec = channels if channels else [TABLES[model.channel_table][i] for i in model.channel_ids]
    dm_cls = info.load("datamodule")
    common = dict(batch_size=batch_size, augment=False)
    if dataset == "so2sat":
        version = str(hp.get("version", hp.get("so2sat_version", "2")))
        return dm_cls(data, version=version, bands=spec, **common)
    return dm_cls(data, channels=spec, image_size=int(hp.get("image_size") or model.window), **common)


def embed_dataset(checkpoint: str | os.PathLike | SceneModel, data: str | os.PathLike, split: str,
                  out: str | os.PathLike, *, batch_size: int = 256, channels: str | None = None,
                  max_samples: int | None = None, device: str | torch.device | None = None,
                  progress: bool | None = True) -> dict[str, Any]:
    """Write the embeddings of every sample of ``split`` to a zarr store (see the module docstring).

    Args:
        checkpoint: a ``geovit train`` / ``geovit pretrain`` checkpoint (or run folder), or a loaded model.
        data: the dataset folder (the dataset is the one the checkpoint was trained on).
        split: a split name of that dataset (So2Sat: ``train``, ``validation``, ``test``).
        out: the zarr store to write (replaced atomically when it exists).
        batch_size: samples per model call.
        channels: channel set to encode with (preset or comma list; default the trained channels).
        max_samples: encode only the first ``max_samples`` samples.
        device: default cuda when present, else cpu.
        progress: as :func:`geovit.predict.predict_scene`.

    Returns:
        ``{"samples", "dim", "seconds", "geolocated", "outputs": {"embeddings": path}}``
        (``geolocated``: the store holds the patch coordinates).

    Raises:
        GeovitError: an unknown split, channels the model was not trained on, a bad checkpoint.
    """
    import time

    from torch.utils.data import DataLoader, Subset

    from geovit.data.collate import pad_channels_collate
    from geovit.geo.outputs import ZarrStore
    from geovit.geo.sliding_window import Progress

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = checkpoint if isinstance(checkpoint, SceneModel) else load_model(checkpoint, classifier=False,
                                                                             map_location=device)
    model.to(device)
    dm = _datamodule(model, data, batch_size, channels)
    unseen = sorted(set(dm.selection.ids) - set(model.channel_ids))
    if unseen:
        raise GeovitError(f"--channels {channels}: the model was not trained on channel ids {unseen} "
                          f"(it knows {list(model.channel_ids)})")
    if split not in dm.splits:
        raise GeovitError(f"--split {split}: expected one of {', '.join(dm.splits)} for {dm.dataset_name}")
    ds = dm.build_dataset(split, train=False)
    rows = np.asarray(getattr(ds, "rows", np.arange(len(ds))))
    if max_samples is not None and max_samples < len(ds):
        ds, rows = Subset(ds, range(max_samples)), rows[:max_samples]
    n = len(ds)
    if n == 0:
        raise DataError(f"{data}: split {split} holds no samples")
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=pad_channels_collate)
    t0 = time.perf_counter()
    first = next(iter(DataLoader(Subset(ds, [0]), batch_size=1, collate_fn=pad_channels_collate)))
    dim = int(model.features(first["image"].to(device), first["channels"][0].to(device)).shape[1])
    from geovit.geo.points import PatchPoints, has_geolocation

    geolocated = has_geolocation(first)
    where = f"{data}, split {split}"
    height, width = (int(v) for v in first["image"].shape[-2:])
    slots = len(model.channel_ids) if channels is None else len(dm.selection.ids)
    from geovit.channels import TABLES

    attrs = {"kind": "dataset split", "dataset": dm.dataset_name, "split": split, "data": Path(data).name,
             "model_family": model.family, "checkpoint": Path(model.checkpoint).name,
             "channel_table": model.channel_table, "feature": "cls" if model.family == "channelvit" else "fused",
             "channel_names": list(TABLES[model.channel_table])}
    if geolocated:
        attrs["geolocation"] = ("patch centres: x / y in the CRS of each patch (epsg), lon / lat in EPSG:4326; "
                                "city")
    store = ZarrStore(out, {"sample": ("sample", np.arange(n)), "feature": ("feature", np.arange(dim)),
                            "slot": ("slot", np.arange(slots))}, attrs)
    try:
        chunk = max(1, min(n, 2**22 // max(1, dim)))
        # CF 'coordinates': xarray reads label and row as coordinates of the samples
        coords = "label row" + (" city epsg x y lon lat" if geolocated else "")
        store.create("embedding", ("sample", "feature"), (n, dim), (chunk, dim), "float32", float("nan"),
                     attrs={"coordinates": coords})
        # integer variables carry no fill value, so xarray reads them as integers (not masked floats)
        store.create("label", ("sample",), (n,), (min(n, 2**20),), "int64", None)
        store.create("row", ("sample",), (n,), (min(n, 2**20),), "int64", None)
        store.create("channels", ("sample", "slot"), (n, slots), (min(n, 2**18), slots), "int64", None)
        if geolocated:
            base = getattr(ds, "dataset", ds)  # a Subset of the first samples
            geo = getattr(base, "geolocation", None)
            city_width = max([len(c) for c in geo.city] + [1]) if geo is not None else 64
            store.create("city", ("sample",), (n,), (min(n, 2**20),), f"<U{city_width}", None)
            store.create("epsg", ("sample",), (n,), (min(n, 2**20),), "int64", None)
            for name, what in (("x", "patch centre easting in the patch's CRS (epsg)"),
                               ("y", "patch centre northing in the patch's CRS (epsg)"),
                               ("lon", "patch centre longitude, EPSG:4326"),
                               ("lat", "patch centre latitude, EPSG:4326")):
                store.create(name, ("sample",), (n,), (min(n, 2**20),), "float64", None, attrs={"long_name": what})
        bar = Progress(n, "embed", unit="sample", enabled=False if progress is False else None)
        i = 0
        for batch in loader:
            x, ids, mask = batch["image"].to(device), batch["channels"], batch.get("channel_mask")
            b = x.shape[0]
            if mask is None or bool(mask.all()):
                shared = (ids == ids[0]).all()
                if bool(shared):
                    f = model.features(x, ids[0].to(device))
                else:
                    f = model.features(x, ids.to(device))
            else:
                if model.family != "chamaevit":
                    raise GeovitError("samples with different channel counts need a ChA-MAEViT (channel_mask); "
                                      "ChannelViT batches share one channel count")
                f = model.module.forward_features(x, channels=ids.to(device), channel_mask=mask.to(device))
            sl = slice(i, i + b)
            store.write("embedding", (sl,), f.float().cpu().numpy())
            store.write("label", (sl,), np.asarray(batch["label"]).astype(np.int64))
            store.write("row", (sl,), rows[i:i + b].astype(np.int64))
            padded = np.full((b, slots), -1, np.int64)
            ch = ids.cpu().numpy()
            valid = np.ones_like(ch, bool) if mask is None else mask.cpu().numpy().astype(bool)
            for j in range(b):
                used = ch[j][valid[j]]
                padded[j, :len(used)] = used[:slots]
            store.write("channels", (sl,), padded)
            if geolocated:
                pts = PatchPoints.from_batch(batch, height, width, where=f"{where}, samples {i}..{i + b - 1}")
                if max((len(c) for c in pts.city), default=0) > city_width:
                    raise DataError(f"{where}: field 'city' holds names longer than {city_width} characters")
                for name in ("city", "epsg", "x", "y", "lon", "lat"):
                    store.write(name, (sl,), getattr(pts, name))
            i += b
            bar.update(b)
        bar.close()
        path = store.commit()
    except BaseException:
        store.abort()
        raise
    return {"samples": n, "dim": dim, "seconds": time.perf_counter() - t0, "geolocated": geolocated,
            "outputs": {"embeddings": str(path)}}


def read_embeddings(path: str | os.PathLike):
    """Open an embedding store of :func:`embed_dataset` or :func:`geovit.predict.embed_scene`.

    Args:
        path: the ``*.zarr`` folder.

    Returns:
        The ``xarray.Dataset`` (lazy): ``embedding`` plus its coordinates and attributes.

    Raises:
        DataError: a missing folder, or a store without an ``embedding`` variable.
    """
    from geovit.geo.scene import open_zarr_store

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: embedding store not found")
    ds = open_zarr_store(path)
    if "embedding" not in ds:
        raise DataError(f"{path}: no 'embedding' variable (has {sorted(ds.data_vars)}); expected a store written by "
                        "geovit embed")
    return ds


def store_crs(ds, where: str = "the embedding store"):
    """The ``rasterio`` CRS of a window-grid store (``None`` when the scene had none).

    Raises:
        DataError: naming ``where``, for a CRS attribute that is not a coordinate reference system.
    """
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    wkt = ds.attrs.get("crs") or ""
    if not wkt:
        return None
    try:
        return CRS.from_user_input(wkt)
    except CRSError as err:
        raise DataError(f"{where}: its attribute 'crs' is not a coordinate reference system ({err})") from None


def window_index(store: Any, x: Sequence[float], y: Sequence[float], *, crs: Any = None,
                 where: str = "the embedding store") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window-grid ``(rows, cols, inside)`` of points: the window whose centre is nearest each point.

    The window grid's pixels are ``stride`` wide and centred on the windows
    (:attr:`geovit.geo.scene.WindowPlan.transform`), so the pixel holding a point is the window
    whose centre is nearest to it (at most ``stride / 2`` scene pixels away along each axis; with
    non-overlapping windows it is the window that contains the point).

    Args:
        store: the Dataset of :func:`read_embeddings` (window-grid kind).
        x: point coordinates (easting / longitude).
        y: point coordinates (northing / latitude).
        crs: CRS of the points (default: the store's CRS).
        where: how to name the store in messages.

    Returns:
        int64 window rows and columns, and a bool mask of the points inside the grid.

    Raises:
        DataError: a dataset-split store, or ``crs`` given for a store without CRS.
    """
    ds = store
    if ds.attrs.get("kind") != "window grid":
        raise DataError(f"{where} holds a dataset split, not a window grid; select rows by 'sample'")
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if crs is not None:
        from rasterio.crs import CRS
        from rasterio.warp import transform as warp_points

        dst = store_crs(ds, where)
        if dst is None:
            raise DataError(f"{where} has no CRS (nor had its scene), so points in {crs} cannot be placed on its grid; "
                            "give coordinates in the scene's pixel grid (crs=None)")
        src = CRS.from_user_input(crs)
        if src != dst and len(x):
            xt, yt = warp_points(src, dst, x.tolist(), y.tolist())
            x, y = np.asarray(xt), np.asarray(yt)
    from affine import Affine

    inv = ~Affine(*ds.attrs["transform"])
    cols, rows = inv @ (x, y)
    ok = np.isfinite(cols) & np.isfinite(rows)
    cols = np.floor(np.where(ok, cols, -1)).astype(np.int64)
    rows = np.floor(np.where(ok, rows, -1)).astype(np.int64)
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    inside = ok & (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
    return rows, cols, inside


def embeddings_at(store: str | os.PathLike | Any, x: Sequence[float], y: Sequence[float], *, crs: Any = None,
                  outside: str = "nan") -> np.ndarray:
    """Embedding of the window nearest each point ``(x[i], y[i])`` of a scene embedding store.

    With non-overlapping windows (the default stride) that is the window containing the point;
    see :func:`window_index`.

    Args:
        store: a store path or the Dataset of :func:`read_embeddings` (window-grid kind).
        x: point coordinates (easting / longitude).
        y: point coordinates (northing / latitude).
        crs: CRS of the points (default: the store's CRS).
        outside: ``"nan"`` (rows of NaN for points outside the grid) or ``"error"``.

    Returns:
        float32 ``(len(x), feature)``; NaN rows for points outside the grid or in nodata windows.

    Raises:
        DataError: a dataset-split store, points outside with ``outside="error"``, ``crs`` for a
            store without CRS.
    """
    ds = store if not isinstance(store, (str, os.PathLike)) else read_embeddings(store)
    if outside not in ("nan", "error"):
        raise GeovitError(f"outside={outside!r}: expected 'nan' or 'error'")
    rows, cols, inside = window_index(ds, x, y, crs=crs, where="embeddings_at: the store")
    if outside == "error" and not inside.all():
        bad = np.flatnonzero(~inside)[:5].tolist()
        raise DataError(f"embeddings_at: points {bad} lie outside the window grid of the store")
    out = np.full((len(rows), ds.sizes["feature"]), np.nan, np.float32)
    if inside.any():
        import xarray as xr

        picked = ds["embedding"].isel(y=xr.DataArray(rows[inside], dims="p"),
                                      x=xr.DataArray(cols[inside], dims="p")).values
        out[inside] = picked
    return out
