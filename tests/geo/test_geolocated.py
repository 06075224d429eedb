"""Geolocated So2Sat: patch centres and lon/lat in `geovit embed --data`; points, per-city accuracy in `evaluate`."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Transformer

from geovit.data.so2sat import synthetic_geolocation, write_geo_h5, write_synthetic
from geovit.errors import DataError, GeovitError
from geovit.geo.points import PatchPoints, write_points
from geovit.predict import embed_dataset, read_embeddings


@pytest.fixture(scope="module")
def geo_so2sat(tmp_path_factory):
    """A SYNTHETIC So2Sat folder whose test split has a geolocation file (4 cities, 3 UTM zones)."""
    root = write_synthetic(tmp_path_factory.mktemp("so2sat") / "so2sat", num_samples=40, seed=4)
    with h5py.File(root / "testing.h5", "r") as f:
        n = f["label"].shape[0]
    epsg, tfw, city = synthetic_geolocation(n, seed=2)
    write_geo_h5(root / "testing_geo.h5", epsg=epsg, tfw=tfw, city=city)
    return root, epsg, tfw, np.asarray(city)


def _centres_from_tfw(epsg, tfw, size=32):
    """Patch centres computed from the world files alone: (C, F) is the centre of the upper-left pixel."""
    A, D, B, E, C, F = tfw.T
    k = size / 2 - 0.5
    x, y = C + A * k + B * k, F + D * k + E * k
    lon, lat = np.empty(len(x)), np.empty(len(x))
    for code in np.unique(epsg):
        sel = epsg == code
        lon[sel], lat[sel] = Transformer.from_crs(f"EPSG:{code}", "EPSG:4326", always_xy=True).transform(x[sel], y[sel])
    return x, y, lon, lat


def test_embed_dataset_stores_patch_centres_in_their_crs_and_in_wgs84(classifier, geo_so2sat, tmp_path, run_geovit):
    ckpt, _ = classifier
    root, epsg, tfw, city = geo_so2sat
    stats = embed_dataset(ckpt, root, "test", tmp_path / "t.zarr", batch_size=4, progress=False, device="cpu")
    assert stats["geolocated"]
    ds = read_embeddings(tmp_path / "t.zarr")
    assert {"city", "epsg", "x", "y", "lon", "lat", "label", "row"} <= set(ds.coords)
    assert ds["city"].values.tolist() == city.tolist() and (ds["epsg"].values == epsg).all()
    x, y, lon, lat = _centres_from_tfw(epsg, tfw)
    np.testing.assert_allclose(ds["x"].values, x, atol=1e-6)
    np.testing.assert_allclose(ds["y"].values, y, atol=1e-6)
    np.testing.assert_allclose(ds["lon"].values, lon, atol=1e-9)
    np.testing.assert_allclose(ds["lat"].values, lat, atol=1e-9)
    assert "EPSG:4326" in ds.attrs["geolocation"]
    code, out, err = run_geovit("embed", ckpt, "--data", root, "--split", "test", "--out", tmp_path / "c.zarr",
                                "--device", "cpu", "--quiet")
    assert code == 0 and "with patch coordinates" in out, err
    np.testing.assert_array_equal(read_embeddings(tmp_path / "c.zarr")["lon"].values, ds["lon"].values)
    # a split without geolocation file: no coordinates
    assert not embed_dataset(ckpt, root, "validation", tmp_path / "v.zarr", progress=False, device="cpu")["geolocated"]
    assert not {"city", "lon"} & set(read_embeddings(tmp_path / "v.zarr").coords)


def test_evaluate_writes_patch_points_and_per_city_accuracy(classifier, geo_so2sat, tmp_path, run_geovit):
    ckpt, task = classifier
    root, epsg, tfw, city = geo_so2sat
    out = tmp_path / "report"
    code, stdout, err = run_geovit("evaluate", ckpt, "--data", root, "--split", "test", "--out", out,
                                   "--subsets-per-size", "1", "--batch-size", "8")
    assert code == 0, err
    assert "accuracy by city" in stdout and "patches_test.geojson" in stdout
    fc = json.loads((out / "patches_test.geojson").read_text())
    assert fc["type"] == "FeatureCollection" and "crs" not in fc  # RFC 7946: WGS84 implied
    feats = fc["features"]
    with h5py.File(root / "testing.h5", "r") as f:
        labels = f["label"][()].argmax(1)
    assert len(feats) == len(labels)
    props = [f["properties"] for f in feats]
    assert [p["label"] for p in props] == labels.tolist() and [p["city"] for p in props] == city.tolist()
    assert all(isinstance(p["correct"], bool) and p["correct"] == (p["label"] == p["prediction"]) for p in props)
    _, _, lon, lat = _centres_from_tfw(epsg, tfw)
    coords = np.array([f["geometry"]["coordinates"] for f in feats])
    assert all(f["geometry"]["type"] == "Point" for f in feats)
    np.testing.assert_allclose(coords[:, 0], lon, atol=1e-7)
    np.testing.assert_allclose(coords[:, 1], lat, atol=1e-7)
    # the predictions are the model's on all trained channels
    from geovit.data.datamodules import So2SatDataModule

    batch = next(iter(So2SatDataModule(root, batch_size=len(labels), augment=False).split_dataloader("test")))
    with torch.no_grad():
        want = task.model(batch["image"], batch["channels"][0]).argmax(1).numpy()
    assert [p["prediction"] for p in props] == want.tolist()
    metrics = json.loads((out / "metrics.json").read_text())
    by_city = metrics["accuracy_by_city"]
    assert sorted(by_city) == sorted(set(city))
    for name, entry in by_city.items():
        sel = city == name
        assert entry["num_samples"] == sel.sum()
        assert entry["accuracy"] == pytest.approx(float((want[sel] == labels[sel]).mean()))
    # the cities' accuracies, weighted by their sizes, are the split's accuracy on all channels
    weighted = sum(e["accuracy"] * e["num_samples"] for e in by_city.values()) / len(labels)
    assert weighted == pytest.approx(metrics["accuracy_all_channels"])
    assert (out / "city_accuracy.csv").read_text().splitlines()[0] == "city,num_samples,accuracy"

    pyogrio = pytest.importorskip("pyogrio")  # GeoPackage output needs it (GeoJSON does not)
    gpkg = tmp_path / "p.gpkg"
    code, _, err = run_geovit("evaluate", ckpt, "--data", root, "--out", tmp_path / "r2", "--subsets-per-size", "1",
                              "--points", gpkg)
    assert code == 0, err
    meta, _, geometry, fields = pyogrio.raw.read(gpkg)
    assert meta["crs"] == "EPSG:4326" and len(geometry) == len(labels)
    assert fields[meta["fields"].tolist().index("city")].tolist() == city.tolist()


def test_bad_geolocation_is_named_and_leaves_no_output(classifier, geo_so2sat, tmp_path, run_geovit):
    import shutil

    ckpt, _ = classifier
    root, epsg, tfw, city = geo_so2sat
    bad = tmp_path / "so2sat"
    shutil.copytree(root, bad)
    write_geo_h5(bad / "testing_geo.h5", epsg=epsg[:-1], tfw=tfw[:-1], city=list(city[:-1]))  # one row short
    code, _, err = run_geovit("embed", ckpt, "--data", bad, "--split", "test", "--out", tmp_path / "e.zarr")
    assert code == 2 and "testing_geo.h5" in err and "rows" in err and "Traceback" not in err
    assert not list(tmp_path.glob("e.zarr*")) and not list(tmp_path.glob(".e.zarr*"))
    code, _, err = run_geovit("evaluate", ckpt, "--data", bad, "--out", tmp_path / "r", "--subsets-per-size", "1")
    assert code == 2 and "testing_geo.h5" in err and not (tmp_path / "r").exists()
    code, _, err = run_geovit("evaluate", ckpt, "--data", root, "--split", "validation", "--out", tmp_path / "r",
                              "--points", tmp_path / "p.geojson", "--subsets-per-size", "1")
    assert code == 2 and "--points" in err and "no geolocation" in err and "validation_geo.h5" in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "p.geojson").exists()
    code, _, err = run_geovit("evaluate", ckpt, "--data", root, "--out", tmp_path / "r", "--points",
                              tmp_path / "p.shp", "--subsets-per-size", "1")
    assert code == 2 and "expected a .geojson or .gpkg" in err


def test_patch_fields_that_are_not_a_geolocation_are_named():
    good = {"crs": ["EPSG:32633"], "transform": [(10.0, 0.0, 1.0, 0.0, -10.0, 2.0)], "city": ["berlin"]}
    pts = PatchPoints.from_batch(good, 32, 32)
    assert (pts.x[0], pts.y[0]) == (161.0, -158.0)
    with pytest.raises(DataError, match=r"train\.h5, sample 0: field 'crs' is 'WGS84'; expected 'EPSG:<code>'"):
        PatchPoints.from_batch({**good, "crs": ["WGS84"]}, 32, 32, where="train.h5")
    with pytest.raises(DataError, match=r"sample 0: field 'transform' is \(1.0, 2.0\); expected 6 finite numbers"):
        PatchPoints.from_batch({**good, "transform": [(1.0, 2.0)]}, 32, 32)
    with pytest.raises(DataError, match="EPSG:999999 is not a known coordinate reference system"):
        PatchPoints.from_batch({**good, "crs": ["EPSG:999999"]}, 32, 32)
    with pytest.raises(DataError, match="hold 1, 1 and 2 values"):
        PatchPoints.from_batch({**good, "city": ["a", "b"]}, 32, 32)


@settings(max_examples=50, deadline=None)
@given(st.floats(1, 60), st.floats(-5, 5), st.floats(-5, 5), st.floats(1, 60), st.integers(1, 64), st.integers(1, 64),
       st.floats(200_000, 800_000), st.floats(1_000_000, 9_000_000))
def test_patch_centre_is_the_mean_of_its_corners_and_round_trips_through_wgs84(a, b, d, e, h, w, c, f):
    """Any (also rotated) transform: the centre is the mean of the patch's 4 corners; lon/lat map back onto it."""
    from affine import Affine

    t = Affine(a, b, c, d, -e, f)
    pts = PatchPoints.from_batch({"crs": ["EPSG:32633"], "transform": [tuple(t)[:6]], "city": ["c"]}, h, w)
    corners = np.array([t @ (0, 0), t @ (w, 0), t @ (0, h), t @ (w, h)])
    np.testing.assert_allclose([pts.x[0], pts.y[0]], corners.mean(axis=0), rtol=0, atol=1e-6)
    back = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True).transform(pts.lon[0], pts.lat[0])
    np.testing.assert_allclose(back, [pts.x[0], pts.y[0]], atol=1e-3)


def test_write_points_is_atomic_and_checks_its_columns(tmp_path):
    path = tmp_path / "p.geojson"
    write_points(path, [1.5, 2.0], [3.0, 4.25], {"v": np.array([1.0, np.nan]), "ok": np.array([True, False])})
    fc = json.loads(path.read_text())
    assert [f["geometry"]["coordinates"] for f in fc["features"]] == [[1.5, 3.0], [2.0, 4.25]]
    assert [f["properties"] for f in fc["features"]] == [{"v": 1.0, "ok": True}, {"v": None, "ok": False}]
    before = path.read_bytes()
    with pytest.raises(TypeError):  # fails half-way through the features: the old file stays as it was
        write_points(path, [1.0, 2.0], [1.0, 2.0], {"v": np.array([1, object()], dtype=object)})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["p.geojson"]
    with pytest.raises(GeovitError, match="column lengths {'v': 1}"):
        write_points(path, [1.0, 2.0], [1.0, 2.0], {"v": [1]})
    with pytest.raises(GeovitError, match="unknown points format '.shp'"):
        write_points(tmp_path / "p.shp", [1.0], [1.0], {})
