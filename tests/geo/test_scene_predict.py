"""`geovit predict` / the scene API: per-window channel availability, georeferencing, outputs, bad input."""
from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.transform import from_origin
from scene_helpers import WINDOW, save_task

from geovit.data.so2sat import CLASSES, SO2SAT_STATS
from geovit.errors import CheckpointError, DataError, GeovitError
from geovit.predict import load_model, predict_scene


def _physical(scene) -> np.ndarray:
    """(18, H, W) float32 scene values in So2Sat's band order (S1 then S2), as the reader scales them."""
    with rasterio.open(scene.s2) as ds:
        s2 = ds.read(out_dtype="float32") * np.float32(ds.scales[0]) + np.float32(ds.offsets[0])
    with rasterio.open(scene.s1) as ds:
        s1 = ds.read(out_dtype="float32")
    return np.concatenate([s1, s2])


def _expected(task, values: np.ndarray, usable_ids) -> tuple[np.ndarray, np.ndarray]:
    """Class and softmax of every window from one ``model(x, channels=ids)`` call per window."""
    mean, std = (np.asarray(a, np.float32) for a in SO2SAT_STATS["2"])
    rows, cols = values.shape[1] // WINDOW, values.shape[2] // WINDOW
    classes = np.zeros((rows, cols), np.uint8)
    probs = np.zeros((17, rows, cols), np.float32)
    for i in range(rows):
        for j in range(cols):
            ids = np.asarray(usable_ids(i, j))
            x = values[ids, i * WINDOW:(i + 1) * WINDOW, j * WINDOW:(j + 1) * WINDOW]
            x = (x - mean[ids][:, None, None]) / std[ids][:, None, None]
            with torch.no_grad():
                logits = task.model(torch.from_numpy(x[None]), channels=torch.as_tensor(ids))[0]
            classes[i, j] = int(logits.argmax())
            probs[:, i, j] = torch.softmax(logits, 0).numpy()
    return classes, probs


def test_half_clouded_scene_uses_8_channels_there_18_elsewhere_and_equals_per_window_calls(classifier, half_clouded,
                                                                                             tmp_path):
    ckpt, task = classifier
    out = tmp_path / "map.tif"
    stats = predict_scene(ckpt, [half_clouded.s2, half_clouded.s1], out, masks=[str(half_clouded.cloud_mask)],
                          probabilities=tmp_path / "p.tif", batch_size=7, progress=False, device="cpu")
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 32632 and ds.shape == (8, 10) and ds.count == 2
        with rasterio.open(half_clouded.s2) as s2:
            assert ds.transform == s2.transform @ Affine.scale(WINDOW)
            assert ds.transform.c == s2.transform.c and ds.transform.f == s2.transform.f  # anchored at the origin
        assert ds.dtypes == ("uint8", "uint8") and ds.nodata == 255 and ds.descriptions == ("class", "channels_used")
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and ds.compression.name.lower() == "deflate"
        assert json.loads(ds.tags()["CLASSES"]) == list(CLASSES) and "GEOVIT_SYNTHETIC" in ds.tags()
        classes, counts = ds.read(1), ds.read(2)
    clouded = np.zeros((8, 10), bool)
    clouded[:, :5] = True  # the western half, in whole scene windows of 16 px
    assert (counts[clouded] == 8).all() and (counts[~clouded] == 18).all()
    want_classes, want_probs = _expected(task, _physical(half_clouded),
                                         lambda i, j: range(8) if clouded[i, j] else range(18))
    assert len(np.unique(want_classes)) > 2  # the comparison below is not between two constant maps
    np.testing.assert_array_equal(classes, want_classes)
    with rasterio.open(tmp_path / "p.tif") as ds:
        assert ds.count == 17 and ds.descriptions[0] == CLASSES[0] and ds.transform == rasterio.open(out).transform
        np.testing.assert_allclose(ds.read(), want_probs, atol=2e-5)
    assert {s["num_channels"]: s["windows"] for s in stats["channel_sets"]} == {8: 40, 18: 40}
    # batched by channel set: ceil(40 / 7) calls per set, not one per window
    assert stats["model_calls"] == 2 * 6 and stats["nodata_windows"] == 0
    from PIL import Image

    png = Image.open(out.with_suffix(".png"))
    assert png.format == "PNG" and png.size[0] > 100


