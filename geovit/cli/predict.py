"""``geovit predict``: a class map of a scene from a ChannelViT or ChA-MAEViT classifier.

    geovit predict CKPT --raster s2.tif --raster s1.tif --mask cloud_mask.tif=sentinel2 --out map.tif
    geovit predict CKPT --raster stack.tif --bands S2_B02,S2_B03,S2_B04,S2_B08,- --out map.tif --probabilities
    geovit predict CKPT --raster s2.tif --raster s1_other_grid.tif --reproject --devices 2 --out map.tif
    geovit predict CKPT --raster s2.tif --raster s1_cube.zarr --reproject --resampling nearest --out map.tif

The scene is cut into windows of the model's input size (So2Sat: 32 x 32 px) every ``--stride``
pixels; one class per window. In every window a band that is nodata (nodata value, NaN, GDAL
mask, or ``--mask``) over more than ``--max-missing`` of it is dropped, and the model runs on the
channel ids that remain (windows are batched by channel set). Outputs, on the window grid with
the scene's CRS: OUT (Cloud-Optimized GeoTIFF; band 1 class, nodata 255; band 2 channels used),
OUT with .png (preview with a legend), ``--probabilities`` (per-class probabilities).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from geovit.cli.options import positive_int
from geovit.errors import GeovitError

#: resampling methods offered for reprojected data bands (``rasterio.enums.Resampling`` names)
RESAMPLING = ("nearest", "bilinear", "cubic", "average")


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {text}")
    return value


def check_inputs(rasters: list[str], masks: list[str]) -> None:
    """Fail on missing input files before the model is loaded."""
    for r in rasters:
        if not Path(r).exists():
            raise GeovitError(f"--raster {r}: file not found")
    for m in masks:
        source = m.split("=", 1)[0]
        if any(sep in source for sep in ("/", "\\")) and not Path(source).exists():
            raise GeovitError(f"--mask {m}: file {source} not found")


def add_scene_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``geovit predict`` and ``geovit embed --raster``."""
    g = p.add_argument_group("scene")
    g.add_argument("--bands", action="append", default=None, metavar="NAMES",
                   help="band names of one --raster, in band order: a comma list of channel names (e.g. S2_B02,...), "
                        "a preset (sentinel2, sentinel1), '-' skips a band; give it once per --raster, in the same "
                        "order (default: the rasters' band descriptions)")
    g.add_argument("--mask", action="append", default=[], metavar="SOURCE[=CHANNELS]",
                   help="pixels > 0 of SOURCE are unusable for CHANNELS: SOURCE is a band name of an input (e.g. a "
                        "cloud band) or a mask raster; CHANNELS a preset or comma list (default: the bands of the "
                        "raster holding the mask band, or of the first --raster for a mask file); repeatable")
    g.add_argument("--max-missing", type=fraction, default=0.1,
                   help="a band unusable over more than this share of a window is dropped there (default 0.1)")
    g.add_argument("--stride", type=positive_int, default=None,
                   help="pixels between windows (default: the model's input size, non-overlapping)")
    g.add_argument("--reproject", action="store_true",
                   help="warp rasters (GeoTIFFs or zarr cubes) on another grid onto the grid of the first --raster "
                        "(default: an error)")
    g.add_argument("--resampling", default="bilinear", choices=RESAMPLING,
                   help="resampling of reprojected data bands (default bilinear; masks always use nearest)")
    r = p.add_argument_group("running")
    r.add_argument("--batch-size", type=positive_int, default=64, help="windows (or samples) per model call (default 64)")
    r.add_argument("--device", default=None, help="cpu, cuda, ... for one device (default: cuda when present)")
    r.add_argument("--devices", type=positive_int, default=1,
                   help="shard the window grid over this many devices per node (Lightning predict loop)")
    r.add_argument("--num-nodes", type=positive_int, default=1, help="nodes of a sharded run")
    r.add_argument("--accelerator", default="auto", help="Lightning accelerator of a sharded run (cpu, gpu, auto)")
    r.add_argument("--strategy", default="ddp", help="Lightning strategy of a sharded run (default ddp)")
    r.add_argument("--quiet", action="store_true", help="no progress output")


