"""A physically motivated SYNTHETIC So2Sat LCZ42: scenes built from urban form, seen by two sensors.

The default writer of ``geovit data synth so2sat``, of ``geovit demo`` and of every "no data
given" fallback (:func:`geovit.data.registry.resolve_data`). It writes the files of the release
(:mod:`geovit.data.so2sat`: same names, keys ``sen1`` / ``sen2`` / ``label``, shapes, float64),
but every patch is *rendered* from a 320 m x 320 m scene instead of being noise around a
class offset, so that:

* the class is a property of the scene (urban form), not of any one band — a Sentinel-2 band
  alone says little about building height, a Sentinel-1 channel alone little about materials;
* Sentinel-1 and Sentinel-2 carry **complementary** information, as in the real data: the
  compact / open high-, mid- and low-rise zones share their cover fractions and materials and
  differ mainly in height, which Sentinel-1 sees (double bounce, layover, radar shadow);
  lightweight vs compact low-rise, paved vs sand, bush vs low plants differ mainly in
  materials and vegetation, which Sentinel-2 sees;
* patches have spatial structure (street blocks, lots, tree crowns, fields, shadows) that a
  masked autoencoder can learn to predict across patches and channels.

Scene model (5 m sub-pixels, 64 x 64, aggregated to the 10 m, 32 x 32 grid of the release):

1. **Urban form per Local Climate Zone** (Stewart & Oke, "Local Climate Zones for Urban
   Temperature Studies", BAMS 93, 2012, Table 3): building surface fraction, pervious surface
   fraction and height of roughness elements are drawn from that table's ranges
   (:data:`LCZ_FORMS`). Built zones are street grids of blocks cut into lots; a lot holds a
   building (footprint, height, roof material) or stays open (paved, grass, trees).
2. **Sentinel-2**: every sub-pixel is one material whose reflectance at the ten So2Sat bands
   is the median of published library spectra (:data:`ENDMEMBERS`); a 10 m pixel is the
   linear mixture of its four sub-pixels; sun shadows (from heights and a drawn sun
   elevation) keep only the diffuse sky light; the 20 m bands (B5-B7, B8A, B11, B12) are
   aggregated to 20 m; scene brightness, residual haze and sensor noise vary.
3. **Sentinel-1** (C band, VV + VH, incidence 30-45 deg, range along image columns): each
   material has a surface / volume backscatter (:data:`BACKSCATTER_DB`); walls facing the
   sensor add a wall-ground **double bounce** proportional to the wall height and a
   **layover** band in front of them; tall objects cast **radar shadow** behind them. The
   eight channels are mutually consistent: single-look complex VH and VV amplitudes are drawn
   from a circular complex Gaussian with the pixel's intensities and co-/cross-pol correlation
   (channels 0-3), and channels 4-7 are the intensities and the off-diagonal element of the
   **Lee-filtered** covariance matrix of those very samples.

What it does not model (see ``data_cards/so2sat_synthetic.md``): radiative transfer, BRDF,
topography, roof-return displacement, building orientations other than the street grid,
cities, seasons beyond a greenness draw, clouds, the class imbalance and the label noise of
the real release. It is a stand-in for trying the methods, never a substitute for the data.

Public API::

    write_synthetic(root, num_samples=2048, seed=0, version="2", generator="physical") -> root
    render_scenes(labels, rng) -> (sen1 (N, 32, 32, 8), sen2 (N, 32, 32, 10))
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geovit.errors import GeovitError

#: Generators :func:`write_synthetic` knows: this module's scene renderer, and the earlier
#: per-class-offset generator of :func:`geovit.data.so2sat.write_synthetic`.
GENERATORS = ("physical", "simple")
#: Recorded in the synthetic-data marker (:func:`geovit.data.registry.resolve_data`) so a folder
#: written by another generator or an older version of this one is written again.
GENERATOR_VERSION = 1
marker_defaults = {"generator": "physical", "generator_version": GENERATOR_VERSION}

_SUB = 64  # 5 m sub-pixels per side
_OUT = 32  # 10 m pixels per side (the release's patch)
_M = 5.0  # metres per sub-pixel

# -------------------------------------------------------------------------------------- materials
#: Sentinel-2 reflectance (B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12) of each material: the median,
#: over the spectra of one class, of the earthlib 1.1.0 spectral library (C. Anderson,
#: ``earthlib/data/spectra.sli``; its urban spectra are the UCSB Santa Barbara urban reflectance
#: library, Herold et al. 2004, its soils the ICRAF-ISRIC world soil spectral library, its
#: canopies PROSAIL simulations), each band averaged over the nominal Sentinel-2A band
#: (centre ± half width, ESA MSI user guide). ``n`` = spectra in the median; ``sd`` = the
#: relative spread of the spectra's brightness (inter-quartile range / 1.35, capped at 0.3),
#: drawn once per scene. Water has no library entry: its values are typical water-leaving
#: reflectances of moderately turbid inland water (near-zero beyond 750 nm, where water absorbs).
ENDMEMBERS: dict[str, tuple[tuple[float, ...], float]] = {
    "asphalt":       ((0.047, 0.051, 0.057, 0.060, 0.064, 0.068, 0.075, 0.079, 0.122, 0.106), 0.18),  # n=18
    "road":          ((0.085, 0.095, 0.102, 0.103, 0.104, 0.105, 0.107, 0.108, 0.140, 0.139), 0.30),  # n=170
    "parking_lot":   ((0.076, 0.081, 0.084, 0.086, 0.087, 0.088, 0.091, 0.091, 0.098, 0.099), 0.18),  # n=48
    "sidewalk":      ((0.209, 0.252, 0.279, 0.286, 0.295, 0.305, 0.308, 0.308, 0.398, 0.422), 0.24),  # n=60
    "comp_shingle":  ((0.106, 0.126, 0.164, 0.168, 0.168, 0.167, 0.165, 0.164, 0.155, 0.141), 0.30),  # n=353
    "clay_tile":     ((0.056, 0.090, 0.196, 0.221, 0.243, 0.252, 0.249, 0.247, 0.539, 0.578), 0.21),  # n=18
    "concrete_tile": ((0.085, 0.095, 0.105, 0.109, 0.112, 0.114, 0.114, 0.113, 0.113, 0.116), 0.30),  # n=31
    "metal":         ((0.193, 0.222, 0.200, 0.210, 0.212, 0.206, 0.197, 0.194, 0.270, 0.250), 0.30),  # n=18
    "concrete":      ((0.188, 0.205, 0.212, 0.211, 0.211, 0.210, 0.208, 0.207, 0.222, 0.208), 0.22),  # n=12 (bridge)
    "gravel_roof":   ((0.087, 0.101, 0.156, 0.165, 0.173, 0.178, 0.178, 0.176, 0.196, 0.195), 0.23),  # n=19
    "grass":         ((0.039, 0.077, 0.036, 0.132, 0.336, 0.389, 0.394, 0.396, 0.185, 0.075), 0.17),  # n=500, LAI 1-3
    "tree":          ((0.033, 0.072, 0.026, 0.131, 0.396, 0.477, 0.479, 0.478, 0.167, 0.051), 0.17),  # n=1047, LAI>=4
    "dry_vegetation": ((0.082, 0.120, 0.177, 0.198, 0.215, 0.231, 0.253, 0.265, 0.409, 0.288), 0.14),  # n=9 (npv)
    "litter":        ((0.061, 0.091, 0.135, 0.165, 0.194, 0.205, 0.229, 0.241, 0.336, 0.229), 0.30),  # n=35
    "soil":          ((0.120, 0.183, 0.280, 0.308, 0.331, 0.349, 0.358, 0.360, 0.479, 0.426), 0.30),  # n=4185
    "dirt":          ((0.105, 0.140, 0.184, 0.199, 0.213, 0.229, 0.245, 0.253, 0.398, 0.415), 0.10),  # n=9
    "sand":          ((0.195, 0.244, 0.278, 0.284, 0.291, 0.297, 0.300, 0.301, 0.378, 0.375), 0.10),  # n=39
    "rock":          ((0.156, 0.186, 0.206, 0.211, 0.217, 0.222, 0.222, 0.222, 0.270, 0.230), 0.30),  # n=15 (bare gravel)
    "water":         ((0.045, 0.055, 0.035, 0.028, 0.010, 0.008, 0.006, 0.006, 0.002, 0.001), 0.30),
}
MATERIALS: tuple[str, ...] = tuple(ENDMEMBERS)
_ID = {name: i for i, name in enumerate(MATERIALS)}

#: C-band backscatter (VV dB, VH dB, co-/cross-pol correlation |rho|) of each material at 37 deg
#: incidence, before the scene's moisture, biomass and wind adjustments: round values within the
#: ranges reported for Sentinel-1 (smooth paved and water darkest, forest canopy brightest in VH;
#: e.g. Ulaby & Long, "Microwave Radar and Radiometric Remote Sensing", 2014, ch. 10-11).
BACKSCATTER_DB: dict[str, tuple[float, float, float]] = {
    "asphalt": (-17.0, -26.0, 0.0), "road": (-15.0, -24.0, 0.0), "parking_lot": (-16.0, -25.0, 0.0),
    "sidewalk": (-13.0, -22.0, 0.0), "comp_shingle": (-11.0, -19.0, 0.05), "clay_tile": (-9.0, -17.0, 0.05),
    "concrete_tile": (-10.0, -18.0, 0.05), "metal": (-7.0, -15.0, 0.1), "concrete": (-13.0, -21.0, 0.0),
    "gravel_roof": (-11.0, -19.0, 0.0), "grass": (-11.0, -18.0, 0.1), "tree": (-7.5, -12.5, 0.15),
    "dry_vegetation": (-12.0, -20.0, 0.05), "litter": (-10.5, -17.5, 0.1), "soil": (-13.0, -21.0, 0.0),
    "dirt": (-12.0, -20.0, 0.0), "sand": (-19.0, -27.0, 0.0), "rock": (-9.0, -17.0, 0.0),
    "water": (-19.0, -28.0, 0.0),
}
_VV0 = np.array([BACKSCATTER_DB[m][0] for m in MATERIALS], dtype=np.float32)
_VH0 = np.array([BACKSCATTER_DB[m][1] for m in MATERIALS], dtype=np.float32)
_RHO0 = np.array([BACKSCATTER_DB[m][2] for m in MATERIALS], dtype=np.float32)
_SPEC0 = np.array([ENDMEMBERS[m][0] for m in MATERIALS], dtype=np.float32)
_SPEC_SD = np.array([ENDMEMBERS[m][1] for m in MATERIALS], dtype=np.float32)
#: fraction of the illumination left in sun shadow (diffuse sky light, bluer than direct sun)
_DIFFUSE = np.array([0.38, 0.33, 0.28, 0.25, 0.22, 0.20, 0.18, 0.18, 0.13, 0.11], dtype=np.float32)
#: the Sentinel-2 bands the release stores at 20 m (B5, B6, B7, B8A, B11, B12)
_S2_20M = np.array([3, 4, 5, 7, 8, 9])
_NESZ = 10 ** (-23.0 / 10)  # Sentinel-1 IW noise-equivalent sigma0 (linear)

#: roof palettes (material, mean share) of the built zones; a scene draws its shares from a
#: Dirichlet around them, a building its roof from the scene's shares. The palettes do not
#: depend on building height (real cities partly couple the two).
_ROOFS = {
    "urban": (("comp_shingle", 0.25), ("clay_tile", 0.15), ("concrete_tile", 0.15), ("metal", 0.10),
              ("concrete", 0.20), ("gravel_roof", 0.15)),
    "lightweight": (("metal", 0.60), ("concrete_tile", 0.15), ("comp_shingle", 0.15), ("dirt", 0.10)),
    "large": (("metal", 0.45), ("concrete", 0.30), ("comp_shingle", 0.15), ("gravel_roof", 0.10)),
    "industry": (("metal", 0.40), ("concrete", 0.30), ("gravel_roof", 0.20), ("comp_shingle", 0.10)),
}


# ------------------------------------------------------------------------------------ urban form
@dataclass(frozen=True)
class LCZForm:
    """Urban-form parameters of one built Local Climate Zone.

    Fractions and heights are the ranges of Stewart & Oke (2012), Table 3; the layout sizes
    (block pitch, street width, lot size, setback, in 5 m sub-pixels) are this generator's
    choices that reproduce those fractions.

    Attributes:
        bsf: building surface fraction range.
        psf: pervious surface fraction range.
        height: height of roughness elements (m) range.
        pitch: street-grid pitch range (sub-pixels).
        street: street width range (sub-pixels).
        lot: lot side range (sub-pixels).
        setback: building setback from the lot edges range (sub-pixels).
        roofs: key of the roof palette.
        tree_share: share of the pervious area under tree crowns.
    """

    bsf: tuple[float, float]
    psf: tuple[float, float]
    height: tuple[float, float]
    pitch: tuple[int, int]
    street: tuple[int, int]
    lot: tuple[int, int]
    setback: tuple[int, int]
    roofs: str = "urban"
    tree_share: float = 0.35


#: LCZ 1-10 (class ids 0-9 of :data:`geovit.data.so2sat.CLASSES`).
LCZ_FORMS: dict[int, LCZForm] = {
    0: LCZForm((0.40, 0.60), (0.00, 0.10), (25, 80), (14, 22), (3, 4), (6, 10), (0, 1)),
    1: LCZForm((0.40, 0.70), (0.00, 0.20), (10, 25), (12, 20), (2, 4), (4, 8), (0, 1)),
    2: LCZForm((0.40, 0.70), (0.00, 0.30), (3, 10), (10, 18), (2, 3), (3, 6), (0, 1)),
    3: LCZForm((0.20, 0.40), (0.30, 0.40), (25, 80), (18, 28), (3, 4), (8, 14), (1, 3)),
    4: LCZForm((0.20, 0.40), (0.20, 0.40), (10, 25), (14, 22), (2, 4), (5, 10), (1, 2)),
    5: LCZForm((0.20, 0.40), (0.30, 0.60), (3, 10), (12, 20), (2, 3), (3, 7), (1, 2)),
    6: LCZForm((0.60, 0.90), (0.00, 0.30), (2, 4), (10, 24), (1, 2), (1, 3), (0, 0), "lightweight", 0.15),
    7: LCZForm((0.30, 0.50), (0.00, 0.20), (3, 10), (24, 40), (3, 5), (10, 24), (1, 3), "large", 0.2),
    8: LCZForm((0.10, 0.20), (0.60, 0.80), (3, 10), (14, 24), (2, 3), (4, 7), (1, 2), "urban", 0.35),
    9: LCZForm((0.20, 0.30), (0.40, 0.50), (5, 15), (20, 36), (3, 5), (6, 18), (1, 3), "industry", 0.1),
}


def _disc_stamp(shape: tuple[int, int], centers: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Index (into ``centers``, -1 = none) of the crown covering each cell.

    Each cell belongs to its nearest centre when it lies within that centre's radius, so
    touching crowns meet along a straight boundary (as closed canopies do).
    """
    from scipy.ndimage import distance_transform_edt

    out = np.full(shape, -1, dtype=np.int32)
    if len(centers) == 0:
        return out
    cy = np.clip(np.rint(centers[:, 0]).astype(int), 0, shape[0] - 1)
    cx = np.clip(np.rint(centers[:, 1]).astype(int), 0, shape[1] - 1)
    owner = np.full(shape, -1, dtype=np.int32)
    owner[cy, cx] = np.arange(len(centers), dtype=np.int32)  # a later centre on the same cell wins
    dist, (iy, ix) = distance_transform_edt(owner < 0, return_indices=True)
    nearest = owner[iy, ix]
    inside = dist <= np.asarray(radii)[nearest]
    out[inside] = nearest[inside]
    return out


