"""Lightning task for bitemporal change detection with ChangeViT (specs/changevit.md §2).

Recipe of the reference code: Adam (L2 weight decay 1e-4, betas 0.9/0.99, lr 2e-4), linear
warm-up over the first 200 steps from 0.1x, then poly decay ``(1 - step/max_steps)^0.9``; loss
BCE + (1 - Dice) over the batch. One difference on purpose: the reference keeps the checkpoint
with the best *test* F1; geovit selects on the **val** split (``val_f1``) and never looks at test
during training. Pixels whose mask is :data:`~geovit.data.change_transforms.IGNORE_INDEX`
(padding, overlap owned by another tile) count neither in the loss nor in the metrics.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch

from geovit.data.change_transforms import IGNORE_INDEX, normalize_rgb
from geovit.errors import CheckpointError
from geovit.models import create_model
from geovit.tasks.change_metrics import ChangeConfusion, bce_dice_loss_from_logits, change_scores

FAMILY = "changevit"
#: metric logged each validation epoch and used to pick the best checkpoint
MONITOR = "val_f1"


class ChangeDetectionTask(L.LightningModule):
    """ChangeViT trained with the reference recipe; ``family="changevit"`` marks its checkpoints."""

    def __init__(self, model: str = "changevit_tiny", model_kwargs: dict | None = None, lr: float = 2e-4,
                 weight_decay: float = 1e-4, betas: Sequence[float] = (0.9, 0.99), warmup_steps: int = 200,
                 poly_power: float = 0.9, normalization: str = "imagenet", threshold: float = 0.5,
                 tile: int = 256, family: str = FAMILY):
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(model, **(model_kwargs or {}))
        self.val_confusion = ChangeConfusion(threshold=threshold, from_logits=True)

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
        loss = bce_dice_loss_from_logits(logits[valid], mask[valid].float())
        return loss, logits, valid

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._loss_and_logits(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["mask"]))
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_confusion.reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, logits, valid = self._loss_and_logits(batch)
        self.val_confusion.update(logits, batch["mask"] == 1, valid=valid)
        self.log("val_loss", loss, batch_size=len(batch["mask"]))

    def on_validation_epoch_end(self) -> None:
        # one confusion matrix over every rank's pixels (under DDP each rank saw a shard)
        matrix = self.trainer.strategy.reduce(self.val_confusion.matrix.to(self.device), reduce_op="sum")
        scores = change_scores(matrix.cpu())
        for key in ("precision", "recall", "f1", "iou", "oa", "kappa"):
            self.log(f"val_{key}", scores[key], prog_bar=key == "f1")

    # ------------------------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.Adam(self.parameters(), lr=hp.lr, betas=tuple(hp.betas), eps=1e-8, weight_decay=hp.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))

        def factor(step: int) -> float:
            if step < hp.warmup_steps:
                return 0.1 + 0.9 * (step + 1) / hp.warmup_steps
            return max(0.0, 1 - step / total) ** hp.poly_power

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


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


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A ``.ckpt`` file, or a training output folder (its ``checkpoints/best-*.ckpt``, else ``last.ckpt``)."""
    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        best = sorted(folder.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
        if best:
            return best[-1]
        if (folder / "last.ckpt").is_file():
            return folder / "last.ckpt"
        raise CheckpointError(f"{path}: folder holds no best-*.ckpt or last.ckpt")
    return path


def load_task(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> ChangeDetectionTask:
    """Rebuild a trained :class:`ChangeDetectionTask` from a geovit change checkpoint (eval mode)."""
    from geovit.training import read_lightning_checkpoint

    path = find_checkpoint(path)
    hp, state = read_lightning_checkpoint(path, FAMILY)
    known = ChangeDetectionTask.__init__.__code__.co_varnames
    task = ChangeDetectionTask(**{k: v for k, v in hp.items() if k in known})
    try:
        task.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path}: weights do not fit {hp.get('model')} {hp.get('model_kwargs')}: {err}") from None
    return task.to(map_location).eval()


def hparams_summary(task: ChangeDetectionTask) -> dict[str, Any]:
    hp = task.hparams
    return {"model": hp.model, "model_kwargs": dict(hp.model_kwargs or {}), "normalization": hp.normalization,
            "threshold": hp.threshold, "tile": hp.tile}
