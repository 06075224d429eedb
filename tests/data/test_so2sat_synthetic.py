"""The physically motivated synthetic So2Sat (geovit.data.so2sat_synthetic)."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geovit.data import so2sat
from geovit.data.registry import MARKER, get_dataset, resolve_data
from geovit.data.so2sat import FILENAMES, SO2SAT_STATS, So2Sat
from geovit.data.so2sat_synthetic import GENERATOR_VERSION, render_scenes, write_synthetic
from geovit.errors import GeovitError

S1, S2 = list(range(8)), list(range(8, 18))


def _layout(root):
    out = {}
    for path in sorted(p for p in root.rglob("*.h5")):
        with h5py.File(path) as f:
            out[str(path.relative_to(root))] = {k: (f[k].shape, f[k].dtype, f[k].chunks) for k in f}
    return out


@pytest.mark.parametrize("version", ["2", "3_random"])
def test_same_files_keys_shapes_and_dtypes_as_the_simple_writer(tmp_path, version):
    phys = write_synthetic(tmp_path / "phys", num_samples=20, seed=0, version=version)
    simple = write_synthetic(tmp_path / "simple", num_samples=20, seed=0, version=version, generator="simple")
    assert _layout(phys) == _layout(simple)
    assert set(_layout(phys)) == set(FILENAMES[version].values())
    for split in ("train", "validation", "test"):
        ds = So2Sat(phys, split, version=version)
        sample = ds[len(ds) - 1]
        assert sample["image"].dtype.is_floating_point and tuple(sample["image"].shape) == (18, 32, 32)
        assert 0 <= sample["label"] < 17
    with h5py.File(phys / FILENAMES[version]["train"]) as f:
        assert f["sen1"].dtype == np.float64 and f["sen2"].dtype == np.float64
        onehot = f["label"][:]
        assert np.all(onehot.sum(1) == 1) and set(np.argmax(onehot, 1)) == set(range(17))
        assert "SYNTHETIC" in f.attrs["geovit_synthetic"]
        assert np.isfinite(f["sen1"][:]).all() and (f["sen2"][:] >= 0).all() and (f["sen2"][:] <= 1).all()


def test_deterministic_by_seed(tmp_path):
    a = write_synthetic(tmp_path / "a", num_samples=17, seed=3)
    b = write_synthetic(tmp_path / "b", num_samples=17, seed=3)
    c = write_synthetic(tmp_path / "c", num_samples=17, seed=4)
    for fname in FILENAMES["2"].values():
        with h5py.File(a / fname) as fa, h5py.File(b / fname) as fb, h5py.File(c / fname) as fc:
            for key in ("sen1", "sen2", "label"):
                np.testing.assert_array_equal(fa[key][:], fb[key][:])
            assert not np.array_equal(fa["sen2"][:], fc["sen2"][:])


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(GeovitError, match="generator='fancy'"):
        write_synthetic(tmp_path, generator="fancy")
    with pytest.raises(GeovitError, match="num_samples must be >= 17"):
        write_synthetic(tmp_path, num_samples=5)
    with pytest.raises(GeovitError, match="labels: expected LCZ class ids 0..16"):
        render_scenes([3, 17], np.random.default_rng(0))


def test_registry_default_is_the_physical_generator_and_marks_it(tmp_path):
    assert get_dataset("so2sat").synthetic == "geovit.data.so2sat_synthetic:write_synthetic"
    root, synthetic = resolve_data("so2sat", None, tmp_path, num_samples=17, log=lambda m: None)
    marker = json.loads((root / MARKER).read_text())
    assert synthetic and marker["generator"] == "physical" and marker["generator_version"] == GENERATOR_VERSION
    with h5py.File(root / "training.h5") as f:
        assert f.attrs["geovit_generator"] == f"physical v{GENERATOR_VERSION}"
    root2, _ = resolve_data("so2sat", None, tmp_path, num_samples=17, log=lambda m: None, generator="simple")
    with h5py.File(root2 / "training.h5") as f:
        assert "geovit_generator" not in f.attrs  # the old writer, reachable as an option


def _features(s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    mean, std = (np.asarray(v) for v in SO2SAT_STATS["2"])
    x = (np.concatenate([s1, s2], -1) - mean) / std  # the z-score every geovit run applies
    return np.concatenate([x.mean((1, 2)), x.std((1, 2))], -1)  # per-band mean and std


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(11)
    ytr, yte = np.repeat(np.arange(17), 40), np.repeat(np.arange(17), 20)
    s1tr, s2tr = render_scenes(ytr, rng)
    s1te, s2te = render_scenes(yte, rng)
    return (s1tr, s2tr, ytr), (s1te, s2te, yte)


def test_sensors_are_complementary(scenes):
    """Per-band mean/std + logistic regression: both sensors clearly beat either one alone."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    (s1tr, s2tr, ytr), (s1te, s2te, yte) = scenes
    xtr, xte = _features(s1tr, s2tr), _features(s1te, s2te)
    cols = {"s1": S1 + [18 + c for c in S1], "s2": S2 + [18 + c for c in S2]}
    cols["both"] = cols["s1"] + cols["s2"]
    acc = {}
    for name, c in cols.items():
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        acc[name] = float((clf.fit(xtr[:, c], ytr).predict(xte[:, c]) == yte).mean())
    assert acc["s1"] > 0.3 and acc["s2"] > 0.5, acc  # each sensor alone far above chance (0.06)
    assert acc["both"] > max(acc["s1"], acc["s2"]) + 0.05, acc


