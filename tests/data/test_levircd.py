"""LEVIR-CD loading in every layout, checks of bad input, tiling and augmentation."""
from __future__ import annotations

import glob
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from geovit.data.change_transforms import (
    IGNORE_INDEX,
    NORMALIZATIONS,
    ChangeAugment,
    ChangeTiles,
    Normalize,
    make_transforms,
    tile_origins,
    tile_windows,
)
from geovit.data.levircd import CLCD, LEVIRCD, WHUCD, find_pairs, write_synthetic
from geovit.errors import DataError, GeovitError


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _pair(root: Path, split_dir: str, name: str, size=(32, 32), seed=0, folders=("A", "B", "label")) -> None:
    rng = np.random.default_rng(seed)
    for folder in folders[:2]:
        _png(root / split_dir / folder / name, rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    _png(root / split_dir / folders[2] / name, (rng.random(size) > 0.8).astype(np.uint8) * 255)


# ------------------------------------------------------------------------------ torchgeo layout
def test_torchgeo_fixtures_load_unchanged(torchgeo_fixtures):
    root = torchgeo_fixtures / "levircd" / "levircd"
    for split in ("train", "val", "test"):
        ds = LEVIRCD(root, split)  # defaults: torchgeo's layout is read with torchgeo's label rule
        assert len(ds) == 2
        for k in range(2):
            sample = ds[k]
            assert sample["image"].shape == (2, 3, 32, 32) and sample["image"].dtype == torch.float32
            assert sample["mask"].shape == (32, 32) and sample["mask"].dtype == torch.int64
            a = np.asarray(Image.open(root / "A" / f"{split}_{k}.png"))
            b = np.asarray(Image.open(root / "B" / f"{split}_{k}.png"))
            label = np.asarray(Image.open(root / "label" / f"{split}_{k}.png"))
            np.testing.assert_array_equal(sample["image"][0].permute(1, 2, 0).numpy(), a)
            np.testing.assert_array_equal(sample["image"][1].permute(1, 2, 0).numpy(), b)
            # torchgeo's rule: clamp(0, 1), every non-zero value is change; torchgeo's mask is
            # (1, H, W), geovit's (H, W): mask[None] is torchgeo's
            np.testing.assert_array_equal(sample["mask"].numpy(), np.clip(label, 0, 1))
            assert sample["mask"][None].shape == (1, 32, 32)
        assert [p.t1.name for p in ds.pairs] == [os.path.basename(t[0]) for t in _torchgeo_order(root, split)]


def test_torchgeo_fixture_labels_are_rejected_when_strict(torchgeo_fixtures):
    # The fixture labels hold grey levels 29, 76, ... (not a real 0/255 mask): strict mode names the file.
    ds = LEVIRCD(torchgeo_fixtures / "levircd" / "levircd", "train", labels="strict")
    with pytest.raises(DataError, match=r"label/train_0\.png.*not in \{0, 255\}.*nonzero"):
        ds[0]


def test_torchgeo_zips_are_extracted_per_split(torchgeo_fixtures, tmp_path):
    src = torchgeo_fixtures / "levircd" / "levircd"
    for split in ("train", "val", "test"):
        shutil.copy(src / f"{split}.zip", tmp_path / f"{split}.zip")
    ds = LEVIRCD(tmp_path, "val", labels="nonzero")
    # only the val files were taken from val.zip (its other members are 1x1 placeholders)
    assert sorted(p.name for p in (tmp_path / "A").iterdir()) == ["val_0.png", "val_1.png"]
    assert ds[1]["image"].shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(ds[1]["image"].numpy(), LEVIRCD(src, "val", labels="nonzero")[1]["image"].numpy())
    LEVIRCD(tmp_path, "train", labels="nonzero")
    assert sorted(p.name for p in (tmp_path / "label").iterdir()) == ["train_0.png", "train_1.png", "val_0.png", "val_1.png"]
    assert not list(tmp_path.glob(".extract-*"))  # staging folder cleaned up


def test_unsafe_zip_member_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "test.zip", "w") as zf:
        zf.writestr("../evil/test_0.png", b"x")
    with pytest.raises(DataError, match="unsafe member path"):
        LEVIRCD(tmp_path, "test")
    assert not (tmp_path.parent / "evil").exists()


