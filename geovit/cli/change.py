"""``geovit change {train,evaluate,predict}``: ChangeViT change detection (LEVIR-CD layouts, GeoTIFFs).

* ``geovit change train --data DIR [--model changevit_tiny]`` trains on the ``train`` split cut
  into tiles, picks the checkpoint with the best ``val_f1`` (never test) and saves a grid of
  t1 / t2 / truth / prediction for a few val tiles every epoch under ``OUT/plots``.
* ``geovit change evaluate CKPT --data DIR --split test`` scores one confusion matrix summed over
  every pixel of the split (precision, recall, F1, IoU, OA, kappa of the change class) and writes
  ``metrics_<split>.json`` / ``.csv``.
* ``geovit change predict CKPT --before A.tif --after B.tif --out change.tif`` runs sliding-window
  inference over rasters of any size; the GeoTIFF keeps CRS and transform; a PNG overlay too.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from geovit.cli.options import add_config_flags, bounded, positive_int, print_config_and_exit, resolve_config
from geovit.config import ChangeConfig
from geovit.errors import GeovitError



def _bands(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated band numbers like 1,2,3, got {text!r}") from None


def _device(name: str | None) -> str:
    import torch

    return name or ("cuda" if torch.cuda.is_available() else "cpu")


# ------------------------------------------------------------------------------------- train
def _train(args: argparse.Namespace) -> int:
    import lightning as L

    from geovit.data.datamodules import LEVIRCDDataModule
    from geovit.tasks.change import ChangeDetectionTask, ValidationGrid
    from geovit.training import best_checkpoint, build_trainer, fit, output_dir, resume_path

    cfg = resolve_config(args, ChangeConfig)
    if print_config_and_exit(args, cfg):
        return 0
    if not cfg.data:
        raise GeovitError("--data: give the dataset folder (a LEVIR-CD layout, see `geovit change train -h`)")
    ckpt = resume_path(cfg, ChangeDetectionTask.family)
    out = output_dir(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = LEVIRCDDataModule(cfg.data, tile=cfg.tile, normalization=cfg.normalization, labels=cfg.labels,
                           batch_size=cfg.batch_size, num_workers=cfg.num_workers, seed=cfg.seed)
    dm.setup("fit")
    task = ChangeDetectionTask(model=cfg.model, model_kwargs=cfg.model_kwargs, lr=cfg.lr,
                               weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps,
                               normalization=cfg.normalization, tile=cfg.tile, seed=cfg.seed)
    trainer = build_trainer(cfg, monitor=task.monitor, mode=task.monitor_mode,
                            callbacks=[ValidationGrid(dm.plot_samples(cfg.plot_samples), out / "plots")])
    fit(trainer, task, dm, ckpt)
    best_checkpoint(trainer, task.monitor)
    return 0


# ---------------------------------------------------------------------------------- evaluate
def evaluate_split(task, data: str, split: str, *, tile: int, labels: str = "auto", pad: bool = False,
                   batch_size: int = 8, device: str = "cpu", progress: bool = True) -> dict:
    """Scores of ``task`` on ``split``: one confusion matrix over every pixel (each counted once)."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from geovit.data.change_transforms import IGNORE_INDEX, ChangeTiles
    from geovit.data.levircd import LEVIRCD
    from geovit.tasks.change_metrics import ChangeConfusion

    dataset = ChangeTiles(LEVIRCD(data, split, labels=labels), tile, mark_unowned=True, pad=pad)
    confusion = ChangeConfusion(threshold=task.hparams.threshold)
    task = task.to(device)
    for batch in tqdm(DataLoader(dataset, batch_size=batch_size), desc=f"evaluate {split}", disable=not progress):
        image, mask = batch["image"].to(device), batch["mask"]
        prob = task.predict_raw(image[:, 0], image[:, 1])[:, 0].cpu()
        confusion.update(prob, mask == 1, valid=mask != IGNORE_INDEX)
    scores = confusion.compute()
    h, w = dataset.scene_hw
    scores.update(split=split, scenes=len(dataset.base), pixels=int(torch.tensor(scores["confusion"]).sum()),
                  protocol=f"{'whole scenes' if tile == 0 else f'{tile}x{tile} tiles'} of {w}x{h} scenes, "
                           f"prob > {task.hparams.threshold}")
    return scores


