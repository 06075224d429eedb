"""So2Sat LCZ42 loader: torchgeo's layouts and fixtures, laziness, bands, bad input."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from geovit.data.so2sat import FILENAMES, So2Sat, band_stats, train_val_split, write_synthetic
from geovit.errors import DataError, GeovitError


@pytest.mark.parametrize("version", list(FILENAMES))
def test_reads_torchgeo_fixtures_unchanged(torchgeo_fixtures, version):
    root = torchgeo_fixtures / "so2sat"
    for split in FILENAMES[version]:
        ds = So2Sat(root, split=split, version=version)
        with h5py.File(ds.path) as f:
            raw1, raw2, onehot = f["sen1"][1], f["sen2"][1], f["label"][1]
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


def test_train_val_split_is_seeded_and_disjoint(synth):
    a_tr, a_va = train_val_split(So2Sat(synth), 0.25, seed=0)
    b_tr, b_va = train_val_split(So2Sat(synth), 0.25, seed=0)
    assert a_va.indices == b_va.indices and not set(a_tr.indices) & set(a_va.indices)
    assert len(a_tr) + len(a_va) == 64


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
    with pytest.raises(DataError, match=r"sample 1 has non-finite values in bands \['S2_B04'\]"):
        ds[1]


@pytest.mark.parametrize("kwargs, match", [
    (dict(version="4"), "unknown version"),
    (dict(version="3_random", split="validation"), "train_val_split"),
    (dict(bands="S2_B99"), "unknown channel name 'S2_B99'"),
    (dict(bands="jumpcp"), "belongs to table 'jumpcp'"),
])
def test_bad_arguments(torchgeo_fixtures, kwargs, match):
    with pytest.raises(GeovitError, match=match):
        So2Sat(torchgeo_fixtures / "so2sat", **kwargs)
