"""Change-detection loss and metrics, as ChangeViT trains and scores (specs/changevit.md §1.5, §2).

* :func:`bce_dice_loss` — ``BCE(prob, target) + (1 - Dice)``, Dice over the whole batch with
  smoothing 1e-5, BCE on probabilities (mean over pixels), weights 1 and 1, exactly as the
  reference ``BCEDiceLoss``. :func:`bce_dice_loss_from_logits` is the same quantity computed from
  logits (numerically safer, autocast-friendly).
* :func:`change_scores` — precision, recall, F1, IoU of the *change* class, overall accuracy and
  Cohen's κ from one 2x2 confusion matrix ``cm[gt][pred]``. Denominators carry float32 eps as the
  reference metric tool (BIT / A2Net ``cm2score``), so empty classes give 0 rather than NaN
  (κ's chance term has none, as there).
* :class:`ChangeConfusion` — accumulates that confusion matrix over every pixel of a split; the
  official protocol scores the split from the summed matrix, not as a mean of per-image scores.
"""
from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric
import torch.nn.functional as F

from geovit.errors import GeovitError

#: Added to every denominator, as the reference metric code does.
EPS = float(np.finfo(np.float32).eps)
#: Smoothing of the batch Dice coefficient in the reference loss.
DICE_SMOOTH = 1e-5


def _dice(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    inter = (prob * target).sum()
    return (2 * inter + DICE_SMOOTH) / (prob.sum() + target.sum() + DICE_SMOOTH)


def _check_pair(pred: torch.Tensor, target: torch.Tensor, what: str) -> torch.Tensor:
    if pred.numel() != target.numel():
        raise GeovitError(f"{what}: prediction {tuple(pred.shape)} and target {tuple(target.shape)} "
                          "hold different numbers of pixels")
    return target.reshape(pred.shape).to(pred.dtype)


def bce_dice_loss(prob: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Reference loss on probabilities (B, 1, H, W); ``target`` in {0, 1} of the same size."""
    target = _check_pair(prob, target, "bce_dice_loss")
    return F.binary_cross_entropy(prob, target) + 1 - _dice(prob, target)


def bce_dice_loss_from_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """:func:`bce_dice_loss` of ``sigmoid(logits)``, with the BCE term taken from the logits."""
    target = _check_pair(logits, target, "bce_dice_loss_from_logits")
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    return bce + 1 - _dice(logits.float().sigmoid(), target.float())


class BCEDiceLoss(torch.nn.Module):
    """Module form of the reference loss; ``from_logits=True`` takes logits instead of probabilities."""

    def __init__(self, from_logits: bool = False):
        super().__init__()
        self.from_logits = from_logits

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """BCE + Dice of ``pred`` (probabilities, or logits when ``from_logits``) against the 0/1 ``target``."""
        return (bce_dice_loss_from_logits if self.from_logits else bce_dice_loss)(pred, target)


def change_scores(cm) -> dict[str, float]:
    """Scores of the change class from a 2x2 confusion matrix ``cm[gt][pred]`` (counts).

    Returns ``precision, recall, f1, iou, oa, kappa`` (floats in [0, 1], κ in [-1, 1]).
    """
    cm = np.asarray(cm.cpu() if isinstance(cm, torch.Tensor) else cm, dtype=np.float64)
    if cm.shape != (2, 2) or (cm < 0).any():
        raise GeovitError(f"change_scores: expected a 2x2 confusion matrix of non-negative counts, got {cm.shape}")
    (tn, fp), (fn, tp) = cm
    total = cm.sum()
    precision = tp / (tp + fp + EPS)
    recall = tp / (tp + fn + EPS)
    f1 = 2 * precision * recall / (precision + recall + EPS)
    iou = tp / (tp + fp + fn + EPS)
    oa = (tp + tn) / (total + EPS)
    # Agreement expected by chance; no eps here (as the reference). It is 1 only when ground truth
    # and prediction are both constant and equal: perfect agreement, κ := 1 instead of 0/0.
    chance = ((tn + fp) * (tn + fn) + (fn + tp) * (fp + tp)) / total ** 2 if total else 0.0
    kappa = (oa - chance) / (1 - chance) if chance < 1 else 1.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "iou": float(iou),
            "oa": float(oa), "kappa": float(kappa)}


def _hard(pred: torch.Tensor, threshold: float, from_logits: bool) -> torch.Tensor:
    if pred.dtype == torch.bool or not pred.is_floating_point():
        return pred != 0  # already a hard 0/1 map
    return (pred.float().sigmoid() if from_logits else pred) > threshold


class ChangeConfusion(Metric):
    """Confusion matrix of the change class accumulated over all pixels of many batches.

    A torchmetrics ``Metric``: under DDP the counts are summed over ranks before scoring.
    ``update(pred, target)`` takes probabilities (or logits when ``from_logits=True``, or a hard
    bool/int map) and targets where any non-zero value means change (0/1 or 0/255 masks);
    prediction rule ``prob > threshold`` (0.5 in the reference). ``valid`` (optional, same
    pixels) excludes e.g. nodata. ``compute()`` returns :func:`change_scores` of the sum plus
    ``"confusion"`` (the 2x2 ``[gt][pred]`` counts as nested lists).

    Args:
        threshold: change where the probability is above it.
        from_logits: ``pred`` holds logits (a sigmoid is applied first).
    """

    full_state_update = False

    def __init__(self, threshold: float = 0.5, from_logits: bool = False):
        super().__init__()
        self.threshold = threshold
        self.from_logits = from_logits
        self.add_state("matrix", default=torch.zeros(2, 2, dtype=torch.int64), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        pred = _hard(pred, self.threshold, self.from_logits)
        gt = _check_pair(pred, target != 0, "ChangeConfusion.update")
        index = 2 * gt.long() + pred.long()
        if valid is not None:
            index = index[_check_pair(pred, valid != 0, "ChangeConfusion.update(valid)")]
        counts = torch.bincount(index.flatten(), minlength=4)
        self.matrix += counts.to(self.matrix.device).reshape(2, 2)

    def compute(self) -> dict:
        return {**change_scores(self.matrix), "confusion": self.matrix.tolist()}
