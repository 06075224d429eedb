"""VICON training objective (specs/vicon.md §1.7–1.8; official ``dataset_utils.split_data`` and
``Trainer.get_loss``).

Prompt sampling, per trajectory: one stride ``Δt ~ U{1…max_stride}`` shared by all pairs of the
prompt; ``num_pairs`` COND times drawn i.i.d. (with replacement) from ``{0…T−Δt−1}`` and **sorted**;
QoI times = COND times + Δt. The stride is never given to the model: it must infer it from the pairs.

Loss: MSE in normalised space between the teacher-forced predictions ``out[:, i]`` and
``qoi[:, i]`` for pair indices ``i ≥ min_ex`` only, over field slots with channel mask 1 (node-type
slot excluded) and interior pixels (node type 0); sum over counted elements divided by their count
over the whole batch. Batches from several datasets are simply concatenated: the channel mask is
per prompt.

Public API::

    t_cond, t_qoi, stride = sample_prompt_times(num_frames, num_pairs, max_stride=5, batch_size=B,
                                                generator=None)          # (B, pairs), (B, pairs), (B,)
    cond, qoi = gather_prompts(trajectories, t_cond, t_qoi)             # (B, T, C, H, W) -> (B, pairs, C, H, W) x2
    loss = vicon_loss(model, cond, qoi, channel_mask, min_ex=5)         # scalar, differentiable
    loss = masked_mse(pred_norm, qoi_norm, channel_mask, node_type, min_ex=5)
"""
from __future__ import annotations

import torch

from geovit.errors import GeovitError
from pdes.normalization import expand_channel_mask, normalize, prompt_statistics


def sample_prompt_times(
    num_frames: int, num_pairs: int, max_stride: int = 5, batch_size: int = 1,
    generator: torch.Generator | None = None, device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw (t_cond, t_qoi, stride) for ``batch_size`` prompts of ``num_pairs`` pairs each."""
    if max_stride < 1:
        raise GeovitError(f"max_stride={max_stride}: expected >= 1")
    if num_frames <= max_stride:
        raise GeovitError(
            f"trajectories have {num_frames} frames; prompts with strides up to max_stride={max_stride} "
            f"need at least {max_stride + 1}"
        )
    stride = torch.randint(1, max_stride + 1, (batch_size,), generator=generator)
    # t ~ U{0 .. T - stride - 1}, independently per pair
    u = torch.rand(batch_size, num_pairs, generator=generator)
    t_cond = (u * (num_frames - stride)[:, None]).long().sort(dim=1).values
    t_qoi = t_cond + stride[:, None]
    return t_cond.to(device), t_qoi.to(device), stride.to(device)


def gather_prompts(trajectories: torch.Tensor, t_cond: torch.Tensor, t_qoi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick the COND and QoI frames of each prompt from its trajectory (B, T, C, H, W)."""
    if trajectories.ndim != 5:
        raise GeovitError(f"trajectories: expected (batch, time, channels, H, W), got {tuple(trajectories.shape)}")
    if int(t_qoi.max()) >= trajectories.shape[1] or int(t_cond.min()) < 0:
        raise GeovitError(f"prompt times outside the {trajectories.shape[1]} frames of the trajectories")
    rows = torch.arange(trajectories.shape[0], device=trajectories.device)[:, None]
    return trajectories[rows, t_cond.to(trajectories.device)], trajectories[rows, t_qoi.to(trajectories.device)]


def masked_mse(
    pred_norm: torch.Tensor, qoi_norm: torch.Tensor, channel_mask, node_type: torch.Tensor, min_ex: int = 5,
) -> torch.Tensor:
    """Mean squared error over pairs ``>= min_ex``, field slots with mask 1, interior pixels.

    ``pred_norm``/``qoi_norm``: (B, pairs, C, H, W) in normalised space; ``node_type``:
    (B, pairs, H, W) (0 = interior); ``channel_mask``: (B, C) or (C,).
    """
    pairs = pred_norm.shape[1]
    if not 0 <= min_ex < pairs:
        raise GeovitError(f"min_ex={min_ex}: the prompt has {pairs} pairs, the loss needs min_ex < pairs")
    fields = expand_channel_mask(channel_mask, qoi_norm)[:, :-1].to(pred_norm.dtype)  # (B, C-1)
    interior = (node_type[:, min_ex:] == 0).to(pred_norm.dtype)  # (B, n, H, W)
    weight = fields[:, None, :, None, None] * interior[:, :, None]
    err = (pred_norm[:, min_ex:, :-1] - qoi_norm[:, min_ex:, :-1]) ** 2
    count = weight.expand_as(err).sum()
    if count == 0:
        raise GeovitError("loss: no counted element (all channel masks zero or every pixel is boundary)")
    return (err * weight).sum() / count


def vicon_loss(model, cond: torch.Tensor, qoi: torch.Tensor, channel_mask, min_ex: int = 5) -> torch.Tensor:
    """Normalise the prompts (COND statistics), teacher-force the model, masked MSE (official loss)."""
    cfg = model.config
    mean, std = prompt_statistics(cond, channel_mask, eps=cfg["norm_eps"], scheme=cfg["norm_scheme"])
    qoi_norm = normalize(qoi, mean, std)
    pred = model(normalize(cond, mean, std), qoi_norm)
    return masked_mse(pred, qoi_norm, channel_mask, qoi[:, :, -1], min_ex=min_ex)