def test_without_the_mask_the_clouds_are_fed_to_the_model(classifier, half_clouded, tmp_path):
    ckpt, task = classifier
    predict_scene(ckpt, [half_clouded.s2, half_clouded.s1], tmp_path / "m.tif", preview=False, progress=False,
                  device="cpu")
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert (ds.read(2) == 18).all()
        classes = ds.read(1)
    want, _ = _expected(task, _physical(half_clouded), lambda i, j: range(18))
    np.testing.assert_array_equal(classes, want)


def test_mask_band_inside_a_raster_and_explicit_band_names(classifier, half_clouded, tmp_path):
    """An 11-band stack (10 S2 bands + a cloud band) named with --bands; the mask is one of its bands."""
    ckpt, _ = classifier
    with rasterio.open(half_clouded.s2) as s2, rasterio.open(half_clouded.cloud_mask) as cm:
        profile = s2.profile
        profile.update(count=11, dtype="float32", nodata=None)
        data = np.concatenate([s2.read(out_dtype="float32") * 1e-4 - 0.1, cm.read(out_dtype="float32")])
    stack = tmp_path / "stack.tif"
    with rasterio.open(stack, "w", **profile) as ds:
        ds.write(data)  # no band descriptions: the names must come from --bands
    names = "S2_B02,S2_B03,S2_B04,S2_B05,S2_B06,S2_B07,S2_B08,S2_B8A,S2_B11,S2_B12,clouds"
    predict_scene(ckpt, [stack, half_clouded.s1], tmp_path / "a.tif", bands=[names, "sentinel1"], masks=["clouds"],
                  preview=False, progress=False, device="cpu")
    predict_scene(ckpt, [half_clouded.s2, half_clouded.s1], tmp_path / "b.tif", masks=[f"{half_clouded.cloud_mask}=sentinel2"],
                  preview=False, progress=False, device="cpu")
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        np.testing.assert_array_equal(a.read(2), b.read(2))
        assert (a.read(1) == b.read(1)).mean() > 0.95  # float32 vs uint16 storage of the same reflectances
    # a skipped band ('-'), and a mask on the S1 bands only: 10 S2 channels where the 'clouds' are
    predict_scene(ckpt, [stack, half_clouded.s1], tmp_path / "c.tif", bands=[names.replace("S2_B12", "-"), None],
                  masks=["clouds=sentinel1"], preview=False, progress=False, device="cpu")
    with rasterio.open(tmp_path / "c.tif") as c:
        counts = c.read(2)
    assert (counts[:, :5] == 9).all() and (counts[:, 5:] == 17).all()


def test_reprojected_swath_covers_part_of_the_scene(classifier, half_clouded, tmp_path):
    """S1 on a grid shifted one window east: without --reproject an error, with it the first column has S2 only."""
    ckpt, _ = classifier
    with rasterio.open(half_clouded.s1) as ds:
        profile, data = ds.profile, ds.read()
        t = ds.transform
    shifted = tmp_path / "s1_shifted.tif"
    profile.update(transform=t @ Affine.translation(WINDOW, 0))
    with rasterio.open(shifted, "w", **profile) as ds:
        ds.write(data)
        for b in range(1, 9):
            ds.set_band_description(b, f"S1_B{b}")
    with pytest.raises(DataError, match=r"s1_shifted\.tif is not on the grid of .*s2\.tif \(transform .*--reproject"):
        predict_scene(ckpt, [half_clouded.s2, shifted], tmp_path / "m.tif", progress=False, device="cpu")
    assert not list(tmp_path.glob("m*")) and not list(tmp_path.glob(".m*"))
    predict_scene(ckpt, [half_clouded.s2, shifted], tmp_path / "m.tif", reproject=True, preview=False, progress=False,
                  device="cpu")
    with rasterio.open(tmp_path / "m.tif") as ds:
        counts = ds.read(2)
    assert (counts[:, 0] == 10).all() and (counts[:, 1:] == 18).all()


