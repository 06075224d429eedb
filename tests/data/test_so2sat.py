"""So2Sat LCZ42 loader: torchgeo's layouts, fixtures and splits, laziness, bands, bad input."""
from __future__ import annotations

import re

import h5py
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset, random_split

from geovit.data import so2sat
from geovit.data.so2sat import (
    FILENAMES,
    MD5,
    SO2SAT_STATS,
    SPLITS,
    So2Sat,
    band_stats,
    split_rows,
    write_synthetic,
)
from geovit.errors import DataError, GeovitError

V3 = [v for v in FILENAMES if v != "2"]


@pytest.mark.parametrize("version", list(FILENAMES))
def test_reads_torchgeo_fixtures_unchanged(torchgeo_fixtures, version):
    root = torchgeo_fixtures / "so2sat"
    for split in ("train", "test") if version in V3 else SPLITS:  # 2 rows: no v3 validation
        ds = So2Sat(root, split=split, version=version)
        assert len(ds) == 2 and sorted(ds.rows.tolist()) == [0, 1]
        with h5py.File(ds.path) as f:
            row = int(ds.rows[1])
            raw1, raw2, onehot = f["sen1"][row], f["sen2"][row], f["label"][row]
        s = ds[1]
        assert s["image"].dtype == torch.float32 and s["image"].shape == (18, 32, 32)
        np.testing.assert_array_equal(s["image"][:8].numpy(), raw1.transpose(2, 0, 1).astype(np.float32))
        np.testing.assert_array_equal(s["image"][8:].numpy(), raw2.transpose(2, 0, 1).astype(np.float32))
        assert s["label"] == int(np.argmax(onehot))
        assert s["channels"].tolist() == list(range(18))


def test_band_selection_order(torchgeo_fixtures):
    root = torchgeo_fixtures / "so2sat"
    full = So2Sat(root)[0]["image"]
    sub = So2Sat(root, bands="S2_B04,S2_B03,S2_B02,S1_B1")[0]
    assert sub["channels"].tolist() == [10, 9, 8, 0]
    torch.testing.assert_close(sub["image"], full[[10, 9, 8, 0]])
    assert So2Sat(root, bands="sentinel1")[0]["image"].shape[0] == 8


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("so2sat"), num_samples=64, seed=1)


def test_synthetic_has_real_layout_and_dtype(synth):
    for fname in FILENAMES["2"].values():
        with h5py.File(synth / fname) as f:
            assert f["sen1"].dtype == np.float64 and f["sen1"].shape[1:] == (32, 32, 8)
            assert f["sen2"].shape[1:] == (32, 32, 10) and f["label"].shape[1:] == (17,)
            assert np.all(f["label"][:].sum(1) == 1)
    assert len(So2Sat(synth, "train")) == 64 and len(So2Sat(synth, "test")) == 17


def test_synthetic_is_learnable(synth):
    """Nearest class mean on per-band averages beats chance (1/17) by far, from S1 and from S2 alone."""
    for bands in ("sentinel1", "sentinel2"):
        tr, te = So2Sat(synth, "train", bands=bands), So2Sat(synth, "test", bands=bands)
        f = lambda ds: (np.stack([ds[i]["image"].mean((1, 2)).numpy() for i in range(len(ds))]),
                        np.array([ds[i]["label"] for i in range(len(ds))]))
        xtr, ytr = f(tr)
        xte, yte = f(te)
        std = xtr.std(0) + 1e-9
        cents = np.stack([xtr[ytr == c].mean(0) for c in range(17)]) / std
        pred = np.argmin((((xte / std)[:, None, :] - cents[None]) ** 2).sum(-1), axis=1)
        assert (pred == yte).mean() > 0.4


def test_lazy_reads_and_workers(synth):
    ds = So2Sat(synth, "validation")
    assert ds._file is None  # nothing opened at construction
    loader = DataLoader(ds, batch_size=8, num_workers=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 18, 32, 32) and batch["channels"].shape == (8, 18)


def _torchgeo_val_rows(n: int) -> tuple[list[int], list[int]]:
    """torchgeo's So2SatDataModule rule for v3, computed here with random_split itself."""
    val_length = round(n * 0.2)
    train, val = random_split(TensorDataset(torch.arange(n)), [n - val_length, val_length],
                              generator=torch.Generator().manual_seed(0))
    return list(train.indices), list(val.indices)


