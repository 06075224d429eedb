"""The ``geovit`` command.

Each command module exposes ``add_commands(subparsers)`` and sets ``func`` on its parsers
(``func(args) -> int | None``). geovit's own modules are listed in :data:`COMMAND_MODULES`;
other packages (``pdes``, ``causal``) add theirs through the ``geovit.commands`` entry point
group (:mod:`geovit.plugins`). Bad input raises :class:`geovit.GeovitError`; the CLI prints its
message without a traceback and exits with status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import sys

from geovit.errors import GeovitError
from geovit.plugins import load_entry_points

#: geovit's modules that contribute sub-commands, in the order they appear in ``geovit --help``
#: (entry-point commands follow, by name).
COMMAND_MODULES: tuple[str, ...] = (
    "geovit.cli.classify",   # train, evaluate, demo
    "geovit.cli.pretrain",   # pretrain, probe
    "geovit.cli.change",     # change {train,evaluate,predict}
    "geovit.cli.predict",    # predict (class map of a scene)
    "geovit.cli.embed",      # embed (features of a split or a scene, zarr)
    "geovit.cli.data",       # data {synth,stats}
    "geovit.cli.convert",    # convert
)


def build_parser() -> argparse.ArgumentParser:
    """The ``geovit`` argument parser: geovit's commands and those registered by plugins (``geovit.commands``)."""
    parser = argparse.ArgumentParser(
        prog="geovit", description="Channel-adaptive vision transformers for scientific imaging."
    )
    parser.add_argument("--version", action="version", version=f"geovit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    for add_commands in load_entry_points("geovit.commands").values():
        add_commands(sub)
    return parser


def _version() -> str:
    from geovit import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """Run the ``geovit`` command.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 for bad input (a :class:`geovit.errors.GeovitError`, printed as
        one line), or the command's own code.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not as an error at interpreter exit
        return code
    except GeovitError as err:
        print(f"geovit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError) as err:
        print(f"geovit {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `geovit data stats ... | head`: the reader left; stop quietly
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):  # stdout may have no descriptor
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a writer ended by SIGPIPE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