def _evaluate(args: argparse.Namespace) -> int:
    from geovit._io import atomic_write_text
    from geovit.tasks.base import find_checkpoint
    from geovit.tasks.change import SCORES, ChangeDetectionTask

    ckpt = find_checkpoint(args.checkpoint)
    task = ChangeDetectionTask.load_from_checkpoint(ckpt)
    tile = task.hparams.tile if args.tile is None else args.tile
    scores = evaluate_split(task, args.data, args.split, tile=tile, labels=args.labels, pad=args.pad,
                            batch_size=args.batch_size, device=_device(args.device))
    scores["checkpoint"] = str(ckpt)
    print(f"{args.split}: {scores['scenes']} scenes, {scores['pixels']} pixels ({scores['protocol']})")
    for key in SCORES:
        print(f"  {key:<9} {100 * scores[key]:7.2f} %")
    out = Path(args.out) if args.out else (ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent)
    atomic_write_text(out / f"metrics_{args.split}.json", json.dumps(scores, indent=2) + "\n")
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["split", *SCORES, "tn", "fp", "fn", "tp"])
    writer.writerow([args.split, *(f"{scores[k]:.6f}" for k in SCORES), *(v for row in scores["confusion"] for v in row)])
    atomic_write_text(out / f"metrics_{args.split}.csv", buf.getvalue())
    print(f"wrote {out / f'metrics_{args.split}.json'} and .csv")
    return 0


# ----------------------------------------------------------------------------------- predict
def _predictor(args: argparse.Namespace, device: str):
    """predict_fn(t1, t2) on raw 0-255 tiles from a training checkpoint or a converted safetensors file."""
    from geovit.data.change_transforms import normalize_rgb

    if Path(args.checkpoint).suffix == ".safetensors":
        from geovit.hub import load_converted

        model = load_converted(args.checkpoint, family="changevit").to(device)
        norm = args.normalization or "imagenet"
        return lambda t1, t2: model(normalize_rgb(t1, norm), normalize_rgb(t2, norm))
    from geovit.tasks.change import ChangeDetectionTask

    task = ChangeDetectionTask.load_from_checkpoint(args.checkpoint, map_location=device)
    if args.normalization and args.normalization != task.hparams.normalization:
        raise GeovitError(f"--normalization {args.normalization}: the checkpoint was trained with "
                          f"{task.hparams.normalization!r}; omit the flag")
    return task.predict_raw


def _predict(args: argparse.Namespace) -> int:
    from geovit.geo.sliding_window import predict_change_raster

    out = Path(args.out)
    overlay = None if args.no_overlay else (Path(args.overlay) if args.overlay else out.with_suffix(".png"))
    for path in (args.before, args.after):  # fail on missing inputs before loading the model
        if not Path(path).is_file():
            raise GeovitError(f"{path}: raster not found")
    device = _device(args.device)
    stats = predict_change_raster(
        _predictor(args, device), args.before, args.after, out, tile=args.tile, overlap=args.overlap,
        batch_size=args.batch_size, threshold=args.threshold, bands=args.bands, scale=args.scale,
        reproject=args.reproject, pad=not args.no_pad, prob_out=args.prob_out, overlay=overlay,
        device=device, block_width=args.block_width)
    total = stats["height"] * stats["width"]
    print(f"{stats['tiles']} tiles in {stats['seconds']:.1f} s ({stats['tiles_per_s']:.2f} tiles/s); "
          f"change in {stats['changed_pixels']} of {total} pixels ({100 * stats['changed_pixels'] / total:.2f} %)")
    print(f"wrote {out}" + (f", {args.prob_out}" if args.prob_out else "") + (f", {overlay}" if overlay else ""))
    return 0


