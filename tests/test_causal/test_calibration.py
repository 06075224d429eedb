"""grf's calibration test, DR group effects and interval coverage, against cases worked by hand."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.linear_model import LinearRegression

from causal import test_calibration as calibration_from_package
from causal.calibration import (ci_column_names, cluster_robust_vcov, group_average_effects, interval_coverage,
                                test_calibration)
from causal.estimators import MultiScaleCATE
from causal.scores import aipw_scores
from geovit.errors import GeovitError

# eight units with known DR scores and out-of-bag predictions
TAU = np.array([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0])
GAMMA = np.array([0.2, 1.9, 0.7, 2.6, 1.8, 4.1, 2.9, 5.2])


def test_dr_calibration_against_ols_by_hand():
    n = TAU.size
    mean = TAU.mean()  # τ̄ = 2.25
    d = TAU - mean
    # the regressors τ̄·1 and τ̂ − τ̄ are orthogonal, so each coefficient is a one-regressor fit
    b_mean = GAMMA.mean() / mean
    b_diff = (d @ GAMMA) / (d @ d)
    resid = GAMMA - b_mean * mean - b_diff * d
    h = 1 / n + d ** 2 / (d @ d)  # hat values of the two orthogonal columns
    u = resid / (1 - h)  # HC3 residuals
    se_mean = np.sqrt(np.sum(u ** 2)) / (n * mean)
    se_diff = np.sqrt(np.sum(d ** 2 * u ** 2)) / (d @ d)
    result = test_calibration(dr_scores=GAMMA, tau_hat=TAU)
    table = result.table
    np.testing.assert_allclose(table["estimate"], [b_mean, b_diff], rtol=1e-12)
    np.testing.assert_allclose(table["std_err"], [se_mean, se_diff], rtol=1e-12)
    np.testing.assert_allclose(table["t_value"], [b_mean / se_mean, b_diff / se_diff], rtol=1e-12)
    # one-sided p-values on n - 2 degrees of freedom, P(T > t)
    np.testing.assert_allclose(table["p_value"], stats.t.sf(table["t_value"], n - 2), rtol=1e-12)
    assert result.df == 6 and result.target == "dr_scores" and result.mean_prediction == pytest.approx(2.25)
    # the same numbers from an independent OLS implementation
    fit = sm.OLS(GAMMA, np.column_stack([np.full(n, mean), d])).fit(cov_type="HC3")
    np.testing.assert_allclose(table["estimate"], fit.params, rtol=1e-10)
    np.testing.assert_allclose(table["std_err"], fit.bse, rtol=1e-10)
    assert result.slope_one_t == pytest.approx((b_diff - 1) / se_diff)
    assert "differential.forest.prediction" in str(result) and "HC3" in str(result)
    assert calibration_from_package is test_calibration


def test_grf_residual_form_against_ols_by_hand():
    rng = np.random.default_rng(1)
    n = 10
    w = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 0], float)
    e = np.full(n, 0.4)
    m = rng.normal(size=n)
    tau = rng.uniform(0, 2, n)
    y = m + (w - e) * 1.5 * tau + rng.normal(scale=0.3, size=n)
    X = np.column_stack([(w - e) * tau.mean(), (w - e) * (tau - tau.mean())])
    fit = sm.OLS(y - m, X).fit(cov_type="HC3")
    result = test_calibration(Y=y, W=w, Y_hat=m, W_hat=e, tau_hat=tau)
    np.testing.assert_allclose(result.table["estimate"], fit.params, rtol=1e-10)
    np.testing.assert_allclose(result.table["std_err"], fit.bse, rtol=1e-10)
    assert result.target == "residuals"


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(8, 40))
def test_residual_and_dr_forms_coincide_in_a_balanced_trial(seed, n):
    """With ê = 1/2, Γ = 4 (W − ½)(Y − m̂): both regressions give the same coefficients and HC3 SEs."""
    rng = np.random.default_rng(seed)
    w = np.r_[0, 1, rng.integers(0, 2, n - 2)].astype(float)
    y, m = rng.normal(size=n), rng.normal(size=n)
    tau = rng.normal(1.0, 0.5, n)
    gamma = aipw_scores(y, w, m, tau, 0.5)
    a = test_calibration(Y=y, W=w, Y_hat=m, W_hat=0.5, tau_hat=tau).table
    b = test_calibration(dr_scores=gamma, tau_hat=tau).table
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-8, atol=1e-12)


def test_cluster_robust_hc3_by_hand_and_the_other_types():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(6, 2))
    r = rng.normal(size=6)
    clusters = np.array(["a", "a", "b", "b", "c", "c"])
    xtx_inv = np.linalg.inv(X.T @ X)
    meat = np.zeros((2, 2))
    for g in ("a", "b", "c"):
        Xg, rg = X[clusters == g], r[clusters == g]
        adj = np.linalg.inv(np.eye(2) - Xg @ xtx_inv @ Xg.T) @ rg  # (I − H_gg)⁻¹ e_g
        s = Xg.T @ adj
        meat += np.outer(s, s)
    np.testing.assert_allclose(cluster_robust_vcov(X, r, clusters, "HC3"), xtx_inv @ meat @ xtx_inv, rtol=1e-10)
    # one unit per cluster: sandwich::vcovCL = vcovHC for HC1-HC3, and G/(G − 1) × HC0
    fit = sm.OLS(r, X).fit()
    for kind in ("HC1", "HC2", "HC3"):
        np.testing.assert_allclose(cluster_robust_vcov(X, fit.resid, None, kind), getattr(fit, f"cov_{kind}"),
                                   rtol=1e-10)
    np.testing.assert_allclose(cluster_robust_vcov(X, fit.resid, None, "HC0"), 6 / 5 * fit.cov_HC0, rtol=1e-10)
    with pytest.raises(GeovitError, match="vcov_type 'HC9'"):
        cluster_robust_vcov(X, r, None, "HC9")


def test_one_sided_p_values_and_errors():
    res = test_calibration(dr_scores=-GAMMA, tau_hat=TAU)  # effects of the opposite sign
    assert (res.table["t_value"] < 0).all() and (res.table["p_value"] > 0.5).all()
    with pytest.raises(GeovitError, match="missing Y, W"):
        test_calibration(Y_hat=np.zeros(3), W_hat=0.5, tau_hat=np.arange(3.0))
    with pytest.raises(GeovitError, match="τ̂ is constant"):
        test_calibration(dr_scores=GAMMA, tau_hat=np.ones(8))
    with pytest.raises(GeovitError, match="not both"):
        test_calibration(dr_scores=GAMMA, tau_hat=TAU, Y=GAMMA)
    with pytest.raises(GeovitError, match=r"`tau_hat` has 3 values but `dr_scores` has 8 units"):
        test_calibration(dr_scores=GAMMA, tau_hat=TAU[:3])
    with pytest.raises(GeovitError, match="not fitted"):
        test_calibration(MultiScaleCATE())


def test_calibration_of_a_fitted_forest():
    """Strong heterogeneity is detected (β > 0, small p); the forest path uses its own nuisances."""
    rng = np.random.default_rng(0)
    n = 400
    x = rng.normal(size=(n, 3))
    tau = 1.0 + 2.0 * (x[:, 0] > 0)
    w = rng.integers(0, 2, n)
    y = x[:, 1] + w * tau + 0.5 * rng.normal(size=n)
    clusters = np.repeat(np.arange(n // 4), 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MultiScaleCATE(propensity=0.5, n_estimators=48, random_state=0,
                               model_y=LinearRegression()).fit(y, w, {"x": x}, groups=clusters)
    res = test_calibration(model)
    assert res.n_clusters == n // 4
    assert res.table.loc["differential.forest.prediction", "t_value"] > 3
    assert res.table.loc["differential.forest.prediction", "p_value"] < 0.01
    assert abs(res.mean_forest_prediction - 1) < 0.2
    nu = model.nuisances()
    same = test_calibration(Y=y, W=w, Y_hat=nu["m_hat"], W_hat=nu["e_hat"], tau_hat=nu["tau_hat"], clusters=clusters)
    np.testing.assert_allclose(res.table.to_numpy(), same.table.to_numpy())
    assert set(res.to_dict()) >= {"mean.forest.prediction", "differential.forest.prediction", "slope_one_t"}


def test_group_average_effects_by_hand():
    prio = np.array([3.0, 1.0, 4.0, 2.0, 8.0, 6.0, 5.0, 7.0])
    gamma = np.array([2.0, 0.0, 3.0, 1.0, 9.0, 5.0, 6.0, 8.0])
    clusters = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    table = group_average_effects(gamma, prio, n_groups=2, level=0.9, truth=np.arange(8.0), clusters=clusters)
    lo, hi = ci_column_names(0.9)
    assert (lo, hi) == ("ci_lower_90", "ci_upper_90") and ci_column_names(0.975)[0] == "ci_lower_97.5"
    low = table.iloc[0]
    # group 1 = the 4 lowest priorities (units 1, 3, 0, 2) with scores 0, 1, 2, 3
    assert low["n_units"] == 4 and low["tau_hat_max"] == 4.0 and low["estimate"] == pytest.approx(1.5)
    # clusters {0, 1}: sums of centred scores (2 − 1.5) + (0 − 1.5) = −1 and (3 − 1.5) + (1 − 1.5) = 1
    se = np.sqrt(2 / 1 * (1 + 1)) / 4
    assert low["std_err"] == pytest.approx(se)
    assert low[hi] == pytest.approx(1.5 + stats.norm.ppf(0.95) * se)
    assert low["tau_true_mean"] == pytest.approx(np.mean([0, 1, 2, 3]))
    high = table.iloc[1]
    assert high["estimate"] == pytest.approx(7.0) and high["tau_true_mean"] == pytest.approx(5.5)
    plain = group_average_effects(gamma, prio, n_groups=2)
    assert plain.iloc[0]["std_err"] == pytest.approx(np.std([0, 1, 2, 3], ddof=1) / 2)
    with pytest.raises(GeovitError, match="n_groups"):
        group_average_effects(gamma, prio, n_groups=5)
    with pytest.raises(GeovitError, match="level"):
        group_average_effects(gamma, prio, level=95)


def test_interval_coverage():
    assert interval_coverage([0, 0, 0, 0], [1, 1, 1, 1], [0.5, 1.0, 2.0, -1.0]) == 0.5
    with pytest.raises(GeovitError, match="`truth` has 1 values"):
        interval_coverage([0, 0], [1, 1], [0.5])
