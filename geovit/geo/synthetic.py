"""A SYNTHETIC multi-sensor scene: Sentinel-2 and Sentinel-1 stacks, a cloud mask, the true map.

:func:`write_synthetic_scene` writes, on one 10 m UTM grid,

* ``s2.tif``: the 10 Sentinel-2 bands of So2Sat (``S2_B02`` … ``S2_B12``) as uint16 digital
  numbers with the Level-2A convention ``reflectance = DN · 1e-4 - 0.1`` stored as GDAL
  scale / offset (nodata 0). Under clouds the bands hold bright cloud tops, not the ground;
* ``s1.tif``: the 8 Sentinel-1 bands of So2Sat (``S1_B1`` … ``S1_B8``), float32, NaN (nodata)
  in the part of the scene the SAR swath does not cover (``s1_gap``);
* ``cloud_mask.tif``: uint8, 1 = cloud over the Sentinel-2 stack, 0 = clear;
* ``truth.tif``: the class of every window (the window grid of ``geovit predict``), uint8;
* ``scene.json``: sizes, seeds, class names, cloud and swath cover.

Every window of ``window`` pixels is one local climate zone, rendered the way geovit's
synthetic So2Sat training sets are, so a classifier trained on such a set (``geovit demo``,
``geovit train`` without ``--data``) can map the scene:

* ``generator="physical"`` (default; the default synthetic So2Sat set): every 32 px window is
  a scene of that zone's urban form seen by both sensors,
  :func:`geovit.data.so2sat_synthetic.render_scenes`;
* ``generator="simple"``: the per-class offsets and textures of
  :func:`geovit.data.so2sat.write_synthetic` with ``dataset_seed`` (any window size; fast).

Classes form contiguous districts (nearest of random district centres). Files are written
row band by row band (memory flat in scene size) and each one atomically.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from geovit._io import atomic_path, atomic_write_text
from geovit.channels import SO2SAT_BANDS
from geovit.errors import GeovitError

#: value of the ``GEOVIT_SYNTHETIC`` tag every file carries
SYNTHETIC_TAG = "SYNTHETIC scene written by geovit; not real imagery"
#: Level-2A digital numbers: reflectance = DN * S2_SCALE + S2_OFFSET
S2_SCALE, S2_OFFSET = 1e-4, -0.1
NUM_CLASSES = 17


@dataclass(frozen=True)
class SyntheticScene:
    """Paths of the files :func:`write_synthetic_scene` wrote.

    Attributes:
        root: the folder.
        s2: Sentinel-2 stack (10 bands).
        s1: Sentinel-1 stack (8 bands).
        cloud_mask: 1 = cloud over the Sentinel-2 stack.
        truth: class of every window (window grid).
        meta: ``scene.json``.
    """

    root: Path
    s2: Path
    s1: Path
    cloud_mask: Path
    truth: Path
    meta: Path


def class_prototypes(dataset_seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(offsets (17, 18), grain (17,), strength (17,))`` of the synthetic So2Sat classes of a seed.

    The draws of :func:`geovit.data.so2sat.write_synthetic` (its first three draws from
    ``numpy.random.default_rng(seed)``), so scenes and the training set share their classes.
    """
    rng = np.random.default_rng(dataset_seed)
    offsets = rng.normal(0.0, 1.0, size=(NUM_CLASSES, 18))
    grain = rng.uniform(0.6, 3.0, size=NUM_CLASSES)
    strength = rng.uniform(0.3, 1.5, size=NUM_CLASSES)
    return offsets, grain, strength


def _upsample(coarse: np.ndarray, rows: np.ndarray, cols: np.ndarray, cell: float) -> np.ndarray:
    """Bilinear interpolation of a coarse field (one value per ``cell`` pixels) at pixel rows/cols."""
    fr = np.clip(rows / cell, 0, coarse.shape[0] - 1.000001)
    fc = np.clip(cols / cell, 0, coarse.shape[1] - 1.000001)
    r0, c0 = fr.astype(int), fc.astype(int)
    wr, wc = (fr - r0)[:, None], (fc - c0)[None, :]
    a = coarse[r0][:, c0]
    b = coarse[r0][:, c0 + 1]
    c = coarse[r0 + 1][:, c0]
    d = coarse[r0 + 1][:, c0 + 1]
    return (a * (1 - wc) + b * wc) * (1 - wr) + (c * (1 - wc) + d * wc) * wr


