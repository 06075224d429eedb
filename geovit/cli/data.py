"""``geovit data synth NAME OUT_DIR`` and ``geovit data stats``: synthetic data sets and band statistics.

``synth`` writes the synthetic set of any dataset in the registry (:mod:`geovit.data.registry`,
plugins included): files in the exact on-disk format of the real release, written by the
``synthetic`` writer of the dataset's :class:`~geovit.data.registry.DatasetInfo`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from geovit.cli.options import bounded, positive_int


class _RegisteredNames:
    """``choices`` for the dataset argument, read from the registry only when the argument is used.

    Listing the registry loads every plugin; doing it lazily keeps ``geovit --help`` and the
    other commands from importing them.
    """

    def __contains__(self, name: object) -> bool:
        if name == "scene":
            return True
        from geovit.data.registry import get_dataset
        from geovit.errors import GeovitError

        try:  # geovit's own names are found without loading the plugins
            get_dataset(str(name))
        except GeovitError:
            return False
        return True

    def __iter__(self):
        from geovit.data.registry import list_datasets

        return iter([*list_datasets(), "scene"])


def _synth(args: argparse.Namespace) -> int:
    from geovit.data.registry import get_dataset
    from geovit.errors import GeovitError

    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        raise GeovitError(f"OUT_DIR {out}: is an existing file; expected a folder (new or existing)")
    if args.name == "scene":
        from geovit.geo.synthetic import write_synthetic_scene

        scene = write_synthetic_scene(out, height=args.height, width=args.width, window=args.window,
                                      seed=args.seed, dataset_seed=args.dataset_seed, clouds=args.clouds,
                                      cloud_cover=args.cloud_cover, s1_gap=args.s1_gap)
        print(f"wrote a SYNTHETIC scene (not real imagery) to {scene.root}: {scene.s2.name} (Sentinel-2, 10 bands), "
              f"{scene.s1.name} (Sentinel-1, 8 bands), {scene.cloud_mask.name}, {scene.truth.name}, {scene.meta.name}")
        return 0
    if args.num_samples is not None and args.num_samples < 1:
        raise GeovitError(f"--num-samples {args.num_samples}: expected an integer ≥ 1")
    write = get_dataset(args.name).load("synthetic")
    root = write(Path(args.out_dir), num_samples=args.num_samples, seed=args.seed)
    print(f"wrote synthetic {args.name} data (SYNTHETIC, not the real release) to {root}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from geovit.data.so2sat import compute_band_stats_cli

    return compute_band_stats_cli(args)


def add_commands(sub) -> None:
    """Add ``data {synth,stats}`` to the ``geovit`` sub-command parsers.

    Args:
        sub: the ``add_subparsers()`` object of the ``geovit`` parser.
    """
    p = sub.add_parser("data", help="synthetic data sets and dataset statistics")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    s = dsub.add_parser("synth", help="write a small synthetic data set in the real on-disk format")
    s.add_argument("name", metavar="NAME", choices=_RegisteredNames(), help="registered dataset, or scene: %(choices)s")
    s.add_argument("out_dir")
    s.add_argument("--num-samples", type=positive_int, default=None, help="size (dataset-specific default)")
    s.add_argument("--seed", type=bounded(int, 0), default=0)
    g = s.add_argument_group("scene (NAME = scene: two co-registered GeoTIFF stacks with clouds, for geovit predict)")
    g.add_argument("--height", type=bounded(int, 1), default=512, help="scene height in pixels")
    g.add_argument("--width", type=bounded(int, 1), default=None, help="scene width in pixels (default: height)")
    g.add_argument("--window", type=bounded(int, 1), default=32, help="side of the class windows (So2Sat: 32)")
    g.add_argument("--dataset-seed", type=bounded(int, 0), default=0,
                   help="seed of the synthetic So2Sat set whose classes the scene uses (geovit train's --seed)")
    g.add_argument("--clouds", choices=("blobs", "half", "none"), default="blobs")
    g.add_argument("--cloud-cover", type=bounded(float, 0, 1), default=0.3, help="share of the scene under clouds (blobs)")
    g.add_argument("--s1-gap", type=bounded(float, 0, 1), default=0.15, help="share of the scene outside the SAR swath")
    s.set_defaults(func=_synth)
    t = dsub.add_parser("stats", help="per-band mean/std of a So2Sat split (for normalisation)")
    t.add_argument("root")
    t.add_argument("--version", default="2")
    t.add_argument("--split", default="train")
    t.add_argument("--out", default=None, help="write the statistics as JSON here")
    t.add_argument("--max-samples", type=positive_int, default=None)
    t.set_defaults(func=_stats)
