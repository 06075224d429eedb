"""Doubly-robust (AIPW) scores: the grf formula, its textbook form and bad input."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from causal.scores import aipw_scores
from geovit.errors import GeovitError

values = st.floats(-50, 50, allow_nan=False)


@st.composite
def score_inputs(draw):
    n = draw(st.integers(1, 40))
    y = draw(arrays(float, n, elements=values))
    w = draw(arrays(float, n, elements=st.sampled_from([0.0, 1.0])))
    m = draw(arrays(float, n, elements=values))
    tau = draw(arrays(float, n, elements=values))
    e = draw(arrays(float, n, elements=st.floats(0.06, 0.94)))
    return y, w, m, tau, e


@settings(max_examples=80, deadline=None)
@given(score_inputs())
def test_equals_textbook_aipw(inputs):
    """Γ = μ̂1 − μ̂0 + W(Y − μ̂1)/ê − (1 − W)(Y − μ̂0)/(1 − ê) with μ̂0 = m̂ − êτ̂, μ̂1 = m̂ + (1 − ê)τ̂."""
    y, w, m, tau, e = inputs
    mu0, mu1 = m - e * tau, m + (1 - e) * tau
    textbook = mu1 - mu0 + w * (y - mu1) / e - (1 - w) * (y - mu0) / (1 - e)
    np.testing.assert_allclose(aipw_scores(y, w, m, tau, e), textbook, rtol=1e-9, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(score_inputs())
def test_correct_outcome_models_give_tau_plus_mean_zero_noise(inputs):
    """When Y equals its modelled mean (no noise) the score is exactly τ̂."""
    _, w, m, tau, e = inputs
    mu0 = m - e * tau
    y = mu0 + w * tau
    np.testing.assert_allclose(aipw_scores(y, w, m, tau, e), tau, atol=1e-8)


def test_known_propensity_scalar_and_unbiased_ate():
    rng = np.random.default_rng(0)
    n = 20_000
    w = rng.integers(0, 2, n)
    tau = 1 + rng.normal(size=n)
    y = rng.normal(size=n) + w * tau
    # deliberately wrong outcome model: the randomised design (known ê) keeps the mean unbiased
    scores = aipw_scores(y, w, np.zeros(n), np.zeros(n), 0.5)
    assert abs(scores.mean() - 1.0) < 4 * scores.std() / np.sqrt(n)


def test_propensity_zero_or_one_names_units():
    y = pd.Series([1.0, 2.0, 3.0, 4.0], index=["hh-01", "hh-02", "hh-03", "hh-04"])
    with pytest.raises(GeovitError, match=r"strictly in \(0, 1\); units \[hh-02, hh-04\]"):
        aipw_scores(y, [0, 1, 1, 0], 0.0, 0.0, [0.5, 0.0, 0.5, 1.0])
    with pytest.raises(GeovitError, match=r"units \[1\]"):
        aipw_scores(y.to_numpy(), [0, 1, 1, 0], 0.0, 0.0, [0.5, 1.0, 0.5, 0.5])


@pytest.mark.parametrize("args, match", [
    (dict(W=[0, 2, 1, 0]), r"binary 0/1; units \[1\]"),
    (dict(Y=[1.0, np.nan, 0.0, 0.0]), r"`Y` is NaN/inf for units \[1\]"),
    (dict(m_hat=[0.0, 0.0, np.inf, 0.0]), r"`m_hat` is NaN/inf for units \[2\]"),
    (dict(tau_hat=[0.0, 0.0]), "`tau_hat` has 2 values but `Y` has 4"),
    (dict(e_hat=["a", "b", "c", "d"]), "`e_hat` must be numeric"),
])
def test_bad_input_is_named(args, match):
    kwargs = dict(Y=[1.0, 2.0, 0.0, 0.0], W=[0, 1, 1, 0], m_hat=0.0, tau_hat=0.0, e_hat=0.5)
    kwargs.update(args)
    with pytest.raises(GeovitError, match=match):
        aipw_scores(**kwargs)


def test_warns_on_poor_overlap_like_grf():
    with pytest.warns(RuntimeWarning, match=r"units \[0\]"):
        aipw_scores([1.0, 2.0], [1, 0], 0.0, 0.0, [0.03, 0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aipw_scores([1.0, 2.0], [1, 0], 0.0, 0.0, [0.2, 0.5])
