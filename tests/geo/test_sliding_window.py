"""Sliding-window prediction over GeoTIFFs: blending, georeferencing, nodata, grid checks, atomicity."""
from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import rasterio
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin

from geovit.errors import DataError, GeovitError
from geovit.geo import sliding_window
from geovit.geo.sliding_window import predict_change_raster, ramp_weights

TRANSFORM = from_origin(500_000.0, 3_300_000.0, 0.5, 0.5)


def write_tif(path: Path, data: np.ndarray, *, crs="EPSG:32615", transform=TRANSFORM, nodata=None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                       dtype=data.dtype, crs=crs, transform=transform, nodata=nodata) as ds:
        ds.write(data)
    return path


def pointwise(t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
    """A position-independent 'model': the probability depends on the pixel's own values only."""
    return torch.sigmoid((t2 - t1).mean(1, keepdim=True) / 40)


class Recorder:
    def __init__(self):
        self.shapes = []

    def __call__(self, t1, t2):
        self.shapes.append(tuple(t1.shape))
        return pointwise(t1, t2)


def _pair(tmp_path: Path, h: int, w: int, seed: int = 0, **kw):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (3, h, w), dtype=np.uint8)
    b = rng.integers(0, 256, (3, h, w), dtype=np.uint8)
    return write_tif(tmp_path / "a.tif", a, **kw), write_tif(tmp_path / "b.tif", b, **kw), a, b


@settings(max_examples=15, deadline=None)
@given(h=st.integers(20, 150), w=st.integers(20, 150), tile=st.sampled_from([16, 32, 48]),
       overlap_frac=st.sampled_from([0.0, 0.25, 0.5]), block=st.sampled_from([16, 40, 4096]), seed=st.integers(0, 99))
