"""CHAMMI loader: tape-format images (.ome.tiff / .png) indexed by enriched_meta.csv."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader

from geovit.channels import resolve_channels
from geovit.data.chammi import CHAMMI, chunk_channel_ids, fold_tape, unfold_tape, write_synthetic
from geovit.data.collate import pad_channels_collate
from geovit.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("chammi"), num_samples=8, seed=1)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 6))
def test_tape_fold_round_trip(c, h, w):
    img = np.arange(c * h * w).reshape(c, h, w)
    tape = fold_tape(img)
    assert tape.shape == (h, w * c)
    assert np.array_equal(tape[:, w:2 * w], img[1]) if c > 1 else True
    # same as the release's Fortran-order reshape (MorphEm fold_channels)
    assert np.array_equal(np.reshape(tape, (h, w, c), order="F").transpose(2, 0, 1), img)
    assert np.array_equal(unfold_tape(tape, w, c), img)


def test_files_are_in_the_release_format(root):
    for chunk, suffix, c in (("Allen", ".ome.tiff", 3), ("HPA", ".png", 4), ("CP", ".png", 5)):
        meta = pd.read_csv(root / chunk / "enriched_meta.csv")
        assert {"file_path", "channel_width", "train_test_split", "Label"} <= set(meta.columns)
        path = root / meta["file_path"][0]
        assert path.name.endswith(suffix) and meta["file_path"][0].startswith(f"{chunk}/")
        arr = tifffile.imread(path) if suffix == ".ome.tiff" else np.asarray(Image.open(path))
        assert arr.ndim == 2 and arr.shape[1] == c * meta["channel_width"][0]


def test_samples_unfold_channels_with_chunk_ids(root):
    ds = CHAMMI(root, split="Train", image_size=None)
    chunks = {ds[i]["chunk"]: ds[i] for i in range(len(ds))}
    assert chunks["Allen"]["channels"].tolist() == [0, 1, 2]
    assert chunks["HPA"]["channels"].tolist() == [3, 4, 5, 6]
    assert chunks["CP"]["channels"].tolist() == list(range(7, 12))
    assert chunks["HPA"]["image"].shape == (4, 48, 48)
    # first HPA cell: compare with the PNG read by hand
    meta = pd.read_csv(root / "HPA" / "enriched_meta.csv")
    tape = np.asarray(Image.open(root / meta["file_path"][0])).astype(np.float32) / 255
    i = ds.chunks.index("HPA")
    assert torch.allclose(ds[i]["image"][2], torch.from_numpy(tape[:, 96:144]))
    assert resolve_channels("chammi_hpa").ids == tuple(chunk_channel_ids("HPA"))


def test_allen_plane_stacks_are_read_like_tapes(root, tmp_path):
    """An OME-TIFF holding the planes as a (C, H, W) stack gives the same sample as the tape."""
    import shutil

    shutil.copytree(root / "Allen", tmp_path / "Allen")
    meta = pd.read_csv(tmp_path / "Allen" / "enriched_meta.csv")
    path = tmp_path / meta["file_path"][0]
    tape = tifffile.imread(path)
    tifffile.imwrite(path, unfold_tape(tape, int(meta["channel_width"][0]), 3), ome=True)
    stacked, taped = CHAMMI(tmp_path, chunks=["Allen"], image_size=None)[0], CHAMMI(root, chunks=["Allen"], image_size=None)[0]
    assert torch.equal(stacked["image"], taped["image"])


def test_labels_share_one_encoding_across_splits(root):
    train, task = CHAMMI(root, split="Train"), CHAMMI(root, split="task_one")
    assert train.classes == task.classes and len(train.classes) == 3 + 4 + 3
    assert len(train) + len(task) == 24
    for ds in (train, task):
        for i in range(len(ds)):
            assert train.classes[ds.targets[i]][0] == ds.chunks[i]


def test_mixed_chunks_batch_with_padding(root):
    ds = CHAMMI(root, split=None, image_size=32)
    batch = next(iter(DataLoader(ds, batch_size=len(ds), collate_fn=pad_channels_collate)))
    assert batch["image"].shape == (24, 5, 32, 32)
    assert batch["channel_mask"].sum(1).tolist() == [3] * 8 + [4] * 8 + [5] * 8


def test_bad_input_names_file_and_column(tmp_path, root):
    with pytest.raises(DataError, match="Allen/enriched_meta.csv: metadata not found"):
        CHAMMI(tmp_path, chunks=["Allen"])
    (tmp_path / "HPA").mkdir()
    meta = pd.read_csv(root / "HPA" / "enriched_meta.csv")
    meta.drop(columns=["channel_width"]).to_csv(tmp_path / "HPA" / "enriched_meta.csv", index=False)
    with pytest.raises(DataError, match=r"missing column\(s\) \['channel_width'\]"):
        CHAMMI(tmp_path, chunks=["HPA"])
    meta.assign(channel_width=0).to_csv(tmp_path / "HPA" / "enriched_meta.csv", index=False)
    with pytest.raises(DataError, match="column 'channel_width' row 0"):
        CHAMMI(tmp_path, chunks=["HPA"])
    # wrong channel count: a 3-plane tape where HPA expects 4
    Image.fromarray(np.zeros((48, 144), np.uint8)).save(tmp_path / "HPA" / "bad.png")
    pd.DataFrame({"file_path": ["HPA/bad.png", "HPA/none.png"], "channel_width": [48, 48],
                  "train_test_split": ["Train", "Train"], "Label": ["a", "b"]}).to_csv(tmp_path / "HPA" / "enriched_meta.csv", index=False)
    ds = CHAMMI(tmp_path, chunks=["HPA"])
    with pytest.raises(DataError, match=r"bad.png: tape width 144 != channel_width 48 × 4"):
        ds[0]
    with pytest.raises(DataError, match="none.png: image file not found"):
        ds[1]
    (tmp_path / "HPA" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png: not a readable image"):
        ds[0]
    with pytest.raises(DataError, match="no rows with train_test_split == 'Task_nine'"):
        CHAMMI(root, split="Task_nine")