# ---------------------------------------------------------------------------------- parsers
def add_commands(sub) -> None:
    """Register ``geovit change {train,evaluate,predict}`` on the ``geovit`` subparsers ``sub``."""
    p = sub.add_parser("change", help="ChangeViT change detection: train, evaluate, predict on GeoTIFFs")
    csub = p.add_subparsers(dest="change_command", metavar="ACTION", required=True)

    t = csub.add_parser("train", help="train on a LEVIR-CD-layout folder (checkpoint chosen on val F1)",
                        description="Layouts: DIR/{train,val,test}/{A,B,label}/*.png (original, open-cd; "
                                    "CLCD's time1/time2 too), DIR/{A,B,label}/ + DIR/list/{split}.txt "
                                    "(LEVIR-CD-256, WHU-CD-256), torchgeo's DIR/{A,B,label}/{split}_*.png.")
    add_config_flags(t, ChangeConfig)
    t.set_defaults(func=_train)

    e = csub.add_parser("evaluate", help="precision/recall/F1/IoU/OA/kappa over all pixels of a split")
    e.add_argument("checkpoint", help="*.ckpt from `geovit change train`, or its output folder (best checkpoint)")
    e.add_argument("--data", required=True, help="dataset folder")
    e.add_argument("--split", default="test", choices=("train", "val", "test"))
    e.add_argument("--tile", type=bounded(int, 0), default=None, help="tile side (default: the training tile; 0 = whole scenes)")
    e.add_argument("--pad", action="store_true", help="pad whole scenes to multiples of 16 (padding is not scored)")
    e.add_argument("--labels", default="auto", choices=("auto", "strict", "nonzero"))
    e.add_argument("--batch-size", type=positive_int, default=8)
    e.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when present)")
    e.add_argument("--out", default=None, help="folder for metrics_<split>.json/.csv (default: the run folder)")
    e.set_defaults(func=_evaluate)

    r = csub.add_parser("predict", help="sliding-window change map of two co-registered rasters (GeoTIFF + PNG)")
    r.add_argument("checkpoint", help="*.ckpt from `geovit change train` (or a geovit-converted .safetensors)")
    r.add_argument("--before", required=True, help="raster at t1 (GeoTIFF, PNG, ...)")
    r.add_argument("--after", required=True, help="raster at t2, same CRS/transform/shape (or --reproject)")
    r.add_argument("--out", required=True, help="output change GeoTIFF: 1 change, 0 none, 255 nodata")
    r.add_argument("--tile", type=bounded(int, 16), default=256, help="tile side, multiple of 16")
    r.add_argument("--overlap", type=bounded(int, 0), default=None, help="overlap between tiles, blended (default tile/4 = 64)")
    r.add_argument("--batch-size", type=positive_int, default=4)
    r.add_argument("--threshold", type=bounded(float, 0, 1, open_high=True), default=0.5,
                   help="change where probability > threshold (0 ≤ threshold < 1)")
    r.add_argument("--bands", type=_bands, default=None, help="RGB band numbers when the raster has != 3 bands")
    r.add_argument("--scale", type=bounded(float, 0, open_low=True), default=None, help="multiply non-8-bit values into 0-255")
    r.add_argument("--reproject", action="store_true", help="warp --after onto the grid of --before")
    r.add_argument("--no-pad", action="store_true", help="do not pad rasters smaller than a tile (sides must be multiples of 16)")
    r.add_argument("--prob-out", default=None, help="also write the float32 probability GeoTIFF here")
    r.add_argument("--overlay", default=None, help="PNG overlay path (default: OUT with .png)")
    r.add_argument("--no-overlay", action="store_true")
    r.add_argument("--normalization", choices=("imagenet", "half"), default=None,
                   help="input statistics for a .safetensors model (training checkpoints carry their own)")
    r.add_argument("--block-width", type=bounded(int, 16), default=2048, help="output column block (memory ~ block x tile)")
    r.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when present)")
    r.set_defaults(func=_predict)
