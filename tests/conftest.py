"""Shared test fixtures.

Conformance data and torchgeo fixtures live in ``../shared`` next to the repository (see
DEVELOPERS' notes in CONTRIBUTING.md); tests that need them skip with a clear reason when the
folder is absent (a clone elsewhere).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GEOVIT_SHARED", REPO.parent / "shared"))

# Keep the suite quick and reproducible on 2 cores.
torch.set_num_threads(min(2, os.cpu_count() or 1))
os.environ.setdefault("MPLBACKEND", "Agg")


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: conformance data / fixtures live in ../shared beside the repo "
                    "(set GEOVIT_SHARED to point elsewhere)")
    return path


class Conformance:
    """One family's golden data: ``config`` (dict), ``io`` (dict of arrays), ``path``."""

    def __init__(self, family: str):
        self.path = shared_path("conformance", family)
        cfg = self.path / "config.json"
        self.config = json.loads(cfg.read_text()) if cfg.exists() else {}
        npz = self.path / "io.npz"
        self.io = dict(np.load(npz, allow_pickle=False)) if npz.exists() else {}

    def file(self, name: str) -> Path:
        return self.path / name


@pytest.fixture(scope="session")
def conformance():
    """``conformance("channelvit")`` -> :class:`Conformance` (skips when ../shared is absent)."""
    cache: dict[str, Conformance] = {}

    def get(family: str) -> Conformance:
        if family not in cache:
            cache[family] = Conformance(family)
        return cache[family]

    return get


@pytest.fixture(scope="session")
def torchgeo_fixtures() -> Path:
    return shared_path("fixtures", "torchgeo")


@pytest.fixture
def run_cli(capsys):
    """Run ``geovit ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from geovit.cli import main

    def run(*argv: str):
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
