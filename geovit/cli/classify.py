"""``geovit train``, ``geovit evaluate`` and ``geovit demo``: supervised ChannelViT on So2Sat.

    geovit train --model channelvit_small_patch8 --channels so2sat [--data DIR] [--config Y.yaml] [--print-config]
    geovit evaluate CKPT --channels sentinel1 [--data DIR] [--split test] [--points patches.geojson]
    geovit demo            # ChannelViT with and without HCS on synthetic data, one robustness plot

The demo trains the same ChannelViT twice on the built-in synthetic So2Sat
(:mod:`geovit.data.so2sat_synthetic`) — with Hierarchical Channel Sampling and without, the
same data, seed, steps and schedule — and draws both in ``OUT/evaluation/channel_robustness.png``:
accuracy when only some of the 18 bands are available at test time (Bao et al., ICLR 2024,
§3.2).

When the split is geolocated (So2Sat with its ``<split>_geo.h5`` file) ``evaluate`` also writes
the patch centres as points (``patches_<split>.geojson``, EPSG:4326 per RFC 7946, or
``--points PATH`` ``.geojson`` / ``.gpkg``) with ``label``, ``prediction``, ``correct`` and
``city`` of every patch (all trained channels), and the accuracy of each city
(``city_accuracy.csv``, ``metrics.json``).
"""
from __future__ import annotations

import argparse
import sys
import json
from pathlib import Path

import torch

