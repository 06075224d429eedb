"""The DataModules on tiny synthetic sets written by the registered writers, under a real Trainer."""
from __future__ import annotations

import doctest
import shutil
from pathlib import Path
from types import SimpleNamespace

import h5py
import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DistributedSampler, random_split

from geovit.data.datamodules import (
    CHAMMIDataModule,
    GeovitDataModule,
    JUMPCPDataModule,
    KeepChannels,
    LEVIRCDDataModule,
    So2SatDataModule,
)
from geovit.data.registry import get_dataset
from geovit.errors import DataError, GeovitError


def _write(name: str, root: Path, **kw) -> Path:
    return get_dataset(name).load("synthetic")(root, **kw)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("sets")
    return SimpleNamespace(
        so2sat=_write("so2sat", base / "so2sat", num_samples=17),
        so2sat_v3=_write("so2sat", base / "so2sat_v3", num_samples=40, version="3_random"),
        jumpcp=_write("jumpcp", base / "jumpcp", num_samples=20, image_size=24),
        chammi=_write("chammi", base / "chammi", num_samples=8),
        levircd=_write("levircd", base / "levircd", num_samples=5, size=64),
        vicon=_write("vicon_default", base / "vicon", num_samples=2, resolution=16),
    )


class Recorder(L.LightningModule):
    """The smallest trainable module: records what the loaders deliver."""

    def __init__(self, resume_position=None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.train_batches: list = []
        self.val_batches = 0
        if resume_position is not None:
            self.resume_position = resume_position

    def training_step(self, batch, batch_idx):
        self.train_batches.append(batch)
        return (self.w - _first_tensor(batch).float().mean()) ** 2

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.val_batches += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _first_tensor(batch):
    if isinstance(batch, torch.Tensor):
        return batch
    values = batch.values() if isinstance(batch, dict) else batch
    return next(_first_tensor(v) for v in values if isinstance(v, (torch.Tensor, dict, list, tuple)))


def fit(dm, module=None, tmp_path=None):
    module = module or Recorder()
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    assert len(module.train_batches) == 2
    return module


def sizes(dm) -> tuple[int, int, int]:
    dm.setup(None)
    return len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)


# -- each DataModule under a Trainer ------------------------------------------------------------
def test_so2sat(data, tmp_path):
    dm = So2SatDataModule(data.so2sat, version="2", bands="sentinel2", batch_size=4)
    module = fit(dm, tmp_path=tmp_path)
    batch = module.train_batches[0]
    assert batch["image"].shape == (4, 10, 32, 32) and batch["label"].shape == (4,)
    assert batch["channels"][0].tolist() == list(range(8, 18)) and bool(batch["channel_mask"].all())
    assert module.val_batches > 0
    assert (dm.channel_table, dm.channel_ids, dm.num_classes, dm.image_size) == ("so2sat", tuple(range(8, 18)), 17, 32)
    assert dm.channel_names[0] == "S2_B02"
    assert sizes(dm) == (17, 17, 17)  # the writer's validation/test sets: max(17, n // 4)
    assert abs(float(batch["image"].mean())) < 2  # normalised, not raw reflectances


def test_so2sat_v3_validation_rows_are_torchgeos(data):
    """v3 has no validation file: torchgeo's ``random_split`` of training.h5 (80/20, Generator seed 0)."""
    from geovit.data.so2sat import SO2SAT_STATS

    dm = So2SatDataModule(data.so2sat_v3, version="3_random", augment=False)
    dm.setup("fit")
    with h5py.File(data.so2sat_v3 / "random" / "training.h5") as f:
        rows = np.concatenate([f["sen1"][()], f["sen2"][()]], axis=-1).transpose(0, 3, 1, 2)
        labels = f["label"][()].argmax(1)
    n = len(rows)
    train_rows, val_rows = random_split(range(n), [n - round(0.2 * n), round(0.2 * n)],
                                        generator=torch.Generator().manual_seed(0))
    mean, std = (np.asarray(v)[:, None, None] for v in SO2SAT_STATS["3_random"])
    for ds, want in ((dm.val_dataset, list(val_rows)), (dm.train_dataset, list(train_rows))):
        assert len(ds) == len(want)
        got = np.stack([ds[i]["image"].numpy() for i in range(len(ds))])
        np.testing.assert_allclose(got, ((rows[want] - mean) / std).astype(np.float32), rtol=1e-5, atol=1e-5)
        assert [ds[i]["label"] for i in range(len(ds))] == labels[want].tolist()
    assert len(dm.val_dataset) == 8


