"""Multi-scale embeddings: crop geometry, reprojection, edges, rasters vs cubes, cache, combinations."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer
from rasterio.transform import from_origin
from torch import nn

from causal.embeddings import (
    FrozenEncoder, TinyConvEncoder, combine, embed_units, feature_sets, load_encoder, open_raster,
    sampled_features, scale_arrays, unit_positions,
)
from geovit.errors import DataError, GeovitError

CRS = "EPSG:32718"
X0, Y0, RES = 800_000.0, 8_520_000.0, 30.0
H, W = 40, 50


class Flatten(nn.Module):
    """Identity 'encoder': the embedding is the crop itself, so crops can be checked exactly."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        self.calls += 1
        return (x * self.scale).flatten(1)


def _write_grid(path: Path, nodata=None) -> Path:
    """band 0 = column index + 1, band 1 = row index + 1 (uint16, 2 bands, UTM 18S)."""
    rows, cols = np.mgrid[0:H, 0:W]
    data = np.stack([cols + 1, rows + 1]).astype(np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=2, dtype="uint16", crs=CRS,
                       transform=from_origin(X0, Y0, RES, RES), nodata=nodata) as dst:
        dst.write(data)
    return path


def _units(cols, rows, ids=None) -> pd.DataFrame:
    """Units at continuous pixel positions (col, row), given as WGS84 lon/lat and UTM x/y."""
    x = X0 + np.asarray(cols, float) * RES
    y = Y0 - np.asarray(rows, float) * RES
    lon, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(x, y)
    ids = ids or [f"u{i}" for i in range(len(x))]
    return pd.DataFrame({"unit_id": ids, "lon": lon, "lat": lat, "x_utm": x, "y_utm": y})


def _crops(ds, scale):
    return ds["embedding"].sel(scale=scale).values.reshape(len(ds.unit), 2, scale, scale)


@pytest.fixture
def grid_tif(tmp_path):
    return _write_grid(tmp_path / "grid.tif")