def _write_numbered(path, n: int) -> None:
    """A v3-layout file whose row i has sen1 == i everywhere and class i % 17."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.arange(n, dtype=np.float64)
    with h5py.File(path, "w") as f:
        f["sen1"] = np.broadcast_to(rows[:, None, None, None], (n, 32, 32, 8)).copy()
        f["sen2"] = np.zeros((n, 32, 32, 10))
        f["label"] = np.eye(17)[np.arange(n) % 17]


@pytest.mark.parametrize("version", V3)
def test_v3_validation_is_torchgeos_validation(tmp_path, version):
    n = 53
    _write_numbered(tmp_path / FILENAMES[version]["train"], n)
    expected_train, expected_val = _torchgeo_val_rows(n)
    val, train = So2Sat(tmp_path, "validation", version), So2Sat(tmp_path, "train", version)
    assert val.rows.tolist() == expected_val and train.rows.tolist() == expected_train
    assert len(val) == round(0.2 * n) == 11 and len(train) == n - 11
    # the samples really are those rows of training.h5, in random_split's order
    assert [int(val[k]["image"][0, 0, 0]) for k in range(len(val))] == expected_val
    assert [val[k]["label"] for k in range(len(val))] == [r % 17 for r in expected_val]
    assert [int(train[k]["image"][0, 0, 0]) for k in range(len(train))] == expected_train
    assert set(train.rows) | set(val.rows) == set(range(n)) and not set(train.rows) & set(val.rows)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(3, 5000), pct=st.sampled_from([0.1, 0.2, 0.25, 0.5]))
def test_split_rows_partition_the_file_as_random_split_does(n, pct):
    train, val = split_rows(n, pct)
    assert len(val) == round(n * pct) and len(train) == n - len(val)
    assert sorted(train + val) == list(range(n))
    if pct == 0.2:
        assert (train, val) == _torchgeo_val_rows(n)


def test_version_2_validation_is_its_own_file(torchgeo_fixtures):
    ds = So2Sat(torchgeo_fixtures / "so2sat", "validation", "2")
    assert ds.path.name == "validation.h5" and ds.rows.tolist() == [0, 1]


def test_v3_file_too_small_for_a_validation_split(torchgeo_fixtures):
    # torchgeo's fixture has 2 rows: round(0.2 * 2) = 0 validation rows
    with pytest.raises(DataError, match=r"block/training\.h5: 2 rows leave an empty validation split"):
        So2Sat(torchgeo_fixtures / "so2sat", "validation", "3_block")


def test_md5_table_matches_the_file_table():
    assert set(MD5) == set(FILENAMES)
    for version, files in FILENAMES.items():
        assert set(MD5[version]) == set(files), version
        assert all(re.fullmatch(r"[0-9a-f]{32}", md5) for md5 in MD5[version].values())
    assert MD5["2"]["train"] == MD5["3_culture_10"]["train"]  # one file in two releases
    assert MD5["3_block"] == {"train": "a91d6150e8b059dac86105853f377a11", "test": "6414af1ec33ace417e879f9c88066d47"}


def test_checksum_of_the_v3_validation_split_is_the_training_file(tmp_path, monkeypatch):
    _write_numbered(tmp_path / FILENAMES["3_block"]["train"], 20)
    good = so2sat._md5(tmp_path / FILENAMES["3_block"]["train"])
    monkeypatch.setitem(MD5, "3_block", {"train": good, "test": "0" * 32})
    assert len(So2Sat(tmp_path, "validation", "3_block", checksum=True)) == 4
    monkeypatch.setitem(MD5, "3_block", {"train": "0" * 32, "test": "0" * 32})
    with pytest.raises(DataError, match=rf"training\.h5: md5 {good} does not match the release"):
        So2Sat(tmp_path, "validation", "3_block", checksum=True)


def test_statistics_table_shape():
    assert set(SO2SAT_STATS) == set(FILENAMES)
    for version, (mean, std) in SO2SAT_STATS.items():
        assert len(mean) == len(std) == 18, version
        assert all(np.isfinite(mean)) and all(s > 0 for s in std)
    # 3_block has its own published statistics (not a copy of another split's)
    assert SO2SAT_STATS["3_block"] != SO2SAT_STATS["2"] and SO2SAT_STATS["3_block"] != SO2SAT_STATS["3_random"]
    assert SO2SAT_STATS["3_block"][0][5] == pytest.approx(0.26046026815721)
    assert SO2SAT_STATS["3_block"][1][4] == pytest.approx(0.8294254)


def test_band_stats_count_only_the_rows_of_the_split(tmp_path):
    _write_numbered(tmp_path / FILENAMES["3_random"]["train"], 40)
    val = So2Sat(tmp_path, "validation", "3_random")
    stats = band_stats(val, batch=7)
    assert stats["num_samples"] == 8
    assert stats["mean"][0] == pytest.approx(np.mean(val.rows)) and stats["mean"][8] == 0.0
    assert stats["std"][0] == pytest.approx(np.std(val.rows))


def test_band_stats_match_numpy(synth):
    ds = So2Sat(synth, "validation")
    stats = band_stats(ds, batch=5)
    with h5py.File(ds.path) as f:
        all_ = np.concatenate([f["sen1"][:], f["sen2"][:]], -1)
    np.testing.assert_allclose(stats["mean"], all_.mean((0, 1, 2)), rtol=1e-9)
    np.testing.assert_allclose(stats["std"], all_.std((0, 1, 2)), rtol=1e-6)


# -- bad input -----------------------------------------------------------------------------------
def _write(path, **arrays):
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f[k] = v


def test_missing_file_names_expected_layout(tmp_path):
    with pytest.raises(DataError, match=r"training\.h5: file not found"):
        So2Sat(tmp_path, "train")


def test_missing_key(tmp_path):
    _write(tmp_path / "training.h5", sen1=np.zeros((2, 32, 32, 8)), label=np.eye(17)[:2])
    with pytest.raises(DataError, match=r"missing HDF5 key\(s\) \['sen2'\]"):
        So2Sat(tmp_path, "train")


def test_wrong_shape(tmp_path):
    _write(tmp_path / "training.h5", sen1=np.zeros((2, 32, 32, 8)), sen2=np.zeros((2, 32, 32, 9)), label=np.eye(17)[:2])
    with pytest.raises(DataError, match=r"'sen2' has shape \(2, 32, 32, 9\), expected \(2, 32, 32, 10\)"):
        So2Sat(tmp_path, "train")


def test_corrupt_file(tmp_path):
    (tmp_path / "training.h5").write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(DataError, match="not a readable HDF5 file"):
        So2Sat(tmp_path, "train")


def test_nan_sample(tmp_path):
    s2 = np.zeros((2, 32, 32, 10))
    s2[1, 3, 3, 2] = np.nan
    _write(tmp_path / "training.h5", sen1=np.zeros((2, 32, 32, 8)), sen2=s2, label=np.eye(17)[:2])
    ds = So2Sat(tmp_path, "train")
    ds[0]
    with pytest.raises(DataError, match=r"row 1 has non-finite values in bands \['S2_B04'\]"):
        ds[1]


@pytest.mark.parametrize("kwargs, match", [
    (dict(version="4"), "unknown version"),
    (dict(version="3_random", split="val"), "unknown split 'val'; expected one of train, validation, test"),
    (dict(version="3_random", split="validation", val_split_pct=1.5), r"val_split_pct=1\.5: expected a fraction"),
    (dict(bands="S2_B99"), "unknown channel name 'S2_B99'"),
    (dict(bands="jumpcp"), "belongs to table 'jumpcp'"),
])
def test_bad_arguments(torchgeo_fixtures, kwargs, match):
    with pytest.raises(GeovitError, match=match):
        So2Sat(torchgeo_fixtures / "so2sat", **kwargs)


# -- the torchgeo-layout generator used when torchgeo's own fixtures are absent --------------------
def test_generated_torchgeo_layout_matches_torchgeos_so2sat_fixtures(tmp_path):
    from repo_paths import SHARED_TORCHGEO
    from torchgeo_layout import describe, write_torchgeo_layout

    keys = {"label": ((2, 17), "uint8", "gzip", 9), "sen1": ((2, 32, 32, 8), "uint8", "gzip", 9),
            "sen2": ((2, 32, 32, 10), "uint8", "gzip", 9)}
    names = [f"{f}.h5" for f in ("training", "validation", "testing")]
    names += [f"{v}/{f}.h5" for v in ("random", "block", "culture_10") for f in ("training", "testing")]
    generated = describe(write_torchgeo_layout(tmp_path), "so2sat")
    assert generated == {f"so2sat/{n}": keys for n in names}
    for n in names:  # every file reads, labels one-hot
        with h5py.File(tmp_path / "so2sat" / n) as f:
            assert (f["label"][:].sum(1) == 1).all()
    if SHARED_TORCHGEO.is_dir():  # torchgeo's own files, when the developers' copy is beside the repo
        assert describe(SHARED_TORCHGEO, "so2sat") == generated


# -- batched reads --------------------------------------------------------------------------------
def _same_samples(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.keys() == b.keys()
        assert a["image"].dtype == b["image"].dtype and a["image"].shape == b["image"].shape
        assert a["image"].is_contiguous() and torch.equal(a["image"], b["image"])
        assert torch.equal(a["channels"], b["channels"])
        assert all(a[k] == b[k] and type(a[k]) is type(b[k]) for k in a if k not in ("image", "channels"))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["2", "3_random"]), st.sampled_from(["train", "validation", "test"]),
       st.sampled_from([None, "sentinel2", "S2_B04,S1_B2,S2_B02"]), st.data())
def test_batched_read_equals_per_sample_reads(synth_v3, version, split, bands, data):
    root = synth_v3[version]
    ds = So2Sat(root, split, version=version, bands=bands, transform=so2sat.normalization(version))
    indices = data.draw(st.lists(st.integers(-len(ds), len(ds) - 1), min_size=1, max_size=40))
    _same_samples(ds.__getitems__(indices), [ds[i] for i in indices])


def test_batched_read_of_torchgeo_uint8_fixtures(torchgeo_fixtures):
    for version in FILENAMES:
        ds = So2Sat(torchgeo_fixtures / "so2sat", "train", version=version)
        idx = list(range(len(ds)))[::-1]
        _same_samples(ds.__getitems__(idx), [ds[i] for i in idx])


def test_batched_read_reads_one_slice_per_run(synth_v3, monkeypatch):
    ds = So2Sat(synth_v3["2"], "train")
    ds.raw_reads = False  # the h5py path (compressed files take it)
    calls = []
    f = ds._h5()

    class Spy:
        def __getitem__(self, key):
            node = f[key]

            class Node:
                def __getitem__(self, sl):
                    calls.append((key, sl))
                    return node[sl]
            return Node()

    monkeypatch.setattr(ds, "_h5", lambda: Spy())
    ds.__getitems__([10, 3, 11, 2, 12, 0, 1, 50, 51])
    assert [sl for key, sl in calls if key == "sen1"] == [slice(0, 13), slice(50, 52)]  # gaps <= max_gap merge


def test_batched_read_errors_name_the_row(tmp_path):
    s2 = np.zeros((3, 32, 32, 10))
    s2[2, 3, 3, 2] = np.nan
    _write(tmp_path / "training.h5", sen1=np.zeros((3, 32, 32, 8)), sen2=s2, label=np.eye(17)[:3])
    ds = So2Sat(tmp_path, "train")
    with pytest.raises(DataError, match=r"row 2 has non-finite values in bands \['S2_B04'\]"):
        ds.__getitems__([0, 2])
    with pytest.raises(IndexError, match="index 3 out of range"):
        ds.__getitems__([0, 3])
    assert ds.__getitems__([]) == []


def test_batched_reads_with_workers_and_a_batch_sampler(synth_v3):
    from geovit.data.samplers import BlockBatchSampler

    ds = So2Sat(synth_v3["3_random"], "train", version="3_random")
    sampler = BlockBatchSampler(len(ds), 8, 4, order=ds.storage_order(), seed=1, drop_last=False)
    sampler.set_epoch(0)
    loader = DataLoader(ds, batch_sampler=sampler, num_workers=2)
    seen = []
    for batch, indices in zip(loader, list(sampler)):
        assert torch.equal(batch["image"], torch.stack([ds[i]["image"] for i in indices]))
        seen += indices
    assert sorted(seen) == list(range(len(ds)))
    assert np.all(np.diff(ds.rows[ds.storage_order()]) > 0)


@pytest.fixture(scope="module")
def synth_v3(tmp_path_factory):
    base = tmp_path_factory.mktemp("so2sat_versions")
    return {"2": write_synthetic(base / "v2", num_samples=60, seed=2),
            "3_random": write_synthetic(base / "v3", num_samples=60, seed=3, version="3_random")}


# -- geolocation ----------------------------------------------------------------------------------
def test_tfw_to_affine_is_the_world_file_convention():
    from affine import loadsw

    rng = np.random.default_rng(0)
    tfw = rng.normal(size=(20, 6)) * [10, 0.1, 0.1, 10, 1e5, 1e6]
    got = so2sat.tfw_to_affine(tfw)
    want = np.array([tuple(loadsw(" ".join(map(repr, row.tolist()))))[:6] for row in tfw])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_geolocation_round_trip_and_sample_keys(tmp_path):
    root = write_synthetic(tmp_path / "s", num_samples=40, version="3_random")
    assert So2Sat(root, "train", version="3_random").geolocation is None
    epsg, tfw, city = so2sat.synthetic_geolocation(40, seed=4)
    city[5] = "São Paulo"  # non-ASCII survives the byte strings
    so2sat.write_geo_h5(root / "random" / "training_geo.h5", epsg=epsg, tfw=tfw, city=city)
    with h5py.File(root / "random" / "training_geo.h5") as f:
        assert f["epsg"].shape == (40, 1) and f["tfw"].shape == (40, 6) and f["city"].shape == (40, 1)
    for split in ("train", "validation"):
        ds = So2Sat(root, split, version="3_random")
        geo = ds.geolocation
        assert len(geo) == len(ds) and geo.epsg.dtype == np.int64 and geo.transform.dtype == np.float64
        assert geo.transform.shape == (len(ds), 6) and geo.city.shape == (len(ds),)
        for i in (0, len(ds) - 1):
            row = ds.rows[i]
            sample = ds[i]
            assert sample["crs"] == f"EPSG:{epsg[row]}" and sample["city"] == city[row]
            a, b, c, d, e, f = sample["transform"]
            assert isinstance(sample["transform"], tuple) and all(isinstance(v, float) for v in sample["transform"])
            # the centre of the upper-left pixel is (C, F) of the world file
            assert (a * 0.5 + b * 0.5 + c, d * 0.5 + e * 0.5 + f) == pytest.approx((tfw[row, 4], tfw[row, 5]))
    ds = So2Sat(root, "train", version="3_random", cities=["São Paulo"])
    assert len(ds) == 1 and ds[0]["city"] == "São Paulo" and ds.rows.tolist() == [5]


def test_geolocation_file_problems_are_named(tmp_path):
    root = write_synthetic(tmp_path / "s", num_samples=20)
    epsg, tfw, city = so2sat.synthetic_geolocation(19)
    so2sat.write_geo_h5(root / "training_geo.h5", epsg=epsg, tfw=tfw, city=city)
    with pytest.raises(DataError, match=r"training_geo\.h5: holds 19 rows but its image file holds 20"):
        So2Sat(root, "train")
    _write(root / "training_geo.h5", epsg=np.zeros((20, 1), int), city=np.array([[b"x"]] * 20))
    with pytest.raises(DataError, match=r"training_geo\.h5: missing dataset\(s\) \['tfw'\]"):
        So2Sat(root, "train")
    with pytest.raises(GeovitError, match=r"rows"):
        so2sat.write_geo_h5(root / "x_geo.h5", epsg=[1, 2], tfw=np.zeros((3, 6)), city=["a", "b"])
    with pytest.raises(GeovitError, match=r"testing_geo\.h5, which does not exist"):
        So2Sat(root, "test", cities=["berlin"])


@pytest.mark.parametrize("layout", ["chunked per row", "contiguous", "compressed"])
def test_memory_mapped_rows_equal_h5py_rows(tmp_path, layout):
    rng = np.random.default_rng(0)
    n = 50
    arrays = {"sen1": rng.normal(size=(n, 32, 32, 8)), "sen2": rng.normal(size=(n, 32, 32, 10)).astype(np.float32),
              "label": np.eye(17)[rng.integers(0, 17, n)]}
    with h5py.File(tmp_path / "training.h5", "w") as f:
        for key, value in arrays.items():
            if layout == "chunked per row":
                f.create_dataset(key, data=value, chunks=(1, *value.shape[1:]))
                f.create_dataset(key + "_pad", data=np.zeros(3))  # interleave other storage between chunks
            elif layout == "contiguous":
                f.create_dataset(key, data=value)
            else:
                f.create_dataset(key, data=value, compression="gzip", chunks=(5, *value.shape[1:]))
    ds = So2Sat(tmp_path, "train")
    readers = ds._row_readers()
    assert all(isinstance(r, so2sat.RawRows) for r in readers.values()) == (layout != "compressed")
    for key, value in arrays.items():
        for start, stop in ((0, n), (7, 9), (49, 50), (3, 3)):
            got = readers[key][start:stop]
            assert got.dtype == value.dtype and np.array_equal(got, value[start:stop])
    idx = rng.integers(0, n, 40).tolist()
    plain = So2Sat(tmp_path, "train")
    plain.raw_reads = False
    _same_samples(ds.__getitems__(idx), plain.__getitems__(idx))
