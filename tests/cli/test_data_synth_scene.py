"""`geovit data synth scene`: two co-registered stacks with a cloud mask, for `geovit predict`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio


def test_data_synth_scene_writes_co_registered_stacks_with_clouds(run_cli, tmp_path):
    code, out, err = run_cli("data", "synth", "scene", tmp_path / "scene", "--height", "64", "--clouds", "half")
    assert code == 0, err
    assert "SYNTHETIC" in out
    root = tmp_path / "scene"
    with rasterio.open(root / "s2.tif") as s2, rasterio.open(root / "s1.tif") as s1, \
            rasterio.open(root / "cloud_mask.tif") as clouds:
        assert (s2.count, s1.count) == (10, 8)
        assert s2.crs == s1.crs == clouds.crs and s2.transform == s1.transform == clouds.transform
        assert s2.shape == s1.shape == clouds.shape == (64, 64)
        mask = clouds.read(1) > 0
    assert 0 < mask.mean() < 1  # part of the S2 stack is clouded, not all of it
    assert json.loads((root / "scene.json").read_text())
    assert np.isfinite(mask).all()


def test_data_synth_scene_bad_fraction_is_refused_by_name(capsys, tmp_path):
    from geovit.cli import main

    with pytest.raises(SystemExit) as exc:  # an argparse usage error
        main(["data", "synth", "scene", str(tmp_path / "s"), "--cloud-cover", "1.5"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--cloud-cover" in err and "≤ 1" in err
    assert not (tmp_path / "s").exists()
