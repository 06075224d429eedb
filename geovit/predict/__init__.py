"""Apply trained channel-adaptive models to scenes and datasets: maps and embeddings.

* :func:`predict_scene` — class map of one or more co-registered rasters (e.g. a Sentinel-2 and
  a Sentinel-1 stack) on the window grid, with per-window channel availability (clouds, swath
  gaps), streaming, Cloud-Optimized GeoTIFF + PNG outputs, sharding over devices;
* :func:`embed_scene` — embeddings of a scene's window grid in a zarr store;
* :func:`embed_dataset` — embeddings of a dataset split in a zarr store;
* :func:`read_embeddings` / :func:`embeddings_at` / :func:`window_index` — open a store; the
  embedding of the window nearest each of a list of points (with non-overlapping windows, the
  window containing it); ``causal.embeddings.embed_units`` reads stores this way;
* :func:`load_model` — a ``geovit train`` / ``geovit pretrain`` checkpoint as a
  :class:`SceneModel` (channel table, trained ids, input size, class names, band statistics).

Examples:
    >>> import tempfile
    >>> from geovit.predict import predict_scene
    >>> from geovit.geo.synthetic import write_synthetic_scene
    >>> scene = write_synthetic_scene(tempfile.mkdtemp(), height=128)   # doctest: +SKIP
    >>> predict_scene("runs/train/checkpoints/last.ckpt", [scene.s2, scene.s1], "map.tif",
    ...               masks=[str(scene.cloud_mask)])                      # doctest: +SKIP
"""
from __future__ import annotations

from geovit._lazy import lazy_getattr

_EXPORTS = {
    "predict_scene": "geovit.predict.scene",
    "embed_scene": "geovit.predict.scene",
    "run_chunk": "geovit.predict.scene",
    "embed_dataset": "geovit.predict.embeddings",
    "read_embeddings": "geovit.predict.embeddings",
    "embeddings_at": "geovit.predict.embeddings",
    "window_index": "geovit.predict.embeddings",
    "load_model": "geovit.predict.model",
    "SceneModel": "geovit.predict.model",
}

__getattr__ = lazy_getattr(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
