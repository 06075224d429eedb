"""`geovit embed`: scene and dataset embeddings round-trip through zarr; the point lookup other packages use."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from rasterio.crs import CRS
from rasterio.warp import transform as warp_points
from scene_helpers import WINDOW

from geovit.data.so2sat import SO2SAT_STATS
from geovit.errors import DataError
from geovit.predict import embed_dataset, embed_scene, embeddings_at, read_embeddings


def test_scene_embeddings_round_trip_with_coordinates_and_channel_ids(classifier, half_clouded, tmp_path):
    ckpt, task = classifier
    store = tmp_path / "emb.zarr"
    stats = embed_scene(ckpt, [half_clouded.s2, half_clouded.s1], store, masks=[str(half_clouded.cloud_mask)],
                        batch_size=9, progress=False, device="cpu")
    assert stats["windows_used"] == 80
    ds = read_embeddings(store)
    assert dict(ds.sizes) == {"y": 8, "x": 10, "feature": 24, "channel": 18}
    assert CRS.from_wkt(ds.attrs["crs"]).to_epsg() == 32632 and ds.attrs["window"] == WINDOW
    np.testing.assert_allclose(ds["x"].values, 500_000.0 + 10.0 * (WINDOW * np.arange(10) + WINDOW / 2))
    np.testing.assert_allclose(ds["y"].values, 5_300_000.0 - 10.0 * (WINDOW * np.arange(8) + WINDOW / 2))
    assert ds["channel"].values.tolist() == list(range(18)) and str(ds["channel_name"].values[8]) == "S2_B02"
    available = ds["channel_available"].values
    assert available.dtype == bool and ds["channels_used"].dtype == np.uint8
    assert (available[:, :5, :8].all() and not available[:, :5, 8:].any() and available[:, 5:].all())
    emb, classes = ds["embedding"].values, ds["class"].values

    mean, std = (np.asarray(a, np.float32) for a in SO2SAT_STATS["2"])
    with rasterio.open(half_clouded.s2) as s2, rasterio.open(half_clouded.s1) as s1:
        values = np.concatenate([s1.read(out_dtype="float32"),
                                 s2.read(out_dtype="float32") * np.float32(1e-4) + np.float32(-0.1)])
    for i in range(8):
        for j in range(10):
            ids = np.arange(8) if j < 5 else np.arange(18)
            x = values[ids, i * WINDOW:(i + 1) * WINDOW, j * WINDOW:(j + 1) * WINDOW]
            x = torch.from_numpy(((x - mean[ids][:, None, None]) / std[ids][:, None, None])[None])
            with torch.no_grad():
                tokens = task.model.forward_features(x, torch.as_tensor(ids))
                want = task.model.forward_head(tokens, pre_logits=True)[0].numpy()
                cls = int(task.model.forward_head(tokens).argmax())
            np.testing.assert_allclose(emb[i, j], want, atol=2e-5, err_msg=f"window {i},{j}")
            assert classes[i, j] == cls

    # the one-call lookup: points (here in lon/lat) -> the embedding of the window containing each
    px = ds["x"].values[[0, 3, 9]] + np.array([-70.0, 0.0, 75.0])
    py = ds["y"].values[[0, 7, 2]] + np.array([70.0, -75.0, 0.0])
    lon, lat = warp_points("EPSG:32632", "EPSG:4326", px.tolist(), py.tolist())
    got = embeddings_at(store, lon + [0.0], lat + [0.0], crs="EPSG:4326")
    np.testing.assert_allclose(got[:3], emb[[0, 7, 2], [0, 3, 9]], atol=1e-6)
    assert np.isnan(got[3]).all()  # (0°, 0°) is far outside the scene
    with pytest.raises(DataError, match=r"points \[3\] lie outside"):
        embeddings_at(ds, lon + [0.0], lat + [0.0], crs="EPSG:4326", outside="error")


def test_dataset_embeddings_round_trip(classifier, tmp_path):
    from geovit.data.datamodules import So2SatDataModule
    from geovit.data.so2sat import write_synthetic

    ckpt, task = classifier
    data = write_synthetic(tmp_path / "so2sat", num_samples=17, seed=4)
    stats = embed_dataset(ckpt, data, "test", tmp_path / "test.zarr", batch_size=5, progress=False, device="cpu")
    ds = read_embeddings(tmp_path / "test.zarr")
    assert stats["samples"] == 17 and ds.attrs["kind"] == "dataset split" and ds.attrs["split"] == "test"
    assert dict(ds.sizes) == {"sample": 17, "feature": 24, "slot": 18}
    assert (ds["channels"].values == np.arange(18)).all() and {"label", "row"} <= set(ds.coords)
    # so2sat patches are 32 px: the 16 px model embeds them at 32 (ChannelViT tiles its positions)
    dm = So2SatDataModule(data, batch_size=17, augment=False)
    batch = next(iter(dm.split_dataloader("test")))
    with torch.no_grad():
        want = task.model.forward_head(task.model.forward_features(batch["image"], batch["channels"][0]),
                                       pre_logits=True).numpy()
    np.testing.assert_allclose(ds["embedding"].values, want, atol=2e-5)
    np.testing.assert_array_equal(ds["label"].values, batch["label"].numpy())
    assert ds["row"].values.tolist() == list(range(17))
    with pytest.raises(DataError, match="holds a dataset split, not a window grid"):
        embeddings_at(ds, [0.0], [0.0])
    part = embed_dataset(ckpt, data, "validation", tmp_path / "v.zarr", channels="sentinel1", max_samples=4,
                         progress=False, device="cpu")
    v = read_embeddings(tmp_path / "v.zarr")
    assert part["samples"] == 4 and (v["channels"].values == np.arange(8)).all()


def test_cli_embed_scene_and_data_and_errors(classifier, half_clouded, tmp_path, run_geovit):
    ckpt, _ = classifier
    code, out, err = run_geovit("embed", ckpt, "--raster", half_clouded.s2, "--raster", half_clouded.s1, "--out",
                                tmp_path / "e.zarr", "--device", "cpu", "--quiet")
    assert code == 0, err
    assert "80 windows" in out and "wrote" in out and err == ""
    assert read_embeddings(tmp_path / "e.zarr")["embedding"].shape == (8, 10, 24)
    code, out, err = run_geovit("embed", ckpt, "--data", tmp_path / "nowhere", "--out", tmp_path / "d.zarr")
    assert code == 2 and "--data" in err and "folder not found" in err
    code, out, err = run_geovit("embed", ckpt, "--data", tmp_path, "--mask", "clouds", "--out", tmp_path / "d.zarr")
    assert code == 2 and "apply to --raster scenes" in err
    with pytest.raises(SystemExit):  # neither --data nor --raster: an argparse usage error (exit 2)
        run_geovit("embed", ckpt, "--out", tmp_path / "d.zarr")
    with pytest.raises(DataError, match="embedding store not found"):
        read_embeddings(tmp_path / "d.zarr")
