"""Both causal notebooks execute end to end (nbclient, kernel python3) and reach the expected results.

The notebooks write their key numbers to a JSON file in their working directory (a temp folder
here); the assertions read those values.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _execute(name: str, workdir: Path) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors


def test_policy_rct_notebook(tmp_path):
    _execute("policy_rct_heterogeneity.ipynb", tmp_path)
    out = tmp_path / "policy_rct_outputs"
    res = json.loads((out / "results.json").read_text())
    assert res["n_units"] == 400 and res["scales"] == [16, 32, 64]
    assert set(res["rate_table"]) == {"16", "32", "64", "16+32", "16+64", "32+64"}
    assert res["chosen"] in (res["best_single"], res["best_multi"])
    # the simulated effects depend on a household and a neighbourhood feature: heterogeneity is found,
    # the estimates track the truth, and targeting the top 20 % beats treating everyone
    assert max(res["rate_table"].values()) > 2.0
    assert res["corr_tau_true"] > 0.5
    assert res["policy_top20_effect"] > res["policy_all_effect"]
    assert (out / "cate.csv").is_file() and any((out / "embeddings").iterdir())


def test_simulation_study_notebook(tmp_path):
    _execute("simulation_study.ipynb", tmp_path)
    res = json.loads((tmp_path / "simulation_results.json").read_text())
    both, concat = res["blob + edge"], "16+64 concat"
    assert both[concat]["pehe"] < min(both["16 px"]["pehe"], both["64 px"]["pehe"])
    assert both[concat]["rate_ratio"] > max(both["16 px"]["rate_ratio"], both["64 px"]["rate_ratio"])
    # each single-scale feature is best seen by its own crop
    assert res["blob (household)"]["16 px"]["pehe"] < res["blob (household)"]["64 px"]["pehe"]
    assert res["edge (neighbourhood)"]["64 px"]["pehe"] < res["edge (neighbourhood)"]["16 px"]["pehe"]
