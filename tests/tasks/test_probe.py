"""`geovit probe`: linear probe + kNN of a frozen ChA-MAEViT on full and partial channel sets."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geovit.errors import GeovitError
from geovit.models import create_model
from geovit.tasks.probe import knn_probe, linear_probe, partial_sets

TINY = dict(embed_dim=24, depth=1, num_heads=2, num_memory_tokens=1, decoder=dict(num_heads=2))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A `geovit pretrain`-style Lightning checkpoint of a tiny model (untrained) + a synthetic So2Sat set."""
    from geovit.data.so2sat import write_synthetic
    from geovit.tasks.pretraining import PretrainingTask

    tmp = tmp_path_factory.mktemp("probe")
    data = write_synthetic(tmp / "so2sat", num_samples=34, seed=2)
    torch.manual_seed(0)
    config = create_model("chamaevit_tiny_patch8", **TINY).config
    module = PretrainingTask(model_config=config, model_name="chamaevit_tiny_patch8", channel_table="so2sat",
                               channel_names=[], dataset="so2sat", data_root=str(data), synthetic=True)
    path = tmp / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(), "epoch": 0}, path)
    return path, data, module.model.eval()


def _blobs(rng, n, d=6, classes=3, spread=0.2):
    y = np.arange(n) % classes
    centres = rng.normal(size=(classes, d)) * 3
    return centres[y] + rng.normal(scale=spread, size=(n, d)), y


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 10_000))
def test_probes_separate_clusters_but_not_random_labels(seed):
    rng = np.random.default_rng(seed)
    xtr, ytr = _blobs(rng, 60)
    xte, yte = xtr[:30] + rng.normal(scale=0.05, size=(30, 6)), ytr[:30]
    assert linear_probe(xtr, ytr, xte, yte)["accuracy"] == 1.0
    assert knn_probe(xtr, ytr, xte, yte, k=5)["accuracy"] == 1.0
    # labels unrelated to the features: a 1-NN copies the label of the nearest point by cosine distance
    noise = rng.integers(0, 3, size=60)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    nearest = np.argmax(unit(xte) @ unit(xtr).T, axis=1)
    assert knn_probe(xtr, noise, xte, yte, k=1)["accuracy"] == pytest.approx(float(np.mean(noise[nearest] == yte)))


def test_partial_sets_are_presets_inside_the_full_set():
    names = [n for n, _ in partial_sets(range(18), "so2sat")]
    assert names[0] == "full" and {"sentinel1", "sentinel2", "so2sat_rgb"} <= set(names) and "so2sat" not in names
    s1_only = [n for n, _ in partial_sets(range(8), "so2sat")]
    assert s1_only == ["full"]  # nothing smaller than Sentinel-1 is a preset
    custom = partial_sets(range(18), "so2sat", "S2_B04,S2_B03; sentinel1")
    assert custom[1] == ("S2_B04,S2_B03", (10, 9)) and custom[2][0] == "sentinel1"
    with pytest.raises(GeovitError, match="not in the full set"):
        partial_sets(range(8), "so2sat", "sentinel2")


def test_probe_cli_writes_csv_png_for_full_and_partial_sets(checkpoint, tmp_path, run_cli):
    path, data, model = checkpoint
    code, out, err = run_cli("probe", path, "--data", data, "--out", tmp_path, "--k", "3",
                             "--subsets", "sentinel1;S2_B04,S2_B03,S2_B02")
    assert code == 0, err
    df = pd.read_csv(tmp_path / "probe.csv")
    assert list(dict.fromkeys(df["channel_set"])) == ["full", "sentinel1", "S2_B04,S2_B03,S2_B02"]
    assert set(df["method"]) == {"linear", "knn3"} and df["num_channels"].tolist() == [18, 18, 8, 8, 3, 3]
    assert df["accuracy"].between(0, 1).all() and (df["eval_samples"] == 17).all()
    assert (tmp_path / "probe.png").stat().st_size > 0 and not list(tmp_path.glob(".*"))
    # the frozen features are the model's fused feature of exactly the channels kept
    from geovit.data.so2sat import So2Sat, normalization
    from geovit.tasks.probe import extract_features
    from torch.utils.data import DataLoader

    from geovit.data.collate import pad_channels_collate

    ds = So2Sat(data, split="test", transform=normalization("2"))
    feats, labels = extract_features(model, DataLoader(ds, batch_size=8, collate_fn=pad_channels_collate), keep_ids=range(8))
    x = torch.stack([ds[i]["image"] for i in range(3)])
    with torch.no_grad():
        direct = model.forward_features(x[:, :8], channels=torch.arange(8))
    assert np.allclose(feats[:3], direct.numpy(), atol=1e-5) and len(labels) == 17


def test_probe_bad_input_exits_2(checkpoint, tmp_path, run_cli):
    path, data, _ = checkpoint
    code, _, err = run_cli("probe", path, "--data", data, "--channels", "jumpcp", "--out", tmp_path)
    assert code == 2 and "preset 'jumpcp' belongs to table 'jumpcp'" in err and "Traceback" not in err
    code, _, err = run_cli("probe", path, "--data", data, "--channels", "nope", "--out", tmp_path)
    assert code == 2 and "--channels" in err and "'nope'" in err and "table 'so2sat'" in err
    foreign = tmp_path / "changevit.ckpt"
    torch.save({"hyper_parameters": {"family": "changevit"}, "state_dict": {}}, foreign)
    code, _, err = run_cli("probe", foreign, "--data", data, "--out", tmp_path)
    assert code == 2 and "holds a 'changevit' model, but a 'chamaevit' checkpoint was expected" in err
    code, _, err = run_cli("probe", tmp_path / "missing.ckpt", "--out", tmp_path)
    assert code == 2 and "file not found" in err


def test_probe_random_init_is_the_same_architecture_with_fresh_weights(checkpoint, tmp_path, run_cli):
    import json

    path, data, model = checkpoint
    code, _, err = run_cli("probe", path, "--data", data, "--out", tmp_path / "pre", "--k", "3")
    assert code == 0, err
    code, _, err = run_cli("probe", path, "--data", data, "--out", tmp_path / "rand", "--k", "3", "--random-init")
    assert code == 0, err
    pre, rand = (json.loads((tmp_path / d / "probe.json").read_text()) for d in ("pre", "rand"))
    assert pre["random_init"] is False and rand["random_init"] is True
    from geovit.tasks.probe import random_init_like

    fresh = random_init_like(model, seed=0)
    assert fresh.config == model.config
    same = random_init_like(model, seed=0).state_dict()
    assert all(torch.equal(v, same[k]) for k, v in fresh.state_dict().items())  # seeded
    assert not all(torch.equal(v, model.state_dict()[k]) for k, v in fresh.state_dict().items())
