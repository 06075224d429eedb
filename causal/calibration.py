"""How far to trust a causal forest's CATE: grf's calibration test, group effects, interval coverage.

Three tools for the uncertainty of τ̂(x), each with a different target:

* :func:`test_calibration` -- grf's omnibus calibration test (``grf::test_calibration``; the "best
  linear predictor" of Chernozhukov, Demirer, Duflo & Fernández-Val, "Generic Machine Learning
  Inference on Heterogeneous Treatment Effects in Randomized Experiments", arXiv:1712.04802, §3).
  With the out-of-bag predictions τ̂_i, their mean τ̄ and the cross-fitted nuisances
  m̂(x) = E[Y | X = x] and ê(x) = P(W = 1 | X = x), grf fits by least squares, without intercept,

      Y_i − m̂(X_i) = α · (W_i − ê(X_i)) τ̄ + β · (W_i − ê(X_i)) (τ̂_i − τ̄) + ε_i

  and reports α (``mean.forest.prediction``) and β (``differential.forest.prediction``) with
  heteroskedasticity-robust HC3 standard errors (``sandwich::vcovCL``, clustered when the forest
  has clusters), t-statistics on n − 2 degrees of freedom and *one-sided* p-values P(T > t).
  α ≈ 1: the average prediction is right; β ≈ 1: the heterogeneity is well calibrated; β > 0
  significantly: there is heterogeneity; β > 1: the forest *under-disperses* -- it shrinks the
  effects towards their mean, the usual sign that pointwise intervals under-cover.
  ``target="dr_scores"`` fits the same two coefficients by regressing the doubly-robust scores
  Γ_i on τ̄ and τ̂_i − τ̄ (the BLP with DR scores). In a balanced trial with known propensity
  ê = 1/2 the two regressions are identical, coefficients and HC3 errors alike (then
  Γ_i = 4 (W_i − ½)(Y_i − m̂_i)); with other or estimated propensities they differ.
* :func:`group_average_effects` -- units ranked by τ̂ into quantile groups, each group's average
  effect estimated by the mean of its DR scores (grf ``average_treatment_effect`` on a subset)
  with a normal interval. It covers the group's *average* true effect whatever the forest's
  smoothing bias, because the DR scores are unbiased for each unit's effect.
* :func:`interval_coverage` -- the share of intervals that contain a known truth (simulations).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from causal.scores import _vector
from geovit.errors import GeovitError

__all__ = ["CalibrationTest", "test_calibration", "group_average_effects", "interval_coverage",
           "ci_column_names"]

ROWS = ("mean.forest.prediction", "differential.forest.prediction")
VCOV_TYPES = ("HC0", "HC1", "HC2", "HC3")


def ci_column_names(level: float, prefix: str = "ci") -> tuple[str, str]:
    """Column names of the interval bounds at ``level``: ``("ci_lower_95", "ci_upper_95")``.

    Levels that are not a whole percentage keep their decimals (``0.975`` → ``ci_lower_97.5``).
    """
    pct = f"{100 * level:.10g}"
    return f"{prefix}_lower_{pct}", f"{prefix}_upper_{pct}"


def _level(level: float) -> float:
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise GeovitError(f"`level` must be a number in (0, 1), got {level!r}") from None
    if not 0 < value < 1:
        raise GeovitError(f"`level` (confidence level) must lie strictly between 0 and 1, got {level!r}")
    return value


def _cluster_codes(clusters, n: int) -> np.ndarray:
    if clusters is None:
        return np.arange(n)
    codes, _ = pd.factorize(np.asarray(clusters).reshape(-1))
    if codes.size != n:
        raise GeovitError(f"`clusters` has {codes.size} entries for {n} units")
    if (codes < 0).any():
        raise GeovitError(f"`clusters` is missing for units (row positions) {np.flatnonzero(codes < 0)[:10].tolist()}")
    return codes


def _inv_power(m: np.ndarray, power: float) -> np.ndarray:
    """``m ** power`` for a symmetric positive semi-definite matrix (eigenvalues ~0 dropped)."""
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    tol = np.finfo(float).eps ** (1 / 1.3)
    safe = np.where(vals > tol, vals, 1.0)
    scaled = np.where(vals > tol, safe ** power, 0.0)
    return (vecs * scaled) @ vecs.T


def cluster_robust_vcov(X: np.ndarray, resid: np.ndarray, clusters=None, vcov_type: str = "HC3") -> np.ndarray:
    """Covariance of OLS coefficients as ``sandwich::vcovCL(fit, cluster, type)`` computes it.

    ``(X'X)⁻¹ [Σ_g X_g' ẽ_g ẽ_g' X_g] (X'X)⁻¹ · adj`` with, per cluster g (each unit its own
    cluster when ``clusters`` is None): HC0/HC1 ẽ_g = e_g and adj = G/(G − 1) (HC1 also
    (n − 1)/(n − k)); HC2 ẽ_g = (I − H_gg)^(-1/2) e_g, HC3 ẽ_g = (I − H_gg)^(-1) e_g with adj = 1
    (vcovCL's G/(G − 1) cancels against its Bell-McCaffrey factor). H_gg = X_g (X'X)⁻¹ X_g'.
    """
    vcov_type = str(vcov_type).upper()
    if vcov_type not in VCOV_TYPES:
        raise GeovitError(f"vcov_type {vcov_type!r}: expected one of {', '.join(VCOV_TYPES)}")
    n, k = X.shape
    codes = _cluster_codes(clusters, n)
    G = int(codes.max()) + 1
    if G < 2:
        raise GeovitError("cluster-robust standard errors need at least 2 clusters")
    xtx_inv = np.linalg.pinv(X.T @ X)
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    meat = np.zeros((k, k))
    for rows in np.split(order, bounds):
        Xg, eg = X[rows], resid[rows]
        if vcov_type in ("HC2", "HC3"):
            Hgg = Xg @ xtx_inv @ Xg.T
            eg = _inv_power(np.eye(len(rows)) - Hgg, -0.5 if vcov_type == "HC2" else -1.0) @ eg
        s = Xg.T @ eg
        meat += np.outer(s, s)
    adj = 1.0
    if vcov_type in ("HC0", "HC1"):
        adj = G / (G - 1)
        if vcov_type == "HC1":
            adj *= (n - 1) / (n - k)
    return adj * xtx_inv @ meat @ xtx_inv


@dataclass
class CalibrationTest:
    """Result of :func:`test_calibration`.

    ``table``: rows ``mean.forest.prediction`` and ``differential.forest.prediction``, columns
    ``estimate``, ``std_err``, ``t_value`` and ``p_value`` (one-sided, H₁: coefficient > 0), as
    grf prints them. ``slope_one_t``: t-statistic of ``differential.forest.prediction − 1`` (near 0
    when the forest's heterogeneity is calibrated, clearly > 0 when it shrinks effects towards the
    mean). ``target``: ``"residuals"`` (grf's regression) or ``"dr_scores"``.
    """

    table: pd.DataFrame
    vcov: np.ndarray
    vcov_type: str
    target: str
    n_units: int
    n_clusters: int
    df: int
    mean_prediction: float

    @property
    def mean_forest_prediction(self) -> float:
        """Coefficient of the mean forest prediction (1 when the average effect is right)."""
        return float(self.table.loc[ROWS[0], "estimate"])

    @property
    def differential_forest_prediction(self) -> float:
        """Coefficient of the differential forest prediction (1: well calibrated heterogeneity; > 1: τ̂ shrunk towards the mean; 0: no heterogeneity found)."""
        return float(self.table.loc[ROWS[1], "estimate"])

    @property
    def slope_one_t(self) -> float:
        """t-statistic of ``differential_forest_prediction`` against 1 (NaN without a standard error)."""
        row = self.table.loc[ROWS[1]]
        return float((row["estimate"] - 1.0) / row["std_err"]) if row["std_err"] > 0 else float("nan")

    def to_dict(self) -> dict:
        """JSON-ready summary: coefficients, SEs, t-values, one-sided p-values and settings."""
        out = {name: {col: float(v) for col, v in row.items()} for name, row in self.table.iterrows()}
        out.update({"vcov_type": self.vcov_type, "target": self.target, "n_units": self.n_units,
                    "n_clusters": self.n_clusters, "df": self.df, "slope_one_t": self.slope_one_t})
        return out

    def __str__(self) -> str:
        t = self.table
        def p(v: float) -> str:
            return "< 2.2e-16" if v < 2.2e-16 else f"{v:.4g}"
        def stars(v: float) -> str:
            return "***" if v < 0.001 else "**" if v < 0.01 else "*" if v < 0.05 else "." if v < 0.1 else ""
        width = max(len(r) for r in ROWS)
        lines = [f"Best linear fit using forest predictions (on held-out data) as well as the mean forest "
                 f"prediction as regressors, along with one-sided heteroskedasticity-robust ({self.vcov_type}) SEs"
                 + ("" if self.target == "residuals" else "; target: doubly-robust scores") + ":",
                 f"{'':{width}s}  Estimate  Std. Error  t value     Pr(>t)"]
        for name in ROWS:
            r = t.loc[name]
            lines.append(f"{name:{width}s}  {r.estimate:8.4f}  {r.std_err:10.4f}  {r.t_value:7.3f}  "
                         f"{p(r.p_value):>9s} {stars(r.p_value)}")
        lines.append(f"({self.n_units} units, {self.n_clusters} clusters, {self.df} df; "
                     f"differential.forest.prediction − 1: t = {self.slope_one_t:.2f})")
        return "\n".join(lines)


def test_calibration(forest=None, *, Y=None, W=None, Y_hat=None, W_hat=None, tau_hat=None, dr_scores=None,
                     clusters=None, vcov_type: str = "HC3") -> CalibrationTest:
    """grf's calibration test of a causal forest (see the module docstring for the regression).

    Pass either a fitted :class:`causal.estimators.MultiScaleCATE` (its training outcomes and
    treatments, cross-fitted m̂ and ê, out-of-bag τ̂ and the clusters it was fitted with are used,
    as grf uses the forest's ``Y.orig``, ``Y.hat``, ``W.orig``, ``W.hat`` and ``predict(forest)``),
    or arrays: ``Y, W, Y_hat, W_hat, tau_hat`` for grf's regression, or ``dr_scores, tau_hat`` to
    regress the doubly-robust scores on the same two regressors. ``tau_hat`` must be out-of-bag /
    cross-fitted for the test to mean anything. ``clusters`` makes the SEs cluster-robust;
    ``vcov_type`` is one of HC0..HC3 (grf's default HC3).

    Returns:
        :class:`CalibrationTest` (``print`` it for grf's table).

    Raises:
        GeovitError: missing or inconsistent inputs, NaN/inf values, or regressors without
            variation (e.g. τ̂ constant).
    """
    target = "residuals"
    if forest is not None:
        if not hasattr(forest, "forest_"):
            raise GeovitError("test_calibration: the forest is not fitted; call .fit(Y, T, X_scales) first")
        y, w, _ = forest._train
        nu = forest.nuisances()
        Y, W, Y_hat, W_hat, tau_hat = y, w, nu["m_hat"].to_numpy(), nu["e_hat"].to_numpy(), nu["tau_hat"].to_numpy()
        if clusters is None:
            clusters = getattr(forest, "groups_", None)
    if dr_scores is not None:
        if any(v is not None for v in (Y, W, Y_hat, W_hat)):
            raise GeovitError("test_calibration: give either dr_scores (with tau_hat) or Y, W, Y_hat, W_hat "
                              "(with tau_hat), not both")
        if tau_hat is None:
            raise GeovitError("test_calibration: dr_scores needs tau_hat (the out-of-bag CATE predictions)")
        target = "dr_scores"
        gamma = _vector(dr_scores, "dr_scores", None)
        tau = _vector(tau_hat, "tau_hat", gamma.size, ref="dr_scores")
        mean = float(tau.mean())
        X = np.column_stack([np.full(tau.size, mean), tau - mean])
        response = gamma
    else:
        missing = [k for k, v in (("Y", Y), ("W", W), ("Y_hat", Y_hat), ("W_hat", W_hat), ("tau_hat", tau_hat))
                   if v is None]
        if missing:
            raise GeovitError(f"test_calibration: missing {', '.join(missing)}; pass a fitted MultiScaleCATE, "
                              "or Y, W, Y_hat, W_hat and tau_hat, or dr_scores and tau_hat")
        y = _vector(Y, "Y", None)
        n = y.size
        w, m, e, tau = (_vector(v, name, n) for v, name in ((W, "W"), (Y_hat, "Y_hat"), (W_hat, "W_hat"),
                                                           (tau_hat, "tau_hat")))
        mean = float(tau.mean())
        rw = w - e
        X = np.column_stack([rw * mean, rw * (tau - mean)])
        response = y - m
    n = response.size
    if n < 3:
        raise GeovitError(f"test_calibration needs at least 3 units, got {n}")
    if np.linalg.matrix_rank(X) < 2:
        why = ("τ̂ is constant (no differential prediction)" if np.ptp(X[:, 1]) == 0
               else "the regressors are collinear (τ̄ = 0 or W − ê constant)")
        raise GeovitError(f"test_calibration: the regression is singular: {why}")
    coef, *_ = np.linalg.lstsq(X, response, rcond=None)
    vcov = cluster_robust_vcov(X, response - X @ coef, clusters, vcov_type)
    from scipy import stats

    se = np.sqrt(np.clip(np.diag(vcov), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        tval = coef / se
    df = n - 2
    table = pd.DataFrame({"estimate": coef, "std_err": se, "t_value": tval,
                          "p_value": stats.t.sf(tval, df)}, index=list(ROWS))
    return CalibrationTest(table=table, vcov=vcov, vcov_type=str(vcov_type).upper(), target=target, n_units=n,
                           n_clusters=int(_cluster_codes(clusters, n).max()) + 1, df=df, mean_prediction=mean)


test_calibration.__test__ = False  # a library function, not a pytest test


def group_average_effects(dr_scores, priorities, *, n_groups: int = 5, clusters=None, level: float = 0.95,
                          truth=None) -> pd.DataFrame:
    """Average effect per quantile group of ``priorities`` (τ̂), from doubly-robust scores.

    Units are ranked by ``priorities`` (ties broken by position) and cut into ``n_groups`` groups
    of (nearly) equal size, group 1 holding the lowest τ̂. Each group's effect is the mean of its
    DR scores Γ_i with the standard error of a mean (cluster-robust when ``clusters`` is given:
    whole-cluster sums, G/(G − 1) correction) and a normal interval at ``level``. The scores
    should come from a fit that did not use the unit's own outcome for its τ̂ (out-of-bag or
    cross-fitted), as the forest's :meth:`~causal.estimators.MultiScaleCATE.dr_scores` are.

    Returns:
        DataFrame with the columns ``group``, ``n_units``, ``tau_hat_min``, ``tau_hat_max``,
        ``tau_hat_mean``, ``estimate``, ``std_err`` and the bounds named by :func:`ci_column_names`
        (``ci_lower_95``, ``ci_upper_95``); with ``truth`` (simulations) also ``tau_true_mean`` and
        ``covered``.
    """
    level = _level(level)
    gamma = _vector(dr_scores, "dr_scores", None)
    n = gamma.size
    prio = _vector(priorities, "priorities", n, ref="dr_scores")
    if not isinstance(n_groups, (int, np.integer)) or not 1 <= n_groups <= n // 2:
        raise GeovitError(f"n_groups={n_groups!r}: expected an integer from 1 to {n // 2} "
                          f"(at least 2 units per group for {n} units)")
    codes = _cluster_codes(clusters, n)
    true = None if truth is None else _vector(truth, "truth", n, ref="dr_scores")
    from scipy import stats

    z = stats.norm.ppf(0.5 + level / 2)
    ranks = np.empty(n, dtype=int)
    ranks[np.argsort(prio, kind="stable")] = np.arange(n)
    group = ranks * n_groups // n
    lo_name, hi_name = ci_column_names(level)
    rows = []
    for g in range(n_groups):
        idx = np.flatnonzero(group == g)
        est = float(gamma[idx].mean())
        cl = codes[idx]
        uniq, inv = np.unique(cl, return_inverse=True)
        G = uniq.size
        if G < 2:
            se = float("nan")
        else:
            sums = np.bincount(inv, weights=gamma[idx] - est, minlength=G)
            se = float(np.sqrt(G / (G - 1) * np.sum(sums ** 2)) / idx.size)
        row = {"group": g + 1, "n_units": int(idx.size), "tau_hat_min": float(prio[idx].min()),
               "tau_hat_max": float(prio[idx].max()), "tau_hat_mean": float(prio[idx].mean()),
               "estimate": est, "std_err": se, lo_name: est - z * se, hi_name: est + z * se}
        if true is not None:
            row["tau_true_mean"] = float(true[idx].mean())
            row["covered"] = bool(row[lo_name] <= row["tau_true_mean"] <= row[hi_name])
        rows.append(row)
    return pd.DataFrame(rows)


def interval_coverage(lower, upper, truth) -> float:
    """Share of units whose interval ``[lower, upper]`` contains ``truth`` (simulations)."""
    lo = _vector(lower, "lower", None)
    hi = _vector(upper, "upper", lo.size, ref="lower")
    true = _vector(truth, "truth", lo.size, ref="lower")
    if lo.size == 0:
        raise GeovitError("interval_coverage: no intervals given")
    return float(np.mean((lo <= true) & (true <= hi)))
