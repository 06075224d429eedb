"""Georeferenced raster I/O: windowed reads, CRS-preserving outputs (rasterio).

* :func:`geovit.geo.sliding_window.predict_change_raster` — sliding-window change prediction of
  two co-registered rasters of any size, memory flat in raster size, GeoTIFF + PNG outputs.
"""
from __future__ import annotations


def __getattr__(name: str):
    if name in ("predict_change_raster", "ramp_weights"):
        from geovit.geo import sliding_window

        return getattr(sliding_window, name)
    raise AttributeError(f"module 'geovit.geo' has no attribute {name!r}")


__all__ = ["predict_change_raster", "ramp_weights"]