def test_overlapping_stride_and_edge_windows(classifier, half_clouded, tmp_path):
    ckpt, _ = classifier
    predict_scene(ckpt, [half_clouded.s2, half_clouded.s1], tmp_path / "m.tif", stride=12, preview=False,
                  progress=False, device="cpu")
    with rasterio.open(tmp_path / "m.tif") as ds, rasterio.open(half_clouded.s2) as s2:
        # 128 rows / stride 12: windows at 0, 12, ..., 120 (the last reaches 8 px past the edge); 160 columns: 0..144
        assert ds.shape == (11, 13)
        assert ds.transform == s2.transform @ Affine.translation(2, 2) @ Affine.scale(12)  # centred on the windows
        counts, classes = ds.read(2), ds.read(1)
    # the last row of windows is half outside the scene (> max_missing): no band left there
    assert (counts[-1] == 0).all() and (counts[:-1] == 18).all()
    assert (classes[-1] == 255).all() and (classes[:-1] < 17).all()


def test_all_nodata_scene_gives_a_nodata_map_and_a_warning(classifier, tmp_path):
    ckpt, _ = classifier
    nan = np.full((8, 32, 48), np.nan, np.float32)
    path = tmp_path / "empty.tif"
    with rasterio.open(path, "w", driver="GTiff", height=32, width=48, count=8, dtype="float32", nodata=float("nan"),
                       crs="EPSG:32632", transform=from_origin(0, 0, 10, 10)) as ds:
        ds.write(nan)
    stats = predict_scene(ckpt, [path], tmp_path / "m.tif", bands=["sentinel1"], progress=False, device="cpu")
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert (ds.read(1) == 255).all() and (ds.read(2) == 0).all()
    assert stats["windows_used"] == 0 and "all nodata" in stats["warning"] and stats["model_calls"] == 0


