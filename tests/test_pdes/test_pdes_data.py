"""PDEArena / PDEBench / VICON-layout readers: exact packing into VICON's slots, splits, lazy
prompt reads, multi-dataset batches, and clear errors for bad files."""
from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch

from geovit.errors import DataError, GeovitError
from pdes.data import SLOTS, PromptDataset, TrajectoryDataset, discover
from pdes.synthetic import write_cfd2d, write_ns2d
from pdes.datamodule import VICONDataModule
from pdes.training import concat_prompts


def _arena(root, split="train", n=3, t=12, x=8, seed=7, buo=0.38774, fields=("u", "vx", "vy"), dropped=False):
    """A tiny PDEArena shard exactly as PDEArena's generator writes it (group = split, float64)."""
    rng = np.random.default_rng(seed)
    path = root / f"NavierStokes2D_{split}_{seed}_{buo:.5f}_{n}.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group(split)
        for key in fields:
            g.create_dataset(key, data=rng.standard_normal((n, t, x, x)))
        g.create_dataset("t", data=np.tile(18 + 1.5 * np.arange(t), (n, 1)))
        g.create_dataset("x", data=np.tile(np.linspace(0, 32, x), (n, 1)))
        g.create_dataset("y", data=np.tile(np.linspace(0, 32, x), (n, 1)))
        for key, v in (("dt", 1.5), ("dx", 32 / x), ("dy", 32 / x), ("buo_y", buo)):
            g.create_dataset(key, data=np.full(n, v))
        if dropped:
            mask = np.zeros((n, t), dtype=bool)
            mask[:, 3] = True
            g.create_dataset("dropped_mask", data=mask)
    return path


