"""Georeferenced raster I/O: windowed reads, CRS-preserving outputs (rasterio).

* :mod:`geovit.geo.sliding_window` — :func:`~geovit.geo.sliding_window.predict_change_raster`
  (sliding-window change prediction of two co-registered rasters of any size, memory flat in
  raster size, GeoTIFF + PNG outputs) and the helpers every raster reader here shares
  (opening, grid checks, warping onto a grid, window grids, progress).
* :mod:`geovit.geo.scene` — :class:`~geovit.geo.scene.Scene` (multi-sensor rasters on one grid,
  bands named by a channel table, masks) and :class:`~geovit.geo.scene.WindowPlan` (the window
  grid, per-window channel availability, chunks of bounded memory).
* :mod:`geovit.geo.outputs` — Cloud-Optimized GeoTIFF and zarr writers, map previews.
* :mod:`geovit.geo.points` — per-patch results of geolocated datasets (So2Sat) as points: patch
  centres in their own CRS and in WGS84, GeoJSON / GeoPackage writers.
* :mod:`geovit.geo.synthetic` — :func:`~geovit.geo.synthetic.write_synthetic_scene`, a SYNTHETIC
  Sentinel-2 + Sentinel-1 scene with clouds and a SAR swath gap.
"""
from __future__ import annotations

from geovit._lazy import lazy_getattr

_EXPORTS = {
    "predict_change_raster": "geovit.geo.sliding_window",
    "ramp_weights": "geovit.geo.sliding_window",
    "Scene": "geovit.geo.scene",
    "WindowPlan": "geovit.geo.scene",
    "write_synthetic_scene": "geovit.geo.synthetic",
    "PatchPoints": "geovit.geo.points",
    "write_points": "geovit.geo.points",
}

__getattr__ = lazy_getattr(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
