"""The simulated RCT: file formats, known τ, and each perturbation visible at its own scale."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rasterio
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from causal.simulate import PERTURBATIONS, render_scene, simulate_outcomes, simulate_rct
from geovit.errors import GeovitError


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate_rct(tmp_path_factory.mktemp("sim"), n_units=50, tile_px=32, small_px=8, bands=4,
                        effects={"blob": 2.0, "edge": -1.0}, base_effect=0.5, seed=3)


def test_files_in_real_formats(sim):
    units = pd.read_csv(sim.units_csv)
    assert list(units.columns[:6]) == ["unit_id", "lon", "lat", "village", "treatment", "outcome"]
    assert set(PERTURBATIONS) <= set(units.columns) and {"tau_true", "mu_true"} <= set(units.columns)
    assert units["unit_id"].is_unique and len(units) == 50
    with rasterio.open(sim.raster) as src:
        assert src.crs.to_epsg() == 32718 and src.count == 4 and src.dtypes[0] == "uint16"
        assert src.descriptions == ("red", "green", "blue", "nir")
        assert src.res == (30.0, 30.0)
        # every unit lies on the centre (a pixel corner) of its own 32-px tile
        x, y = Transformer.from_crs("EPSG:4326", src.crs.to_wkt(), always_xy=True).transform(units.lon, units.lat)
        inv = ~src.transform
        col = inv.a * np.asarray(x) + inv.b * np.asarray(y) + inv.c
        row = inv.d * np.asarray(x) + inv.e * np.asarray(y) + inv.f
        np.testing.assert_allclose((col - 16) / 32, np.round((col - 16) / 32), atol=1e-6)
        np.testing.assert_allclose((row - 16) / 32, np.round((row - 16) / 32), atol=1e-6)
        assert col.max() < src.width and row.max() < src.height
        data = src.read()
    assert 0 < data.min() and data.max() <= 10_000


def test_known_tau_and_randomisation(sim):
    u = sim.units
    np.testing.assert_allclose(u.tau_true, 0.5 + 2.0 * u.blob - 1.0 * u.edge)
    np.testing.assert_allclose(u.mu_true, 1.0 * u.rotation + 1.0 * u.contrast)
    assert set(u.treatment.unique()) == {0, 1}
    resid = u.outcome - u.mu_true - u.treatment * u.tau_true
    assert abs(resid.mean()) < 0.3 and 0.3 < resid.std() < 0.8  # noise_sd 0.5


def test_outcomes_law_of_large_numbers():
    flags = pd.DataFrame({p: np.random.default_rng(0).random(20_000) < 0.5 for p in PERTURBATIONS})
    out = simulate_outcomes(flags, effects={"rotation": 1.5}, prognostic={}, noise_sd=1.0, propensity=0.3, seed=1)
    assert out.treatment.mean() == pytest.approx(0.3, abs=0.015)
    treated = out[out.treatment == 1]
    rot = flags.loc[treated.index, "rotation"]
    assert treated.outcome[rot].mean() - treated.outcome[~rot].mean() == pytest.approx(1.5, abs=0.06)


def test_same_seed_same_files(tmp_path):
    a = simulate_rct(tmp_path / "a", n_units=5, tile_px=16, small_px=4, seed=7)
    b = simulate_rct(tmp_path / "b", n_units=5, tile_px=16, small_px=4, seed=7)
    pd.testing.assert_frame_equal(a.units, b.units)
    with rasterio.open(a.raster) as ra, rasterio.open(b.raster) as rb:
        np.testing.assert_array_equal(ra.read(), rb.read())


def _scene(flags, seed, **kw):
    return render_scene(flags, np.random.default_rng(seed), **kw)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), small=st.sampled_from([8, 16]), blob=st.booleans(), rot=st.booleans())
def test_edge_is_invisible_in_the_small_crop(seed, small, blob, rot):
    """The neighbourhood feature only changes pixels outside every small crop centred on the unit."""
    t = 64
    off = _scene({"blob": blob, "rotation": rot}, seed, tile_px=t, small_px=small)
    on = _scene({"blob": blob, "rotation": rot, "edge": True}, seed, tile_px=t, small_px=small)
    lo, hi = t // 2 - small // 2, t // 2 + small // 2
    np.testing.assert_array_equal(on[:, lo:hi, lo:hi], off[:, lo:hi, lo:hi])
    assert on[:, :4, :4].mean() < 0.8 * off[:, :4, :4].mean()  # corners darkened


def test_blob_rotation_contrast():
    base = _scene({}, 5, tile_px=32, small_px=8)
    blob = _scene({"blob": True}, 5, tile_px=32, small_px=8, blob_px=3)
    changed = np.argwhere((blob != base).any(axis=0))
    assert changed.min() >= 15 and changed.max() <= 17  # a 3x3 square at the centre
    assert np.all(blob[:, 15:18, 15:18] == pytest.approx(0.02))
    rot = _scene({"rotation": True}, 5, tile_px=32, small_px=8)
    np.testing.assert_array_equal(rot, np.rot90(base, 1, axes=(1, 2)))
    con = _scene({"contrast": True}, 5, tile_px=32, small_px=8)
    assert con.std(axis=(1, 2)) == pytest.approx(1.8 * base.std(axis=(1, 2)), rel=0.05)


def test_bad_arguments(tmp_path):
    flags = pd.DataFrame({p: [True, False] for p in PERTURBATIONS})
    with pytest.raises(GeovitError, match="unknown perturbation 'haze'"):
        simulate_outcomes(flags, effects={"haze": 1.0})
    with pytest.raises(GeovitError, match="propensity"):
        simulate_outcomes(flags, propensity=1.0)
    with pytest.raises(GeovitError, match="small_px"):
        simulate_rct(tmp_path, n_units=4, tile_px=16, small_px=16)
