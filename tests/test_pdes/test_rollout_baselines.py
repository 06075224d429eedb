"""Baselines next to VICON in every rollout report: persistence and the mean of the given frames.

Hand computation on a tiny trajectory (one field, 2 × 2 pixels), the dropped-frame variants, the
rows of ``rollout_errors.csv`` and the plot, and ``geovit pdes rollout`` end to end (an untrained
model: only the baseline columns are checked against numpy).
"""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geovit.errors import GeovitError
from pdes.metrics import SCHEMES
from pdes.plots import rollout_table, write_error_curve, write_table
from pdes.rollout import BASELINES, RolloutResult, evaluate_rollout, given_mean, persistence, rollout
from pdes.vicon import VICON

F0 = [[1.0, 2.0], [3.0, 4.0]]
F1 = [[2.0, 2.0], [2.0, 2.0]]
F2 = [[3.0, 1.0], [1.0, 3.0]]
F3 = [[0.0, 4.0], [4.0, 0.0]]


def tiny_trajectory() -> torch.Tensor:
    """(1, 4, 2, 2, 2): one field slot and a node-type slot (all 0), frames F0..F3."""
    field = torch.tensor([F0, F1, F2, F3])
    return torch.stack([field, torch.zeros_like(field)], dim=1)[None]


def by_hand(pred, gt):
    """(scale_by_std, scale_by_size) of one 2×2 frame, written out."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    rmse = math.sqrt(((pred - gt) ** 2).sum() / 4)
    mean = gt.sum() / 4
    std = math.sqrt(((gt - mean) ** 2).sum() / 3)  # unbiased
    rms = math.sqrt((gt ** 2).sum() / 4)
    return rmse / std, rmse / rms


def test_baselines_of_a_tiny_trajectory_by_hand():
    traj = tiny_trajectory()
    pers, mean = persistence(traj, 2), given_mean(traj, 2)
    assert pers.shape == mean.shape == (1, 2, 2, 2, 2)
    np.testing.assert_array_equal(pers[0, :, 0].numpy(), [F1, F1])
    np.testing.assert_array_equal(mean[0, 0, 0].numpy(), [[1.5, 2.0], [2.5, 3.0]])
    # a "model" that is exact at frame 2 and predicts 0 at frame 3
    frames = traj.clone()
    frames[:, 3, 0] = 0.0
    result = RolloutResult(frames=frames, predicted=torch.tensor([[False, False, True, True]]), gt_steps=2,
                           baselines={"persistence": pers, "mean_given": mean})
    errors = evaluate_rollout(result, traj, torch.tensor([1.0, 0.0]))
    assert set(errors) == {"model", *BASELINES}
    expected = {"persistence": [by_hand(F1, F2), by_hand(F1, F3)],
                "mean_given": [by_hand([[1.5, 2.0], [2.5, 3.0]], F2), by_hand([[1.5, 2.0], [2.5, 3.0]], F3)],
                "model": [(0.0, 0.0), by_hand(np.zeros((2, 2)), F3)]}
    for name, frames_expected in expected.items():
        for k, scheme in enumerate(SCHEMES):
            np.testing.assert_allclose(errors[name][scheme][0].numpy(), [f[k] for f in frames_expected], rtol=1e-6)
    # the numbers themselves: persistence misses F2 and F3 by one spatial std·√3/2 (scale_by_std)
    np.testing.assert_allclose(errors["persistence"]["scale_by_std"][0].numpy(), [math.sqrt(3) / 2] * 2, rtol=1e-6)
    np.testing.assert_allclose(errors["mean_given"]["scale_by_size"][0].numpy(),
                               [math.sqrt(1.375 / 5), math.sqrt(4.375 / 8)], rtol=1e-6)

    ids = [{"trajectory": 0, "file": "tiny.h5", "index": 0}]
    numpy_errors = {n: {s: e.numpy() for s, e in d.items()} for n, d in errors.items()}
    rows = rollout_table(numpy_errors, ids)
    assert [r["trajectory"] for r in rows] == [0, "mean"]
    row = rows[0]
    for s_index, scheme in enumerate(SCHEMES):
        assert row[f"last_step_{scheme}"] == pytest.approx(expected["model"][1][s_index], rel=1e-6)
        assert row[f"persistence_last_step_{scheme}"] == pytest.approx(expected["persistence"][1][s_index], rel=1e-6)
        assert row[f"mean_given_mean_{scheme}"] == pytest.approx(
            np.mean([f[s_index] for f in expected["mean_given"]]), rel=1e-6)


def test_dropped_frames_use_only_the_available_given_frames():
    field = torch.arange(5.0)[:, None, None].expand(5, 2, 2)  # frame t is t everywhere
    traj = torch.stack([field, torch.zeros_like(field)], dim=1)[None].repeat(2, 1, 1, 1, 1)
    drops = torch.tensor([[False, False, True, False, False],   # frame 2 (the last given one) dropped
                          [True, False, False, False, False]])  # frame 0 dropped
    pers = persistence(traj, 3, drops)[:, :, 0, 0, 0]
    mean = given_mean(traj, 3, drops)[:, :, 0, 0, 0]
    np.testing.assert_array_equal(pers.numpy(), [[1.0, 1.0], [2.0, 2.0]])
    np.testing.assert_array_equal(mean.numpy(), [[0.5, 0.5], [1.5, 1.5]])
    np.testing.assert_array_equal(given_mean(traj, 3)[:, :, 0, 0, 0].numpy(), [[1.0, 1.0]] * 2)
    with pytest.raises(GeovitError, match=r"trajectories \[0\] have no available frame"):
        persistence(traj[:1], 2, torch.tensor([True, True, False, False, False]))
    with pytest.raises(GeovitError, match="dropped_mask: expected"):
        given_mean(traj, 3, torch.zeros(4, dtype=torch.bool))
    with pytest.raises(GeovitError, match="gt_steps"):
        persistence(traj, 5)


@settings(max_examples=20, deadline=None)
@given(gt=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_baselines_are_constant_in_time_and_exact_on_a_frozen_flow(gt, seed):
    """A frozen (time-constant) field is forecast exactly by both; each baseline is one frame repeated."""
    g = torch.Generator().manual_seed(seed)
    frame = torch.randn(2, 3, 4, 4, generator=g)
    frozen = frame[:, None].expand(2, 6, 3, 4, 4)
    for forecast in (persistence(frozen, gt), given_mean(frozen, gt)):
        torch.testing.assert_close(forecast, frozen[:, gt:])
    moving = torch.randn(2, 6, 3, 4, 4, generator=g)
    mean = given_mean(moving, gt)
    torch.testing.assert_close(mean, moving[:, :gt].mean(dim=1, keepdim=True).expand_as(mean))
    assert torch.equal(persistence(moving, gt), moving[:, gt - 1:gt].expand(2, 6 - gt, 3, 4, 4))


def test_rollout_attaches_the_baselines_and_the_plot_shows_them(tmp_path):
    torch.manual_seed(0)
    model = VICON(num_channels=4, embed_dim=16, num_heads=2, mlp_dim=32, depth=1, max_pairs=5,
                  num_patches=2, patch_size=4).eval()
    traj = torch.randn(2, 7, 4, 8, 8).cumsum(dim=1)
    traj[:, :, -1] = 0
    result = rollout(model, traj, torch.tensor([1.0, 1.0, 1.0, 0.0]), "single_step", gt_steps=4, num_examples=3,
                     dropped_mask=torch.tensor([False, False, False, True, False, False, False]))
    torch.testing.assert_close(result.baselines["persistence"], traj[:, 2:3].expand(2, 3, 4, 8, 8))
    mean_of_given = traj[:, :3].mean(dim=1, keepdim=True).expand(2, 3, 4, 8, 8)
    torch.testing.assert_close(result.baselines["mean_given"], mean_of_given)
    errors = evaluate_rollout(result, traj, torch.tensor([1.0, 1.0, 1.0, 0.0]))
    numpy_errors = {n: {s: e.numpy() for s, e in d.items()} for n, d in errors.items()}
    rows = rollout_table(numpy_errors, [{"trajectory": i, "file": "f.h5", "index": i} for i in range(2)])
    write_table(tmp_path / "rollout_errors.csv", rows)
    with open(tmp_path / "rollout_errors.csv", newline="") as f:
        table = list(csv.DictReader(f))
    header = list(table[0])
    for scheme in SCHEMES:
        for prefix in ("", "persistence_", "mean_given_"):
            assert f"{prefix}last_step_{scheme}" in header and f"{prefix}mean_{scheme}" in header
        assert float(table[-1][f"persistence_last_step_{scheme}"]) == pytest.approx(
            np.mean([float(r[f"persistence_last_step_{scheme}"]) for r in table[:-1]]))
    write_error_curve(tmp_path / "curve.png", np.arange(4, 7), numpy_errors["model"], title="t",
                      baselines={k: v for k, v in numpy_errors.items() if k != "model"})
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_rollout_reports_baselines(tmp_path, run_cli):
    """``geovit pdes rollout``: baseline columns in the CSV, equal to numpy on the data file."""
    from geovit.hub import save_converted
    from pdes.data import TrajectoryDataset
    from pdes.synthetic import write_cfd2d

    write_cfd2d(tmp_path / "data", splits={"test": 2}, resolution=16, num_frames=10, layout="vicon", seed=0,
                progress=False)
    torch.manual_seed(0)
    model = VICON(num_channels=7, embed_dim=16, num_heads=2, mlp_dim=32, depth=1, max_pairs=6,
                  num_patches=4, patch_size=4)
    save_converted(model, "vicon", model.config, tmp_path / "vicon.safetensors")
    code, stdout, err = run_cli("pdes", "rollout", tmp_path / "vicon.safetensors", "--data", tmp_path / "data",
                                "--split", "test", "--gt-steps", "6", "--num-examples", "4", "--accelerator", "cpu",
                                "--out", tmp_path / "out")
    assert code == 0, err
    with open(tmp_path / "out" / "rollout_errors.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ds = TrajectoryDataset(tmp_path / "data", "test")
    active = np.flatnonzero(np.asarray(ds.channel_mask[:-1]) != 0)
    for i in range(2):
        traj = ds.read(i).numpy()
        gt = traj[6:, active]
        forecasts = {"persistence": traj[5:6, active], "mean_given": traj[:6, active].mean(axis=0, keepdims=True)}
        for name, forecast in forecasts.items():
            diff = np.broadcast_to(forecast, gt.shape) - gt
            rmse = np.sqrt((diff ** 2).mean(axis=(-2, -1)))
            by_std = (rmse / np.maximum(gt.std(axis=(-2, -1), ddof=1), 1e-4)).mean(axis=1)
            rms = np.sqrt((gt ** 2).mean(axis=(-2, -1)))
            by_size = (rmse / np.where(rms < 1e-8, 1.0, rms)).mean(axis=1)
            assert float(rows[i][f"{name}_last_step_scale_by_std"]) == pytest.approx(by_std[-1], rel=1e-4)
            assert float(rows[i][f"{name}_mean_scale_by_size"]) == pytest.approx(by_size.mean(), rel=1e-4)
    assert "persistence" in stdout and "mean of the given frames" in stdout
