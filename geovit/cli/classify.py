"""``geovit train``, ``geovit evaluate`` and ``geovit demo``: supervised ChannelViT on So2Sat.

    geovit train --model channelvit_small_patch8 --channels so2sat [--data DIR] [--config Y.yaml]
    geovit evaluate CKPT --channels sentinel1 [--data DIR] [--split test]
    geovit demo            # the whole path on synthetic data in under two minutes
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from geovit.channels import PRESETS, TABLES, resolve_channels
from geovit.errors import GeovitError

TRAIN_DEFAULTS = dict(
    model="channelvit_small_patch8", model_kwargs={}, channels="so2sat", data=None, version="2",
    batch_size=64, lr=5e-4, weight_decay=0.04, warmup_steps=100, max_steps=None, max_epochs=None,
    synthetic_samples=2048,
)
#: Small model + short schedule used by ``geovit demo`` (under two minutes on 2 CPU cores;
#: patch 16 keeps 4 tokens per channel on 32² inputs).
DEMO_CONFIG = dict(
    model="channelvit_tiny_patch16", model_kwargs=dict(embed_dim=96, depth=4, num_heads=3, img_size=32),
    batch_size=64, lr=4e-3, weight_decay=0.05, warmup_steps=30, max_steps=480, synthetic_samples=1536,
)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_training(args: argparse.Namespace, cfg: dict) -> Path:
    """Train a ChannelViT classifier; return the path of the best checkpoint."""
    import lightning as L

    from geovit.data.so2sat import SYNTHETIC_BANNER, make_dataloaders, resolve_data_root
    from geovit.tasks.classification import ChannelClassifier
    from geovit.training import build_trainer, output_dir, resume_path

    out = output_dir(args, args.command)
    sel = resolve_channels(cfg["channels"], table="so2sat")
    L.seed_everything(args.seed, workers=True, verbose=False)
    root, synthetic = resolve_data_root(cfg["data"], out, num_samples=cfg["synthetic_samples"], seed=args.seed)
    train_dl, val_dl = make_dataloaders(root, version=cfg["version"], bands=list(sel.names), batch_size=cfg["batch_size"],
                                        num_workers=args.num_workers, seed=args.seed)
    max_steps = cfg["max_steps"]
    max_epochs = cfg["max_epochs"] if cfg["max_epochs"] is not None else (None if max_steps else 100)
    total = max_steps or max_epochs * len(train_dl)
    module = ChannelClassifier(
        model=cfg["model"], model_kwargs={**cfg["model_kwargs"], "in_chans": sel.num_table_channels},
        channel_ids=list(sel.ids), channel_table=sel.table, num_classes=17, lr=cfg["lr"],
        weight_decay=cfg["weight_decay"], warmup_steps=min(cfg["warmup_steps"], max(1, total // 5)), total_steps=total,
        data=str(root), version=cfg["version"], synthetic=synthetic,
    )
    banner = SYNTHETIC_BANNER if synthetic else None
    trainer = build_trainer(args, out, banner=banner, monitor="val_acc", mode="max",
                            max_steps=max_steps, max_epochs=max_epochs,
                            val_check_interval=min(len(train_dl), max_steps or len(train_dl)))
    trainer.fit(module, train_dl, val_dl, ckpt_path=resume_path(args, out))
    best = trainer.checkpoint_callback.best_model_path or str(out / "checkpoints" / "last.ckpt")
    print(f"{banner + ' ' if banner else ''}best checkpoint: {best} (val_acc {trainer.checkpoint_callback.best_model_score})")
    return Path(best)


def run_evaluation(ckpt: Path, *, channels: str | None, data: str | None, split: str, out: Path,
                   per_size: int, batch_size: int, seed: int = 0) -> dict:
    """Accuracy on ``channels`` plus the channel-robustness report (CSV + PNG) in ``out``."""
    import pandas as pd

    from geovit._io import atomic_write_text
    from geovit.data.so2sat import SYNTHETIC_BANNER, make_dataloaders
    from geovit.tasks.classification import load_classifier
    from geovit.tasks.robustness import evaluate_subsets, plot_report, subset_plan, summarize

    device = _device()
    module = load_classifier(ckpt, map_location=device)
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
    (loader,) = make_dataloaders(root, version=hp.get("version", "2"), bands=names, batch_size=batch_size,
                                 splits=(split,), augment=False)
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
    from geovit.training import merged_config

    cfg = merged_config(args, TRAIN_DEFAULTS, cli_keys=("model", "channels", "data", "version", "batch_size",
                                                         "max_steps", "max_epochs"))
    run_training(args, cfg)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent.parent / "evaluation"
    run_evaluation(Path(args.checkpoint), channels=args.channels, data=args.data, split=args.split, out=out,
                   per_size=args.subsets_per_size, batch_size=args.batch_size)
    return 0


def _demo(args: argparse.Namespace) -> int:
    import time

    from geovit.training import merged_config

    t0 = time.time()
    args.command = "demo"
    cfg = merged_config(args, {**TRAIN_DEFAULTS, **DEMO_CONFIG}, cli_keys=("max_steps", "batch_size"))
    print("geovit demo: ChannelViT + Hierarchical Channel Sampling on a SYNTHETIC So2Sat-format data set\n"
          "  (train on all 18 Sentinel-1/2 bands, then test on every subset size, S1-only and S2-only)")
    best = run_training(args, cfg)
    result = run_evaluation(best, channels="sentinel1", data=None, split="test", out=Path(best).parent.parent / "evaluation",
                            per_size=4, batch_size=256, seed=args.seed)
    chance = 1 / 17
    print(f"[SYNTHETIC DATA] demo finished in {time.time() - t0:.0f} s: test accuracy {result['accuracy_all_channels']:.3f} "
          f"with all 18 bands, {result['accuracy_sentinel1']:.3f} with Sentinel-1 only (chance {chance:.3f})")
    return 0 if result["accuracy_all_channels"] > 2 * chance else 1


def add_commands(sub) -> None:
    from geovit.training import add_training_args

    t = sub.add_parser("train", help="supervised ChannelViT (+HCS) classification on So2Sat")
    t.add_argument("--model", default=None, help=f"registered model (default {TRAIN_DEFAULTS['model']})")
    t.add_argument("--channels", default=None, help="preset (so2sat, sentinel1, sentinel2, ...) or comma list of band names")
    t.add_argument("--data", default=None, help="So2Sat root folder (default: a synthetic set)")
    t.add_argument("--version", default=None, help="So2Sat version: 2, 3_random, 3_block, 3_culture_10")
    add_training_args(t)
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="accuracy on a channel set + channel-robustness report (CSV, PNG)")
    e.add_argument("checkpoint", help="a *.ckpt written by geovit train")
    e.add_argument("--channels", default=None, help="channel set to report (preset or comma list)")
    e.add_argument("--data", default=None, help="So2Sat root (default: the one the checkpoint was trained on)")
    e.add_argument("--split", default="test")
    e.add_argument("--out", default=None, help="report folder (default: next to the run)")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--subsets-per-size", type=int, default=8, help="channel subsets evaluated per subset size")
    e.set_defaults(func=_evaluate)

    d = sub.add_parser("demo", help="train + evaluate ChannelViT on synthetic So2Sat (under two minutes on 2 cores)")
    add_training_args(d)
    d.set_defaults(func=_demo)
