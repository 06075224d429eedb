"""VICON training objective: prompt sampling and the masked normalised MSE (official get_loss)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geovit import hub
from geovit.errors import GeovitError
from pdes.losses import gather_prompts, masked_mse, sample_prompt_times, vicon_loss
from pdes.normalization import normalize, prompt_statistics
from pdes.vicon import VICON


def test_training_loss_matches_official(conformance):
    conf = conformance("vicon")
    model = hub.load_official("vicon", conf.file("state_dict.pt"), conf.config["constructor_cfg"])
    io = {k: torch.from_numpy(v) for k, v in conf.io.items()}
    with torch.no_grad():
        loss = vicon_loss(model, io["prompt_init"], io["prompt_end"], io["prompt_c_mask"], min_ex=1)
    assert loss.item() == pytest.approx(float(io["train_loss"]), rel=1e-6)


def test_official_prompts_satisfy_the_sampling_rule(conformance):
    conf = conformance("vicon")
    io, rule = conf.io, conf.config["prompt_sampling"]
    t_in, t_out, dt = (torch.from_numpy(io[k]) for k in ("prompt_t_in", "prompt_t_out", "prompt_delta_t"))
    assert torch.equal(t_out - t_in, dt[:, None].expand_as(t_in))
    assert torch.all(t_in.diff(dim=1) >= 0) and torch.all(t_out < rule["T_prompt"]) and dt.max() <= rule["max_dt"]


@settings(max_examples=30, deadline=None)
@given(T=st.integers(2, 60), pairs=st.integers(1, 10), max_stride=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_sampled_prompts_follow_the_rule(T, pairs, max_stride, seed):
    max_stride = min(max_stride, T - 1)
    g = torch.Generator().manual_seed(seed)
    t_cond, t_qoi, stride = sample_prompt_times(T, pairs, max_stride, batch_size=4, generator=g)
    assert t_cond.shape == t_qoi.shape == (4, pairs) and stride.shape == (4,)
    assert torch.all((stride >= 1) & (stride <= max_stride))
    assert torch.equal(t_qoi - t_cond, stride[:, None].expand(4, pairs))  # one stride per prompt
    assert torch.all(t_cond.diff(dim=1) >= 0)  # sorted
    assert t_cond.min() >= 0 and t_qoi.max() <= T - 1


def test_sampling_covers_all_strides_and_start_times():
    g = torch.Generator().manual_seed(0)
    t_cond, _, stride = sample_prompt_times(8, 10, 3, batch_size=400, generator=g)
    assert set(stride.tolist()) == {1, 2, 3}
    assert set(t_cond[stride == 1].flatten().tolist()) == set(range(7))  # 0 .. T - stride - 1
    with pytest.raises(GeovitError, match="max_stride=5 need at least 6"):
        sample_prompt_times(5, 4, 5)


def test_gather_prompts_picks_frames():
    traj = torch.arange(2 * 6, dtype=torch.float32).reshape(2, 6, 1, 1, 1).expand(2, 6, 2, 4, 4)
    t_cond = torch.tensor([[0, 2], [1, 1]])
    cond, qoi = gather_prompts(traj, t_cond, t_cond + 3)
    assert cond[:, :, 0, 0, 0].tolist() == [[0, 2], [7, 7]]
    assert qoi[:, :, 0, 0, 0].tolist() == [[3, 5], [10, 10]]
    with pytest.raises(GeovitError, match="outside the 6 frames"):
        gather_prompts(traj, t_cond, t_cond + 5)


def _prompt(seed=0, boundary=True):
    g = torch.Generator().manual_seed(seed)
    pred, target = torch.randn(2, 2, 4, 3, 6, 6, generator=g)
    node = torch.zeros(2, 4, 6, 6)
    if boundary:
        node[:, :, 0, :] = node[:, :, -1, :] = node[:, :, :, 0] = node[:, :, :, -1] = 1
    return pred, target, node


def test_masked_mse_counts_only_targets():
    pred, target, node = _prompt()
    c_mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    loss = masked_mse(pred, target, c_mask, node, min_ex=2)
    # explicit formula
    sq = (pred - target) ** 2
    inner = sq[:, 2:, :, 1:-1, 1:-1]
    expected = (inner[0, :, 0].sum() + inner[1, :, :2].sum()) / (inner[0, :, 0].numel() + inner[1, :, :2].numel())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # changing anything not counted leaves it unchanged
    other = pred.clone()
    other[:, :2] += 5  # pairs before min_ex
    other[0, :, 1] += 5  # masked slot
    other[:, :, -1] += 5  # node-type slot
    other[:, :, :, 0, :] += 5  # boundary pixels
    assert masked_mse(other, target, c_mask, node, min_ex=2).item() == pytest.approx(loss.item(), rel=1e-6)
    other[1, 3, 1, 2, 2] = target[1, 3, 1, 2, 2] + 100.0  # one counted element
    assert masked_mse(other, target, c_mask, node, min_ex=2).item() > loss.item()
    with pytest.raises(GeovitError, match="min_ex=4"):
        masked_mse(pred, target, c_mask, node, min_ex=4)


def test_multi_dataset_batch_is_a_count_weighted_mean():
    pred, target, node = _prompt(1, boundary=False)
    node[1, :, 0] = 1  # only the second "dataset" has boundary pixels
    mask_a, mask_b = torch.tensor([1.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    both = masked_mse(pred, target, torch.stack([mask_a, mask_b]), node, min_ex=1)
    la = masked_mse(pred[:1], target[:1], mask_a, node[:1], min_ex=1)
    lb = masked_mse(pred[1:], target[1:], mask_b, node[1:], min_ex=1)
    na, nb = 3 * 2 * 36, 3 * 1 * 30
    assert both.item() == pytest.approx((la.item() * na + lb.item() * nb) / (na + nb), rel=1e-6)


def test_loss_is_in_normalised_space_and_trains():
    torch.manual_seed(0)
    model = VICON(num_channels=3, embed_dim=16, num_heads=2, mlp_dim=32, depth=1, max_pairs=4,
                  num_patches=2, patch_size=2)
    t = torch.linspace(0, 1, 8)
    base = torch.sin(6 * t[:, None, None] + torch.linspace(0, 3, 4)[None, :, None] + torch.linspace(0, 2, 4))
    traj = torch.zeros(4, 8, 3, 4, 4)
    traj[:, :, 0] = base * 1000 + 5000  # units must not matter
    traj[:, :, 1] = -base
    c_mask = torch.tensor([1.0, 1.0, 0.0])
    cond, qoi = gather_prompts(traj, torch.tensor([[0, 1, 2, 3]] * 4), torch.tensor([[1, 2, 3, 4]] * 4))
    mean, std = prompt_statistics(cond, c_mask)
    with torch.no_grad():
        direct = masked_mse(model(normalize(cond, mean, std), normalize(qoi, mean, std)),
                            normalize(qoi, mean, std), c_mask, qoi[:, :, -1], min_ex=1)
        assert vicon_loss(model, cond, qoi, c_mask, min_ex=1).item() == pytest.approx(direct.item(), rel=1e-6)
        assert direct.item() < 100  # normalised scale, not 1000² units
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, foreach=False)
    first, threads = None, torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread hand-offs would dominate
    try:
        for _ in range(30):
            loss = vicon_loss(model, cond, qoi, c_mask, min_ex=1)
            first = first if first is not None else loss.item()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    assert loss.item() < 0.5 * first
