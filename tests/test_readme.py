"""README's newcomer commands stay true: CI runs exactly the README test command; the CLI has them."""
from __future__ import annotations

import re

from repo_paths import REPO


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_starts_with_install_demo_and_test_commands():
    cmds = readme_commands()
    assert cmds[0] == 'pip install -e ".[dev]" && geovit demo'
    assert cmds[1] == 'pip install -e ".[dev]" && pytest -q'


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in [line.strip() for line in ci]


def test_every_readme_subcommand_exists():
    from geovit.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    text = (REPO / "README.md").read_text()
    used = set(re.findall(r"^geovit ([a-z]+)", text, re.M))
    assert used and used <= set(sub.choices), used - set(sub.choices)
