"""Rank-Weighted Average Treatment Effect (RATE) and the TOC curve, exactly as grf computes them.

Yadlowsky, Fleming, Shah, Brunskill & Wager, "Evaluating Treatment Prioritization Rules via
Rank-Weighted Average Treatment Effects", JASA 120(549), 2025 (arXiv 2111.07966), and the R
package grf 2.6.1 (``rank_average_treatment_effect.fit``); see ``shared/specs/multiscale_cate.md``
§3 for the formulas this module follows.

For a priority rule S (larger = treat first) and doubly-robust scores Γ:

* TOC(u) = E[τ | S in its top u-fraction] − ATE, estimated from the running mean of Γ sorted by S
  (tied priorities share their group's weighted mean Γ; weights enter every mean);
* RATE = Σ_j α_j TOC_j with α ≡ 1 (``"AUTOC"``) or α(u) = u (``"QINI"``);
* TOC on a user grid ``q`` counts the boundary unit fractionally;
* standard errors: half-sample cluster bootstrap (⌊K/2⌋ clusters drawn without replacement per
  replicate, SD of the replicates with no √½ rescaling);
* |value| < 1e-15 is reported as 0, as grf does.

The "RATE Ratio" of Zhu, Jerzak & Daoud (CLeaR 2025) is ``estimate / std_err``.

Implementation: each priority is sorted once; a bootstrap replicate is a boolean mask of the
chosen clusters mapped onto that sorted order, so one replicate at a time gathers the half
sample (O(n) scratch memory, never R copies of the data).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from geovit.errors import GeovitError

TARGETS = ("AUTOC", "QINI")
DEFAULT_Q = tuple(np.arange(1, 11) / 10)
_ZERO = 1e-15  # grf: |value| < 1e-15 -> 0, and the findInterval epsilon


@dataclass
class RATEResult:
    """Result of :func:`rank_average_treatment_effect` (mirrors grf's ``rank_average_treatment_effect``).

    For one priority rule ``estimate``, ``std_err`` and ``rate_ratio`` are floats and ``target`` is
    ``"<label> | AUTOC"``.  For two rules (paired comparison) they are length-3 arrays for
    ``[rule1, rule2, rule1 - rule2]`` computed on shared bootstrap draws, and ``target`` is a list.
    ``toc`` is a DataFrame with columns ``q, estimate, std_err, priority`` (stacked per label).
    """

    estimate: float | np.ndarray
    std_err: float | np.ndarray
    target: str | list[str]
    toc: pd.DataFrame
    n_bootstrap: int
    labels: list[str] = field(default_factory=list)

    @property
    def rate_ratio(self) -> float | np.ndarray:
        """RATE Ratio = estimate / std_err (a t-statistic-like signal-to-noise ratio)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.asarray(self.estimate, float) / np.asarray(self.std_err, float)
        return float(ratio) if np.ndim(ratio) == 0 else ratio

    def summary(self) -> pd.DataFrame:
        """One row per label: target, estimate, std_err, rate_ratio."""
        return pd.DataFrame({
            "target": np.atleast_1d(self.target),
            "estimate": np.atleast_1d(self.estimate),
            "std_err": np.atleast_1d(self.std_err),
            "rate_ratio": np.atleast_1d(self.rate_ratio),
        })

    def __repr__(self) -> str:
        rows = self.summary().to_string(index=False)
        return f"RATEResult(n_bootstrap={self.n_bootstrap})\n{rows}"


# ----------------------------------------------------------------------------------------------
# input checks
def _as_float_vector(x, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 1:
        raise GeovitError(f"`{name}` must be one-dimensional, got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise GeovitError(f"`{name}` has length {len(arr)} but `dr_scores` has length {n}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise GeovitError(f"`{name}` contains NaN/inf at units {_first(bad)}")
    return arr


def _first(idx: np.ndarray, k: int = 10) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:k])
    return f"[{shown}{', …' if idx.size > k else ''}] ({idx.size} in total)"


def _priority_columns(priorities, n: int) -> tuple[list[np.ndarray], list[str]]:
    """Split ``priorities`` into 1 or 2 float columns with grf's labels."""
    if isinstance(priorities, pd.DataFrame):
        cols = [priorities[c].to_numpy() for c in priorities.columns]
        labels = [str(c) for c in priorities.columns]
    elif isinstance(priorities, pd.Series):
        cols, labels = [priorities.to_numpy()], [str(priorities.name) if priorities.name is not None
                                                  else "priorities"]
    elif isinstance(priorities, dict):
        cols, labels = [np.asarray(v) for v in priorities.values()], [str(k) for k in priorities]
    else:
        arr = np.asarray(priorities)
        if arr.ndim == 1:
            cols, labels = [arr], ["priorities"]
        elif arr.ndim == 2:
            cols = [arr[:, j] for j in range(arr.shape[1])]
            labels = [f"priority{j + 1}" for j in range(arr.shape[1])]
        else:
            raise GeovitError(f"`priorities` must be a vector or an (n, 2) array, got shape {arr.shape}")
    if not 1 <= len(cols) <= 2:
        raise GeovitError(f"`priorities` must have one or two columns (two rules), got {len(cols)}")
    out = []
    for col, label in zip(cols, labels):
        name = f"priorities[{label!r}]" if len(cols) > 1 else "priorities"
        try:
            out.append(_as_float_vector(col, name, n))
        except (TypeError, ValueError) as err:
            if isinstance(err, GeovitError):
                raise
            raise GeovitError(f"`{name}` must be numeric: {err}") from None
    return out, labels


def _check_q(q) -> np.ndarray:
    q = np.asarray(DEFAULT_Q if q is None else q, dtype=float).ravel()
    if q.size == 0 or not np.all(np.isfinite(q)):
        raise GeovitError(f"`q` must be a non-empty grid of finite fractions in (0, 1], got {q}")
    if np.any(np.diff(q) <= 0):
        raise GeovitError(f"`q` must be strictly increasing, got {q}")
    if q[0] <= 0 or q[-1] != 1:
        raise GeovitError(f"`q` must be a grid of fractions in (0, 1] whose last entry is exactly 1, "
                          f"got first={q[0]!r}, last={q[-1]!r}")
    return q


def _level_starts(sorted_values: np.ndarray) -> np.ndarray:
    """Boolean "starts a new level" flags for ascending values, with R's 15-digit factor levels.

    R's ``as.factor`` compares doubles as 15-significant-digit strings, so two values that agree
    to 15 digits are one level.  Only neighbours closer than 2e-14 (relative) can collide, so
    only those are formatted; everything else is a vectorised comparison.
    """
    starts = np.empty(sorted_values.size, dtype=bool)
    starts[:1] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=starts[1:])
    scale = np.maximum(np.abs(sorted_values[1:]), np.abs(sorted_values[:-1]))
    close = np.flatnonzero(starts[1:] & (np.diff(sorted_values) <= 2e-14 * scale))
    for i in close:
        if f"{sorted_values[i]:.15g}" == f"{sorted_values[i + 1]:.15g}":
            starts[i + 1] = False
    return starts


