"""A simulated RCT on satellite-like scenes: the causal version of the paper's simulation study.

Zhu, Jerzak & Daoud (CLeaR 2025, arXiv 2411.02134) test whether a representation *contains*
scale-specific signal by perturbing real Landsat crops and regressing a synthetic outcome on the
embeddings (``Sim/`` in the official code; ``specs/multiscale_cate.md`` §4). They use four
perturbations, each applied to an independent random half of the images:

=========== ============================================= ==================================
name        what is done to the image                     scale at which it is visible
=========== ============================================= ==================================
rotation    the scene is rotated by 90°                   global (every crop)
blob        a small dark square at the unit's location    household (small crops; a pixel
                                                          or two once a large crop is resized)
edge        radial darkening of the surroundings          neighbourhood (large crops only)
contrast    contrast ×1.8 around the scene mean           global (every crop)
=========== ============================================= ==================================

Here the perturbation indicators drive the *treatment effect* instead of the outcome, as the
dossier recommends (§4, "[ours]"): ``τ_i = base + Σ_j β_j·I_ij`` over the perturbations named
in ``effects``, ``W_i ~ Bernoulli(p)``, ``Y_i = μ_i + W_i·τ_i + ε_i``, where ``μ_i`` may depend on
other perturbations (``prognostic``). τ is known, so PEHE and the RATE of any CATE estimate can
be checked against the truth.

Scenes are written as one multi-band GeoTIFF mosaic (uint16 surface reflectance ×10 000, a real
projected CRS, 30 m pixels as Landsat) with every unit at the centre of its own square tile, and
a units CSV with WGS84 coordinates -- the same two files a real RCT analysis starts from
(``data_cards/simulated_rct.md``). Tiles are smaller than the paper's 928 px master tiles so
the whole study runs in seconds; ``tile_px`` and ``small_px`` keep the paper's geometry in
proportion (household blob inside the small crop, edge fade outside it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from geovit._io import atomic_path
from geovit.errors import GeovitError

PERTURBATIONS: tuple[str, ...] = ("rotation", "blob", "edge", "contrast")
BAND_NAMES: tuple[str, ...] = ("red", "green", "blue", "nir")
#: Landsat-like mean surface reflectance per band (red, green, blue, nir).
_BAND_LEVEL = np.array([0.30, 0.33, 0.26, 0.42], dtype=np.float32)
REFLECTANCE_SCALE = 10_000
#: τ = 1 + 3·blob + 3·edge: heterogeneity at the household *and* the neighbourhood scale.
DEFAULT_EFFECTS = {"blob": 3.0, "edge": 3.0}


@dataclass
class SimulatedRCT:
    """What :func:`simulate_rct` wrote: the two files and the units table (with the truth)."""

    units_csv: Path
    raster: Path
    units: pd.DataFrame
    tile_px: int
    small_px: int


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma, mode="wrap")
    return field / (field.std() + 1e-8)


def render_scene(
    flags: Mapping[str, bool],
    rng: np.random.Generator,
    *,
    tile_px: int = 64,
    small_px: int = 16,
    blob_px: int = 3,
    bands: int = 3,
    edge_strength: float = 0.5,
    contrast_factor: float = 1.8,
) -> np.ndarray:
    """One scene (bands, tile_px, tile_px) in reflectance units with the unit at the centre.

    The background is oriented field stripes plus smooth noise, so a 90° rotation changes the
    image at every scale. ``edge`` darkens pixels by up to ``edge_strength`` as the distance from
    the centre grows from the small crop's circumradius (``small_px/√2``) to the tile edge, so no
    small crop ever sees it. ``blob`` is a ``blob_px`` square of near-black at the centre.
    """
    t = tile_px
    yy, xx = np.mgrid[0:t, 0:t].astype(np.float32) + 0.5
    theta = rng.uniform(-np.pi / 12, np.pi / 12)
    period = rng.uniform(6.0, 12.0)
    stripes = np.sin(2 * np.pi * (xx * np.sin(theta) + yy * np.cos(theta)) / period + rng.uniform(0, 2 * np.pi))
    texture = 0.06 * stripes + 0.03 * _smooth_noise(rng, t, sigma=2.0)
    img = _BAND_LEVEL[:bands, None, None] * (1.0 + rng.normal(0, 0.05, size=(bands, 1, 1))) + texture[None]
    img = img + 0.01 * rng.standard_normal((bands, t, t)).astype(np.float32)
    if flags.get("rotation"):
        img = np.rot90(img, k=1, axes=(1, 2))
    if flags.get("contrast"):
        mean = img.mean(axis=(1, 2), keepdims=True)
        img = mean + contrast_factor * (img - mean)
    if flags.get("edge"):
        c = t / 2.0
        r = np.hypot(xx - c, yy - c)
        r0 = small_px / math.sqrt(2.0)
        fade = np.clip((r - r0) / max(c - r0, 1e-6), 0.0, 1.0)
        img = img * (1.0 - edge_strength * fade)[None]
    if flags.get("blob"):
        lo = t // 2 - blob_px // 2
        img = np.array(img)
        img[:, lo:lo + blob_px, lo:lo + blob_px] = 0.02
    return np.clip(img, 1e-3, 1.0).astype(np.float32)  # reflectance never reaches 0


def simulate_outcomes(
    flags: pd.DataFrame,
    *,
    effects: Mapping[str, float] | None = None,
    base_effect: float = 1.0,
    prognostic: Mapping[str, float] | None = None,
    noise_sd: float = 0.5,
    propensity: float = 0.5,
    seed: int = 0,
) -> pd.DataFrame:
    """Treatment, outcome and the true effect for units with perturbation indicators ``flags``.

    ``τ_i = base_effect + Σ effects[j]·flags[j]``; ``μ_i = Σ prognostic[j]·flags[j]``;
    ``W_i ~ Bernoulli(propensity)``; ``Y_i = μ_i + W_i τ_i + N(0, noise_sd²)``.
    Returns columns ``treatment``, ``outcome``, ``tau_true``, ``mu_true`` (index of ``flags``).
    """
    effects = dict(DEFAULT_EFFECTS) if effects is None else dict(effects)
    prognostic = {"rotation": 1.0, "contrast": 1.0} if prognostic is None else dict(prognostic)
    for name in list(effects) + list(prognostic):
        if name not in PERTURBATIONS:
            raise GeovitError(f"unknown perturbation {name!r}; expected one of {', '.join(PERTURBATIONS)}")
    if not 0.0 < propensity < 1.0:
        raise GeovitError(f"propensity must be strictly between 0 and 1, got {propensity}")
    rng = np.random.default_rng(seed)
    n = len(flags)
    tau = base_effect + sum(beta * flags[name].to_numpy(float) for name, beta in effects.items())
    mu = sum(beta * flags[name].to_numpy(float) for name, beta in prognostic.items()) + np.zeros(n)
    w = (rng.random(n) < propensity).astype(np.int64)
    y = mu + w * tau + rng.normal(0.0, noise_sd, n)
    return pd.DataFrame({"treatment": w, "outcome": y, "tau_true": np.asarray(tau, float) + np.zeros(n),
                         "mu_true": mu}, index=flags.index)


def simulate_rct(
    out_dir: str | Path,
    *,
    n_units: int = 600,
    tile_px: int = 64,
    small_px: int = 16,
    blob_px: int = 3,
    bands: int = 3,
    effects: Mapping[str, float] | None = None,
    base_effect: float = 1.0,
    prognostic: Mapping[str, float] | None = None,
    noise_sd: float = 0.5,
    propensity: float = 0.5,
    units_per_village: int = 5,
    crs: str = "EPSG:32718",
    pixel_size: float = 30.0,
    origin: tuple[float, float] = (800_000.0, 8_520_000.0),
    seed: int = 0,
) -> SimulatedRCT:
    """Write ``mosaic.tif`` and ``units.csv`` of a simulated RCT into ``out_dir``.

    Each unit gets its own ``tile_px`` tile in a square grid; its coordinates (``lon``, ``lat``,
    WGS84) are the tile centre, so a crop of width ≤ ``tile_px`` centred on it sees only its own
    scene. The default CRS is UTM 18S (Cusco, the Peru RCT's site), origin in metres.

    The CSV has ``unit_id, lon, lat, village, treatment, outcome`` -- what a real RCT file holds --
    plus the truth: ``tau_true, mu_true`` and the four perturbation indicators.
    """
    import rasterio
    from pyproj import Transformer
    from rasterio.transform import from_origin

    if not 1 <= bands <= len(BAND_NAMES):
        raise GeovitError(f"bands must be 1..{len(BAND_NAMES)}, got {bands}")
    if not 0 < small_px < tile_px:
        raise GeovitError(f"small_px ({small_px}) must be positive and smaller than tile_px ({tile_px})")
    if n_units < 2:
        raise GeovitError(f"n_units must be at least 2, got {n_units}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    flags = pd.DataFrame({name: rng.random(n_units) < 0.5 for name in PERTURBATIONS})
    ncols = math.ceil(math.sqrt(n_units))
    nrows = math.ceil(n_units / ncols)
    mosaic = np.zeros((bands, nrows * tile_px, ncols * tile_px), dtype=np.uint16)
    scene_rng = np.random.default_rng([seed, 1])
    # Grid cells beyond n_units (n not a square) get a plain background scene without perturbations.
    for i in range(nrows * ncols):
        r, c = divmod(i, ncols)
        scene = render_scene(flags.iloc[i].to_dict() if i < n_units else {}, scene_rng, tile_px=tile_px,
                             small_px=small_px, blob_px=blob_px, bands=bands)
        mosaic[:, r * tile_px:(r + 1) * tile_px, c * tile_px:(c + 1) * tile_px] = np.round(
            scene * REFLECTANCE_SCALE).astype(np.uint16)

    transform = from_origin(origin[0], origin[1], pixel_size, pixel_size)
    idx = np.arange(n_units)
    cols = (idx % ncols) * tile_px + tile_px / 2.0
    rows = (idx // ncols) * tile_px + tile_px / 2.0
    x = origin[0] + cols * pixel_size
    y = origin[1] - rows * pixel_size
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)

    outcomes = simulate_outcomes(flags, effects=effects, base_effect=base_effect, prognostic=prognostic,
                                 noise_sd=noise_sd, propensity=propensity, seed=seed + 1)
    units = pd.DataFrame({
        "unit_id": [f"hh{i:05d}" for i in idx],
        "lon": lon, "lat": lat,
        "village": [f"v{i // max(units_per_village, 1):04d}" for i in idx],
    })
    units = pd.concat([units, outcomes, flags.astype(np.int64)], axis=1)

    raster = out / "mosaic.tif"
    profile = dict(driver="GTiff", width=mosaic.shape[2], height=mosaic.shape[1], count=bands,
                   dtype="uint16", crs=crs, transform=transform, tiled=True, blockxsize=256,
                   blockysize=256, compress="deflate")
    with atomic_path(raster) as tmp:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(mosaic)
            dst.descriptions = BAND_NAMES[:bands]
            dst.update_tags(scale_factor=str(1.0 / REFLECTANCE_SCALE), source="geovit causal.simulate (SYNTHETIC)")
    units_csv = out / "units.csv"
    with atomic_path(units_csv) as tmp:
        units.to_csv(tmp, index=False)
    return SimulatedRCT(units_csv=units_csv, raster=raster, units=units, tile_px=tile_px, small_px=small_px)
