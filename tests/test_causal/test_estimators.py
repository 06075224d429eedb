"""MultiScaleCATE, the grf RATE recipe and the scale-subset search (tiny forests, tiny data)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr
from sklearn.linear_model import LinearRegression

from causal.estimators import (MultiScaleCATE, as_scale_dict, evaluate_rate, grf_mtry, scale_search,
                               split_halves, stack_scales)
from geovit.errors import GeovitError

SCALES = (32, 64, 256)


def make_rct(n=400, seed=0, effect_scales=(32,), strength=2.0):
    """Embeddings at three scales; τ depends on feature 0 of ``effect_scales``; W ~ Bern(0.5)."""
    rng = np.random.default_rng(seed)
    emb = {s: rng.normal(size=(n, 3)) for s in SCALES}
    tau = 0.5 + strength * sum((emb[s][:, 0] > 0).astype(float) for s in effect_scales)
    t = rng.integers(0, 2, n)
    y = emb[64][:, 1] + t * tau + 0.5 * rng.normal(size=n)
    return y, t, emb, tau


def small(**kw):
    """Tiny forest; linear E[Y|X] keeps the many fits of the recipe tests fast."""
    params = dict(propensity=0.5, n_estimators=48, random_state=0, model_y=LinearRegression())
    params.update(kw)
    return MultiScaleCATE(**params)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_scale_inputs_dict_dataarray_and_datasets_agree():
    _, _, emb, _ = make_rct(n=20)
    cube = np.stack([emb[s] for s in SCALES], axis=1)  # unit × scale × feature
    da = xr.DataArray(cube, dims=("unit", "scale", "feature"),
                      coords={"unit": np.arange(20), "scale": list(SCALES)})
    per_scale = xr.Dataset({s: (("unit", "feature"), emb[s]) for s in SCALES})
    feature_first = da.transpose("feature", "scale", "unit")
    expected = np.concatenate([emb[64], emb[256]], axis=1)
    for source in (emb, da, da.to_dataset(name="embedding"), per_scale, feature_first):
        np.testing.assert_array_equal(stack_scales(source, [64, 256]), expected)
    assert list(as_scale_dict(da)) == list(SCALES)
    np.testing.assert_array_equal(stack_scales(emb, ["64", "256"]), expected)  # CLI strings


def test_scale_input_errors_are_named():
    _, _, emb, _ = make_rct(n=20)
    with pytest.raises(GeovitError, match=r"scales \[128\] not in X_scales"):
        stack_scales(emb, [32, 128])
    bad = dict(emb)
    bad[64] = emb[64].copy()
    bad[64][[3, 7], 1] = np.nan
    with pytest.raises(GeovitError, match=r"NaN/inf for units \(row positions\) \[3, 7\]"):
        stack_scales(bad, [32, 64])
    with pytest.raises(GeovitError, match="same units"):
        stack_scales({32: emb[32], 64: emb[64][:10]})
    with pytest.raises(GeovitError, match="'scale' dim"):
        as_scale_dict(xr.DataArray(emb[32], dims=("unit", "feature")))


def test_fit_effect_and_interval_recover_heterogeneity():
    y, t, emb, tau = make_rct(n=500, effect_scales=(32,))
    model = small(scales=[32, 256], model_y=None).fit(y, t, emb)  # grf-like forest nuisances
    assert model.scales_ == [32, 256] and model.n_features_in_ == 6
    cate = model.effect(emb)
    assert np.corrcoef(cate, tau)[0, 1] > 0.7
    lo, hi = model.effect_interval(emb, alpha=0.1)
    assert np.all(lo <= cate + 1e-9) and np.all(cate <= hi + 1e-9)
    wide_lo, wide_hi = model.effect_interval(emb, alpha=0.01)
    assert np.all(wide_hi - wide_lo >= hi - lo - 1e-9)
    # known propensity: ê = 0.5 exactly; DR scores average to the ATE
    nuisances = model.nuisances()
    assert np.all(nuisances["e_hat"] == 0.5)
    scores = model.dr_scores()
    assert abs(scores.mean() - tau.mean()) < 4 * scores.std() / np.sqrt(len(y))
    # OOB τ̂ is close to, but not identical with, in-sample predictions
    oob = model.oob_effect()
    assert np.corrcoef(oob, tau)[0, 1] > 0.6 and not np.allclose(oob, cate)
    with pytest.raises(GeovitError, match="fitted on 6"):
        model.effect({32: emb[32], 256: emb[256][:, :2]})


def test_forest_settings_follow_grf_and_pass_through():
    model = MultiScaleCATE(n_estimators=50, propensity=0.3, use_ray=True, n_jobs=2, random_state=1)
    forest = model._make_forest(p=40)
    assert forest.n_estimators == 52  # rounded up to a multiple of subforest_size = 4
    assert forest.max_features == grf_mtry(40) == 27 and grf_mtry(5) == 5
    assert forest.max_samples == 0.5 and forest.min_samples_leaf == 5 and forest.honest
    assert forest.discrete_treatment and forest.use_ray and forest.n_jobs == 2
    assert forest.model_t.predict_proba(np.zeros((2, 1)))[0, 1] == 0.3
    with pytest.raises(GeovitError, match="propensity"):
        MultiScaleCATE(propensity=1.0)._make_forest(3)


def test_estimated_propensity_path():
    y, t, emb, tau = make_rct(n=300, seed=3)
    model = small(propensity=None, model_y=None, scales=[32]).fit(y, t, emb)
    e = model.nuisances()["e_hat"].to_numpy()
    assert np.all((e > 0) & (e < 1)) and abs(e.mean() - t.mean()) < 0.1
    assert np.isfinite(model.dr_scores()).all()


@pytest.mark.parametrize("Y, T, match", [
    (None, [0, 1, 2], r"binary 0/1; units \(row positions\) \[2\]"),
    ([0.0, np.nan, 1.0], None, r"`Y` is NaN/inf for units \(row positions\) \[1\]"),
    (None, [1, 1, 1], "single arm"),
    ([0.0, 1.0], None, "`Y` has 2 values but X_scales has 3"),
])
def test_bad_outcome_or_treatment(Y, T, match):
    emb = {32: np.zeros((3, 2))}
    with pytest.raises(GeovitError, match=match):
        small().fit([0.0, 1.0, 2.0] if Y is None else Y, [0, 1, 0] if T is None else T, emb)


def test_split_halves_keeps_clusters_together():
    clusters = np.repeat(np.arange(12), 5)
    a, b = split_halves(60, clusters, 0.5, random_state=0)
    assert len(a) == len(b) == 30 and not set(clusters[a]) & set(clusters[b])
    with pytest.raises(GeovitError, match="one part would be empty"):
        split_halves(3, np.zeros(3), 0.5)


def test_rate_recipe_detects_heterogeneity_and_not_its_absence():
    y, t, emb, tau = make_rct(n=400, effect_scales=(32,), seed=1)
    signal = evaluate_rate(small(scales=[32]), y, t, emb, n_bootstrap=100, random_state=0)
    assert len(signal.folds) == 2 and signal.rate_ratio > 2.5
    a, b = signal.units
    assert not set(a) & set(b) and len(a) + len(b) == 400
    cate = signal.cate_out_of_sample(400)
    assert np.corrcoef(cate, tau)[0, 1] > 0.5
    assert set(signal.toc.columns) >= {"q", "estimate", "std_err", "priority", "fold"}
    y0, t0, emb0, _ = make_rct(n=400, strength=0.0, seed=1)
    null = small(scales=[32]).evaluate(y0, t0, emb0, swap=False, n_bootstrap=100, random_state=0)
    assert len(null.folds) == 1 and abs(null.rate_ratio) < 2.5


def test_scale_search_protocol_and_multiscale_gain():
    y, t, emb, tau = make_rct(n=480, effect_scales=(32, 256), seed=2)
    emb = {s: emb[s] for s in (32, 256, 64)}
    result = scale_search(y, t, emb, estimator=small(), max_k=2, swap=False, n_bootstrap=50,
                          random_state=0)
    assert sorted(result.table["scales"]) == sorted(["32", "256", "64", "32+256", "32+64", "256+64"])
    assert result.table["rate_ratio"].is_monotonic_decreasing
    by_name = result.table.set_index("scales")["rate_ratio"]
    assert result.best_single == max([(32,), (256,), (64,)], key=lambda c: by_name["+".join(map(str, c))])
    assert result.best_multi == max([(32, 256), (32, 64), (256, 64)],
                                    key=lambda c: by_name["+".join(map(str, c))])
    assert by_name["64"] < by_name["+".join(map(str, result.best_single))]  # 64 carries no τ signal
    assert result.selection_gain == pytest.approx(
        by_name["+".join(map(str, result.best_multi))] - by_name["+".join(map(str, result.best_single))])
    sel, conf = result.selection_units, result.confirmation_units
    assert not set(sel) & set(conf) and len(sel) + len(conf) == 480
    confirmation = result.confirmation.set_index("role")
    assert list(confirmation.index) == ["best_multi", "best_single", "best_multi - best_single"]
    ratio, estimate = confirmation["rate_ratio"], confirmation["estimate"]
    assert result.multiscale_gain == pytest.approx(ratio["best_multi"] - ratio["best_single"])
    assert estimate.iloc[2] == pytest.approx(estimate.iloc[0] - estimate.iloc[1])
    # the choice never sees the confirmation units: scrambling their outcomes changes nothing there
    y2 = y.copy()
    y2[conf] = np.random.default_rng(9).permutation(y2[conf])
    again = scale_search(y2, t, emb, estimator=small(), max_k=[2], swap=False, n_bootstrap=50,
                         random_state=0)
    np.testing.assert_array_equal(again.table["rate_ratio"], result.table["rate_ratio"])
    assert again.confirmation["rate_ratio"].tolist() != result.confirmation["rate_ratio"].tolist()
    with pytest.raises(GeovitError, match="impossible with 3 scales"):
        scale_search(y, t, emb, estimator=small(), max_k=[4])


def test_paired_comparison_shares_scores_and_draws():
    y, t, emb, tau = make_rct(n=400, effect_scales=(32,), seed=4)
    pair = {"signal": small(scales=[32]), "noise": small(scales=[64])}
    ev = evaluate_rate(pair, y, t, emb, swap=False, n_bootstrap=100, random_state=0)
    assert ev.target == ["signal | AUTOC", "noise | AUTOC", "signal - noise | AUTOC"]
    assert ev.scales == [32, 64]  # evaluation forest on the union of both rules' scales
    assert ev.estimate[2] == pytest.approx(ev.estimate[0] - ev.estimate[1])
    assert ev.rate_ratio[2] > 2  # the informative scale wins, significantly
    train = np.setdiff1d(np.arange(400), ev.units[0])
    single = evaluate_rate(small(scales=[32]), y, t, emb, swap=False, n_bootstrap=0,
                           split=(train, ev.units[0]))
    np.testing.assert_allclose(single.priorities[0], ev.priorities[0][:, 0])  # same forest on A
    with pytest.raises(GeovitError, match="exactly two"):
        evaluate_rate({"a": small()}, y, t, emb)


def test_pilot_feature_selection_keeps_the_effect_modifier():
    """select_features=1 (Athey & Wager 2019): features above the mean pilot importance; the rest are controls."""
    y, t, emb, tau = make_rct(n=400, effect_scales=(32,), seed=5)
    model = small(select_features=1.0, model_y=None).fit(y, t, emb)
    selected = model.selected_features_
    assert 0 in selected and 0 < selected.size < 9  # feature 0 of scale 32 drives τ
    assert model._train[2].shape == (400, selected.size)  # the forest sees the selected features only
    cate = model.effect(emb)
    assert cate.shape == (400,) and np.corrcoef(cate, tau)[0, 1] > 0.7
    lo, hi = model.effect_interval(emb, alpha=0.1)
    np.testing.assert_allclose((hi - lo) / 2, 1.6448536 * model.effect_stderr(emb), rtol=1e-5)
    plain = small().fit(y, t, emb)
    assert plain.selected_features_.tolist() == list(range(9))


@pytest.mark.parametrize("params, match", [
    ({"n_estimators": 0}, "`n_estimators` must be an integer >= 1"),
    ({"subforest_size": 1}, "`subforest_size` must be an integer >= 2"),
    ({"max_samples": 0.8}, r"`max_samples` must be a fraction in \(0, 0.5\]"),
    ({"min_samples_leaf": 0}, "`min_samples_leaf`"),
    ({"n_jobs": 0}, "`n_jobs` must be a non-zero integer"),
    ({"select_features": -1.0}, "`select_features`"),
])
def test_bad_forest_settings_are_named(params, match):
    y, t, emb, _ = make_rct(n=40)
    with pytest.raises(GeovitError, match=match):
        small(**params).fit(y, t, emb)


def test_too_few_units_per_arm():
    y, t, emb, _ = make_rct(n=40)
    t = np.zeros(40, int)
    t[:3] = 1
    with pytest.raises(GeovitError, match="3 treated and 37 control units are too few"):
        small().fit(y, t, emb)
    with pytest.raises(GeovitError, match=r"holdout_fraction=0.9 \(CLI --holdout\).*selection part"):
        scale_search(*make_rct(n=60)[:3], estimator=small(), holdout_fraction=0.9, max_k=1, n_bootstrap=2)