def grf_ranks(x) -> np.ndarray:
    """Integer ranks 1..m of the distinct values of ``x``: R's ``as.integer(as.factor(x))``."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size, dtype=np.intp)
    ranks[order] = np.cumsum(_level_starts(x[order]))
    return ranks


def _decreasing_order(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, rank[order]): R's ``order(as.integer(as.factor(x)), decreasing = TRUE)`` (stable).

    One stable ascending sort; the levels are then laid out in reverse while units inside a
    level keep their original order, as R's stable decreasing order does.
    """
    n = x.size
    asc = np.argsort(x, kind="stable")
    starts = _level_starts(x[asc])
    level = np.cumsum(starts)  # 1..m, ascending
    first = np.flatnonzero(starts)
    sizes = np.diff(np.append(first, n))
    ends = first + sizes  # one past each level, ascending positions
    within = np.arange(n) - np.repeat(first, sizes)
    position = np.repeat(n - ends, sizes) + within
    order = np.empty(n, dtype=np.intp)
    order[position] = asc
    rank_sorted = np.empty(n, dtype=np.intp)
    rank_sorted[position] = level
    return order, rank_sorted


# ----------------------------------------------------------------------------------------------
# the statistic
def _rate_sorted(wdr: np.ndarray, w: np.ndarray, rank: np.ndarray, q: np.ndarray,
                 target: str) -> np.ndarray:
    """[RATE, TOC(q_1), …, TOC(q_m)] for units already sorted by decreasing priority.

    ``wdr`` = w·Γ, ``w`` the (positive) weights, ``rank`` the integer priority ranks (non-increasing).
    This is grf's ``estimate_rate`` step by step.
    """
    n = w.size
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    np.not_equal(rank[1:], rank[:-1], out=new_group[1:])
    if new_group.all():  # no ties: Γ = (wΓ) / w, needed only at the q-grid boundary units
        wdr_sorted = wdr
    else:  # ties: every Γ in a tied group becomes the group's weighted mean Σ wΓ / Σ w
        starts = np.flatnonzero(new_group)
        group_mean = np.add.reduceat(wdr, starts) / np.add.reduceat(w, starts)
        wdr_sorted = np.repeat(group_mean, np.diff(np.append(starts, n))) * w
    cw = np.cumsum(w)
    total = cw[-1]
    cdr = np.cumsum(wdr_sorted)
    ate = cdr[-1] / total  # (grf sums in long double; taking the running sum's end keeps TOC(1) = 0)
    toc = cdr / cw - ate
    if target == "AUTOC":
        rate = np.dot(toc, w) / total
    else:  # QINI
        rate = np.dot(cw / total * w, toc) / total

    nw = q * total
    idx = np.searchsorted(cw, nw + _ZERO, side="right")  # R's findInterval
    lower = np.maximum(idx, 1) - 1
    denominator_adj = nw - cw[lower]
    boundary = np.minimum(idx + 1, idx.max()) - 1
    numerator_adj = denominator_adj * wdr_sorted[boundary] / w[boundary]
    toc_grid = (cdr[lower] + numerator_adj) / (cw[lower] + denominator_adj) - ate
    return np.concatenate([[rate], toc_grid])


