"""``geovit embed``: features of a trained model for a dataset split or a scene, as a zarr store.

    geovit embed CKPT --data so2sat/ --split test --out test_emb.zarr
    geovit embed CKPT --raster s2.tif --raster s1.tif --mask cloud_mask.tif --out scene_emb.zarr

ChannelViT checkpoints give their CLS feature, ChA-MAEViT checkpoints their fused feature. The
store is an ``xarray`` Dataset (``xarray.open_zarr`` or ``geovit.predict.read_embeddings``):
``embedding`` (sample, feature) with ``label``, ``row`` and the channel ids used per sample (plus, for
geolocated So2Sat splits, ``city``, ``epsg``, patch-centre ``x`` / ``y`` in the patch's CRS and
``lon`` / ``lat`` in EPSG:4326), or
(y, x, feature) on the scene's window grid with x / y window centres in the scene's CRS and the
channel ids each window used (per-window availability as in ``geovit predict``). ``geovit cate
--raster scene_emb.zarr`` and ``causal.embeddings.embed_units`` read a scene store instead of
re-encoding.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from geovit.cli.options import positive_int
from geovit.cli.predict import add_scene_arguments, check_inputs, print_stats
from geovit.errors import GeovitError


def _embed(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.data is not None:
        from geovit.predict.embeddings import embed_dataset

        if args.bands or args.mask or args.reproject or args.stride:
            raise GeovitError("--bands/--mask/--reproject/--stride apply to --raster scenes, not to --data")
        if not Path(args.data).is_dir():
            raise GeovitError(f"--data {args.data}: folder not found")
        stats = embed_dataset(args.checkpoint, args.data, args.split, out, batch_size=args.batch_size,
                              channels=args.channels, max_samples=args.max_samples, device=args.device,
                              progress=False if args.quiet else None)
        where = " with patch coordinates (city, epsg, x/y, lon/lat)" if stats.get("geolocated") else ""
        print(f"{stats['samples']} samples of split {args.split} embedded ({stats['dim']} features) in "
              f"{stats['seconds']:.1f} s; wrote {stats['outputs']['embeddings']}{where}")
        return 0
    from geovit.predict.scene import embed_scene

    if args.channels or args.max_samples:
        raise GeovitError("--channels/--max-samples apply to --data splits; for scenes use --bands / --mask")
    check_inputs(args.raster, args.mask)
    stats = embed_scene(args.checkpoint, args.raster, out, bands=args.bands, masks=args.mask,
                        max_missing=args.max_missing, stride=args.stride, batch_size=args.batch_size,
                        reproject=args.reproject, resampling=args.resampling, device=args.device,
                        devices=args.devices, num_nodes=args.num_nodes, accelerator=args.accelerator,
                        strategy=args.strategy, progress=False if args.quiet else None)
    if stats.get("rank", 0) == 0:
        print_stats(stats, "embeddings")
    return 0


def add_commands(sub) -> None:
    """Add ``embed`` to the ``geovit`` sub-command parsers (``sub``: the ``add_subparsers()`` object)."""
    p = sub.add_parser("embed", help="features of a dataset split or a scene's window grid, as an xarray zarr store",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a *.ckpt of geovit train or geovit pretrain (or its run folder)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", default=None, metavar="DIR", help="dataset folder (the checkpoint's dataset)")
    src.add_argument("--raster", action="append", default=None, metavar="PATH",
                     help="input GeoTIFF or zarr cube; repeat for more sensors; the first sets the grid")
    p.add_argument("--split", default="test", help="split of --data (default test)")
    p.add_argument("--channels", default=None, help="with --data: channel set (default: the trained channels)")
    p.add_argument("--max-samples", type=positive_int, default=None, help="with --data: first N samples only")
    p.add_argument("--out", required=True, help="zarr store to write (replaced atomically)")
    add_scene_arguments(p)
    p.set_defaults(func=_embed)