def test_jumpcp(data, tmp_path):
    dm = JUMPCPDataModule(data.jumpcp, channels="jumpcp_brightfield", image_size=16, batch_size=4)
    module = fit(dm, tmp_path=tmp_path)
    assert module.train_batches[0]["image"].shape == (4, 3, 16, 16)
    assert (dm.channel_table, dm.channel_ids, dm.num_classes, dm.image_size) == ("jumpcp", (5, 6, 7), 4, 16)
    assert sizes(dm) == (12, 4, 4)  # the official 60/20/20 split of 20 cells


def test_chammi_batches_mix_channel_counts(data, tmp_path):
    dm = CHAMMIDataModule(data.chammi, image_size=24, batch_size=8)
    module = fit(dm, tmp_path=tmp_path)
    batch = module.train_batches[0]
    assert batch["image"].shape[1:] == (5, 24, 24)
    counts = set(batch["channel_mask"].sum(1).tolist())
    assert counts <= {3, 4, 5} and len(counts) > 1  # padded: chunks of 3, 4 and 5 channels in one batch
    meta = pd.concat([pd.read_csv(data.chammi / c / "enriched_meta.csv") for c in ("Allen", "HPA", "CP")])
    train, task_one = (int((meta["train_test_split"] == s).sum()) for s in ("Train", "Task_one"))
    assert sizes(dm) == (train, task_one, task_one)
    assert dm.channel_table == "chammi" and len(dm.channel_ids) == 12
    assert dm.num_classes == len(set(zip(meta["file_path"].str.split("/").str[0], meta["Label"]))) == 3 + 4 + 3


def test_chammi_channel_subset_keeps_only_their_chunks(data):
    dm = CHAMMIDataModule(data.chammi, channels=["CP_nucleus", "HPA_nucleus"], image_size=16, batch_size=2,
                          augment=False)
    assert dm.chunks == ["HPA", "CP"]
    dm.setup("fit")
    kept = {tuple(dm.train_dataset[i]["channels"].tolist()) for i in range(len(dm.train_dataset))}
    assert kept == {(5,), (7,)}


def test_levircd(data, tmp_path):
    dm = LEVIRCDDataModule(data.levircd, tile=32, batch_size=4)
    module = fit(dm, tmp_path=tmp_path)
    batch = module.train_batches[0]
    assert batch["image"].shape == (4, 2, 3, 32, 32) and batch["mask"].shape == (4, 32, 32)
    assert float(batch["image"].abs().max()) < 10  # normalised
    assert sizes(dm) == (3 * 4, 1 * 4, 1 * 4)  # scenes 60/20/20, four 32-px tiles per 64-px scene
    assert (dm.channel_table, dm.channel_ids, dm.image_size) == ("rgb", (0, 1, 2), 32)
    raw = dm.plot_samples(3)
    assert len(raw) == 3 and float(raw[0]["image"].max()) > 10  # raw 0-255 tiles for the plots


@pytest.mark.parametrize("name, cls", [("whucd", "WHUCD"), ("clcd", "CLCD")])
def test_levircd_family_shares_the_datamodule(data, name, cls):
    info = get_dataset(name)
    dm = info.load("datamodule")(data.levircd, tile=64, dataset_class=info.load("dataset"), batch_size=2)
    dm.setup("fit")
    assert type(dm.train_dataset.dataset.base).__name__ == cls and len(dm.val_dataset) == 1
    assert dm.dataset_name == name


def test_levircd_without_val_split_says_how_to_make_one(data, tmp_path):
    root = tmp_path / "levir"
    shutil.copytree(data.levircd, root)
    shutil.rmtree(root / "val")
    with pytest.raises(GeovitError, match="create a val split, e.g. a few train scenes moved to val/"):
        LEVIRCDDataModule(root, tile=32, batch_size=2).setup("fit")


def test_vicon(data, tmp_path):
    from pdes.datamodule import VICONDataModule
    from pdes.datasets import DEFAULT_SETS

    roots = [data.vicon / n for n in DEFAULT_SETS]
    dm = VICONDataModule(roots, num_pairs=3, max_stride=2, batch_size=2)
    module = fit(dm, tmp_path=tmp_path)
    batch = module.train_batches[0]
    assert len(batch) == 2  # one batch of each data set per step
    assert all(b["cond"].shape == (2, 3, 7, 16, 16) for b in batch.values())
    assert dm.frame_size == 16 and dm.has_validation and module.val_batches > 0
    assert [len(d) for d in dm.train_datasets] == [2, 2] and [len(d) for d in dm.val_datasets] == [2, 2]
    assert dm.batches_per_epoch() == 1 and len(dm.channel_names) == 7


