"""The window grid and per-window channel availability (geovit.geo.scene), the synthetic scene, progress lines."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import rasterio
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.transform import from_origin

from geovit.geo.scene import Scene, WindowPlan
from geovit.geo.sliding_window import Progress, window_grid
from geovit.predict.model import SceneModel
from geovit.predict.scene import run_chunk

TRANSFORM = from_origin(300_000.0, 4_000_000.0, 10.0, 10.0)


def _write(path, data, *, nodata=None, names=None, dtype=None):
    data = np.asarray(data) if dtype is None else np.asarray(data).astype(dtype)
    with rasterio.open(path, "w", driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0],
                       dtype=data.dtype, nodata=nodata, crs="EPSG:32633", transform=TRANSFORM) as ds:
        ds.write(data)
        for b, n in enumerate(names or [], start=1):
            ds.set_band_description(b, n)
    return path


@settings(max_examples=12, deadline=None)
@given(h=st.integers(5, 40), w=st.integers(5, 40), window=st.sampled_from([4, 6, 8]), stride_frac=st.sampled_from([0.5, 1.0]),
       max_missing=st.sampled_from([0.0, 0.1, 0.5]), seed=st.integers(0, 10_000))
def test_kept_bands_are_those_usable_over_enough_of_each_window(tmp_path_factory, h, w, window, stride_frac,
                                                               max_missing, seed):
    """Brute force over every window: NaN (band a), a nodata value (band b), a mask file (bands a, b), the edge."""
    tmp = tmp_path_factory.mktemp("avail")
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(1, h, w)).astype(np.float32)
    a[rng.random((1, h, w)) < 0.2] = np.nan
    b = rng.integers(1, 100, size=(1, h, w)).astype(np.int16)
    b[rng.random((1, h, w)) < 0.2] = -1
    mask = (rng.random((1, h, w)) < 0.15).astype(np.uint8)
    c = rng.normal(size=(1, h, w)).astype(np.float32)
    pa = _write(tmp / "a.tif", a, nodata=float("nan"), names=["S1_B1"])
    pb = _write(tmp / "b.tif", b, nodata=-1, names=["S1_B2"])
    pc = _write(tmp / "c.tif", c, names=["S2_B02"])
    pm = _write(tmp / "m.tif", mask)
    stride = max(1, int(window * stride_frac))
    with Scene([pa, pb, pc], masks=[f"{pm}=S1_B1,S1_B2"]) as scene:
        assert scene.channel_ids == (0, 1, 8)
        plan = WindowPlan(scene, window, stride, max_missing, chunk_bytes=1, min_chunk_windows=3)  # tiny chunks
        assert (plan.rows, plan.cols) == (window_grid(h, window, stride)[0], window_grid(w, window, stride)[0])
        keep = np.zeros((plan.rows, plan.cols, 3), bool)
        for chunk in plan.chunks():
            got = plan.read(chunk)
            keep[chunk.r0:chunk.r1, chunk.c0:chunk.c1] = got.keep
    usable = np.zeros((3, plan.rows * stride + window, plan.cols * stride + window), bool)
    usable[0, :h, :w] = ~np.isnan(a[0]) & (mask[0] == 0)
    usable[1, :h, :w] = (b[0] != -1) & (mask[0] == 0)
    usable[2, :h, :w] = True
    for i in range(plan.rows):
        for j in range(plan.cols):
            share = usable[:, i * stride:i * stride + window, j * stride:j * stride + window].mean(axis=(1, 2))
            np.testing.assert_array_equal(keep[i, j], 1 - share <= max_missing + 1e-12, err_msg=f"window {i},{j}")


class MeanModel(torch.nn.Module):
    """Logits from per-channel means weighted by a per-id vector: depends on the values and on the ids."""

    num_classes = 3

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(-1, 1, 18 * 3).reshape(18, 3))

    def forward(self, x, channels):
        return (x.mean((2, 3))[:, :, None] * self.weight[channels][None]).sum(1)


def _mean_model() -> SceneModel:
    return SceneModel(MeanModel(), "channelvit", "so2sat", tuple(range(18)), 4, 3, ("a", "b", "c"))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 9), budget=st.sampled_from([1, 10_000, 10**8]))
def test_batching_by_channel_set_and_chunking_do_not_change_the_result(tmp_path_factory, seed, batch, budget):
    tmp = tmp_path_factory.mktemp("chunks")
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(3, 19, 23)).astype(np.float32)
    data[:, rng.random((19, 23)) < 0.1] = np.nan   # holes shared by all bands
    data[1, :, rng.integers(0, 23)] = np.nan        # one band loses a column
    path = _write(tmp / "s.tif", data, nodata=float("nan"), names=["S1_B1", "S1_B3", "S2_B04"])
    model = _mean_model()
    with Scene([path]) as scene:
        plan = WindowPlan(scene, 4, 4, 0.2, chunk_bytes=budget, min_chunk_windows=1)
        got = np.full((plan.rows, plan.cols), 255)
        for chunk in plan.chunks():
            res = run_chunk(model, plan, chunk, batch_size=batch)
            got[chunk.r0:chunk.r1, chunk.c0:chunk.c1] = res.classes
            assert res.calls == sum(-(-n // batch) for n in res.set_counts.values())
    ids_all = np.array([0, 2, 10])
    for i in range(plan.rows):
        for j in range(plan.cols):
            win = np.full((3, 4, 4), np.nan, np.float32)
            part = data[:, i * 4:i * 4 + 4, j * 4:j * 4 + 4]
            win[:, :part.shape[1], :part.shape[2]] = part
            kept = np.flatnonzero(np.isnan(win).mean(axis=(1, 2)) <= 0.2)
            if not len(kept):
                assert got[i, j] == 255
                continue
            x = torch.from_numpy(np.nan_to_num(win[kept], nan=0.0)[None])
            assert got[i, j] == int(model.module(x, torch.as_tensor(ids_all[kept])).argmax())


def test_window_grid_counts_and_overhang():
    assert window_grid(32, 32, 32) == (1, 0) and window_grid(33, 32, 32) == (2, 31) and window_grid(10, 32, 32) == (1, 22)
    for size in range(1, 120):
        for window, stride in ((16, 16), (16, 5), (8, 12)):
            n, over = window_grid(size, window, stride)
            assert (n - 1) * stride + window - over == size  # the grid covers the raster...
            assert n == 1 or (n - 2) * stride + window < size             # ...and no window lies fully outside


def test_progress_prints_plain_lines_off_a_terminal():
    stream = io.StringIO()
    bar = Progress(50, "predict", stream=stream)
    for _ in range(10):
        bar.update(5)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("predict: 50/50 windows (100 %")
    quiet = io.StringIO()
    Progress(5, "x", enabled=False, stream=quiet).update(5)
    assert quiet.getvalue() == ""


def test_synthetic_scene_files_grid_and_classes(tmp_path):
    from geovit.geo.synthetic import class_prototypes, write_synthetic_scene

    scene = write_synthetic_scene(tmp_path / "s", height=96, width=64, window=16, clouds="blobs", cloud_cover=0.4,
                                  s1_gap=0.34, seed=5, generator="simple")
    meta = json.loads(scene.meta.read_text())
    with rasterio.open(scene.s2) as s2, rasterio.open(scene.s1) as s1, rasterio.open(scene.cloud_mask) as cm, \
            rasterio.open(scene.truth) as truth:
        assert s2.count == 10 and s1.count == 8 and s2.descriptions[0] == "S2_B02" and s1.descriptions[-1] == "S1_B8"
        assert s2.crs == s1.crs == cm.crs and s2.transform == s1.transform == cm.transform
        assert s2.scales[0] == pytest.approx(1e-4) and s2.offsets[0] == pytest.approx(-0.1)
        assert truth.shape == (6, 4) and truth.transform.a == 16 * s2.transform.a
        clouds = cm.read(1).astype(bool)
        sar = s1.read([1, 3])
        labels = truth.read(1)
    assert 0.1 < clouds.mean() < 0.7 and meta["cloud_fraction"] == pytest.approx(clouds.mean())
    assert np.isnan(sar[:, -32:]).all() and not np.isnan(sar[:, :-32]).any()  # two window rows outside the swath
    assert labels.max() < 17
    # the class texture is shared by all bands: the difference of two bands' window means is the
    # difference of the class offsets (prototypes of the synthetic So2Sat set of dataset_seed 0)
    offsets, _, _ = class_prototypes(0)
    from geovit.data.so2sat import SO2SAT_STATS

    mean, std = (np.asarray(a)[[0, 2]] for a in SO2SAT_STATS["2"])
    z = (sar[:, :64].reshape(2, 4, 16, 4, 16).mean(axis=(2, 4)) - mean[:, None, None]) / std[:, None, None]
    np.testing.assert_allclose(z[0] - z[1], 1.2 * (offsets[labels[:4], 0] - offsets[labels[:4], 2]), atol=0.4)


def test_physical_scene_windows_are_the_training_renderer(tmp_path):
    """The default generator renders each 32 px window with the synthetic So2Sat renderer (same draws)."""
    from geovit.data.so2sat_synthetic import render_scenes
    from geovit.errors import GeovitError
    from geovit.geo.synthetic import write_synthetic_scene

    scene = write_synthetic_scene(tmp_path / "p", height=64, width=96, clouds="none", s1_gap=0.0, seed=2)
    with rasterio.open(scene.truth) as t, rasterio.open(scene.s1) as s1, rasterio.open(scene.s2) as s2:
        labels = t.read(1)
        sar = s1.read(out_dtype="float64")
        refl = s2.read(out_dtype="float64") * s2.scales[0] + s2.offsets[0]
    want1, want2 = render_scenes(labels[1], np.random.default_rng([2, 3, 1]))  # second window row
    np.testing.assert_allclose(sar[:, 32:64], want1.transpose(3, 1, 0, 2).reshape(8, 32, 96), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(refl[:, 32:64], want2.transpose(3, 1, 0, 2).reshape(10, 32, 96), atol=1e-4)
    with pytest.raises(GeovitError, match="window=16: the physical generator renders So2Sat's 32 px patches"):
        write_synthetic_scene(tmp_path / "q", height=64, window=16)
    assert not (tmp_path / "q" / "s2.tif").exists()


def test_map_wider_than_one_output_tile_matches_the_window_means(tmp_path):
    """A 275 x 325 window grid: several chunks and COG tiles (256 px) plus overviews, assembled in place."""
    from geovit.predict import predict_scene

    rng = np.random.default_rng(7)
    data = rng.normal(size=(2, 1100, 1300)).astype(np.float32)
    data[0, :40, :] = np.nan  # S1_B1 missing over the first 10 window rows
    path = _write(tmp_path / "big.tif", data, nodata=float("nan"), names=["S1_B1", "S2_B02"])
    stats = predict_scene(_mean_model(), [path], tmp_path / "m.tif", probabilities=tmp_path / "p.tif",
                          batch_size=1024, progress=False, device="cpu")
    assert stats["chunks"] >= 4 and stats["windows"] == 275 * 325  # 2 x 2 output tiles at least
    means = data.reshape(2, 275, 4, 325, 4).mean(axis=(2, 4))
    w = _mean_model().module.weight.detach().numpy()
    full = means[0][..., None] * w[0] + means[1][..., None] * w[8]
    s2_only = np.nan_to_num(means[1])[..., None] * w[8]
    want = np.where(np.isnan(means[0])[..., None], s2_only, np.nan_to_num(full)).argmax(-1)
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert ds.shape == (275, 325) and ds.block_shapes[0] == (256, 256) and ds.overviews(1)
        np.testing.assert_array_equal(ds.read(1), want)
        counts = ds.read(2)
    assert (counts[:10] == 1).all() and (counts[10:] == 2).all()
    with rasterio.open(tmp_path / "p.tif") as ds:
        probs = ds.read()
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
