"""Fixtures of the scene tests: a tiny classifier checkpoint, a synthetic scene, the CLI runner."""
from __future__ import annotations

import pytest
from scene_helpers import WINDOW, save_task, tiny_classifier


@pytest.fixture(scope="session")
def classifier(tmp_path_factory):
    """(checkpoint path, task) of the tiny ChannelViT classifier."""
    task = tiny_classifier()
    return save_task(task, tmp_path_factory.mktemp("ckpt") / "run" / "checkpoints" / "last.ckpt"), task


@pytest.fixture(scope="session")
def half_clouded(tmp_path_factory):
    """A 128 x 160 px synthetic scene whose western half is under clouds (S1 covers it all)."""
    from geovit.geo.synthetic import write_synthetic_scene

    return write_synthetic_scene(tmp_path_factory.mktemp("scene"), height=128, width=160, window=WINDOW,
                                 clouds="half", s1_gap=0.0, seed=3, generator="simple")


@pytest.fixture
def run_geovit(capsys):
    """Run ``geovit ARGS`` in-process with the predict / embed commands registered (exit code, out, err)."""
    from unittest import mock

    import geovit.cli as cli

    modules = tuple(dict.fromkeys(cli.COMMAND_MODULES + ("geovit.cli.predict", "geovit.cli.embed")))

    def run(*argv):
        with mock.patch.object(cli, "COMMAND_MODULES", modules):
            code = cli.main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