def test_vicon_without_validation_data_still_trains(data, tmp_path):
    from pdes.datamodule import VICONDataModule

    root = tmp_path / "cfd"
    shutil.copytree(data.vicon / "cfd2d" / "train", root / "train")
    dm = VICONDataModule([root], num_pairs=3, max_stride=2, batch_size=2)
    assert not dm.has_validation and dm.val_dataloader() == []
    assert fit(dm, tmp_path=tmp_path).val_batches == 0


def test_vicon_sets_of_different_frame_sizes_are_refused(data, tmp_path):
    from pdes.datamodule import VICONDataModule

    _write("pdearena_ns2d", tmp_path / "ns32", num_samples=1)
    dm = VICONDataModule([data.vicon / "ns2d", tmp_path / "ns32"], num_pairs=3, max_stride=2)
    with pytest.raises(DataError, match=r"different frame sizes \[16, 32\]; pass frame_size="):
        dm.setup("fit")
    pooled = VICONDataModule([data.vicon / "ns2d", tmp_path / "ns32"], num_pairs=3, max_stride=2, frame_size=16)
    assert pooled.frame_size == 16


# -- shared loader behaviour -----------------------------------------------------------------------
def test_batch_size_larger_than_the_training_split_is_named(data, tmp_path):
    dm = JUMPCPDataModule(data.jumpcp, image_size=16, batch_size=13)
    with pytest.raises(GeovitError, match=r"batch_size=13: larger than the train split \(12 samples over 1 process"):
        dm.train_dataloader()
    with pytest.raises(GeovitError, match="batch_size=13"):
        fit(JUMPCPDataModule(data.jumpcp, image_size=16, batch_size=13), tmp_path=tmp_path)
    with pytest.raises(GeovitError, match="batch_size=0: expected an integer >= 1"):
        So2SatDataModule(data.so2sat, batch_size=0)


def _fake_trainer(world=1, rank=0, epoch=0, position=None):
    module = SimpleNamespace(resume_position=position) if position is not None else SimpleNamespace()
    return SimpleNamespace(world_size=world, global_rank=rank, current_epoch=epoch, lightning_module=module)


def _order(dm, trainer=None) -> list[int]:
    """The training indices a loader yields: the sampler's (per-sample reads) or the batches' (block reads)."""
    dm.trainer = trainer
    loader = dm.train_dataloader()
    if dm.reads == "block":
        return [i for batch in loader.batch_sampler for i in batch]
    return list(iter(loader.sampler))


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 1000), st.integers(0, 3))
def test_train_order_is_fixed_by_seed_and_epoch_and_sharded(data, seed, epoch):
    def dm():
        return So2SatDataModule(data.so2sat, augment=False, batch_size=2, seed=seed, reads="sample")

    alone = _order(dm(), _fake_trainer(epoch=epoch))
    assert alone == _order(dm(), _fake_trainer(epoch=epoch)) and sorted(alone) == list(range(17))
    shards = [_order(dm(), _fake_trainer(world=3, rank=r, epoch=epoch)) for r in range(3)]
    assert set().union(*shards) == set(range(17)) and len({len(s) for s in shards}) == 1


def test_training_batches_and_augmentations_repeat_with_the_seed(data):
    def first_batch(seed, augment=True):
        dm = So2SatDataModule(data.so2sat, batch_size=4, seed=seed, augment=augment)
        return next(iter(dm.train_dataloader()))["image"]

    torch.manual_seed(1)
    a = first_batch(0)
    torch.manual_seed(2)  # the global RNG plays no part
    assert torch.equal(a, first_batch(0))
    assert not torch.equal(a, first_batch(1))
    dm = So2SatDataModule(data.so2sat, batch_size=4, augment=False)
    plain = next(iter(dm.train_dataloader()))["image"]
    assert not torch.equal(a, plain)  # augment=True does augment ...
    assert torch.allclose(a.flatten(1).sort(1).values, plain.flatten(1).sort(1).values)  # ... by flips / rot90


