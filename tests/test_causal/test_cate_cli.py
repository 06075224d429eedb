"""``geovit cate`` end to end on a small simulated RCT, and its errors for bad units tables."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import rasterio

from causal.simulate import simulate_rct
from causal.units import read_rct_units
from geovit.errors import DataError

FAST = ["--n-estimators", "40", "--n-bootstrap", "50", "--no-swap", "--holdout", "0"]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate_rct(tmp_path_factory.mktemp("rct"), n_units=160, tile_px=64, small_px=16, seed=2)


def _with_nodata(sim, path, unit: int):
    """A copy of the mosaic with nodata = 0 declared and a 2 × 2 nodata hole at unit ``unit``."""
    with rasterio.open(sim.raster) as src:
        data, profile = src.read(), src.profile
    cols = int(np.ceil(np.sqrt(len(sim.units))))
    r, c = divmod(unit, cols)
    mid = sim.tile_px // 2
    y0, x0 = r * sim.tile_px + mid, c * sim.tile_px + mid
    data[:, y0 - 1:y0 + 1, x0 - 1:x0 + 1] = 0
    profile.update(nodata=0)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def test_cate_end_to_end(sim, tmp_path, run_cli):
    out = tmp_path / "out"
    units = pd.read_csv(sim.units_csv)
    stray = units.iloc[[0]].assign(unit_id="far_away", lon=-60.0)  # ~1300 km east of the mosaic
    csv = tmp_path / "units.csv"
    pd.concat([units, stray]).to_csv(csv, index=False)
    raster = _with_nodata(sim, tmp_path / "holes.tif", unit=3)
    with pytest.warns(UserWarning) as caught:
        code, stdout, err = run_cli("cate", "--units", csv, "--raster", raster, "--scales", "16,64",
                                    "--cluster-col", "village", "--outside", "skip", "--out", out, *FAST)
    assert code == 0, err
    messages = [str(w.message) for w in caught]
    assert any("far_away" in m for m in messages)
    # the careful default: the unit whose crops hold nodata is skipped, and the count is said
    assert any("1 of 160 unit(s)" in m and "hh00003" in m and "skipped" in m for m in messages)
    kept = sim.units[sim.units.unit_id != "hh00003"]
    cate = pd.read_csv(out / "cate.csv")
    assert len(cate) == 159 and cate["unit_id"].tolist() == kept["unit_id"].tolist()
    bounds = ["tau_ci_lower_95", "tau_ci_upper_95"]  # the level is in the names
    assert np.isfinite(cate[["tau_hat", "tau_se", *bounds]].to_numpy()).all()
    assert (cate.tau_ci_lower_95 <= cate.tau_hat).all() and (cate.tau_hat <= cate.tau_ci_upper_95).all()
    np.testing.assert_allclose(cate.tau_ci_upper_95 - cate.tau_hat, 1.959964 * cate.tau_se, rtol=1e-4)
    # the estimated effects track the simulation's known τ
    assert np.corrcoef(cate.tau_hat, kept.tau_true)[0, 1] > 0.5
    groups = pd.read_csv(out / "groups.csv")
    assert groups["group"].tolist() == [1, 2, 3, 4, 5] and groups["n_units"].sum() == 159
    assert groups.set_index("group")["n_units"].to_dict() == cate["group"].value_counts().sort_index().to_dict()
    assert {"estimate", "std_err", "ci_lower_95", "ci_upper_95", "tau_true_mean", "covered"} <= set(groups.columns)
    rate = pd.read_csv(out / "rate.csv")
    assert sorted(rate.scales.astype(str)) == ["16", "16+64", "64"]
    np.testing.assert_allclose(rate.rate_ratio, rate.estimate / rate.std_err)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_units"] == 2 and summary["units"] == 159 and summary["nodata_units"] == 1
    calibration = summary["calibration"]
    for row in ("mean.forest.prediction", "differential.forest.prediction"):
        assert set(calibration[row]) == {"estimate", "std_err", "t_value", "p_value"}
    assert calibration["differential.forest.prediction"]["t_value"] > 2  # heterogeneity is there
    coverage = summary["coverage"]  # the units table holds tau_true: coverage is reported
    covered = (cate.tau_ci_lower_95 <= kept.tau_true.to_numpy()) & (kept.tau_true.to_numpy() <= cate.tau_ci_upper_95)
    assert coverage["ci_level"] == 0.95 and coverage["unit_intervals"] == pytest.approx(covered.mean())
    assert coverage["group_intervals"] == pytest.approx(groups["covered"].mean())
    assert "differential.forest.prediction" in stdout and "coverage of the true effect" in stdout
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
    code, _, err = run_cli(*_bad(sim, tmp_path, edit, *extra))
    assert code == 2
    assert re.search(pattern, err), err
    assert "Traceback" not in err


@pytest.mark.parametrize("flag, value", [
    ("--scales", "16,big"), ("--holdout", "1"), ("--holdout", "nan"), ("--ci-level", "95"), ("--n-jobs", "0"),
    ("--batch-size", "0"), ("--n-estimators", "0"), ("--n-bootstrap", "1"), ("--nodata", "mean"),
    ("--select-features", "-1"), ("--ci-group-size", "1"),
])
def test_bad_values_rejected_by_the_parser(sim, tmp_path, run_cli, capsys, flag, value):
    with pytest.raises(SystemExit) as exc:
        run_cli("cate", "--units", sim.units_csv, "--raster", sim.raster, flag, value, "--out", tmp_path)
    assert exc.value.code == 2
    assert flag in capsys.readouterr().err


def test_bad_files_fail_cleanly(sim, tmp_path, run_cli):
    """Each a class of problem: one message naming the file or flag, exit 2, no traceback."""
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    header_only = tmp_path / "header.csv"
    header_only.write_text("unit_id,lon,lat,treatment,outcome\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    base = ["--units", sim.units_csv, "--raster", sim.raster, "--scales", "16,64", *FAST]
    cases = [
        (["cate", *base, "--out", a_file], r"--out .*a_file: exists and is a file; expected a folder"),
        (["cate", *base, "--out", a_file / "sub"], r"--out .*part of the path is a file"),
        (["cate", *base, "--cache", a_file, "--out", tmp_path / "o"], r"--cache .*exists and is a file"),
        (["cate", "--units", header_only, "--raster", sim.raster, "--out", tmp_path / "o"],
         r"units file .*header.csv: has a header but no rows"),
        (["cate", "--units", empty, "--raster", sim.raster, "--out", tmp_path / "o"],
         r"units file .*empty.csv: not a readable CSV"),
        (["cate", "--units", tmp_path, "--raster", sim.raster, "--out", tmp_path / "o"], r"is a folder"),
        (["cate", "--units", sim.units_csv, "--raster", sim.units_csv, "--out", tmp_path / "o"],
         r"raster .*units.csv: not readable by rasterio"),
        (["cate", *base, "--scales", "16,5000", "--out", tmp_path / "o"], r"scales \[5000\]: crops wider than raster"),
        (["cate", *base, "--holdout", "0.95", "--out", tmp_path / "o"], r"--holdout\) the selection part"),
    ]
    for argv, pattern in cases:
        code, _, err = run_cli(*argv)
        assert code == 2, (argv, err)
        assert re.search(pattern, err), err
        assert "Traceback" not in err


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


def test_help_names_the_interval_level(run_cli, capsys):
    with pytest.raises(SystemExit):
        run_cli("cate", "--help")
    text = capsys.readouterr().out
    assert "tau_ci_lower_95" in text and "--ci-level" in text and "--nodata" in text
