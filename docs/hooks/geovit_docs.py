"""MkDocs hook: pages generated from the repository at build time.

- ``datasets/<card>.md``: one page per data card in ``data_cards/`` (read, not copied; the card's
  YAML header becomes a table under its title), and ``datasets/index.md`` listing them.
- ``api/<module>.md``: one ``::: module`` page per public module of geovit, pdes and causal.
- ``notebooks/*.ipynb``: the analysis notebooks in ``notebooks/`` (rendered by mkdocs-jupyter).
- ``assets/bench/*.png``: the figures of the benchmark results in ``bench/claims/results/``.

The navigation entries ``Datasets`` and ``API reference`` are filled in here, so a new module or
data card appears without editing ``mkdocs.yml``.

Cross-references written as reST roles in docstrings (``:func:`name```, ``:class:``, ``:meth:``, ...)
become links on the API pages when the name resolves (relative names are tried in the page's
module first), and plain code otherwise.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("geovit", "pdes", "causal")
CARDS = ROOT / "data_cards"
NOTEBOOKS = ROOT / "notebooks"
BENCH_RESULTS = ROOT / "bench" / "claims" / "results"


def public_modules() -> list[str]:
    """Dotted names of the public modules: no component starting with ``_`` (``__init__`` names its package)."""
    names = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if any(p.startswith("_") for p in parts):
                continue
            names.append(".".join(parts))
    return sorted(names)


def _split_front_matter(text: str) -> tuple[list[tuple[str, str]], str]:
    """``([(key, value as written, comments kept)], body)`` of a card with a YAML header."""
    m = re.match(r"^---\n(.*?)\n---\n", text, flags=re.S)
    if not m:
        return [], text
    yaml.safe_load(m.group(1))  # a broken header fails the build
    fields: list[tuple[str, str]] = []
    for line in m.group(1).splitlines():
        top = re.match(r"^([\w-]+):\s*(.*)$", line)
        if top:
            fields.append((top.group(1), top.group(2)))
        elif fields and line.strip():
            key, value = fields[-1]
            item = line.strip()[2:] if line.strip().startswith("- ") else line.strip()
            fields[-1] = (key, f"{value}; {item}" if value else item)
    def tidy(value: str) -> str:
        value, _, comment = value.partition(" #")
        value = value.strip().strip("[]")
        return (f"{value} — {comment.strip()}" if comment else value).replace("|", "/")

    fields = [(key, tidy(value)) for key, value in fields]
    return fields, text[m.end():]


def _title(body: str, default: str) -> str:
    m = re.search(r"^# (.+)$", body, flags=re.M)
    return m.group(1).strip() if m else default


def _card_page(path: Path) -> tuple[str, str]:
    meta, body = _split_front_matter(path.read_text(encoding="utf-8"))
    title = _title(body, path.stem)
    if meta:
        rows = [f"| `{key}` | {value} |" for key, value in meta]
        table = "| field | value |\n|---|---|\n" + "\n".join(rows) + "\n"
        m = re.search(r"^# .+$", body, flags=re.M)
        if m:
            body = body[: m.end()] + "\n\n" + table + body[m.end():]
        else:
            body = table + "\n" + body
    src = f"data_cards/{path.name}"
    body += f"\n\n---\n*Source: `{src}` in the repository.*\n"
    return title, body


def _cards() -> list[Path]:
    return sorted(CARDS.glob("*.md"))


def _api_nav() -> list:
    nav: list = []
    groups: dict[str, list] = {}
    for name in public_modules():
        groups.setdefault(name.split(".")[0], []).append({name: f"api/{name}.md"})
    for pkg in PACKAGES:
        nav.append({pkg: groups.get(pkg, [])})
    return nav


def on_config(config, **kwargs):
    """Fill the generated navigation sections."""
    dataset_nav = [{"Overview": "datasets/index.md"}]
    for card in _cards():
        title, _ = _card_page(card)
        dataset_nav.append({title: f"datasets/{card.stem}.md"})
    for entry in config.nav or []:
        if isinstance(entry, dict) and "Datasets" in entry:
            entry["Datasets"] = dataset_nav
        if isinstance(entry, dict) and "API reference" in entry:
            entry["API reference"] = [{"Overview": "api/index.md"}] + _api_nav()
    return config


ROLE = re.compile(r":(?:func|class|meth|attr|data|mod|exc|obj):<code>~?([\w.]+?)(\(\))?</code>")


def on_page_content(html: str, page, **kwargs) -> str:
    """Turn the reST roles left in rendered docstrings into optional cross-references."""
    uri = page.file.src_uri
    if not uri.startswith("api/") or uri == "api/index.md":
        return html
    module = uri[len("api/"):-len(".md")]

    def link(m: re.Match) -> str:
        name, call = m.group(1), m.group(2) or ""
        ident = name if name.split(".")[0] in PACKAGES else f"{module}.{name}"
        return f'<autoref identifier="{ident}" optional><code>{name}{call}</code></autoref>'

    return ROLE.sub(link, html)


@event_priority(100)  # before mkdocs-jupyter picks the notebooks up
def on_files(files: Files, config, **kwargs) -> Files:
    """Add the generated pages and the files taken from outside ``docs/``."""
    index = ["# Datasets", "",
             "One page per data card (`data_cards/`): what the release contains, the layout geovit "
             "reads, licence, and what the synthetic stand-ins do and do not reproduce.", "",
             "| data set | card |", "|---|---|"]
    for card in _cards():
        title, body = _card_page(card)
        files.append(File.generated(config, f"datasets/{card.stem}.md", content=body))
        index.append(f"| [{title}]({card.stem}.md) | `data_cards/{card.name}` |")
    files.append(File.generated(config, "datasets/index.md", content="\n".join(index) + "\n"))

    api_index = ["# API reference", "",
                 "One page per public module, generated from the docstrings (Google style). "
                 "A module is public when no part of its dotted name starts with `_`.", ""]
    for name in public_modules():
        page = f"# `{name}`\n\n::: {name}\n"
        files.append(File.generated(config, f"api/{name}.md", content=page))
        api_index.append(f"- [`{name}`]({name}.md)")
    files.append(File.generated(config, "api/index.md", content="\n".join(api_index) + "\n"))

    for nb in sorted(NOTEBOOKS.glob("*.ipynb")):
        # a real file under the repository root (not a generated one): mkdocs-jupyter wraps it and
        # reads it from src_dir / src_uri
        files.append(File(f"notebooks/{nb.name}", src_dir=str(ROOT), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    for png in sorted(BENCH_RESULTS.glob("*.png")):
        files.append(File.generated(config, f"assets/bench/{png.name}", abs_src_path=str(png)))
    return files