def test_a_resumed_run_skips_the_consumed_batches(data, tmp_path):
    def dm():
        return So2SatDataModule(data.so2sat, batch_size=4, augment=True, seed=3)

    fresh = fit(dm(), tmp_path=tmp_path)
    resumed = fit(dm(), Recorder(resume_position=(0, 1)), tmp_path=tmp_path)
    assert torch.equal(resumed.train_batches[0]["image"], fresh.train_batches[1]["image"])
    assert not torch.equal(resumed.train_batches[0]["image"], fresh.train_batches[0]["image"])


@pytest.mark.parametrize("reads", ["block", "sample"])
def test_a_checkpoint_at_the_end_of_an_epoch_resumes_with_the_next_one(data, reads):
    def dm():
        return So2SatDataModule(data.so2sat, batch_size=4, augment=False, reads=reads, block_size=2)

    batches = dm().batches_per_epoch()
    assert batches == 17 // 4
    at_end = _order(dm(), _fake_trainer(epoch=0, position=(0, batches)))
    assert at_end == _order(dm(), _fake_trainer(epoch=1)) != _order(dm(), _fake_trainer(epoch=0))
    mid = _order(dm(), _fake_trainer(epoch=2, position=(2, 3)))
    assert mid == _order(dm(), _fake_trainer(epoch=2))[3 * 4:]
    stale = _order(dm(), _fake_trainer(epoch=2, position=(1, 3)))  # a position of another epoch
    assert stale == _order(dm(), _fake_trainer(epoch=2))


def test_eval_loaders_are_in_order_and_sharded_under_several_ranks(data):
    dm = So2SatDataModule(data.so2sat, batch_size=4)
    dm.setup("fit")
    loader = dm.val_dataloader()
    assert loader.sampler.__class__.__name__ == "SequentialSampler"
    dm.trainer = _fake_trainer(world=2, rank=1)
    sampler = dm.val_dataloader().sampler
    assert isinstance(sampler, DistributedSampler) and not sampler.shuffle
    assert list(sampler) == [*range(1, 17, 2), 0]  # every second row, padded to equal shards
    dm.trainer = None
    train = dm.split_dataloader("train")  # any split, unaugmented, in order
    assert train.sampler.__class__.__name__ == "SequentialSampler"
    assert torch.equal(next(iter(train))["image"][0], dm.train_dataset.dataset[0]["image"])


@pytest.mark.parametrize("make, message", [
    (lambda r: So2SatDataModule(r, bands="S2_B99"),
     r"bands='S2_B99' \(channel table 'so2sat'\): .*unknown channel name"),
    (lambda r: So2SatDataModule(r, bands=[0, 18]), r"bands=\[0, 18\]: channel ids \[18\] are outside table 'so2sat'"),
    (lambda r: So2SatDataModule(r, version="4"), r"version='4': expected one of 2, 3_random"),
    (lambda r: JUMPCPDataModule(r, image_size=0), r"image_size=0: expected a positive number of pixels"),
    (lambda r: CHAMMIDataModule(r, val_split="Valid"), r"val_split='Valid': expected one of Train, Task_one"),
    (lambda r: LEVIRCDDataModule(r, tile=20), r"tile=20: expected 0 \(whole scenes\) or a positive multiple of 16"),
    (lambda r: LEVIRCDDataModule(r, normalization="z"), r"normalization='z': expected one of imagenet, half"),
    (lambda r: LEVIRCDDataModule(r, labels="any"), r"labels='any': expected 'auto', 'strict' or 'nonzero'"),
    (lambda r: LEVIRCDDataModule(r, dataset_class=dict), r"dataset_class=<class 'dict'>: expected LEVIRCD"),
])
def test_bad_arguments_are_named(tmp_path, make, message):
    with pytest.raises(GeovitError, match=message):
        make(tmp_path)


def test_keep_channels_keeps_the_present_ones_in_sample_order():
    sample = {"image": torch.arange(3.0)[:, None, None].expand(3, 2, 2), "channels": torch.tensor([4, 1, 9])}
    out = KeepChannels([9, 4, 7])(sample)
    assert out["channels"].tolist() == [4, 9] and out["image"][:, 0, 0].tolist() == [0.0, 2.0]


