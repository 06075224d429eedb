"""``geovit cate`` end to end on a small simulated RCT, and its errors for bad units tables."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from causal.simulate import simulate_rct
from causal.units import read_rct_units
from geovit.errors import DataError

FAST = ["--n-estimators", "40", "--n-bootstrap", "50", "--no-swap", "--holdout", "0"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate_rct(tmp_path_factory.mktemp("rct"), n_units=160, tile_px=64, small_px=16, seed=2)


def test_cate_end_to_end(sim, tmp_path, run_cli):
    out = tmp_path / "out"
    units = pd.read_csv(sim.units_csv)
    stray = units.iloc[[0]].assign(unit_id="far_away", lon=-60.0)  # ~1300 km east of the mosaic
    csv = tmp_path / "units.csv"
    pd.concat([units, stray]).to_csv(csv, index=False)
    with pytest.warns(UserWarning, match="far_away"):
        code, stdout, err = run_cli("cate", "--units", csv, "--raster", sim.raster, "--scales", "16,64",
                                    "--cluster-col", "village", "--outside", "skip", "--out", out, *FAST)
    assert code == 0, err
    cate = pd.read_csv(out / "cate.csv")
    assert len(cate) == 160 and cate["unit_id"].tolist() == sim.units["unit_id"].tolist()
    assert np.isfinite(cate[["tau_hat", "tau_lower", "tau_upper"]].to_numpy()).all()
    assert (cate.tau_lower <= cate.tau_hat).all() and (cate.tau_hat <= cate.tau_upper).all()
    # the estimated effects track the simulation's known τ
    assert np.corrcoef(cate.tau_hat, sim.units.tau_true)[0, 1] > 0.5
    rate = pd.read_csv(out / "rate.csv")
    assert sorted(rate.scales.astype(str)) == ["16", "16+64", "64"]
    np.testing.assert_allclose(rate.rate_ratio, rate.estimate / rate.std_err)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_units"] == 1 and summary["units"] == 160
    assert "+".join(map(str, summary["chosen"])) == str(rate.sort_values("rate_ratio").scales.iloc[-1])
    assert (cate.scales.astype(str) == "+".join(map(str, summary["chosen"]))).all()
    toc = pd.read_csv(out / "toc.csv")
    assert toc.groupby("rule").q.max().eq(1.0).all()
    assert toc[toc.q == 1.0].estimate.abs().max() < 1e-12  # TOC(1) = 0
    assert (out / "toc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "chosen scales" in stdout
    assert any(p.suffix == ".zarr" for p in (out / "embeddings").iterdir())


def _bad(sim, tmp_path, edit, *extra):
    units = pd.read_csv(sim.units_csv)
    edit(units)
    path = tmp_path / "units.csv"
    units.to_csv(path, index=False)
    return ["cate", "--units", path, "--raster", sim.raster, "--scales", "16,64", "--out", tmp_path / "o", *FAST, *extra]


def _set(col, row, value):
    def edit(df):
        df[col] = df[col].astype(object)
        df.loc[row, col] = value
    return edit


@pytest.mark.parametrize("edit, extra, pattern", [
    (lambda df: df.drop(columns="outcome", inplace=True), (), r"missing column\(s\) \['outcome'\]"),
    (_set("treatment", 3, 2), (), r"'treatment'.*binary.*hh00003"),
    (_set("outcome", 7, np.nan), (), r"'outcome'.*hh00007"),
    (_set("lon", 5, 10.0), (), r"outside raster.*hh00005"),
    (lambda df: df.__setitem__("village", "v0"), ("--cluster-col", "village"), r"'village'.*fewer than 2 clusters"),
    (lambda df: None, ("--lat-col", "latitude"), r"missing column\(s\) \['latitude'\]"),
])
def test_bad_units_fail_cleanly(sim, tmp_path, run_cli, edit, extra, pattern):
    import re

    code, _, err = run_cli(*_bad(sim, tmp_path, edit, *extra))
    assert code == 2
    assert re.search(pattern, err), err
    assert "Traceback" not in err


def test_bad_scales_rejected_by_the_parser(sim, tmp_path, run_cli):
    with pytest.raises(SystemExit) as exc:
        run_cli("cate", "--units", sim.units_csv, "--raster", sim.raster, "--scales", "16,big", "--out", tmp_path)
    assert exc.value.code == 2


def test_treatment_labels():
    df = pd.DataFrame({"unit_id": ["a", "b", "c"], "lon": [0, 0, 0], "lat": [0, 0, 0],
                       "treatment": ["Treatment", "Control", "treatment"], "outcome": [1.0, 2.0, 3.0]})
    assert read_rct_units(df)["W"].tolist() == [1, 0, 1]
    arms = df.assign(treatment=["cash", "none", "none"])
    assert read_rct_units(arms, treated_value="cash")["W"].tolist() == [1, 0, 0]
    with pytest.raises(DataError, match="'treatment'.*'cash'"):
        read_rct_units(arms)
    with pytest.raises(DataError, match="single arm"):
        read_rct_units(df.assign(treatment=1))
