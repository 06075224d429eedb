"""Lightning training of VICON on several data sets at once (specs/vicon.md §1.8).

Every optimisation step concatenates one mini-batch of prompts from **each** data set (balanced
by data set, not by size — the official loop), computes the official loss
(:func:`pdes.losses.vicon_loss`: normalised masked MSE on pairs ``>= min_ex``, interior pixels)
and takes an AdamW step with linear warm-up then cosine decay to 0 (the official schedule; the
clipping of the gradient norm at 1.0 is set on the Trainer).

Public API::

    module = VICONModule(model=dict(embed_dim=64, ...), lr=1e-4, weight_decay=1e-4,
                         warmup_steps=100, total_steps=1000, min_ex=5)
    module.model                      # the pdes.vicon.VICON
    train_loader = combined_loader(datasets, batch_size=8)   # one batch of each data set per step
    load_trained(path) -> VICON       # from a geovit VICON *.ckpt (or geovit safetensors)
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import lightning as L
import torch

from geovit.errors import CheckpointError
from pdes.losses import vicon_loss
from pdes.vicon import VICON, build

FAMILY = "vicon"


def cosine_with_warmup(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR factor: linear 0 → 1 over ``warmup_steps``, then cosine to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return step / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def concat_prompts(batch: Mapping[str, Any] | Sequence | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Concatenate the per-data-set prompt batches of one step -> (cond, qoi, channel_mask)."""
    if batch is None:
        return None
    parts = [b for b in (batch.values() if isinstance(batch, Mapping) and "cond" not in batch else [batch])
             if b is not None]
    if not parts:
        return None
    return (torch.cat([b["cond"] for b in parts]), torch.cat([b["qoi"] for b in parts]),
            torch.cat([b["channel_mask"] for b in parts]))


class VICONModule(L.LightningModule):
    """VICON + its official objective and optimiser; hyper-parameters carry ``family="vicon"``."""

    def __init__(
        self, model: Mapping[str, Any], lr: float = 1e-4, weight_decay: float = 1e-4,
        warmup_steps: int = 20_000, total_steps: int = 200_000, min_ex: int = 5,
        family: str = FAMILY, datasets: Sequence[str] = (),
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model: VICON = build(dict(model))

    def _loss(self, batch) -> torch.Tensor | None:
        prompts = concat_prompts(batch)
        if prompts is None:
            return None
        cond, qoi, mask = prompts
        return vicon_loss(self.model, cond, qoi, mask, min_ex=self.hparams.min_ex)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=1)
        return loss

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        loss = self._loss(batch)
        if loss is not None:
            self.log("valid/loss", loss, prog_bar=True, batch_size=1, add_dataloader_idx=False)

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: cosine_with_warmup(step, hp.warmup_steps, hp.total_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def combined_loader(datasets, batch_size: int, *, mode: str = "max_size_cycle", shuffle: bool = True,
                    num_workers: int = 0, seed: int = 0):
    """A Lightning ``CombinedLoader`` yielding ``{name: batch}`` with one batch of every data set."""
    from lightning.pytorch.utilities import CombinedLoader

    from pdes.data import multi_dataset_loaders

    loaders = multi_dataset_loaders(datasets, batch_size, shuffle=shuffle, num_workers=num_workers, seed=seed)
    return CombinedLoader(loaders, mode=mode)


def load_trained(path: str | Path) -> VICON:
    """The VICON of a geovit training checkpoint (``*.ckpt``) or geovit safetensors file, eval mode."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from geovit.hub import load_converted

        return load_converted(path, family=FAMILY)
    from geovit.training import read_lightning_checkpoint

    hp, state = read_lightning_checkpoint(path, FAMILY)
    if "model" not in hp:
        raise CheckpointError(f"checkpoint {path}: hyper_parameters lack the VICON 'model' config")
    model = build(hp["model"])
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path}: weights do not fit the stored VICON config ({err})") from None
    return model.eval()
