"""Lightning task for bitemporal change detection with ChangeViT (specs/changevit.md §2).

Recipe of the reference code: Adam (L2 weight decay 1e-4, betas 0.9/0.99, lr 2e-4), linear
warm-up over the first 200 steps from 0.1x, then poly decay ``(1 - step/max_steps)^0.9``; loss
BCE + (1 - Dice) over the batch. One difference on purpose: the reference keeps the checkpoint
with the best *test* F1; geovit selects on the **val** split (``val_f1``) and never looks at test
during training. Pixels whose mask is :data:`~geovit.data.change_transforms.IGNORE_INDEX`
(padding, overlap owned by another tile) count neither in the loss nor in the metrics.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import lightning as L
import torch

from geovit.data.change_transforms import IGNORE_INDEX, normalize_rgb
from geovit.models import create_model
from geovit.tasks.base import BaseTask, build_optimizer, build_scheduler
from geovit.tasks.change_metrics import ChangeConfusion, bce_dice_loss_from_logits

FAMILY = "changevit"
#: metric logged each validation epoch and used to pick the best checkpoint
MONITOR = "val_f1"
#: scores of the change class logged as ``val_<score>`` / ``test_<score>``
SCORES = ("precision", "recall", "f1", "iou", "oa", "kappa")


class ChangeDetectionTask(BaseTask):
    """ChangeViT trained with the reference recipe; ``val_f1`` picks the best checkpoint.

    Args:
        model: registered ChangeViT variant.
        model_kwargs: constructor overrides.
        lr: Adam learning rate.
        weight_decay: Adam L2 weight decay.
        betas: Adam betas.
        warmup_steps: warm-up steps (from 0.1× the learning rate).
        poly_power: exponent of the poly decay.
        normalization: input statistics (``imagenet`` or ``half``).
        threshold: change where the probability is above it.
        tile: training tile side (default tile of ``geovit change evaluate``).
        seed: seed of the per-step RNG re-seeding (exact resume).
    """

    family = FAMILY
    monitor = MONITOR

    def __init__(self, model: str = "changevit_tiny", model_kwargs: dict | None = None, lr: float = 2e-4,
                 weight_decay: float = 1e-4, betas: Sequence[float] = (0.9, 0.99), warmup_steps: int = 200,
                 poly_power: float = 0.9, normalization: str = "imagenet", threshold: float = 0.5,
                 tile: int = 256, seed: int = 0):
        super().__init__()

    def configure_models(self) -> None:
        self.model = create_model(self.hparams.model, **(self.hparams.model_kwargs or {}))

    def configure_losses(self) -> None:
        self.criterion = bce_dice_loss_from_logits

    def configure_metrics(self) -> None:
        self.val_confusion = ChangeConfusion(threshold=self.hparams.threshold, from_logits=True)
        self.test_confusion = ChangeConfusion(threshold=self.hparams.threshold, from_logits=True)

    # --------------------------------------------------------------------------------- forward
    def forward(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        """Change probability (B, 1, H, W) of normalised inputs."""
        return self.model(t1, t2)

    @torch.no_grad()
    def predict_raw(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        """Change probability (B, 1, H, W) of raw 0-255 RGB inputs (normalised as in training)."""
        norm = self.hparams.normalization
        return self.model(normalize_rgb(t1, norm), normalize_rgb(t2, norm))

    def _loss_and_logits(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image, mask = batch["image"], batch["mask"]
        logits = self.model.forward_logits(image[:, 0], image[:, 1])[:, 0]
        valid = mask != IGNORE_INDEX
        loss = self.criterion(logits[valid], mask[valid].float())
        return loss, logits, valid

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._loss_and_logits(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["mask"]))
        return loss

    def _eval_step(self, batch: dict, stage: str) -> None:
        loss, logits, valid = self._loss_and_logits(batch)
        getattr(self, f"{stage}_confusion").update(logits, batch["mask"] == 1, valid=valid)
        self.log(f"{stage}_loss", loss, batch_size=len(batch["mask"]), sync_dist=True)

    def _log_scores(self, stage: str) -> None:
        confusion = getattr(self, f"{stage}_confusion")
        scores = confusion.compute()  # one confusion matrix over every rank's pixels
        for key in SCORES:
            self.log(f"{stage}_{key}", scores[key], prog_bar=key == "f1")
        confusion.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_scores("val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")

    # ------------------------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        hp = self.hparams
        opt = build_optimizer(self, name="adam", lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.betas),
                              decay_norms_and_biases=True)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": opt, "lr_scheduler": build_scheduler(opt, "warmup_poly", warmup_steps=hp.warmup_steps,
                                                                    total_steps=total, power=hp.poly_power)}


class ValidationGrid(L.Callback):
    """Each validation epoch, save ``OUT/plots/val_epoch{N}.png``: t1 | t2 | truth | prediction.

    ``samples`` are raw (0-255) tiles; the file is written atomically.
    """

    def __init__(self, samples: list[dict], out_dir: Path):
        self.samples, self.out_dir = samples, Path(out_dir)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: ChangeDetectionTask) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not self.samples:
            return
        import matplotlib.pyplot as plt

        from geovit._io import atomic_savefig
        from geovit.data.levircd import plot_change_grid

        image = torch.stack([s["image"] for s in self.samples]).to(pl_module.device)
        prob = pl_module.predict_raw(image[:, 0], image[:, 1])[:, 0].cpu()
        rows = [{**s, "mask": (s["mask"] == 1).float(), "prediction": p} for s, p in zip(self.samples, prob)]
        fig = plot_change_grid(rows, suptitle=f"validation, epoch {trainer.current_epoch}")
        atomic_savefig(fig, self.out_dir / f"val_epoch{trainer.current_epoch:03d}.png", dpi=80)
        plt.close(fig)
