"""Rollout error metrics: both official scalings, invariances, channel/trajectory reductions."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geovit.errors import GeovitError
from pdes.metrics import (channel_mean, error_curve, error_scale_by_size, error_scale_by_std, last_step_error,
                          rmse, scaled_error)


def test_hand_computed_values():
    target = torch.tensor([[1.0, 3.0], [1.0, 3.0]]).reshape(1, 1, 1, 2, 2)  # mean 2, unbiased std 2/sqrt(3)
    pred = target + torch.tensor([[1.0, -1.0], [1.0, 1.0]]).reshape(1, 1, 1, 2, 2)
    assert rmse(pred, target).item() == pytest.approx(1.0)
    assert error_scale_by_std(pred, target).item() == pytest.approx(math.sqrt(3) / 2, rel=1e-6)
    assert error_scale_by_size(pred, target).item() == pytest.approx(1 / math.sqrt(5), rel=1e-6)


def test_floors():
    flat = torch.full((1, 1, 1, 3, 3), 2.0)  # std 0 -> divide by 1e-4
    assert error_scale_by_std(flat + 1e-3, flat).item() == pytest.approx(10.0, rel=1e-3)
    zero = torch.zeros(1, 1, 1, 3, 3)  # RMS 0 -> divide by 1
    assert error_scale_by_size(zero + 0.5, zero).item() == pytest.approx(0.5)
    assert torch.equal(scaled_error(flat + 1, flat, "scale_by_size"), error_scale_by_size(flat + 1, flat))
    with pytest.raises(GeovitError, match="scheme 'mae'"):
        scaled_error(flat, flat, "mae")
    with pytest.raises(GeovitError, match="equal shapes"):
        rmse(flat, flat[..., :2])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), a=st.floats(0.05, 50.0), b=st.floats(-100.0, 100.0))
def test_scaling_invariances(seed, a, b):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(2, 3, 2, 6, 6, generator=g, dtype=torch.float64)
    pred = target + 0.3 * torch.randn(target.shape, generator=g, dtype=torch.float64)
    # std-scaled error: invariant to a change of units and offset of the field
    assert torch.allclose(error_scale_by_std(a * pred + b, a * target + b), error_scale_by_std(pred, target), rtol=1e-9)
    # size-scaled (relative L2) error: invariant to a change of units only
    assert torch.allclose(error_scale_by_size(a * pred, a * target), error_scale_by_size(pred, target), rtol=1e-9)
    # RMSE itself is shift invariant and scales with |a|
    assert torch.allclose(rmse(a * pred + b, a * target + b), a * rmse(pred, target), rtol=1e-9)
    # the spatial arrangement does not matter (permuting pixels identically)
    perm = torch.randperm(36, generator=g)
    flat = lambda x: x.flatten(-2)[..., perm].reshape(x.shape)  # noqa: E731
    assert torch.allclose(error_scale_by_std(flat(pred), flat(target)), error_scale_by_std(pred, target), rtol=1e-9)
    assert torch.all(error_scale_by_std(target, target) == 0)


def test_reductions_over_channels_time_and_trajectories():
    err = torch.tensor([[[1.0, 3.0, 100.0], [2.0, 4.0, 100.0]],
                        [[5.0, 7.0, 100.0], [6.0, 0.0, 100.0]]])  # (B=2, T=2, C=3); channel 2 masked
    mask = torch.tensor([1.0, 1.0, 0.0])
    assert channel_mean(err, mask).tolist() == [[2.0, 3.0], [6.0, 3.0]]
    assert last_step_error(err, mask).tolist() == [3.0, 3.0]
    per_traj_mask = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert last_step_error(err, per_traj_mask).tolist() == [2.0, 0.0]
    mean, std = error_curve(err, mask)
    assert mean.tolist() == [4.0, 3.0] and std.tolist() == [2.0, 0.0]
    with pytest.raises(GeovitError, match="no active channel"):
        channel_mean(err, torch.zeros(3))
    with pytest.raises(GeovitError, match="channel_mask"):
        channel_mean(err, torch.ones(4))