def print_stats(stats: dict, what: str) -> None:
    """Summary lines of a scene run (rank 0 only)."""
    tag = "[SYNTHETIC DATA] " if stats.get("synthetic") else ""
    for note in stats.get("notes", []):
        print(f"note: {note}")
    print(f"{tag}{stats['windows']} windows ({stats['rows']} x {stats['cols']}, {stats['window']} px every "
          f"{stats['stride']} px) in {stats['seconds']:.1f} s ({stats['windows_per_s']:.1f} windows/s, "
          f"{stats['model_calls']} model calls, {stats['world_size']} process(es))")
    for s in stats["channel_sets"]:
        names = ",".join(s["channels"]) if s["num_channels"] <= 4 else f"{s['channels'][0]}..{s['channels'][-1]}"
        print(f"  {s['windows']:>8} windows on {s['num_channels']:>2} channels ({names})")
    print(f"  {stats['nodata_windows']:>8} windows without a usable band (nodata)")
    if stats.get("warning"):
        print(f"warning: {stats['warning']}", file=sys.stderr)
    print(f"{tag}wrote {', '.join(stats['outputs'].values())}")


def _predict(args: argparse.Namespace) -> int:
    from geovit.predict.scene import predict_scene

    check_inputs(args.raster, args.mask)
    out = Path(args.out)
    probs = None
    if args.probabilities is not None:
        probs = out.with_name(out.stem + "_probabilities.tif") if args.probabilities == "auto" else Path(args.probabilities)
    preview = False if args.no_preview else (Path(args.preview) if args.preview else True)
    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    stats = predict_scene(args.checkpoint, args.raster, out, bands=args.bands, masks=args.mask,
                          max_missing=args.max_missing, stride=args.stride, batch_size=args.batch_size,
                          probabilities=probs, preview=preview, reproject=args.reproject, resampling=args.resampling,
                          class_names=names,
                          device=args.device, devices=args.devices, num_nodes=args.num_nodes,
                          accelerator=args.accelerator, strategy=args.strategy, progress=False if args.quiet else None)
    if stats.get("rank", 0) != 0:
        return 0
    print_stats(stats, "map")
    if args.stats:
        from geovit._io import atomic_write_text

        atomic_write_text(args.stats, json.dumps(stats, indent=2) + "\n")
    return 0


def add_commands(sub) -> None:
    """Add ``predict`` to the ``geovit`` sub-command parsers (``sub``: the ``add_subparsers()`` object)."""
    p = sub.add_parser("predict", help="class map of a scene (GeoTIFFs / zarr cubes) with per-window channel availability",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a *.ckpt of geovit train (ChannelViT) or geovit pretrain (ChA-MAEViT with a "
                                      "classifier head), or its run folder")
    p.add_argument("--raster", action="append", required=True, metavar="PATH",
                   help="input GeoTIFF or zarr cube (band, y, x); repeat for more sensors; the first sets the grid")
    p.add_argument("--out", required=True, help="map GeoTIFF (COG): band 1 class (nodata 255), band 2 channels used")
    p.add_argument("--probabilities", nargs="?", const="auto", default=None, metavar="PATH",
                   help="also write per-class probabilities (float32 COG; default path OUT_probabilities.tif)")
    p.add_argument("--preview", default=None, metavar="PNG", help="preview PNG (default: OUT with .png)")
    p.add_argument("--no-preview", action="store_true", help="do not write the PNG preview")
    p.add_argument("--class-names", default=None, metavar="A,B,...",
                   help="class names for the legend and metadata (default: So2Sat's local climate zones)")
    p.add_argument("--stats", type=Path, default=None, metavar="JSON", help="also write the run statistics here")
    add_scene_arguments(p)
    p.set_defaults(func=_predict)
