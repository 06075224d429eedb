"""Doubly-robust (AIPW) scores for a binary treatment, as grf's ``get_scores`` builds them.

For a causal forest with outcome model m̂(x) = E[Y | X = x], propensity ê(x) = P(W = 1 | X = x) and
CATE τ̂(x), all cross-fitted or out-of-bag (spec ``multiscale_cate.md`` §2):

    Γ_i = τ̂(X_i) + (W_i − ê(X_i)) / (ê(X_i)(1 − ê(X_i))) · (Y_i − m̂(X_i) − (W_i − ê(X_i)) τ̂(X_i))

With μ̂₀ = m̂ − ê τ̂ and μ̂₁ = m̂ + (1 − ê) τ̂ this is the textbook AIPW score
μ̂₁ − μ̂₀ + W (Y − μ̂₁)/ê − (1 − W)(Y − μ̂₀)/(1 − ê).  The mean of Γ is the doubly-robust ATE;
Γ is what :func:`causal.rate.rank_average_treatment_effect` consumes.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from geovit.errors import GeovitError


def _unit_names(index, positions: np.ndarray, k: int = 10) -> str:
    labels = [str(index[i]) if index is not None else str(int(i)) for i in positions[:k]]
    more = f", … ({positions.size} in total)" if positions.size > k else ""
    return "[" + ", ".join(labels) + more + "]"


def _vector(x, name: str, n: int | None, index=None, ref: str = "Y") -> np.ndarray:
    """``x`` as a finite float vector of ``n`` values (a scalar is broadcast), or a GeovitError naming
    ``name`` (and ``ref``, the input that fixed ``n``; ``index`` labels the units in messages)."""
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as err:
        raise GeovitError(f"`{name}` must be numeric: {err}") from None
    if arr.ndim == 0 and n is not None:
        arr = np.full(n, float(arr))
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise GeovitError(f"`{name}` must be a vector (one value per unit), got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise GeovitError(f"`{name}` has {arr.size} values but `{ref}` has {n} units")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise GeovitError(f"`{name}` is NaN/inf for units {_unit_names(index, bad)}")
    return arr


def aipw_scores(Y, W, m_hat, tau_hat, e_hat) -> np.ndarray:
    """Doubly-robust scores Γ_i for a binary treatment (grf ``get_scores`` for a causal forest).

    Args:
        Y: (n,) outcomes.
        W: (n,) treatment indicators, 0/1 (or bool).
        m_hat: (n,) cross-fitted / OOB estimates of E[Y | X] (grf's ``Y.hat``; not E[Y | X, W]).
        tau_hat: (n,) cross-fitted / OOB CATE estimates τ̂(X_i).
        e_hat: (n,) propensities P(W = 1 | X_i), or one number for a randomised trial with known
            assignment probability.  Every value must lie strictly inside (0, 1).

    Units are named by the pandas index when ``Y`` is a Series, else by position.  Raises
    :class:`geovit.GeovitError` for NaN/inf inputs, a non-binary W, mismatched lengths or a
    propensity of 0 or 1 (the score divides by ê(1 − ê)); warns, as grf does, when a propensity
    is ≤ 0.05 or ≥ 0.95 (overlap is poor and the scores have heavy tails).

    Returns:
        (n,) numpy array of scores Γ.
    """
    index = Y.index if isinstance(Y, (pd.Series, pd.DataFrame)) else None
    y = _vector(Y, "Y", None, index)
    n = y.size
    w = _vector(W, "W", n, index)
    not_binary = np.flatnonzero((w != 0) & (w != 1))
    if not_binary.size:
        values = np.unique(w[not_binary])[:5]
        raise GeovitError(f"`W` (treatment) must be binary 0/1; units {_unit_names(index, not_binary)} "
                          f"have values such as {values.tolist()}")
    m = _vector(m_hat, "m_hat", n, index)
    tau = _vector(tau_hat, "tau_hat", n, index)
    e = _vector(e_hat, "e_hat", n, index)
    outside = np.flatnonzero((e <= 0) | (e >= 1))
    if outside.size:
        raise GeovitError(f"`e_hat` (propensity) must lie strictly in (0, 1); units "
                          f"{_unit_names(index, outside)} have {np.unique(e[outside])[:5].tolist()}: "
                          "the AIPW score divides by e(1 - e). Trim or re-estimate the propensities.")
    extreme = np.flatnonzero((e <= 0.05) | (e >= 0.95))
    if extreme.size:
        warnings.warn(f"estimated propensities are <= 0.05 or >= 0.95 for units "
                      f"{_unit_names(index, extreme)}: overlap is poor, DR scores have heavy tails",
                      RuntimeWarning, stacklevel=2)
    residual_w = w - e
    return tau + residual_w / (e * (1 - e)) * (y - m - residual_w * tau)
