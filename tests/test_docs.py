"""The documentation site builds without a warning, and its API reference has no undocumented name.

``mkdocs build --strict`` (``mkdocs.yml``: Material, mkdocstrings with Google-style docstrings,
mkdocs-jupyter for the tutorials, the hook ``docs/hooks/geovit_docs.py`` for the generated pages)
runs into a temporary folder; any warning (a broken link, a docstring griffe cannot parse, a
missing page) fails it.

Documented-name rule, for every public module of geovit, pdes and causal (no part of its dotted
name starts with ``_``, as in the hook that generates the reference):

* the module has a docstring;
* every public name (``__all__`` when the module defines it, otherwise every class and function
  defined in the module whose name does not start with ``_``) that is a class or a function has
  a docstring of its own; a name re-exported from another module is checked where it is defined;
* every public method, classmethod, staticmethod and property defined in the body of such a class
  (inherited members and ``_``-names, dunders included, are skipped) has a docstring of its own,
  except a method that overrides a documented method of a base class (it keeps that contract,
  e.g. Lightning's ``training_step``) -- but ``forward`` is the model's call signature and always
  needs its own.

Docstrings are Google style (``Args:``/``Returns:``/``Examples:``); a NumPy-style section (a heading
underlined with dashes) and an ``Example:`` heading (an admonition for griffe: its doctest would
render as text) are reported too.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import subprocess
import sys
from collections import defaultdict

import pytest
from repo_paths import REPO

HOOK = REPO / "docs" / "hooks" / "geovit_docs.py"
PACKAGES = ("geovit", "pdes", "causal")
ALWAYS_OWN_DOC = {"forward"}
NUMPY_SECTION = re.compile(r"^\s*(Parameters|Returns|Yields|Raises|Attributes|Examples?|Notes)\s*\n\s*-{3,}\s*$", re.M)
# "Example:" is an admonition for griffe, not a section: its ">>>" lines render as text, not code
EXAMPLE_ADMONITION = re.compile(r"^\s*Example:\s*$", re.M)


def _style_problem(doc: str) -> str | None:
    if NUMPY_SECTION.search(doc):
        return "NumPy-style sections: use Google style"
    if EXAMPLE_ADMONITION.search(doc):
        return "'Example:' heading: use 'Examples:' so the doctest renders as code"
    return None


def _hook():
    spec = importlib.util.spec_from_file_location("geovit_docs_hook", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def public_modules() -> list[str]:
    return _hook().public_modules()


def _own_doc(obj) -> str:
    return (getattr(obj, "__doc__", None) or "").strip()


def _function_of(member):
    if isinstance(member, (classmethod, staticmethod)):
        return member.__func__
    if isinstance(member, property):
        return member.fget
    return member if inspect.isfunction(member) else None


def _overrides_documented(cls, name: str) -> bool:
    for base in cls.__mro__[1:]:
        if name in vars(base):
            return bool(_own_doc(_function_of(vars(base)[name]) or vars(base)[name]))
    return False


def _public_names(module) -> list[str]:
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [n for n, o in vars(module).items() if not n.startswith("_") and (inspect.isclass(o) or inspect.isfunction(o))
            and getattr(o, "__module__", None) == module.__name__]


def _source_file(obj) -> str:
    try:
        return str(__import__("pathlib").Path(inspect.getsourcefile(obj)).resolve().relative_to(REPO))
    except (TypeError, ValueError):
        return getattr(obj, "__module__", "?")


def undocumented() -> dict[str, list[str]]:
    """Missing or NumPy-style docstrings, by the file that defines them."""
    missing: dict[str, set[str]] = defaultdict(set)
    for name in public_modules():
        module = importlib.import_module(name)
        module_file = _source_file(module)
        if not _own_doc(module):
            missing[module_file].add("(module docstring)")
        elif problem := _style_problem(module.__doc__):
            missing[module_file].add(f"(module docstring: {problem})")
        for public in _public_names(module):
            obj = getattr(module, public, None)
            if obj is None:
                missing[module_file].add(f"{public} (in __all__, not defined)")
                continue
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if getattr(obj, "__module__", "").split(".")[0] not in PACKAGES:
                continue  # a re-exported third-party name
            where = _source_file(obj)
            if not _own_doc(obj):
                missing[where].add(obj.__qualname__)
            elif problem := _style_problem(obj.__doc__):
                missing[where].add(f"{obj.__qualname__} ({problem})")
            if not inspect.isclass(obj):
                continue
            for attr, member in vars(obj).items():
                func = _function_of(member)
                if attr.startswith("_") or func is None:
                    continue
                label = f"{obj.__qualname__}.{attr}"
                if _own_doc(func):
                    if problem := _style_problem(func.__doc__):
                        missing[where].add(f"{label} ({problem})")
                elif attr in ALWAYS_OWN_DOC or not _overrides_documented(obj, attr):
                    missing[where].add(label)
    return {f: sorted(names) for f, names in sorted(missing.items()) if names}


def test_every_public_name_has_a_google_style_docstring():
    missing = undocumented()
    count = sum(len(v) for v in missing.values())
    report = "\n".join(f"{f}: {', '.join(names)}" for f, names in missing.items())
    assert not missing, f"{count} public names without a (Google-style) docstring:\n{report}"


def test_public_module_rule_matches_the_packages():
    modules = public_modules()
    assert {"geovit", "geovit.hub", "geovit.models.channelvit", "pdes.vicon", "causal.rate"} <= set(modules)
    assert not [m for m in modules if any(part.startswith("_") for part in m.split("."))]
    for name in modules:  # every listed module imports (the reference would otherwise be empty)
        importlib.import_module(name)


def _build(out, strict: bool) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict" if strict else "--no-strict",
                           "-f", str(REPO / "mkdocs.yml"), "-d", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """``(strict build, folder of a built site)``: when the strict build fails on warnings, the site is
    built again without ``--strict`` so that the content checks below still report on their own."""
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    pytest.importorskip("mkdocs_jupyter")
    pytest.importorskip("material")
    out = tmp_path_factory.mktemp("site")
    strict = _build(out, strict=True)
    if strict.returncode != 0:
        lenient = _build(out, strict=False)
        assert lenient.returncode == 0, (lenient.stdout + lenient.stderr)[-3000:]
    return strict, out


def test_site_builds_strict_without_warnings(site):
    proc, out = site
    log = proc.stdout + proc.stderr
    problems = [line for line in log.splitlines() if re.match(r"\s*(WARNING|ERROR)\b", line)]
    assert proc.returncode == 0 and not problems, "\n".join(problems) or log[-3000:]
    assert (out / "index.html").is_file() and (out / "search" / "search_index.json").is_file()


def test_site_has_a_reference_page_per_public_module_and_a_page_per_data_card(site):
    _, out = site
    for name in public_modules():
        page = out / "api" / name / "index.html"
        assert page.is_file(), name
        assert 'class="doc doc-' in page.read_text(encoding="utf-8"), f"{name}: no mkdocstrings output"
    channelvit = (out / "api" / "geovit.models.channelvit" / "index.html").read_text(encoding="utf-8")
    assert "ChannelViT" in channelvit and "forward" in channelvit
    for card in sorted((REPO / "data_cards").glob("*.md")):
        page = out / "datasets" / card.stem / "index.html"
        assert page.is_file(), card.name
        title = re.search(r"^# (.+)$", card.read_text(encoding="utf-8"), flags=re.M).group(1)
        assert title.split(" (")[0] in page.read_text(encoding="utf-8")


def test_site_renders_tutorial_figures_and_bench_tables(site):
    _, out = site
    for nb in sorted((REPO / "docs" / "tutorials").glob("*.ipynb")):
        html = (out / "tutorials" / nb.stem / "index.html").read_text(encoding="utf-8")
        assert "data:image/png;base64," in html, f"{nb.name}: no figure rendered"
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        assert (out / "notebooks" / nb.stem / "index.html").is_file()
    perf = (out / "performance" / "index.html").read_text(encoding="utf-8")
    for table in sorted((REPO / "bench" / "claims" / "results").glob("*.md")):
        first_row = next(line for line in table.read_text(encoding="utf-8").splitlines() if line.startswith("| ") and "---" not in line)
        assert first_row.split("|")[1].strip() in perf, table.name
    assert "not measured yet" in perf
    assert (out / "assets" / "bench" / "hcs_channelvit_steps480.png").is_file()


def test_conformance_page_quotes_the_tolerances_its_tests_assert():
    """Each family section of docs/conformance.md names its test files; every tolerance it quotes is in them."""
    page = (REPO / "docs" / "conformance.md").read_text(encoding="utf-8")
    sections = re.split(r"^## ", page, flags=re.M)[1:]
    assert len(sections) == 5
    for section in sections:
        title = section.splitlines()[0]
        files = sorted(set(re.findall(r"`(tests/[\w/]+\.py)`", section)))
        assert files, f"{title}: names no test file"
        source = "".join((REPO / f).read_text(encoding="utf-8") for f in files)
        values = {float(v) for v in re.findall(r"\b\d(?:\.\d+)?e-\d+\b|\b0\.\d+\b", section.split("| check |", 1)[1])}
        in_tests = {float(v) for v in re.findall(r"\b\d(?:\.\d+)?e-\d+\b|\b0\.\d+\b", source)}
        assert values and values <= in_tests, f"{title}: {sorted(values - in_tests)} not asserted in {files}"
