"""VICON training as a geovit task (Cao et al., "VICON", specs/vicon.md §1.8).

Every optimisation step concatenates one mini-batch of prompts from **each** data set (balanced
by data set, not by size — the official loop; :class:`pdes.datamodule.VICONDataModule`), computes
the official loss (:func:`pdes.losses.vicon_loss`: normalised masked MSE on pairs ``>= min_ex``,
interior pixels) and takes an AdamW step with linear warm-up then cosine decay to 0 (the official
schedule, which is timm's ``CosineLRScheduler``; the clipping of the gradient norm at 1.0 is set
on the Trainer).

Public API::

    task = VICONTask(model=dict(embed_dim=64, ...), lr=1e-4, weight_decay=1e-4,
                     warmup_steps=100, total_steps=1000, min_ex=5)
    task.model                        # the pdes.vicon.VICON
    load_trained(path) -> VICON       # from a geovit VICON *.ckpt (or geovit safetensors)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from geovit.tasks.base import BaseTask, build_optimizer, build_scheduler
from pdes.losses import vicon_loss
from pdes.vicon import VICON, build

FAMILY = "vicon"


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


class VICONTask(BaseTask):
    """VICON + its official objective and optimiser; ``val_loss`` picks the best checkpoint.

    Args:
        model: VICON constructor config.
        lr: peak learning rate.
        weight_decay: AdamW weight decay (all parameters, as the official code).
        warmup_steps: linear warm-up steps from 0.
        total_steps: length of the cosine schedule.
        min_ex: smallest number of example pairs a loss term uses.
        datasets: the data sets trained on (recorded for the record).
        seed: seed of the per-step RNG re-seeding (exact resume).
    """

    family = FAMILY
    monitor = "val_loss"
    monitor_mode = "min"

    def __init__(self, model: Mapping[str, Any], lr: float = 1e-4, weight_decay: float = 1e-4,
                 warmup_steps: int = 20_000, total_steps: int = 200_000, min_ex: int = 5,
                 datasets: Sequence[str] = (), seed: int = 0):
        super().__init__()

    def configure_models(self) -> None:
        self.model: VICON = build(dict(self.hparams.model))

    def configure_losses(self) -> None:
        self.criterion = vicon_loss

    def _loss(self, batch) -> torch.Tensor | None:
        prompts = concat_prompts(batch)
        if prompts is None:
            return None
        cond, qoi, mask = prompts
        return self.criterion(self.model, cond, qoi, mask, min_ex=self.hparams.min_ex)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=1)
        return loss

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0):
        loss = self._loss(batch)
        if loss is not None:
            self.log("val_loss", loss, prog_bar=True, batch_size=1, add_dataloader_idx=False, sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        opt = build_optimizer(self.model, name="adamw", lr=hp.lr, weight_decay=hp.weight_decay,
                              decay_norms_and_biases=True)
        return {"optimizer": opt, "lr_scheduler": build_scheduler(opt, "cosine", warmup_steps=hp.warmup_steps,
                                                                    total_steps=hp.total_steps)}


def load_trained(path: str | Path) -> VICON:
    """The VICON of a geovit training checkpoint (``*.ckpt``) or geovit safetensors file, eval mode.

    Raises:
        CheckpointError: a foreign file, another family, or weights that do not fit.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from geovit.hub import load_converted

        return load_converted(path, family=FAMILY)
    return VICONTask.load_from_checkpoint(path).model
