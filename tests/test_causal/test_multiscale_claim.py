"""The paper's qualitative claim, on the simulated RCT (Zhu, Jerzak & Daoud, CLeaR 2025).

When the treatment effect depends on a household-scale feature (the central blob, seen by small
crops) *and* a neighbourhood-scale feature (the edge fade, seen only by large crops), the
two-scale concatenation beats both single scales in RATE Ratio and PEHE. When it depends on the
household scale alone, concatenating the large crop brings no gain (PEHE gets worse, the RATE
Ratio gain is a fraction of the two-scale case) -- the "modest cost when no multi-scale signal
exists". Encoder: geovit's deterministic tiny random CNN; forests kept small so this runs in
seconds. The grf recipe is run once per arm (no half swap) with the same split for every arm.
"""
from __future__ import annotations

import numpy as np
import pytest

from causal.embeddings import embed_units
from causal.estimators import MultiScaleCATE
from causal.simulate import simulate_outcomes, simulate_rct

SMALL, LARGE = 16, 64
ARMS = ((SMALL,), (LARGE,), (SMALL, LARGE))
SEEDS = (0, 1)


def _scores(ds, flags, effects, seed):
    out = simulate_outcomes(flags, effects=effects, noise_sd=0.5, seed=seed + 10)
    y, w, tau = out["outcome"].to_numpy(), out["treatment"].to_numpy(), out["tau_true"].to_numpy()
    res = {}
    for arm in ARMS:
        model = MultiScaleCATE(scales=list(arm), propensity=0.5, n_estimators=60, random_state=seed)
        ev = model.evaluate(y, w, ds, swap=False, n_bootstrap=200, random_state=seed)
        tau_hat = ev.cate_out_of_sample(len(y))
        scored = ~np.isnan(tau_hat)
        pehe = float(np.sqrt(np.mean((tau_hat[scored] - tau[scored]) ** 2)))
        res[arm] = (ev.rate_ratio, pehe)
    return res


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    results = {}
    for seed in SEEDS:
        sim = simulate_rct(tmp_path_factory.mktemp(f"sim{seed}"), n_units=600, tile_px=LARGE, small_px=SMALL, seed=seed)
        ds = embed_units(sim.units, sim.raster, "tiny", scales=(SMALL, LARGE), progress=False)
        flags = sim.units[["rotation", "blob", "edge", "contrast"]]
        results[seed] = {
            "both": _scores(ds, flags, {"blob": 3.0, "edge": 3.0}, seed),
            "household": _scores(ds, flags, {"blob": 3.0}, seed),
        }
    return results


def _gain(res):
    """(RATE-Ratio gain, PEHE ratio) of the concatenation over the best single scale."""
    rr_gain = res[(SMALL, LARGE)][0] - max(res[(SMALL,)][0], res[(LARGE,)][0])
    pehe_ratio = res[(SMALL, LARGE)][1] / min(res[(SMALL,)][1], res[(LARGE,)][1])
    return rr_gain, pehe_ratio


@pytest.mark.parametrize("seed", SEEDS)
def test_concatenation_beats_both_single_scales_when_tau_has_two_scales(study, seed):
    res = study[seed]["both"]
    concat_rr, concat_pehe = res[(SMALL, LARGE)]
    for arm in ((SMALL,), (LARGE,)):
        assert concat_rr > res[arm][0], (arm, res)
        assert concat_pehe < res[arm][1], (arm, res)
    assert _gain(res)[1] < 0.95, res  # a real PEHE gain, not a tie


def test_concatenation_brings_no_gain_when_tau_has_one_scale(study):
    for seed in SEEDS:
        res = study[seed]["household"]
        # the small crop alone is the best representation of a household-only effect ...
        assert res[(SMALL,)][1] < res[(LARGE,)][1], res
        # ... and adding the large crop does not lower the PEHE
        assert _gain(res)[1] > 0.97, res
    one = np.mean([_gain(study[s]["household"])[0] for s in SEEDS])
    two = np.mean([_gain(study[s]["both"])[0] for s in SEEDS])
    assert two > 2.0, two
    assert one < two / 2, (one, two)
