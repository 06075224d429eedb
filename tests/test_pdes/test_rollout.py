"""VICON rollout: official strategies and golden rollouts, dropped-frame variants, batching, bad input."""
from __future__ import annotations

import pytest
import torch

from geovit import hub
from geovit.errors import GeovitError
from pdes.metrics import error_scale_by_size, error_scale_by_std, last_step_error
from pdes.rollout import Step, available_pairs, make_strategy, persistence, rollout
from pdes.vicon import VICON

OFFICIAL_NAMES = {"fixed_single_step": "single_step", "fixed_multi_step_norepeat": "multi_norepeat",
                  "fixed_multi_step_repeat": "multi_repeat"}


def as_lists(steps: list[Step]) -> list:
    return [[list(s.demo_cond), list(s.demo_qoi), s.query_cond, s.query_qoi] for s in steps]


@pytest.fixture(scope="module")
def golden(conformance):
    conf = conformance("vicon")
    model = hub.load_official("vicon", conf.file("state_dict.pt"), conf.config["constructor_cfg"])
    return model, {k: torch.from_numpy(v) for k, v in conf.io.items()}, conf.config


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return VICON(num_channels=4, embed_dim=16, num_heads=2, mlp_dim=32, depth=2, max_pairs=5,
                 num_patches=2, patch_size=4).eval()