def test_docstring_examples_run(tmp_path, monkeypatch):
    import tempfile

    import geovit.data.datamodules
    import geovit.data.registry
    import geovit.data.samplers
    import pdes.datamodule

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the examples' folders go to tmp_path
    for module in (geovit.data.datamodules, geovit.data.registry, geovit.data.samplers, pdes.datamodule):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__
    assert issubclass(pdes.datamodule.VICONDataModule, GeovitDataModule)


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 1000), st.integers(0, 3), st.integers(1, 5))
def test_block_reads_order_is_fixed_by_seed_and_epoch_and_sharded(data, seed, epoch, block):
    def dm():
        return So2SatDataModule(data.so2sat, augment=False, batch_size=2, seed=seed, block_size=block)

    alone = _order(dm(), _fake_trainer(epoch=epoch))
    assert alone == _order(dm(), _fake_trainer(epoch=epoch))
    assert len(alone) == len(set(alone)) == 16 and set(alone) <= set(range(17))  # drop_last: 17 // 2 batches
    shards = [_order(dm(), _fake_trainer(world=3, rank=r, epoch=epoch)) for r in range(3)]
    everything = [i for s in shards for i in s]
    assert all(len(s) == 6 for s in shards)  # ceil(17 / 3) each: one padded repeat
    assert set(everything) <= set(range(17)) and len(everything) - len(set(everything)) <= 1


def test_block_reads_give_the_per_sample_reads_samples_and_augmentations(data):
    """Same index, same epoch -> the same augmented sample on both training paths."""
    def by_label(reads):
        dm = So2SatDataModule(data.so2sat_v3, "3_random", batch_size=4, augment=True, seed=5, reads=reads, block_size=3)
        dm.trainer = _fake_trainer(epoch=1)
        loader = dm.train_dataloader()
        order = _order(dm, _fake_trainer(epoch=1))
        images = torch.cat([b["image"] for b in loader])
        return dict(zip(order, images)), dm

    block, dm = by_label("block")
    sample, _ = by_label("sample")
    shared = set(block) & set(sample)
    assert len(shared) > 10
    aug = dm.train_dataset
    aug.set_epoch(1)
    for i in shared:
        assert torch.equal(block[i], sample[i]) and torch.equal(block[i], aug[i]["image"])


def test_block_reads_with_two_workers_equal_the_single_process_batches(data):
    def batches(workers):
        dm = So2SatDataModule(data.so2sat_v3, "3_random", batch_size=4, augment=True, seed=2, num_workers=workers, block_size=4)
        return list(dm.train_dataloader())

    alone, workers = batches(0), batches(2)
    assert len(alone) == len(workers) == 32 // 4
    for a, b in zip(alone, workers):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_block_reads_resume_mid_epoch_under_a_trainer(data, tmp_path):
    def dm():
        return So2SatDataModule(data.so2sat, batch_size=4, augment=True, seed=3, block_size=2)

    fresh = fit(dm(), tmp_path=tmp_path)
    resumed = fit(dm(), Recorder(resume_position=(0, 1)), tmp_path=tmp_path)
    assert torch.equal(resumed.train_batches[0]["image"], fresh.train_batches[1]["image"])
    assert not torch.equal(resumed.train_batches[0]["image"], fresh.train_batches[0]["image"])


def test_val_cities_hold_out_cities(tmp_path):
    from geovit.data.so2sat import synthetic_geolocation, write_geo_h5, write_synthetic

    root = write_synthetic(tmp_path / "s", num_samples=60)
    epsg, tfw, city = synthetic_geolocation(60, seed=1)
    write_geo_h5(root / "training_geo.h5", epsg=epsg, tfw=tfw, city=city)
    dm = So2SatDataModule(root, batch_size=4, val_cities=["paris", "rome"])
    dm.setup("fit")
    train_cities = set(_innermost_city(dm.train_dataset))
    val_cities = set(_innermost_city(dm.val_dataset))
    assert val_cities == {"paris", "rome"} and train_cities == {"berlin", "madrid"}
    assert len(dm.train_dataset) + len(dm.val_dataset) == 60
    batch = next(iter(dm.val_dataloader()))
    assert set(batch["city"]) <= {"paris", "rome"} and batch["crs"][0].startswith("EPSG:")
    with pytest.raises(GeovitError, match="tokyo"):
        So2SatDataModule(root, val_cities=["tokyo"]).setup("fit")
    with pytest.raises(GeovitError, match="validation_geo.h5|training_geo.h5"):
        So2SatDataModule(write_synthetic(tmp_path / "nogeo", num_samples=17), val_cities=["paris"]).setup("fit")


def _innermost_city(ds):
    while not hasattr(ds, "geolocation"):
        ds = ds.dataset
    return ds.geolocation.city.tolist()