def _smooth_field(rng: np.random.Generator, scale: float) -> np.ndarray:
    """Zero-mean, unit-sd Gaussian random field on the sub-pixel grid with correlation ``scale``."""
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.normal(size=(_SUB, _SUB)), scale, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-9)


def _trees(rng, mat, hveg, where, cover, radius, height, kind="tree") -> None:
    """Put tree (or shrub) crowns over cells of ``where`` until about ``cover`` of it is crowned."""
    area = float(where.sum())
    if area <= 0 or cover <= 0:
        return
    mean_r = 0.5 * (radius[0] + radius[1])
    count = rng.poisson(max(0.0, -math.log(max(1e-3, 1 - cover))) * area / (math.pi * mean_r ** 2))
    cand = np.argwhere(where)
    if count == 0 or len(cand) == 0:
        return
    centers = cand[rng.integers(0, len(cand), size=count)] + rng.uniform(-0.5, 0.5, size=(count, 2))
    radii = rng.uniform(*radius, size=count)
    idx = _disc_stamp(mat.shape, centers, radii)
    crowned = idx >= 0
    mat[crowned] = _ID[kind]
    h = rng.uniform(*height, size=count)
    hveg[crowned] = np.maximum(hveg[crowned], h[idx[crowned]])


def _urban_scene(rng: np.random.Generator, form: LCZForm, cls: int):
    """(material, building height, vegetation height, greenness) sub-pixel maps of a built zone."""
    n = _SUB
    mat = np.full((n, n), _ID["road"], dtype=np.int16)
    hb = np.zeros((n, n), dtype=np.float32)
    hveg = np.zeros((n, n), dtype=np.float32)
    green = np.full((n, n), rng.uniform(0.45, 1.0), dtype=np.float32)
    bsf, psf = rng.uniform(*form.bsf), rng.uniform(*form.psf)
    pitch = rng.integers(form.pitch[0], form.pitch[1] + 1, size=2)
    street = rng.integers(form.street[0], form.street[1] + 1)
    lot = rng.integers(form.lot[0], form.lot[1] + 1, size=2)
    off = rng.integers(0, pitch)
    yy, xx = np.mgrid[0:n, 0:n]
    coords = []
    for axis, grid in ((0, yy), (1, xx)):
        g = grid + off[axis]
        u = g % pitch[axis] - street  # position inside the block (negative: street)
        coords.append((g // pitch[axis], u))
    (by, uy), (bx, ux) = coords
    in_block = (uy >= 0) & (ux >= 0)
    street_mask = ~in_block
    ly, lx = np.maximum(uy, 0) // lot[0], np.maximum(ux, 0) // lot[1]
    py, px = np.maximum(uy, 0) % lot[0], np.maximum(ux, 0) % lot[1]
    lots_y, lots_x = int(pitch[0] // lot[0]) + 1, int(pitch[1] // lot[1]) + 1
    nby, nbx = int(by.max()) + 1, int(bx.max()) + 1
    shape = (nby, nbx, lots_y, lots_x)
    sb = rng.integers(form.setback[0], form.setback[1] + 1, size=shape + (2,))
    fill = np.clip((lot[0] - 2 * sb[..., 0]) / lot[0], 0.1, 1) * np.clip((lot[1] - 2 * sb[..., 1]) / lot[1], 0.1, 1)
    block_share = float(in_block.mean())
    occupy = np.clip(bsf / max(1e-3, block_share * float(fill.mean())), 0.0, 1.0)
    occupied = rng.random(shape) < occupy
    # heights: a scene-level typical height inside the zone's range, buildings log-normal around it
    lo, hi = form.height
    typical = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    heights = np.clip(typical * np.exp(rng.normal(0.0, 0.25, size=shape)), lo * 0.8, hi * 1.2).astype(np.float32)
    names, shares = zip(*_ROOFS[form.roofs])
    palette = rng.dirichlet(4.0 * np.asarray(shares))
    roofs = np.asarray([_ID[m] for m in names])[rng.choice(len(names), size=shape, p=palette)]
    key = (by, bx, ly, lx)
    s = sb[key]
    building = (in_block & occupied[key] & (py >= s[..., 0]) & (py < lot[0] - s[..., 0])
                & (px >= s[..., 1]) & (px < lot[1] - s[..., 1]))
    mat[building] = roofs[key][building]
    hb[building] = heights[key][building]
    # streets: asphalt or aged road per scene, sidewalks along the block edges
    mat[street_mask] = _ID["asphalt"] if rng.random() < 0.5 else _ID["road"]
    kerb = in_block & ((uy == 0) | (ux == 0)) & ~building
    mat[kerb] = _ID["sidewalk"]
    # open ground inside blocks: pervious (grass, trees, bare soil) or paved, as a smooth field
    open_ = in_block & ~building & ~kerb
    need = psf * n * n
    share = float(np.clip(need / max(1.0, open_.sum()), 0.0, 1.0))
    field = _smooth_field(rng, rng.uniform(1.5, 4.0))
    if open_.any():
        thr = np.quantile(field[open_], share) if 0 < share < 1 else (np.inf if share >= 1 else -np.inf)
        pervious = open_ & (field <= thr)
    else:
        pervious = open_
    paved = open_ & ~pervious
    mat[paved] = _ID["parking_lot"] if form.roofs in ("large", "industry") else _ID["concrete"]
    mat[pervious] = _ID["grass"]
    bare = pervious & (_smooth_field(rng, 2.0) > (1.2 if form.roofs == "urban" else 0.3))
    mat[bare] = _ID["dirt"] if form.roofs in ("lightweight", "industry") else _ID["soil"]
    _trees(rng, mat, hveg, pervious, form.tree_share * rng.uniform(0.5, 1.5), (1.2, 2.6), (5.0, 18.0))
    if cls in (1, 2, 4, 5) and rng.random() < 0.5:  # street trees
        _trees(rng, mat, hveg, street_mask & ~building, 0.15, (1.0, 2.0), (5.0, 12.0))
    if form.roofs == "industry":  # tanks and stacks
        k = rng.poisson(3)
        cand = np.argwhere(open_)
        if k and len(cand):
            centers = cand[rng.integers(0, len(cand), size=k)].astype(float)
            radii = rng.uniform(1.5, 3.5, size=k)
            idx = _disc_stamp(mat.shape, centers, radii)
            tank = idx >= 0
            mat[tank] = _ID["metal"]
            hb[tank] = rng.uniform(8, 20, size=k)[idx[tank]]
        for _ in range(rng.poisson(1.5)):
            y, x = rng.integers(0, n, size=2)
            hb[y, x] = max(hb[y, x], rng.uniform(30, 60))
            mat[y, x] = _ID["concrete"]
    return mat, hb, hveg, green


def _natural_scene(rng: np.random.Generator, cls: int):
    """(material, building height, vegetation height, greenness) sub-pixel maps of LCZ A-G."""
    n = _SUB
    mat = np.full((n, n), _ID["grass"], dtype=np.int16)
    hb = np.zeros((n, n), dtype=np.float32)
    hveg = np.zeros((n, n), dtype=np.float32)
    green = np.clip(rng.uniform(0.3, 1.0) + 0.15 * _smooth_field(rng, 3.0), 0, 1).astype(np.float32)
    everywhere = np.ones((n, n), dtype=bool)
    if cls == 10:  # dense trees: closed canopy, gaps of litter or grass
        mat[:] = _ID["litter"] if rng.random() < 0.5 else _ID["grass"]
        _trees(rng, mat, hveg, everywhere, rng.uniform(0.8, 0.98), (1.5, 3.5), (10.0, 30.0))
    elif cls == 11:  # scattered trees on grass / low plants
        bare = _smooth_field(rng, 3.0) > rng.uniform(0.8, 2.0)
        mat[bare] = _ID["soil"]
        _trees(rng, mat, hveg, everywhere, rng.uniform(0.1, 0.4), (1.2, 3.0), (5.0, 15.0))
    elif cls == 12:  # bush, scrub: shrub clumps on dry grass and bare ground
        green[:] = np.clip(green * rng.uniform(0.2, 0.6), 0, 1)
        ground = _smooth_field(rng, 2.5)
        mat[ground > 0.3] = _ID["dirt"] if rng.random() < 0.6 else _ID["sand"]
        mat[ground < -0.8] = _ID["dry_vegetation"]
        _trees(rng, mat, hveg, everywhere, rng.uniform(0.3, 0.7), (0.6, 1.6), (0.5, 2.0), kind="litter")
        shrub = mat == _ID["litter"]
        mat[shrub & (rng.random((n, n)) < 0.6)] = _ID["grass"]  # green shrub foliage
        hveg[shrub] = np.maximum(hveg[shrub], 1.0)
    elif cls == 13:  # low plants: fields of crops at different growth stages, or meadows
        fields = np.zeros((n, n), dtype=np.int32)
        cuts_y = np.sort(rng.integers(4, n - 4, size=rng.integers(1, 4)))
        cuts_x = np.sort(rng.integers(4, n - 4, size=rng.integers(1, 4)))
        fields += np.searchsorted(cuts_y, np.arange(n))[:, None] * 10 + np.searchsorted(cuts_x, np.arange(n))[None, :]
        ids = np.unique(fields)
        stage = rng.uniform(0.0, 1.0, size=ids.max() + 1)
        bare_field = rng.random(ids.max() + 1) < 0.2
        rows = 0.08 * np.sin(2 * np.pi * (np.arange(n) / rng.uniform(1.5, 3.0)))[None, :]
        green[:] = np.clip(stage[fields] + rows, 0, 1)
        mat[bare_field[fields]] = _ID["soil"]
        mat[(stage[fields] < 0.15) & ~bare_field[fields]] = _ID["dry_vegetation"]
    elif cls == 14:  # bare rock or paved
        if rng.random() < 0.5:  # paved: runways, squares, yards
            mat[:] = _ID["asphalt"] if rng.random() < 0.5 else _ID["parking_lot"]
            patch = _smooth_field(rng, 4.0) > 0.5
            mat[patch] = _ID["concrete"]
            for _ in range(rng.poisson(2)):  # markings / kerbs
                if rng.random() < 0.5:
                    mat[rng.integers(0, n), :] = _ID["sidewalk"]
                else:
                    mat[:, rng.integers(0, n)] = _ID["sidewalk"]
        else:  # rock with gravel and a little dry vegetation
            mat[:] = _ID["rock"]
            f = _smooth_field(rng, 2.0)
            mat[f > 1.0] = _ID["gravel_roof"]
            mat[f < -1.3] = _ID["dry_vegetation"]
    elif cls == 15:  # bare soil or sand (dunes, fields after ploughing)
        base = "sand" if rng.random() < 0.4 else "soil"
        mat[:] = _ID[base]
        mat[_smooth_field(rng, 3.0) > 1.4] = _ID["dirt"]
        mat[_smooth_field(rng, 2.0) > 1.9] = _ID["dry_vegetation"]
    else:  # water, sometimes with a strip of shore
        mat[:] = _ID["water"]
        if rng.random() < 0.4:
            width = rng.integers(2, 12)
            side = rng.integers(4)
            strip = np.zeros((n, n), dtype=bool)
            strip[:width] = True
            strip = np.rot90(strip, side)
            mat[strip] = _ID[("grass", "soil", "sand", "concrete")[rng.integers(4)]]
    return mat, hb, hveg, green


def _scene(rng: np.random.Generator, cls: int):
    if cls in LCZ_FORMS:
        return _urban_scene(rng, LCZ_FORMS[cls], cls)
    return _natural_scene(rng, cls)


# -------------------------------------------------------------------------------------- rendering
def _shift(a: np.ndarray, s: int) -> np.ndarray:
    """``a`` moved ``s`` cells towards +x along the last axis (vacated cells: 0)."""
    out = np.zeros_like(a)
    if s < a.shape[-1]:
        out[..., s:] = a[..., :-s]
    return out


def _cast_shadow(height: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Cells shadowed by taller cells towards -x: some ``s`` with h(x-s) - h(x) > s * step (per sample)."""
    shadow = np.zeros(height.shape, dtype=bool)
    max_s = int(np.ceil(float(height.max()) / max(1e-6, float(step.min())))) if height.size else 0
    for s in range(1, min(max_s, height.shape[-1] - 1) + 1):
        shadow |= (_shift(height, s) - height) > s * step[:, None, None]
    return shadow


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks of the two spatial axes (1 and 2) of (N, H, W, ...)."""
    n, h, w = a.shape[:3]
    return a.reshape(n, h // k, k, w // k, k, *a.shape[3:]).mean(axis=(2, 4))


def _render_s2(rng, mat, hall, green):
    """Sentinel-2 reflectance (N, 32, 32, 10) of a chunk of scenes."""
    n = mat.shape[0]
    bright = np.exp(rng.standard_normal((n, len(MATERIALS), 1), dtype=np.float32) * _SPEC_SD[None, :, None])
    spec = _SPEC0[None] * bright  # (N, M, 10): the scene's version of every material
    refl = spec[np.arange(n)[:, None, None], mat]  # (N, 64, 64, 10)
    # vegetation greenness: grass / shrub foliage mixes linearly with dry vegetation
    veg = mat == _ID["grass"]
    g = green[veg][:, None]
    dry = np.broadcast_to(spec[:, None, None, _ID["dry_vegetation"]], refl.shape)[veg]
    refl[veg] = g * refl[veg] + (1 - g) * dry
    refl *= np.exp(0.05 * rng.standard_normal(refl.shape[:3], dtype=np.float32))[..., None]  # texture
    # sun shadow: a random sun elevation, the sun in one of four directions
    elev = np.radians(rng.uniform(25, 70, size=n))
    step = _M * np.tan(elev)  # a shadow of length L needs a height excess of L * tan(elevation)
    direction = rng.integers(0, 4, size=n)
    shade = np.zeros(mat.shape, dtype=bool)
    for k in range(4):
        sel = direction == k
        if sel.any():
            rot = np.rot90(hall[sel], k, axes=(1, 2))
            shade[sel] = np.rot90(_cast_shadow(rot, step[sel]), -k, axes=(1, 2))
    refl[shade] *= _DIFFUSE
    out = _block_mean(refl, 2)  # 10 m pixels: linear mixing of the sub-pixels
    coarse = _block_mean(out[..., _S2_20M], 2)  # 20 m bands
    out[..., _S2_20M] = np.repeat(np.repeat(coarse, 2, axis=1), 2, axis=2)
    gain = rng.uniform(0.92, 1.08, size=(n, 1, 1, 1)).astype(np.float32)
    haze = (rng.uniform(0.0, 0.02, size=(n, 1, 1, 1))
            * np.array([1.0, 0.7, 0.45, 0.35, 0.3, 0.25, 0.2, 0.2, 0.05, 0.02])).astype(np.float32)
    out = out * gain + haze + 0.003 * rng.standard_normal(out.shape, dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def _lee(c11, c22, c12, size: int = 5, looks: float = 1.0):
    """Lee MMSE filter of a dual-pol covariance image: one weight (from the span) for every element."""
    from scipy.ndimage import uniform_filter

    win = (1, size, size)
    span = c11 + c22
    mean = uniform_filter(span, win, mode="reflect")
    var = np.maximum(uniform_filter(span * span, win, mode="reflect") - mean * mean, 0.0)
    cu2 = 1.0 / looks
    ci2 = var / np.maximum(mean * mean, 1e-12)
    w = np.clip((1 - cu2 / np.maximum(ci2, 1e-12)) / (1 + cu2), 0.0, 1.0)
    out = []
    for c in (c11, c22, c12.real, c12.imag):
        m = uniform_filter(c, win, mode="reflect")
        out.append(m + w * (c - m))
    return out


def _render_s1(rng, mat, hb, hall, green, moisture, targets=()):
    """Sentinel-1 channels (N, 32, 32, 8) of a chunk of scenes."""
    n = mat.shape[0]
    theta = np.radians(rng.uniform(30, 45, size=n))
    tan = np.tan(theta)[:, None, None].astype(np.float32)
    vv_db = _VV0[mat] + rng.normal(0, 1.0, size=(n, 1, 1)).astype(np.float32)
    vh_db = _VH0[mat] + rng.normal(0, 1.0, size=(n, 1, 1)).astype(np.float32)
    slope = (np.degrees(theta) - 37.0)[:, None, None].astype(np.float32)
    vv_db -= 0.15 * slope  # surfaces darken with incidence angle
    vh_db -= 0.10 * slope
    # moisture brightens soils, biomass (greenness) brightens low vegetation, wind roughens water
    soilish = np.isin(mat, [_ID["soil"], _ID["dirt"], _ID["sand"]])
    vv_db += soilish * (8.0 * moisture[:, None, None] - 3.0)
    vh_db += soilish * (6.0 * moisture[:, None, None] - 2.0)
    veg = mat == _ID["grass"]
    vv_db += veg * (3.0 * green - 1.5)
    vh_db += veg * (5.0 * green - 2.5)
    water = mat == _ID["water"]
    wind = (rng.uniform(-5.0, 7.0, size=(n, 1, 1)) + 1.5 * rng.normal(size=(n, 1, 1))).astype(np.float32)
    vv_db += water * wind
    vh_db += water * wind * 0.5
    vv = np.power(np.float32(10), vv_db / 10) * np.exp(0.1 * rng.standard_normal(vv_db.shape, dtype=np.float32))
    vh = np.power(np.float32(10), vh_db / 10) * np.exp(0.1 * rng.standard_normal(vh_db.shape, dtype=np.float32))
    rho = _RHO0[mat].astype(np.complex64)
    # geometry along range (+x = far range): walls facing the sensor, layover, double bounce, shadow
    prev = np.concatenate([hb[..., :1], hb[..., :-1]], axis=-1)
    wall = np.maximum(hb - prev, 0.0)  # height of the wall facing the sensor at each cell
    orient = np.radians(rng.uniform(0, 45, size=n))[:, None, None].astype(np.float32)  # street grid vs azimuth
    align = 0.15 + 0.85 * np.exp(-(np.degrees(orient) / 10.0) ** 2)
    kappa = 2.5  # dihedral strength: sigma0 = kappa * h * wall length / pixel area at alignment
    db_vv = kappa * wall * _M / (_M * _M) * align
    db_vh = db_vv * (0.03 + 0.25 * np.sin(2 * orient) ** 2)
    facade = 10 ** (-8.0 / 10)
    lay = np.zeros_like(vv)
    max_s = int(np.ceil(float(wall.max()) / (_M * float(tan.min())))) if wall.size else 0
    for s in range(1, min(max_s, _SUB - 1) + 1):
        ahead = np.zeros_like(wall)
        ahead[..., :-s] = wall[..., s:]  # a wall s cells further in range
        lay += (ahead > s * _M * tan) * facade * tan
    radar_shadow = _cast_shadow(hall, _M / tan[:, 0, 0])  # shadow of length L: excess L / tan(theta)
    vv = np.where(radar_shadow, 0.0, vv) + db_vv + lay
    vh = np.where(radar_shadow, 0.0, vh) + db_vh + 0.3 * lay
    db_phase = np.exp(1j * rng.uniform(0, 2 * np.pi, size=(n, 1, 1)))
    rho = np.where(db_vv > 0, 0.35 * db_phase, rho)
    # resolution cell: mean intensities of the four sub-pixels, plus thermal noise
    vv10 = _block_mean(vv, 2) + _NESZ
    vh10 = _block_mean(vh, 2) + _NESZ * 0.8
    num = _block_mean((rho * np.sqrt(vv * vh)).astype(np.complex64), 2)
    rho10 = num / np.sqrt(vv10 * vh10)
    mag = np.abs(rho10)
    rho10 = np.where(mag > 0.95, rho10 * (0.95 / np.maximum(mag, 1e-6)), rho10)
    # single-look complex samples with that covariance (speckle), VH first as in the release
    z1 = (rng.normal(size=vv10.shape) + 1j * rng.normal(size=vv10.shape)) / math.sqrt(2)
    z2 = (rng.normal(size=vv10.shape) + 1j * rng.normal(size=vv10.shape)) / math.sqrt(2)
    s_vh = np.sqrt(vh10) * z1
    s_vv = np.sqrt(vv10) * (np.conj(rho10) * z1 + np.sqrt(1 - np.abs(rho10) ** 2) * z2)
    for i, y, x, a_vh, a_vv in targets:  # deterministic scatterers add coherently, without speckle
        s_vh[i, y, x] += a_vh
        s_vv[i, y, x] += a_vv
    c11, c22, c12 = np.abs(s_vh) ** 2, np.abs(s_vv) ** 2, s_vh * np.conj(s_vv)
    l11, l22, l12r, l12i = _lee(c11, c22, c12)
    return np.stack([s_vh.real, s_vh.imag, s_vv.real, s_vv.imag, l11, l22, l12r, l12i], axis=-1)


def _point_targets(rng, labels) -> list[tuple[int, int, int, complex, complex]]:
    """Strong deterministic scatterers (tanks, pipes, cranes) of heavy industry and large low-rise.

    Returns:
        ``(sample, row, col, VH amplitude, VV amplitude)`` of each target.
    """
    out = []
    for i, c in enumerate(labels):
        if c not in (7, 9):
            continue
        for _ in range(rng.poisson(6 if c == 9 else 2)):
            y, x = rng.integers(0, _OUT, size=2)
            amp = math.sqrt(10 ** rng.uniform(0.5, 2.0))  # +5 .. +20 dB
            phase = np.exp(1j * rng.uniform(0, 2 * np.pi, size=2))
            out.append((i, int(y), int(x), complex(amp * rng.uniform(0.1, 0.4) * phase[1]), complex(amp * phase[0])))
    return out


def render_scenes(labels: Sequence[int], rng: np.random.Generator, chunk: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene per label and observe it with both sensors.

    Args:
        labels: LCZ class ids 0..16 (order of :data:`geovit.data.so2sat.CLASSES`).
        rng: the generator every random draw comes from (same seed, same arrays).
        chunk: scenes rendered at once (bounds the memory, not the result).

    Returns:
        ``(sen1, sen2)``: float64 arrays (N, 32, 32, 8) and (N, 32, 32, 10) in the release's
        band order and units (S1 complex amplitudes / intensities, S2 reflectance).

    Raises:
        GeovitError: a label outside 0..16.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 16):
        raise GeovitError(f"labels: expected LCZ class ids 0..16, got values {sorted(set(labels.tolist()) - set(range(17)))}")
    s1 = np.empty((len(labels), _OUT, _OUT, 8), dtype=np.float64)
    s2 = np.empty((len(labels), _OUT, _OUT, 10), dtype=np.float64)
    for start in range(0, len(labels), chunk):
        part = labels[start:start + chunk]
        scenes = [_scene(rng, int(c)) for c in part]
        mat = np.stack([s[0] for s in scenes])
        hb = np.stack([s[1] for s in scenes])
        hall = np.maximum(hb, np.stack([s[2] for s in scenes]))
        green = np.stack([s[3] for s in scenes])
        moisture = rng.uniform(0.0, 1.0, size=len(part))
        s2[start:start + len(part)] = _render_s2(rng, mat, hall, green)
        s1[start:start + len(part)] = _render_s1(rng, mat, hb, hall, green, moisture, _point_targets(rng, part))
    return s1, s2


def write_synthetic(out_dir: str | os.PathLike, *, num_samples: int | None = None, seed: int = 0,
                    version: str = "2", generator: str = "physical") -> Path:
    """Write a SYNTHETIC So2Sat-format dataset (version-2 or v3 layout) rendered from scenes.

    Same file names, HDF5 keys, shapes and dtype (float64) as the release and as
    :func:`geovit.data.so2sat.write_synthetic`; labels are uniform over the 17 classes, every
    class present in every split. ``num_samples`` is the training size (default 2048);
    validation and test get a quarter each (at least 17).

    Args:
        out_dir: dataset root to write (created).
        num_samples: training samples (at least 17).
        seed: seed of every draw; the same seed writes the same arrays.
        version: layout, a key of :data:`geovit.data.so2sat.FILENAMES`.
        generator: ``"physical"`` (this module) or ``"simple"`` (the earlier per-class offset
            and texture generator, :func:`geovit.data.so2sat.write_synthetic`).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        GeovitError: an unknown ``generator`` or ``version``, or ``num_samples`` < 17.
    """
    from geovit.data import so2sat

    if generator not in GENERATORS:
        raise GeovitError(f"generator={generator!r}: expected one of {', '.join(GENERATORS)}")
    if version not in so2sat.FILENAMES:
        raise GeovitError(f"version={version!r}: expected one of {', '.join(so2sat.FILENAMES)}")
    if generator == "simple":
        return so2sat.write_synthetic(out_dir, num_samples=num_samples, seed=seed, version=version)
    n_train = 2048 if num_samples is None else int(num_samples)
    if n_train < 17:
        raise GeovitError(f"num_samples must be >= 17 (one per class), got {n_train}")
    root = Path(out_dir)
    sizes = {"train": n_train, "validation": max(17, n_train // 4), "test": max(17, n_train // 4)}
    for i, (split, fname) in enumerate(so2sat.FILENAMES[version].items()):
        rng = np.random.default_rng([seed, i + 1, 2])
        labels = rng.integers(0, 17, size=sizes[split])
        labels[:17] = np.arange(17)  # every class present in every split
        s1, s2 = render_scenes(labels, rng)
        onehot = np.zeros((len(labels), 17), dtype=np.float64)
        onehot[np.arange(len(labels)), labels] = 1.0
        so2sat.write_h5(root / fname, s1, s2, onehot, geovit_generator=f"physical v{GENERATOR_VERSION}")
    return root
