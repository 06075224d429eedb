"""The README's "Use with timm / torchgeo / TerraTorch" snippets run as written.

The snippets are the ``python`` code blocks between the markers ``<!-- timm-snippets -->`` and
``<!-- /timm-snippets -->`` of README.md; they run in order, in one namespace, in a fresh folder.
The test skips only while the README has no such section.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

START, END = "<!-- timm-snippets -->", "<!-- /timm-snippets -->"


def timm_snippets(text: str) -> list[str]:
    """The python code blocks between the markers of ``text`` ([] when the markers are absent).

    Raises:
        AssertionError: markers out of order, or a section without code.
    """
    if START not in text and END not in text:
        return []
    assert text.count(START) == text.count(END) == 1 and text.index(START) < text.index(END), "unbalanced markers"
    section = text[text.index(START) + len(START): text.index(END)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the timm section holds no python code block"
    return blocks


def test_snippet_extraction():
    text = f"intro\n{START}\nprose\n```python\na = 1\n```\nmore\n```python\nb = a + 1\n```\n{END}\n```python\nc\n```"
    assert timm_snippets(text) == ["a = 1\n", "b = a + 1\n"]
    assert timm_snippets("no section") == []
    with pytest.raises(AssertionError, match="no python code block"):
        timm_snippets(f"{START}\nonly prose\n{END}")


def test_readme_timm_snippets_run(tmp_path, monkeypatch):
    snippets = timm_snippets((REPO / "README.md").read_text())
    if not snippets:
        pytest.skip("README.md has no timm / torchgeo / TerraTorch section yet (markers absent)")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for i, code in enumerate(snippets):
        exec(compile(code, f"README.md timm snippet {i + 1}", "exec"), namespace)  # noqa: S102