def trajectories(B=3, T=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    traj = torch.randn(B, T, 4, 8, 8, generator=g).cumsum(dim=1)
    traj[:, :, -1] = 0
    traj[:, :, -1, 0, :] = 1  # a boundary row in the node-type slot
    return traj


# ------------------------------------------------------------------------------ conformance
@pytest.mark.parametrize("name", ["multi_repeat_s2", "single_step"])
def test_golden_rollout(golden, name):
    model, io, cfg = golden
    run = cfg["rollout_io"]["runs"][name]
    traj, c_mask = io[f"roll_{name}_traj"], io[f"roll_{name}_c_mask"]
    gt = run["gt_ref_steps"]
    strategy = OFFICIAL_NAMES[run["strategy"]]
    steps = make_strategy(strategy, traj.shape[1], gt, run["rollout_demo_num"], run["max_stride"])
    assert as_lists(steps) == run["strategy_list[demo_cond, demo_qoi, query_cond, query_qoi]"]

    result = rollout(model, traj, c_mask, run["strategy"], gt_steps=gt,
                     num_examples=run["rollout_demo_num"], max_stride=run["max_stride"])
    assert (result.future - io[f"roll_{name}_pred_frames"]).abs().max() <= 1e-5
    target = traj[:, gt:]
    for scheme, fn in (("std", error_scale_by_std), ("size", error_scale_by_size)):
        err = fn(result.future, target)
        ref = io[f"roll_{name}_err_scale_by_{scheme}"]
        assert torch.allclose(err, ref, rtol=1e-4, atol=1e-6), scheme
    last = last_step_error(error_scale_by_std(result.future, target), c_mask)
    assert last.tolist() == pytest.approx(run["last_step_error_scale_by_std_per_traj"], rel=1e-5)


@pytest.mark.parametrize("key", ["fixed_single_step_maxstride1_T21", "fixed_multi_step_norepeat_maxstride5_T21",
                                 "fixed_multi_step_repeat_maxstride5_T21"])
def test_paper_setting_strategies(golden, key):
    _, _, cfg = golden
    official = key.split("_maxstride")[0]
    max_stride = int(key.split("maxstride")[1].split("_")[0])
    steps = make_strategy(official, 21, gt_steps=10, num_examples=9, max_stride=max_stride)
    assert as_lists(steps) == cfg["reference_strategy_examples_gt10_demo9"][key]


# ------------------------------------------------------------------------------ dropped frames
def test_available_pairs_enumeration_quirk_and_repetition():
    # (2 -> 4) is missed: the official enumeration only starts pairs among the first len - s frames
    assert available_pairs([0, 1, 2, 4], 2, 3) == [(0, 2)] * 3
    assert available_pairs([0, 1, 2, 3], 1, 5) == [(0, 1), (0, 1), (1, 2), (1, 2), (2, 3)]
    assert available_pairs(range(10), 1, 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert available_pairs([0, 3], 1, 4) == []


def test_halved_frame_rate_single_step():
    dropped = torch.tensor([t % 2 == 1 for t in range(14)])  # only even frames measured
    steps = make_strategy("single_step", 14, gt_steps=10, num_examples=9, max_stride=2, dropped_mask=dropped)
    demo = [[0, 0, 0, 2, 2, 2, 4, 4, 4], [2, 2, 2, 4, 4, 4, 6, 6, 6]]
    assert as_lists(steps) == [demo + [8, 10], demo + [10, 12]]  # odd targets have no known COND


def test_dropped_tail_multi_step():
    dropped = torch.zeros(13, dtype=torch.bool)
    dropped[8:10] = True  # the last two given frames are missing
    steps = make_strategy("multi_repeat", 13, gt_steps=10, num_examples=9, max_stride=3, dropped_mask=dropped)
    assert [(s.query_cond, s.query_qoi) for s in steps] == [(7, 8), (7, 9), (7, 10), (8, 11), (9, 12)]
    assert list(steps[0].demo_cond) == [0, 0, 1, 1, 2, 3, 4, 5, 6]
    assert list(steps[2].demo_cond) == [0, 0, 1, 1, 2, 2, 3, 3, 4] and list(steps[2].demo_qoi) == [3, 3, 4, 4, 5, 5, 6, 6, 7]
    # norepeat coincides with repeat when frames are dropped (official behaviour)
    same = make_strategy("multi_norepeat", 13, gt_steps=10, num_examples=9, max_stride=3, dropped_mask=dropped)
    assert same == steps


def test_dropped_rollout_never_reads_missing_frames(tiny):
    traj = trajectories(B=2, T=9)
    dropped = torch.zeros(2, 9, dtype=torch.bool)
    dropped[0, 5] = True  # trajectory 0 misses its last given frame
    dropped[1, 1] = True  # trajectory 1 misses a middle frame
    c_mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    poisoned = traj.clone()
    poisoned[dropped] = float("nan")
    poisoned[:, 6:] = float("nan")
    result = rollout(tiny, poisoned, c_mask, "multi_repeat", gt_steps=6, num_examples=3, max_stride=2, dropped_mask=dropped)
    assert torch.isfinite(result.frames).all()
    assert result.predicted[0].tolist() == [False] * 5 + [True] * 4  # frame 5 is predicted inside the prefix
    assert result.predicted[1].tolist() == [False] * 6 + [True] * 3  # frame 1 stays missing
    assert torch.all(result.frames[1, 1] == 0)
    # grouping by mask gives the same as rolling out each trajectory alone
    for b in range(2):
        alone = rollout(tiny, poisoned[b:b + 1], c_mask, "multi_repeat", gt_steps=6, num_examples=3, max_stride=2,
                        dropped_mask=dropped[b])
        assert torch.allclose(alone.frames[0], result.frames[b], atol=1e-5)
    with pytest.raises(GeovitError, match="no pair"):
        rollout(tiny, trajectories(B=1, T=9), c_mask, "single_step", gt_steps=6, num_examples=3, max_stride=4,
                dropped_mask=torch.tensor([False, True] * 4 + [False]))


def test_dropped_first_frame_keeps_the_geometry(tiny):
    """Node type is fixed geometry: predicted frames carry it even when frame 0 was not measured."""
    traj = trajectories(B=1, T=9)
    dropped = torch.zeros(9, dtype=torch.bool)
    dropped[0] = True
    poisoned = traj.clone()
    poisoned[:, 0] = float("nan")
    result = rollout(tiny, poisoned, torch.tensor([1.0, 1.0, 1.0, 0.0]), "multi_repeat", gt_steps=6,
                     num_examples=3, max_stride=2, dropped_mask=dropped)
    for t in torch.nonzero(result.predicted[0]).flatten().tolist():
        assert torch.equal(result.frames[0, t, -1], traj[0, 1, -1])


# ------------------------------------------------------------------------------ rollout mechanics
def test_batched_rollout_equals_per_trajectory_and_uses_no_future_truth(tiny):
    traj = trajectories(B=3, T=9)
    c_mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    batched = rollout(tiny, traj, c_mask, "multi_norepeat", gt_steps=5, num_examples=4, max_stride=3)
    assert batched.future.shape == (3, 4, 4, 8, 8)
    assert batched.predicted[:, 5:].all() and not batched.predicted[:, :5].any()
    for b in range(3):
        alone = rollout(tiny, traj[b:b + 1], c_mask[b], "multi_norepeat", gt_steps=5, num_examples=4, max_stride=3)
        assert torch.allclose(alone.future[0], batched.future[b], atol=1e-5)
    chunked = rollout(tiny, traj, c_mask, "multi_norepeat", gt_steps=5, num_examples=4, max_stride=3, batch_size=2)
    assert torch.allclose(chunked.frames, batched.frames, atol=1e-5)
    future_hidden = traj.clone()
    future_hidden[:, 5:] = float("nan")
    hidden = rollout(tiny, future_hidden, c_mask, "multi_norepeat", gt_steps=5, num_examples=4, max_stride=3)
    assert torch.equal(hidden.frames, batched.frames)
    # masked slots are zero, node type copied from frame 0, given frames untouched
    assert torch.all(batched.future[1, :, 1] == 0) and torch.all(batched.future[2, :, 0] == 0)
    assert torch.equal(batched.future[:, :, -1], traj[:, :1, -1].expand(3, 4, 8, 8))
    assert torch.equal(batched.frames[:, :5], traj[:, :5])
    # each predicted frame is the pipeline applied to its prompt
    step = make_strategy("multi_norepeat", 9, 5, 4, 3)[2]
    cond = batched.frames[:, list(step.demo_cond) + [step.query_cond]]
    qoi = torch.cat([batched.frames[:, list(step.demo_qoi)], torch.zeros_like(cond[:, :1])], dim=1)
    assert torch.allclose(tiny.predict(cond, qoi, c_mask)[:, -1], batched.frames[:, step.query_qoi, :-1], atol=1e-5)


def test_rollout_bad_input(tiny):
    traj = trajectories(B=2, T=6)
    c_mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    with pytest.raises(GeovitError, match="6 frames; a rollout given gt_steps=6"):
        rollout(tiny, traj, c_mask, gt_steps=6, num_examples=3)
    with pytest.raises(GeovitError, match="num_examples=5 .* gt_steps >= 6"):
        rollout(tiny, traj, c_mask, "single_step", gt_steps=4, num_examples=5)
    with pytest.raises(GeovitError, match="max_stride=4 needs gt_steps >= 5"):
        rollout(tiny, traj, c_mask, "multi_repeat", gt_steps=4, num_examples=3, max_stride=4)
    with pytest.raises(GeovitError, match="max_pairs=5"):
        rollout(tiny, trajectories(B=1, T=9), c_mask, "single_step", gt_steps=8, num_examples=5)
    with pytest.raises(GeovitError, match="strategy 'leapfrog'"):
        rollout(tiny, traj, c_mask, "leapfrog", gt_steps=4, num_examples=3)
    with pytest.raises(GeovitError, match="no active field slot"):
        rollout(tiny, traj, torch.tensor([0.0, 0.0, 0.0, 1.0]), gt_steps=4, num_examples=3)
    bad = traj.clone()
    bad[1, 2, 0, 3, 3] = float("inf")
    with pytest.raises(GeovitError, match=r"trajectories \[1\]: non-finite"):
        rollout(tiny, bad, c_mask, gt_steps=4, num_examples=3)
    with pytest.raises(GeovitError, match="expected \\(batch, time"):
        rollout(tiny, traj[0], c_mask, gt_steps=4, num_examples=3)


def test_persistence_baseline():
    traj = trajectories(B=2, T=7)
    base = persistence(traj, 4)
    assert base.shape == (2, 3, 4, 8, 8)
    assert all(torch.equal(base[:, k], traj[:, 3]) for k in range(3))
    with pytest.raises(GeovitError):
        persistence(traj, 7)


def test_rollout_runs_in_eval_mode_and_casts_to_the_model_dtype():
    torch.manual_seed(1)
    model = VICON(num_channels=4, embed_dim=16, num_heads=2, mlp_dim=32, depth=1, max_pairs=4,
                  num_patches=2, patch_size=4, dropout=0.5)
    traj = trajectories(B=1, T=6).double()
    c_mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    model.train()
    first = rollout(model, traj, c_mask, gt_steps=4, num_examples=3)
    assert model.training  # mode restored
    second = rollout(model, traj, c_mask, gt_steps=4, num_examples=3)
    assert first.frames.dtype == torch.float32
    assert torch.equal(first.frames, second.frames)  # dropout off while rolling out