def _pair_accuracy(x, y, a, b, cols):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    m = (y == a) | (y == b)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return float(cross_val_score(clf, x[m][:, cols], y[m], cv=4).mean())


def test_some_pairs_need_sentinel1_others_sentinel2(scenes):
    """Height pairs (compact mid vs low, open high vs mid) are told apart better by S1, material pairs
    (paved vs sand, bush vs low plants) by S2; and NDVI orders trees > soil > water."""
    (s1tr, s2tr, ytr), (s1te, s2te, yte) = scenes
    x, y = _features(np.concatenate([s1tr, s1te]), np.concatenate([s2tr, s2te])), np.concatenate([ytr, yte])
    c1, c2 = S1 + [18 + c for c in S1], S2 + [18 + c for c in S2]
    for a, b in ((1, 2), (3, 4)):
        assert _pair_accuracy(x, y, a, b, c1) > _pair_accuracy(x, y, a, b, c2), (a, b)
    for a, b in ((14, 15), (12, 13)):
        assert _pair_accuracy(x, y, a, b, c2) > _pair_accuracy(x, y, a, b, c1) + 0.1, (a, b)
    # double bounce: VV rises with building height
    vv = 10 * np.log10(s1tr[..., 5].mean((1, 2)))
    assert vv[ytr == 0].mean() > vv[ytr == 1].mean() > vv[ytr == 2].mean()
    ndvi = ((s2tr[..., 6] - s2tr[..., 2]) / (s2tr[..., 6] + s2tr[..., 2])).mean((1, 2))
    assert ndvi[ytr == 10].mean() > 0.6 > ndvi[ytr == 15].mean() and ndvi[ytr == 16].mean() < 0.1


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), label=st.integers(0, 16))
def test_sentinel1_channels_are_one_covariance(seed, label):
    """Channels 4-7 form a positive semi-definite Lee-filtered covariance (|C12|^2 <= C11 C22)."""
    s1, _ = render_scenes([label], np.random.default_rng(seed))
    c11, c22, re, im = (s1[0, ..., k] for k in (4, 5, 6, 7))
    assert (c11 >= 0).all() and (c22 >= 0).all()
    assert np.all(re ** 2 + im ** 2 <= c11 * c22 * (1 + 1e-6) + 1e-12)
    # the unfiltered complex samples carry the same power, up to speckle averaging
    raw = (s1[0, ..., 0] ** 2 + s1[0, ..., 1] ** 2).mean(), (s1[0, ..., 2] ** 2 + s1[0, ..., 3] ** 2).mean()
    np.testing.assert_allclose([c11.mean(), c22.mean()], raw, rtol=0.35)


def test_simple_generator_still_writes_the_old_arrays(tmp_path):
    old = so2sat.write_synthetic(tmp_path / "old", num_samples=17, seed=2)
    new = write_synthetic(tmp_path / "new", num_samples=17, seed=2, generator="simple")
    with h5py.File(old / "training.h5") as fa, h5py.File(new / "training.h5") as fb:
        np.testing.assert_array_equal(fa["sen1"][:], fb["sen1"][:])
