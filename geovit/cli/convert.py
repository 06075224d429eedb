"""``geovit convert FAMILY IN OUT.safetensors``: official checkpoint -> geovit safetensors.

The output holds the geovit state dict plus the family and constructor config as metadata, so
``geovit.hub.load_converted(OUT)`` rebuilds the model without the original code.
"""
from __future__ import annotations

import argparse
import json

from geovit.errors import GeovitError
from geovit.hub import load_official, save_converted
from geovit.models.families import FAMILIES


def _parse_config(items: list[str]) -> dict:
    cfg: dict = {}
    for item in items:
        if "=" not in item:
            raise GeovitError(f"--config {item!r}: expected KEY=VALUE (VALUE as JSON, e.g. num_heads=6)")
        key, value = item.split("=", 1)
        try:
            cfg[key] = json.loads(value)
        except json.JSONDecodeError:
            cfg[key] = value
    return cfg


def _convert(args: argparse.Namespace) -> int:
    if not str(args.output).endswith(".safetensors"):
        raise GeovitError(f"output {args.output}: expected a path ending in .safetensors")
    model = load_official(args.family, args.input, _parse_config(args.config))
    save_converted(model, args.family, model.config, args.output)
    n = sum(p.numel() for p in model.parameters())
    print(f"converted {args.input} -> {args.output} ({args.family}, {n:,} parameters, config {model.config})")
    return 0


def add_commands(sub) -> None:
    """Add ``geovit convert`` to the CLI's subparsers (families: every entry of the family table)."""
    p = sub.add_parser("convert", help="convert an official checkpoint to geovit safetensors")
    p.add_argument("family", choices=sorted(FAMILIES))
    p.add_argument("input", help="official checkpoint (.pth/.pt/.ckpt/.tar/.safetensors)")
    p.add_argument("output", help="OUT.safetensors")
    p.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                   help="constructor settings the tensors cannot tell (e.g. num_heads=6)")
    p.set_defaults(func=_convert)
