"""Sliding-window change prediction over georeferenced rasters of any size.

:func:`predict_change_raster` reads the *before* and *after* rasters window by window with
rasterio, runs a model on overlapping tiles, blends the overlaps with a weight that ramps down
towards tile edges, and writes a GeoTIFF with the CRS and transform of the inputs.

Memory stays flat in raster size: the output is produced in column blocks of at most
``block_width`` pixels, and inside a block tile rows are processed top to bottom with a rolling
accumulator one tile high. Rows are written as soon as no later tile can touch them. Tiles that
straddle a block boundary are computed once for each block (a few percent of extra work).

Outputs (all written to temporary files and renamed at the end, so a failure leaves nothing):

* ``out``: uint8 change map, 1 = change, 0 = no change, 255 = nodata (either input masked);
* ``prob_out`` (optional): float32 change probability, NaN where nodata;
* ``overlay`` (optional): PNG of the *after* image (decimated to <= 2048 px) with change in red.

The module also holds the raster helpers the other readers of :mod:`geovit.geo` share:
:func:`open_raster`, :func:`grid_problems`, :func:`bounds_overlap`, :func:`warp_onto` (with
:func:`alpha_band`), :func:`window_grid` and :class:`Progress`.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from geovit._io import atomic_path
from geovit.data.change_transforms import PATCH, tile_origins
from geovit.errors import DataError, GeovitError

#: predict_fn(t1, t2) -> probability; inputs raw 0-255 float (B, 3, h, w), output (B, 1, h, w)
PredictFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NODATA_OUT = 255
#: tile size of the output GeoTIFFs; rows and columns are written in whole tiles
OUT_BLOCK = 256


def ramp_weights(tile: int, overlap: int) -> torch.Tensor:
    """(tile, tile) blending weights: 1 inside, ramping linearly down to 1/(overlap+1) at edges."""
    i = torch.arange(tile, dtype=torch.float32)
    ramp = overlap // 2 + 1
    w1 = torch.minimum(torch.minimum((i + 1) / ramp, (tile - i) / ramp), torch.ones(()))
    return w1[:, None] * w1[None, :]


def open_raster(path: str | os.PathLike):
    """Open a raster with rasterio, as a :class:`DataError` naming the file when that fails.

    Args:
        path: the raster file (GeoTIFF, PNG, VRT, ... anything GDAL reads).

    Returns:
        The open ``rasterio`` dataset (close it, or use it as a context manager).

    Raises:
        DataError: the file does not exist or GDAL cannot read it.
    """
    import rasterio

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: raster not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NotGeoreferencedWarning for plain PNG/TIFF
            return rasterio.open(path)
    except rasterio.errors.RasterioIOError as err:
        raise DataError(f"{path}: not a raster rasterio can read ({err})") from None


def _check_bands(ds, path: Path, bands: Sequence[int] | None, scale: float | None) -> tuple[int, ...]:
    if bands is None:
        if ds.count != 3:
            raise DataError(f"{path}: has {ds.count} band(s); expected an RGB raster of 3 bands "
                            f"(or choose them with --bands, e.g. --bands 1,2,3)")
        bands = (1, 2, 3)
    bands = tuple(int(b) for b in bands)
    if len(bands) != 3 or not all(1 <= b <= ds.count for b in bands):
        raise GeovitError(f"--bands {','.join(map(str, bands))}: expected 3 band numbers in 1..{ds.count} for {path}")
    dtype = ds.dtypes[bands[0] - 1]
    if dtype != "uint8" and scale is None:
        raise DataError(f"{path}: band dtype is {dtype}; the model expects 8-bit RGB (0-255). "
                        "Convert the raster, or pass --scale S to multiply values into 0-255")
    return bands


def grid_problems(ref, other) -> list[str]:
    """How the pixel grid of ``other`` differs from ``ref`` (CRS, shape, transform); empty when equal.

    Args:
        ref: a rasterio dataset (or anything with ``crs``, ``height``, ``width``, ``transform``).
        other: the same for the second raster.

    Returns:
        One short description per difference, e.g. ``"CRS EPSG:32615 vs EPSG:4326"``.
    """
    problems = []
    if ref.crs != other.crs:
        problems.append(f"CRS {ref.crs} vs {other.crs}")
    if (ref.height, ref.width) != (other.height, other.width):
        problems.append(f"shape {ref.width}x{ref.height} vs {other.width}x{other.height}")
    if not ref.transform.almost_equals(other.transform):
        problems.append(f"transform {tuple(ref.transform)[:6]} vs {tuple(other.transform)[:6]}")
    return problems


def warp_onto(ds, ref, resampling: str = "bilinear"):
    """A ``WarpedVRT`` of ``ds`` on the pixel grid of ``ref`` (pixels outside ``ds`` are masked).

    The VRT carries an alpha band, so ``read_masks`` reports pixels that fall outside ``ds``
    (and source nodata) as invalid.

    Args:
        ds: the rasterio dataset to warp.
        ref: the dataset whose CRS, transform and shape the result takes.
        resampling: a ``rasterio.enums.Resampling`` name (``"nearest"`` for masks and classes).

    Returns:
        The open ``WarpedVRT`` (close it before ``ds``).

    Raises:
        DataError: either raster has no CRS.
    """
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    if ds.crs is None or ref.crs is None:
        missing = ref.name if ref.crs is None else ds.name
        raise DataError(f"--reproject needs a CRS on both rasters; {missing} has none")
    return WarpedVRT(ds, crs=ref.crs, transform=ref.transform, width=ref.width, height=ref.height,
                     resampling=Resampling[resampling], add_alpha=True)


def bounds_overlap(ref, other) -> bool:
    """Whether the footprint of ``other`` (reprojected to the CRS of ``ref``) intersects ``ref``.

    Rasters without a CRS are compared in pixel coordinates of their transforms.
    """
    from rasterio.warp import transform_bounds

    left, bottom, right, top = other.bounds
    if ref.crs is not None and other.crs is not None and ref.crs != other.crs:
        left, bottom, right, top = transform_bounds(other.crs, ref.crs, left, bottom, right, top, densify_pts=21)
    r_left, r_bottom, r_right, r_top = ref.bounds
    lo_x, hi_x = max(min(left, right), min(r_left, r_right)), min(max(left, right), max(r_left, r_right))
    lo_y, hi_y = max(min(bottom, top), min(r_bottom, r_top)), min(max(bottom, top), max(r_bottom, r_top))
    return hi_x > lo_x and hi_y > lo_y


def window_grid(size: int, window: int, stride: int) -> tuple[int, int]:
    """Number of windows along one axis and the padding past the raster edge of the last one.

    Windows start at ``0, stride, 2·stride, ...``; the grid is regular (unlike
    :func:`~geovit.data.change_transforms.tile_origins`, whose last tile is shifted back to end
    at the edge) so that it can be written as a raster. The last window may reach past the edge:
    those pixels are read as nodata. A raster smaller than one window holds one window.

    Args:
        size: raster height or width in pixels.
        window: window side.
        stride: step between window origins.

    Returns:
        ``(count, overhang)``: windows along the axis, pixels of the last one outside the raster.

    Raises:
        GeovitError: ``window`` or ``stride`` not positive.

    >>> window_grid(100, 32, 32)
    (4, 28)
    >>> window_grid(96, 32, 16)
    (5, 0)
    """
    if window <= 0 or stride <= 0:
        raise GeovitError(f"window={window}, stride={stride}: both must be positive")
    count = 1 if size <= window else -(-(size - window) // stride) + 1
    return count, max(0, (count - 1) * stride + window - size)


class Progress:
    """Progress of a long loop: a tqdm bar on a terminal, plain lines (about every 10 %) otherwise.

    Args:
        total: number of steps.
        desc: label of the bar / lines.
        unit: unit of the steps.
        enabled: ``False`` prints nothing; ``None`` (default): a bar when stderr is a terminal,
            lines otherwise.
        stream: where the lines go (default ``sys.stderr``).
    """

    def __init__(self, total: int, desc: str, unit: str = "window", enabled: bool | None = None, stream=None):
        import sys

        self.total, self.desc, self.unit, self.done = int(total), desc, unit, 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled is not False
        self.t0, self._next = time.perf_counter(), 0.1
        self.bar = None
        if self.enabled and enabled is None and getattr(self.stream, "isatty", lambda: False)():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=desc, unit=unit, file=self.stream)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more steps done."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and self.total and self.done / self.total >= self._next - 1e-12:
            rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}s ({100 * self.done / self.total:.0f} %, "
                  f"{rate:.1f} {self.unit}s/s)", file=self.stream, flush=True)
            while self._next <= self.done / self.total + 1e-12:
                self._next += 0.1

    def close(self) -> None:
        """Finish the bar."""
        if self.bar is not None:
            self.bar.close()


def _read(ds, bands, y: int, x: int, h: int, w: int, scale: float | None) -> np.ndarray:
    """(3, h, w) float32 read of a window, zero-filled where it leaves the raster."""
    from rasterio.windows import Window

    out = np.zeros((3, h, w), np.float32)
    hh, ww = min(h, ds.height - y), min(w, ds.width - x)
    out[:, :hh, :ww] = ds.read(list(bands), window=Window(x, y, ww, hh), out_dtype="float32")
    np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)  # such pixels are nodata (see _valid)
    return out * scale if scale is not None else out


def alpha_band(ds) -> int | None:
    """The alpha band that :func:`warp_onto` added to ``ds`` (a ``WarpedVRT``), else None.

    GDAL does not always derive the band masks of a warped VRT from its alpha band (it does for
    RGB + alpha, not for other band counts), so readers check the alpha band themselves.
    """
    src = getattr(ds, "src_dataset", None)
    return ds.count if src is not None and ds.count == src.count + 1 else None


def _valid(ds, bands, y: int, x: int, h: int, w: int) -> np.ndarray:
    from rasterio.windows import Window

    win = Window(x, y, w, h)
    valid = (ds.read_masks(list(bands), window=win) > 0).all(axis=0)
    if any(np.dtype(ds.dtypes[b - 1]).kind == "f" for b in bands):  # NaN is nodata, declared or not
        valid &= np.isfinite(ds.read(list(bands), window=win)).all(axis=0)
    alpha = alpha_band(ds)
    return valid if alpha is None else valid & (ds.read(alpha, window=win) > 0)


def _column_blocks(width: int, xs: list[int], tile: int, block_width: int) -> list[tuple[int, int, list[int]]]:
    """Output column ranges [c0, c1) of about ``block_width`` and the tile origins touching each."""
    step = -(-max(block_width, tile) // OUT_BLOCK) * OUT_BLOCK  # whole output tiles per block
    blocks = []
    for c0 in range(0, width, step):
        c1 = min(width, c0 + step)
        blocks.append((c0, c1, [x for x in xs if x < c1 and x + tile > c0]))
    return blocks


def _axis(size: int, tile: int, stride: int, pad: bool, name: str, path: Path) -> tuple[int, list[int]]:
    """Tile length and origins along one axis (rasters smaller than a tile are padded or used whole)."""
    if size >= tile:
        return tile, tile_origins(size, tile, stride)
    if pad:
        return tile, [0]
    if size % PATCH:
        raise DataError(f"{path}: {name} {size} is smaller than the tile and not a multiple of {PATCH}; "
                        "enable padding (drop --no-pad) or crop the raster")
    return size, [0]


class _AlignedRows:
    """Buffer the finished rows of one column block; write them in bands of whole output tiles.

    Finished rows arrive in steps of the tile stride, which do not line up with the GeoTIFF's
    256-row tiles. Writing them directly would make GDAL compress a partial tile, then read it
    back and rewrite it (slower, and the file grows). Memory: < 2 bands x block width.
    """

    def __init__(self, writers: list, c0: int, c1: int):
        self.writers, self.c0, self.c1 = writers, c0, c1
        self.y0 = 0
        self.buffers: list[np.ndarray] | None = None

    def add(self, arrays: list[np.ndarray]) -> None:
        self.buffers = arrays if self.buffers is None else [np.concatenate([b, a]) for b, a in zip(self.buffers, arrays)]
        while len(self.buffers[0]) >= OUT_BLOCK:
            self._write(OUT_BLOCK)

    def close(self) -> None:
        if self.buffers is not None and len(self.buffers[0]):
            self._write(len(self.buffers[0]))

    def _write(self, rows: int) -> None:
        from rasterio.windows import Window

        win = Window(self.c0, self.y0, self.c1 - self.c0, rows)
        for (dst, _), buf in zip(self.writers, self.buffers):
            dst.write(buf[:rows], 1, window=win)
        self.buffers = [buf[rows:] for buf in self.buffers]
        self.y0 += rows


def predict_change_raster(predict_fn: PredictFn, before: str | os.PathLike, after: str | os.PathLike,
                          out: str | os.PathLike, *, tile: int = 256, overlap: int | None = None, batch_size: int = 4,
                          threshold: float = 0.5, bands: Sequence[int] | None = None, scale: float | None = None,
                          reproject: bool = False, pad: bool = True, prob_out: str | os.PathLike | None = None,
                          overlay: str | os.PathLike | None = None, block_width: int = 2048,
                          device: str | torch.device = "cpu", progress: bool = True, gdal_cache_mb: int = 16) -> dict:
    """Predict change between two co-registered rasters; see the module docstring. Returns stats.

    ``overlap`` defaults to ``tile // 4`` (64 px for 256 tiles); ``gdal_cache_mb`` caps GDAL's
    block cache for the duration of the call.
    """
    import rasterio

    before, after, out = Path(before), Path(after), Path(out)
    if tile <= 0 or tile % PATCH:
        raise GeovitError(f"--tile {tile}: must be a positive multiple of {PATCH}")
    overlap = tile // 4 if overlap is None else overlap
    if not 0 <= overlap < tile:
        raise GeovitError(f"--overlap {overlap}: must be in [0, tile={tile})")
    with contextlib.ExitStack() as stack:
        # GDAL's block cache defaults to 5 % of RAM and fills with every block read or written:
        # cap it, or resident memory grows with raster size up to that limit.
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=gdal_cache_mb * 2**20))
        b = stack.enter_context(open_raster(before))
        a = stack.enter_context(open_raster(after))
        bands_b = _check_bands(b, before, bands, scale)
        bands_a = _check_bands(a, after, bands, scale)
        problems = grid_problems(b, a)
        if problems and not reproject:
            raise DataError(f"{before} and {after} are not on the same grid ({'; '.join(problems)}); "
                            "both rasters must share CRS, transform and shape, or pass --reproject to warp "
                            f"{after.name} onto the grid of {before.name}")
        if problems:
            # the alpha band masks pixels outside the warped raster (reported as nodata)
            a = stack.enter_context(warp_onto(a, b, "bilinear"))
        height, width = b.height, b.width
        stride = tile - overlap
        th, ys = _axis(height, tile, stride, pad, "height", before)
        tw, xs = _axis(width, tile, stride, pad, "width", before)
        weight = ramp_weights(max(th, tw), overlap)[:th, :tw]
        blocks = _column_blocks(width, xs, tw, block_width)
        n_tiles = len(ys) * sum(len(bx) for _, _, bx in blocks)

        profile = dict(driver="GTiff", width=width, height=height, count=1, crs=b.crs, transform=b.transform,
                       tiled=True, blockxsize=OUT_BLOCK, blockysize=OUT_BLOCK, compress="deflate", BIGTIFF="IF_SAFER")
        tmp_out = stack.enter_context(atomic_path(out))
        dst = stack.enter_context(rasterio.open(tmp_out, "w", dtype="uint8", nodata=NODATA_OUT, **profile))
        dst_prob = None
        if prob_out is not None:
            tmp_prob = stack.enter_context(atomic_path(prob_out))
            dst_prob = stack.enter_context(rasterio.open(tmp_prob, "w", dtype="float32", nodata=float("nan"), **profile))

        writers = [(dst, "change")] + ([(dst_prob, "prob")] if dst_prob is not None else [])

        def finalise(rows: _AlignedRows, num: torch.Tensor, den: torch.Tensor, r0: int, r1: int) -> int:
            c0, c1 = rows.c0, rows.c1
            prob = (num[:r1 - r0] / den[:r1 - r0]).numpy()
            valid = _valid(b, bands_b, r0, c0, r1 - r0, c1 - c0) & _valid(a, bands_a, r0, c0, r1 - r0, c1 - c0)
            change = np.where(valid, prob > threshold, NODATA_OUT).astype(np.uint8)
            outputs = {"change": change, "prob": np.where(valid, prob, np.nan).astype(np.float32)}
            rows.add([outputs[kind] for _, kind in writers])
            return int((change == 1).sum())

        bar = Progress(n_tiles, "predict", unit="tile", enabled=None if progress else False)
        changed, t0 = 0, time.perf_counter()
        for c0, c1, bx in blocks:
            x_lo, x_hi = bx[0], max(bx[-1] + tw, c1)
            num = torch.zeros(th, c1 - c0)
            den = torch.zeros(th, c1 - c0)
            base = 0  # raster row of num[0]
            rows = _AlignedRows(writers, c0, c1)
            for y in ys:
                shift = y - base
                if shift:  # rows above y are final: no later tile reaches them
                    changed += finalise(rows, num, den, base, y)
                    num = torch.cat([num[shift:], torch.zeros(shift, c1 - c0)])
                    den = torch.cat([den[shift:], torch.zeros(shift, c1 - c0)])
                    base = y
                strip_b = torch.from_numpy(_read(b, bands_b, y, x_lo, th, x_hi - x_lo, scale))
                strip_a = torch.from_numpy(_read(a, bands_a, y, x_lo, th, x_hi - x_lo, scale))
                for i in range(0, len(bx), batch_size):
                    xb = bx[i:i + batch_size]
                    t1 = torch.stack([strip_b[:, :, x - x_lo:x - x_lo + tw] for x in xb]).to(device)
                    t2 = torch.stack([strip_a[:, :, x - x_lo:x - x_lo + tw] for x in xb]).to(device)
                    with torch.no_grad():
                        prob = predict_fn(t1, t2)[:, 0].float().cpu()
                    for x, p in zip(xb, prob):
                        lo, hi = max(x, c0), min(x + tw, c1)  # part of the tile inside this block
                        w = weight[:, lo - x:hi - x]
                        num[:, lo - c0:hi - c0] += p[:, lo - x:hi - x] * w
                        den[:, lo - c0:hi - c0] += w
                    bar.update(len(xb))
            changed += finalise(rows, num, den, base, height)
            rows.close()
        bar.close()
        seconds = time.perf_counter() - t0
        dst.close()
        if dst_prob is not None:
            dst_prob.close()
        if overlay is not None:
            write_overlay(a, bands_a, tmp_out, overlay, scale)
    return {"tiles": n_tiles, "seconds": seconds, "tiles_per_s": n_tiles / max(seconds, 1e-9),
            "height": height, "width": width, "changed_pixels": changed}


def write_overlay(after_ds, bands, change_path: Path, overlay: str | os.PathLike, scale: float | None,
                  max_side: int = 2048) -> None:
    """PNG of the after image (decimated to <= ``max_side``) with change pixels tinted red."""
    import rasterio
    from PIL import Image

    factor = max(1, math.ceil(max(after_ds.height, after_ds.width) / max_side))
    shape = (max(1, after_ds.height // factor), max(1, after_ds.width // factor))
    rgb = after_ds.read(list(bands), out_shape=(3, *shape))
    if scale is not None:
        rgb = rgb * scale
    rgb = np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8).transpose(1, 2, 0))
    with rasterio.open(change_path) as src:
        change = src.read(1, out_shape=shape)
    red, nodata = change == 1, change == NODATA_OUT  # tint in uint8: memory ~ 4 bytes per overlay pixel
    rgb[red] = rgb[red] // 2 + np.array([127, 0, 0], np.uint8)
    rgb[nodata] = rgb[nodata] // 2 + 64
    with atomic_path(overlay) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
