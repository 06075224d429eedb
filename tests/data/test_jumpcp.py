"""JUMP-CP loader: release layout (metadata table + one (8, H, W) .npy per cell), splits, bad input."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from geovit.data.jumpcp import JUMPCP, JUMPCP_MEAN, normalization, official_split, write_synthetic
from geovit.errors import DataError, GeovitError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("jumpcp"), num_samples=10, image_size=224, seed=3)


def test_synthetic_files_are_in_the_release_format(root):
    df = pd.read_csv(root / "metadata.csv")
    assert {"path", "label", "ID", "well_loc"} <= set(df.columns)
    arr = np.load(root / df["path"][0])
    assert arr.shape == (8, 224, 224) and arr.dtype == np.uint8
    assert sorted(df["label"].unique()) == [0, 1, 2, 3]


def test_official_split_partitions_rows_like_channelvit():
    n = 50
    parts = [official_split(n, s) for s in ("train", "valid", "test")]
    assert [len(p) for p in parts] == [30, 10, 10]
    assert sorted(np.concatenate(parts).tolist()) == list(range(n))
    # numpy seed 0 permutation, as channelvit/data/jumpcp.py
    assert parts[0].tolist() == np.random.RandomState(0).permutation(n)[:30].tolist()


def test_samples_hold_raw_pixels_ids_and_labels(root):
    ds = JUMPCP(root, split="all")
    df = pd.read_csv(root / "metadata.csv")
    assert len(ds) == 10
    s = ds[4]
    raw = np.load(root / df["path"][4]).astype(np.float32)
    assert torch.equal(s["image"], torch.from_numpy(raw))
    assert s["channels"].tolist() == list(range(8)) and s["label"] == int(df["label"][4])


def test_channel_subset_keeps_absolute_ids(root):
    ds = JUMPCP(root, split="all", channels="jumpcp_brightfield")
    full = JUMPCP(root, split="all")
    s = ds[2]
    assert s["channels"].tolist() == [5, 6, 7]
    assert torch.equal(s["image"], full[2]["image"][5:])
    norm = normalization()(s)
    assert torch.allclose(norm["image"][0], (s["image"][0] - JUMPCP_MEAN[5]) / 21.638766346725316)


def test_splits_are_disjoint_and_cover(root):
    ids = [set(JUMPCP(root, split=s).ids) for s in ("train", "validation", "test")]
    assert sum(map(len, ids)) == 10 and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])


def test_split_column_overrides_the_permutation(tmp_path, root):
    df = pd.read_csv(root / "metadata.csv")
    df["path"] = [str(root / p) for p in df["path"]]  # absolute paths work too
    df["split"] = ["test"] * 3 + ["train"] * 7
    df.to_csv(tmp_path / "metadata.csv", index=False)
    assert JUMPCP(tmp_path, split="test").ids == df["ID"][:3].tolist()


def test_bad_input_names_file_and_column(tmp_path, root):
    with pytest.raises(DataError, match="metadata.csv: metadata table not found"):
        JUMPCP(tmp_path)
    df = pd.read_csv(root / "metadata.csv")
    df.drop(columns=["label"]).to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(DataError, match=r"missing column\(s\) \['label'\]"):
        JUMPCP(tmp_path)
    df.assign(label=["x"] + [0] * 9).to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(DataError, match="column 'label' row 0"):
        JUMPCP(tmp_path)
    (tmp_path / "cells").mkdir()
    np.save(tmp_path / "cells" / "a.npy", np.zeros((5, 8, 8), np.uint8))
    pd.DataFrame({"path": ["cells/a.npy", "cells/missing.npy"], "label": [0, 1]}).to_csv(tmp_path / "metadata.csv", index=False)
    ds = JUMPCP(tmp_path, split="all")
    with pytest.raises(DataError, match=r"a.npy: array has shape \(5, 8, 8\), expected \(8, H, W\)"):
        ds[0]
    with pytest.raises(DataError, match="missing.npy: cell image not found"):
        ds[1]
    with pytest.raises(GeovitError, match="preset 'sentinel1' belongs to table 'so2sat'"):
        JUMPCP(root, channels="sentinel1")
    with pytest.raises(GeovitError, match="unknown split"):
        JUMPCP(root, split="holdout")