class _SortedRule:
    """One priority rule sorted once: weighted scores, weights, ranks and cluster codes in order."""

    def __init__(self, priority: np.ndarray, wdr: np.ndarray, w: np.ndarray, clusters: np.ndarray):
        order, self.rank = _decreasing_order(priority)
        self.wdr = wdr[order]
        self.w = w[order]
        self.clusters = clusters[order]

    def statistic(self, q: np.ndarray, target: str, chosen: np.ndarray | None = None) -> np.ndarray:
        if chosen is None:
            return _rate_sorted(self.wdr, self.w, self.rank, q, target)
        pos = np.flatnonzero(chosen[self.clusters])
        return _rate_sorted(self.wdr[pos], self.w[pos], self.rank[pos], q, target)


def _cluster_codes(clusters, n: int) -> tuple[np.ndarray, int]:
    if clusters is None:
        return np.arange(n), n
    values = np.asarray(clusters)
    if values.ndim != 1 or len(values) != n:
        raise GeovitError(f"`clusters` must be a vector of length {n} (one id per unit), "
                          f"got shape {values.shape}")
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    missing = np.flatnonzero(codes < 0)
    if missing.size:
        raise GeovitError(f"`clusters` is missing (NaN/None) at units {_first(missing)}")
    return codes.astype(np.intp), len(uniques)


