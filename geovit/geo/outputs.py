"""Writers of window-grid products: Cloud-Optimized GeoTIFFs, zarr stores, PNG previews.

* :class:`GridRaster` — a raster written block by block (in any order) into an uncompressed
  tiled GeoTIFF beside the target, then published as a tiled, deflate-compressed
  Cloud-Optimized GeoTIFF (GDAL's COG driver, overviews included) by an atomic rename. Memory
  is bounded by GDAL's block cache, whatever the raster size; a failure leaves nothing behind.
* :class:`ZarrStore` — arrays of an ``xarray``-readable zarr store (format 2) written region by
  region into a temporary folder, renamed onto the target when complete.
* :func:`write_map_preview` — PNG of a class map (decimated) with a legend of class names, and
  of the number of channels each window used.
* :func:`class_colours` — the WUDAPT colours of the 17 local climate zones, else a categorical
  palette.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from geovit._io import atomic_path

#: standard colours of the local climate zones (WUDAPT / Stewart & Oke), LCZ 1-10 then A-G
LCZ_COLOURS: tuple[str, ...] = (
    "#8c0000", "#d10000", "#ff0000", "#bf4d00", "#ff6600", "#ff9955", "#faee05", "#bcbcbc", "#ffccaa",
    "#555555", "#006a00", "#00aa00", "#648525", "#b9db79", "#000000", "#fbf7ae", "#6a6aff",
)
TILE = 256


def class_colours(class_names: Sequence[str]) -> np.ndarray:
    """``(n, 3)`` uint8 colours: the LCZ scheme for So2Sat's 17 classes, else matplotlib's tab20."""
    from geovit.data.so2sat import CLASSES

    if tuple(class_names) == tuple(CLASSES):
        hexes = LCZ_COLOURS
        return np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in hexes], np.uint8)
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return np.array([[int(255 * c) for c in cmap(i % 20)[:3]] for i in range(len(class_names))], np.uint8)


class GridRaster:
    """A GeoTIFF written in blocks, published as a COG on :meth:`commit` (see the module docstring).

    Args:
        out: the target file.
        count: bands.
        dtype: numpy / GDAL data type name.
        nodata: nodata value (``float("nan")`` for float rasters).
        crs: CRS (``None`` for plain pixel grids).
        transform: affine transform.
        height: rows.
        width: columns.
        descriptions: one per band.
        tags: dataset metadata.
        colormap: ``{value: (r, g, b, a)}`` for band 1 (uint8 only).
        resampling: overview resampling (``"nearest"`` for classes, ``"average"`` for values).
    """

    def __init__(self, out: str | os.PathLike, *, count: int, dtype: str, nodata: float | None, crs: Any, transform: Any,
                 height: int, width: int, descriptions: Sequence[str] = (), tags: Mapping[str, str] | None = None,
                 colormap: Mapping[int, tuple[int, int, int, int]] | None = None, resampling: str = "nearest"):
        import rasterio

        self.out, self.resampling, self.dtype = Path(out), resampling, dtype
        self.out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.out.name}.", suffix=".partial.tif", dir=self.out.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        block = TILE if min(height, width) >= TILE else 16 * max(1, min(height, width, TILE) // 16)
        try:
            self.ds = rasterio.open(self.tmp, "w", driver="GTiff", count=count, dtype=dtype, nodata=nodata, crs=crs,
                                    transform=transform, height=height, width=width, tiled=True, blockxsize=block,
                                    blockysize=block, BIGTIFF="IF_SAFER", SPARSE_OK="TRUE")
            for b, d in enumerate(descriptions, start=1):
                self.ds.set_band_description(b, d)
            if tags:
                self.ds.update_tags(**{k: str(v) for k, v in tags.items()})
            if colormap:
                self.ds.write_colormap(1, dict(colormap))
        except BaseException:
            self.abort()
            raise

    def write(self, array: np.ndarray, row: int, col: int) -> None:
        """Write ``array`` ``(count, h, w)`` with its top-left pixel at ``(row, col)``."""
        from rasterio.windows import Window

        self.ds.write(np.asarray(array, self.dtype), window=Window(col, row, array.shape[2], array.shape[1]))

    def commit(self, *, predictor: bool = False) -> Path:
        """Close the temporary GeoTIFF and publish it as a COG at :attr:`out` (atomically)."""
        import rasterio.shutil

        self.ds.close()
        options = dict(COMPRESS="DEFLATE", BLOCKSIZE=TILE, RESAMPLING=self.resampling.upper(), BIGTIFF="IF_SAFER")
        if predictor:
            options["PREDICTOR"] = "YES"
        try:
            with atomic_path(self.out) as tmp:
                rasterio.shutil.copy(self.tmp, tmp, driver="COG", **options)
        finally:
            self.abort()
        return self.out

    def abort(self) -> None:
        """Drop the temporary file (nothing is published)."""
        ds = getattr(self, "ds", None)
        if ds is not None and not ds.closed:
            ds.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


class ZarrStore:
    """An ``xarray``-readable zarr store (format 2) filled region by region, then renamed into place.

    Args:
        out: the target folder (``*.zarr``); an existing store is replaced on :meth:`commit`.
        coords: ``xarray`` coordinates (name -> array or ``(dims, array)``).
        attrs: dataset attributes (JSON-serialisable).
    """

    def __init__(self, out: str | os.PathLike, coords: Mapping[str, Any], attrs: Mapping[str, Any]):
        import xarray as xr
        import zarr

        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))
        try:
            xr.Dataset(coords=dict(coords), attrs=dict(attrs)).to_zarr(self.tmp, mode="w", zarr_format=2,
                                                                        consolidated=False)
            self.group = zarr.open_group(self.tmp, mode="a", zarr_format=2)
        except BaseException:
            self.abort()
            raise
        self.arrays: dict[str, Any] = {}

    def create(self, name: str, dims: Sequence[str], shape: Sequence[int], chunks: Sequence[int], dtype: str,
               fill_value: Any, attrs: Mapping[str, Any] | None = None) -> None:
        """Add an array variable with dimensions ``dims`` (no data written yet: reads give ``fill_value``)."""
        arr = self.group.create_array(name, shape=tuple(int(s) for s in shape),
                                      chunks=tuple(max(1, int(c)) for c in chunks), dtype=dtype, fill_value=fill_value,
                                      attributes={"_ARRAY_DIMENSIONS": list(dims), **dict(attrs or {})})
        self.arrays[name] = arr

    def write(self, name: str, region: tuple[slice, ...], values: np.ndarray) -> None:
        """Write ``values`` into ``region`` of array ``name``."""
        self.arrays[name][region] = values

    def commit(self) -> Path:
        """Consolidate the metadata and rename the store onto :attr:`out` (replacing an old one)."""
        import zarr

        try:
            zarr.consolidate_metadata(str(self.tmp), zarr_format=2)
            old = None
            if self.out.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.old-", dir=self.out.parent))
                os.replace(self.out, old / self.out.name)
            os.replace(self.tmp, self.out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            self.abort()
        return self.out

    def abort(self) -> None:
        """Remove the temporary store (nothing is published)."""
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)


def write_map_preview(map_path: str | os.PathLike, png: str | os.PathLike, class_names: Sequence[str], *,
                      title: str = "", max_side: int = 1024) -> Path:
    """PNG preview of a ``geovit predict`` map: classes with a legend, and channels used per window.

    Args:
        map_path: the map GeoTIFF (band 1 class, nodata 255; band 2 channel count).
        png: the PNG to write (atomically).
        class_names: names of the classes (legend; only the classes present are listed).
        title: figure title.
        max_side: the map is decimated (nearest) to at most this many pixels per side.

    Returns:
        The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    from geovit._io import atomic_savefig

    with rasterio.open(map_path) as ds:
        factor = max(1, math.ceil(max(ds.height, ds.width) / max_side))
        shape = (max(1, ds.height // factor), max(1, ds.width // factor))
        classes = ds.read(1, out_shape=shape)
        counts = ds.read(2, out_shape=shape) if ds.count > 1 else None
    colours = class_colours(class_names)
    rgb = np.full((*shape, 3), 235, np.uint8)  # nodata: light grey
    valid = classes < len(class_names)
    rgb[valid] = colours[classes[valid]]
    present = [int(c) for c in np.unique(classes[valid])]
    panels = 2 if counts is not None else 1
    aspect = shape[1] / shape[0]
    fig, axes = plt.subplots(1, panels, figsize=(min(16.0, 4.2 * panels * max(aspect, 0.6) + 3.2), 4.6), squeeze=False)
    ax = axes[0, 0]
    ax.imshow(rgb, interpolation="nearest")
    ax.set_title("class", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    handles = [Patch(facecolor=colours[c] / 255, edgecolor="none", label=f"{c}: {class_names[c]}") for c in present]
    if not valid.all():
        handles.append(Patch(facecolor=(235 / 255,) * 3, edgecolor="grey", label="nodata (no usable channel)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    if counts is not None:
        ax2 = axes[0, 1]
        top = max(1, int(counts.max()))
        levels = np.arange(-0.5, top + 1.5)
        cmap = ListedColormap(plt.get_cmap("viridis")(np.linspace(0, 1, top + 1)))
        im = ax2.imshow(counts, cmap=cmap, norm=BoundaryNorm(levels, cmap.N), interpolation="nearest")
        ax2.set_title("channels used", fontsize=9)
        ax2.set_xticks([])
        ax2.set_yticks([])
        used = [int(v) for v in np.unique(counts)]
        bar = fig.colorbar(im, ax=ax2, ticks=used, fraction=0.046, pad=0.04)
        bar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, png, dpi=110)
    plt.close(fig)
    return Path(png)
