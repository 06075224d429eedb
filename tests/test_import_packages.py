"""The three import packages the tests exercise are the repository's own, not a test folder of the same name.

A test folder called ``causal`` or ``pdes`` without ``__init__.py`` becomes a namespace package that
shadows the real one when the repository root is not on ``sys.path`` (``pytest`` run as a script with
an editable install): the package ``__init__`` then never runs and its public names vanish.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from repo_paths import REPO


@pytest.mark.parametrize("name", ["geovit", "pdes", "causal"])
def test_package_is_the_repository_package(name):
    module = importlib.import_module(name)
    assert module.__file__ is not None, f"{name} imported as a namespace package from {list(module.__path__)}"
    init = Path(module.__file__)
    assert init.name == "__init__.py" and init.parent.name == name and init.parent.parent.name != "tests"


def test_no_test_folder_is_named_like_an_import_package():
    shadows = [p.name for p in (REPO / "tests").iterdir() if p.is_dir() and p.name in {"geovit", "pdes", "causal"}]
    assert shadows == []


def test_lazy_public_names_of_causal_resolve_to_functions():
    import causal
    from causal.calibration import test_calibration
    assert causal.test_calibration is test_calibration