def rank_average_treatment_effect(dr_scores, priorities, target: str = "AUTOC", q: Sequence[float] | None = None,
                                  sample_weight=None, clusters=None, n_bootstrap: int = 200,
                                  random_state=None) -> RATEResult:
    """RATE (AUTOC or QINI) of a priority rule, with its TOC curve and half-sample bootstrap SEs.

    Python counterpart of grf's ``rank_average_treatment_effect.fit(DR.scores, priorities, target,
    q, R, sample.weights, clusters)`` with identical point estimates and the same bootstrap.

    Args:
        dr_scores: (n,) doubly-robust scores Γ of the evaluation units (see :func:`causal.scores.aipw_scores`).
            They must not have been fitted on the data that produced ``priorities``.
        priorities: (n,) priority scores S (larger = treat first), e.g. CATEs predicted by a model fitted
            on other data; or two columns (an ``(n, 2)`` array, a two-column DataFrame or a dict of two
            vectors) to compare two rules on shared bootstrap draws.
        target: ``"AUTOC"`` (α(u) = 1) or ``"QINI"`` (α(u) = u).
        q: grid of fractions for the TOC table, strictly increasing in (0, 1] with last entry 1;
            default 0.1, 0.2, …, 1.
        sample_weight: (n,) positive weights (rescaled to sum 1 as grf does), default unit weights.
        clusters: (n,) cluster ids; the bootstrap draws ⌊K/2⌋ of the K clusters per replicate.
            Default: one cluster per unit.
        n_bootstrap: R, number of half-sample replicates (R < 2 gives std_err 0).
        random_state: seed or ``numpy.random.Generator`` for the bootstrap.

    Returns:
        RATEResult with ``estimate``, ``std_err``, ``rate_ratio``, ``target`` and ``toc``.

    Examples:
        >>> r = rank_average_treatment_effect([3, -1, 2, 0], [.9, .1, .5, .5], q=[.3, .5, 1], n_bootstrap=0)
        >>> round(r.estimate, 6), r.toc["estimate"].round(6).tolist()
        (0.916667, [1.666667, 1.0, 0.0])
    """
    target = str(target).upper()
    if target not in TARGETS:
        raise GeovitError(f"`target` must be one of {TARGETS}, got {target!r}")
    dr = _as_float_vector(dr_scores, "dr_scores")
    n = dr.size
    if n == 0:
        raise GeovitError("`dr_scores` is empty: RATE needs at least one evaluation unit")
    columns, labels = _priority_columns(priorities, n)
    q = _check_q(q)
    if sample_weight is None:
        w = np.ones(n)
    else:
        w = _as_float_vector(sample_weight, "sample_weight", n)
        bad = np.flatnonzero(w <= 0)
        if bad.size:
            raise GeovitError(f"`sample_weight` must be > 0; non-positive at units {_first(bad)}")
        w = w / w.sum()
    codes, n_clusters = _cluster_codes(clusters, n)
    n_bootstrap = int(n_bootstrap)
    if n_bootstrap < 0:
        raise GeovitError(f"`n_bootstrap` must be >= 0, got {n_bootstrap}")
    if n_bootstrap > 0 and n_clusters // 2 <= 1:
        raise GeovitError(
            f"the half-sample bootstrap needs at least 4 clusters (⌊K/2⌋ ≥ 2 drawn per replicate); "
            f"got K = {n_clusters} {'clusters' if clusters is not None else 'units'}")

    rules = [_SortedRule(col, dr * w, w, codes) for col in columns]
    point = np.stack([rule.statistic(q, target) for rule in rules], axis=1)  # (1 + m, n_rules)

    rng = np.random.default_rng(random_state)
    replicates = np.empty((n_bootstrap,) + point.shape)
    chosen = np.zeros(n_clusters, dtype=bool)
    half = n_clusters // 2
    for b in range(n_bootstrap):
        chosen[:] = False
        chosen[rng.choice(n_clusters, half, replace=False, shuffle=False)] = True
        for j, rule in enumerate(rules):
            replicates[b, :, j] = rule.statistic(q, target, chosen)

    if len(rules) == 2:
        point = np.column_stack([point, point[:, 0] - point[:, 1]])
        replicates = np.concatenate([replicates, replicates[:, :, :1] - replicates[:, :, 1:2]], axis=2)
        labels = labels + [f"{labels[0]} - {labels[1]}"]
    if n_bootstrap >= 2:
        std = replicates.std(axis=0, ddof=1)
    else:
        std = np.zeros_like(point)
    point[np.abs(point) < _ZERO] = 0.0
    std[np.abs(std) < _ZERO] = 0.0

    toc = pd.DataFrame({
        "q": np.tile(q, len(labels)),
        "estimate": point[1:].T.ravel(),
        "std_err": std[1:].T.ravel(),
        "priority": np.repeat(labels, q.size),
    })
    targets = [f"{label} | {target}" for label in labels]
    if len(labels) == 1:
        return RATEResult(float(point[0, 0]), float(std[0, 0]), targets[0], toc, n_bootstrap, labels)
    return RATEResult(point[0].copy(), std[0].copy(), targets, toc, n_bootstrap, labels)
