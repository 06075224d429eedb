"""Supervised multi-channel classification (ChannelViT + HCS), as the paper's supervised recipe.

specs/channelvit.md §6: cross-entropy on the CLS feature through one linear layer; AdamW with
weight decay on weights only (biases and 1-D parameters excluded); linear warm-up then cosine
decay of the learning rate. HCS happens inside the model in training mode.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import lightning as L
import torch
import torch.nn.functional as F

from geovit.models import create_model


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay for ≥2-D weights; none for biases and 1-D parameters (norms)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.002) -> float:
    """LR multiplier: linear warm-up from 0 over ``warmup`` steps, then cosine to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class ChannelClassifier(L.LightningModule):
    """Lightning module: ``model(image, channels=ids)`` → logits; CE loss; accuracy."""

    def __init__(
        self,
        model: str = "channelvit_small_patch8",
        model_kwargs: dict[str, Any] | None = None,
        channel_ids: Sequence[int] = (),
        channel_table: str = "so2sat",
        num_classes: int = 17,
        lr: float = 5e-4,
        weight_decay: float = 0.04,
        warmup_steps: int = 100,
        total_steps: int = 1000,
        family: str = "channelvit",
        data: str | None = None,
        version: str = "2",
        synthetic: bool = False,
    ):
        """``data``/``version``/``synthetic`` record where the model was trained (defaults for evaluate)."""
        super().__init__()
        self.save_hyperparameters()
        kwargs = dict(model_kwargs or {})
        kwargs["num_classes"] = num_classes
        self.model = create_model(model, **kwargs)

    def forward(self, image: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        return self.model(image, channels)

    def _step(self, batch, stage: str):
        logits = self(batch["image"], batch["channels"])
        loss = F.cross_entropy(logits, batch["label"])
        acc = (logits.argmax(1) == batch["label"]).float().mean()
        bs = batch["label"].shape[0]
        self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=bs, sync_dist=stage != "train")
        self.log(f"{stage}_acc", acc, prog_bar=True, batch_size=bs, sync_dist=stage != "train")
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(param_groups(self.model, hp.weight_decay), lr=hp.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, hp.warmup_steps, hp.total_steps)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def load_classifier(path, map_location="cpu") -> ChannelClassifier:
    """Rebuild a :class:`ChannelClassifier` from a geovit ``*.ckpt`` (weights_only read)."""
    from geovit.training import read_lightning_checkpoint

    hp, state = read_lightning_checkpoint(path, "channelvit")
    module = ChannelClassifier(**hp)
    module.load_state_dict(state)
    return module.eval().to(map_location)
