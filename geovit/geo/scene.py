"""Multi-sensor scenes on one pixel grid, read window by window with per-band availability.

A *scene* is one or more rasters on one pixel grid — e.g. a Sentinel-2 stack and a Sentinel-1
stack — whose bands are named by a channel table (:mod:`geovit.channels`), so that every band
is a channel id a channel-adaptive model can embed. The inputs are GeoTIFFs (anything GDAL
reads) or zarr / ``xarray`` cubes with dimensions ``(band, y, x)``; rasters on another grid are
warped onto the grid of the first one when ``reproject=True`` (GeoTIFFs through a GDAL
``WarpedVRT``; cubes window by window with ``rasterio.warp.reproject``, reading only the part of
the cube each window needs, so memory stays flat).

Band names come from ``bands`` (one comma list or preset per raster, in band order, ``-`` to
skip a band) or from the files' band descriptions (cube: the ``band`` coordinate). Values are
read as float32 with the files' scale / offset metadata applied (e.g. Sentinel-2 digital numbers
stored as uint16 with scale 1e-4 come back as reflectances).

**Availability.** A pixel of a band is *usable* when it is inside the raster, not the band's
nodata value, not NaN, not masked by GDAL (alpha / internal masks) and not flagged by any mask
that applies to the band (``masks``: a band of an input raster, e.g. a cloud mask stored with
the optical bands, or a separate mask raster; values > 0 mean masked). In every window a band
whose unusable share exceeds ``max_missing`` is dropped for that window
(:class:`WindowPlan`); a window with no band left is nodata.

The window grid (:class:`WindowPlan`) is regular and anchored at the scene's origin: window
``(i, j)`` covers rows ``[i·stride, i·stride + window)`` and columns ``[j·stride, j·stride +
window)``; the last windows may reach past the edge (those pixels are unusable). The grid is
processed in *chunks* of windows whose memory is bounded, whatever the scene size.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from geovit.channels import PRESETS, TABLES
from geovit.errors import DataError, GeovitError
from geovit.geo.sliding_window import alpha_band, bounds_overlap, grid_problems, open_raster, warp_onto, window_grid

#: tokens in ``bands`` that skip a band
SKIP = ("-", "_", "")
#: output tile side of the window-grid rasters; chunks never straddle a tile column
OUT_TILE = 256


# ------------------------------------------------------------------------------------- sources
def open_zarr_store(path: Path, label: object = None):
    """``xarray.open_zarr`` of a local store, with one :class:`DataError` for a folder that is not one.

    Args:
        path: the store (a folder).
        label: how the error names it (default: the path).

    Returns:
        The lazily opened ``xarray.Dataset``.

    Raises:
        DataError: zarr / xarray cannot read the folder.
    """
    import xarray as xr

    try:
        with warnings.catch_warnings():  # "no consolidated metadata" is fine for a local store
            warnings.simplefilter("ignore", RuntimeWarning)
            return xr.open_zarr(path, consolidated=None)
    except Exception as err:  # zarr raises several types for a foreign folder
        raise DataError(f"{path if label is None else label}: not a zarr store readable by xarray ({err})") from None


def cube_grid(da, name: object):
    """``(da, transform)`` of a (band, y, x) or (y, x) xarray cube on a regular grid.

    The cube comes back as (band, y, x); the affine transform maps pixel corners from its
    pixel-centre coordinates (``x``/``lon``/``longitude``, ``y``/``lat``/``latitude``).

    Raises:
        DataError: naming the cube, for other dimensions, fewer than 2 pixels or irregular spacing.
    """
    from rasterio.transform import Affine

    ydim = next((d for d in ("y", "lat", "latitude") if d in da.dims), None)
    xdim = next((d for d in ("x", "lon", "longitude") if d in da.dims), None)
    others = [d for d in da.dims if d not in (ydim, xdim)]
    if ydim is None or xdim is None or len(others) > 1:
        raise DataError(f"cube {name}: dimensions {tuple(da.dims)}; expected (band, y, x) or (y, x)")
    bare = [d for d in (xdim, ydim) if d not in da.coords]
    if bare:
        raise DataError(f"cube {name}: dimension(s) {bare} have no coordinate values; expected 1-D pixel-centre "
                        f"coordinates {xdim!r} / {ydim!r} in the cube's CRS")
    da = da.transpose(*others, ydim, xdim) if others else da.expand_dims("band")
    xs, ys = np.asarray(da[xdim].values, float), np.asarray(da[ydim].values, float)
    if len(xs) < 2 or len(ys) < 2:
        raise DataError(f"cube {name}: needs at least 2 pixels along {xdim!r} and {ydim!r}")
    dx, dy = xs[1] - xs[0], ys[1] - ys[0]
    if not (np.allclose(np.diff(xs), dx, rtol=1e-6) and np.allclose(np.diff(ys), dy, rtol=1e-6)):
        raise DataError(f"cube {name}: coordinates {xdim!r} / {ydim!r} are not a regular grid")
    return da, Affine(dx, 0.0, xs[0] - dx / 2, 0.0, dy, ys[0] - dy / 2)


class _RasterioSource:
    """A GeoTIFF (or any GDAL raster), possibly warped onto a reference grid."""

    kind = "raster"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.name = str(path)
        self._stack = contextlib.ExitStack()
        self.ds = self._stack.enter_context(open_raster(self.path))
        self.base = self.ds
        self.count = self.ds.count
        self.descriptions = tuple(self.ds.descriptions)
        self.scales = np.asarray(self.ds.scales or [1.0] * self.count, np.float64)
        self.offsets = np.asarray(self.ds.offsets or [0.0] * self.count, np.float64)

    # grid attributes used by grid_problems / bounds_overlap
    crs = property(lambda self: self.ds.crs)
    transform = property(lambda self: self.ds.transform)
    height = property(lambda self: self.ds.height)
    width = property(lambda self: self.ds.width)
    bounds = property(lambda self: self.base.bounds)

    def warp(self, ref, resampling: str) -> None:
        """Read through a warped VRT on the grid of ``ref`` from now on."""
        self.ds = self._stack.enter_context(warp_onto(self.base, ref, resampling))

    def read(self, indexes: Sequence[int], r0: int, c0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """``(values float32, valid bool)`` of bands ``indexes`` (1-based) over a window inside the raster."""
        from rasterio.windows import Window

        win = Window(c0, r0, w, h)
        idx = [int(i) for i in indexes]
        data = self.ds.read(idx, window=win, out_dtype="float32")
        valid = self.ds.read_masks(idx, window=win) > 0
        valid &= np.isfinite(data)
        alpha = alpha_band(self.ds)
        if alpha is not None:  # outside the warped raster, or source nodata
            valid &= self.ds.read(alpha, window=win)[None] > 0
        sel = np.asarray(idx) - 1
        nodata = self.base.nodatavals
        for k, i in enumerate(sel):  # GDAL masks cover nodata; compare values too (warped VRTs, odd files)
            if nodata[i] is not None and not np.isnan(nodata[i]):
                valid[k] &= data[k] != np.float32(nodata[i])
        scale, offset = self.scales[sel], self.offsets[sel]
        if np.any(scale != 1) or np.any(offset != 0):
            data = data * scale.astype(np.float32)[:, None, None] + offset.astype(np.float32)[:, None, None]
        return data, valid

    def close(self) -> None:
        """Close the raster (and its VRT)."""
        self._stack.close()


def _cube_crs(da, where: str):
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    candidates = [da.attrs.get(k) for k in ("crs", "crs_wkt", "spatial_ref")]
    if "spatial_ref" in da.coords:
        candidates += [da.coords["spatial_ref"].attrs.get(k) for k in ("crs_wkt", "spatial_ref")]
    for value in candidates:
        if value:
            try:
                return CRS.from_user_input(value)
            except CRSError as err:
                raise DataError(f"{where}: CRS attribute {value!r} is not a coordinate reference system ({err})") from None
    return None


class _CubeSource:
    """A zarr store or ``xarray`` cube with dimensions ``(band, y, x)`` and regular coordinates."""

    kind = "cube"

    def __init__(self, obj: Any, name: str):
        import xarray as xr
        self.name = name
        if isinstance(obj, xr.Dataset):
            names = [v for v in obj.data_vars if v != "spatial_ref"]
            if len(names) != 1:
                raise DataError(f"cube {name}: holds variables {names}; expected exactly one (band, y, x) variable")
            obj = obj[names[0]]
        da, self.transform = cube_grid(obj, name)
        self.da = da
        self.crs = _cube_crs(da, f"cube {name}")
        self.count, self.height, self.width = (int(n) for n in da.shape)
        band_dim = da.dims[0]
        self.descriptions = (tuple(str(b) for b in da[band_dim].values) if band_dim in da.coords
                             else (None,) * self.count)
        self.fill = da.attrs.get("_FillValue", da.attrs.get("nodata", da.encoding.get("_FillValue")))

    @property
    def bounds(self):
        """``(west, south, east, north)`` of the cube (in its own CRS, also once warped)."""
        from rasterio.coords import BoundingBox
        from rasterio.transform import array_bounds

        if self.warped:
            west, south, east, north = array_bounds(self.src_height, self.src_width, self.src_transform)
        else:
            west, south, east, north = array_bounds(self.height, self.width, self.transform)
        return BoundingBox(west, south, east, north)

    def warp(self, ref, resampling: str) -> None:
        """Read on the grid of ``ref`` from now on, reprojecting each requested window (see :meth:`read`).

        Raises:
            DataError: the cube or ``ref`` has no CRS.
        """
        from rasterio.enums import Resampling

        if self.crs is None or ref.crs is None:
            missing = ref.name if ref.crs is None else f"cube {self.name}"
            raise DataError(f"--reproject needs a CRS on both rasters; {missing} has none (cubes: an attribute "
                            "'crs' / 'crs_wkt' or a CF 'spatial_ref' coordinate)")
        self.src_crs, self.src_transform = self.crs, self.transform
        self.src_height, self.src_width = self.height, self.width
        self.crs, self.transform, self.height, self.width = ref.crs, ref.transform, ref.height, ref.width
        self.resampling = Resampling[resampling]
        self.warped = True

    warped = False
    #: source pixels read beyond a window's footprint on each side (room for the resampling kernel)
    WARP_PAD = 3

    def _read_block(self, sel: list[int], r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """Values of bands ``sel`` (0-based) over rows ``[r0, r1)``, columns ``[c0, c1)`` of the cube itself."""
        return np.asarray(self.da[sel, r0:r1, c0:c1].values, dtype=np.float32)

    def _nodata(self, data: np.ndarray) -> np.ndarray:
        valid = np.isfinite(data)
        if self.fill is not None and np.isfinite(float(self.fill)):
            valid &= data != np.float32(self.fill)
        return valid

    def _read_warped(self, sel: list[int], r0: int, c0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        from rasterio.transform import Affine
        from rasterio.warp import reproject, transform as warp_points

        dst_transform = self.transform @ Affine.translation(c0, r0)
        data = np.full((len(sel), h, w), np.nan, np.float32)
        # the window's footprint in the cube's pixels: its edges, densified, reprojected
        t = np.linspace(0.0, 1.0, 9)
        cols = np.concatenate([t * w, np.full_like(t, w), t[::-1] * w, np.zeros_like(t)])
        rows = np.concatenate([np.zeros_like(t), t * h, np.full_like(t, h), t[::-1] * h])
        xs, ys = dst_transform @ (cols, rows)
        if self.src_crs != self.crs:
            xs, ys = warp_points(self.crs, self.src_crs, np.asarray(xs).tolist(), np.asarray(ys).tolist())
        sc, sr = ~self.src_transform @ (np.asarray(xs), np.asarray(ys))
        if not (np.all(np.isfinite(sc)) and np.all(np.isfinite(sr))):
            return data, np.zeros(data.shape, bool)
        pad = self.WARP_PAD
        sr0, sr1 = max(int(np.floor(sr.min())) - pad, 0), min(int(np.ceil(sr.max())) + pad, self.src_height)
        sc0, sc1 = max(int(np.floor(sc.min())) - pad, 0), min(int(np.ceil(sc.max())) + pad, self.src_width)
        if sr1 <= sr0 or sc1 <= sc0:  # the window lies outside the cube
            return data, np.zeros(data.shape, bool)
        block = self._read_block(sel, sr0, sr1, sc0, sc1)
        block = np.where(self._nodata(block), block, np.float32(np.nan))
        src_transform = self.src_transform @ Affine.translation(sc0, sr0)
        if src_transform.e > 0:  # south-up cube (y ascending): GDAL wants north-up rows
            block = block[:, ::-1]
            src_transform = src_transform @ Affine.translation(0, block.shape[1]) @ Affine.scale(1, -1)
        reproject(np.ascontiguousarray(block), data, src_transform=src_transform, src_crs=self.src_crs,
                  src_nodata=np.nan, dst_transform=dst_transform, dst_crs=self.crs, dst_nodata=np.nan,
                  resampling=self.resampling)
        return data, np.isfinite(data)

    def read(self, indexes: Sequence[int], r0: int, c0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """``(values float32, valid bool)`` of bands ``indexes`` (1-based) over a window inside the grid.

        The grid is the cube's own, or after :meth:`warp` the reference grid: then only the cube
        pixels under the window's footprint (plus :attr:`WARP_PAD`) are read and reprojected
        (``rasterio.warp.reproject``); pixels outside the cube, NaN or the fill value are not valid.
        """
        sel = [int(i) - 1 for i in indexes]
        if self.warped:
            return self._read_warped(sel, r0, c0, h, w)
        data = self._read_block(sel, r0, r0 + h, c0, c0 + w)
        return data, self._nodata(data)

    def close(self) -> None:
        """Nothing to close (xarray manages the store)."""


def _open_source(raster: Any):
    import xarray as xr

    if isinstance(raster, (xr.DataArray, xr.Dataset)):
        return _CubeSource(raster, getattr(raster, "name", None) or "<xarray cube>")
    path = Path(raster)
    if not path.exists():
        raise DataError(f"{path}: raster not found")
    if path.is_dir() or path.suffix == ".zarr":
        return _CubeSource(open_zarr_store(path), str(path))
    return _RasterioSource(path)


# ---------------------------------------------------------------------------------------- scene
@dataclass(frozen=True)
class SceneBand:
    """A band of an input raster used as a model channel.

    Attributes:
        source: index of the raster in the scene's inputs.
        index: 1-based band number in that raster.
        name: channel name in the table.
        channel_id: absolute channel id (row of the channel table).
    """

    source: int
    index: int
    name: str
    channel_id: int


@dataclass(frozen=True)
class SceneMask:
    """A mask (values > 0 = masked): a band of an input raster or a band of a separate raster.

    Attributes:
        source: index of the raster holding it (separate mask files come after the inputs).
        index: 1-based band number.
        targets: positions in :attr:`Scene.bands` of the bands it masks.
        label: how the user named it (for messages).
    """

    source: int
    index: int
    targets: tuple[int, ...]
    label: str


def _names_of(spec: str | Sequence[str] | None, table: str) -> list[str] | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec in PRESETS and "," not in spec and PRESETS[spec][0] == table:
            return list(PRESETS[spec][1])
        return [p.strip() for p in spec.split(",")]
    return [str(p).strip() for p in spec]


class Scene:
    """Input rasters on one grid, their bands as channel ids, masks; see the module docstring.

    Args:
        rasters: GeoTIFF paths, zarr store paths or ``xarray`` cubes; the first one's grid is the
            scene's grid.
        table: channel table naming the bands (``geovit.channels.TABLES`` key).
        bands: ``None`` (band descriptions), or one entry per raster: a preset of ``table``, a
            comma string or a list of band names in band order (``-`` skips a band; a name that is
            not in the table must be a mask named in ``masks``), or ``None`` for that raster's
            descriptions.
        masks: mask specs ``SOURCE`` or ``SOURCE=TARGETS``: SOURCE is a band name of an input or a
            mask raster file; TARGETS a preset or comma list of channel names it applies to
            (default: the bands of the raster holding the mask band, or of the first raster for a
            mask file).
        channel_ids: the ids a model can use (e.g. those it was trained on); other bands are
            left out (listed in :attr:`notes`). ``None``: every id of the table.
        reproject: warp rasters on another grid onto the first one's grid (``resampling`` for
            data, nearest for masks); otherwise a different grid is an error.
        resampling: a ``rasterio.enums.Resampling`` name for reprojected data bands (default
            ``"bilinear"``; ``"nearest"`` keeps the source values).

    Attributes:
        bands: the bands used as channels, in ascending channel id.
        masks: the masks.
        notes: human-readable remarks (bands left out and why).

    Raises:
        DataError: unreadable rasters, rasters that do not overlap, different grids without
            ``reproject``, band counts that do not match ``bands``.
        GeovitError: band names outside the table, duplicate channels, no usable band, bad masks.
    """

    def __init__(self, rasters: Sequence[Any], *, table: str = "so2sat",
                 bands: Sequence[str | Sequence[str] | None] | None = None, masks: Sequence[str] = (),
                 channel_ids: Sequence[int] | None = None, reproject: bool = False,
                 resampling: str = "bilinear"):
        if not rasters:
            raise GeovitError("--raster: give at least one input raster")
        if table not in TABLES:
            raise GeovitError(f"channel table {table!r}: unknown; expected one of {', '.join(TABLES)}")
        if bands is not None and len(bands) != len(rasters):
            raise GeovitError(f"--bands: given {len(bands)} time(s) for {len(rasters)} raster(s); give one comma list "
                              "per --raster, in the same order")
        from rasterio.enums import Resampling

        if resampling not in Resampling.__members__:
            raise GeovitError(f"--resampling {resampling}: expected a rasterio resampling method "
                              f"({', '.join(Resampling.__members__)})")
        self.table, self.reproject, self.resampling = table, bool(reproject), resampling
        self.notes: list[str] = []
        self.sources: list[Any] = []
        try:
            for r in rasters:
                self.sources.append(_open_source(r))
            self._align(range(1, len(self.sources)), resampling)
            self._resolve_bands(bands, masks, channel_ids)
        except BaseException:
            self.close()
            raise

    # -- grid -------------------------------------------------------------------------------
    @property
    def ref(self):
        """The first raster (its CRS, transform and shape are the scene's)."""
        return self.sources[0]

    @property
    def crs(self):
        """CRS of the scene grid (the first raster's)."""
        return self.ref.crs

    @property
    def transform(self):
        """Affine transform of the scene grid (the first raster's)."""
        return self.ref.transform

    @property
    def height(self) -> int:
        """Rows of the scene grid."""
        return self.ref.height

    @property
    def width(self) -> int:
        """Columns of the scene grid."""
        return self.ref.width

    def _align(self, which, resampling: str) -> None:
        ref = self.ref
        for i in which:
            src = self.sources[i]
            if not bounds_overlap(ref, src):
                raise DataError(f"{src.name} does not overlap {ref.name} (bounds {tuple(round(v, 3) for v in src.bounds)} "
                                f"vs {tuple(round(v, 3) for v in ref.bounds)}); expected rasters of the same area")
            problems = grid_problems(ref, src)
            if problems and not self.reproject:
                raise DataError(f"{src.name} is not on the grid of {ref.name} ({'; '.join(problems)}); all rasters must "
                                f"share CRS, transform and shape, or pass --reproject to warp them onto {Path(ref.name).name}")
            if problems:
                src.warp(ref, resampling)

    # -- bands ------------------------------------------------------------------------------
    def _resolve_bands(self, bands, masks: Sequence[str], channel_ids) -> None:
        table = TABLES[self.table]
        lowered = {c.lower(): i for i, c in enumerate(table)}
        allowed = set(range(len(table)) if channel_ids is None else (int(i) for i in channel_ids))
        mask_sources = {m.split("=", 1)[0].strip().lower() for m in masks}
        names_by_source: list[list[str | None]] = []
        explicit: list[bool] = []
        for s, src in enumerate(self.sources):
            given = _names_of(None if bands is None else bands[s], self.table)
            if given is not None and len(given) != src.count:
                raise DataError(f"--bands {','.join(given)}: names {len(given)} band(s), but {src.name} has {src.count}")
            names_by_source.append(list(given) if given is not None else [d if d else None for d in src.descriptions])
            explicit.append(given is not None)

        used: list[SceneBand] = []
        seen: dict[int, str] = {}
        band_names: dict[str, tuple[int, int]] = {}
        for s, (src, names) in enumerate(zip(self.sources, names_by_source)):
            for b, name in enumerate(names, start=1):
                if name is None or name in SKIP:
                    continue
                band_names.setdefault(name.lower(), (s, b))
                cid = lowered.get(name.lower())
                if cid is None:
                    if name.lower() in mask_sources:
                        continue
                    if explicit[s]:
                        raise GeovitError(f"--bands: {name!r} (band {b} of {src.name}) is not a channel of table "
                                          f"{self.table!r}; expected one of {', '.join(table)}, '-' to skip the band, "
                                          "or the name of a --mask band")
                    self.notes.append(f"band {b} of {src.name} ({name!r}) is not a {self.table} channel: not used")
                    continue
                where = f"band {b} of {src.name}"
                if cid in seen:
                    raise GeovitError(f"channel {table[cid]} is given twice ({seen[cid]} and {where}); "
                                      "name each channel once (use '-' in --bands to skip a band)")
                seen[cid] = where
                if cid not in allowed:
                    self.notes.append(f"{where} ({table[cid]}): the model was not trained on it: not used")
                    continue
                used.append(SceneBand(s, b, table[cid], cid))
        if not used:
            trained = ", ".join(table[i] for i in sorted(allowed))
            described = [src.name for src, names in zip(self.sources, names_by_source) if any(names)]
            hint = ("" if any(explicit) or described else
                    "; the rasters have no band descriptions, so name their bands with --bands (one comma list per "
                    "raster, in band order)")
            raise GeovitError(f"none of the bands of {', '.join(src.name for src in self.sources)} names a channel the "
                              f"model uses (table {self.table!r}: {trained}){hint}")
        self.bands: list[SceneBand] = sorted(used, key=lambda b: b.channel_id)
        self.masks: list[SceneMask] = [self._resolve_mask(m, band_names) for m in masks]

    def _resolve_mask(self, spec: str, band_names: dict[str, tuple[int, int]]) -> SceneMask:
        source, _, targets = (p.strip() for p in spec.partition("="))
        if not source:
            raise GeovitError(f"--mask {spec!r}: expected SOURCE or SOURCE=CHANNELS (SOURCE a band name or a raster file)")
        if source.lower() in band_names:
            s, b = band_names[source.lower()]
            default = [i for i, band in enumerate(self.bands) if band.source == s]
        elif Path(source).exists():
            self.sources.append(_open_source(source))
            s, b = len(self.sources) - 1, 1
            self._align([s], "nearest")
            default = [i for i, band in enumerate(self.bands) if band.source == 0]
        else:
            known = ", ".join(sorted(band_names)) or "none"
            raise GeovitError(f"--mask {spec!r}: {source!r} is neither a band name of the inputs ({known}) nor an "
                              "existing raster file")
        if targets:
            names = _names_of(targets, self.table) or []
            lowered = {c.lower(): i for i, c in enumerate(TABLES[self.table])}
            ids = {lowered.get(n.lower()) for n in names}
            if None in ids:
                bad = [n for n in names if n.lower() not in lowered]
                raise GeovitError(f"--mask {spec!r}: {bad} are not channels of table {self.table!r}; expected a preset "
                                  f"or names from {', '.join(TABLES[self.table])}")
            chosen = [i for i, band in enumerate(self.bands) if band.channel_id in ids]
            if not chosen:
                raise GeovitError(f"--mask {spec!r}: none of {targets} is among the bands used "
                                  f"({', '.join(b.name for b in self.bands)})")
        else:
            chosen = default
        return SceneMask(s, b, tuple(chosen), source)

    # -- reading ----------------------------------------------------------------------------
    @property
    def channel_ids(self) -> tuple[int, ...]:
        """Channel ids of :attr:`bands` (ascending)."""
        return tuple(b.channel_id for b in self.bands)

    def read(self, r0: int, c0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Values and usability of every used band over rows ``[r0, r0+h)``, columns ``[c0, c0+w)``.

        The region may reach past the raster (those pixels are unusable, value NaN).

        Returns:
            ``(data, usable)``: float32 ``(bands, h, w)`` with scale/offset applied, and bool of the
            same shape (see the module docstring).
        """
        nb = len(self.bands)
        data = np.full((nb, h, w), np.nan, np.float32)
        usable = np.zeros((nb, h, w), bool)
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + h, self.height), min(c0 + w, self.width)
        if rr1 <= rr0 or cc1 <= cc0:
            return data, usable
        inner = (slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
        for s in sorted({b.source for b in self.bands}):
            pos = [i for i, b in enumerate(self.bands) if b.source == s]
            d, v = self.sources[s].read([self.bands[i].index for i in pos], rr0, cc0, rr1 - rr0, cc1 - cc0)
            data[pos, inner[0], inner[1]] = d
            usable[pos, inner[0], inner[1]] = v
        for m in self.masks:
            values, valid = self.sources[m.source].read([m.index], rr0, cc0, rr1 - rr0, cc1 - cc0)
            masked = valid[0] & (values[0] > 0)
            for t in m.targets:
                usable[t, inner[0], inner[1]] &= ~masked
        return data, usable

    def close(self) -> None:
        """Close every raster."""
        for src in self.sources:
            src.close()

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------- windows
@dataclass(frozen=True)
class Chunk:
    """Windows ``[r0, r1) x [c0, c1)`` of the window grid, processed together.

    Attributes:
        index: position in :meth:`WindowPlan.chunks`.
        r0, r1, c0, c1: window-grid rows / columns.
    """

    index: int
    r0: int
    r1: int
    c0: int
    c1: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of windows."""
        return self.r1 - self.r0, self.c1 - self.c0


@dataclass
class ChunkWindows:
    """The windows of one chunk.

    Attributes:
        data: float32 ``(rows, cols, bands, window, window)`` (a view; NaN where not readable).
        usable: bool, same shape.
        missing: float ``(rows, cols, bands)``: unusable share of each band in each window.
        keep: bool ``(rows, cols, bands)``: bands available in each window (missing <= max_missing).
    """

    data: np.ndarray
    usable: np.ndarray
    missing: np.ndarray
    keep: np.ndarray


@dataclass
class WindowPlan:
    """The window grid of a scene, its georeferencing and its chunks (see the module docstring).

    Args:
        scene: the scene.
        window: window side in pixels (the model's input size).
        stride: step between windows (default ``window``: non-overlapping).
        max_missing: a band unusable over more than this share of a window is dropped there.
        chunk_bytes: memory budget of one chunk's windows (float32 data of every band).
        min_chunk_windows: windows per chunk at least (e.g. the batch size).
    """

    scene: Scene
    window: int
    stride: int | None = None
    max_missing: float = 0.1
    chunk_bytes: int = 8 * 2**20
    min_chunk_windows: int = 64
    rows: int = field(init=False)
    cols: int = field(init=False)

    def __post_init__(self) -> None:
        self.stride = self.window if self.stride is None else int(self.stride)
        if self.window < 1 or self.stride < 1:
            raise GeovitError(f"--stride {self.stride} / window {self.window}: both must be positive")
        if not 0.0 <= float(self.max_missing) <= 1.0:
            raise GeovitError(f"--max-missing {self.max_missing}: expected a fraction in [0, 1]")
        self.rows, _ = window_grid(self.scene.height, self.window, self.stride)
        self.cols, _ = window_grid(self.scene.width, self.window, self.stride)

    @property
    def transform(self):
        """Affine transform of the window grid: pixel ``(i, j)`` is centred on window ``(i, j)``.

        With ``stride == window`` the pixels are the windows themselves and the grid's origin is
        the scene's; with overlapping windows each pixel is the ``stride``-wide centre of its window.
        """
        from affine import Affine

        off = (self.window - self.stride) / 2
        return self.scene.transform @ Affine.translation(off, off) @ Affine.scale(self.stride)

    @property
    def num_windows(self) -> int:
        """Windows in the grid."""
        return self.rows * self.cols

    def window_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` coordinates (scene CRS) of the window centres along the columns and the rows."""
        t = self.scene.transform
        if t.b or t.d:
            raise DataError(f"{self.scene.ref.name}: rotated transform {tuple(t)[:6]}; window coordinates need a "
                            "north-up grid")
        cols = np.arange(self.cols) * self.stride + self.window / 2
        rows = np.arange(self.rows) * self.stride + self.window / 2
        return t.c + cols * t.a, t.f + rows * t.e

    def chunk_shape(self) -> tuple[int, int]:
        """Window rows and columns of a chunk (columns inside one output tile column)."""
        per_window = max(1, len(self.scene.bands)) * self.window * self.window * 4
        target = max(int(self.min_chunk_windows), self.chunk_bytes // per_window, 1)
        cols = min(OUT_TILE, 1 << (int(target).bit_length() - 1))  # a power of two: divides the tile side
        cols = min(self.cols, cols)
        rows = max(1, min(self.rows, target // cols))
        return rows, cols

    def chunks(self) -> list[Chunk]:
        """Every chunk, row band by row band, left to right."""
        cr, cc = self.chunk_shape()
        out = []
        for r0 in range(0, self.rows, cr):
            for c0 in range(0, self.cols, cc):
                out.append(Chunk(len(out), r0, min(self.rows, r0 + cr), c0, min(self.cols, c0 + cc)))
        return out

    def read(self, chunk: Chunk) -> ChunkWindows:
        """Read one chunk's windows and decide which bands each window keeps."""
        s, win = self.stride, self.window
        nr, nc = chunk.shape
        h, w = (nr - 1) * s + win, (nc - 1) * s + win
        data, usable = self.scene.read(chunk.r0 * s, chunk.c0 * s, h, w)
        view = np.lib.stride_tricks.sliding_window_view
        dwin = view(data, (win, win), axis=(1, 2))[:, ::s, ::s]      # (bands, nr, nc, win, win)
        uwin = view(usable, (win, win), axis=(1, 2))[:, ::s, ::s]
        missing = 1.0 - uwin.mean(axis=(3, 4), dtype=np.float64)       # (bands, nr, nc)
        keep = missing <= float(self.max_missing) + 1e-12
        return ChunkWindows(dwin.transpose(1, 2, 0, 3, 4), uwin.transpose(1, 2, 0, 3, 4),
                            missing.transpose(1, 2, 0), keep.transpose(1, 2, 0))


def iter_chunks(plan: WindowPlan, chunks: Sequence[Chunk] | None = None) -> Iterator[tuple[Chunk, ChunkWindows]]:
    """``(chunk, windows)`` for every chunk of ``plan`` (or the given ones), read one at a time."""
    for chunk in plan.chunks() if chunks is None else chunks:
        yield chunk, plan.read(chunk)