def test_bad_input_is_named_and_leaves_no_output(classifier, half_clouded, tmp_path):
    ckpt, task = classifier
    out = tmp_path / "m.tif"
    rasters = [half_clouded.s2, half_clouded.s1]

    far = tmp_path / "far.tif"
    with rasterio.open(half_clouded.s1) as ds:
        profile, data = ds.profile, ds.read()
    profile.update(transform=from_origin(900_000.0, 1_000_000.0, 10, 10))
    with rasterio.open(far, "w", **profile) as ds:
        ds.write(data)
    with pytest.raises(DataError, match=r"far\.tif does not overlap .*s2\.tif"):
        predict_scene(ckpt, [half_clouded.s2, far], out, reproject=True, progress=False, device="cpu")
    with pytest.raises(GeovitError, match=r"--bands: 'B99' \(band 3 of .*s2\.tif\) is not a channel of table 'so2sat'"):
        predict_scene(ckpt, rasters, out, bands=["S2_B02,S2_B03,B99,S2_B05,S2_B06,S2_B07,S2_B08,S2_B8A,S2_B11,S2_B12",
                                                 None], progress=False, device="cpu")
    with pytest.raises(DataError, match=r"names 2 band\(s\), but .*s2\.tif has 10"):
        predict_scene(ckpt, rasters, out, bands=["S2_B02,S2_B03", None], progress=False, device="cpu")
    with pytest.raises(GeovitError, match="given 1 time"):
        predict_scene(ckpt, rasters, out, bands=["sentinel2"], progress=False, device="cpu")
    with pytest.raises(GeovitError, match="channel S1_B1 is given twice"):
        predict_scene(ckpt, [half_clouded.s1, half_clouded.s1], out, progress=False, device="cpu")
    with pytest.raises(GeovitError, match=r"--mask 'nope': 'nope' is neither a band name"):
        predict_scene(ckpt, rasters, out, masks=["nope"], progress=False, device="cpu")
    with pytest.raises(GeovitError, match="--max-missing 1.5"):
        predict_scene(ckpt, rasters, out, max_missing=1.5, progress=False, device="cpu")
    plain = tmp_path / "plain.tif"
    with rasterio.open(plain, "w", driver="GTiff", height=32, width=32, count=2, dtype="float32",
                       crs="EPSG:32632", transform=from_origin(500_000.0, 5_300_000.0, 10, 10)) as ds:
        ds.write(np.ones((2, 32, 32), np.float32))
    with pytest.raises(GeovitError, match="no band descriptions, so name their bands with --bands"):
        predict_scene(ckpt, [plain], out, progress=False, device="cpu")
    # a model trained on Sentinel-1 only cannot use a Sentinel-2 stack
    hp = {k: v for k, v in dict(task.hparams).items() if k in type(task).init_arguments()}
    s1_task = type(task)(**{**hp, "channel_ids": list(range(8))})
    s1_ckpt = save_task(s1_task, tmp_path / "s1.ckpt")
    with pytest.raises(GeovitError, match="none of the bands of .*s2.tif names a channel the model uses"):
        predict_scene(s1_ckpt, [half_clouded.s2], out, progress=False, device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["far.tif", "plain.tif", "s1.ckpt"]


def test_checkpoints_that_are_not_classifiers_are_refused(classifier, tmp_path):
    _, task = classifier
    foreign = tmp_path / "change.ckpt"
    torch.save({"hyper_parameters": {**dict(task.hparams), "family": "changevit"}, "state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match=r"holds a 'changevit' model, which is not a channel-adaptive classifier"):
        load_model(foreign)
    plain = tmp_path / "weights.pt"
    torch.save(task.model.state_dict(), plain)
    with pytest.raises(CheckpointError, match="not a geovit training checkpoint"):
        load_model(plain)
    from geovit.models import create_model
    from geovit.tasks.pretraining import PretrainingTask

    config = create_model("chamaevit_tiny_patch8", embed_dim=24, depth=1, num_heads=2, num_memory_tokens=1,
                          num_classes=0, decoder=dict(num_heads=2)).config
    encoder = save_task(PretrainingTask(model_config=config, channel_table="so2sat"), tmp_path / "enc.ckpt")
    with pytest.raises(CheckpointError, match="no classification head .* not a classifier; use geovit embed"):
        load_model(encoder)
    assert load_model(encoder, classifier=False).num_classes == 0


def test_chamaevit_classifier_maps_a_scene(half_clouded, tmp_path):
    """A `geovit pretrain` checkpoint with a classifier head (So2Sat) is a classifier too."""
    from geovit.models import create_model
    from geovit.tasks.pretraining import PretrainingTask

    torch.manual_seed(1)
    config = create_model("chamaevit_tiny_patch8", img_size=WINDOW, embed_dim=24, depth=1, num_heads=2,
                          num_memory_tokens=1, decoder=dict(num_heads=2)).config
    task = PretrainingTask(model_config=config, channel_table="so2sat", channel_names=[])
    ckpt = save_task(task, tmp_path / "pre.ckpt")
    stats = predict_scene(ckpt, [half_clouded.s2, half_clouded.s1], tmp_path / "m.tif",
                          masks=[str(half_clouded.cloud_mask)], preview=False, progress=False, device="cpu")
    assert {s["num_channels"] for s in stats["channel_sets"]} == {8, 18}
    with rasterio.open(tmp_path / "m.tif") as ds:
        classes = ds.read(1)
    values = _physical(half_clouded)
    mean, std = (np.asarray(a, np.float32) for a in SO2SAT_STATS["2"])
    x = (values[:8, :WINDOW, :WINDOW] - mean[:8, None, None]) / std[:8, None, None]
    with torch.no_grad():
        want = task.model.eval()(torch.from_numpy(x[None]), channels=torch.arange(8)).argmax(1).item()
    assert classes[0, 0] == want


def test_failure_mid_run_leaves_nothing(classifier, half_clouded, tmp_path):
    ckpt, _ = classifier
    from geovit.predict import model as model_mod

    calls = []
    real = model_mod.SceneModel.logits

    def flaky(self, x, ids):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(self, x, ids)

    with mock.patch.object(model_mod.SceneModel, "logits", flaky), pytest.raises(RuntimeError, match="boom"):
        predict_scene(ckpt, [half_clouded.s2, half_clouded.s1], tmp_path / "m.tif", probabilities=tmp_path / "p.tif",
                      batch_size=4, progress=False, device="cpu")
    assert list(tmp_path.iterdir()) == []


def test_cli_predict_prints_the_channel_sets_and_bad_input_exits_2(classifier, half_clouded, tmp_path, run_geovit):
    ckpt, _ = classifier
    code, out, err = run_geovit("predict", ckpt.parent.parent, "--raster", half_clouded.s2, "--raster", half_clouded.s1,
                                "--mask", half_clouded.cloud_mask, "--out", tmp_path / "m.tif", "--probabilities",
                                "--stats", tmp_path / "stats.json", "--device", "cpu", "--batch-size", "16")
    assert code == 0, err
    assert "[SYNTHETIC DATA] 80 windows (8 x 10" in out and "40 windows on 18 channels" in out
    assert "40 windows on  8 channels (S1_B1..S1_B8)" in out
    assert "predict: 80/80 windows (100 %" in err  # plain progress lines when stderr is not a terminal
    assert {p.name for p in tmp_path.iterdir()} == {"m.tif", "m.png", "m_probabilities.tif", "stats.json"}
    assert json.loads((tmp_path / "stats.json").read_text())["windows_used"] == 80
    code, out, err = run_geovit("predict", ckpt, "--raster", half_clouded.s2, "--raster", tmp_path / "missing.tif",
                                "--out", tmp_path / "x.tif")
    assert code == 2 and "missing.tif: file not found" in err and "Traceback" not in err
    code, out, err = run_geovit("predict", ckpt, "--raster", half_clouded.s2, "--bands", "S2_B02,nonsense",
                                "--out", tmp_path / "x.tif")
    assert code == 2 and "names 2 band(s)" in err and not (tmp_path / "x.tif").exists()


def test_zarr_cube_input_gives_the_geotiff_map(classifier, half_clouded, tmp_path):
    import xarray as xr

    ckpt, _ = classifier
    with rasterio.open(half_clouded.s1) as ds:
        data, t, crs, names = ds.read(), ds.transform, ds.crs, list(ds.descriptions)
    xs = t.c + t.a * (np.arange(data.shape[2]) + 0.5)
    ys = t.f + t.e * (np.arange(data.shape[1]) + 0.5)
    cube = xr.DataArray(data, dims=("band", "y", "x"), coords={"band": names, "y": ys, "x": xs},
                        attrs={"crs": crs.to_wkt()}, name="s1")
    cube.to_dataset().to_zarr(tmp_path / "s1.zarr", mode="w", zarr_format=2, consolidated=False)
    masks = [str(half_clouded.cloud_mask)]
    predict_scene(ckpt, [half_clouded.s2, tmp_path / "s1.zarr"], tmp_path / "cube.tif", masks=masks, preview=False,
                  progress=False, device="cpu")
    predict_scene(ckpt, [half_clouded.s2, half_clouded.s1], tmp_path / "tif.tif", masks=masks, preview=False,
                  progress=False, device="cpu")
    with rasterio.open(tmp_path / "cube.tif") as a, rasterio.open(tmp_path / "tif.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.transform == b.transform and a.crs == b.crs
    shifted = cube.assign_coords(x=xs + 160.0)
    with pytest.raises(DataError, match=r"^s1 is not on the grid of .*--reproject"):
        predict_scene(ckpt, [half_clouded.s2, shifted], tmp_path / "x.tif", progress=False, device="cpu")
