"""Rollout error metrics of VICON (specs/vicon.md §4; official ``error.scheme``).

Per trajectory, predicted frame and channel, over all pixels (boundary pixels included):

* ``scale_by_std`` (current official default): ``RMSE_xy(pred − gt) / max(std_xy(gt), 1e-4)``,
  unbiased std of the ground-truth frame and channel;
* ``scale_by_size`` (original release default, "relative L2"): ``RMSE_xy(pred − gt) / RMS_xy(gt)``,
  dividing by 1 where ``RMS < 1e-8``.

Reported numbers average over the channels with channel mask 1 (the node-type slot is masked in all
official channel masks), then over trajectories. The *last-step error* is that average at the final
frame; the *error-vs-time curve* is it at every predicted frame.

Public API (frames (B, T, C, H, W) -> errors (B, T, C))::

    rmse(pred, target)                              # (B, T, C)
    error_scale_by_std(pred, target, eps=1e-4)      # (B, T, C)
    error_scale_by_size(pred, target, eps=1e-8)     # (B, T, C)
    scaled_error(pred, target, scheme="scale_by_std")
    channel_mean(err, channel_mask)                 # (B, T): mean over active channels
    last_step_error(err, channel_mask)              # (B,)
    error_curve(err, channel_mask)                  # (mean (T,), std (T,)) over trajectories
"""
from __future__ import annotations

import torch

from geovit.errors import GeovitError

SCHEMES = ("scale_by_std", "scale_by_size")


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim < 3:
        raise GeovitError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)}: expected equal shapes "
                          "(..., channels, H, W)")


def rmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Root-mean-square error over the two spatial axes."""
    _check(pred, target)
    return (pred - target).pow(2).mean(dim=(-2, -1)).sqrt()


def error_scale_by_std(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """RMSE divided by the target's unbiased spatial std, floored at ``eps``."""
    std = target.std(dim=(-2, -1), correction=1).clamp_min(eps)
    return rmse(pred, target) / std


def error_scale_by_size(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """RMSE divided by the target's spatial RMS (by 1 where the RMS is below ``eps``)."""
    rms = target.pow(2).mean(dim=(-2, -1)).sqrt()
    return rmse(pred, target) / torch.where(rms < eps, torch.ones_like(rms), rms)


def scaled_error(pred: torch.Tensor, target: torch.Tensor, scheme: str = "scale_by_std") -> torch.Tensor:
    """Per-frame error under ``scheme``: :func:`error_scale_by_std` (``"scale_by_std"``, RMSE/std) or
    :func:`error_scale_by_size` (``"scale_by_size"``, RMSE/RMS).

    Raises:
        GeovitError: an unknown scheme.
    """
    if scheme == "scale_by_std":
        return error_scale_by_std(pred, target)
    if scheme == "scale_by_size":
        return error_scale_by_size(pred, target)
    raise GeovitError(f"error scheme {scheme!r}: expected one of {SCHEMES}")


def channel_mean(err: torch.Tensor, channel_mask) -> torch.Tensor:
    """Mean of ``err`` (B, T, C) over the channels with mask 1 -> (B, T)."""
    B, _, C = err.shape
    mask = torch.as_tensor(channel_mask, device=err.device)
    mask = (mask.expand(B, -1) if mask.ndim == 1 else mask) != 0
    if tuple(mask.shape) != (B, C):
        raise GeovitError(f"channel_mask: expected ({B}, {C}) or ({C},), got {tuple(mask.shape)}")
    count = mask.sum(dim=1, keepdim=True)
    if (count == 0).any():
        raise GeovitError("channel_mask: some trajectory has no active channel")
    w = mask.to(err.dtype)[:, None, :]
    return (err * w).sum(dim=-1) / count.to(err.dtype)


def last_step_error(err: torch.Tensor, channel_mask) -> torch.Tensor:
    """Channel-mean error at the final frame, per trajectory (B,)."""
    return channel_mean(err, channel_mask)[:, -1]


def error_curve(err: torch.Tensor, channel_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Error vs time: mean and (population) std over trajectories of the channel-mean error, (T,) each."""
    per_traj = channel_mean(err, channel_mask)
    return per_traj.mean(dim=0), per_traj.std(dim=0, correction=0)
