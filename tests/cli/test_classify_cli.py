"""`geovit train` / `evaluate` / `convert` end to end on tiny settings, and their bad-input errors."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

TINY = dict(model="channelvit_tiny_patch8", model_kwargs=dict(embed_dim=24, depth=1, num_heads=2, img_size=32),
            synthetic_samples=40, warmup_steps=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run shared by the tests below: (out dir, best checkpoint)."""
    from geovit.cli import main

    out = tmp_path_factory.mktemp("train")
    cfg = out / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    code = main(["train", "--config", str(cfg), "--max-steps", "4", "--batch-size", "16", "--out", str(out),
                 "--accelerator", "cpu"])
    assert code == 0
    ckpts = sorted((out / "checkpoints").glob("*.ckpt"))
    return out, ckpts


def test_training_writes_checkpoints_logs_and_synthetic_data(trained):
    out, ckpts = trained
    names = {c.name for c in ckpts}
    assert "last.ckpt" in names and any(n.startswith("best-") for n in names)
    metrics = pd.read_csv(out / "logs" / "metrics.csv")
    assert {"val_acc", "val_loss"} <= set(metrics.columns)
    assert (out / "synthetic_data" / "so2sat" / "training.h5").is_file()
    assert list(out.glob("tensorboard/events.*"))
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["family"] == "channelvit" and ckpt["global_step"] == 4
    assert not list(out.rglob(".*.ckpt*"))  # no temp files left behind


def test_evaluate_report(trained, run_cli, tmp_path):
    out, _ = trained
    code, stdout, _ = run_cli("evaluate", out / "checkpoints" / "last.ckpt", "--channels", "sentinel1",
                              "--out", tmp_path, "--subsets-per-size", "2")
    assert code == 0
    assert "SYNTHETIC" in stdout
    summary = pd.read_csv(tmp_path / "channel_robustness.csv")
    assert set(range(1, 19)) <= set(summary["size"])
    assert {"sentinel2 only", "--channels sentinel1"} <= set(summary.subset)
    assert "sentinel1 only" not in set(summary.subset)  # same set as --channels: reported once
    assert summary["mean"].between(0, 1).all()
    detail = pd.read_csv(tmp_path / "channel_subsets.csv")
    sized = detail[detail.subset.str.startswith("size")]
    assert (sized.groupby("size").size().loc[2:17] == 2).all()  # sampled subsets per size
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    full = detail[detail["size"] == 18].accuracy.iloc[0]
    assert metrics["accuracy_all_channels"] == pytest.approx(full)
    assert (tmp_path / "channel_robustness.png").stat().st_size > 1000


def test_resume_continues_from_last(trained, run_cli):
    out, _ = trained
    cfg = out / "tiny.yaml"
    code, _, _ = run_cli("train", "--config", cfg, "--max-steps", "6", "--batch-size", "16", "--out", out,
                         "--resume", "last", "--accelerator", "cpu")
    assert code == 0
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


@pytest.mark.parametrize("argv, message", [
    (["train", "--channels", "landsat8"], "unknown channel name 'landsat8' for table 'so2sat', and not one of its presets"),
    (["train", "--channels", "S2_B99"], "unknown channel name 'S2_B99'"),
    (["train", "--data", "/nonexistent/so2sat"], "data='/nonexistent/so2sat': not found"),
    (["train", "--config", "/nonexistent.yaml"], "file not found"),
])
def test_train_bad_input(run_cli, tmp_path, argv, message):
    code, _, err = run_cli(*argv, "--out", tmp_path)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_config_typo_is_an_error(run_cli, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("learning_rate: 0.1\n")
    code, _, err = run_cli("train", "--config", cfg, "--out", tmp_path)
    assert code == 2 and "unknown key 'learning_rate'" in err


def test_evaluate_rejects_foreign_and_corrupt_checkpoints(run_cli, tmp_path, trained):
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"family": "changevit"}}, other)
    code, _, err = run_cli("evaluate", other)
    assert code == 2 and "holds a 'changevit' model" in err and "'channelvit'" in err
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00garbage")
    code, _, err = run_cli("evaluate", bad)
    assert code == 2 and "could not be read" in err
    out, _ = trained
    code, _, err = run_cli("evaluate", out / "checkpoints" / "last.ckpt", "--channels", "jumpcp")
    assert code == 2 and "belongs to table 'jumpcp'" in err


def test_convert_cli(run_cli, tmp_path, conformance):
    case = conformance("channelvit")
    target = tmp_path / "cv.safetensors"
    code, stdout, _ = run_cli("convert", "channelvit", case.file("lightning_style_ckpt.pt"), target,
                              "--config", "num_heads=4")
    assert code == 0 and target.is_file()
    from geovit.hub import load_converted

    model = load_converted(target)
    with torch.no_grad():
        logits = model(torch.from_numpy(case.io["x"]), torch.from_numpy(case.io["channels_all"]))
    torch.testing.assert_close(logits, torch.from_numpy(case.io["logits_all"]), atol=1e-5, rtol=1e-5)
    code, _, err = run_cli("convert", "channelvit", case.file("lightning_style_ckpt.pt"), tmp_path / "x.pt")
    assert code == 2 and ".safetensors" in err


def test_evaluate_refuses_channels_the_model_never_saw(trained, run_cli, tmp_path):
    out, _ = trained
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt["hyper_parameters"]["channel_ids"] = list(range(8, 18))  # as if trained on Sentinel-2 only
    s2_only = tmp_path / "s2.ckpt"
    torch.save(ckpt, s2_only)
    code, _, err = run_cli("evaluate", s2_only, "--channels", "S1_B1,S2_B02")
    assert code == 2 and "never seen ['S1_B1']" in err


def test_train_holds_out_cities_named_by_val_cities(run_cli, tmp_path):
    """``--val-cities`` reaches the So2Sat DataModule: the held-out city's rows are the validation split."""
    import h5py

    from geovit.data.so2sat import synthetic_geolocation, write_geo_h5
    from geovit.data.so2sat_synthetic import write_synthetic

    data = tmp_path / "so2sat"
    write_synthetic(data, num_samples=48, seed=0)
    with h5py.File(data / "training.h5", "r") as f:
        rows = f["sen1"].shape[0]
    epsg, tfw, city = synthetic_geolocation(rows, seed=0)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({k: v for k, v in TINY.items() if k != "synthetic_samples"}))
    argv = ("train", "--config", cfg, "--data", data, "--max-steps", "1", "--batch-size", "8", "--accelerator", "cpu")

    code, _, err = run_cli(*argv, "--out", tmp_path / "a", "--val-cities", "paris")
    assert code == 2 and "training_geo.h5" in err  # no geolocation file yet: named
    write_geo_h5(data / "training_geo.h5", epsg=epsg, tfw=tfw, city=city)
    code, _, err = run_cli(*argv, "--out", tmp_path / "b", "--val-cities", "atlantis")
    assert code == 2 and "atlantis" in err and "paris" in err  # unknown city: the known ones listed
    held_out = city[len(city) // 2]
    code, out, err = run_cli(*argv, "--out", tmp_path / "c", "--val-cities", held_out)
    assert code == 0, err
    assert yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())["val_cities"] == held_out
    metrics = pd.read_csv(tmp_path / "c" / "logs" / "metrics.csv")
    assert metrics["val_acc"].notna().any()
