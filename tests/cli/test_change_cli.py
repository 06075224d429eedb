"""``geovit change train/evaluate/predict`` end to end on synthetic LEVIR-CD data, and bad input."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin

from geovit.cli import main
from geovit.data.levircd import LEVIRCD, write_synthetic
from geovit.tasks.change_metrics import ChangeConfusion

TINY = '{"depth": 1, "embed_dim": 64, "num_heads": 2}'
TRANSFORM = from_origin(300_000.0, 5_000_000.0, 0.5, 0.5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Synthetic 64x64 LEVIR-CD pairs and one epoch of a tiny ChangeViT on 32x32 tiles."""
    root = tmp_path_factory.mktemp("change")
    data = write_synthetic(root / "levir", num_samples=5, seed=3, size=64)
    run = root / "run"
    code = main(["change", "train", "--data", str(data), "--tile", "32", "--model-kwargs", TINY, "--max-epochs", "1",
                 "--batch-size", "4", "--plot-samples", "2", "--out", str(run), "--accelerator", "cpu"])
    assert code == 0
    return data, run


def _broken_copy(data: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(data, dst)
    return dst


def _geotiffs(tmp_path: Path, data: Path, crs_after="EPSG:32633") -> tuple[Path, Path]:
    paths = []
    for folder, crs in (("A", "EPSG:32633"), ("B", crs_after)):
        arr = np.asarray(Image.open(data / "test" / folder / "test_1.png")).transpose(2, 0, 1)
        path = tmp_path / f"{folder}.tif"
        with rasterio.open(path, "w", driver="GTiff", height=64, width=64, count=3, dtype="uint8", crs=crs,
                           transform=TRANSFORM) as ds:
            ds.write(arr)
        paths.append(path)
    return tuple(paths)


def test_train_writes_checkpoints_logs_and_plots(trained):
    _, run = trained
    best = list((run / "checkpoints").glob("best-*.ckpt"))
    assert len(best) == 1 and (run / "checkpoints" / "last.ckpt").is_file()
    ckpt = torch.load(best[0], map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["family"] == "changevit" and ckpt["hyper_parameters"]["tile"] == 32
    with open(run / "logs" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert any(r.get("val_f1") not in (None, "") for r in rows)
    plot = run / "plots" / "val_epoch000.png"
    assert plot.is_file() and Image.open(plot).size[0] > 200
    assert not list(run.rglob(".*.tmp")) and not list(run.rglob(".val_epoch*"))


def test_evaluate_scores_one_confusion_matrix_over_all_test_pixels(trained, capsys):
    data, run = trained
    assert main(["change", "evaluate", str(run), "--data", str(data), "--split", "test", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    scores = json.loads((run / "metrics_test.json").read_text())
    for key in ("precision", "recall", "f1", "iou", "oa", "kappa"):
        assert key in out
    # independent recomputation: whole test scenes, four 32x32 tiles each
    from geovit.tasks.change import ChangeDetectionTask

    task = ChangeDetectionTask.load_from_checkpoint(run)
    confusion = ChangeConfusion()
    for sample in LEVIRCD(data, "test"):
        for y in (0, 32):
            for x in (0, 32):
                img = sample["image"][:, :, y:y + 32, x:x + 32]
                confusion.update(task.predict_raw(img[:1], img[1:])[0, 0], sample["mask"][y:y + 32, x:x + 32])
    expected = confusion.compute()
    assert scores["confusion"] == expected["confusion"]
    assert scores["pixels"] == 64 * 64 * len(LEVIRCD(data, "test"))
    assert scores["f1"] == pytest.approx(expected["f1"]) and scores["kappa"] == pytest.approx(expected["kappa"])
    with open(run / "metrics_test.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["iou"]) == pytest.approx(expected["iou"], abs=1e-6)


def test_resume_continues_from_last_checkpoint(trained, tmp_path):
    data, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert main(["change", "train", "--data", str(data), "--tile", "32", "--model-kwargs", TINY, "--max-epochs", "2",
                 "--batch-size", "4", "--plot-samples", "1", "--out", str(copy), "--resume", "last",
                 "--accelerator", "cpu"]) == 0
    last = torch.load(copy / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 2 * 3 and (copy / "plots" / "val_epoch001.png").is_file()  # 3 steps per epoch
    assert not list((copy / "checkpoints").glob("last-v*.ckpt"))


def test_predict_writes_georeferenced_change_map_and_overlay(trained, tmp_path, capsys):
    data, run = trained
    before, after = _geotiffs(tmp_path, data)
    out = tmp_path / "out" / "change.tif"
    assert main(["change", "predict", str(run), "--before", str(before), "--after", str(after), "--out", str(out),
                 "--tile", "32", "--overlap", "8", "--prob-out", str(tmp_path / "prob.tif"), "--device", "cpu"]) == 0
    assert "tiles/s" in capsys.readouterr().out
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 32633 and ds.transform == TRANSFORM and ds.nodata == 255
        change = ds.read(1)
    with rasterio.open(tmp_path / "prob.tif") as ds:
        prob = ds.read(1)
    np.testing.assert_array_equal(change, (prob > 0.5).astype(np.uint8))
    assert Image.open(out.with_suffix(".png")).size == (64, 64)


# ------------------------------------------------------------------------------ bad input
def _fails(argv, capsys, *needles):
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err
    assert "Traceback" not in err


def test_missing_partner_files_are_named(trained, tmp_path, capsys):
    data = _broken_copy(trained[0], tmp_path)
    (data / "test" / "B" / "test_1.png").unlink()
    _fails(["change", "evaluate", trained[1], "--data", data], capsys, "missing partner files", "B/test_1.png")


def test_size_mismatch_non_rgb_and_label_values(trained, tmp_path, capsys):
    data = _broken_copy(trained[0], tmp_path)
    b = data / "test" / "B" / "test_1.png"
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(b)
    _fails(["change", "evaluate", trained[1], "--data", data], capsys, "size mismatch", "A/test_1.png", "B/test_1.png")
    Image.fromarray(np.zeros((64, 64, 4), np.uint8)).save(b)
    _fails(["change", "evaluate", trained[1], "--data", data], capsys, "B/test_1.png", "expected an 8-bit RGB image")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(b)
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(data / "test" / "label" / "test_1.png")
    _fails(["change", "evaluate", trained[1], "--data", data], capsys, "label/test_1.png", "not in {0, 255}")


def test_train_reports_bad_labels_without_traceback(trained, tmp_path, capsys):
    data = _broken_copy(trained[0], tmp_path)
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(data / "val" / "label" / "val_1.png")
    _fails(["change", "train", "--data", data, "--tile", "32", "--model-kwargs", TINY, "--max-epochs", "1",
            "--out", tmp_path / "run", "--accelerator", "cpu"], capsys, "label/val_1.png")


def test_sides_not_multiple_of_16_without_padding(trained, tmp_path, capsys):
    data = tmp_path / "odd"
    write_synthetic(data, num_samples=3, seed=0, size=40)
    _fails(["change", "evaluate", trained[1], "--data", data, "--tile", "0"], capsys, "scene is 40x40", "multiples of 16")
    assert main(["change", "evaluate", str(trained[1]), "--data", str(data), "--tile", "0", "--pad",
                 "--out", str(tmp_path / "m")]) == 0
    assert json.loads((tmp_path / "m" / "metrics_test.json").read_text())["pixels"] == 40 * 40  # padding not scored


def test_crs_mismatch_fails_and_leaves_no_output(trained, tmp_path, capsys):
    before, after = _geotiffs(tmp_path, trained[0], crs_after="EPSG:32634")
    out = tmp_path / "out" / "change.tif"
    _fails(["change", "predict", trained[1], "--before", before, "--after", after, "--out", out, "--tile", "32"],
           capsys, "A.tif", "B.tif", "CRS EPSG:32633 vs EPSG:32634", "--reproject")
    assert not out.exists() and not out.with_suffix(".png").exists()
    assert not (out.parent.exists() and any(out.parent.iterdir()))


def test_foreign_checkpoint_is_refused(tmp_path, capsys, trained):
    ckpt = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"family": "channelvit"}}, ckpt)
    _fails(["change", "evaluate", ckpt, "--data", trained[0]], capsys, "other.ckpt", "'changevit'")


def test_predict_from_converted_safetensors_matches_the_checkpoint(trained, tmp_path):
    from geovit.hub import save_converted
    from geovit.tasks.change import ChangeDetectionTask

    data, run = trained
    task = ChangeDetectionTask.load_from_checkpoint(run)
    weights = tmp_path / "changevit.safetensors"
    save_converted(task.model, "changevit", task.model.config, weights)
    before, after = _geotiffs(tmp_path, data)
    outs = []
    for name, ckpt in (("ckpt", run), ("st", weights)):
        out = tmp_path / f"{name}.tif"
        assert main(["change", "predict", str(ckpt), "--before", str(before), "--after", str(after), "--out", str(out),
                     "--tile", "32", "--no-overlay", "--prob-out", str(tmp_path / f"{name}_p.tif"),
                     "--device", "cpu"]) == 0
        with rasterio.open(tmp_path / f"{name}_p.tif") as ds:
            outs.append(ds.read(1))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)  # training normalisation (imagenet) is the default
    assert not out.with_suffix(".png").exists()


def test_missing_raster_is_named(trained, tmp_path, capsys):
    before, _ = _geotiffs(tmp_path, trained[0])
    _fails(["change", "predict", trained[1], "--before", before, "--after", tmp_path / "nope.tif",
            "--out", tmp_path / "c.tif"], capsys, "nope.tif", "not found")
    assert not (tmp_path / "c.tif").exists()
