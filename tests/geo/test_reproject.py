"""`--reproject` of zarr / xarray cubes: window-by-window reprojection gives the map of the same data on the grid."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from scene_helpers import WINDOW

from geovit.errors import DataError, GeovitError
from geovit.geo.scene import Scene, _CubeSource
from geovit.predict import predict_scene


def _s1(scene):
    with rasterio.open(scene.s1) as ds:
        return ds.read(out_dtype="float32"), ds.transform, ds.crs, list(ds.descriptions)


def _cube(data, transform, crs, names, name="s1"):
    """A (band, y, x) cube whose pixel-centre coordinates follow ``transform`` (north-up)."""
    xs = transform.c + transform.a * (np.arange(data.shape[2]) + 0.5)
    ys = transform.f + transform.e * (np.arange(data.shape[1]) + 0.5)
    return xr.DataArray(data, dims=("band", "y", "x"), coords={"band": names, "y": ys, "x": xs},
                        attrs={"crs": crs.to_wkt()}, name=name)


def _map(ckpt, rasters, out, **kw):
    predict_scene(ckpt, rasters, out, preview=False, progress=False, device="cpu", **kw)
    with rasterio.open(out) as ds:
        return ds.read(), ds.transform, ds.crs


def test_integer_shift_with_nearest_gives_the_map_of_the_data_on_the_grid(classifier, half_clouded, tmp_path):
    """S1 as a zarr cube shifted 24 px east (1.5 windows): reprojected == the same data written on the S2 grid."""
    ckpt, _ = classifier
    data, t, crs, names = _s1(half_clouded)
    shift = 24
    shifted = _cube(data, t @ Affine.translation(shift, 0), crs, names)
    shifted.to_dataset().to_zarr(tmp_path / "shifted.zarr", mode="w", zarr_format=2, consolidated=False)
    on_grid = np.full_like(data, np.nan)
    on_grid[:, :, shift:] = data[:, :, :-shift]
    reference = _cube(on_grid, t, crs, names)

    want, want_t, want_crs = _map(ckpt, [half_clouded.s2, reference], tmp_path / "ref.tif")
    got, got_t, got_crs = _map(ckpt, [half_clouded.s2, tmp_path / "shifted.zarr"], tmp_path / "cube.tif",
                               reproject=True, resampling="nearest")
    np.testing.assert_array_equal(got, want)
    assert got_t == want_t and got_crs == want_crs
    # the first window column and a half lack S1 (> max_missing of the window): S2's 10 channels only
    assert (got[1][:, :2] == 10).all() and (got[1][:, 2:] == 18).all()
    # bilinear at a whole-pixel shift samples the source pixels themselves: the same map
    bil, _, _ = _map(ckpt, [half_clouded.s2, shifted], tmp_path / "bil.tif", reproject=True)
    np.testing.assert_array_equal(bil, want)

    # and the GeoTIFF path (GDAL WarpedVRT) agrees with the cube path
    tif = tmp_path / "shifted.tif"
    with rasterio.open(half_clouded.s1) as src:
        profile = src.profile
    profile.update(transform=t @ Affine.translation(shift, 0))
    with rasterio.open(tif, "w", **profile) as dst:
        dst.write(data)
        for b, n in enumerate(names, start=1):
            dst.set_band_description(b, n)
    via_vrt, _, _ = _map(ckpt, [half_clouded.s2, tif], tmp_path / "vrt.tif", reproject=True, resampling="nearest")
    np.testing.assert_array_equal(via_vrt, want)


def test_finer_cube_reprojected_with_nearest_gives_the_map_of_the_original(classifier, half_clouded, tmp_path):
    """S1 at 5 m (every 10 m pixel repeated 2 x 2), south-up (y ascending): onto the 10 m grid it is S1 again."""
    ckpt, _ = classifier
    data, t, crs, names = _s1(half_clouded)
    fine = np.repeat(np.repeat(data, 2, axis=1), 2, axis=2)
    cube = _cube(fine, t @ Affine.scale(0.5), crs, names).isel(y=slice(None, None, -1))
    assert cube["y"].values[1] > cube["y"].values[0]
    want, _, _ = _map(ckpt, [half_clouded.s2, half_clouded.s1], tmp_path / "ref.tif")
    got, _, _ = _map(ckpt, [half_clouded.s2, cube], tmp_path / "fine.tif", reproject=True, resampling="nearest")
    np.testing.assert_array_equal(got, want)


def test_cube_windows_read_only_their_footprint(half_clouded, monkeypatch):
    """Memory stays flat: a warped window reads the cube pixels under it (plus the kernel pad), not the cube."""
    data, t, crs, names = _s1(half_clouded)
    cube = _cube(data, t @ Affine.translation(7, -5), crs, names)
    blocks = []
    original = _CubeSource._read_block

    def spy(self, sel, r0, r1, c0, c1):
        blocks.append((r1 - r0, c1 - c0))
        return original(self, sel, r0, r1, c0, c1)

    monkeypatch.setattr(_CubeSource, "_read_block", spy)
    with Scene([half_clouded.s2, cube], reproject=True, resampling="nearest") as scene:
        values, usable = scene.read(40, 48, WINDOW, WINDOW)
    pad = _CubeSource.WARP_PAD
    side = WINDOW + 2 * pad + 1
    assert blocks and max(h for h, _ in blocks) <= side and max(w for _, w in blocks) <= side
    s1 = [i for i, b in enumerate(scene.bands) if b.source == 1]
    # rows 40.. of the grid are rows 45.. of the cube, columns 48.. are its columns 41..
    np.testing.assert_array_equal(values[s1], data[:, 45:45 + WINDOW, 41:41 + WINDOW])
    assert usable[s1].all()


def test_bad_cubes_are_named(classifier, half_clouded, tmp_path):
    ckpt, _ = classifier
    data, t, crs, names = _s1(half_clouded)
    out = tmp_path / "m.tif"
    shifted = _cube(data, t @ Affine.translation(3, 0), crs, names)
    with pytest.raises(DataError, match=r"s1 is not on the grid of .*s2\.tif \(transform .*--reproject"):
        predict_scene(ckpt, [half_clouded.s2, shifted], out, progress=False, device="cpu")
    far = _cube(data, Affine.translation(900_000.0, 1_000_000.0) @ Affine.scale(10, -10), crs, names, name="far")
    with pytest.raises(DataError, match=r"far does not overlap .*s2\.tif"):
        predict_scene(ckpt, [half_clouded.s2, far], out, reproject=True, progress=False, device="cpu")
    no_crs = shifted.copy()
    no_crs.attrs = {}
    with pytest.raises(DataError, match=r"--reproject needs a CRS on both rasters; cube s1 has none"):
        predict_scene(ckpt, [half_clouded.s2, no_crs], out, reproject=True, progress=False, device="cpu")
    bare = xr.DataArray(data, dims=("band", "y", "x"), coords={"band": names}, name="bare")
    bare.to_dataset().to_zarr(tmp_path / "bare.zarr", mode="w", zarr_format=2, consolidated=False)
    with pytest.raises(DataError, match=r"cube .*bare\.zarr: dimension\(s\) \['x', 'y'\] have no coordinate values"):
        predict_scene(ckpt, [half_clouded.s2, tmp_path / "bare.zarr"], out, reproject=True, progress=False,
                      device="cpu")
    with pytest.raises(GeovitError, match="--resampling sideways: expected a rasterio resampling method"):
        predict_scene(ckpt, [half_clouded.s2, shifted], out, reproject=True, resampling="sideways", progress=False,
                      device="cpu")
    assert not list(tmp_path.glob("m*")) and not list(tmp_path.glob(".m*"))


def test_cli_reprojects_a_zarr_cube(classifier, half_clouded, tmp_path, run_geovit):
    ckpt, _ = classifier
    data, t, crs, names = _s1(half_clouded)
    _cube(data, t @ Affine.translation(WINDOW, 0), crs, names).to_dataset().to_zarr(
        tmp_path / "s1.zarr", mode="w", zarr_format=2, consolidated=False)
    args = ("predict", ckpt, "--raster", half_clouded.s2, "--raster", tmp_path / "s1.zarr", "--out", tmp_path / "m.tif",
            "--no-preview", "--device", "cpu", "--quiet")
    code, out, err = run_geovit(*args)
    assert code == 2 and "is not on the grid" in err and "--reproject" in err and "Traceback" not in err
    assert not (tmp_path / "m.tif").exists()
    code, out, err = run_geovit(*args, "--reproject", "--resampling", "nearest")
    assert code == 0, err
    with rasterio.open(tmp_path / "m.tif") as ds:
        counts = ds.read(2)
    assert (counts[:, 0] == 10).all() and (counts[:, 1:] == 18).all()
