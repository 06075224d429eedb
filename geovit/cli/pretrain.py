"""``geovit pretrain`` (ChA-MAEViT channel-aware MAE pretraining) and ``geovit probe``.

    geovit pretrain --channels so2sat [--data DIR] [--model chamaevit_small_patch8] [--config Y.yaml]
    geovit pretrain --dataset chammi --data CHAMMI/ --image-size 224 --model chamaevit_small_patch16_chammi
    geovit pretrain --print-config > run.yaml          # every setting, replayable with --config run.yaml
    geovit probe runs/pretrain/checkpoints/last.ckpt --channels so2sat [--data DIR]

Without ``--data`` a synthetic set in the real on-disk format is written to OUT/synthetic_data
and every line the commands print says so. Outputs in OUT: config.yaml, checkpoints/
(last.ckpt every epoch, step-*.ckpt with --ckpt-every), logs/metrics.csv, tensorboard/,
plots/reconstruction_epochNNN.png, run_summary.json (per-rank weight digests under DDP).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from geovit.cli.options import add_config_flags, bounded, positive_int, print_config_and_exit, resolve_config
from geovit.config import PretrainConfig
from geovit.errors import GeovitError


def say(message: str, synthetic: bool) -> None:
    """Print ``message``, prefixed with the synthetic-data banner when ``synthetic``."""
    from geovit.data.registry import SYNTHETIC_BANNER

    print(f"{SYNTHETIC_BANNER} {message}" if synthetic else message, flush=True)


def make_datamodule(dataset: str, root: Path, *, channels, image_size: int | None, so2sat_version: str = "2",
                    batch_size: int, num_workers: int = 0, seed: int = 0, augment: bool = False,
                    so2sat_reads: str = "block", val_cities: str | None = None):
    """The registered DataModule of ``dataset`` with the pretraining settings.

    Args:
        dataset: registered dataset name.
        root: its folder.
        channels: channel preset, names or ids (None: the whole table).
        image_size: microscopy cell size (None: 224; So2Sat is always 32).
        so2sat_version: So2Sat version.
        batch_size: samples per step.
        num_workers: DataLoader workers.
        seed: order and augmentation seed.
        augment: seeded flips / rotations.
        so2sat_reads: ``block`` or ``sample`` (So2Sat only).
        val_cities: comma list of So2Sat cities held out for validation (So2Sat only).

    Returns:
        The DataModule.
    """
    from geovit.data.registry import get_dataset

    datamodule = get_dataset(dataset).load("datamodule")
    common = dict(batch_size=batch_size, num_workers=num_workers, seed=seed, augment=augment)
    if dataset == "so2sat":
        return datamodule(root, version=so2sat_version, bands=channels, reads=so2sat_reads, val_cities=val_cities,
                          **common)
    return datamodule(root, channels=channels, image_size=image_size or 224, **common)


def _channels_error(err: GeovitError, dataset: str) -> GeovitError:
    return GeovitError(f"--channels: {err} (--dataset {dataset})")


# -- pretrain --------------------------------------------------------------------------------------
def model_kwargs_for(cfg: PretrainConfig, table_size: int, image_size: int, num_classes: int) -> dict:
    """Constructor kwargs of the ChA-MAEViT: the YAML overrides plus what the data decide."""
    kwargs = dict(cfg.model_kwargs)
    kwargs.setdefault("in_chans", table_size)
    kwargs.setdefault("img_size", image_size)
    if cfg.dataset == "chammi":  # the paper's CHAMMI task term: proxy loss, no classifier head
        kwargs.setdefault("num_classes", 0)
        kwargs.setdefault("cross_entropy_lambda", 0.0)
        kwargs.setdefault("proxy_loss_lambda", 0.01)
        kwargs.setdefault("use_proxy_head", True)
        kwargs.setdefault("num_proxies", num_classes)
    else:
        kwargs.setdefault("num_classes", num_classes)
    if cfg.mask_ratio is not None:
        kwargs["decoder"] = {**dict(kwargs.get("decoder") or {}), "dcp_mask_ratio": cfg.mask_ratio}
    if cfg.decoder_type is not None:
        kwargs["decoder"] = {**dict(kwargs.get("decoder") or {}), "decoder_type": cfg.decoder_type}
    if cfg.use_self_image_norm is not None:
        kwargs["use_self_image_norm"] = cfg.use_self_image_norm
    if cfg.channel_sampling is not None:
        kwargs["channel_sampling"] = None if cfg.channel_sampling == "none" else cfg.channel_sampling
    for name in ("channel_sampling_min", "channel_sampling_max"):
        if getattr(cfg, name) is not None:
            kwargs[name] = getattr(cfg, name)
    return kwargs


def _log_every(cfg: PretrainConfig, num_samples: int) -> int:
    """Log every step on short runs, every ~1/20 of the run (at most 50 steps) on long ones."""
    steps = cfg.max_steps or (cfg.max_epochs or 1) * max(1, num_samples // cfg.batch_size)
    return int(min(50, max(1, steps // 20)))


def run_pretraining(cfg: PretrainConfig) -> Path:
    """Pretrain ChA-MAEViT; returns OUT (checkpoints/, logs/, tensorboard/, plots/, run_summary.json)."""
    import lightning as L

    from geovit.channels import TABLES
    from geovit.data.registry import SYNTHETIC_BANNER, resolve_data
    from geovit.models import create_model
    from geovit.tasks.pretraining import PretrainingTask
    from geovit.training import build_trainer, fit, output_dir, resume_path

    ckpt = resume_path(cfg, PretrainingTask.family)
    out = output_dir(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    extra = {"version": cfg.so2sat_version} if cfg.dataset == "so2sat" else {}
    root, synthetic = resolve_data(cfg.dataset, cfg.data, out, num_samples=cfg.synthetic_samples, seed=cfg.seed,
                                   log=lambda m: print(m, flush=True), **extra)
    try:
        dm = make_datamodule(cfg.dataset, root, channels=cfg.channels, image_size=cfg.image_size,
                             so2sat_version=cfg.so2sat_version, batch_size=cfg.batch_size,
                             num_workers=cfg.num_workers, seed=cfg.seed, augment=cfg.augment,
                             so2sat_reads=cfg.so2sat_reads, val_cities=cfg.val_cities)
    except GeovitError as err:
        raise _channels_error(err, cfg.dataset) if "channel" in str(err) else err from None
    dm.setup("fit")
    sel, image_size = dm.selection, dm.image_size
    kwargs = model_kwargs_for(cfg, len(TABLES[sel.table]), image_size, dm.num_classes)
    model = create_model(cfg.model, **kwargs)
    config = model.config
    sel.require_fits(config["in_chans"], cfg.channels)
    del model

    # No validation metric: build_trainer refreshes last.ckpt every epoch (what --resume last needs
    # after a crash) and --ckpt-every N adds step-*.ckpt files.
    trainer = build_trainer(cfg, banner=SYNTHETIC_BANNER if synthetic else None, gradient_clip_val=cfg.grad_clip,
                            limit_val_batches=0, log_every_n_steps=_log_every(cfg, len(dm.train_dataset)))
    steps_per_epoch = dm.batches_per_epoch(trainer.world_size)
    if steps_per_epoch < 1:
        raise GeovitError(f"--batch-size {cfg.batch_size}: larger than the {dm.splits[0]} split "
                          f"({len(dm.train_dataset)} samples over {trainer.world_size} process(es)); lower it")
    total = cfg.max_steps or (cfg.max_epochs or 1) * steps_per_epoch
    task = PretrainingTask(
        model_config=config, model_name=cfg.model, channel_table=sel.table, channel_names=list(sel.names),
        dataset=cfg.dataset, data_root=str(Path(root).resolve()), synthetic=synthetic, lr=cfg.lr, weight_decay=cfg.weight_decay,
        warmup_steps=min(cfg.warmup_steps, max(1, total // 10)), total_steps=int(total), seed=cfg.seed,
        plot_samples=cfg.plot_samples, image_size=image_size, so2sat_version=cfg.so2sat_version,
    )
    say(f"pretraining {cfg.model} on {cfg.dataset} ({len(dm.train_dataset)} samples, channels {','.join(sel.names)}) "
        f"for {total} steps; outputs in {out}", synthetic)
    fit(trainer, task, dm, ckpt)
    if trainer.is_global_zero:
        say(f"done: checkpoints in {out / 'checkpoints'}, logs in {out / 'logs'}, plots in {out / 'plots'}", synthetic)
    return out


def _pretrain(args: argparse.Namespace) -> int:
    cfg = resolve_config(args, PretrainConfig)
    if not print_config_and_exit(args, cfg):
        if cfg.recipe == "auto" and PretrainConfig.cpu_recipe_applies(cfg.to_dict()):
            print(f"no GPU in use: CPU-sized defaults ({cfg.model}, batch {cfg.batch_size}, {cfg.max_steps} steps"
                  f"{'' if cfg.data else f', {cfg.synthetic_samples} synthetic samples'}); "
                  "--recipe paper for the paper's (ChA-MAEViT-S/8, batch 128)", flush=True)
        run_pretraining(cfg)
    return 0


# -- probe -----------------------------------------------------------------------------------------
def run_probe(args: argparse.Namespace) -> dict:
    """``geovit probe``: features of the train / evaluation split per channel set → CSV, PNG, JSON."""
    import numpy as np
    import pandas as pd
    import torch
    from torch.utils.data import DataLoader, Subset

    from geovit._io import atomic_write_text
    from geovit.data.collate import pad_channels_collate
    from geovit.data.registry import get_dataset, resolve_data
    from geovit.tasks.pretraining import load_pretrained
    from geovit.tasks.probe import partial_sets, plot_probe, probe_channel_sets, random_init_like

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, hp = load_pretrained(args.checkpoint, map_location=device)
    dataset = args.dataset or hp.get("dataset", "so2sat")
    table = get_dataset(dataset).channel_table
    if hp.get("channel_table") != table:
        raise GeovitError(f"--dataset {dataset}: uses channel table {table!r}, but {args.checkpoint} was pretrained "
                          f"on table {hp.get('channel_table')!r}")
    if args.random_init:  # the baseline that shows what pretraining adds
        model = random_init_like(model, seed=args.seed)
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent.parent / (
        "probe_random_init" if args.random_init else "probe")
    if args.data is None and hp.get("data_root") and Path(hp["data_root"]).exists():
        root, synthetic = Path(hp["data_root"]), bool(hp.get("synthetic"))
    elif args.data is None and hp.get("data_root") and not hp.get("synthetic"):
        raise GeovitError(f"--data: not given, and the data {args.checkpoint} was pretrained on ({hp['data_root']}) "
                          "is not there; give the dataset folder with --data")
    else:
        extra = {"version": hp.get("so2sat_version", "2")} if dataset == "so2sat" else {}
        root, synthetic = resolve_data(dataset, args.data, out, seed=args.seed, **extra)
    spec = args.channels or list(hp.get("channel_names") or ()) or None
    try:
        dm = make_datamodule(dataset, root, channels=spec, image_size=int(hp.get("image_size") or model.config["img_size"]),
                             so2sat_version=hp.get("so2sat_version", "2"), batch_size=args.batch_size, seed=args.seed)
    except GeovitError as err:
        raise _channels_error(err, dataset) if "channel" in str(err) else err from None
    sel = dm.selection
    sel.require_fits(model.config["in_chans"], args.channels)
    train_split, eval_split = dm.splits[0], dm.splits[2]
    loaders = {}
    for split in (train_split, eval_split):
        ds = dm.build_dataset(split, train=False)
        if args.max_samples is not None and args.max_samples < len(ds):
            idx = np.random.default_rng(args.seed).choice(len(ds), size=args.max_samples, replace=False)
            ds = Subset(ds, sorted(idx.tolist()))
        loaders[split] = DataLoader(ds, batch_size=args.batch_size, shuffle=False, collate_fn=pad_channels_collate)
    sets = partial_sets(sel.ids, table, args.subsets) if dataset != "chammi" else [("full", tuple(sel.ids))]
    rows = probe_channel_sets(model, loaders[train_split], loaders[eval_split], sets, table, k=args.k,
                              seed=args.seed, device=device, log=lambda m: say(m, synthetic))
    chance = rows[-1]["chance"] if rows else None
    df = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "probe.csv", df.to_csv(index=False))
    which = "random-init" if args.random_init else "frozen"
    title = f"{'SYNTHETIC data · ' if synthetic else ''}{which} ChA-MAEViT on {dataset} ({train_split} → {eval_split})"
    plot_probe(df, out / "probe.png", title, chance=chance)
    summary = {"checkpoint": str(args.checkpoint), "random_init": bool(args.random_init), "dataset": dataset,
               "synthetic": synthetic, "chance": chance,
               "train_split": train_split, "eval_split": eval_split, "results": rows}
    atomic_write_text(out / "probe.json", json.dumps(summary, indent=2) + "\n")
    say(f"wrote {out / 'probe.csv'} and {out / 'probe.png'}", synthetic)
    return summary


def _probe(args: argparse.Namespace) -> int:
    run_probe(args)
    return 0


def add_commands(sub) -> None:
    """Register ``geovit pretrain`` and ``geovit probe`` on the subparsers ``sub``."""
    p = sub.add_parser("pretrain", help="ChA-MAEViT channel-aware MAE pretraining (So2Sat, JUMP-CP, CHAMMI)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p, PretrainConfig)
    p.set_defaults(func=_pretrain)

    q = sub.add_parser("probe", help="linear probe and kNN of a pretrained ChA-MAEViT on full and partial channel sets")
    q.add_argument("checkpoint", type=Path, help="a `geovit pretrain` checkpoint (*.ckpt)")
    q.add_argument("--channels", default=None, help="full channel set (default: the pretraining channels)")
    q.add_argument("--subsets", default=None,
                   help="extra partial sets, ';'-separated presets or comma lists (default: presets inside --channels)")
    q.add_argument("--data", default=None, help="dataset folder (default: the one recorded in the checkpoint)")
    q.add_argument("--dataset", choices=("so2sat", "jumpcp", "chammi"), default=None,
                   help="default: the pretraining dataset")
    q.add_argument("--out", type=Path, default=None, help="output folder (default: CKPT/../../probe)")
    q.add_argument("--k", type=positive_int, default=20, help="neighbours of the kNN classifier (cosine)")
    q.add_argument("--batch-size", type=positive_int, default=256)
    q.add_argument("--max-samples", type=positive_int, default=None, help="cap on samples per split (quick looks)")
    q.add_argument("--seed", type=bounded(int, 0), default=0)
    q.add_argument("--random-init", action="store_true",
                   help="probe the checkpoint's architecture with fresh random weights (seeded by --seed): "
                        "the baseline that shows what pretraining adds")
    q.set_defaults(func=_probe)
