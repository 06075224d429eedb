"""Multi-scale CATE: causal forests on concatenated multi-scale embeddings, evaluated with RATE.

Zhu, Jerzak & Daoud, "Optimizing Multi-Scale Representations to Detect Effect Heterogeneity Using
Earth Observation and Computer Vision" (CLeaR 2025, arXiv 2411.02134), §3 (multi-scale
concatenation x = [z_1, …, z_K] fed to an unchanged causal forest) and the evaluation protocol
summarised in ``specs/multiscale_cate.md`` §2:

1. fit a causal forest on half A, 2. predict τ̂ on half B (the *priorities*), 3. fit an
evaluation forest on B, 4. doubly-robust scores on B, 5. RATE (AUTOC) and its half-sample
bootstrap SE on B, 6. RATE Ratio = RATE / SE; optionally swap the halves and average.

:class:`MultiScaleCATE` wraps econml's ``CausalForestDML`` (binary treatment, honest forest,
grf-like settings: subsample 0.5, leaf size 5, mtry = min(⌈√p + 20⌉, p), random-forest nuisances
with max(50, trees/4) trees, or a known propensity for an RCT). :func:`scale_search` ranks every
single scale and every pair (or every k-subset) by RATE Ratio on a *selection* part of the units
and reports the Multi-scale Gain (best multi-scale RATE Ratio − best single-scale RATE Ratio) on
a held-out *confirmation* part, so the choice is never scored on the data that made it.

``X_scales`` everywhere is either a dict ``{scale: (n, d) array}`` or an xarray object as
:mod:`causal.embeddings` writes it (a DataArray / Dataset variable with dims
``(unit, scale, feature)``, or a Dataset with one ``(unit, feature)`` variable per scale).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Hashable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from causal.rate import RATEResult, rank_average_treatment_effect
from causal.scores import aipw_scores
from geovit.errors import GeovitError

__all__ = ["MultiScaleCATE", "KnownPropensity", "CATEEvaluation", "ScaleSearchResult",
           "as_scale_dict", "resolve_scales", "stack_scales", "scale_search", "split_halves"]


# ----------------------------------------------------------------------------------------------
# inputs
def as_scale_dict(X_scales) -> dict[Hashable, np.ndarray]:
    """``{scale: (n, d) float array}`` from a dict or an xarray DataArray / Dataset.

    Accepted layouts:

    * ``dict`` / mapping of scale → (n, d) array-like (a 1-D array is one feature);
    * ``xarray.DataArray`` with a ``scale`` dim (the other dims: units first, then features);
    * ``xarray.Dataset`` holding such a variable (``embedding`` if several), or one
      ``(unit, feature)`` variable per scale (variable name = scale).
    """
    try:
        import xarray as xr
    except ImportError:  # pragma: no cover - xarray is a dependency
        xr = None
    if xr is not None and isinstance(X_scales, xr.Dataset):
        with_scale = [name for name, var in X_scales.data_vars.items() if "scale" in var.dims]
        if with_scale:
            name = "embedding" if "embedding" in with_scale else with_scale[0]
            if len(with_scale) > 1 and "embedding" not in with_scale:
                raise GeovitError(f"X_scales Dataset has several variables with a 'scale' dim "
                                  f"{with_scale}; name the embeddings variable 'embedding'")
            return as_scale_dict(X_scales[name])
        return {name: _feature_matrix(var.values, f"X_scales[{name!r}]")
                for name, var in X_scales.data_vars.items()}
    if xr is not None and isinstance(X_scales, xr.DataArray):
        if "scale" not in X_scales.dims:
            raise GeovitError(f"X_scales DataArray needs a 'scale' dim, got dims {X_scales.dims}")
        unit_dim = "unit" if "unit" in X_scales.dims else [d for d in X_scales.dims if d != "scale"][0]
        other = [d for d in X_scales.dims if d not in ("scale", unit_dim)]
        arr = X_scales.transpose("scale", unit_dim, *other)
        scales = arr["scale"].values.tolist() if "scale" in arr.coords else list(range(arr.sizes["scale"]))
        return {s: _feature_matrix(arr.isel(scale=i).values, f"X_scales[scale={s!r}]")
                for i, s in enumerate(scales)}
    if isinstance(X_scales, Mapping):
        if not X_scales:
            raise GeovitError("X_scales is empty: give at least one scale → (n, d) embedding array")
        return {s: _feature_matrix(v, f"X_scales[{s!r}]") for s, v in X_scales.items()}
    raise GeovitError(f"X_scales must be a dict {{scale: (n, d) array}} or an xarray Dataset/DataArray "
                      f"with dims (unit, scale, feature); got {type(X_scales).__name__}")


def _feature_matrix(value, name: str) -> np.ndarray:
    arr = np.asarray(value.to_numpy() if isinstance(value, (pd.DataFrame, pd.Series)) else value,
                     dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.ndim != 2:
        raise GeovitError(f"{name} must be an (n_units, n_features) array, got shape {arr.shape}")
    return arr


def resolve_scales(table: Mapping, scales: Sequence[Hashable] | None) -> list:
    """The keys of ``table`` named by ``scales`` (default all); ``"64"`` matches ``64`` and back."""
    chosen = list(table) if scales is None else list(scales)
    lookup = {str(k): k for k in table}
    missing = [s for s in chosen if s not in table and str(s) not in lookup]
    if missing:
        raise GeovitError(f"scales {missing} not in X_scales (available: {list(table)})")
    return [s if s in table else lookup[str(s)] for s in chosen]


def stack_scales(X_scales, scales: Sequence[Hashable] | None = None) -> np.ndarray:
    """Concatenate the embeddings of ``scales`` (default: all, in their order) → (n, Σ d_k).

    Raises GeovitError naming a missing scale, inconsistent unit counts or the units with NaN.
    """
    table = as_scale_dict(X_scales)
    chosen = resolve_scales(table, scales)
    if not chosen:
        raise GeovitError("`scales` is empty: choose at least one scale")
    sizes = {s: table[s].shape[0] for s in chosen}
    if len(set(sizes.values())) != 1:
        raise GeovitError(f"every scale must hold the same units; unit counts per scale: {sizes}")
    X = np.concatenate([table[s] for s in chosen], axis=1)
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if bad.size:
        raise GeovitError(f"embeddings contain NaN/inf for units (row positions) {bad[:10].tolist()}"
                          f"{' …' if bad.size > 10 else ''} ({bad.size} in total)")
    return X


def _outcome_treatment(Y, T, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(Y, dtype=float).reshape(-1)
    t = np.asarray(T, dtype=float).reshape(-1)
    for name, v in (("Y", y), ("T", t)):
        if v.size != n:
            raise GeovitError(f"`{name}` has {v.size} values but X_scales has {n} units")
        bad = np.flatnonzero(~np.isfinite(v))
        if bad.size:
            raise GeovitError(f"`{name}` is NaN/inf for units (row positions) {bad[:10].tolist()}"
                              f"{' …' if bad.size > 10 else ''}")
    not_binary = np.flatnonzero((t != 0) & (t != 1))
    if not_binary.size:
        raise GeovitError(f"treatment `T` must be binary 0/1; units (row positions) "
                          f"{not_binary[:10].tolist()} have {np.unique(t[not_binary])[:5].tolist()}")
    if np.unique(t).size < 2:
        raise GeovitError("treatment `T` has a single arm: need treated and control units")
    return y, t.astype(int)


# ----------------------------------------------------------------------------------------------
# estimator
class KnownPropensity(ClassifierMixin, BaseEstimator):
    """A "classifier" returning a fixed P(T = 1) = ``propensity``: the known design of an RCT."""

    def __init__(self, propensity: float = 0.5):
        self.propensity = propensity

    def fit(self, X, y, sample_weight=None):
        """Record the classes of ``y``; nothing is estimated.

        Args:
            X: features (unused).
            y: treatment labels.
            sample_weight: unused (accepted for scikit-learn compatibility).

        Returns:
            ``self``.
        """
        self.classes_ = np.unique(np.asarray(y))
        return self

    def predict_proba(self, X):
        """The known design: ``(n, 2)`` columns ``1 - propensity`` and ``propensity``."""
        n = np.shape(X)[0]
        return np.column_stack([np.full(n, 1.0 - self.propensity), np.full(n, self.propensity)])

    def predict(self, X):
        """The class whose known probability exceeds 0.5 (the first class when ``propensity <= 0.5``)."""
        return self.classes_[(self.predict_proba(X)[:, 1] > 0.5).astype(int)]


def grf_mtry(p: int) -> int:
    """grf's default ``mtry = min(ceiling(sqrt(p) + 20), p)``."""
    return int(min(math.ceil(math.sqrt(p) + 20), p))


