"""geovit's models inside torchgeo's own trainers and datasets (installed through the dev extra).

* torchgeo's ``ClassificationTask`` builds a geovit ChannelViT by its timm name and trains it on
  torchgeo's ``So2Sat`` dataset class reading Sentinel-2 bands only: bound to those bands, the model
  embeds them with their own channel embeddings (unbound it refuses, instead of silently using
  the first ten rows of the table).
* torchgeo's ``ChangeDetectionTask`` steps geovit's ChangeViT on geovit's LEVIR-CD reader with
  torchgeo's sample keys, whose samples equal those of torchgeo's ``LEVIRCD`` on the same files.

Data: torchgeo's test-fixture layout (``torchgeo_fixtures`` in ``tests/conftest.py``).
"""
from __future__ import annotations

import lightning as L
import pytest
import timm
import torch
from torch.utils.data import DataLoader
from torchgeo.datasets import LEVIRCD as TorchgeoLEVIRCD
from torchgeo.datasets import So2Sat
from torchgeo.trainers import ChangeDetectionTask, ClassificationTask

import geovit.models  # noqa: F401  (registers geovit's variants with timm)
from geovit.channels import resolve_channels
from geovit.data.change_transforms import Normalize
from geovit.data.torchgeo_compat import TorchgeoChangeDataset, to_torchgeo_change_sample, torchgeo_levircd
from geovit.errors import DataError, GeovitError


def _trainer(**kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_epochs=1, num_sanity_val_steps=0, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kwargs)


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_classification_task_trains_a_bound_channelvit_on_torchgeo_so2sat(torchgeo_fixtures):
    root = torchgeo_fixtures / "so2sat"
    bands = So2Sat.BAND_SETS["s2"]
    train = So2Sat(str(root), version="2", split="train", bands=bands)
    val = So2Sat(str(root), version="2", split="validation", bands=bands)
    torch.manual_seed(0)
    task = ClassificationTask(model="channelvit_tiny_patch8.so2sat", in_channels=18, num_classes=17,
                              lr=1e-3)
    model = task.model
    assert type(model).__name__ == "ChannelViT" and model.in_chans == 18
    assert model.pretrained_cfg["channels"][8] == "S2_B02"
    x = train[0]["image"][None]
    assert x.shape == (1, 10, 32, 32)
    with pytest.raises(GeovitError, match="x has 10 channels but the model's channel table has 18"):
        model(x)  # what torchgeo would call: refused, not silently given Sentinel-1's embeddings
    ids = model.bind_channels(list(bands))
    assert ids == list(resolve_channels("sentinel2").ids)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x, channels=ids))
    model(x).square().sum().backward()  # gradients reach exactly the bound bands' embeddings
    grad = model.patch_embed.channel_embed.weight.grad
    assert not grad[:8].any() and grad[8:].abs().sum(dim=1).gt(0).all()
    model.zero_grad(set_to_none=True)
    before = _params(model)
    trainer = _trainer()
    trainer.fit(task, DataLoader(train, batch_size=2), DataLoader(val, batch_size=2))
    assert torch.isfinite(trainer.callback_metrics["train_loss"]) and "val_OverallAccuracy" in trainer.callback_metrics
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert {"patch_embed.channel_embed.weight", "patch_embed.proj.weight", "head.weight"} <= set(changed)


def test_geovit_levircd_samples_equal_torchgeo_levircd(torchgeo_fixtures):
    root = torchgeo_fixtures / "levircd" / "levircd"
    for split in ("train", "test"):
        ours, theirs = torchgeo_levircd(root, split, extract=False), TorchgeoLEVIRCD(str(root), split)
        assert len(ours) == len(theirs) == 2
        for i in range(len(theirs)):
            a, b = ours[i], theirs[i]
            assert a.keys() == b.keys() == {"image", "mask"}
            for key in a:
                assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (split, i, key)


def test_torchgeo_change_sample_checks():
    sample = {"image": torch.zeros(2, 3, 4, 4), "mask": torch.ones(4, 4, dtype=torch.uint8), "name": "a"}
    out = to_torchgeo_change_sample(sample)
    assert out["mask"].shape == (1, 4, 4) and out["mask"].dtype == torch.long and out["name"] == "a"
    assert to_torchgeo_change_sample(out)["mask"].shape == (1, 4, 4)  # idempotent
    with pytest.raises(DataError, match=r"'image' has shape \(3, 4, 4\), expected \(2, C, H, W\)"):
        to_torchgeo_change_sample({"image": torch.zeros(3, 4, 4), "mask": torch.zeros(4, 4)})
    with pytest.raises(DataError, match=r"'mask' has shape \(4, 5\)"):
        to_torchgeo_change_sample({"image": torch.zeros(2, 3, 4, 4), "mask": torch.zeros(4, 5, dtype=torch.long)})
    with pytest.raises(DataError, match="missing keys"):
        TorchgeoChangeDataset([{"image": torch.zeros(2, 3, 4, 4)}])[0]


class GeovitChangeTask(ChangeDetectionTask):
    """torchgeo's change task with geovit's ChangeViT as its model (logits, one (B, 2, C, H, W) input)."""

    def configure_models(self) -> None:
        self.model = timm.create_model("changevit_tiny", embed_dim=48, depth=1,
                                       num_classes=self.hparams["num_classes"] or 1, logits=True)


def test_change_detection_task_steps_geovit_changevit(torchgeo_fixtures):
    root = torchgeo_fixtures / "levircd" / "levircd"
    train = torchgeo_levircd(root, "train", transforms=Normalize(), extract=False)
    val = torchgeo_levircd(root, "val", transforms=Normalize(), extract=False)
    torch.manual_seed(0)
    task = GeovitChangeTask(model="changevit", in_channels=3, task="binary", loss="bce")
    batch = next(iter(DataLoader(train, batch_size=2)))
    assert batch["image"].shape == (2, 2, 3, 32, 32) and batch["mask"].shape == (2, 1, 32, 32)
    with torch.no_grad():
        assert task.model.eval()(batch["image"]).shape == (2, 1, 32, 32)
    before = _params(task.model)
    trainer = _trainer()
    trainer.fit(task, DataLoader(train, batch_size=2), DataLoader(val, batch_size=2))
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train_loss"]) and {"val_loss", "val_BinaryF1Score"} <= set(metrics)
    after = task.model.state_dict()
    assert not torch.equal(before["decoder.head.1.weight"], after["decoder.head.1.weight"])
    assert not torch.equal(before["vit.pos_embed"], after["vit.pos_embed"])
