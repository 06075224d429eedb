"""Command-line flags generated from a typed config (:mod:`geovit.config`).

:func:`add_config_flags` gives a parser one ``--kebab-case`` flag per config field plus
``--config FILE`` and ``--print-config``; :func:`resolve_config` merges defaults < YAML file <
the flags that were given, checks the result, and turns a :class:`~geovit.config.ConfigError`
into a message naming the flag or the YAML file the bad value came from.
"""
from __future__ import annotations

import argparse
import json
import math
import typing
from pathlib import Path
from typing import Any

from geovit.config import Config, ConfigError, _unwrap_optional, out_of_bounds, parse_yaml_mapping
from geovit.errors import GeovitError

#: argparse dest of the generated flags: ``cfg__<field>`` (kept apart from a command's own arguments)
PREFIX = "cfg__"


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (argparse reports anything else as a usage error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def bounded(kind: type, low: float | None = None, high: float | None = None, *, open_low: bool = False,
            open_high: bool = False):
    """argparse type: a finite ``kind`` (int or float) within the bounds (a usage error, exit 2, otherwise).

    >>> bounded(float, 0, 1, open_high=True)("0.5")
    0.5
    """
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
        bounds = out_of_bounds(value, low, high, open_low=open_low, open_high=open_high)
        if bounds:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what} {bounds}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def flag(name: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, config_cls: type[Config], *, skip: tuple[str, ...] = (),
                     title: str = "settings (also YAML keys of --config)") -> None:
    """One flag per field of ``config_cls`` (defaults shown in help), ``--config`` and ``--print-config``."""
    group = parser.add_argument_group(title)
    group.add_argument("--config", type=Path, default=None, metavar="FILE",
                       help="YAML of settings (e.g. written by --print-config); flags override it")
    group.add_argument("--print-config", action="store_true",
                       help="print the fully resolved settings as YAML and exit")
    types_ = config_cls.field_types()
    defaults = config_cls()
    for name, f in config_cls.fields().items():
        if name in skip:
            continue
        tp, _ = _unwrap_optional(types_[name])
        base = typing.get_origin(tp) or tp
        default = getattr(defaults, name)
        help_ = f"{f.metadata.get('help', '')} (default: {json.dumps(default)})".replace("%", "%%")
        kwargs: dict[str, Any] = dict(dest=PREFIX + name, default=None, help=help_)
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif base is list:
            kwargs.update(nargs="+", metavar="VALUE")
        else:
            kwargs["metavar"] = "JSON" if base is dict else name.upper().split("_")[-1]
        if f.metadata.get("choices"):  # checked by the config (one message style for flags and YAML)
            kwargs["metavar"] = "{" + ",".join(map(str, f.metadata["choices"])) + "}"
        group.add_argument(flag(name), **kwargs)


def _from_text(name: str, text: str, tp: Any) -> Any:
    tp, _ = _unwrap_optional(tp)
    base = typing.get_origin(tp) or tp
    try:
        if base is int:
            return int(text)
        if base is float:
            return float(text)
        if base is dict:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
            return value
    except ValueError as err:
        raise GeovitError(f"{flag(name)} {text}: expected {_expected(tp)} ({err})") from None
    return text


def _expected(tp: Any) -> str:
    base = typing.get_origin(tp) or tp
    return {int: "an integer", float: "a number", dict: "a JSON object, e.g. '{\"depth\": 4}'"}.get(base, "a value")


def given_flags(args: argparse.Namespace, config_cls: type[Config]) -> dict[str, Any]:
    """The config values set by flags on this command line (converted to the field types)."""
    types_ = config_cls.field_types()
    values = {}
    for name in config_cls.fields():
        raw = getattr(args, PREFIX + name, None)
        if raw is None:
            continue
        values[name] = raw if isinstance(raw, (bool, list)) else _from_text(name, raw, types_[name])
    return values


def resolve_config(args: argparse.Namespace, config_cls: type[Config], **fixed: Any) -> Config:
    """defaults < ``--config`` YAML < flags given < ``fixed``; checked before anything runs.

    Raises:
        GeovitError: the message names ``--flag VALUE`` or ``FILE: key`` and what is allowed.
    """
    from_yaml: dict[str, Any] = {}
    path = getattr(args, "config", None)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise GeovitError(f"--config {path}: file not found")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise GeovitError(f"--config {path}: not a readable text file ({err})") from None
        from_yaml = parse_yaml_mapping(text, f"--config {path}")
        if not from_yaml:
            raise GeovitError(f"--config {path}: holds no settings; expected a YAML mapping "
                              "(write one with --print-config)")
    from_flags = given_flags(args, config_cls)
    data = {**from_yaml, **from_flags, **fixed}
    data = config_cls.adjust(data, given=set(from_yaml) | set(from_flags))
    try:
        return config_cls.from_dict(data)
    except ConfigError as err:
        if err.key in from_flags:
            shown = " ".join(map(str, err.value)) if isinstance(err.value, list) else err.value
            raise GeovitError(f"{flag(err.key)} {shown}: expected {err.expected}") from None
        if err.key.split("[")[0] in from_yaml:
            raise GeovitError(f"--config {path}: {err}") from None
        raise GeovitError(str(err)) from None


def print_config_and_exit(args: argparse.Namespace, cfg: Config) -> bool:
    """With ``--print-config``: print ``cfg`` as YAML and return True (the command then exits 0)."""
    if getattr(args, "print_config", False):
        print(cfg.to_yaml(), end="")
        return True
    return False