def test_crops_are_centred_on_reprojected_units_and_padded_at_edges(grid_tif):
    units = _units([20.0, 1.0, 49.5], [10.0, 2.0, 39.5])
    enc = FrozenEncoder(Flatten(), input_size=4)
    with pytest.warns(UserWarning, match=r"2 of 3 unit\(s\).*up to 75.0% of a crop.*u1, u2.*filled"):
        ds = embed_units(units, grid_tif, enc, scales=[4], normalize="none", progress=False, on_nodata="fill")
    crop = _crops(ds, 4)
    # shares of the crops beyond the raster: unit 1 one column of 4, unit 2 three quarters
    np.testing.assert_allclose(ds["missing_fraction"].values[:, 0], [0.0, 0.25, 0.75])
    assert ds.attrs["nodata_units"] == 2
    # unit 0 at pixel corner (20, 10): the 4x4 window starts at column 18, row 8
    np.testing.assert_array_equal(crop[0, 0, 0], [19, 20, 21, 22])
    np.testing.assert_array_equal(crop[0, 1, :, 0], [9, 10, 11, 12])
    # unit 1 near the top-left corner: window starts at (-1, 0); the column outside is padded with 0
    np.testing.assert_array_equal(crop[1, 0, 0], [0, 1, 2, 3])
    # unit 2 inside the last pixel: window (48, 38)..(51, 41) sticks out at the right and bottom
    np.testing.assert_array_equal(crop[2, 0, 0], [49, 50, 0, 0])
    np.testing.assert_array_equal(crop[2, 1, :, 0], [39, 40, 0, 0])
    assert ds["col"].values[0] == pytest.approx(20.0, abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(col=st.integers(0, W - 1), row=st.integers(0, H - 1), half=st.integers(1, 6))
def test_window_centre_property(tmp_path_factory, col, row, half):
    """For a unit inside pixel (col, row) and any width s, the crop's pixel ((s-1)//2, (s-1)//2) is that pixel."""
    tif = _write_grid(tmp_path_factory.mktemp("g") / "g.tif")
    units = _units([col + 0.5], [row + 0.5])
    for s in (2 * half, 2 * half + 1):
        enc = FrozenEncoder(Flatten(), input_size=s)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # crops of units near the edge stick out of the raster
            ds = embed_units(units, tif, enc, scales=[s], normalize="none", progress=False, on_nodata="fill")
        crop = _crops(ds, s)[0]
        c = (s - 1) // 2
        assert crop[0, c, c] == col + 1 and crop[1, c, c] == row + 1


def test_xy_in_raster_crs_and_lon_lat_agree(grid_tif):
    units = _units([10.0, 30.0], [5.0, 25.0])
    enc = FrozenEncoder(Flatten(), input_size=6)
    a = embed_units(units, grid_tif, enc, scales=[6], normalize="none", progress=False)
    b = embed_units(units, grid_tif, enc, scales=[6], normalize="none", progress=False, x_col="x_utm", y_col="y_utm")
    np.testing.assert_array_equal(a["embedding"].values, b["embedding"].values)


def test_resize_to_encoder_input(grid_tif):
    enc = FrozenEncoder(Flatten(), input_size=4)
    ds = embed_units(_units([20.0], [20.0]), grid_tif, enc, scales=[8], normalize="none", progress=False)
    crop = ds["embedding"].values.reshape(2, 4, 4)
    # an 8-px crop of a linear ramp resized (antialiased) to 4 px keeps the ramp, 2 px per step
    assert np.all(np.diff(crop[0, 0]) > 1.5)
    assert crop[0, 0].mean() == pytest.approx(np.arange(17, 25).mean(), abs=0.5)


def test_units_outside_are_named_and_can_be_skipped(grid_tif):
    units = _units([10.0, 80.0, 5.0], [5.0, 5.0, -3.0], ids=["inside", "east_of_raster", "north_of_raster"])
    enc = FrozenEncoder(Flatten(), input_size=2)
    with pytest.raises(DataError, match="east_of_raster.*north_of_raster"):
        embed_units(units, grid_tif, enc, scales=[2], progress=False)
    with pytest.warns(UserWarning, match="east_of_raster"):
        ds = embed_units(units, grid_tif, enc, scales=[2], progress=False, on_outside="skip")
    assert ds["unit"].values.tolist() == ["inside"]


def test_bad_units_table(grid_tif):
    enc = FrozenEncoder(Flatten(), input_size=2)
    units = _units([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(DataError, match="missing column.*'lat'"):
        embed_units(units.drop(columns="lat"), grid_tif, enc, scales=[2], progress=False)
    with pytest.raises(DataError, match="duplicated ids"):
        embed_units(units.assign(unit_id="same"), grid_tif, enc, scales=[2], progress=False)
    nan = units.copy()
    nan.loc[1, "lon"] = np.nan
    with pytest.raises(DataError, match="u1"):
        embed_units(nan, grid_tif, enc, scales=[2], progress=False)


def test_missing_and_foreign_rasters(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_raster(tmp_path / "nope.tif")
    bad = tmp_path / "bad.tif"
    bad.write_text("not a tiff")
    with pytest.raises(DataError, match="bad.tif"):
        open_raster(bad)
    plain = tmp_path / "nocrs.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8") as dst:
        dst.write(np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(DataError, match="no CRS"):
        open_raster(plain)


def test_nodata_is_filled_with_band_mean_when_asked(tmp_path):
    tif = _write_grid(tmp_path / "nd.tif", nodata=1)  # column 0 of band 0 holds 1 == nodata
    with pytest.warns(UserWarning, match=r"1 of 1 unit\(s\).*up to 50.0% of a crop.*u0.*band mean"):
        ds = embed_units(_units([1.0], [10.0]), tif, FrozenEncoder(Flatten(), input_size=2), scales=[2],
                         progress=False, on_nodata="fill")
    crop = ds["embedding"].values.reshape(2, 2, 2)
    assert np.all(crop[0, :, 0] == 0.0)  # z-scored nodata → 0 (the band mean)
    assert np.all(crop[0, :, 1] != 0.0)
    assert ds.attrs["nodata_policy"] == "fill" and ds.attrs["nodata_units"] == 1


def test_units_with_nodata_are_skipped_by_default_and_counted(tmp_path):
    tif = _write_grid(tmp_path / "nd.tif", nodata=1)
    units = _units([1.0, 10.0, 20.0, 1.0], [10.0, 10.0, 10.0, 30.0])  # u0 and u3 see column 0 (nodata)
    enc = FrozenEncoder(Flatten(), input_size=2)
    with pytest.warns(UserWarning, match=r"2 of 4 unit\(s\).*u0, u3; they are skipped"):
        ds = embed_units(units, tif, enc, scales=[2, 4], progress=False)
    assert ds["unit"].values.tolist() == ["u1", "u2"]
    assert ds.attrs["nodata_units"] == 2 and np.all(ds["missing_fraction"].values == 0)
    with pytest.raises(DataError, match="no unit is left"):
        embed_units(units.iloc[[0, 3]], tif, enc, scales=[2], progress=False)
    with pytest.raises(GeovitError, match="on_nodata must be 'skip' or 'fill'"):
        embed_units(units, tif, enc, scales=[2], progress=False, on_nodata="mean")


def test_cached_embeddings_keep_the_nodata_shares(tmp_path):
    tif = _write_grid(tmp_path / "nd.tif", nodata=1)
    units = _units([1.0, 10.0], [10.0, 10.0])
    enc = FrozenEncoder(Flatten(), input_size=2)
    kw = dict(scales=[2], progress=False, cache=tmp_path / "cache", on_nodata="fill")
    with pytest.warns(UserWarning, match="1 of 2"):
        first = embed_units(units, tif, enc, **kw)
    calls = enc.model.calls
    with pytest.warns(UserWarning, match="1 of 2"):  # read from the cache: still reported
        again = embed_units(units, tif, enc, **kw)
    assert enc.model.calls == calls
    np.testing.assert_array_equal(first["missing_fraction"].values, again["missing_fraction"].values)


def test_bad_scales_and_batch_size(grid_tif):
    enc = FrozenEncoder(Flatten(), input_size=2)
    units = _units([10.0], [10.0])
    with pytest.raises(GeovitError, match=r"scales \[64\]: crops wider than raster"):
        embed_units(units, grid_tif, enc, scales=[2, 64], progress=False)
    with pytest.raises(GeovitError, match="batch_size must be a positive integer"):
        embed_units(units, grid_tif, enc, scales=[2], progress=False, batch_size=0)


def test_zarr_cube_matches_geotiff(grid_tif, tmp_path):
    with rasterio.open(grid_tif) as src:
        data = src.read()
    xs = X0 + (np.arange(W) + 0.5) * RES
    ys = Y0 - (np.arange(H) + 0.5) * RES
    cube = xr.DataArray(data, dims=("band", "y", "x"), coords={"band": ["a", "b"], "y": ys, "x": xs},
                        name="reflectance", attrs={"crs": CRS})
    store = tmp_path / "cube.zarr"
    cube.to_dataset().to_zarr(store, consolidated=False)
    units = _units([12.0, 33.0], [7.0, 30.0])
    enc = FrozenEncoder(Flatten(), input_size=6)
    a = embed_units(units, grid_tif, enc, scales=[6], normalize="none", progress=False)
    b = embed_units(units, store, enc, scales=[6], normalize="none", progress=False)
    c = embed_units(units, cube, enc, scales=[6], normalize="none", progress=False)
    np.testing.assert_array_equal(a["embedding"].values, b["embedding"].values)
    np.testing.assert_array_equal(a["embedding"].values, c["embedding"].values)
    with pytest.raises(DataError, match="no CRS"):
        open_raster(cube.drop_attrs())


def test_cache_reuses_scales_and_is_keyed_by_encoder(grid_tif, tmp_path):
    units = _units([10.0, 20.0, 30.0], [10.0, 20.0, 30.0])
    model = Flatten()
    enc = FrozenEncoder(model, input_size=4)
    cache = tmp_path / "cache"
    first = embed_units(units, grid_tif, enc, scales=[4, 8], cache=cache, progress=False)
    calls = model.calls
    again = embed_units(units, grid_tif, enc, scales=[4, 8], cache=cache, progress=False)
    assert model.calls == calls  # nothing re-encoded
    np.testing.assert_array_equal(first["embedding"].values, again["embedding"].values)
    more = embed_units(units, grid_tif, enc, scales=[4, 8, 12], cache=cache, progress=False)
    assert model.calls == calls + 1  # only the new scale (one batch)
    np.testing.assert_array_equal(more["embedding"].sel(scale=[4, 8]).values, first["embedding"].values)
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["scale12", "scale4", "scale8"]  # no temp leftovers
    other = Flatten()
    with torch.no_grad():
        other.scale.fill_(2.0)
    doubled = embed_units(units, grid_tif, FrozenEncoder(other, input_size=4), scales=[4], cache=cache, progress=False)
    assert other.calls == 1
    np.testing.assert_allclose(doubled["embedding"].values, 2 * first["embedding"].sel(scale=[4]).values)


def test_jitter_and_combinations(grid_tif):
    units = _units(np.linspace(5, 45, 12), np.linspace(5, 35, 12))
    enc = load_encoder("tiny", in_chans=2)
    with pytest.warns(UserWarning, match="2 of 12"):  # the first and last 16-px crops leave the raster
        ds = embed_units(units, grid_tif, enc, scales=[4, 8, 16], jitter={"scale": 4, "draws": 3, "max_px": 0},
                         progress=False, on_nodata="fill")
    d = ds.sizes["feature"]
    # zero jitter reproduces the unjittered crop
    for k in range(3):
        np.testing.assert_allclose(ds["jittered"].values[:, k], ds["embedding"].sel(scale=4).values, rtol=1e-6)
    assert combine(ds, [4, 16]).shape == (12, 2 * d)
    np.testing.assert_array_equal(combine(ds, [16, 4])[:, :d], ds["embedding"].sel(scale=16).values)
    assert combine(ds, [4, 16], pca=3, pca_mode="per_scale").shape == (12, 6)
    joint = combine(ds, [4, 16], pca=3)
    assert joint.shape == (12, 3)
    cov = np.cov(joint.T)
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0, atol=1e-6 * np.abs(cov).max())
    assert sampled_features(ds).shape == (12, 4 * d)
    sets = feature_sets(ds, sizes=(1, 2), sampled=True)
    assert list(sets) == ["4", "8", "16", "4+8", "4+16", "8+16", "sampled"]
    assert set(scale_arrays(ds)) == {4, 8, 16}
    with pytest.raises(GeovitError, match="32"):
        combine(ds, [32])
    with pytest.raises(GeovitError, match="pca_mode"):
        combine(ds, [4, 8], pca=2, pca_mode="sideways")


def test_jitter_moves_crops(grid_tif):
    units = _units([20.0, 30.0], [20.0, 20.0])
    ds = embed_units(units, grid_tif, FrozenEncoder(Flatten(), input_size=4), scales=[4], normalize="none",
                     jitter={"scale": 4, "draws": 4, "max_px": 2, "seed": 1}, progress=False)
    jit = ds["jittered"].values.reshape(2, 4, 2, 4, 4)
    base = _crops(ds, 4)
    shifts = jit[:, :, 0, 0, 0] - base[:, None, 0, 0, 0]  # column offsets
    assert np.all(np.abs(shifts) <= 2) and np.any(shifts != 0)


def test_encoders_geovit_channelvit_timm_and_tiny(grid_tif, tmp_path):
    from geovit.hub import save_converted
    from geovit.models import create_model

    units = _units([10.0, 25.0], [10.0, 25.0])
    vit = create_model("channelvit_tiny_patch8", in_chans=3, img_size=16, depth=1, embed_dim=48, num_heads=2)
    # a 2-band raster read as channels 0 and 2 of a 3-channel (rgb) table
    enc = load_encoder(vit, in_chans=2, channels="red,blue")
    assert enc.input_size == 16 and enc.channel_ids == (0, 2)
    ds = embed_units(units, grid_tif, enc, scales=[8], progress=False)
    assert ds.sizes["feature"] == 48 and np.isfinite(ds["embedding"].values).all()
    ckpt = tmp_path / "vit.safetensors"
    save_converted(vit, "channelvit", vit.config, ckpt)
    again = embed_units(units, grid_tif, load_encoder(ckpt, in_chans=2, channels="red,blue"), scales=[8], progress=False)
    np.testing.assert_allclose(again["embedding"].values, ds["embedding"].values, rtol=1e-5, atol=1e-6)
    with pytest.raises(GeovitError, match="2 bands"):
        load_encoder(vit, in_chans=2, channels="rgb")
    timm_enc = load_encoder("timm:test_vit", in_chans=2)
    assert timm_enc.input_size == 160
    feats = embed_units(units, grid_tif, timm_enc, scales=[8], progress=False)["embedding"].values
    assert feats.shape == (2, 1, timm_enc.model.num_features) and np.isfinite(feats).all()
    with pytest.raises(GeovitError, match="timm:no_such_model"):
        load_encoder("timm:no_such_model", in_chans=2)
    t1, t2 = TinyConvEncoder(2), TinyConvEncoder(2)
    x = torch.randn(3, 2, 32, 32)
    torch.testing.assert_close(t1(x), t2(x))  # fixed seed → deterministic features
    with pytest.raises(GeovitError, match="2 band.*grid.tif"):  # a 3-band model on a 2-band raster
        embed_units(units, grid_tif, FrozenEncoder(TinyConvEncoder(3), input_size=8), scales=[8], progress=False)
    with pytest.raises(GeovitError, match="convert"):
        load_encoder("official.pth", in_chans=2)


def test_no_warnings_for_clean_input(grid_tif):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        embed_units(_units([10.0], [10.0]), grid_tif, "tiny", scales=[4], progress=False)


# --------------------------------------------------------------------------------------------
# Reading a geovit embed store instead of re-encoding
# --------------------------------------------------------------------------------------------
SCENE_CRS, SX0, SY0, SRES = "EPSG:32632", 500_000.0, 5_300_000.0, 10.0


def _s1_scene(path: Path) -> Path:
    """An 8-band Sentinel-1 raster of 64 x 80 px (4 x 5 windows of 16 px); window (2, 3) is all nodata."""
    data = np.random.default_rng(5).normal(size=(8, 64, 80)).astype(np.float32)
    data[:, 32:48, 48:64] = np.nan
    with rasterio.open(path, "w", driver="GTiff", width=80, height=64, count=8, dtype="float32", crs=SCENE_CRS,
                       transform=from_origin(SX0, SY0, SRES, SRES), nodata=float("nan")) as dst:
        dst.write(data)
        for b in range(8):
            dst.set_band_description(b + 1, f"S1_B{b + 1}")
    return path


def _scene_model(window: int):
    """A random ChannelViT over the 8 Sentinel-1 ids, as geovit embed loads it (no band statistics)."""
    from geovit.models import create_model
    from geovit.predict.model import SceneModel

    torch.manual_seed(window)
    vit = create_model("channelvit_tiny_patch8", in_chans=18, img_size=window, depth=1, embed_dim=24, num_heads=2,
                       num_classes=0)
    with torch.no_grad():
        for p in vit.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.6)
    return SceneModel(vit.eval(), "channelvit", "so2sat", tuple(range(8)), window, 0, ())


@pytest.fixture(scope="module")
def s1_store(tmp_path_factory):
    """(raster, store of 16 px windows, model) of the Sentinel-1 scene."""
    from geovit.predict import embed_scene

    root = tmp_path_factory.mktemp("store")
    tif = _s1_scene(root / "s1.tif")
    model = _scene_model(16)
    embed_scene(model, [tif], root / "emb16.zarr", progress=False, device="cpu")
    return tif, root / "emb16.zarr", model


def _scene_units(px, py, ids=None) -> pd.DataFrame:
    """Units at scene pixel positions (px, py), as WGS84 lon/lat and as x/y in the scene's CRS."""
    x = SX0 + np.asarray(px, float) * SRES
    y = SY0 - np.asarray(py, float) * SRES
    lon, lat = Transformer.from_crs(SCENE_CRS, "EPSG:4326", always_xy=True).transform(x, y)
    return pd.DataFrame({"unit_id": ids or [f"u{i}" for i in range(len(x))], "lon": lon, "lat": lat, "x": x, "y": y})


def _window_features(model, tif, i, j, window):
    with rasterio.open(tif) as ds:
        x = ds.read(out_dtype="float32")[:, i * window:(i + 1) * window, j * window:(j + 1) * window]
    with torch.no_grad():
        ids = torch.arange(8)
        return model.module.forward_head(model.module.forward_features(torch.from_numpy(x[None]), ids),
                                         pre_logits=True)[0].numpy()


def test_units_take_the_store_embedding_of_their_window_equal_to_the_encoder_features(s1_store):
    from causal.embeddings import store_features

    tif, store, model = s1_store
    # unit -> window (row, col): centres, off-centre points inside windows, a unit on another window's centre
    px = [8.0, 24.0, 3.2, 79.0, 40.0, 56.5]
    py = [8.0, 40.0, 60.9, 0.5, 24.0, 8.0]
    want_windows = [(0, 0), (2, 1), (3, 0), (0, 4), (1, 2), (0, 3)]
    units = _scene_units(px, py)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = embed_units(units, store)  # lon/lat (WGS84) reprojected onto the store's grid
    assert ds["scale"].values.tolist() == [16] and ds.attrs["lookup"] == "nearest window centre"
    for k, (i, j) in enumerate(want_windows):
        np.testing.assert_allclose(ds["embedding"].values[k, 0], _window_features(model, tif, i, j, 16), atol=2e-5,
                                   err_msg=f"unit {k} in window {i},{j}")
    np.testing.assert_allclose(ds["window_offset_px"].values[:, 0],
                               np.hypot(np.array(px) - [16 * j + 8 for _, j in want_windows],
                                        np.array(py) - [16 * i + 8 for i, _ in want_windows]), atol=1e-6)
    np.testing.assert_allclose(ds["col"].values, px, atol=1e-6)
    np.testing.assert_allclose(ds["row"].values, py, atol=1e-6)
    assert (ds["channels_used"].values == 8).all() and (ds["missing_fraction"].values == 0).all()
    same = store_features(units, store, x_col="x", y_col="y")  # x/y already in the store's CRS
    np.testing.assert_allclose(same["embedding"].values, ds["embedding"].values, atol=1e-6)
    # the same units at window centres, encoded from the raster by the same (frozen) model
    centred = units.iloc[[0, 1, 4]].reset_index(drop=True)
    enc = FrozenEncoder(model.module, input_size=16, channel_ids=range(8))
    crops = embed_units(centred, tif, enc, scales=[16], normalize="none", progress=False)
    np.testing.assert_allclose(embed_units(centred, store)["embedding"].values, crops["embedding"].values, atol=2e-5)


def test_multi_scale_from_several_stores(s1_store, tmp_path):
    from geovit.predict import embed_scene

    tif, store16, model16 = s1_store
    model32 = _scene_model(32)
    embed_scene(model32, [tif], tmp_path / "emb32.zarr", progress=False, device="cpu")
    units = _scene_units([20.0, 40.0], [10.0, 20.0])
    ds = embed_units(units, [store16, tmp_path / "emb32.zarr"])
    assert ds["scale"].values.tolist() == [16, 32] and ds["embedding"].shape == (2, 2, 24)
    np.testing.assert_allclose(ds["embedding"].sel(scale=32).values[1], _window_features(model32, tif, 0, 1, 32),
                               atol=2e-5)
    np.testing.assert_allclose(ds["embedding"].sel(scale=16).values[1], _window_features(model16, tif, 1, 2, 16),
                               atol=2e-5)
    assert combine(ds, [16, 32]).shape == (2, 48)
    only = embed_units(units, [store16, tmp_path / "emb32.zarr"], scales=[32])
    np.testing.assert_allclose(only["embedding"].values[:, 0], ds["embedding"].sel(scale=32).values)
    embed_scene(model32, [tif], tmp_path / "emb32s.zarr", stride=16, progress=False, device="cpu")
    with pytest.raises(GeovitError, match=r"several have window \[32\] px"):
        embed_units(units, [tmp_path / "emb32.zarr", tmp_path / "emb32s.zarr"])


def test_store_units_outside_nodata_crs_and_arguments_are_named(s1_store, tmp_path):
    tif, store, _ = s1_store
    units = _scene_units([8.0, 200.0, 56.0], [8.0, 8.0, 40.0], ids=["in", "east", "cloud"])
    with pytest.raises(DataError, match=r"1 unit\(s\) lie outside raster embedding store .*emb16\.zarr.*: east"):
        embed_units(units, store)
    with pytest.warns(UserWarning) as record:
        ds = embed_units(units, store, on_outside="skip")
    text = " ".join(str(w.message) for w in record)
    assert "east" in text and "cloud" in text and ds["unit"].values.tolist() == ["in"] and ds.attrs["nodata_units"] == 1
    with pytest.raises(DataError, match=r"1 unit\(s\) lie in windows without any usable band .*: cloud; .*skip"):
        embed_units(units.iloc[[0, 2]], store, on_nodata="fill")
    with pytest.raises(DataError, match=r"emb16\.zarr: CRS EPSG:32632 differs from raster_crs EPSG:32633"):
        embed_units(units.iloc[[0]], store, raster_crs="EPSG:32633")
    assert embed_units(units.iloc[[0]], store, raster_crs="EPSG:32632").sizes["unit"] == 1
    with pytest.raises(GeovitError, match=r"scales \[64\]: the embedding stores hold windows of \[16\] px"):
        embed_units(units.iloc[[0]], store, scales=[64])
    with pytest.raises(GeovitError, match="encoder: do not apply to an embedding store"):
        embed_units(units.iloc[[0]], store, "tiny")
    with pytest.raises(DataError, match=r"raster .*s1\.tif: not an embedding store, but given with"):
        embed_units(units.iloc[[0]], [store, tif])
    split = xr.Dataset({"embedding": (("sample", "feature"), np.zeros((2, 3)))}, attrs={"kind": "dataset split"})
    with pytest.raises(DataError, match="holds a dataset split"):
        embed_units(units.iloc[[0]], split)
    stripped = xr.open_zarr(store).drop_vars("x")
    with pytest.raises(DataError, match="no coordinate 'x'; expected a store written by geovit embed"):
        embed_units(units.iloc[[0]], stripped)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6).flatmap(lambda s: st.tuples(st.just(s), st.integers(s, 12))),
       st.floats(0, 0.999), st.floats(0, 0.999))
