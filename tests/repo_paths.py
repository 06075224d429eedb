"""Paths the tests share (imported by name: a ``conftest`` module name is not unique across folders)."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFORMANCE = REPO / "tests" / "data" / "conformance"
SHARED = Path(os.environ.get("GEOVIT_SHARED", REPO.parent / "shared"))
SHARED_TORCHGEO = SHARED / "fixtures" / "torchgeo"
#: the official golden data the repository copy was taken from (developers' machines only)
SHARED_CONFORMANCE = SHARED / "conformance"