# ------------------------------------------------------------------------------ other layouts
def test_synthetic_writer_uses_the_original_layout(tmp_path):
    root = write_synthetic(tmp_path / "levir", num_samples=5, seed=1, size=64)
    assert sorted(p.name for p in (root / "train" / "A").iterdir()) == ["train_1.png", "train_2.png", "train_3.png"]
    sizes = {split: len(LEVIRCD(root, split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 3, "val": 1, "test": 1}
    label = np.asarray(Image.open(root / "train" / "label" / "train_1.png"))
    assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 255} and (label == 255).any()
    sample = LEVIRCD(root, "train")[0]
    changed = sample["mask"].bool()
    # buildings appear in t2 where the label says change: large colour change there, small elsewhere
    diff = (sample["image"][1] - sample["image"][0]).abs().mean(0)
    assert diff[changed].mean() > 3 * diff[~changed].mean()
    again = write_synthetic(tmp_path / "again", num_samples=5, seed=1, size=64)
    assert (again / "val" / "B" / "val_1.png").read_bytes() == (root / "val" / "B" / "val_1.png").read_bytes()


def test_flat_layout_with_list_files(tmp_path):
    for name in ("a_1.png", "a_2.png", "b_1.png"):
        _pair(tmp_path, "", name)
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "train.txt").write_text("a_1.png\na_2.png\n")
    (tmp_path / "list" / "test.txt").write_text("b_1.png\n")
    assert [p.t1.name for p in find_pairs(tmp_path, "train")] == ["a_1.png", "a_2.png"]
    assert len(WHUCD(tmp_path, "test")) == 1


def test_clcd_time1_time2_and_capitalised_split(tmp_path):
    _pair(tmp_path, "Train", "x.png", folders=("time1", "time2", "label"))
    ds = CLCD(tmp_path, "train")
    assert len(ds) == 1 and ds[0]["image"].shape == (2, 3, 32, 32)


def _torchgeo_order(root: Path, split: str) -> list[tuple[str, str, str]]:
    """torchgeo's LEVIRCD._load_files rule: each folder globbed and sorted on its own, then zipped."""
    lists = [sorted(glob.glob(os.path.join(root, d, f"{split}*.png"))) for d in ("A", "B", "label")]
    return list(zip(*lists))


@pytest.mark.parametrize("layout", ["torchgeo", "folder per split"])
def test_pairs_come_in_torchgeos_order(tmp_path, layout):
    ks = (10, 2, 1, 100, 11, 0)
    for k in ks:
        _pair(tmp_path, "" if layout == "torchgeo" else "test", f"test_{k}.png")
    pairs = find_pairs(tmp_path, "test")
    assert [p.t1.name for p in pairs] == ["test_0.png", "test_1.png", "test_10.png", "test_100.png",
                                          "test_11.png", "test_2.png"]
    if layout == "torchgeo":
        assert [tuple(map(str, (p.t1, p.t2, p.label))) for p in pairs] == _torchgeo_order(tmp_path, "test")


@settings(max_examples=25, deadline=None)
@given(ks=st.lists(st.integers(0, 2000), min_size=1, max_size=12, unique=True))
def test_torchgeo_layout_order_matches_torchgeo_for_any_numbering(tmp_path_factory, ks):
    root = tmp_path_factory.mktemp("tg")
    for folder in ("A", "B", "label"):
        (root / folder).mkdir()
        for k in ks:
            (root / folder / f"train_{k}.png").write_bytes(b"")  # listing only: never decoded
    got = [tuple(map(str, (p.t1, p.t2, p.label))) for p in find_pairs(root, "train")]
    assert got == _torchgeo_order(root, "train")


# ------------------------------------------------------------------------------ bad input
def test_missing_partner_files_are_named(tmp_path):
    _pair(tmp_path, "train", "train_1.png")
    _pair(tmp_path, "train", "train_2.png")
    (tmp_path / "train" / "B" / "train_2.png").unlink()
    (tmp_path / "train" / "label" / "train_1.png").unlink()
    with pytest.raises(DataError, match=r"B/train_2\.png.*label/train_1\.png|label/train_1\.png.*B/train_2\.png"):
        LEVIRCD(tmp_path, "train")


