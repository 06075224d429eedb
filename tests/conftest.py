"""Shared test fixtures.

* ``conformance``: golden data of the official implementations, kept in the repository under
  ``tests/data/conformance/<family>/`` (provenance in its README.md). A missing file is a test
  failure, never a skip.
* ``torchgeo_fixtures``: torchgeo's own So2Sat / LEVIR-CD test files when the developers' shared
  folder ``../shared/fixtures/torchgeo`` sits beside the repository (``GEOVIT_SHARED`` points
  elsewhere), read-only; otherwise a tree in the same layout written once per session by
  ``tests/torchgeo_layout.py``.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torchgeo_layout import write_torchgeo_layout

from repo_paths import CONFORMANCE, REPO, SHARED, SHARED_TORCHGEO  # noqa: F401  (re-exported)

# Keep the suite quick and reproducible on 2 cores.
torch.set_num_threads(min(2, os.cpu_count() or 1))
os.environ.setdefault("MPLBACKEND", "Agg")


class Conformance:
    """One family's golden data: ``config`` (dict), ``io`` (dict of arrays), ``file(name)``."""

    def __init__(self, family: str, root: Path = CONFORMANCE):
        self.path = root / family
        if not self.path.is_dir():
            known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            raise FileNotFoundError(f"{self.path}: no conformance data for family {family!r}; "
                                    f"families in {root}: {', '.join(known) or 'none'}")

    def file(self, name: str) -> Path:
        """Path of one golden file; a missing file raises (the test fails)."""
        path = self.path / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: golden file missing from the repository (see {CONFORMANCE / 'README.md'})")
        return path

    @functools.cached_property
    def config(self) -> dict:
        """``config.json`` of the family."""
        return json.loads(self.file("config.json").read_text())

    @functools.cached_property
    def io(self) -> dict[str, np.ndarray]:
        """Arrays of ``io.npz`` of the family."""
        with np.load(self.file("io.npz"), allow_pickle=False) as npz:
            return dict(npz)


@pytest.fixture(scope="session")
def conformance():
    """``conformance("channelvit")`` -> :class:`Conformance` (data inside the repository;
    ``root=SHARED_CONFORMANCE`` for the official golden data beside the checkout)."""
    cache: dict[tuple[str, Path], Conformance] = {}

    def get(family: str, root: Path = CONFORMANCE) -> Conformance:
        if (family, root) not in cache:
            cache[family, root] = Conformance(family, root)
        return cache[family, root]

    return get


@pytest.fixture(scope="session")
def torchgeo_fixtures(tmp_path_factory) -> Path:
    """Folder with ``so2sat/`` and ``levircd/levircd/`` in torchgeo's test-data layout (read-only)."""
    if SHARED_TORCHGEO.is_dir():
        return SHARED_TORCHGEO
    return write_torchgeo_layout(tmp_path_factory.mktemp("torchgeo_fixtures"))


@pytest.fixture
def run_cli(capsys):
    """Run ``geovit ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from geovit.cli import main

    def run(*argv: str):
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
