"""Per-patch results as georeferenced points: patch centres, WGS84 coordinates, GeoJSON / GeoPackage.

A geolocated dataset (So2Sat with its ``<split>_geo.h5`` files, :mod:`geovit.data.so2sat`)
gives every sample ``crs`` (``"EPSG:32633"``: the patch's own UTM zone), ``transform`` (six
rasterio ``Affine`` coefficients ``a, b, c, d, e, f`` anchored at the patch's upper-left pixel
corner) and ``city``. :class:`PatchPoints` turns a batch of those into the patch centres —
``x`` / ``y`` in each patch's own CRS and ``lon`` / ``lat`` in EPSG:4326 — and
:func:`write_points` writes one point per patch with its attributes, atomically
(:mod:`geovit._io`), as GeoJSON (RFC 7946: WGS84 longitude / latitude, no ``crs`` member) or,
with a ``.gpkg`` suffix, as a GeoPackage layer in EPSG:4326 (needs ``pyogrio``).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from geovit._io import atomic_path
from geovit.errors import DataError, GeovitError

#: sample keys of a geolocated sample
GEO_SAMPLE_KEYS = ("crs", "transform", "city")
#: decimal places of GeoJSON coordinates (1e-7 degree: about 1 cm, RFC 7946 §11.2 advises not more)
LONLAT_DECIMALS = 7


def has_geolocation(sample: Mapping[str, Any]) -> bool:
    """Whether a sample dict (or a collated batch) carries ``crs``, ``transform`` and ``city``."""
    return all(k in sample for k in GEO_SAMPLE_KEYS)


def _epsg(value: Any, where: str) -> int:
    text = str(value)
    if not text.upper().startswith("EPSG:") or not text[5:].strip().isdigit():
        raise DataError(f"{where}: field 'crs' is {value!r}; expected 'EPSG:<code>'")
    return int(text[5:])


@dataclass
class PatchPoints:
    """Centres of a batch of geolocated patches.

    Attributes:
        epsg: int64 ``(n,)`` EPSG code of each patch's CRS.
        x: float64 ``(n,)`` centre easting in the patch's CRS.
        y: float64 ``(n,)`` centre northing in the patch's CRS.
        lon: float64 ``(n,)`` centre longitude (EPSG:4326).
        lat: float64 ``(n,)`` centre latitude (EPSG:4326).
        city: str ``(n,)``.
    """

    epsg: np.ndarray
    x: np.ndarray
    y: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    city: np.ndarray

    @classmethod
    def from_batch(cls, batch: Mapping[str, Any], height: int, width: int, where: str = "dataset") -> "PatchPoints":
        """The centres of the patches of a collated batch (``crs``, ``transform``, ``city`` lists).

        Args:
            batch: a batch of :func:`geovit.data.collate.pad_channels_collate` (or a dict of
                per-sample lists) with the geolocation keys.
            height: patch rows in pixels.
            width: patch columns in pixels.
            where: how to name the data in messages (e.g. the dataset file).

        Returns:
            The :class:`PatchPoints`.

        Raises:
            DataError: naming ``where``, the sample and the field, for a ``crs`` that is not
                ``EPSG:<code>``, a ``transform`` that is not 6 finite numbers, or lists of
                different lengths.
        """
        crs, transform, city = (list(batch[k]) for k in GEO_SAMPLE_KEYS)
        if not len(crs) == len(transform) == len(city):
            raise DataError(f"{where}: fields crs, transform and city hold {len(crs)}, {len(transform)} and "
                            f"{len(city)} values for one batch; expected one per sample")
        n = len(crs)
        epsg = np.array([_epsg(c, f"{where}, sample {i}") for i, c in enumerate(crs)], np.int64)
        t = np.full((n, 6), np.nan)
        for i, v in enumerate(transform):
            row = np.asarray(v, np.float64).reshape(-1) if v is not None else np.empty(0)
            if row.shape != (6,) or not np.isfinite(row).all():
                raise DataError(f"{where}, sample {i}: field 'transform' is {v!r}; expected 6 finite numbers "
                                "(a, b, c, d, e, f) of the patch's upper-left corner")
            t[i] = row
        ch, cw = height / 2.0, width / 2.0
        x = t[:, 0] * cw + t[:, 1] * ch + t[:, 2]
        y = t[:, 3] * cw + t[:, 4] * ch + t[:, 5]
        lon, lat = to_lonlat(x, y, epsg)
        return cls(epsg, x, y, lon, lat, np.asarray([str(c) for c in city], dtype=str))


def to_lonlat(x: np.ndarray, y: np.ndarray, epsg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitude / latitude (EPSG:4326) of points in per-point CRSs, one reprojection per EPSG code.

    Args:
        x: eastings.
        y: northings.
        epsg: EPSG code of each point.

    Returns:
        ``(lon, lat)`` float64 arrays.

    Raises:
        DataError: an EPSG code that is not a known CRS.
    """
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    from rasterio.warp import transform as warp_points

    x, y, epsg = np.asarray(x, np.float64), np.asarray(y, np.float64), np.asarray(epsg, np.int64)
    lon, lat = np.full(len(x), np.nan), np.full(len(x), np.nan)
    for code in np.unique(epsg):
        sel = epsg == code
        try:
            src = CRS.from_epsg(int(code))
        except CRSError as err:
            raise DataError(f"field 'crs': EPSG:{int(code)} is not a known coordinate reference system "
                            f"({err})") from None
        if int(code) == 4326:
            lon[sel], lat[sel] = x[sel], y[sel]
            continue
        xs, ys = warp_points(src, CRS.from_epsg(4326), x[sel].tolist(), y[sel].tolist())
        lon[sel], lat[sel] = xs, ys
    return lon, lat