def test_size_mismatch_and_non_rgb_and_bad_labels(tmp_path):
    _pair(tmp_path, "train", "train_1.png")
    _png(tmp_path / "train" / "B" / "train_1.png", np.zeros((48, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"size mismatch.*A/train_1\.png is 32x32.*B/train_1\.png is 32x48"):
        LEVIRCD(tmp_path, "train")[0]
    _png(tmp_path / "train" / "B" / "train_1.png", np.zeros((32, 32), np.uint8))
    with pytest.raises(DataError, match=r"B/train_1\.png: expected an 8-bit RGB image, got mode 'L'"):
        LEVIRCD(tmp_path, "train")[0]
    _png(tmp_path / "train" / "B" / "train_1.png", np.zeros((32, 32, 3), np.uint8))
    _png(tmp_path / "train" / "label" / "train_1.png", np.full((32, 32), 128, np.uint8))
    with pytest.raises(DataError, match=r"label/train_1\.png: label values \{128\}"):
        LEVIRCD(tmp_path, "train")[0]
    assert LEVIRCD(tmp_path, "train", labels="nonzero")[0]["mask"].all()
    _png(tmp_path / "train" / "label" / "train_1.png", np.ones((32, 32), np.uint8))  # 0/1 labels are fine
    assert LEVIRCD(tmp_path, "train")[0]["mask"].all()


def test_unknown_split_and_missing_root(tmp_path):
    with pytest.raises(GeovitError, match="split='validation'"):
        LEVIRCD(tmp_path, "validation")
    with pytest.raises(DataError, match="no LEVIR-CD layout found"):
        LEVIRCD(tmp_path, "train")
    with pytest.raises(DataError, match="not found"):
        LEVIRCD(tmp_path / "nope", "train")


# ------------------------------------------------------------------------------ tiling
@settings(max_examples=60, deadline=None)
@given(h=st.integers(16, 200), w=st.integers(16, 200), tile=st.sampled_from([16, 32, 48, 64]))
def test_tile_windows_cover_every_pixel_exactly_once(h, w, tile):
    if tile > min(h, w):
        with pytest.raises(GeovitError):
            tile_windows(h, w, tile)
        return
    count = np.zeros((h, w), int)
    for win in tile_windows(h, w, tile):
        assert 0 <= win.y and win.y + win.h <= h and 0 <= win.x and win.x + win.w <= w
        assert win.y <= win.own_y0 < win.own_y1 <= win.y + win.h and win.x <= win.own_x0 < win.own_x1 <= win.x + win.w
        count[win.own_y0:win.own_y1, win.own_x0:win.own_x1] += 1
    assert (count == 1).all()


def test_tile_origins_of_a_levir_scene():
    assert tile_origins(1024, 256) == [0, 256, 512, 768]  # 16 non-overlapping tiles, as the reference
    assert tile_origins(600, 256) == [0, 256, 344]


def test_change_tiles_mark_pixels_owned_elsewhere(tmp_path):
    _pair(tmp_path, "test", "test_1.png", size=(48, 80))
    base = LEVIRCD(tmp_path, "test")
    tiles = ChangeTiles(base, 32, mark_unowned=True)
    assert len(tiles) == 2 * 3
    scene = base[0]
    seen = np.zeros((48, 80), int)
    for i, win in enumerate(tiles.windows):
        sample = tiles[i]
        crop = scene["image"][..., win.y:win.y + 32, win.x:win.x + 32]
        assert torch.equal(sample["image"], crop)
        owned = (sample["mask"] != IGNORE_INDEX).numpy()
        seen[win.y:win.y + 32, win.x:win.x + 32] += owned
        assert torch.equal(sample["mask"][sample["mask"] != IGNORE_INDEX],
                           scene["mask"][win.y:win.y + 32, win.x:win.x + 32][sample["mask"] != IGNORE_INDEX])
    assert (seen == 1).all()


def test_whole_scene_sides_must_be_multiples_of_16_unless_padded(tmp_path):
    _pair(tmp_path, "test", "test_1.png", size=(40, 40))
    with pytest.raises(DataError, match=r"test_1\.png: scene is 40x40.*multiples of 16.*--pad"):
        ChangeTiles(LEVIRCD(tmp_path, "test"), 0)
    sample = ChangeTiles(LEVIRCD(tmp_path, "test"), 0, pad=True)[0]
    assert sample["image"].shape == (2, 3, 48, 48)
    assert (sample["mask"][40:] == IGNORE_INDEX).all() and (sample["mask"][:40, :40] != IGNORE_INDEX).all()
    with pytest.raises(GeovitError, match="--tile 40"):
        ChangeTiles(LEVIRCD(tmp_path, "test"), 40)


# ------------------------------------------------------------------------------ augmentation
def _coded_sample(h=64, w=64, seed=0):
    """A sample whose mask is a function of t1's red channel, and t2 = t1 + 1."""
    rng = np.random.default_rng(seed)
    t1 = torch.from_numpy(rng.integers(0, 250, (3, h, w))).float()
    return {"image": torch.stack([t1, t1 + 1]), "mask": (t1[0] > 125).long()}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_flips_and_swap_keep_image_and_mask_aligned(seed):
    sample = _coded_sample(seed=seed % 7)
    aug = ChangeAugment(p_trim=0.0, generator=torch.Generator().manual_seed(seed))
    out = aug(sample)
    first, second = out["image"]
    swapped = bool((first - second).mean() > 0)
    t1 = second if swapped else first
    assert torch.equal((first - second).abs(), torch.ones_like(first))
    assert torch.equal(out["mask"], (t1[0] > 125).long())
    assert sorted(t1.flatten().tolist()) == sorted(sample["image"][0].flatten().tolist())


def test_border_trim_resizes_back_with_nearest_labels():
    sample = _coded_sample()
    counts = []
    for seed in range(8):
        out = ChangeAugment(p_trim=1.0, p_flip=0.0, p_swap=0.0, generator=torch.Generator().manual_seed(seed))(sample)
        assert out["image"].shape == (2, 3, 64, 64) and out["mask"].shape == (64, 64)
        assert set(out["mask"].unique().tolist()) <= {0, 1}  # nearest, not blended
        counts.append(int((out["mask"] != sample["mask"]).sum()))
    assert max(counts) > 0  # some trims moved pixels (border up to int(7/224*64) = 2 px)


def test_normalisation_statistics():
    sample = {"image": torch.full((2, 3, 2, 2), 255.0), "mask": torch.zeros(2, 2, dtype=torch.long)}
    out = Normalize("imagenet")(sample)["image"]
    mean, std = NORMALIZATIONS["imagenet"]
    assert torch.allclose(out[0, :, 0, 0], (1 - torch.tensor(mean)) / torch.tensor(std))
    assert torch.allclose(Normalize("half")(sample)["image"], torch.ones(2, 3, 2, 2))
    assert make_transforms(False, "half")(sample)["image"].min() == 1.0
    with pytest.raises(GeovitError, match="normalization='bad'"):
        Normalize("bad")


# ------------------------------------------------------------------------------ torchgeo-layout generator
def test_generated_torchgeo_layout_matches_torchgeos_levircd_fixtures(tmp_path):
    from repo_paths import SHARED_TORCHGEO
    from torchgeo_layout import describe, write_torchgeo_layout

    splits = ("train", "val", "test")
    mode = {"A": "RGB", "B": "RGB", "label": "L"}
    expected: dict[str, object] = {f"levircd/levircd/{d}/{s}_{k}.png": (mode[d], (32, 32))
                                   for d in mode for s in splits for k in (0, 1)}
    for i, split in enumerate(splits):  # members of splits written later are 1x1 placeholders
        expected[f"levircd/levircd/{split}.zip"] = [
            (f"{d}/{s}_{k}.png", mode[d], (32, 32) if splits.index(s) <= i else (1, 1))
            for d in mode for s in ("val", "test", "train") for k in (0, 1)]
    generated = describe(write_torchgeo_layout(tmp_path), "levircd")
    assert generated == expected
    labels = np.unique(np.asarray(Image.open(tmp_path / "levircd" / "levircd" / "label" / "train_0.png")))
    assert labels[0] == 0 and labels[-1] == 255 and len(labels) > 2  # grey levels of an RGB 0/255 mask
    if SHARED_TORCHGEO.is_dir():  # torchgeo's own files, when the developers' copy is beside the repo
        assert describe(SHARED_TORCHGEO, "levircd") == generated