# -- LEVIR-CD: each scene decoded once per process and epoch ------------------------------------
@pytest.fixture(scope="module")
def levir_many(tmp_path_factory):
    from geovit.data.levircd import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("levir") / "l", num_samples=12, size=64)  # 8 train scenes


def _tiles_by_index(dm, epoch):
    dm.trainer = _fake_trainer(epoch=epoch)
    loader = dm.train_dataloader()
    order = list(iter(loader.sampler))
    loader.sampler.set_epoch(epoch)
    batches = list(loader)
    return order, {i: (img, mask) for i, img, mask in
                   zip(order, torch.cat([b["image"] for b in batches]), torch.cat([b["mask"] for b in batches]))}


@pytest.mark.parametrize("epoch", [0, 3])
def test_levircd_scene_window_keeps_each_tiles_augmentation(levir_many, epoch):
    def dm(window):
        return LEVIRCDDataModule(levir_many, tile=32, batch_size=4, seed=7, scene_window=window)

    cached_order, cached = _tiles_by_index(dm(2), epoch)
    plain_order, plain = _tiles_by_index(dm(0), epoch)
    assert cached_order != plain_order and set(cached) == set(plain) == set(range(8 * 4))
    for i in cached:
        assert torch.equal(cached[i][0], plain[i][0]) and torch.equal(cached[i][1], plain[i][1])


def test_levircd_scene_window_decodes_each_scene_once_per_epoch(levir_many, monkeypatch):
    from geovit.data import levircd

    decoded = []
    real = levircd.load_pair
    monkeypatch.setattr(levircd, "load_pair", lambda pair, labels="strict": decoded.append(pair) or real(pair, labels))
    for window, most in ((2, 8), (0, 32)):
        decoded.clear()
        dm = LEVIRCDDataModule(levir_many, tile=32, batch_size=4, seed=1, scene_window=window)
        dm.setup("fit")
        list(dm.train_dataloader())
        if window:
            assert len(decoded) == len(set(decoded)) == 8  # every train scene once
        else:
            assert len(decoded) > 16  # a scene per tile, nearly
    # the order: tiles of `window` scenes mixed, scene groups one after the other
    dm = LEVIRCDDataModule(levir_many, tile=32, batch_size=4, seed=1, scene_window=2)
    order = _order_levir(dm)
    for start in range(0, 32, 8):
        assert len({i // 4 for i in order[start:start + 8]}) == 2


def _order_levir(dm):
    dm.trainer = None
    return list(iter(dm.train_dataloader().sampler))


def test_levircd_scene_window_resumes_mid_epoch(levir_many):
    def order(position=None):
        dm = LEVIRCDDataModule(levir_many, tile=32, batch_size=4, seed=2, scene_window=3)
        dm.trainer = _fake_trainer(epoch=1, position=position)
        return list(iter(dm.train_dataloader().sampler))

    assert order((1, 3)) == order()[3 * 4:]
    with pytest.raises(GeovitError, match="scene_window=-1"):
        LEVIRCDDataModule(levir_many, scene_window=-1)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 4), st.booleans(), st.booleans(), st.booleans())
def test_regular_batches_collate_to_the_padded_layout(n, c, same_ids, labelled, extra):
    """pad_channels_collate's stacking path for regular batches gives exactly the padded layout."""
    from geovit.data.collate import pad_channels_collate

    g = torch.Generator().manual_seed(n * 10 + c)
    samples = []
    for i in range(n):
        ids = torch.arange(c) if same_ids or i == 0 else torch.arange(c) + i
        s = {"image": torch.randn(c, 4, 4, generator=g), "channels": ids}
        if labelled:
            s["label"] = i % 3
        if extra:
            s["city"] = f"c{i}"
        samples.append(s)
    got = pad_channels_collate(samples)
    cmax = max(s["image"].shape[0] for s in samples)
    want = {"image": torch.zeros(n, cmax, 4, 4), "channels": torch.zeros(n, cmax, dtype=torch.long),
            "channel_mask": torch.zeros(n, cmax, dtype=torch.bool)}
    for i, s in enumerate(samples):  # the module's definition: each sample's channels first, zeros after
        want["image"][i, :c], want["channels"][i, :c], want["channel_mask"][i, :c] = s["image"], s["channels"], True
    if labelled:
        want["label"] = torch.tensor([s["label"] for s in samples])
    if extra:
        want["city"] = [s["city"] for s in samples]
    assert got.keys() == want.keys()
    for key in want:
        if isinstance(want[key], torch.Tensor):
            assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key])
        else:
            assert got[key] == want[key]