from geovit.channels import PRESETS, TABLES, resolve_channels
from geovit.cli.options import add_config_flags, positive_int, print_config_and_exit, resolve_config
from geovit.config import ClassifyConfig, DemoConfig
from geovit.errors import GeovitError


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_training(cfg: ClassifyConfig, data_root: tuple[Path, bool] | None = None) -> Path:
    """Train a ChannelViT classifier; return the path of the best checkpoint.

    Args:
        cfg: the run's configuration.
        data_root: ``(root, synthetic)`` of a dataset folder already resolved by an earlier run
            (the demo's second model reuses the first one's synthetic set); default:
            :func:`geovit.data.registry.resolve_data` of ``cfg.data``.

    Returns:
        The best checkpoint (highest ``val_acc``), else ``last.ckpt``.
    """
    import lightning as L

    from geovit.data.datamodules import So2SatDataModule
    from geovit.data.registry import SYNTHETIC_BANNER, resolve_data
    from geovit.tasks.classification import ClassificationTask
    from geovit.training import best_checkpoint, build_trainer, fit, output_dir, resume_path

    sel = resolve_channels(cfg.channels, table="so2sat")
    ckpt = resume_path(cfg, ClassificationTask.family)
    out = output_dir(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if data_root is None:
        root, synthetic = resolve_data("so2sat", cfg.data, out, num_samples=cfg.synthetic_samples, seed=cfg.seed,
                                       version=cfg.version)
    else:
        root, synthetic = Path(data_root[0]), bool(data_root[1])
    dm = So2SatDataModule(root, version=cfg.version, bands=list(sel.names), batch_size=cfg.batch_size,
                          num_workers=cfg.num_workers, seed=cfg.seed, reads=cfg.so2sat_reads,
                          val_cities=cfg.val_cities)
    dm.setup("fit")
    steps_per_epoch = len(dm.train_dataloader())
    max_steps = cfg.max_steps
    max_epochs = cfg.max_epochs if cfg.max_epochs is not None else (None if max_steps else 100)
    total = max_steps or max_epochs * steps_per_epoch
    task = ClassificationTask(
        model=cfg.model, model_kwargs={**cfg.model_kwargs, "in_chans": sel.num_table_channels},
        channel_ids=list(sel.ids), channel_table=sel.table, num_classes=dm.num_classes, lr=cfg.lr,
        weight_decay=cfg.weight_decay, warmup_steps=min(cfg.warmup_steps, max(1, total // 5)), total_steps=total,
        data=str(Path(root).resolve()), version=cfg.version, synthetic=synthetic, seed=cfg.seed,
    )
    banner = SYNTHETIC_BANNER if synthetic else None
    trainer = build_trainer(cfg, banner=banner, monitor=task.monitor, mode=task.monitor_mode,
                            max_steps=max_steps, max_epochs=max_epochs,
                            val_check_interval=min(steps_per_epoch, max_steps or steps_per_epoch))
    fit(trainer, task, dm, ckpt)
    return best_checkpoint(trainer, task.monitor, banner=banner)


def patch_predictions(model: torch.nn.Module, loader, device: str | torch.device, where: str):
    """Label, prediction and patch centre of every sample of a geolocated split (all its channels).

    Args:
        model: classifier called as ``model(x, channel_ids)``.
        loader: batches with ``image``, ``channels``, ``label`` and the geolocation keys
            (:data:`geovit.geo.points.GEO_SAMPLE_KEYS`).
        device: where to run.
        where: how to name the data in messages.

    Returns:
        A ``pandas.DataFrame``: ``label, prediction, correct, city, epsg, x, y, lon, lat`` (x / y
        in each patch's CRS, lon / lat in EPSG:4326), one row per sample in the loader's order.
    """
    import pandas as pd

    from geovit.geo.points import PatchPoints

    model = model.eval().to(device)
    parts = []
    seen = 0
    with torch.no_grad():
        for batch in loader:
            image, ids = batch["image"].to(device), batch["channels"][0].to(device)
            pred = model(image, ids).argmax(1).cpu().numpy()
            label = batch["label"].numpy()
            n = len(label)
            pts = PatchPoints.from_batch(batch, int(image.shape[-2]), int(image.shape[-1]),
                                         where=f"{where}, samples {seen}..{seen + n - 1}")
            parts.append(pd.DataFrame({"label": label, "prediction": pred, "correct": pred == label, "city": pts.city,
                                       "epsg": pts.epsg, "x": pts.x, "y": pts.y, "lon": pts.lon, "lat": pts.lat}))
            seen += n
    return pd.concat(parts, ignore_index=True)


def city_accuracy(patches) -> "pd.DataFrame":  # noqa: F821
    """Accuracy per city of :func:`patch_predictions` rows: ``city, num_samples, accuracy`` (by city name)."""
    table = patches.groupby("city", sort=True)["correct"].agg(num_samples="size", accuracy="mean").reset_index()
    return table.astype({"num_samples": int, "accuracy": float})


def run_evaluation(ckpt: Path, *, channels: str | None, data: str | None, split: str, out: Path,
                   per_size: int, batch_size: int, seed: int = 0, points: Path | None = None) -> dict:
    """Accuracy on ``channels`` plus the channel-robustness report (CSV + PNG) in ``out``.

    Args:
        ckpt: a ``geovit train`` checkpoint.
        channels: channel set to report besides all channels, Sentinel-1 only and Sentinel-2 only.
        data: dataset root (default: the one recorded in the checkpoint).
        split: split to score.
        out: report folder (``channel_subsets.csv``, ``channel_robustness.csv`` / ``.png``,
            ``metrics.json``).
        per_size: channel subsets per subset size.
        batch_size: evaluation batch size.
        seed: seed of the sampled subsets.
        points: where to write the patch points of a geolocated split (``.geojson`` / ``.gpkg``;
            default ``out/patches_<split>.geojson``); an error for a split without geolocation.

    Returns:
        The ``metrics.json`` content plus ``summary`` (the per-size table).

    Raises:
        GeovitError: channels the checkpoint never saw, no dataset folder, ``points`` for a
            split without geolocation file (or with another suffix than .geojson / .gpkg).
    """
    import pandas as pd

    from geovit._io import atomic_write_text
    from geovit.data.datamodules import So2SatDataModule
    from geovit.data.registry import SYNTHETIC_BANNER
    from geovit.tasks.classification import ClassificationTask
    from geovit.tasks.robustness import evaluate_subsets, plot_report, subset_plan, summarize

    device = _device()
    module = ClassificationTask.load_from_checkpoint(ckpt, map_location=device)
    hp = module.hparams
    trained_ids = list(hp.channel_ids)
    sel = resolve_channels(channels, table=hp.channel_table) if channels else None
    if sel is not None and not set(sel.ids) <= set(trained_ids):
        unseen = [n for n, i in zip(sel.names, sel.ids) if i not in trained_ids]
        raise GeovitError(f"--channels {channels}: the checkpoint was trained on channel ids {trained_ids}; "
                          f"it has never seen {unseen}")
    root = data or hp.get("data")
    if data is not None and not Path(data).exists():
        raise GeovitError(f"--data {data}: folder not found")
    if root is None or not Path(root).exists():
        tried = "none recorded" if root is None else f"tried {Path(root).resolve()}"
        raise GeovitError(f"--data: not given, and the dataset {ckpt} was trained on is not there ({tried}); "
                          "give the dataset folder with --data")
    synthetic = bool(hp.get("synthetic")) and data is None
    tag = f"{SYNTHETIC_BANNER} " if synthetic else ""
    names = [TABLES[hp.channel_table][i] for i in trained_ids]
    dm = So2SatDataModule(root, version=hp.get("version", "2"), bands=names, batch_size=batch_size, augment=False)
    loader = dm.split_dataloader(split)
    geolocated = getattr(loader.dataset, "geolocation", None) is not None
    if points is not None:
        if Path(points).suffix.lower() not in (".geojson", ".json", ".gpkg"):
            raise GeovitError(f"--points {points}: expected a .geojson or .gpkg file")
        if not geolocated:
            geo = getattr(loader.dataset, "geo_path", None)
            raise GeovitError(f"--points {points}: split {split} of {root} has no geolocation"
                              + (f" (no {geo})" if geo is not None else ""))
    named = {}
    if sel is not None:
        named[f"--channels {channels}"] = sel.ids
    for preset in ("sentinel1", "sentinel2"):
        ids = resolve_channels(preset).ids
        if PRESETS[preset][0] == hp.channel_table and ids not in named.values():
            named[f"{preset} only"] = ids
    plan = subset_plan(trained_ids, per_size=per_size, seed=seed, named=named)
    df = evaluate_subsets(module.model, loader, plan, device=device)
    # bad geolocation fails here, before any file of the report is written
    patches = patch_predictions(module.model, loader, device, where=f"{root}, split {split}") if geolocated else None
    summary = summarize(df)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "channel_subsets.csv", df.to_csv(index=False))
    atomic_write_text(out / "channel_robustness.csv", summary.to_csv(index=False))
    plot_report(summary, out / "channel_robustness.png", chance=1 / 17,
                title=f"{tag}ChannelViT channel robustness ({split} split)")
    full = float(df[df["size"] == len(trained_ids)].accuracy.iloc[0])
    result = {"checkpoint": str(ckpt), "split": split, "synthetic": synthetic, "accuracy_all_channels": full}
    cities = None
    if geolocated:
        from geovit.geo.points import write_points

        target = Path(points) if points is not None else out / f"patches_{split}.geojson"
        write_points(target, patches["lon"], patches["lat"],
                     {k: patches[k] for k in ("label", "prediction", "correct", "city", "epsg", "x", "y")})
        cities = city_accuracy(patches)
        atomic_write_text(out / "city_accuracy.csv", cities.to_csv(index=False))
        result["points"] = str(target)
        result["accuracy_by_city"] = {r.city: {"accuracy": r.accuracy, "num_samples": r.num_samples}
                                      for r in cities.itertuples()}
    if sel is not None:
        result[f"accuracy_{channels}"] = float(df[df.subset == f"--channels {channels}"].accuracy.iloc[0])
        result["channels"] = list(sel.names)
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    with pd.option_context("display.width", 120, "display.max_columns", 10):
        print(f"{tag}channel-robustness report ({split} split, {df.num_samples.iloc[0]} samples):")
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if cities is not None:
        with pd.option_context("display.width", 120):
            print(f"{tag}accuracy by city (all trained channels):")
            print(cities.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"{tag}wrote {out / 'channel_robustness.csv'} and {out / 'channel_robustness.png'}"
          + (f"; patch points {result['points']}" if cities is not None else ""))
    return {**result, "summary": summary}


def _train(args: argparse.Namespace) -> int:
    cfg = resolve_config(args, ClassifyConfig)
    if not print_config_and_exit(args, cfg):
        run_training(cfg)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent.parent / "evaluation"
    run_evaluation(Path(args.checkpoint), channels=args.channels, data=args.data, split=args.split, out=out,
                   per_size=args.subsets_per_size, batch_size=args.batch_size,
                   points=Path(args.points) if args.points else None)
    return 0


def _demo(args: argparse.Namespace) -> int:
    import time

    import pandas as pd

    from geovit._io import atomic_write_text
    from geovit.data.registry import SYNTHETIC_BANNER, resolve_data
    from geovit.tasks.robustness import plot_comparison
    from geovit.training import output_dir

    cfg = resolve_config(args, DemoConfig)
    if print_config_and_exit(args, cfg):
        return 0
    t0 = time.time()
    print("geovit demo: ChannelViT with and without Hierarchical Channel Sampling on a SYNTHETIC So2Sat-format data set\n"
          "  (both trained on all 18 Sentinel-1/2 bands with the same data, seed and steps, then tested on every "
          "subset size, S1-only and S2-only)")
    out = output_dir(cfg)
    data = resolve_data("so2sat", None, out, num_samples=cfg.synthetic_samples, seed=cfg.seed, version=cfg.version)
    runs = {"ChannelViT + HCS": cfg.replace(model_kwargs={**cfg.model_kwargs, "hcs": True}),
            "ChannelViT, no HCS": cfg.replace(out=str(out / "no_hcs"), model_kwargs={**cfg.model_kwargs, "hcs": False})}
    results = {}
    for label, run_cfg in runs.items():
        print(f"{SYNTHETIC_BANNER} demo: training {label} ({run_cfg.max_steps} steps)", flush=True)
        best = run_training(run_cfg, data_root=data)
        results[label] = run_evaluation(best, channels="sentinel1", data=None, split="test",
                                        out=Path(best).parent.parent / "evaluation", per_size=4, batch_size=256,
                                        seed=cfg.seed)
    chance = 1 / 17
    plot = out / "evaluation" / "channel_robustness.png"
    plot_comparison({label: r["summary"] for label, r in results.items()}, plot, chance=chance,
                    title=f"{SYNTHETIC_BANNER} ChannelViT channel robustness (test split, {cfg.max_steps} steps each)")
    table = pd.concat({label: r["summary"].set_index("subset")["mean"] for label, r in results.items()}, axis=1)
    atomic_write_text(out / "evaluation" / "hcs_vs_no_hcs.csv", table.to_csv())
    with pd.option_context("display.width", 120):
        print(f"{SYNTHETIC_BANNER} test accuracy by channels available (mean over the evaluated subsets):")
        print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    hcs, base = results["ChannelViT + HCS"], results["ChannelViT, no HCS"]
    print(f"{SYNTHETIC_BANNER} demo finished in {time.time() - t0:.0f} s: all 18 bands {hcs['accuracy_all_channels']:.3f} "
          f"with HCS / {base['accuracy_all_channels']:.3f} without; Sentinel-1 only {hcs['accuracy_sentinel1']:.3f} / "
          f"{base['accuracy_sentinel1']:.3f} (chance {chance:.3f}); plot {plot}")
    if hcs["accuracy_all_channels"] <= 2 * chance:
        print(f"geovit demo: the HCS model's accuracy with all bands ({hcs['accuracy_all_channels']:.3f}) is not above "
              f"twice chance ({2 * chance:.3f}): it did not learn; exit 1", file=sys.stderr)
        return 1
    return 0


def add_commands(sub) -> None:
    """Add ``train``, ``evaluate`` and ``demo`` to the ``geovit`` sub-command parsers (``sub``: ``add_subparsers()``)."""
    t = sub.add_parser("train", help="supervised ChannelViT (+HCS) classification on So2Sat")
    add_config_flags(t, ClassifyConfig)
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="accuracy on a channel set + channel-robustness report (CSV, PNG)")
    e.add_argument("checkpoint", help="a *.ckpt written by geovit train (or its run folder)")
    e.add_argument("--channels", default=None, help="channel set to report (preset or comma list)")
    e.add_argument("--data", default=None, help="So2Sat root (default: the one the checkpoint was trained on)")
    e.add_argument("--split", default="test", choices=("train", "validation", "test"))
    e.add_argument("--out", default=None, help="report folder (default: next to the run)")
    e.add_argument("--batch-size", type=positive_int, default=256)
    e.add_argument("--subsets-per-size", type=positive_int, default=8, help="channel subsets evaluated per subset size")
    e.add_argument("--points", default=None, metavar="PATH",
                   help="geolocated splits: patch centres with label / prediction / correct / city as .geojson "
                        "(EPSG:4326) or .gpkg (default OUT/patches_SPLIT.geojson)")
    e.set_defaults(func=_evaluate)

    d = sub.add_parser("demo", help="ChannelViT with vs without HCS on synthetic So2Sat: one robustness plot "
                                    "(a few minutes on 2 cores)")
    add_config_flags(d, DemoConfig)
    d.set_defaults(func=_demo)
