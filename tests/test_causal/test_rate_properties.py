"""RATE invariants (hypothesis), a brute-force reference, the bootstrap and bad input."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from causal.rate import grf_ranks, rank_average_treatment_effect
from geovit.errors import GeovitError


def brute_force_rate(dr, s, w, q, target):
    """Spec §3 written as loops over units, independent of the vectorised implementation."""
    n = len(dr)
    w = np.asarray(w, float) / np.sum(w)
    order = sorted(range(n), key=lambda i: -s[i])  # Python's sort is stable
    gamma = {}
    for i in order:  # tied groups share the weighted mean score
        group = [j for j in order if s[j] == s[i]]
        gamma[i] = sum(w[j] * dr[j] for j in group) / sum(w[j] for j in group)
    total = sum(w)
    ate = sum(w[i] * gamma[i] for i in order) / total
    toc, c, num = [], 0.0, 0.0
    for i in order:
        c += w[i]
        num += w[i] * gamma[i]
        toc.append((num / c - ate, c, w[i]))
    if target == "AUTOC":
        rate = sum(t * wi for t, _, wi in toc) / total
    else:
        rate = sum(ci / total * wi * t for t, ci, wi in toc) / total
    grid = []
    cum = np.cumsum([w[i] for i in order])
    cum_num = np.cumsum([w[i] * gamma[i] for i in order])
    for qq in q:
        target_mass = qq * total
        k = int(np.sum(cum <= target_mass + 1e-15))
        if k == 0:
            grid.append(gamma[order[0]] - ate)
            continue
        r = target_mass - cum[k - 1]
        nxt = gamma[order[min(k, n - 1)]]
        grid.append((cum_num[k - 1] + r * nxt) / (cum[k - 1] + r) - ate)
    return rate, np.array(grid)


finite = st.floats(-100, 100, allow_nan=False, allow_infinity=False)


@st.composite
def rate_inputs(draw, min_size=4, max_size=30, ties=True, weights=True):
    n = draw(st.integers(min_size, max_size))
    dr = draw(arrays(float, n, elements=finite))
    if ties:
        s = draw(arrays(float, n, elements=st.integers(-3, 3).map(float)))
    else:
        s = draw(arrays(float, n, elements=finite, unique=True))
    w = draw(arrays(float, n, elements=st.floats(0.1, 10))) if weights else np.ones(n)
    return dr, s, w


GRID = [0.05, 0.25, 1 / 3, 0.5, 0.9, 1.0]


@settings(max_examples=60, deadline=None)
@given(rate_inputs(), st.sampled_from(["AUTOC", "QINI"]))
def test_matches_brute_force_reference(inputs, target):
    dr, s, w = inputs
    result = rank_average_treatment_effect(dr, s, target, q=GRID, sample_weight=w, n_bootstrap=0)
    rate, grid = brute_force_rate(dr, s, w, GRID, target)
    scale = 1 + np.abs(dr).max()
    assert result.estimate == pytest.approx(rate, abs=1e-11 * scale)
    np.testing.assert_allclose(result.toc["estimate"], grid, rtol=1e-9, atol=1e-11 * scale)


@settings(max_examples=40, deadline=None)
@given(rate_inputs(weights=False), st.randoms(use_true_random=False), st.sampled_from(["AUTOC", "QINI"]))
def test_permuting_units_leaves_everything_unchanged(inputs, rnd, target):
    dr, s, _ = inputs  # unit weights: ties may be in any order
    perm = np.array(rnd.sample(range(len(dr)), len(dr)))
    a = rank_average_treatment_effect(dr, s, target, q=GRID, n_bootstrap=0)
    b = rank_average_treatment_effect(dr[perm], s[perm], target, q=GRID, n_bootstrap=0)
    scale = 1 + np.abs(dr).max()
    assert a.estimate == pytest.approx(b.estimate, abs=1e-11 * scale)
    np.testing.assert_allclose(a.toc["estimate"], b.toc["estimate"], atol=1e-11 * scale)


@settings(max_examples=40, deadline=None)
@given(rate_inputs(ties=False), st.randoms(use_true_random=False))
def test_permuting_weighted_units_with_distinct_priorities(inputs, rnd):
    dr, s, w = inputs
    perm = np.array(rnd.sample(range(len(dr)), len(dr)))
    a = rank_average_treatment_effect(dr, s, q=GRID, sample_weight=w, n_bootstrap=0)
    b = rank_average_treatment_effect(dr[perm], s[perm], q=GRID, sample_weight=w[perm], n_bootstrap=0)
    assert a.estimate == pytest.approx(b.estimate, abs=1e-11 * (1 + np.abs(dr).max()))


@settings(max_examples=40, deadline=None)
@given(rate_inputs(), st.sampled_from(["AUTOC", "QINI"]), finite)
def test_constant_priorities_give_zero(inputs, target, level):
    dr, _, w = inputs
    result = rank_average_treatment_effect(dr, np.full(len(dr), level), target, q=GRID,
                                           sample_weight=w, n_bootstrap=0)
    scale = 1 + np.abs(dr).max()
    assert abs(result.estimate) <= 1e-12 * scale
    assert np.all(np.abs(result.toc["estimate"]) <= 1e-12 * scale)


@settings(max_examples=40, deadline=None)
@given(rate_inputs(), st.sampled_from(["AUTOC", "QINI"]), st.floats(0.01, 100), finite)
def test_affine_scores_and_monotone_priorities(inputs, target, a, b):
    """RATE scales with the scores, ignores a shift (TOC is centred) and uses only the ranks of S."""
    dr, s, w = inputs
    base = rank_average_treatment_effect(dr, s, target, q=GRID, sample_weight=w, n_bootstrap=0)
    moved = rank_average_treatment_effect(a * dr + b, 2 * s + 7, target, q=GRID, sample_weight=w,
                                          n_bootstrap=0)
    tol = 1e-9 * (1 + abs(b) + a * np.abs(dr).max())
    assert moved.estimate == pytest.approx(a * base.estimate, abs=tol)
    np.testing.assert_allclose(moved.toc["estimate"], a * base.toc["estimate"], atol=tol)


@settings(max_examples=30, deadline=None)
@given(rate_inputs(min_size=8, weights=False))
def test_perfect_ranking_has_nonnegative_autoc(inputs):
    dr, _, _ = inputs
    result = rank_average_treatment_effect(dr, dr, "AUTOC", n_bootstrap=0)  # oracle priorities
    assert result.estimate >= -1e-12 * (1 + np.abs(dr).max())
    reverse = rank_average_treatment_effect(dr, -dr, "AUTOC", n_bootstrap=0)
    assert reverse.estimate <= result.estimate + 1e-12


def test_ties_follow_R_factor_levels_at_15_digits():
    assert grf_ranks([0.5, 0.1, 1.0000000000000002, 1.0, 0.3]).tolist() == [3, 1, 4, 4, 2]
    dr = np.array([4.0, 0.0, 1.0, 2.0])
    near = rank_average_treatment_effect(dr, [1.0, 1.0 + 4e-16, 0.2, 0.1], n_bootstrap=0)
    tied = rank_average_treatment_effect(dr, [1.0, 1.0, 0.2, 0.1], n_bootstrap=0)
    apart = rank_average_treatment_effect(dr, [1.0, 1.0 + 1e-9, 0.2, 0.1], n_bootstrap=0)
    assert near.estimate == tied.estimate
    assert apart.estimate != tied.estimate


def test_bootstrap_is_seeded_and_paired_draws_are_shared():
    rng = np.random.default_rng(0)
    dr, s1, s2 = rng.normal(size=(3, 300))
    dr += s1
    one = rank_average_treatment_effect(dr, s1, n_bootstrap=50, random_state=3)
    again = rank_average_treatment_effect(dr, s1, n_bootstrap=50, random_state=3)
    other = rank_average_treatment_effect(dr, s1, n_bootstrap=50, random_state=4)
    assert one.std_err == again.std_err != other.std_err
    paired = rank_average_treatment_effect(dr, np.column_stack([s1, s2]), n_bootstrap=50, random_state=3)
    assert paired.std_err[0] == one.std_err
    assert paired.estimate[2] == pytest.approx(paired.estimate[0] - paired.estimate[1], abs=1e-15)
    assert paired.target == ["priority1 | AUTOC", "priority2 | AUTOC", "priority1 - priority2 | AUTOC"]
    assert paired.toc["priority"].tolist() == np.repeat(
        ["priority1", "priority2", "priority1 - priority2"], 10).tolist()
    single_toc = one.toc["std_err"].to_numpy()
    np.testing.assert_array_equal(paired.toc["std_err"][:10], single_toc)


def test_cluster_bootstrap_draws_whole_clusters():
    rng = np.random.default_rng(1)
    n, k = 400, 20
    cluster = rng.integers(0, k, n)
    s = rng.normal(size=k)[cluster] + 0.3 * rng.normal(size=n)  # priorities cluster too
    dr = s + 3 * rng.normal(size=k)[cluster] + rng.normal(size=n)  # strong cluster effects
    units = rank_average_treatment_effect(dr, s, n_bootstrap=200, random_state=0)
    singletons = rank_average_treatment_effect(dr, s, n_bootstrap=200, random_state=0,
                                               clusters=np.arange(n))
    assert singletons.std_err == units.std_err  # one cluster per unit is the default
    clustered = rank_average_treatment_effect(dr, s, n_bootstrap=200, random_state=0, clusters=cluster)
    relabelled = rank_average_treatment_effect(dr, s, n_bootstrap=200, random_state=0,
                                               clusters=[f"village-{c}" for c in cluster])
    assert clustered.estimate == units.estimate  # clusters only change the SE
    assert relabelled.std_err == clustered.std_err
    assert clustered.std_err > 1.5 * units.std_err  # correlated units: cluster SE is larger


def test_bootstrap_memory_does_not_grow_with_replicates():
    """R replicates reuse O(n) scratch space: grf's R stored half-sample index vectors alone would
    take R·n/2·8 bytes; the traced peak stays far below that."""
    n, reps = 100_000, 100
    rng = np.random.default_rng(2)
    dr, s = rng.normal(size=(2, n))
    tracemalloc.start()
    rank_average_treatment_effect(dr, s, n_bootstrap=reps, random_state=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 0.25 * reps * n / 2 * 8


@pytest.mark.parametrize("kwargs, match", [
    (dict(q=[0.5, 0.2, 1.0]), "strictly increasing"),
    (dict(q=[0.2, 0.5, 0.9]), "exactly 1"),
    (dict(q=[0.0, 0.5, 1.0]), r"\(0, 1\]"),
    (dict(target="AUC"), "target"),
    (dict(clusters=[0, 0, 0, 1, 1, 1, 2, 2]), "at least 4 clusters"),
    (dict(clusters=[0, 1, 2, None, 1, 2, 3, 3]), r"clusters.*units \[3\]"),
    (dict(clusters=[0, 1, 2]), "length 8"),
    (dict(sample_weight=[1, 1, 1, 0, 1, 1, 1, 1]), r"> 0.*units \[3\]"),
    (dict(sample_weight=[1, 1]), "`sample_weight` has length 2"),
    (dict(n_bootstrap=-1), "n_bootstrap"),
])
def test_bad_arguments_are_named(kwargs, match):
    dr, s = np.arange(8.0), np.linspace(0, 1, 8)
    with pytest.raises(GeovitError, match=match):
        rank_average_treatment_effect(dr, s, **kwargs)


def test_bad_scores_and_priorities_are_named():
    dr, s = np.arange(8.0), np.linspace(0, 1, 8)
    with pytest.raises(GeovitError, match=r"`dr_scores` contains NaN/inf at units \[2\]"):
        rank_average_treatment_effect(np.where(np.arange(8) == 2, np.nan, dr), s)
    with pytest.raises(GeovitError, match=r"`priorities` contains NaN/inf at units \[5\]"):
        rank_average_treatment_effect(dr, np.where(np.arange(8) == 5, np.nan, s))
    with pytest.raises(GeovitError, match="`priorities` has length 7"):
        rank_average_treatment_effect(dr, s[:7])
    with pytest.raises(GeovitError, match="one or two columns"):
        rank_average_treatment_effect(dr, np.column_stack([s, s, s]))
    with pytest.raises(GeovitError, match=r"priorities\['b'\].*NaN"):
        rank_average_treatment_effect(dr, pd.DataFrame({"a": s, "b": np.where(s > .5, np.nan, s)}))
    # one cluster is fine without a bootstrap (point estimate only), as is R < 2 -> SE 0
    assert rank_average_treatment_effect(dr, s, clusters=np.zeros(8), n_bootstrap=0).std_err == 0
    assert rank_average_treatment_effect(dr, s, n_bootstrap=1).std_err == 0