def _bench(path, n=10, t=6, x=8, seed=0, keys=("density", "Vx", "Vy", "pressure")):
    """A tiny PDEBench 2D CFD file (float32 fields, coordinate keys)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key in keys:
            f.create_dataset(key, data=rng.standard_normal((n, t, x, x)).astype(np.float32))
        f.create_dataset("x-coordinate", data=((np.arange(x) + 0.5) / x).astype(np.float32))
        f.create_dataset("y-coordinate", data=((np.arange(x) + 0.5) / x).astype(np.float32))
        f.create_dataset("t-coordinate", data=np.linspace(0, 0.05 * t, t + 1).astype(np.float32))
    return path


# ------------------------------------------------------------------------------ reading
def test_pdearena_shards_pack_into_vicon_slots_with_a_wall_node_type(tmp_path):
    path = _arena(tmp_path, "train", n=3)
    _arena(tmp_path, "test", n=2, seed=9)
    ds = TrajectoryDataset(tmp_path, "train")
    assert len(ds) == 3 and ds.spec.name == "pdearena_ns2d"
    item = ds[2]
    frames = item["frames"]
    assert frames.shape == (12, 7, 8, 8) and frames.dtype == torch.float32
    assert item["channel_mask"].tolist() == [0, 1, 1, 0, 0, 1, 0]
    with h5py.File(path) as f:
        for slot, key in (("vx", "vx"), ("vy", "vy"), ("scalar", "u")):
            np.testing.assert_allclose(frames[:, SLOTS.index(slot)].numpy(), f["train"][key][2], rtol=1e-6)
    for slot in ("density", "pressure", "vorticity"):
        assert frames[:, SLOTS.index(slot)].abs().max() == 0
    node = frames[0, -1]
    assert node[0].eq(1).all() and node[-1].eq(1).all() and node[:, 0].eq(1).all() and node[:, -1].eq(1).all()
    assert node[1:-1, 1:-1].eq(0).all()
    assert len(TrajectoryDataset(tmp_path, "test")) == 2  # split chosen by file name
    assert len(TrajectoryDataset(path, "train")) == 3     # a shard can be given directly ...
    with pytest.raises(DataError, match=r"without the group 'test' \(groups: \['train'\]\)"):
        TrajectoryDataset(path, "test")                   # ... for its own split only
    assert not item["dropped"].any()


def test_pdebench_original_file_is_split_80_10_10_by_index(tmp_path):
    path = _bench(tmp_path / "2D_CFD_Rand_M0.1_Eta0.1_Zeta0.1_periodic_8_Train.hdf5", n=10)
    sizes = {s: len(TrajectoryDataset(tmp_path, s)) for s in ("train", "valid", "test")}
    assert sizes == {"train": 8, "valid": 1, "test": 1}
    test = TrajectoryDataset(tmp_path, "test")
    item = test[0]
    assert item["index"] == 9 and item["channel_mask"].tolist() == [1, 1, 1, 1, 0, 0, 0]
    with h5py.File(path) as f:
        for slot, key in (("density", "density"), ("vx", "Vx"), ("vy", "Vy"), ("pressure", "pressure")):
            np.testing.assert_array_equal(item["frames"][:, SLOTS.index(slot)].numpy(), f[key][9])
    assert item["frames"][:, -1].abs().max() == 0  # periodic: no wall pixels
    # a single file can be given directly too
    assert len(TrajectoryDataset(path, "train")) == 8


def test_vicon_rechunked_folders_are_read_in_natural_file_order_with_dropped_mask(tmp_path):
    for i in (0, 2, 10):
        _bench(tmp_path / "test" / f"{i}.h5", n=2, seed=i)
    with h5py.File(tmp_path / "test" / "10.h5", "a") as f:
        mask = np.zeros((2, 6), dtype=bool)
        mask[1, [1, 3]] = True
        f.create_dataset("dropped_mask", data=mask)
    ds = TrajectoryDataset(tmp_path, "test")
    assert [s.path.rsplit("/", 1)[-1] for s in ds.sources] == ["0.h5", "2.h5", "10.h5"]
    assert len(ds) == 6
    assert ds[5]["dropped"].tolist() == [False, True, False, True, False, False]
    assert not ds[0]["dropped"].any()


def test_average_pooling_to_a_smaller_frame_and_channel_selection(tmp_path):
    _bench(tmp_path / "cfd.hdf5", n=10, x=8)
    full = TrajectoryDataset(tmp_path, "train")
    pooled = TrajectoryDataset(tmp_path, "train", frame_size=2, channels=["density", "vx"])
    a, b = full[1]["frames"], pooled[1]
    assert b["frames"].shape == (6, 7, 2, 2)
    assert b["channel_mask"].tolist() == [1, 1, 0, 0, 0, 0, 0]
    np.testing.assert_allclose(b["frames"][:, 0, 1, 0], a[:, 0, 4:, :4].mean(dim=(-2, -1)), rtol=1e-5)
    assert b["frames"][:, SLOTS.index("pressure")].abs().max() == 0  # deselected slot not read


def test_prompt_items_hold_the_frames_at_the_sampled_times(tmp_path):
    _arena(tmp_path, "train", n=2, t=12)
    ds = PromptDataset(tmp_path, "train", num_pairs=5, max_stride=3, seed=1)
    full = TrajectoryDataset(tmp_path, "train")[1]["frames"]
    strides = set()
    for draw in range(20):
        item = ds[(1, draw)]  # what a training sampler passes: (index, draw seed)
        t_cond, s = item["t_cond"], int(item["stride"])
        strides.add(s)
        assert 1 <= s <= 3 and torch.all(t_cond[1:] >= t_cond[:-1]) and int(t_cond.max()) + s < 12
        torch.testing.assert_close(item["cond"], full[t_cond])
        torch.testing.assert_close(item["qoi"], full[t_cond + s])
    assert strides == {1, 2, 3}
    # prompts are functions of (seed, index) or of the draw seed: no state carried between items
    a, b = PromptDataset(tmp_path, "train", num_pairs=5, seed=4), PromptDataset(tmp_path, "train", num_pairs=5, seed=4)
    assert torch.equal(a[0]["t_cond"], b[0]["t_cond"])
    assert torch.equal(a[0]["t_cond"], a[0]["t_cond"]) and torch.equal(a[(0, 7)]["t_cond"], b[(0, 7)]["t_cond"])


def test_dataset_pickles_without_open_handles_and_reopens_lazily(tmp_path):
    _arena(tmp_path, "train", n=2)
    ds = TrajectoryDataset(tmp_path, "train")
    first = ds[0]["frames"]
    assert ds._handles  # opened on first read
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._handles == {}
    torch.testing.assert_close(clone[0]["frames"], first)


def test_multi_dataset_steps_take_one_batch_of_each_dataset(tmp_path):
    _arena(tmp_path / "arena", "train", n=6, x=8) if (tmp_path / "arena").mkdir() is None else None
    _bench(tmp_path / "bench" / "train" / "0.h5", n=2, t=12)
    loader = VICONDataModule([tmp_path / "arena", tmp_path / "bench"], num_pairs=4, batch_size=3).train_dataloader()
    steps = 0
    for batch, _, _ in loader:
        cond, qoi, mask = concat_prompts(batch)
        assert cond.shape == (5, 4, 7, 8, 8) and qoi.shape == cond.shape  # 3 arena + 2 bench prompts
        assert mask[:3].tolist() == [[0, 1, 1, 0, 0, 1, 0]] * 3 and mask[3:].tolist() == [[1, 1, 1, 1, 0, 0, 0]] * 2
        steps += 1
    assert steps == 2  # the larger set (6 prompts / 3) sets the epoch; the small one cycles


def test_synthetic_writers_use_the_real_file_names_keys_and_dtypes(tmp_path):
    (arena,) = write_ns2d(tmp_path / "ns", splits={"train": 2}, resolution=8, num_frames=4, seed=3, buoyancy=0.25,
                          progress=False)
    assert arena.name.startswith("NavierStokes2D_train_") and arena.name.endswith("_0.25000_2.h5")
    with h5py.File(arena) as f:
        assert list(f) == ["train"]
        g = f["train"]
        assert {"u", "vx", "vy", "t", "dt", "x", "dx", "y", "dy", "buo_y"} <= set(g)
        assert g["u"].shape == (2, 4, 8, 8) and g["u"].dtype == np.float64
        assert g["t"].shape == (2, 4) and g["buo_y"][0] == 0.25
    (bench,) = write_cfd2d(tmp_path / "cfd", splits={"train": 3, "test": 1}, resolution=8, num_frames=3,
                           dropped_every=2, progress=False)
    assert bench.name == "2D_CFD_Rand_M0.1_Eta1e-08_Zeta1e-08_periodic_8_Train.hdf5"
    with h5py.File(bench) as f:
        assert f["density"].shape == (4, 3, 8, 8) and f["density"].dtype == np.float32
        assert f["t-coordinate"].shape == (4,) and f["x-coordinate"].shape == (8,)
        assert f["dropped_mask"][0].tolist() == [False, True, False]
    vicon = write_cfd2d(tmp_path / "vic", splits={"train": 5, "test": 1}, resolution=8, num_frames=3, layout="vicon",
                        chunk=2, progress=False)
    assert sorted(p.relative_to(tmp_path / "vic").as_posix() for p in vicon) == [
        "test/0.h5", "train/0.h5", "train/1.h5", "train/2.h5"]


# ------------------------------------------------------------------------------ bad input
def test_missing_key_names_file_and_key(tmp_path):
    path = _arena(tmp_path, fields=("u", "vx"))
    with pytest.raises(DataError, match=r"NavierStokes2D_train.*missing key 'train/vy'"):
        TrajectoryDataset(tmp_path, "train")
    assert path.exists()


def test_wrong_rank_names_key_and_expected_rank(tmp_path):
    path = tmp_path / "bad.hdf5"
    with h5py.File(path, "w") as f:
        for key in ("density", "Vx", "Vy", "pressure"):
            f.create_dataset(key, data=np.zeros((4, 5, 8), dtype=np.float32))
    with pytest.raises(DataError, match=r"bad.hdf5: key 'density' has shape \(4, 5, 8\) \(rank 3\); expected rank 4"):
        TrajectoryDataset(path, "train")


def test_too_few_frames_for_the_prompt(tmp_path):
    _arena(tmp_path, t=4)
    with pytest.raises(DataError, match=r"has 4 frames per trajectory; the prompt needs at least 6"):
        PromptDataset(tmp_path, "train", max_stride=5)
    with pytest.raises(DataError, match=r"at least 11"):
        TrajectoryDataset(tmp_path, "train", min_frames=11)


def test_channel_mask_matching_no_field(tmp_path):
    _arena(tmp_path)
    with pytest.raises(DataError, match=r"matches no field of pdearena_ns2d"):
        TrajectoryDataset(tmp_path, "train", channels=["density", "pressure"])
    with pytest.raises(DataError, match=r"matches no field"):
        TrajectoryDataset(tmp_path, "train", channels=[1, 0, 0, 1, 1, 0, 0])
    with pytest.raises(DataError, match=r"unknown channel slot"):
        TrajectoryDataset(tmp_path, "train", channels=["temperature"])


def test_non_finite_values_name_file_key_trajectory_and_frame(tmp_path):
    path = _arena(tmp_path, n=2, t=8)
    with h5py.File(path, "a") as f:
        f["train"]["vy"][1, 5, 2, 2] = np.nan
    ds = TrajectoryDataset(tmp_path, "train")
    ds[0]  # the clean trajectory reads fine
    with pytest.raises(DataError, match=r"key 'train/vy' trajectory 1 has non-finite values .* at frame 5"):
        ds[1]
    prompts = PromptDataset(tmp_path, "train", num_pairs=8, max_stride=1, seed=0)
    with pytest.raises(DataError, match=r"non-finite"):
        for _ in range(10):
            prompts[1]


def test_unrecognised_and_mismatched_files(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        TrajectoryDataset(tmp_path / "nope", "train")
    with pytest.raises(DataError, match=r"no train data found"):
        discover(tmp_path, "train")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("tensor", data=np.zeros((2, 3, 4)))
    with pytest.raises(DataError, match=r"other.h5: neither a PDEArena .* keys present: \['tensor'\]"):
        TrajectoryDataset(tmp_path, "train")
    bench = tmp_path / "b"
    _bench(bench / "train" / "0.h5", n=2)
    with h5py.File(bench / "train" / "0.h5", "a") as f:
        f.create_dataset("dropped_mask", data=np.zeros((2, 3), dtype=bool))
    with pytest.raises(DataError, match=r"'dropped_mask' has shape \(2, 3\); expected \(N, T\) = \(2, 6\)"):
        TrajectoryDataset(bench, "train")
    with pytest.raises(DataError, match="cannot be average-pooled"):
        _bench(tmp_path / "c" / "x.hdf5")
        TrajectoryDataset(tmp_path / "c", "train", frame_size=3)


def test_geovit_data_synth_writers_follow_the_shared_signature(tmp_path):
    from pdes.synthetic import write_synthetic_cfd2d, write_synthetic_ns2d

    root = write_synthetic_ns2d(tmp_path / "ns", num_samples=2, seed=1)
    assert {s: len(TrajectoryDataset(root, s)) for s in ("train", "valid", "test")} == {"train": 2, "valid": 1, "test": 1}
    root = write_synthetic_cfd2d(tmp_path / "cfd", num_samples=2, seed=1)
    assert len(TrajectoryDataset(root, "test")) == 1 and TrajectoryDataset(root, "test").frame_size == 32
    with pytest.raises(GeovitError, match="num-samples 0"):
        write_synthetic_ns2d(tmp_path / "x", num_samples=0)