def test_blending_a_position_independent_model_equals_the_full_image(tmp_path_factory, h, w, tile, overlap_frac, block, seed):
    tmp = tmp_path_factory.mktemp("sw")
    before, after, a, b = _pair(tmp, h, w, seed)
    overlap = int(tile * overlap_frac) // 2 * 2
    rec = Recorder()
    # 16-pixel output tiles, so small rasters exercise several column blocks and row bands
    with mock.patch.object(sliding_window, "OUT_BLOCK", 16):
        stats = predict_change_raster(rec, before, after, tmp / "c.tif", tile=tile, overlap=overlap, batch_size=3,
                                      prob_out=tmp / "p.tif", block_width=block, progress=False)
    full = pointwise(torch.from_numpy(a).float()[None], torch.from_numpy(b).float()[None])[0, 0].numpy()
    with rasterio.open(tmp / "p.tif") as ds:
        np.testing.assert_allclose(ds.read(1), full, atol=1e-6)
    with rasterio.open(tmp / "c.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), (full > 0.5).astype(np.uint8))
    assert stats["changed_pixels"] == int((full > 0.5).sum())
    # the model only ever sees tile-sized windows (padded when the raster is smaller), never the raster
    assert all(s[2:] == (tile, tile) and s[0] <= 3 for s in rec.shapes)
    assert sum(s[0] for s in rec.shapes) == stats["tiles"]


def test_large_raster_with_default_output_tiles_matches_full_image(tmp_path):
    before, after, a, b = _pair(tmp_path, 300, 600, seed=5)
    predict_change_raster(pointwise, before, after, tmp_path / "c.tif", tile=48, overlap=16, block_width=256,
                          prob_out=tmp_path / "p.tif", progress=False)
    full = pointwise(torch.from_numpy(a).float()[None], torch.from_numpy(b).float()[None])[0, 0].numpy()
    with rasterio.open(tmp_path / "p.tif") as ds:
        assert ds.block_shapes[0] == (256, 256)
        np.testing.assert_allclose(ds.read(1), full, atol=1e-6)


def test_ramp_weights_are_positive_and_flat_inside():
    w = ramp_weights(64, 16)
    assert w.min() > 0 and w[20:44, 20:44].eq(1).all() and w[0, 0] < w[4, 4] < 1


def test_output_keeps_crs_transform_and_respects_nodata(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(1, 256, (3, 70, 90), dtype=np.uint8)
    b = rng.integers(1, 256, (3, 70, 90), dtype=np.uint8)
    a[:, :10, :] = 0          # nodata stripe in before
    b[:, :, -5:] = 0          # nodata stripe in after
    before = write_tif(tmp_path / "a.tif", a, crs="EPSG:3857", nodata=0)
    after = write_tif(tmp_path / "b.tif", b, crs="EPSG:3857", nodata=0)
    predict_change_raster(pointwise, before, after, tmp_path / "c.tif", tile=32, overlap=8, prob_out=tmp_path / "p.tif",
                          overlay=tmp_path / "c.png", progress=False)
    with rasterio.open(tmp_path / "c.tif") as ds:
        assert ds.crs.to_epsg() == 3857 and ds.transform == TRANSFORM and ds.nodata == 255 and ds.dtypes[0] == "uint8"
        change = ds.read(1)
    assert (change[:10] == 255).all() and (change[:, -5:] == 255).all()
    assert set(np.unique(change[10:, :-5])) <= {0, 1}
    with rasterio.open(tmp_path / "p.tif") as ds:
        prob = ds.read(1)
    assert np.isnan(prob[:10]).all() and not np.isnan(prob[10:, :-5]).any()
    from PIL import Image

    overlay = np.asarray(Image.open(tmp_path / "c.png"))
    assert overlay.shape == (70, 90, 3)
    red = change == 1
    assert (overlay[red][:, 0] >= overlay[red][:, 1]).all()  # change tinted red


def test_grid_mismatch_is_an_error_naming_both_files(tmp_path):
    before, _, a, b = _pair(tmp_path, 40, 40)
    other = write_tif(tmp_path / "other.tif", b, crs="EPSG:4326", transform=from_origin(10, 50, 1e-5, 1e-5))
    with pytest.raises(DataError, match=r"a\.tif and .*other\.tif are not on the same grid \(CRS EPSG:32615 vs EPSG:4326.*--reproject"):
        predict_change_raster(pointwise, before, other, tmp_path / "c.tif", tile=32, progress=False)
    assert not (tmp_path / "c.tif").exists() and not list(tmp_path.glob(".c.tif*"))


def test_reproject_warps_after_onto_before(tmp_path):
    before, after, a, b = _pair(tmp_path, 48, 48)
    shifted = write_tif(tmp_path / "shifted.tif", b, transform=from_origin(500_000.0 + 2.0, 3_300_000.0, 0.5, 0.5))
    predict_change_raster(pointwise, before, shifted, tmp_path / "c.tif", tile=32, overlap=8, reproject=True,
                          prob_out=tmp_path / "p.tif", progress=False)
    with rasterio.open(tmp_path / "p.tif") as ds:
        prob = ds.read(1)
        assert ds.transform == TRANSFORM and ds.shape == (48, 48)
    # 'after' starts 4 pixels east: its column j lands on before's column j + 4
    expected = pointwise(torch.from_numpy(a[:, :, 4:]).float()[None], torch.from_numpy(b[:, :, :-4]).float()[None])[0, 0]
    np.testing.assert_allclose(prob[:, 4:], expected.numpy(), atol=1e-5)
    assert np.isnan(prob[:, :4]).all()  # outside the warped after raster: nodata


def test_band_count_dtype_and_small_raster_checks(tmp_path):
    rng = np.random.default_rng(0)
    four = write_tif(tmp_path / "four.tif", rng.integers(0, 256, (4, 40, 40), dtype=np.uint8))
    with pytest.raises(DataError, match=r"four\.tif: has 4 band\(s\); expected an RGB raster.*--bands"):
        predict_change_raster(pointwise, four, four, tmp_path / "c.tif", tile=32, progress=False)
    predict_change_raster(pointwise, four, four, tmp_path / "c.tif", tile=32, bands=(1, 2, 3), progress=False)
    wide = write_tif(tmp_path / "u16.tif", rng.integers(0, 4000, (3, 40, 40)).astype(np.uint16))
    with pytest.raises(DataError, match=r"u16\.tif: band dtype is uint16.*--scale"):
        predict_change_raster(pointwise, wide, wide, tmp_path / "d.tif", tile=32, progress=False)
    small = write_tif(tmp_path / "small.tif", rng.integers(0, 256, (3, 40, 24), dtype=np.uint8))
    with pytest.raises(DataError, match=r"small\.tif: height 40 is smaller than the tile and not a multiple of 16"):
        predict_change_raster(pointwise, small, small, tmp_path / "e.tif", tile=64, pad=False, progress=False)
    with pytest.raises(GeovitError, match="--tile 40"):
        predict_change_raster(pointwise, small, small, tmp_path / "e.tif", tile=40, progress=False)
    predict_change_raster(pointwise, small, small, tmp_path / "e.tif", tile=64, progress=False)  # padded
    with rasterio.open(tmp_path / "e.tif") as ds:
        assert ds.shape == (40, 24)


def test_failure_mid_prediction_leaves_no_output(tmp_path):
    before, after, _, _ = _pair(tmp_path, 64, 64)
    calls = []

    def flaky(t1, t2):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return pointwise(t1, t2)

    with pytest.raises(RuntimeError, match="boom"):
        predict_change_raster(flaky, before, after, tmp_path / "c.tif", tile=16, batch_size=1, prob_out=tmp_path / "p.tif",
                              overlay=tmp_path / "c.png", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "b.tif"]


def test_nan_pixels_of_a_float_raster_are_nodata_not_no_change(tmp_path):
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 255, (3, 48, 48)).astype(np.float32)
    b = rng.uniform(0, 255, (3, 48, 48)).astype(np.float32)
    a[1, 5:9, 7:20] = np.nan  # no declared nodata value: NaN alone marks the gap
    b[:, 30:, 40:] = np.nan
    before, after = write_tif(tmp_path / "a.tif", a), write_tif(tmp_path / "b.tif", b)
    predict_change_raster(pointwise, before, after, tmp_path / "c.tif", tile=32, overlap=8, scale=1.0, progress=False)
    with rasterio.open(tmp_path / "c.tif") as ds:
        change = ds.read(1)
    gap = np.isnan(a).any(0) | np.isnan(b).any(0)
    assert (change[gap] == 255).all()
    assert set(np.unique(change[~gap])) <= {0, 1}
