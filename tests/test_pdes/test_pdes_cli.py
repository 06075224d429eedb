"""``geovit pdes {synth,train,rollout}`` end to end on tiny generated data, and bad input (exit 2)."""
from __future__ import annotations

import csv
import gc

import h5py
import numpy as np
import pytest
import torch
from test_pdes_persistence import one_thread  # noqa: F401  (fixture)

TINY = """\
embed_dim: 16
num_heads: 2
mlp_dim: 32
depth: 1
num_pairs: 6
max_pairs: 6
min_ex: 2
max_stride: 3
warmup_steps: 1
synthetic_resolution: 16
synthetic_trajectories: 6
"""
ROLL = ("--gt-steps", "8", "--num-examples", "5")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train 2 steps without --data (generates the sets), then resume to 4; returns (out, stdout)."""
    from geovit.cli import main

    out = tmp_path_factory.mktemp("pdes_train")
    (out / "tiny.yaml").write_text(TINY)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        common = ("pdes", "train", "--out", str(out), "--config", str(out / "tiny.yaml"), "--batch-size", "2",
                  "--accelerator", "cpu")
        assert main([*common, "--max-steps", "2"]) == 0
        assert main([*common, "--max-steps", "4", "--resume", "last"]) == 0
    finally:
        torch.set_num_threads(before)
    return out


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_generates_data_when_none_given_logs_and_resumes(trained):
    data = trained / "synthetic_data" / "vicon_default"
    assert any(p.name.startswith("NavierStokes2D_test_") for p in (data / "ns2d").iterdir())
    assert sorted(p.name for p in (data / "cfd2d").iterdir()) == ["test", "train", "valid"]
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4  # resumed from step 2, not restarted
    assert ckpt["hyper_parameters"]["family"] == "vicon"
    assert ckpt["hyper_parameters"]["model"]["patch_size"] == 4  # 16² frames / 4 patches
    rows = _rows(trained / "logs" / "metrics.csv")
    assert any(r.get("train_loss") for r in rows) and any(r.get("val_loss") for r in rows)


def test_rollout_writes_errors_csv_curve_and_strip(trained, run_cli, one_thread):  # noqa: F811
    out = trained / "roll"
    code, stdout, _ = run_cli("pdes", "rollout", trained / "checkpoints" / "last.ckpt",
                              "--data", trained / "synthetic_data" / "vicon_default" / "cfd2d", "--strategy", "multi_repeat",
                              "--max-stride", "3", *ROLL, "--out", out)
    assert code == 0, stdout
    rows = _rows(out / "rollout_errors.csv")
    assert [r["trajectory"] for r in rows] == ["0", "1", "mean"]
    for scheme in ("scale_by_std", "scale_by_size"):
        values = [float(r[f"last_step_{scheme}"]) for r in rows[:-1]]
        assert all(np.isfinite(values)) and min(values) > 0
        assert float(rows[-1][f"last_step_{scheme}"]) == pytest.approx(np.mean(values))
        assert f"last-step error ({scheme})" in stdout
    for png in ("error_vs_time.png", "trajectory_0_density.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*"))  # atomic writes leave no temp files


def test_rollout_with_dropped_frames(trained, run_cli, one_thread):  # noqa: F811
    out = trained / "roll_drop"
    code, stdout, err = run_cli("pdes", "rollout", trained / "checkpoints" / "last.ckpt",
                                "--data", trained / "synthetic_data" / "vicon_default" / "ns2d", "--strategy", "multi_repeat",
                                "--max-stride", "2", *ROLL, "--drop-frames", "1,3,5", "--out", out,
                                "--plot-channel", "scalar")
    assert code == 0, err
    assert "dropped frames 1,3,5" in stdout
    assert len(_rows(out / "rollout_errors.csv")) == 3
    assert (out / "trajectory_0_scalar.png").exists()


@pytest.mark.parametrize("extra, message", [
    (("--drop-frames", "mask"), "needs the key 'dropped_mask'"),
    (("--drop-frames", "1,12"), "frames [12] are not among the given frames"),
    (("--gt-steps", "30"), "has 21 frames per trajectory; the prompt needs at least 31"),
    (("--channels", "vorticity"), "matches no field of pdebench_cfd2d"),
    (("--strategy", "zigzag"), "rollout strategy 'zigzag'"),
])
def test_rollout_bad_arguments_exit_2(trained, run_cli, extra, message):
    code, _, err = run_cli("pdes", "rollout", trained / "checkpoints" / "last.ckpt",
                           "--data", trained / "synthetic_data" / "vicon_default" / "cfd2d", *ROLL, *extra,
                           "--out", trained / "roll_bad")
    assert code == 2
    assert message in err


def test_bad_data_files_exit_2_naming_file_and_key(trained, run_cli, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    path = bad / "NavierStokes2D_train_1_0.30000_2.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("train")
        g.create_dataset("u", data=np.zeros((2, 8, 16, 16)))
        g.create_dataset("vx", data=np.zeros((2, 8, 16, 16)))
    code, _, err = run_cli("pdes", "train", "--data", bad, "--out", tmp_path / "o", "--max-steps", "1")
    assert code == 2 and "NavierStokes2D_train_1_0.30000_2.h5: missing key 'train/vy'" in err

    cfd = trained / "synthetic_data" / "vicon_default" / "cfd2d"
    broken = tmp_path / "broken"
    (broken / "test").mkdir(parents=True)
    with h5py.File(cfd / "test" / "0.h5") as src, h5py.File(broken / "test" / "0.h5", "w") as dst:
        for key in src:
            dst.create_dataset(key, data=src[key][()])
        dst["pressure"][1, 12, 3, 3] = np.inf
    code, _, err = run_cli("pdes", "rollout", trained / "checkpoints" / "last.ckpt", "--data", broken, *ROLL,
                           "--out", tmp_path / "r")
    assert code == 2 and "key 'pressure' trajectory 1 has non-finite values" in err and "0.h5" in err

    gc.collect()  # the failed rollout's dataset (holding the file open read-only) may sit in a reference cycle
    with h5py.File(broken / "test" / "0.h5", "a") as f:
        del f["density"]
        f.create_dataset("density", data=np.zeros((2, 21, 16), dtype=np.float32))
    code, _, err = run_cli("pdes", "rollout", trained / "checkpoints" / "last.ckpt", "--data", broken, *ROLL)
    assert code == 2 and "key 'density' has shape (2, 21, 16) (rank 3); expected rank 4" in err


def test_synth_both_kinds_and_layouts(run_cli, tmp_path):
    code, out, _ = run_cli("pdes", "synth", tmp_path / "ns", "--kind", "ns2d", "--resolution", "8", "--frames", "4",
                           "--num-train", "2", "--num-valid", "0", "--num-test", "1", "--buoyancy", "0.3")
    assert code == 0 and "SYNTHETIC ns2d" in out
    names = sorted(p.name for p in (tmp_path / "ns").iterdir())
    assert len(names) == 2 and names[0].startswith("NavierStokes2D_test_") and names[1].endswith("_0.30000_2.h5")
    code, _, _ = run_cli("pdes", "synth", tmp_path / "cfd", "--kind", "cfd2d", "--resolution", "8", "--frames", "3",
                         "--num-train", "3", "--num-valid", "1", "--num-test", "1", "--mach", "1.0",
                         "--dropped-every", "2")
    assert code == 0
    (path,) = (tmp_path / "cfd").iterdir()
    assert path.name == "2D_CFD_Rand_M1_Eta1e-08_Zeta1e-08_periodic_8_Train.hdf5"
    with h5py.File(path) as f:
        assert f["Vx"].shape == (5, 3, 8, 8) and "dropped_mask" in f
    code, _, err = run_cli("pdes", "synth", tmp_path / "x", "--kind", "ns2d", "--layout", "vicon")
    assert code == 2 and "PDEArena layout only" in err


def test_official_state_dict_needs_its_constructor_config(trained, run_cli):
    code, _, err = run_cli("pdes", "rollout", trained / "200000_params.pth", "--data", trained / "synthetic_data" / "vicon_default" / "cfd2d")
    assert code == 2 and "needs --official-config" in err
    code, _, err = run_cli("pdes", "rollout", trained / "checkpoints" / "last.ckpt", "--data",
                           trained / "synthetic_data" / "vicon_default" / "cfd2d", "--official-config", trained / "missing.json")
    assert code == 2 and "--official-config" in err and "missing.json" in err
