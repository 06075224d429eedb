"""``geovit data synth NAME OUT_DIR`` and ``geovit data stats``: synthetic data sets and band statistics.

Synthetic writers live next to their loaders; this table names them. Each is a function
``write(out_dir: Path, *, num_samples: int | None, seed: int) -> Path`` that writes files in the
exact on-disk format of the real release and returns the dataset root.
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

#: dataset name -> "module:function"
SYNTH_WRITERS: dict[str, str] = {
    "so2sat": "geovit.data.so2sat:write_synthetic",
    "jumpcp": "geovit.data.jumpcp:write_synthetic",
    "chammi": "geovit.data.chammi:write_synthetic",
    "levircd": "geovit.data.levircd:write_synthetic",
    "pdearena_ns2d": "pdes.synthetic:write_synthetic_ns2d",
    "pdebench_cfd2d": "pdes.synthetic:write_synthetic_cfd2d",
}


def synth_writer(name: str):
    """The synthetic-data writer registered for ``name`` (imported on demand)."""
    module, func = SYNTH_WRITERS[name].split(":")
    return getattr(importlib.import_module(module), func)


def _synth(args: argparse.Namespace) -> int:
    root = synth_writer(args.name)(Path(args.out_dir), num_samples=args.num_samples, seed=args.seed)
    print(f"wrote synthetic {args.name} data (SYNTHETIC, not the real release) to {root}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from geovit.data.so2sat import compute_band_stats_cli

    return compute_band_stats_cli(args)


def add_commands(sub) -> None:
    p = sub.add_parser("data", help="synthetic data sets and dataset statistics")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    s = dsub.add_parser("synth", help="write a small synthetic data set in the real on-disk format")
    s.add_argument("name", choices=sorted(SYNTH_WRITERS))
    s.add_argument("out_dir")
    s.add_argument("--num-samples", type=int, default=None, help="size (dataset-specific default)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_synth)
    t = dsub.add_parser("stats", help="per-band mean/std of a So2Sat split (for normalisation)")
    t.add_argument("root")
    t.add_argument("--version", default="2")
    t.add_argument("--split", default="train")
    t.add_argument("--out", default=None, help="write the statistics as JSON here")
    t.add_argument("--max-samples", type=int, default=None)
    t.set_defaults(func=_stats)
