"""geovit.data.registry: entries (geovit's and the plugins'), the synthetic fallback, ``geovit data synth``."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import geovit.data.levircd
from geovit.data import registry
from geovit.data.registry import (
    MARKER,
    SYNTHETIC_BANNER,
    get_dataset,
    list_datasets,
    register_dataset,
    resolve_data,
)
from geovit.errors import GeovitError

GEOVIT = {"so2sat", "jumpcp", "chammi", "levircd", "whucd", "clcd"}
PDES = {"pdearena_ns2d", "pdebench_cfd2d", "vicon_default"}


@pytest.fixture
def isolated(monkeypatch):
    """A copy of the registry that the test may change."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return registry._REGISTRY


def test_geovit_and_plugin_datasets_are_listed():
    names = list_datasets()
    assert names == sorted(names)
    assert GEOVIT | PDES <= set(names)  # pdes arrives through the "geovit.datasets" entry point
    assert get_dataset("whucd").load("dataset").__name__ == "WHUCD"
    assert get_dataset("clcd").datamodule == get_dataset("levircd").datamodule == \
        "geovit.data.datamodules:LEVIRCDDataModule"


@pytest.mark.parametrize("name", sorted(GEOVIT | PDES))
def test_every_entry_imports_and_its_writer_has_the_shared_signature(name):
    info = get_dataset(name)
    assert info.name == name and len(info.splits) == 3
    assert info.load("dataset") is not None and info.load("datamodule") is not None
    params = inspect.signature(info.load("synthetic")).parameters
    assert {"num_samples", "seed"} <= {p for p, v in params.items() if v.kind is v.KEYWORD_ONLY}
    if info.channel_table is not None:
        import geovit.data.chammi  # noqa: F401  (registers the "chammi" table)
        from geovit.channels import TABLES
        assert info.channel_table in TABLES


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(GeovitError) as err:
        get_dataset("so2sat_v9")
    assert str(err.value) == f"unknown dataset 'so2sat_v9'; expected one of {', '.join(list_datasets())}"
    with pytest.raises(GeovitError, match="unknown dataset 'nope'"):
        resolve_data("nope", None, "unused")


def test_load_names_the_field_and_the_target(isolated):
    info = register_dataset(dataclasses.replace(get_dataset("so2sat"), name="broken",
                                                dataset="geovit.data.so2sat:NoSuchClass"))
    with pytest.raises(GeovitError,
                       match=r"dataset 'broken': dataset='geovit.data.so2sat:NoSuchClass' cannot be imported"):
        info.load("dataset")
    with pytest.raises(GeovitError, match="field 'writer'"):
        info.load("writer")


def test_duplicate_registration_warns_and_replaces(isolated):
    again = dataclasses.replace(get_dataset("levircd"), dataset="geovit.data.levircd:WHUCD")
    with pytest.warns(UserWarning, match="dataset 'levircd' is registered again"):
        register_dataset(again)
    assert get_dataset("levircd") is again


@pytest.mark.parametrize("change, field", [
    ({"synthetic": "geovit.data.so2sat.write_synthetic"}, "synthetic="),
    ({"splits": ("train", "test")}, "splits="),
    ({"name": ""}, "name="),
])
def test_malformed_entries_are_refused(isolated, change, field):
    with pytest.raises(GeovitError, match=field):
        register_dataset(dataclasses.replace(get_dataset("so2sat"), **change))
    with pytest.raises(GeovitError, match="expected a DatasetInfo"):
        register_dataset({"name": "so2sat"})


def test_a_plugin_that_registers_something_else_is_named(isolated, monkeypatch):
    import geovit.plugins

    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(geovit.plugins, "load_entry_points", lambda group: {"bad": "pkg:DATASETS"})
    with pytest.raises(GeovitError, match="plugin 'bad' \\(geovit.datasets\\): expected a sequence of"):
        list_datasets()
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(geovit.plugins, "load_entry_points", lambda group: {"odd": [1]})
    with pytest.raises(GeovitError, match="plugin 'odd' .*holds a int"):
        list_datasets()


# -- resolve_data ------------------------------------------------------------------------------------
def _resolve(out, log, **kw):
    kw.setdefault("num_samples", 3)
    kw.setdefault("seed", 0)
    return resolve_data("levircd", None, out, log=log.append, size=32, **kw)


def test_given_data_is_used_as_is(tmp_path):
    lines = []
    assert resolve_data("so2sat", tmp_path, tmp_path / "out", log=lines.append) == (tmp_path, False)
    assert lines == [] and not (tmp_path / "out").exists()
    with pytest.raises(GeovitError, match=r"data='.*missing': not found; expected the folder of the so2sat dataset"):
        resolve_data("so2sat", tmp_path / "missing", tmp_path / "out")


def test_synthetic_set_is_written_once_with_its_marker(tmp_path):
    lines: list[str] = []
    root, synthetic = _resolve(tmp_path, lines)
    assert synthetic and root == tmp_path / "synthetic_data" / "levircd"
    assert json.loads((root / MARKER).read_text()) == {"dataset": "levircd", "num_samples": 3, "seed": 0, "size": 32}
    assert len(list((root / "train" / "A").glob("*.png"))) == 1
    assert lines and all(line.startswith(SYNTHETIC_BANNER) for line in lines)
    assert "writing a synthetic levircd-format set" in lines[0]

    (root / "sentinel").write_text("still here")
    lines.clear()
    assert _resolve(tmp_path, lines) == (root, True)
    assert (root / "sentinel").is_file()  # nothing was rewritten
    assert len(lines) == 1 and "using synthetic levircd-format data" in lines[0]


