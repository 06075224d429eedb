"""The documentation tutorials (``docs/tutorials/*.ipynb``) run on the built-in data and reach their results.

Each notebook is committed with the outputs the site shows. Here a copy without outputs executes
again (nbclient, kernel python3, a temp folder as working directory, the tutorials' tiny settings)
and the assertions read the ``results.json`` it writes and the files it produced. A second test
checks that the committed copies carry their outputs (a figure each, no error, no machine path).

To refresh the committed outputs after changing a tutorial, run these tests with
``GEOVIT_UPDATE_TUTORIALS=1``: a notebook whose assertions pass is written back with its new
outputs (the working folder and the Python installation shown as relative paths).
"""
from __future__ import annotations

import json
import os
import re
import site
from pathlib import Path

import pytest
from repo_paths import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

TUTORIALS = REPO / "docs" / "tutorials"
NOTEBOOKS = sorted(p.name for p in TUTORIALS.glob("*.ipynb"))
MACHINE_PATH = re.compile(r"(/tmp/|/work/|/root/|/home/|\\\\Users\\\\|/Users/)")


def _execute(name: str, workdir: Path) -> dict:
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}}).execute()
    _EXECUTED[name] = (nb, workdir)
    return json.loads((workdir / "results.json").read_text())


_EXECUTED: dict = {}


def _update_committed(name: str) -> None:
    """With GEOVIT_UPDATE_TUTORIALS=1, write tutorial ``name`` back with its outputs (called once its
    assertions passed)."""
    if os.environ.get("GEOVIT_UPDATE_TUTORIALS") != "1":
        return
    nb, workdir = _EXECUTED.pop(name)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # timings
    text = nbformat.writes(nb)
    for path in sorted({str(workdir), os.path.realpath(workdir)}, key=len, reverse=True):
        text = text.replace(path + "/", "").replace(path, ".")
    for path in site.getsitepackages():
        text = text.replace(path, "site-packages")
    (TUTORIALS / name).write_text(text, encoding="utf-8")


def test_tutorial_list():
    assert NOTEBOOKS == ["01_channelvit_hcs.ipynb", "02_pretrain_probe.ipynb", "03_change_detection.ipynb",
                         "04_vicon_rollout.ipynb", "06_checkpoints_timm_torchgeo.ipynb"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_tutorial_carries_its_outputs(name):
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code), "commit the executed notebook"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure"
    assert not MACHINE_PATH.search(json.dumps([c.outputs for c in code])), "outputs name a machine path"


def test_channelvit_hcs_tutorial(tmp_path):
    res = _execute("01_channelvit_hcs.ipynb", tmp_path)
    for run in ("hcs", "no_hcs"):
        assert res[run]["sizes"] == list(range(1, 19))  # every subset size reported
        assert res[run]["plotted_sizes"] == 18  # and drawn in the comparison figure
        assert 0 <= res[run]["accuracy_all_channels"] <= 1 and 0 <= res[run]["accuracy_sentinel2"] <= 1
        report = tmp_path / "reports" / run
        assert (report / "channel_robustness.png").stat().st_size > 1000
        assert (report / "channel_subsets.csv").is_file()
    assert (tmp_path / "runs" / "hcs" / "config.yaml").read_text().count("hcs: true") == 1
    assert (tmp_path / "robustness_hcs_vs_no_hcs.png").stat().st_size > 1000
    _update_committed("01_channelvit_hcs.ipynb")


def test_pretrain_probe_tutorial(tmp_path):
    res = _execute("02_pretrain_probe.ipynb", tmp_path)
    assert res["steps"] == 8 and res["recon_figures"] >= 1
    assert {"train_loss_recon_step", "train_loss_ce_step"} <= set(res["loss_terms"])
    probe = {(r["channel_set"], r["method"]): r for r in res["probe"]}
    assert {("full", "linear"), ("sentinel1", "linear"), ("sentinel2", "linear")} <= set(probe)
    assert probe["full", "linear"]["num_channels"] == 18 and probe["sentinel1", "linear"]["num_channels"] == 8
    assert all(0 <= r["accuracy"] <= 1 and r["chance"] == pytest.approx(1 / 17) for r in res["probe"])
    assert (tmp_path / "probe" / "probe.png").is_file()
    _update_committed("02_pretrain_probe.ipynb")


def test_change_detection_tutorial(tmp_path):
    res = _execute("03_change_detection.ipynb", tmp_path)
    assert res["crs"] == "EPSG:32633" and res["same_transform"] and res["shape"] == [64, 64]
    assert set(res["values"]) <= {0, 1}  # change / no change; no nodata inside the scene
    assert 0 <= res["prob_min"] <= res["prob_max"] <= 1 and res["overlay"]
    metrics = json.loads((tmp_path / "runs" / "levir" / "metrics_test.json").read_text())
    assert 0 <= metrics["f1"] <= 1 and 0 <= metrics["oa"] <= 1
    _update_committed("03_change_detection.ipynb")


def test_vicon_rollout_tutorial(tmp_path):
    res = _execute("04_vicon_rollout.ipynb", tmp_path)
    for run in ("rollout_all", "rollout_dropped"):
        errors = res[run]
        assert set(errors) == {"last_step_scale_by_std", "persistence_last_step_scale_by_std",
                               "mean_given_last_step_scale_by_std"}
        assert all(0 < v < 100 for v in errors.values())
    # the baselines do not depend on the model: persistence is scored on the same frames either way
    assert res["rollout_all"]["persistence_last_step_scale_by_std"] == res["rollout_dropped"]["persistence_last_step_scale_by_std"]
    assert (tmp_path / "rollout_dropped" / "error_vs_time.png").is_file()
    _update_committed("04_vicon_rollout.ipynb")


def test_checkpoints_timm_torchgeo_tutorial(tmp_path):
    res = _execute("06_checkpoints_timm_torchgeo.ipynb", tmp_path)
    assert res["err_all"] <= 1e-5 and res["err_subset"] <= 1e-5  # the conformance tolerance
    assert res["timm_file_equal"] and res["bound_equal"]
    assert res["feature_channels"] == [192, 192, 192] and res["feature_shapes"] == [[2, 192, 4, 4]] * 3
    assert res["change_shape"] == [1, 1, 32, 32] and len(res["change_levels"]) == 4
    assert res["torchgeo_logits"] == [2, 17]
    _update_committed("06_checkpoints_timm_torchgeo.ipynb")
