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


def _open(path: Path):
    import rasterio

    if not Path(path).is_file():
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


def _check_geometry(b, a) -> list[str]:
    problems = []
    if b.crs != a.crs:
        problems.append(f"CRS {b.crs} vs {a.crs}")
    if (b.height, b.width) != (a.height, a.width):
        problems.append(f"shape {b.width}x{b.height} vs {a.width}x{a.height}")
    if not b.transform.almost_equals(a.transform):
        problems.append(f"transform {tuple(b.transform)[:6]} vs {tuple(a.transform)[:6]}")
    return problems


def _read(ds, bands, y: int, x: int, h: int, w: int, scale: float | None) -> np.ndarray:
    """(3, h, w) float32 read of a window, zero-filled where it leaves the raster."""
    from rasterio.windows import Window

    out = np.zeros((3, h, w), np.float32)
    hh, ww = min(h, ds.height - y), min(w, ds.width - x)
    out[:, :hh, :ww] = ds.read(list(bands), window=Window(x, y, ww, hh), out_dtype="float32")
    return out * scale if scale is not None else out


def _valid(ds, bands, y: int, x: int, h: int, w: int) -> np.ndarray:
    from rasterio.windows import Window

    return (ds.read_masks(list(bands), window=Window(x, y, w, h)) > 0).all(axis=0)


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
        b = stack.enter_context(_open(before))
        a = stack.enter_context(_open(after))
        bands_b = _check_bands(b, before, bands, scale)
        bands_a = _check_bands(a, after, bands, scale)
        problems = _check_geometry(b, a)
        if problems and not reproject:
            raise DataError(f"{before} and {after} are not on the same grid ({'; '.join(problems)}); "
                            "both rasters must share CRS, transform and shape, or pass --reproject to warp "
                            f"{after.name} onto the grid of {before.name}")
        if problems:
            if a.crs is None or b.crs is None:
                raise DataError(f"--reproject needs a CRS on both rasters; {before if b.crs is None else after} has none")
            from rasterio.vrt import WarpedVRT
            from rasterio.enums import Resampling

            # the alpha band masks pixels outside the warped raster (reported as nodata)
            a = stack.enter_context(WarpedVRT(a, crs=b.crs, transform=b.transform, width=b.width, height=b.height,
                                              resampling=Resampling.bilinear, add_alpha=True))
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

        from tqdm.auto import tqdm

        bar = tqdm(total=n_tiles, desc="predict", unit="tile", disable=not progress)
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
