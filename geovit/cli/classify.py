"""``geovit train``, ``geovit evaluate`` and ``geovit demo``: supervised ChannelViT on So2Sat.

    geovit train --model channelvit_small_patch8 --channels so2sat [--data DIR] [--config Y.yaml] [--print-config]
    geovit evaluate CKPT --channels sentinel1 [--data DIR] [--split test]
    geovit demo            # the whole path on synthetic data in about 2.5 minutes
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from geovit.channels import PRESETS, TABLES, resolve_channels
from geovit.cli.options import add_config_flags, positive_int, print_config_and_exit, resolve_config
from geovit.config import ClassifyConfig, DemoConfig
from geovit.errors import GeovitError

def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_training(cfg: ClassifyConfig) -> Path:
    """Train a ChannelViT classifier; return the path of the best checkpoint."""
    import lightning as L

    from geovit.data.datamodules import So2SatDataModule
    from geovit.data.registry import SYNTHETIC_BANNER, resolve_data
    from geovit.tasks.classification import ClassificationTask
    from geovit.training import build_trainer, output_dir, resume_path

    sel = resolve_channels(cfg.channels, table="so2sat")
    ckpt = resume_path(cfg, ClassificationTask.family)
    out = output_dir(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    root, synthetic = resolve_data("so2sat", cfg.data, out, num_samples=cfg.synthetic_samples, seed=cfg.seed,
                                   version=cfg.version)
    dm = So2SatDataModule(root, version=cfg.version, bands=list(sel.names), batch_size=cfg.batch_size,
                          num_workers=cfg.num_workers, seed=cfg.seed)
    dm.setup("fit")
    steps_per_epoch = len(dm.train_dataloader())
    max_steps = cfg.max_steps
    max_epochs = cfg.max_epochs if cfg.max_epochs is not None else (None if max_steps else 100)
    total = max_steps or max_epochs * steps_per_epoch
    task = ClassificationTask(
        model=cfg.model, model_kwargs={**cfg.model_kwargs, "in_chans": sel.num_table_channels},
        channel_ids=list(sel.ids), channel_table=sel.table, num_classes=dm.num_classes, lr=cfg.lr,
        weight_decay=cfg.weight_decay, warmup_steps=min(cfg.warmup_steps, max(1, total // 5)), total_steps=total,
        data=str(root), version=cfg.version, synthetic=synthetic,
    )
    banner = SYNTHETIC_BANNER if synthetic else None
    trainer = build_trainer(cfg, banner=banner, monitor=task.monitor, mode=task.monitor_mode,
                            max_steps=max_steps, max_epochs=max_epochs,
                            val_check_interval=min(steps_per_epoch, max_steps or steps_per_epoch))
    trainer.fit(task, datamodule=dm, ckpt_path=ckpt)
    best = trainer.checkpoint_callback.best_model_path or str(out / "checkpoints" / "last.ckpt")
    print(f"{banner + ' ' if banner else ''}best checkpoint: {best} (val_acc {trainer.checkpoint_callback.best_model_score})")
    return Path(best)


def run_evaluation(ckpt: Path, *, channels: str | None, data: str | None, split: str, out: Path,
                   per_size: int, batch_size: int, seed: int = 0) -> dict:
    """Accuracy on ``channels`` plus the channel-robustness report (CSV + PNG) in ``out``."""
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
    if root is None or not Path(root).exists():
        raise GeovitError(f"--data: no dataset folder given and the one recorded in {ckpt} ({root}) does not exist")
    synthetic = bool(hp.get("synthetic")) and data is None
    tag = f"{SYNTHETIC_BANNER} " if synthetic else ""
    names = [TABLES[hp.channel_table][i] for i in trained_ids]
    dm = So2SatDataModule(root, version=hp.get("version", "2"), bands=names, batch_size=batch_size, augment=False)
    loader = dm.split_dataloader(split)
    named = {}
    if sel is not None:
        named[f"--channels {channels}"] = sel.ids
    for preset in ("sentinel1", "sentinel2"):
        ids = resolve_channels(preset).ids
        if PRESETS[preset][0] == hp.channel_table and ids not in named.values():
            named[f"{preset} only"] = ids
    plan = subset_plan(trained_ids, per_size=per_size, seed=seed, named=named)
    df = evaluate_subsets(module.model, loader, plan, device=device)
    summary = summarize(df)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "channel_subsets.csv", df.to_csv(index=False))
    atomic_write_text(out / "channel_robustness.csv", summary.to_csv(index=False))
    plot_report(summary, out / "channel_robustness.png", chance=1 / 17,
                title=f"{tag}ChannelViT channel robustness ({split} split)")
    full = float(df[df["size"] == len(trained_ids)].accuracy.iloc[0])
    result = {"checkpoint": str(ckpt), "split": split, "synthetic": synthetic, "accuracy_all_channels": full}
    if sel is not None:
        result[f"accuracy_{channels}"] = float(df[df.subset == f"--channels {channels}"].accuracy.iloc[0])
        result["channels"] = list(sel.names)
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    with pd.option_context("display.width", 120, "display.max_columns", 10):
        print(f"{tag}channel-robustness report ({split} split, {df.num_samples.iloc[0]} samples):")
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"{tag}wrote {out / 'channel_robustness.csv'} and {out / 'channel_robustness.png'}")
    return result


def _train(args: argparse.Namespace) -> int:
    cfg = resolve_config(args, ClassifyConfig)
    if not print_config_and_exit(args, cfg):
        run_training(cfg)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent.parent / "evaluation"
    run_evaluation(Path(args.checkpoint), channels=args.channels, data=args.data, split=args.split, out=out,
                   per_size=args.subsets_per_size, batch_size=args.batch_size)
    return 0


def _demo(args: argparse.Namespace) -> int:
    import time

    cfg = resolve_config(args, DemoConfig)
    if print_config_and_exit(args, cfg):
        return 0
    t0 = time.time()
    print("geovit demo: ChannelViT + Hierarchical Channel Sampling on a SYNTHETIC So2Sat-format data set\n"
          "  (train on all 18 Sentinel-1/2 bands, then test on every subset size, S1-only and S2-only)")
    best = run_training(cfg)
    result = run_evaluation(best, channels="sentinel1", data=None, split="test", out=Path(best).parent.parent / "evaluation",
                            per_size=4, batch_size=256, seed=cfg.seed)
    chance = 1 / 17
    print(f"[SYNTHETIC DATA] demo finished in {time.time() - t0:.0f} s: test accuracy {result['accuracy_all_channels']:.3f} "
          f"with all 18 bands, {result['accuracy_sentinel1']:.3f} with Sentinel-1 only (chance {chance:.3f})")
    return 0 if result["accuracy_all_channels"] > 2 * chance else 1


def add_commands(sub) -> None:
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
    e.set_defaults(func=_evaluate)

    d = sub.add_parser("demo", help="train + evaluate ChannelViT on synthetic So2Sat (about 2.5 minutes on 2 cores)")
    add_config_flags(d, DemoConfig)
    d.set_defaults(func=_demo)