def write_synthetic_scene(out: str | os.PathLike, *, height: int = 512, width: int | None = None, window: int = 32,
                          seed: int = 0, dataset_seed: int = 0, clouds: str = "blobs", cloud_cover: float = 0.3,
                          s1_gap: float = 0.15, districts: int | None = None, version: str = "2",
                          generator: str = "physical") -> SyntheticScene:
    """Write a SYNTHETIC Sentinel-2 + Sentinel-1 scene with clouds; see the module docstring.

    Args:
        out: output folder (created).
        height: scene height in pixels.
        width: scene width in pixels (default ``height``).
        window: side of the class windows (So2Sat patches: 32 px).
        seed: seed of the layout, clouds, noise and rendering.
        dataset_seed: ``generator="simple"``: seed of the class prototypes (that of the simple
            synthetic So2Sat training set).
        clouds: ``"blobs"`` (smooth random clouds over ``cloud_cover`` of the scene), ``"half"``
            (the western half, whole windows), or ``"none"``.
        cloud_cover: share of the scene under clouds for ``"blobs"``.
        s1_gap: share of the scene (southern rows, whole windows) outside the SAR swath.
        districts: number of class districts (default: about one per 12 windows, at least 17).
        version: ``generator="simple"``: So2Sat version whose band statistics scale the values.
        generator: ``"physical"`` (32 px windows only) or ``"simple"``; see the module docstring.

    Returns:
        The paths written.

    Raises:
        GeovitError: bad sizes, fractions, cloud mode or generator.
    """
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window
    from scipy.ndimage import gaussian_filter

    from geovit.data.so2sat import CLASSES, SO2SAT_STATS

    width = height if width is None else int(width)
    height = int(height)
    if window < 2 or height < window or width < window:
        raise GeovitError(f"scene {height}x{width} with window {window}: expected window >= 2 and a scene at least "
                          "one window high and wide")
    if generator not in ("physical", "simple"):
        raise GeovitError(f"generator={generator!r}: expected 'physical' or 'simple'")
    if generator == "physical" and window != 32:
        raise GeovitError(f"window={window}: the physical generator renders So2Sat's 32 px patches; use window=32 "
                          "or generator='simple'")
    if clouds not in ("blobs", "half", "none"):
        raise GeovitError(f"clouds={clouds!r}: expected 'blobs', 'half' or 'none'")
    for name, value in (("cloud_cover", cloud_cover), ("s1_gap", s1_gap)):
        if not 0.0 <= value < 1.0:
            raise GeovitError(f"{name}={value}: expected a fraction in [0, 1)")
    if version not in SO2SAT_STATS:
        raise GeovitError(f"version={version!r}: expected one of {', '.join(SO2SAT_STATS)}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    mean, std = (np.asarray(a, np.float64) for a in SO2SAT_STATS[version])
    offsets, grain, strength = class_prototypes(dataset_seed)
    rng = np.random.default_rng(seed)
    rows_w, cols_w = -(-height // window), -(-width // window)

    # class districts: nearest of random centres on the window grid
    n_districts = districts or max(NUM_CLASSES, rows_w * cols_w // 12)
    centres = rng.uniform(0, 1, size=(n_districts, 2)) * (rows_w, cols_w)
    district_class = rng.integers(0, NUM_CLASSES, size=n_districts)
    district_class[:min(n_districts, NUM_CLASSES)] = rng.permutation(NUM_CLASSES)[:min(n_districts, NUM_CLASSES)]

    def classes_of_row(i: int) -> np.ndarray:
        pts = np.stack([np.full(cols_w, i + 0.5), np.arange(cols_w) + 0.5], axis=1)
        d = ((pts[:, None, :] - centres[None]) ** 2).sum(-1)
        return district_class[d.argmin(1)]

    # clouds: a smooth coarse field thresholded at the cover quantile
    cell = 4.0 * window
    coarse = gaussian_filter(rng.normal(size=(int(height / cell) + 3, int(width / cell) + 3)), 1.0, mode="wrap")
    threshold = np.quantile(coarse, 1 - cloud_cover) if cloud_cover > 0 else np.inf
    gap_from = height - int(round(s1_gap * rows_w)) * window if s1_gap > 0 else height

    transform = from_origin(500_000.0, 5_300_000.0, 10.0, 10.0)
    common = dict(driver="GTiff", height=height, width=width, crs="EPSG:32632", transform=transform,
                  compress="deflate", blockysize=window, tiled=False)
    paths = {k: root / f"{k}.tif" for k in ("s2", "s1", "cloud_mask")}
    truth_path, meta_path = root / "truth.tif", root / "scene.json"
    noise_rng = np.random.default_rng([seed, 1])
    cloud_rng = np.random.default_rng([seed, 2])
    cloudy_pixels, gap_pixels = 0, 0
    truth = np.empty((rows_w, cols_w), np.uint8)
    with atomic_path(paths["s2"]) as t2, atomic_path(paths["s1"]) as t1, atomic_path(paths["cloud_mask"]) as tm:
        with rasterio.open(t2, "w", count=10, dtype="uint16", nodata=0, predictor=2, **common) as s2, \
                rasterio.open(t1, "w", count=8, dtype="float32", nodata=float("nan"), predictor=3, **common) as s1, \
                rasterio.open(tm, "w", count=1, dtype="uint8", **common) as cm:
            for dst, names in ((s2, SO2SAT_BANDS[8:]), (s1, SO2SAT_BANDS[:8]), (cm, ("cloud_mask",))):
                for b, name in enumerate(names, start=1):
                    dst.set_band_description(b, name)
                dst.update_tags(GEOVIT_SYNTHETIC=SYNTHETIC_TAG)
            s2.scales, s2.offsets = (S2_SCALE,) * 10, (S2_OFFSET,) * 10
            for i in range(rows_w):
                r0, r1 = i * window, min(height, (i + 1) * window)
                labels = classes_of_row(i)
                truth[i] = labels
                if generator == "physical":
                    from geovit.data.so2sat_synthetic import render_scenes

                    sen1, sen2 = render_scenes(labels, np.random.default_rng([seed, 3, i]))
                    x = np.concatenate([sen1, sen2], axis=-1)            # (cols_w, win, win, 18)
                else:
                    texture = np.empty((cols_w, window, window))
                    fields = noise_rng.normal(size=(cols_w, window, window))
                    for c in np.unique(labels):
                        sel = labels == c
                        f = gaussian_filter(fields[sel], (0, grain[c], grain[c]), mode="wrap")
                        texture[sel] = strength[c] * f / (f.std(axis=(1, 2), keepdims=True) + 1e-12)
                    z = (offsets[labels][:, None, None, :] * 1.2 + texture[..., None]
                         + noise_rng.normal(size=(cols_w, window, window, 18)))
                    x = mean + std * z                                   # (cols_w, win, win, 18)
                band = x.transpose(3, 1, 0, 2).reshape(18, window, cols_w * window)[:, :r1 - r0, :width]
                rows = np.arange(r0, r1) + 0.5
                if clouds == "blobs":
                    cloud = _upsample(coarse, rows, np.arange(width) + 0.5, cell) > threshold
                elif clouds == "half":
                    cloud = np.zeros((r1 - r0, width), bool)
                    cloud[:, :(cols_w // 2) * window] = True
                else:
                    cloud = np.zeros((r1 - r0, width), bool)
                refl = band[8:].copy()
                if cloud.any():
                    tops = 0.55 + 0.1 * cloud_rng.normal(size=(10, int(cloud.sum())))
                    refl[:, cloud] = tops
                dn = np.clip(np.rint((refl - S2_OFFSET) / S2_SCALE), 1, 65535).astype(np.uint16)
                sar = band[:8].astype(np.float32)
                gap = (rows >= gap_from)[:, None] & np.ones((1, width), bool)
                sar[:, gap] = np.nan
                win = Window(0, r0, width, r1 - r0)
                s2.write(dn, window=win)
                s1.write(sar, window=win)
                cm.write(cloud.astype(np.uint8)[None], window=win)
                cloudy_pixels += int(cloud.sum())
                gap_pixels += int(gap.sum())
        with atomic_path(truth_path) as tt:
            from affine import Affine

            with rasterio.open(tt, "w", driver="GTiff", height=rows_w, width=cols_w, count=1, dtype="uint8", nodata=255,
                               crs="EPSG:32632", transform=transform @ Affine.scale(window)) as dst:
                dst.write(truth[None])
                dst.set_band_description(1, "class")
                dst.update_tags(GEOVIT_SYNTHETIC=SYNTHETIC_TAG, CLASSES=json.dumps(list(CLASSES)))
    scene = SyntheticScene(root, paths["s2"], paths["s1"], paths["cloud_mask"], truth_path, meta_path)
    meta = {"synthetic": SYNTHETIC_TAG, "height": height, "width": width, "window": window, "seed": seed,
            "dataset_seed": dataset_seed, "so2sat_version": version, "generator": generator, "crs": "EPSG:32632",
            "transform": list(transform)[:6], "clouds": clouds,
            "cloud_fraction": cloudy_pixels / (height * width), "s1_gap_fraction": gap_pixels / (height * width),
            "classes": list(CLASSES), "files": {k: Path(v).name for k, v in asdict(scene).items() if k != "root"}}
    atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    return scene
