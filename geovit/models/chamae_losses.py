"""Loss terms of ChA-MAEViT (Pham et al., NeurIPS 2025, §3.2-3.4 and App. B).

* reconstruction: per-patch MSE against the norm-pix target, averaged over hidden patches;
* Fourier term: L1 between FFT amplitudes, with the official reshape (consecutive P scalars of the
  flat (L, p²) buffer form one √P x √P "image"), averaged over hidden patches;
* task terms: cross-entropy of temperature-scaled logits, and the ProxyNCA-style proxy loss;
* DiChaViT regularisers: token diversification (cosine similarity of raw patch embeddings within
  and across channels) and channel diversification (a proxy loss on the channel tokens).

Patch tokens are channel-major everywhere: index = channel * P + row * g + col.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, C*h*w, p*p), channel-major tokens, row-major pixels in a patch."""
    b, c, H, W = images.shape
    p = patch_size
    x = images.reshape(b, c, H // p, p, W // p, p).permute(0, 1, 2, 4, 3, 5)
    return x.reshape(b, c * (H // p) * (W // p), p * p)


def unpatchify(tokens: Tensor, num_channels: int, height: int, width: int, patch_size: int) -> Tensor:
    """Inverse of :func:`patchify`: (B, C*h*w, p*p) -> (B, C, H, W)."""
    b, p = tokens.shape[0], patch_size
    h, w = height // p, width // p
    x = tokens.reshape(b, num_channels, h, w, p, p).permute(0, 1, 2, 4, 3, 5)
    return x.reshape(b, num_channels, height, width)


def norm_pix(target: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor, Tensor]:
    """Per-patch normalisation of MAE: (t - mean) / sqrt(var + eps), unbiased var.

    Returns the normalised target, and the mean and std used (to map predictions back).
    """
    mean = target.mean(dim=-1, keepdim=True)
    std = (target.var(dim=-1, keepdim=True) + eps) ** 0.5
    return (target - mean) / std, mean, std


def masked_mean(per_token: Tensor, mask: Tensor) -> Tensor:
    """Mean of (B, L) values over ``mask``; 0 when nothing is masked (the official code gives NaN)."""
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def reconstruction_loss(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Masked mean over hidden patches of the per-patch pixel MSE."""
    return masked_mean(((pred - target) ** 2).mean(dim=-1), mask)


def fourier_loss(pred: Tensor, target: Tensor, mask: Tensor | None, num_channels: int) -> Tensor:
    """L1 distance of FFT amplitudes (FourierLoss of the official code).

    The (B, L, p²) buffers are viewed as (B, -1, s, s) with s = √(L / C), i.e. chunks of P
    consecutive scalars are transformed as tiny images (not the image patches themselves);
    the element-wise loss is folded back to (B, L, p²), averaged per token, then over ``mask``
    (or over everything when ``mask`` is None).
    """
    b, length, dim = pred.shape
    side = int(math.isqrt(length // num_channels))
    amp_pred = torch.fft.fft2(pred.reshape(b, -1, side, side)).abs()
    amp_target = torch.fft.fft2(target.reshape(b, -1, side, side)).abs()
    per_elem = (amp_pred - amp_target).abs().reshape(b, length, dim)
    if mask is None:
        return per_elem.mean()
    return masked_mean(per_elem.mean(dim=-1), mask)


def proxy_loss(proxies: Tensor, embeddings: Tensor, labels: Tensor, scale: float) -> Tensor:
    """ProxyNCA-style loss: CE over -||s*e/|e| - s*p/|p|||² against every proxy."""
    e = scale * F.normalize(embeddings, dim=-1)
    p = scale * F.normalize(proxies, dim=-1)
    dist = ((e[:, None, :] - p[None, :, :]) ** 2).sum(dim=-1)
    return F.cross_entropy(-dist, labels)


def token_diversification_loss(tokens: Tensor, rows: Tensor | None, gamma_s: float, gamma_d: float) -> Tensor:
    """DiChaViT token diversification loss on raw patch embeddings ``tokens`` (B, C, P, D).

    With unit tokens f, the loss per sample is ``gamma_s * mean_pos(f_i·f_j) + gamma_d *
    mean_neg(f_i·f_j)``: positive pairs share a channel (i != j), negative pairs do not; row i
    runs over the ``rows`` (B, C*P) tokens only (the visible ones in training), column j over all
    tokens. The pair sums are taken from per-channel token sums instead of the L x L Gram
    matrix (same value, O(L·D) instead of O(L²·D)); batch mean at the end.
    """
    b, c, P, d = tokens.shape
    f = F.normalize(tokens, dim=-1).double()
    r = torch.ones(b, c, P, dtype=f.dtype, device=f.device) if rows is None else rows.reshape(b, c, P).to(f.dtype)
    sum_channel = f.sum(dim=2)                                   # (B, C, D): all columns of a channel
    sum_all = sum_channel.sum(dim=1, keepdim=True)               # (B, 1, D)
    sum_rows = (f * r[..., None]).sum(dim=2)                     # (B, C, D): visible rows of a channel
    self_dot = ((f * f).sum(dim=-1) * r).sum(dim=(1, 2))         # the excluded diagonal
    n_rows = r.sum(dim=2)                                        # (B, C)
    pos = (sum_rows * sum_channel).sum(dim=(1, 2)) - self_dot
    neg = (sum_rows * (sum_all - sum_channel)).sum(dim=(1, 2))
    pos_mean = pos / (n_rows.sum(dim=1) * (P - 1) + 1e-6)
    neg_mean = neg / (n_rows.sum(dim=1) * (c * P - P) + 1e-6)
    return (gamma_s * pos_mean + gamma_d * neg_mean).mean().to(tokens.dtype)
