"""A checkpoint whose pickle would run code is refused on every path that reads checkpoints.

The file is a real ``torch.save`` of an object whose unpickling creates a file. With
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` in the environment (which makes ``torch.load`` unpickle
anything when the caller does not insist), every geovit command must still refuse it: exit 2,
one message naming the file, no traceback, and the payload never runs.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # unpickling calls Path.touch(marker)
        return (Path.touch, (self.marker,))


@pytest.fixture()
def crafted(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"family": "channelvit"}, "x": _Payload(marker)}, path)
    # the payload is real: an unrestricted load runs it
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    return path, marker


COMMANDS = {
    "train --resume": ["train", "--resume", "{ckpt}", "--out", "{tmp}/run", "--accelerator", "cpu"],
    "pretrain --resume": ["pretrain", "--resume", "{ckpt}", "--out", "{tmp}/run", "--accelerator", "cpu"],
    "change train --resume": ["change", "train", "--resume", "{ckpt}", "--data", "{tmp}", "--out", "{tmp}/run",
                              "--accelerator", "cpu"],
    "pdes train --resume": ["pdes", "train", "--resume", "{ckpt}", "--out", "{tmp}/run", "--accelerator", "cpu"],
    "evaluate": ["evaluate", "{ckpt}", "--out", "{tmp}/eval"],
    "probe": ["probe", "{ckpt}", "--out", "{tmp}/probe"],
    "change evaluate": ["change", "evaluate", "{ckpt}", "--data", "{tmp}"],
    "change predict": ["change", "predict", "{ckpt}", "--before", "{tmp}/a.tif", "--after", "{tmp}/b.tif",
                       "--out", "{tmp}/map.tif"],
    "pdes rollout": ["pdes", "rollout", "{ckpt}", "--data", "{tmp}", "--out", "{tmp}/roll"],
    "convert": ["convert", "channelvit", "{ckpt}", "{tmp}/out.safetensors"],
    "predict": ["predict", "{ckpt}", "--raster", "{tmp}/a.tif", "--out", "{tmp}/map.tif"],
    "embed": ["embed", "{ckpt}", "--raster", "{tmp}/a.tif", "--out", "{tmp}/emb.zarr"],
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_refuses_a_code_running_checkpoint(name, crafted, run_cli, tmp_path):
    path, marker = crafted
    if name in ("change predict", "predict", "embed"):  # real rasters, so that the checkpoint is what gets read
        import numpy as np
        import rasterio

        for tif in ("a.tif", "b.tif"):
            with rasterio.open(tmp_path / tif, "w", driver="GTiff", width=8, height=8, count=3, dtype="uint8") as f:
                f.write(np.zeros((3, 8, 8), np.uint8))
    argv = [a.format(ckpt=path, tmp=tmp_path) for a in COMMANDS[name]]
    code, out, err = run_cli(*argv)
    assert code == 2, (out, err)
    assert str(path) in err and "Traceback" not in err
    assert not marker.exists(), f"{name}: the checkpoint's payload ran"


def test_the_python_readers_refuse_it_too(crafted):
    from geovit.errors import CheckpointError
    from geovit.hub import load_official, read_checkpoint
    from geovit.tasks.classification import ClassificationTask

    path, marker = crafted
    for read in (read_checkpoint, lambda p: load_official("channelvit", p), ClassificationTask.load_from_checkpoint):
        with pytest.raises(CheckpointError, match="weights_only"):
            read(path)
    assert not marker.exists()
