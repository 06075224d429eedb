"""Change-detection loss and metrics: reference values, hand-worked cases, invariants."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geovit.errors import GeovitError
from geovit.tasks.change_metrics import (BCEDiceLoss, ChangeConfusion, bce_dice_loss,
                                         bce_dice_loss_from_logits, change_scores)

OFFICIAL_NAMES = {"precision": "precision", "recall": "recall", "f1": "F1", "iou": "IoU", "oa": "OA", "kappa": "Kappa"}


@pytest.fixture(scope="module")
def case(conformance):
    return conformance("changevit")


def test_reference_confusion_matrix_and_scores_reproduced(case):
    ref = case.config["reference_loss_and_metrics_on_this_output"]
    confusion = ChangeConfusion()
    # the raw 0/255 ground truth is accepted as is (any non-zero = change, like ceil(label/255))
    confusion.update(torch.from_numpy(case.io["prob"]), torch.from_numpy(case.io["synthetic_gt_uint8"]))
    scores = confusion.compute()
    assert scores["confusion"] == ref["confusion_matrix_[gt][pred]"]
    for ours, theirs in OFFICIAL_NAMES.items():
        assert scores[ours] == pytest.approx(ref["scores (model.metric_tool.cm2score)"][theirs], rel=0, abs=1e-12)


def test_reference_scores_from_logits(case):
    confusion = ChangeConfusion(from_logits=True)
    confusion.update(torch.from_numpy(case.io["logits"]), torch.from_numpy(case.io["synthetic_gt_uint8"] // 255))
    assert confusion.compute()["confusion"] == case.config["reference_loss_and_metrics_on_this_output"]["confusion_matrix_[gt][pred]"]


def test_reference_loss_reproduced(case):
    ref = case.config["reference_loss_and_metrics_on_this_output"]["BCEDiceLoss(prob, target)"]
    target = torch.from_numpy(np.ceil(case.io["synthetic_gt_uint8"] / 255.0)).float()
    prob, logits = torch.from_numpy(case.io["prob"]), torch.from_numpy(case.io["logits"])
    assert bce_dice_loss(prob, target).item() == pytest.approx(ref, abs=1e-6)
    assert BCEDiceLoss(from_logits=True)(logits, target).item() == pytest.approx(ref, abs=1e-5)


def test_loss_hand_worked_and_dice_over_whole_batch():
    # one pixel p=0.5/t=1, one p=0.5/t=0: BCE = ln 2, Dice = (1 + s) / (2 + s)
    prob = torch.tensor([[[[0.5]]], [[[0.5]]]])
    target = torch.tensor([[[[1.0]]], [[[0.0]]]])
    s = 1e-5
    want = math.log(2) + 1 - (1 + s) / (2 + s)
    assert bce_dice_loss(prob, target).item() == pytest.approx(want, abs=1e-6)
    # per-image Dice: (1+s)/(1.5+s) and s/(0.5+s) ~ 0 -> mean loss 1.36, not 1.19
    per_image = sum(bce_dice_loss(prob[i:i + 1], target[i:i + 1]) for i in range(2)) / 2
    assert per_image.item() == pytest.approx(math.log(2) + 1 - ((1 + s) / (1.5 + s) + s / (0.5 + s)) / 2, abs=1e-6)
    with pytest.raises(GeovitError, match="different numbers of pixels"):
        bce_dice_loss(prob, torch.zeros(3))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-12, 12), min_size=4, max_size=40), st.integers(0, 2**16))
def test_loss_from_logits_equals_loss_on_probabilities(logits, seed):
    logits = torch.tensor(logits, dtype=torch.float64).reshape(1, 1, 1, -1)
    target = (torch.rand(logits.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) > 0.5).double()
    a, b = bce_dice_loss(logits.sigmoid(), target), bce_dice_loss_from_logits(logits, target)
    assert a.item() == pytest.approx(b.item(), abs=1e-5)
    assert a.item() >= 0


counts = st.integers(0, 10**7)
matrices = st.tuples(counts, counts, counts, counts).map(lambda t: np.array(t, dtype=np.int64).reshape(2, 2))


@settings(max_examples=200, deadline=None)
@given(matrices)
def test_score_invariants(cm):
    s = change_scores(cm)
    p, r = s["precision"], s["recall"]
    for key in ("precision", "recall", "f1", "iou", "oa"):
        assert 0.0 <= s[key] <= 1.0
    assert -1.0 <= s["kappa"] <= 1.0
    assert s["f1"] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0, abs=1e-6)
    assert s["iou"] <= s["f1"] + 1e-6  # equality up to the float32-eps guards
    assert s["f1"] == pytest.approx(2 * s["iou"] / (1 + s["iou"]), abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(matrices)
def test_swap_symmetries(cm):
    s = change_scores(cm)
    # exchanging ground truth and prediction swaps precision and recall; F1, IoU, OA, kappa stay
    t = change_scores(cm.T)
    assert (t["precision"], t["recall"]) == pytest.approx((s["recall"], s["precision"]), abs=1e-9)
    for key in ("f1", "iou", "oa", "kappa"):
        assert t[key] == pytest.approx(s[key], abs=1e-9)
    # relabelling change <-> no change keeps the class-symmetric OA and kappa
    u = change_scores(cm[::-1, ::-1])
    assert u["oa"] == pytest.approx(s["oa"], abs=1e-9)
    assert u["kappa"] == pytest.approx(s["kappa"], abs=1e-9)


def test_degenerate_matrices():
    perfect_empty = change_scores([[100, 0], [0, 0]])  # no change anywhere, none predicted
    assert perfect_empty["oa"] == pytest.approx(1.0) and perfect_empty["kappa"] == 1.0
    assert perfect_empty["f1"] == 0.0 and perfect_empty["precision"] == 0.0
    inverse = change_scores([[0, 50], [50, 0]])
    assert inverse["kappa"] == pytest.approx(-1.0) and inverse["oa"] == 0.0
    assert change_scores(np.zeros((2, 2)))["oa"] == 0.0
    with pytest.raises(GeovitError, match="2x2 confusion matrix"):
        change_scores(np.ones((3, 3)))


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.integers(1, 12), st.integers(0, 2**16))
def test_accumulator_counts_and_additivity(batches, side, seed):
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(batches, 1, side, side, generator=g)
    gts = (torch.rand(batches, side, side, generator=g) > 0.6).long()  # (B, H, W) masks are accepted
    whole, parts = ChangeConfusion(), ChangeConfusion()
    whole.update(probs, gts)
    for i in range(batches):
        parts.update(probs[i:i + 1], gts[i:i + 1])
    assert whole.compute() == parts.compute()
    pred, gt = probs.numpy().ravel() > 0.5, gts.numpy().ravel() == 1
    want = [[int((~gt & ~pred).sum()), int((~gt & pred).sum())], [int((gt & ~pred).sum()), int((gt & pred).sum())]]
    assert whole.compute()["confusion"] == want
    hard = ChangeConfusion()
    hard.update(torch.from_numpy(pred).reshape(probs.shape), gts * 255)
    assert hard.compute()["confusion"] == want


def test_accumulator_valid_mask_threshold_and_reset():
    prob = torch.tensor([[[[0.2, 0.6, 0.9, 0.4]]]])
    gt = torch.tensor([[[[0, 1, 1, 1]]]])
    c = ChangeConfusion(threshold=0.5)
    c.update(prob, gt, valid=torch.tensor([[[[1, 1, 0, 1]]]]))
    assert c.compute()["confusion"] == [[1, 0], [1, 1]]
    c.reset()
    c.update(prob, gt)
    assert c.compute()["confusion"] == [[1, 0], [1, 2]]
    strict = ChangeConfusion(threshold=0.7)
    strict.update(prob, gt)
    assert strict.compute()["confusion"] == [[1, 0], [2, 1]]
    with pytest.raises(GeovitError, match=r"prediction \(1, 1, 1, 4\) and target \(3,\)"):
        c.update(prob, torch.zeros(3))