class MultiScaleCATE(BaseEstimator):
    """Causal forest (econml ``CausalForestDML``) on the concatenation of the chosen scales.

    Args:
        scales: scales to concatenate, in order (default: every scale in ``X_scales``).
        propensity: known P(T = 1) of a randomised trial; ``None`` estimates it with a random forest.
        n_estimators: trees of the causal forest (grf: 2000; rounded up to a multiple of
            ``subforest_size``).
        min_samples_leaf: econml forest setting: smallest leaf (grf-like default 5).
        max_samples: econml forest setting: share of units per tree (grf-like default 0.5).
        honest: econml forest setting: honest splitting (grf-like default True).
        criterion: econml forest setting: split criterion (grf-like default "mse").
        max_features: ``"grf"`` = grf's mtry, or anything econml accepts.
        cv: cross-fitting folds for the nuisances E[Y|X], E[T|X].
        model_y: nuisance model of E[Y|X] (default: a random forest with max(50, trees/4) trees,
            leaf size 5, as grf's ``Y.hat`` forest).
        model_t: nuisance model of E[T|X] (default: the same forest, as grf's ``W.hat``).
        propensity_clip: estimated propensities are clipped to [clip, 1 − clip] in the DR scores.
        subforest_size: trees per little bag of the bootstrap-of-little-bags variance (grf's
            ``ci.group.size``, 2 in grf; econml's default 4).
        select_features: ``None`` (default) uses every feature as effect modifier. A number ``c``
            first fits a pilot forest of the same settings and keeps the features whose importance
            exceeds ``c`` × the mean importance (``1.0`` is the recipe of Athey & Wager, "Estimating
            treatment effects with causal forests: an application", Observational Studies 2019, §3:
            ``which(variable_importance(cf) > mean(...))``); the other features still enter the
            nuisance models E[Y|X], E[T|X] (econml's controls ``W``), as in grf where ``Y.hat`` and
            ``W.hat`` use every covariate.
        n_jobs: parallel jobs for the forests (econml / scikit-learn ``n_jobs``).
        use_ray: passed to econml (Ray-parallel cross-fitting on a cluster).
        ray_remote_func_options: passed to econml with ``use_ray``.
        random_state: seed.

    After ``fit``: ``forest_`` (the econml estimator), ``scales_``, ``n_features_in_``,
    ``selected_features_`` (column positions of the effect modifiers) and ``groups_``.

    What the intervals of :meth:`effect_interval` cover: they are normal intervals
    τ̂(x) ± z·σ̂(x) with σ̂² the bootstrap-of-little-bags estimate of the forest's *sampling
    variance* (grf §4). They cover τ(x) = E[Y(1) − Y(0) | X = x] only when the forest's bias at x
    is small against σ̂(x). Forests average the effect over a neighbourhood of x; where τ changes
    faster than that neighbourhood -- few units, many uninformative features (image embeddings),
    effects that are a direction across many features rather than one feature -- τ̂ is shrunk
    towards the mean effect and the intervals under-cover at both ends of the effect range. More
    trees or larger little bags make σ̂ more precise, not the bias smaller. Check with
    :func:`causal.calibration.test_calibration` (a ``differential.forest.prediction`` clearly above
    1 means shrinkage) and prefer :func:`causal.calibration.group_average_effects` for statements
    with valid coverage.
    """

    def __init__(self, scales: Sequence[Hashable] | None = None, *, propensity: float | None = None,
                 n_estimators: int = 500, min_samples_leaf: int = 5, max_samples: float = 0.5,
                 max_features="grf", criterion: str = "mse", honest: bool = True, cv: int = 2,
                 model_y=None, model_t=None, subforest_size: int = 4, propensity_clip: float = 0.01,
                 select_features: float | None = None, n_jobs: int | None = 1, use_ray: bool = False, ray_remote_func_options=None,
                 random_state=None):
        self.scales = scales
        self.propensity = propensity
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.max_samples = max_samples
        self.max_features = max_features
        self.criterion = criterion
        self.honest = honest
        self.cv = cv
        self.model_y = model_y
        self.model_t = model_t
        self.subforest_size = subforest_size
        self.propensity_clip = propensity_clip
        self.select_features = select_features
        self.n_jobs = n_jobs
        self.use_ray = use_ray
        self.ray_remote_func_options = ray_remote_func_options
        self.random_state = random_state

    # -- construction ------------------------------------------------------------------------
    def _seed(self) -> int | None:
        rs = self.random_state
        if rs is None or isinstance(rs, (int, np.integer)):
            return rs
        return int(np.random.default_rng(rs).integers(2**31 - 1))

    def _check_params(self) -> None:
        def integer(v, low):
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low

        checks = [
            ("n_estimators", self.n_estimators, lambda v: integer(v, 1), "an integer >= 1"),
            ("min_samples_leaf", self.min_samples_leaf, lambda v: integer(v, 1), "an integer >= 1"),
            ("subforest_size", self.subforest_size, lambda v: integer(v, 2),
             "an integer >= 2 (trees per little bag of the variance estimate)"),
            ("max_samples", self.max_samples,
             lambda v: isinstance(v, (int, float, np.number)) and 0 < v <= 0.5,
             "a fraction in (0, 0.5] (the intervals need half-samples)"),
            ("cv", self.cv, lambda v: not isinstance(v, (int, np.integer)) or v >= 2, "at least 2 folds"),
            ("select_features", self.select_features,
             lambda v: v is None or (isinstance(v, (int, float, np.number)) and np.isfinite(v) and v >= 0),
             "None or a multiple (>= 0) of the mean importance"),
        ]
        for name, value, ok, expected in checks:
            if not ok(value):
                raise GeovitError(f"MultiScaleCATE: `{name}` must be {expected}, got {value!r}")
        if self.n_jobs is not None and not (isinstance(self.n_jobs, (int, np.integer)) and self.n_jobs != 0):
            raise GeovitError(f"MultiScaleCATE: `n_jobs` must be a non-zero integer (-1 = all cores) or None, "
                              f"got {self.n_jobs!r}")

    def _make_forest(self, p: int, p_nuisance: int | None = None):
        """The econml forest with ``p`` effect modifiers (``p_nuisance`` features in the nuisances)."""
        from econml.dml import CausalForestDML

        if self.propensity is not None and not 0 < float(self.propensity) < 1:
            raise GeovitError(f"`propensity` must lie strictly in (0, 1), got {self.propensity!r}")
        self._check_params()
        p_nuisance = p if p_nuisance is None else p_nuisance
        seed = self._seed()
        n_nuisance = max(50, self.n_estimators // 4)
        model_y = self.model_y if self.model_y is not None else RandomForestRegressor(
            n_estimators=n_nuisance, min_samples_leaf=self.min_samples_leaf, max_features=grf_mtry(p_nuisance),
            n_jobs=self.n_jobs, random_state=seed)
        if self.model_t is not None:
            model_t = self.model_t
        elif self.propensity is not None:
            model_t = KnownPropensity(float(self.propensity))
        else:
            model_t = RandomForestClassifier(
                n_estimators=n_nuisance, min_samples_leaf=self.min_samples_leaf,
                max_features=grf_mtry(p_nuisance), n_jobs=self.n_jobs, random_state=seed)
        k = int(self.subforest_size)
        n_trees = k * math.ceil(max(self.n_estimators, k) / k)
        max_features = grf_mtry(p) if self.max_features == "grf" else self.max_features
        return CausalForestDML(
            model_y=model_y, model_t=model_t, discrete_treatment=True, cv=self.cv,
            n_estimators=n_trees, criterion=self.criterion, min_samples_leaf=self.min_samples_leaf,
            max_features=max_features, max_samples=self.max_samples, honest=self.honest,
            subforest_size=k, inference=True, n_jobs=self.n_jobs, random_state=seed,
            use_ray=self.use_ray, ray_remote_func_options=self.ray_remote_func_options)

    def _X(self, X_scales) -> np.ndarray:
        scales = getattr(self, "scales_", self.scales)
        X = stack_scales(X_scales, scales)
        if hasattr(self, "n_features_in_") and X.shape[1] != self.n_features_in_:
            raise GeovitError(f"X_scales gives {X.shape[1]} features for scales {scales}, but the "
                              f"forest was fitted on {self.n_features_in_}")
        return X[:, self.selected_features_] if hasattr(self, "selected_features_") else X

    # -- sklearn / econml API --------------------------------------------------------------------
    def fit(self, Y, T, X_scales, *, sample_weight=None, groups=None) -> "MultiScaleCATE":
        """Fit the causal forest of Y on T with the concatenated embeddings as effect modifiers.

        ``groups`` (cluster ids) keeps clusters together in the nuisance cross-fitting and makes
        :func:`causal.calibration.test_calibration` of this forest cluster-robust.
        """
        table = as_scale_dict(X_scales)
        self.scales_ = resolve_scales(table, self.scales)
        X = stack_scales(table, self.scales_)
        y, t = _outcome_treatment(Y, T, X.shape[0])
        self._check_params()
        if groups is not None and np.asarray(groups).shape[0] != X.shape[0]:
            raise GeovitError(f"`groups` has {np.asarray(groups).shape[0]} entries for {X.shape[0]} units")
        folds = int(self.cv) if isinstance(self.cv, (int, np.integer)) else 2
        arms = np.bincount(t, minlength=2)
        if arms.min() < 2 * folds:
            raise GeovitError(f"MultiScaleCATE: {arms[1]} treated and {arms[0]} control units are too few for a "
                              f"causal forest with {folds}-fold cross-fitting; need at least {2 * folds} per arm")
        for attr in ("selected_features_", "n_features_in_"):
            self.__dict__.pop(attr, None)
        selected = np.arange(X.shape[1])
        if self.select_features is not None:
            pilot = self._make_forest(X.shape[1])
            pilot.fit(y, t, X=X, sample_weight=sample_weight, groups=groups)
            importance = np.asarray(pilot.feature_importances_).reshape(-1)
            selected = np.flatnonzero(importance > float(self.select_features) * importance.mean())
            if selected.size == 0:  # a pilot forest without a single split: keep the most used feature
                selected = np.array([int(np.argmax(importance))])
        rest = np.setdiff1d(np.arange(X.shape[1]), selected)
        self.forest_ = self._make_forest(selected.size, X.shape[1])
        self.forest_.fit(y, t, X=X[:, selected], W=X[:, rest] if rest.size else None,
                         sample_weight=sample_weight, groups=groups, cache_values=True)
        self.n_features_in_ = X.shape[1]
        self.selected_features_ = selected
        self.groups_ = None if groups is None else np.asarray(groups)
        self._train = (y, t, X[:, selected])
        return self

    def effect(self, X_scales) -> np.ndarray:
        """τ̂(x) = E[Y(1) − Y(0) | x] for every unit of ``X_scales`` → (n,)."""
        return np.asarray(self.forest_.effect(self._X(X_scales))).reshape(-1)

    def effect_interval(self, X_scales, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) normal bounds τ̂(x) ± z₁₋α/₂·σ̂(x) at level 1 − ``alpha``.

        σ̂² is the forest's bootstrap-of-little-bags sampling variance: the interval covers the
        forest's own (smoothed) target at x, and τ(x) only where the smoothing bias is small
        against σ̂(x) -- see the class docstring for what it does not cover.
        """
        if not 0 < float(alpha) < 1:
            raise GeovitError(f"`alpha` must lie strictly between 0 and 1 (level = 1 - alpha), got {alpha!r}")
        lo, hi = self.forest_.effect_interval(self._X(X_scales), alpha=alpha)
        return np.asarray(lo).reshape(-1), np.asarray(hi).reshape(-1)

    def effect_stderr(self, X_scales) -> np.ndarray:
        """σ̂(x): the bootstrap-of-little-bags standard error of τ̂(x) → (n,)."""
        inference = self.forest_.effect_inference(self._X(X_scales))
        return np.asarray(inference.stderr).reshape(-1)

    def oob_effect(self) -> np.ndarray:
        """Out-of-bag τ̂ on the training units (grf's ``predict(cf)`` without newdata) → (n,)."""
        X = self._train[2]
        oob = np.asarray(self.forest_.model_cate.oob_predict(X)).reshape(X.shape[0], -1)[:, 0]
        missing = np.isnan(oob)
        if missing.any():  # a unit in every subsample (tiny forests): fall back to the honest fit
            oob[missing] = self.forest_.effect(X[missing]).reshape(-1)
        return oob

    def nuisances(self) -> pd.DataFrame:
        """Cross-fitted m̂ = E[Y|X], ê = P(T=1|X) and OOB τ̂ on the training units."""
        y, t, _ = self._train
        y_res, t_res = self.forest_.residuals_[:2]
        return pd.DataFrame({"m_hat": y - np.asarray(y_res).reshape(-1),
                             "e_hat": t - np.asarray(t_res).reshape(-1),
                             "tau_hat": self.oob_effect()})

    def dr_scores(self) -> np.ndarray:
        """AIPW scores Γ on the training units from the cross-fitted nuisances (grf ``get_scores``)."""
        y, t, _ = self._train
        nu = self.nuisances()
        e = nu["e_hat"].to_numpy()
        if self.propensity is None and self.model_t is None:
            e = np.clip(e, self.propensity_clip, 1 - self.propensity_clip)
        return aipw_scores(y, t, nu["m_hat"].to_numpy(), nu["tau_hat"].to_numpy(), e)

    def evaluate(self, Y, T, X_scales, *, swap: bool = True, target: str = "AUTOC", q=None,
                 n_bootstrap: int = 200, clusters=None, random_state=None) -> "CATEEvaluation":
        """grf's RATE recipe on two halves of (Y, T, X_scales); see :func:`evaluate_rate`."""
        return evaluate_rate(self, Y, T, X_scales, swap=swap, target=target, q=q,
                             n_bootstrap=n_bootstrap, clusters=clusters, random_state=random_state)


# ----------------------------------------------------------------------------------------------
# evaluation
def split_halves(n: int, clusters=None, fraction: float = 0.5, random_state=None) -> tuple[np.ndarray, np.ndarray]:
    """Random split of unit positions into (first, second) with ≈``fraction`` in the first part.

    With ``clusters`` whole clusters go to one side, so the evaluation half is independent of the
    training half.  Raises GeovitError when a part would be empty.
    """
    rng = np.random.default_rng(random_state)
    if clusters is None:
        codes, k = np.arange(n), n
    else:
        codes, uniques = pd.factorize(np.asarray(clusters))
        if len(codes) != n:
            raise GeovitError(f"`clusters` has {len(codes)} entries for {n} units")
        if (codes < 0).any():
            raise GeovitError(f"`clusters` is missing for units {np.flatnonzero(codes < 0)[:10].tolist()}")
        k = len(uniques)
    n_first = int(round(fraction * k))
    if not 0 < n_first < k:
        raise GeovitError(f"cannot split {k} {'clusters' if clusters is not None else 'units'} "
                          f"with fraction {fraction}: one part would be empty")
    first = np.zeros(k, dtype=bool)
    first[rng.permutation(k)[:n_first]] = True
    mask = first[codes]
    return np.flatnonzero(mask), np.flatnonzero(~mask)


@dataclass
class CATEEvaluation:
    """RATE of a CATE model's priorities, one :class:`RATEResult` per evaluation half.

    ``estimate`` is the mean RATE over halves, ``std_err`` = √(Σ SE²)/n_halves (the halves are
    scored on disjoint units), ``rate_ratio`` the mean of the per-half RATE Ratios (on the same scale
    as a single split).  For a paired comparison of two models they are arrays
    ``[model1, model2, model1 - model2]`` (see ``target``).  ``units`` holds each half's evaluation positions, ``priorities`` and
    ``dr_scores`` the per-half vectors (for TOC plots and paired tests).
    """

    folds: list[RATEResult]
    units: list[np.ndarray]
    priorities: list[np.ndarray]
    dr_scores: list[np.ndarray]
    scales: list = field(default_factory=list)

    @staticmethod
    def _scalar(value):
        return float(value) if np.ndim(value) == 0 else value

    @property
    def estimate(self) -> float | np.ndarray:
        """RATE estimate: the mean over the folds."""
        return self._scalar(np.mean([f.estimate for f in self.folds], axis=0))

    @property
    def std_err(self) -> float | np.ndarray:
        """Standard error of :attr:`estimate`: the folds' standard errors combined as independent."""
        se = np.sqrt(np.sum([np.square(f.std_err) for f in self.folds], axis=0)) / len(self.folds)
        return self._scalar(se)

    @property
    def rate_ratio(self) -> float | np.ndarray:
        """RATE ratio (estimate / standard error): the mean over the folds."""
        return self._scalar(np.mean([f.rate_ratio for f in self.folds], axis=0))

    @property
    def target(self) -> str | list[str]:
        """``"AUTOC"`` or ``"QINI"`` (one per priority column when several were compared)."""
        return self.folds[0].target

    @property
    def toc(self) -> pd.DataFrame:
        """TOC tables of every half, with a ``fold`` column."""
        return pd.concat([f.toc.assign(fold=i) for i, f in enumerate(self.folds)], ignore_index=True)

    def cate_out_of_sample(self, n: int) -> np.ndarray:
        """τ̂ for every unit predicted by the forest fitted on the *other* half (NaN if not scored)."""
        out = np.full(n, np.nan)
        for units, prio in zip(self.units, self.priorities):
            out[units] = prio if np.ndim(prio) == 1 else np.asarray(prio)[:, 0]
        return out


def _subset(X_scales: dict, idx: np.ndarray) -> dict:
    return {s: v[idx] for s, v in X_scales.items()}


def evaluate_rate(estimator: MultiScaleCATE | Mapping[str, MultiScaleCATE], Y, T, X_scales, *,
                  swap: bool = True, target: str = "AUTOC", q=None, n_bootstrap: int = 200,
                  clusters=None, split: tuple[np.ndarray, np.ndarray] | None = None,
                  random_state=None) -> CATEEvaluation:
    """grf's evaluation recipe for ``estimator`` (unfitted template; it is cloned).

    Split the units into halves A and B (whole clusters when ``clusters`` is given; or pass
    ``split=(A, B)`` positions), fit the estimator on A, predict priorities τ̂ on B, fit an
    evaluation forest on B, build AIPW scores on B from its cross-fitted m̂, ê and OOB τ̂, and
    compute RATE (``target``) with its half-sample bootstrap SE on B (clustered when given).
    With ``swap`` the roles of A and B are exchanged and a second result is added.

    Paired comparison: pass ``{"label1": est1, "label2": est2}`` (e.g. two scale subsets).  Both
    rules are scored with the *same* DR scores -- from an evaluation forest on the union of their
    scales -- and the same bootstrap draws, so ``estimate[2]`` / ``std_err[2]`` test the RATE
    difference (grf's two-column ``priorities``).
    """
    table = as_scale_dict(X_scales)
    n = next(iter(table.values())).shape[0]
    y, t = _outcome_treatment(Y, T, n)
    cl = None if clusters is None else np.asarray(clusters)
    if cl is not None and cl.shape[0] != n:
        raise GeovitError(f"`clusters` has {cl.shape[0]} entries for {n} units")
    if isinstance(estimator, Mapping):
        models = {str(k): v for k, v in estimator.items()}
        if len(models) != 2:
            raise GeovitError(f"a paired comparison takes exactly two estimators, got {list(models)}")
        union: list = []
        for model in models.values():
            union += [s for s in resolve_scales(table, model.scales) if s not in union]
        evaluator = clone(next(iter(models.values()))).set_params(scales=union)
    else:
        models, evaluator = {"priorities": estimator}, estimator
        union = resolve_scales(table, estimator.scales)
    rng = np.random.default_rng(random_state)
    a, b = split if split is not None else split_halves(n, cl, 0.5, rng)
    directions = [(a, b), (b, a)] if swap else [(a, b)]
    groups = (lambda idx: None) if cl is None else (lambda idx: cl[idx])  # noqa: E731
    result = CATEEvaluation([], [], [], [], union)
    for train, test in directions:
        x_test = _subset(table, test)
        priorities = {label: clone(model).fit(y[train], t[train], _subset(table, train),
                                              groups=groups(train)).effect(x_test)
                      for label, model in models.items()}
        evaluation = clone(evaluator).fit(y[test], t[test], x_test, groups=groups(test))
        scores = evaluation.dr_scores()
        prio = priorities["priorities"] if len(models) == 1 else pd.DataFrame(priorities)
        rate = rank_average_treatment_effect(scores, prio, target=target, q=q, n_bootstrap=n_bootstrap,
                                             clusters=groups(test), random_state=rng)
        result.folds.append(rate)
        result.units.append(test)
        result.priorities.append(prio if len(models) == 1 else prio.to_numpy())
        result.dr_scores.append(scores)
    return result


# ----------------------------------------------------------------------------------------------
# scale search
@dataclass
class ScaleSearchResult:
    """Outcome of :func:`scale_search`.

    ``table``: every candidate subset scored on the selection units (columns ``scales``, ``k``,
    ``estimate``, ``std_err``, ``rate_ratio``), best first.  ``best_single`` / ``best_multi``:
    the winners chosen there.  ``confirmation``: the two winners re-fitted and scored on the
    held-out confirmation units as a paired comparison (same DR scores, same bootstrap draws;
    rows ``best_multi``, ``best_single`` and ``best_multi - best_single``, whose ``rate_ratio``
    is the t-statistic of the RATE difference); ``None`` when ``holdout_fraction`` is 0.
    ``multiscale_gain``:
    RATE Ratio(best_multi) − RATE Ratio(best_single) on the confirmation units (the honest
    number); ``selection_gain``: the same difference on the selection units (optimistic).
    ``selection_units`` / ``confirmation_units``: row positions of the two parts; ``evaluations``
    the :class:`CATEEvaluation` of every candidate (and ``"confirmation"``).
    """

    table: pd.DataFrame
    best_single: tuple
    best_multi: tuple | None
    confirmation: pd.DataFrame | None
    multiscale_gain: float
    selection_gain: float
    selection_units: np.ndarray = field(default=None, repr=False)
    confirmation_units: np.ndarray | None = field(default=None, repr=False)
    evaluations: dict = field(default_factory=dict, repr=False)


def _candidate_subsets(scales: list, k: int | Iterable[int] | str) -> list[tuple]:
    if k == "all":
        sizes = range(1, len(scales) + 1)
    elif isinstance(k, (int, np.integer)):
        sizes = range(1, int(k) + 1)
    else:
        sizes = sorted(set(int(v) for v in k) | {1})
    if not sizes:
        raise GeovitError(f"max_k={k!r}: expected a subset size >= 1")
    bad = [s for s in sizes if not 1 <= s <= len(scales)]
    if bad:
        raise GeovitError(f"subset sizes {bad} impossible with {len(scales)} scales {scales}")
    return [c for size in sizes for c in itertools.combinations(scales, size)]


def _row(scales: tuple, ev: CATEEvaluation) -> dict:
    return {"scales": "+".join(map(str, scales)), "k": len(scales), "estimate": ev.estimate,
            "std_err": ev.std_err, "rate_ratio": ev.rate_ratio}


def _check_parts(part: str, pieces: list, t: np.ndarray, holdout_fraction: float, per_part: int = 4) -> None:
    """Every piece of ``part`` must hold ``per_part`` treated and control units (forests on halves)."""
    arms = [np.bincount(t[q], minlength=2) for q in pieces]
    if min(a.min() for a in arms) < per_part:
        raise GeovitError(
            f"scale_search: with holdout_fraction={holdout_fraction} (CLI --holdout) the {part} part has "
            f"{sum(len(q) for q in pieces)} units in {'halves with ' if len(pieces) > 1 else ''}"
            + ", ".join(f"{a[1]} treated / {a[0]} control" for a in arms)
            + f"; need at least {per_part} of each arm{' per half' if len(pieces) > 1 else ''}. "
            "Use more units or another --holdout")


def scale_search(Y, T, X_scales, *, estimator: MultiScaleCATE | None = None, max_k: int | Iterable[int] | str = 2,
                 holdout_fraction: float = 0.5, swap: bool = True, target: str = "AUTOC",
                 n_bootstrap: int = 200, clusters=None, random_state=None, progress: bool = False) -> ScaleSearchResult:
    """Grid search over scale subsets by RATE Ratio, with an honest Multi-scale Gain.

    Candidates: every subset of the available scales with size 1..``max_k`` (``2`` = every single
    scale and every pair, ``"all"`` = every subset, or an explicit list of sizes).  The units are
    split (whole clusters) into a *selection* part and a held-out *confirmation* part
    (``holdout_fraction``).  Every candidate runs the grf RATE recipe (:func:`evaluate_rate`)
    on the selection part; the best single scale and the best multi-scale subset are chosen by
    RATE Ratio there, then re-fitted and compared (paired) on the confirmation part, where the
    Multi-scale Gain is reported.  ``estimator`` is the template (its ``scales`` is overridden).
    """
    table = as_scale_dict(X_scales)
    scales = list(table)
    n = next(iter(table.values())).shape[0]
    y, t = _outcome_treatment(Y, T, n)
    cl = None if clusters is None else np.asarray(clusters)
    template = estimator if estimator is not None else MultiScaleCATE()
    rng = np.random.default_rng(random_state)
    if holdout_fraction:
        select, confirm = split_halves(n, cl, 1 - holdout_fraction, rng)
    else:
        select, confirm = np.arange(n), None
    candidates = _candidate_subsets(scales, max_k)
    sub = lambda idx: (y[idx], t[idx], _subset(table, idx), None if cl is None else cl[idx])  # noqa: E731

    evaluations = {}
    iterator = candidates
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(candidates, desc="scale subsets", unit="subset")
    ys, ts, xs, cs = sub(select)
    halves = split_halves(len(select), cs, 0.5, rng)  # same halves for every candidate
    _check_parts("selection", [select[h] for h in halves], t, holdout_fraction)
    if confirm is not None:
        _check_parts("confirmation", [confirm], t, holdout_fraction, per_part=8)
    for subset in iterator:
        model = clone(template).set_params(scales=list(subset))
        evaluations[subset] = evaluate_rate(model, ys, ts, xs, swap=swap, target=target,
                                            n_bootstrap=n_bootstrap, clusters=cs, split=halves,
                                            random_state=rng)
    scored = pd.DataFrame([_row(s, ev) for s, ev in evaluations.items()])
    scored["subset"] = list(evaluations)
    scored = scored.sort_values("rate_ratio", ascending=False, kind="stable").reset_index(drop=True)
    singles = scored[scored.k == 1]
    multis = scored[scored.k > 1]
    best_single = singles.iloc[0]["subset"]
    best_multi = multis.iloc[0]["subset"] if len(multis) else None
    selection_gain = (float(multis.iloc[0]["rate_ratio"] - singles.iloc[0]["rate_ratio"])
                      if best_multi is not None else float("nan"))

    confirmation, gain = None, float("nan")
    if confirm is not None:
        yc, tc, xc, cc = sub(confirm)
        halves_c = split_halves(len(confirm), cc, 0.5, rng)
        _check_parts("confirmation", [confirm[h] for h in halves_c], t, holdout_fraction)
        winners = {"best_multi": best_multi, "best_single": best_single}
        winners = {role: subset for role, subset in winners.items() if subset is not None}
        models = {role: clone(template).set_params(scales=list(subset)) for role, subset in winners.items()}
        ev = evaluate_rate(models if len(models) == 2 else models["best_single"], yc, tc, xc, swap=swap,
                           target=target, n_bootstrap=n_bootstrap, clusters=cc, split=halves_c,
                           random_state=rng)
        evaluations["confirmation"] = ev
        labels = list(winners) + (["best_multi - best_single"] if len(winners) == 2 else [])
        subsets = list(winners.values()) + ([None] if len(winners) == 2 else [])
        confirmation = pd.DataFrame({
            "role": labels,
            "scales": ["+".join(map(str, c)) if c is not None else "difference" for c in subsets],
            "estimate": np.atleast_1d(ev.estimate), "std_err": np.atleast_1d(ev.std_err),
            "rate_ratio": np.atleast_1d(ev.rate_ratio)})
        if best_multi is not None:
            ratio = confirmation.set_index("role")["rate_ratio"]
            gain = float(ratio["best_multi"] - ratio["best_single"])
    return ScaleSearchResult(scored, best_single, best_multi, confirmation, gain, selection_gain,
                             select, confirm, evaluations)
