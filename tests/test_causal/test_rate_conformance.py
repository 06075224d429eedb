"""RATE / TOC against grf 2.6.1 (``../shared/conformance/rate``) and the spec's worked example."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from causal.rate import rank_average_treatment_effect

RTOL, ATOL = 1e-9, 1e-10


@pytest.fixture(scope="module")
def rate_data(conformance):
    conf = conformance("rate")
    data = pd.read_csv(conf.file("data.csv"))
    expected = json.loads(conf.file("expected.json").read_text())
    return data, expected


def _call(data: pd.DataFrame, case: str, q, n_bootstrap: int, seed: int = 0):
    """The Python call matching the R call recorded for ``case`` (see README.md of the data)."""
    base, target = case.rsplit("_", 1)
    priorities = data["priority_tied"].to_numpy() if base == "tied" else data["priority"].to_numpy()
    kwargs = {}
    if base == "paired":
        priorities = pd.DataFrame({"good": data["priority"], "bad": data["priority_bad"]})
    if base == "weighted":
        kwargs["sample_weight"] = data["weight"].to_numpy()
    if base.startswith("clustered"):
        kwargs["clusters"] = data["cluster"].to_numpy()
    return rank_average_treatment_effect(data["dr"].to_numpy(), priorities, target=target, q=q,
                                         n_bootstrap=n_bootstrap, random_state=seed, **kwargs)


CASES = [f"{name}_{target}" for target in ("AUTOC", "QINI")
         for name in ("continuous", "continuous_customq", "tied", "weighted", "clustered", "paired",
                      "continuous_bigR", "clustered_bigR")]


def _grid(case: dict) -> list[float]:
    q = case["TOC"]["q"]
    labels = case["TOC"]["priority"]
    return q[: labels.count(labels[0])]


@pytest.mark.parametrize("name", CASES)
def test_point_estimates_and_toc_match_grf(rate_data, name):
    data, expected = rate_data
    case = expected["cases"][name]
    result = _call(data, name, _grid(case), n_bootstrap=0)
    np.testing.assert_allclose(np.atleast_1d(result.estimate), case["estimate"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(result.toc["estimate"], case["TOC"]["estimate"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(result.toc["q"], case["TOC"]["q"], rtol=0, atol=1e-14)
    assert list(result.toc["priority"]) == case["TOC"]["priority"]
    assert result.target == case["target"]
    assert list(result.toc.columns) == ["q", "estimate", "std_err", "priority"]


@pytest.mark.parametrize("name", [c for c in CASES if "bigR" not in c])
def test_standard_errors_at_R200_within_15_percent(rate_data, name):
    """R = 200 half-sample SEs (our RNG) against grf's R = 5000 reference of the same design."""
    data, expected = rate_data
    case = expected["cases"][name]
    base, target = name.rsplit("_", 1)
    ref_name = "clustered_bigR" if base == "clustered" else "continuous_bigR"
    result = _call(data, name, _grid(case), n_bootstrap=200, seed=1)
    se = np.atleast_1d(result.std_err)
    if base in ("continuous", "continuous_customq", "clustered", "paired"):
        ref = expected["cases"][f"{ref_name}_{target}"]["std.err"]
        np.testing.assert_allclose(se[0], ref, rtol=0.15)
    # against grf's own R = 200 run of this very case (two noisy SEs: allow 15 % + 10 %)
    np.testing.assert_allclose(se, case["std.err"], rtol=0.25)
    np.testing.assert_allclose(np.atleast_1d(result.rate_ratio), np.asarray(case["estimate"]) / se)


@pytest.mark.parametrize("name", ["continuous_bigR_AUTOC", "clustered_bigR_QINI"])
def test_standard_errors_at_large_R(rate_data, name):
    data, expected = rate_data
    case = expected["cases"][name]
    result = _call(data, name, _grid(case), n_bootstrap=2000, seed=2)
    np.testing.assert_allclose(result.std_err, case["std.err"], rtol=0.05)
    ref_toc = np.asarray(case["TOC"]["std.err"])
    positive = ref_toc > 0
    np.testing.assert_allclose(result.toc["std_err"][positive], ref_toc[positive], rtol=0.08)
    assert np.all(result.toc["std_err"][~positive] == 0)  # TOC(1) = 0 in every replicate


def test_spec_worked_example():
    dr, s = [3, -1, 2, 0], [0.9, 0.1, 0.5, 0.5]
    autoc = rank_average_treatment_effect(dr, s, "AUTOC", q=[0.3, 0.5, 1], n_bootstrap=0)
    qini = rank_average_treatment_effect(dr, s, "QINI", q=[0.3, 0.5, 1], n_bootstrap=0)
    assert autoc.estimate == pytest.approx(11 / 12, abs=1e-15)
    assert qini.estimate == pytest.approx(0.375, abs=1e-15)
    np.testing.assert_allclose(autoc.toc["estimate"], [5 / 3, 1.0, 0.0], rtol=0, atol=1e-15)
    assert autoc.std_err == 0 and autoc.target == "priorities | AUTOC"


def test_aipw_scores_reproduce_the_reference_dr_column(rate_data):
    from causal.scores import aipw_scores

    data, _ = rate_data
    scores = aipw_scores(data["Y"], data["W"], data["m_hat"], data["tau_hat_eval"], data["e_hat"])
    np.testing.assert_allclose(scores, data["dr"], rtol=1e-12, atol=1e-12)
