"""Hostile input to every command: exit 2, one message naming what was wrong, never a traceback.

Two parts: hypothesis draws a training command, one of its settings and a value (numbers out of
range, non-numbers, NaN, huge, empty, JSON of the wrong shape) and runs the command with
``--print-config`` (so every check runs but nothing trains); a table of malformed files and
arguments runs the commands that read them. Either the command accepts the input (exit 0) or
it exits 2 with a message that names the flag, file or key — and no exception ever escapes.
"""
from __future__ import annotations

import typing

import contextlib
import io
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geovit.cli import main
from geovit.cli.options import flag
from geovit.config import ChangeConfig, ClassifyConfig, DemoConfig, PretrainConfig


def run(*argv) -> tuple[int, str, str]:
    """``geovit ARGV`` in-process; an exception escaping ``main`` fails the test (that is a traceback)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def _commands():
    from pdes.config import VICONConfig

    return {"train": (["train"], ClassifyConfig), "demo": (["demo"], DemoConfig),
            "pretrain": (["pretrain"], PretrainConfig), "change train": (["change", "train"], ChangeConfig),
            "pdes train": (["pdes", "train"], VICONConfig)}


COMMANDS = _commands()
VALUES = st.one_of(
    st.sampled_from(["-1", "0", "-0", "1", "17", "nan", "inf", "-inf", "1e400", "abc", "", " ", "{}", "[1]",
                     '{"depth": 2}', '{"x":', "0.5", "2.5", "-3.7", "null", "true", "auto", "0,1", "cpu", "gpu",
                     "x" * 300]),
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(sorted(COMMANDS)), data=st.data(), value=VALUES)
def test_any_value_of_any_setting_is_accepted_or_refused_by_name(command, data, value, tmp_path):
    argv, cls = COMMANDS[command]
    name = data.draw(st.sampled_from(sorted(set(cls.fields()) - {"out"})), label="setting")
    is_bool = cls.field_types()[name] in (bool, typing.Optional[bool])  # on/off flags (--x / --no-x)
    setting = [flag(name) if value else "--no-" + flag(name)[2:]] if is_bool else [flag(name), value]
    code, out, err = run(*argv, "--out", tmp_path / "run", *setting, "--print-config")
    assert "Traceback" not in err
    assert code in (0, 2), (code, err)
    if code == 2:
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1, err  # one message (argparse prints its usage lines before it)
        assert flag(name) in errors[0], err
    else:
        assert "# geovit" in out
    assert not (tmp_path / "run").exists()  # checks come before anything is written


# --------------------------------------------------------------------------- malformed files
def _so2sat(root: Path, *, n=4, sen1=None, drop=(), group=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("training.h5", "validation.h5", "testing.h5"):
        with h5py.File(root / name, "w") as f:
            data = {"sen1": np.zeros((n, 32, 32, 8)) if sen1 is None else sen1, "sen2": np.zeros((n, 32, 32, 10)),
                    "label": np.eye(17)[np.zeros(n, int)]}
            for key, value in data.items():
                if key in drop:
                    continue
                if key == group:
                    f.create_group(key)
                else:
                    f.create_dataset(key, data=value)
    return root


def _levircd_mismatch(root: Path) -> Path:
    from PIL import Image

    for split in ("train", "val", "test"):
        for sub, size in (("A", 64), ("B", 48 if split == "train" else 64), ("label", 64)):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
            mode = "L" if sub == "label" else "RGB"
            Image.new(mode, (size, size)).save(root / split / sub / "p1.png")
    return root


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _foreign_checkpoint(path: Path) -> Path:
    import torch

    torch.save({"state_dict": {}, "hyper_parameters": {"family": "vicon"}}, path)
    return path


# (case, builder(tmp) -> argv, what the message must name)
FILES = {
    "so2sat with 0 samples": (lambda t: ["data", "stats", _so2sat(t / "d", n=0)], "0 samples"),
    "so2sat complex sen1": (lambda t: ["data", "stats", _so2sat(t / "d", sen1=np.zeros((4, 32, 32, 8), np.complex64))],
                            "complex"),
    "so2sat string sen1": (lambda t: ["data", "stats", _so2sat(t / "d", sen1=np.zeros((4, 32, 32, 8), "S2"))], "dtype"),
    "so2sat missing label": (lambda t: ["data", "stats", _so2sat(t / "d", drop=("label",))], "label"),
    "so2sat key is a group": (lambda t: ["data", "stats", _so2sat(t / "d", group="sen2")], "sen2"),
    "so2sat not hdf5": (lambda t: ["data", "stats", _text((t / "d").mkdir() or t / "d" / "training.h5", "nope").parent],
                        "training.h5"),
    "so2sat wrong shape": (lambda t: ["data", "stats", _so2sat(t / "d", sen1=np.zeros((4, 16, 16, 8)))], "sen1"),
    "levircd A/B size mismatch": (lambda t: ["change", "train", "--data", _levircd_mismatch(t / "lv"), "--out",
                                             t / "run", "--accelerator", "cpu", "--tile", "32"], "size mismatch"),
    "model_kwargs of the wrong type": (lambda t: ["train", "--model-kwargs", '{"depth": "x"}', "--max-steps", "1",
                                                  "--synthetic-samples", "17", "--batch-size", "2", "--out", t / "r",
                                                  "--accelerator", "cpu"], "model_kwargs"),
    "config not yaml": (lambda t: ["train", "--config", _text(t / "c.yaml", "a: [1,"), "--print-config"], "c.yaml"),
    "config a list": (lambda t: ["train", "--config", _text(t / "c.yaml", "- 1\n- 2\n"), "--print-config"], "c.yaml"),
    "config wrong type": (lambda t: ["train", "--config", _text(t / "c.yaml", "batch_size: many\n"), "--print-config"],
                          "batch_size"),
    "config unknown key": (lambda t: ["pretrain", "--config", _text(t / "c.yaml", "bach_size: 3\n"), "--print-config"],
                           "bach_size"),
    "config empty": (lambda t: ["train", "--config", _text(t / "c.yaml", ""), "--print-config"], "c.yaml"),
    "config binary": (lambda t: ["train", "--config", _bytes(t / "c.yaml", b"\xff\xfe\x00"),
                                 "--print-config"], "c.yaml"),
    "resume a text file": (lambda t: ["train", "--resume", _text(t / "x.ckpt", "hello"), "--out", t / "r"], "x.ckpt"),
    "resume another family": (lambda t: ["pretrain", "--resume", _foreign_checkpoint(t / "v.ckpt"), "--out", t / "r"],
                              "vicon"),
    "resume missing": (lambda t: ["change", "train", "--resume", t / "none.ckpt", "--data", t, "--out", t / "r"],
                       "none.ckpt"),
    "resume last with nothing": (lambda t: ["pdes", "train", "--resume", "last", "--out", t / "r"], "holds no last.ckpt"),
    "resume a folder": (lambda t: ["train", "--resume", t, "--out", t / "r"], "folder"),
    "out is a file (train)": (lambda t: ["train", "--out", _text(t / "f", "")], "--out"),
    "out is a file (pretrain)": (lambda t: ["pretrain", "--out", _text(t / "f", "")], "--out"),
    "out is a file (pdes train)": (lambda t: ["pdes", "train", "--out", _text(t / "f", "")], "--out"),
    "out is a file (data synth)": (lambda t: ["data", "synth", "so2sat", _text(t / "f", "")], "OUT_DIR"),
    "evaluate a text file": (lambda t: ["evaluate", _text(t / "m.ckpt", "{}")], "m.ckpt"),
    "probe a missing file": (lambda t: ["probe", t / "m.ckpt"], "m.ckpt"),
    "convert a json file": (lambda t: ["convert", "channelvit", _text(t / "m.pt", json.dumps({})), t / "o.safetensors"],
                            "m.pt"),
    "change predict threshold 2": (lambda t: ["change", "predict", t / "m.ckpt", "--before", t / "a.tif", "--after",
                                              t / "b.tif", "--out", t / "o.tif", "--threshold", "2"], "--threshold"),
    "rollout without data": (lambda t: ["pdes", "rollout", t / "m.ckpt", "--data", t / "none"], "m.ckpt"),
}


@pytest.mark.parametrize("case", list(FILES))
def test_malformed_files_and_arguments_get_one_clear_message(case, tmp_path):
    build, needle = FILES[case]
    code, out, err = run(*build(tmp_path))
    assert "Traceback" not in err
    assert code == 2, (code, out[-500:], err[-500:])
    assert needle in err, err
