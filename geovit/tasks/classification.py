"""Supervised multi-channel classification (ChannelViT + HCS), as the paper's supervised recipe.

Bao et al., "Channel Vision Transformers", ICLR 2024, §3 and specs/channelvit.md §6:
cross-entropy on the CLS feature through one linear layer; AdamW with weight decay on weights
only (biases and 1-D parameters excluded); linear warm-up then cosine decay of the learning rate.
Hierarchical Channel Sampling happens inside the model in training mode.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from geovit.models import create_model
from geovit.tasks.base import BaseTask, build_optimizer, build_scheduler


class ClassificationTask(BaseTask):
    """``model(image, channels=ids)`` → logits; cross-entropy; accuracy (``val_acc`` picks the best).

    Args:
        model: registered ChannelViT variant.
        model_kwargs: constructor overrides (``in_chans`` = size of the channel table).
        channel_ids: ids (in ``channel_table``) of the bands the model is trained on.
        channel_table: name of the channel table (``geovit.channels.TABLES``).
        num_classes: classes of the head.
        lr: peak learning rate.
        weight_decay: AdamW decay on weights.
        warmup_steps: linear warm-up steps.
        total_steps: length of the cosine schedule.
        data: where the model was trained (default data of ``geovit evaluate``).
        version: So2Sat version of ``data``.
        synthetic: whether ``data`` is a synthetic set.
        seed: seed of the per-step RNG re-seeding (exact resume).
    """

    family = "channelvit"
    monitor = "val_acc"

    def __init__(self, model: str = "channelvit_small_patch8", model_kwargs: dict[str, Any] | None = None,
                 channel_ids: Sequence[int] = (), channel_table: str = "so2sat", num_classes: int = 17,
                 lr: float = 5e-4, weight_decay: float = 0.04, warmup_steps: int = 100, total_steps: int = 1000,
                 data: str | None = None, version: str = "2", synthetic: bool = False, seed: int = 0):
        super().__init__()

    def configure_models(self) -> None:
        hp = self.hparams
        self.model = create_model(hp.model, **{**dict(hp.model_kwargs or {}), "num_classes": hp.num_classes})

    def configure_losses(self) -> None:
        self.criterion = nn.CrossEntropyLoss()

    def configure_metrics(self) -> None:
        metrics = MetricCollection({"acc": MulticlassAccuracy(self.hparams.num_classes, average="micro")})
        self.train_metrics = metrics.clone(prefix="train_")
        self.val_metrics = metrics.clone(prefix="val_")
        self.test_metrics = metrics.clone(prefix="test_")

    def forward(self, image: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes) of ``image`` (B, C, H, W) with channel ids ``channels`` (B, C)."""
        return self.model(image, channels)

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        logits = self(batch["image"], batch["channels"])
        loss = self.criterion(logits, batch["label"])
        metrics = getattr(self, f"{stage}_metrics")
        metrics(logits, batch["label"])
        bs = batch["label"].shape[0]
        self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=bs, sync_dist=stage != "train")
        self.log_dict(metrics, prog_bar=True, batch_size=bs)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self):
        hp = self.hparams
        opt = build_optimizer(self.model, name="adamw", lr=hp.lr, weight_decay=hp.weight_decay)
        return {"optimizer": opt, "lr_scheduler": build_scheduler(opt, "warmup_cosine", warmup_steps=hp.warmup_steps,
                                                                    total_steps=hp.total_steps)}