def test_a_changed_setting_rewrites_the_whole_folder(tmp_path):
    root, _ = _resolve(tmp_path, [])
    before = (root / "train" / "label" / "train_1.png").read_bytes()
    (root / "sentinel").write_text("from the old set")
    lines: list[str] = []
    _resolve(tmp_path, lines, seed=1)
    assert "writing" in lines[0] and not (root / "sentinel").exists()
    assert json.loads((root / MARKER).read_text())["seed"] == 1
    assert (root / "train" / "label" / "train_1.png").read_bytes() != before
    _resolve(tmp_path, [], seed=1, num_samples=5)  # fewer/more files: none of the old set stays behind
    assert sorted(p.name for p in (root / "train" / "A").iterdir()) == ["train_1.png", "train_2.png", "train_3.png"]
    assert [p.name for p in root.parent.iterdir()] == ["levircd"]  # no temporary folders left


def test_an_interrupted_write_is_redone(tmp_path, monkeypatch):
    root, _ = _resolve(tmp_path, [])
    (root / MARKER).unlink()  # what a write stopped before its last step leaves
    (root / "sentinel").write_text("x")
    lines: list[str] = []
    _resolve(tmp_path, lines)
    assert "writing" in lines[0] and (root / MARKER).is_file() and not (root / "sentinel").exists()
    (root / MARKER).write_text("{truncated")
    _resolve(tmp_path, lines)
    assert json.loads((root / MARKER).read_text())["dataset"] == "levircd"

    real = geovit.data.levircd.write_synthetic

    def crash(out_dir, **kw):
        real(out_dir, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(geovit.data.levircd, "write_synthetic", crash)
    with pytest.raises(KeyboardInterrupt):
        _resolve(tmp_path, [], seed=5)
    assert json.loads((root / MARKER).read_text())["seed"] == 0  # the complete old set is untouched
    assert [p.name for p in root.parent.iterdir()] == ["levircd"]


def test_writer_options_must_be_json(tmp_path):
    with pytest.raises(GeovitError, match="not JSON-serialisable"):
        resolve_data("levircd", None, tmp_path, size=object())


def test_vicon_default_is_the_data_pdes_train_generated_before(tmp_path):
    """``geovit pdes train`` without data: the same files as ``write_default_sets`` with its split sizes."""
    from pdes.data import TrajectoryDataset
    from pdes.datasets import resolve_vicon_data
    from pdes.synthetic import write_default_sets

    lines: list[str] = []
    roots = resolve_vicon_data(None, tmp_path, resolution=16, trajectories=2, seed=3, log=lines.append)
    assert roots == [tmp_path / "synthetic_data" / "vicon_default" / n for n in ("ns2d", "cfd2d")]
    assert all(line.startswith(SYNTHETIC_BANNER) for line in lines)
    assert json.loads((roots[0].parent / MARKER).read_text()) == {
        "dataset": "vicon_default", "num_samples": 2, "seed": 3, "resolution": 16}
    assert [len(TrajectoryDataset(roots[0], s)) for s in ("train", "valid", "test")] == [2, 2, 2]
    write_default_sets(tmp_path / "direct", resolution=16, seed=3, progress=False,
                       splits={"train": 2, "valid": 2, "test": 2})
    for sub in ("ns2d", "cfd2d"):
        got = sorted(p.relative_to(roots[0].parent / sub) for p in (roots[0].parent / sub).rglob("*.h5"))
        want = sorted(p.relative_to(tmp_path / "direct" / sub) for p in (tmp_path / "direct" / sub).rglob("*.h5"))
        assert got == want
        for rel in got:
            with h5py.File(roots[0].parent / sub / rel) as a, h5py.File(tmp_path / "direct" / sub / rel) as b:
                def walk(g, h):
                    for key in g:
                        if hasattr(g[key], "keys"):
                            walk(g[key], h[key])
                        else:
                            np.testing.assert_array_equal(g[key][()], h[key][()])
                walk(a, b)
    assert resolve_vicon_data(["a", "b"], tmp_path) == [Path("a"), Path("b")]


# -- geovit data synth ----------------------------------------------------------------------------
def _parser():
    from geovit.cli import data

    parser = argparse.ArgumentParser(prog="geovit")
    data.add_commands(parser.add_subparsers(dest="command"))
    return parser


def test_data_synth_writes_any_registered_dataset(tmp_path, capsys):
    args = _parser().parse_args(["data", "synth", "pdearena_ns2d", str(tmp_path / "ns"), "--num-samples", "2"])
    assert args.func(args) == 0
    assert "wrote synthetic pdearena_ns2d data (SYNTHETIC" in capsys.readouterr().out
    assert len(list((tmp_path / "ns").glob("NavierStokes2D_train_*.h5"))) == 1


def test_data_synth_choices_are_the_registry(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["data", "synth", "mnist", "x"])
    err = capsys.readouterr().err
    assert "invalid choice: 'mnist'" in err and all(f"'{n}'" in err for n in list_datasets())