def test_window_index_picks_the_nearest_window_centre(stride_window, fx, fy):
    """Any point of the grid gets a window whose centre is at most stride / 2 away along each axis."""
    from affine import Affine

    from geovit.predict.embeddings import window_index

    stride, window = stride_window
    rows, cols = 5, 7
    scene = Affine(10.0, 0.0, 1000.0, 0.0, -10.0, 2000.0)
    off = (window - stride) / 2
    grid = scene @ Affine.translation(off, off) @ Affine.scale(stride)
    xs = scene.c + 10.0 * (np.arange(cols) * stride + window / 2)
    ys = scene.f - 10.0 * (np.arange(rows) * stride + window / 2)
    ds = xr.Dataset(coords={"x": xs, "y": ys}, attrs={"kind": "window grid", "transform": list(grid)[:6]})
    # a point anywhere in the area the window-grid pixels cover
    px, py = grid @ (fx * cols, fy * rows)
    r, c, inside = window_index(ds, [px], [py])
    assert inside[0]
    assert abs(xs[c[0]] - px) <= 10.0 * stride / 2 + 1e-6 and abs(ys[r[0]] - py) <= 10.0 * stride / 2 + 1e-6
    _, _, out = window_index(ds, [grid.c - 1e-3], [py])
    assert not out[0]