def _json_value(v: Any) -> Any:
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if not math.isfinite(float(v)) else float(v)
    if isinstance(v, np.str_):
        return str(v)
    return v


def write_points(path: str | os.PathLike, lon: Sequence[float], lat: Sequence[float],
                 properties: Mapping[str, Sequence[Any]], *, layer: str | None = None) -> Path:
    """Write one point per row, with attributes, as GeoJSON or GeoPackage, atomically.

    Args:
        path: ``*.geojson`` / ``*.json`` (RFC 7946 FeatureCollection) or ``*.gpkg`` (GeoPackage,
            one point layer in EPSG:4326; needs ``pyogrio``).
        lon: longitudes (EPSG:4326).
        lat: latitudes.
        properties: attribute columns, each as long as ``lon`` (numbers, booleans, strings).
        layer: GeoPackage layer name (default: the file's stem).

    Returns:
        ``path``.

    Raises:
        GeovitError: another suffix, columns of other lengths, ``.gpkg`` without ``pyogrio``.
    """
    path = Path(path)
    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    cols = {k: np.asarray(v) for k, v in properties.items()}
    bad = {k: len(v) for k, v in cols.items() if len(v) != len(lon)}
    if len(lat) != len(lon) or bad:
        raise GeovitError(f"write_points {path}: {len(lon)} longitudes, {len(lat)} latitudes, column lengths {bad}")
    suffix = path.suffix.lower()
    if suffix in (".geojson", ".json"):
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write('{"type": "FeatureCollection", "features": [')
            names = list(cols)
            for i in range(len(lon)):
                props = {k: _json_value(cols[k][i]) for k in names}
                geometry = {"type": "Point", "coordinates": [round(float(lon[i]), LONLAT_DECIMALS),
                                                             round(float(lat[i]), LONLAT_DECIMALS)]}
                f.write(("" if i == 0 else ",") + "\n" + json.dumps({"type": "Feature", "geometry": geometry,
                                                                     "properties": props}, allow_nan=False))
            f.write("\n]}\n")
        return path
    if suffix == ".gpkg":
        try:
            import pyogrio.raw
        except ImportError:
            raise GeovitError(f"{path}: writing a GeoPackage needs the pyogrio package (pip install pyogrio); "
                              "or write GeoJSON (.geojson)") from None
        import struct

        wkb = np.array([struct.pack("<BIdd", 1, 1, float(a), float(b)) for a, b in zip(lon, lat)], dtype=object)
        fields, data = [], []
        for k, v in cols.items():
            fields.append(k)
            data.append(v.astype(str) if v.dtype.kind in "USO" else (v.astype(np.int64) if v.dtype.kind == "b" else v))
        with atomic_path(path) as tmp:
            tmp.unlink()  # GDAL creates the file itself
            pyogrio.raw.write(tmp, geometry=wkb, field_data=data, fields=fields, layer=layer or path.stem,
                              driver="GPKG", geometry_type="Point", crs="EPSG:4326")
        return path
    raise GeovitError(f"{path}: unknown points format {path.suffix!r}; expected .geojson or .gpkg")