def test_cate_command_reads_the_store_instead_of_encoding(s1_store, tmp_path):
    from geovit.cli import main

    tif, store, model = s1_store
    rng = np.random.default_rng(0)
    px, py = rng.uniform(0, 80, 120), rng.uniform(0, 64, 120)
    clear = ~((px >= 48) & (px < 64) & (py >= 32) & (py < 48))  # not in the nodata window
    units = _scene_units(px[clear], py[clear])
    units["treatment"] = np.arange(len(units)) % 2
    units["outcome"] = rng.normal(size=len(units)) + units["treatment"]
    units.to_csv(tmp_path / "units.csv", index=False)
    out = tmp_path / "out"
    assert main(["cate", "--units", str(tmp_path / "units.csv"), "--raster", str(store), "--out", str(out),
                 "--n-estimators", "20", "--n-bootstrap", "5"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scales"] == [16] and summary["units"] == len(units)
    cate = pd.read_csv(out / "cate.csv")
    np.testing.assert_allclose(cate["x"], units["x"], atol=1e-3)  # the units' positions in the store's CRS
    assert not (out / "embeddings").exists()  # nothing was encoded or cached
    assert main(["cate", "--units", str(tmp_path / "units.csv"), "--raster", str(store), "--out",
                 str(tmp_path / "o2"), "--encoder", "tiny"]) == 2
