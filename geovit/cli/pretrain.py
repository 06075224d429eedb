"""``geovit pretrain`` (ChA-MAEViT channel-aware MAE pretraining) and ``geovit probe``.

    geovit pretrain --channels so2sat [--data DIR] [--model chamaevit_small_patch8] [--config Y.yaml]
    geovit pretrain --dataset chammi --data CHAMMI/ --image-size 224 --model chamaevit_small_patch16_chammi
    geovit probe runs/pretrain/checkpoints/last.ckpt --channels so2sat [--data DIR]

Without ``--data`` a synthetic set in the real on-disk format is written to OUT/synthetic_data
and every line the commands print says so. ``--config`` YAML keys: dataset, data, channels, model,
model_kwargs (constructor overrides, e.g. {depth: 4, decoder: {dcp_mask_ratio: 0.5}}),
so2sat_version, image_size, batch_size, lr, weight_decay, warmup_steps, grad_clip, mask_ratio,
augment, max_steps, max_epochs, synthetic_samples, plot_samples. Outputs in OUT: checkpoints/
(last.ckpt every epoch, step-*.ckpt with --ckpt-every), logs/metrics.csv, tensorboard/,
plots/reconstruction_epochNNN.png, run_summary.json (per-rank weight digests under DDP).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from geovit.channels import TABLES, ChannelSelection, resolve_channels
from geovit.errors import GeovitError

#: dataset -> (channel table, train split, evaluation split)
DATASETS: dict[str, tuple[str, str, str]] = {
    "so2sat": ("so2sat", "train", "test"),
    "jumpcp": ("jumpcp", "train", "test"),
    "chammi": ("chammi", "Train", "Task_one"),
}

PRETRAIN_DEFAULTS: dict[str, Any] = dict(
    dataset="so2sat", data=None, channels=None, model="chamaevit_small_patch8", model_kwargs={},
    so2sat_version="2", image_size=None, batch_size=128, lr=4e-4, weight_decay=5e-5, warmup_steps=500,
    grad_clip=1.0, mask_ratio=None, augment=True, max_steps=None, max_epochs=None, synthetic_samples=None,
    plot_samples=2,
)
CLI_KEYS = ("dataset", "data", "channels", "model", "image_size", "batch_size", "lr", "mask_ratio",
            "max_steps", "max_epochs", "synthetic_samples")


def _banner() -> str:
    from geovit.data.so2sat import SYNTHETIC_BANNER

    return SYNTHETIC_BANNER


def say(message: str, synthetic: bool) -> None:
    print(f"{_banner()} {message}" if synthetic else message, flush=True)


# -- data ------------------------------------------------------------------------------------------
def resolve_data(dataset: str, data: str | None, out: Path, num_samples: int | None, seed: int,
                 so2sat_version: str = "2") -> tuple[Path, bool]:
    """``(root, synthetic)``: ``--data`` as given, or a synthetic set under OUT/synthetic_data (written once)."""
    from geovit._io import atomic_write_text
    from geovit.cli.data import synth_writer

    if data is not None:
        root = Path(data)
        if not root.exists():
            raise GeovitError(f"--data {data}: folder not found")
        return root, False
    root = out / "synthetic_data" / dataset
    marker = root / ".geovit_synthetic.json"
    extra = {"version": so2sat_version} if dataset == "so2sat" else {}
    wanted = {"dataset": dataset, "num_samples": num_samples, "seed": seed, **extra}
    if not marker.is_file() or json.loads(marker.read_text()) != wanted:
        say(f"no --data given: writing a synthetic {dataset}-format set to {root}", True)
        synth_writer(dataset)(root, num_samples=num_samples, seed=seed, **extra)
        atomic_write_text(marker, json.dumps(wanted) + "\n")
    say(f"using synthetic {dataset}-format data in {root} (not the real release)", True)
    return root, True


def select_channels(dataset: str, spec: str | None) -> ChannelSelection:
    import geovit.data.chammi  # noqa: F401  (registers the 'chammi' channel table and its presets)

    table = DATASETS[dataset][0]
    try:
        return resolve_channels(spec or table, table=table)
    except GeovitError as err:
        raise GeovitError(f"{err} (--dataset {dataset} uses channel table {table!r})") from None


class KeepChannels:
    """Sample transform: keep the channels whose ids are in ``ids`` (in the sample's order)."""

    def __init__(self, ids):
        self.ids = set(int(i) for i in ids)

    def __call__(self, sample: dict) -> dict:
        keep = [i for i, c in enumerate(sample["channels"].tolist()) if c in self.ids]
        return {**sample, "image": sample["image"][keep], "channels": sample["channels"][keep]}


def native_image_size(dataset: str, requested: int | None) -> int:
    if requested is not None:
        if requested <= 0:
            raise GeovitError(f"--image-size {requested}: expected a positive number of pixels")
        if dataset == "so2sat" and requested != 32:
            raise GeovitError(f"--image-size {requested}: So2Sat patches are 32×32")
        return int(requested)
    return 32 if dataset == "so2sat" else 224


def open_dataset(dataset: str, root: Path, split: str, sel: ChannelSelection, image_size: int, *,
                 so2sat_version: str = "2", augment: bool = False, seed: int = 0):
    """A normalised dataset of ``split`` with the channels of ``sel`` (augmented, seeded, if asked)."""
    from geovit.data.transforms import Compose, RandomFlipRotate, Resize

    if dataset == "so2sat":
        from geovit.data.so2sat import So2Sat, normalization

        ds = So2Sat(root, split=split, version=so2sat_version, bands=list(sel.names), transform=normalization(so2sat_version))
    elif dataset == "jumpcp":
        from geovit.data.jumpcp import JUMPCP, normalization

        ds = JUMPCP(root, split=split, channels=list(sel.ids), transform=Compose([normalization(), Resize(image_size)]))
    elif dataset == "chammi":
        from geovit.data.chammi import CHAMMI, CHUNKS, chunk_channel_ids

        chunks = [c for c in CHUNKS if set(chunk_channel_ids(c)) & set(sel.ids)]
        ds = CHAMMI(root, split=split, chunks=chunks, image_size=image_size, transform=KeepChannels(sel.ids))
    else:
        raise GeovitError(f"--dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    if augment:
        from geovit.tasks.pretraining import SeededAugment

        ds = SeededAugment(ds, lambda g: RandomFlipRotate(generator=g), seed=seed)
    return ds


def num_classes_of(ds) -> int:
    inner = getattr(ds, "dataset", ds)
    if hasattr(inner, "num_classes"):
        return int(inner.num_classes)
    return len(getattr(inner, "classes"))


# -- pretrain --------------------------------------------------------------------------------------
def model_kwargs_for(cfg: dict, dataset: str, sel: ChannelSelection, image_size: int, num_classes: int) -> dict:
    kwargs = dict(cfg["model_kwargs"] or {})
    kwargs.setdefault("in_chans", len(TABLES[sel.table]))
    kwargs.setdefault("img_size", image_size)
    if dataset == "chammi":  # the paper's CHAMMI task term: proxy loss, no classifier head
        kwargs.setdefault("num_classes", 0)
        kwargs.setdefault("cross_entropy_lambda", 0.0)
        kwargs.setdefault("proxy_loss_lambda", 0.01)
        kwargs.setdefault("use_proxy_head", True)
        kwargs.setdefault("num_proxies", num_classes)
    else:
        kwargs.setdefault("num_classes", num_classes)
    if cfg["mask_ratio"] is not None:
        r = float(cfg["mask_ratio"])
        if not 0.0 < r < 1.0:
            raise GeovitError(f"--mask-ratio {cfg['mask_ratio']}: expected a fraction in (0, 1)")
        kwargs["decoder"] = {**dict(kwargs.get("decoder") or {}), "dcp_mask_ratio": r}
    return kwargs


def _log_every(cfg: dict, num_samples: int) -> int:
    """Log every step on short runs, every ~1/20 of the run (at most 50 steps) on long ones."""
    steps = cfg["max_steps"] or (cfg["max_epochs"] or 1) * max(1, num_samples // int(cfg["batch_size"]))
    return int(min(50, max(1, steps // 20)))


def run_pretraining(args: argparse.Namespace, cfg: dict) -> Path:
    """Pretrain ChA-MAEViT; returns OUT (checkpoints/, logs/, tensorboard/, plots/, run_summary.json)."""
    import lightning as L

    from geovit.models import create_model
    from geovit.tasks.pretraining import ChaMAEPretraining
    from geovit.training import build_trainer, output_dir, read_lightning_checkpoint, resume_path

    dataset = cfg["dataset"]
    if dataset not in DATASETS:
        raise GeovitError(f"--dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    out = output_dir(args, "pretrain")
    sel = select_channels(dataset, cfg["channels"])
    image_size = native_image_size(dataset, cfg["image_size"])
    ckpt = resume_path(args, out)
    if ckpt is not None:
        read_lightning_checkpoint(ckpt, "chamaevit")  # clean error for a foreign family / file
    L.seed_everything(args.seed, workers=True, verbose=False)
    root, synthetic = resolve_data(dataset, cfg["data"], out, cfg["synthetic_samples"], args.seed,
                                   so2sat_version=cfg["so2sat_version"])
    train_split = DATASETS[dataset][1]
    ds = open_dataset(dataset, root, train_split, sel, image_size, so2sat_version=cfg["so2sat_version"],
                      augment=bool(cfg["augment"]), seed=args.seed)
    kwargs = model_kwargs_for(cfg, dataset, sel, image_size, num_classes_of(ds))
    model = create_model(cfg["model"], **kwargs)
    config = model.config
    sel.require_fits(config["in_chans"], cfg["channels"])
    del model

    # No validation metric: build_trainer refreshes last.ckpt every epoch (what --resume last needs
    # after a crash) and --ckpt-every N adds step-*.ckpt files.
    trainer = build_trainer(args, out, banner=_banner() if synthetic else None,
                            max_steps=cfg["max_steps"], max_epochs=cfg["max_epochs"], gradient_clip_val=cfg["grad_clip"],
                            use_distributed_sampler=False, log_every_n_steps=_log_every(cfg, len(ds)))
    per_step = int(cfg["batch_size"]) * trainer.world_size
    steps_per_epoch = len(ds) // per_step
    if steps_per_epoch < 1:
        raise GeovitError(f"--batch-size {cfg['batch_size']}: larger than the {train_split} split "
                          f"({len(ds)} samples over {trainer.world_size} process(es)); lower it")
    total = cfg["max_steps"] or (cfg["max_epochs"] or 1) * steps_per_epoch  # merged_config holds the CLI flags
    module = ChaMAEPretraining(
        model_config=config, model_name=cfg["model"], channel_table=sel.table, channel_names=list(sel.names),
        dataset=dataset, data_root=str(root), synthetic=synthetic, lr=float(cfg["lr"]),
        weight_decay=float(cfg["weight_decay"]), warmup_steps=min(int(cfg["warmup_steps"]), max(1, total // 10)),
        total_steps=int(total), seed=args.seed, plot_samples=int(cfg["plot_samples"]), image_size=image_size,
        so2sat_version=cfg["so2sat_version"],
    )
    module.attach_data(ds, batch_size=int(cfg["batch_size"]), num_workers=args.num_workers)
    say(f"pretraining {cfg['model']} on {dataset} ({len(ds)} samples, channels {','.join(sel.names)}) "
        f"for {total} steps; outputs in {out}", synthetic)
    trainer.fit(module, ckpt_path=ckpt)
    if trainer.is_global_zero:
        say(f"done: checkpoints in {out / 'checkpoints'}, logs in {out / 'logs'}, plots in {out / 'plots'}", synthetic)
    return out


def _pretrain(args: argparse.Namespace) -> int:
    from geovit.training import merged_config

    cfg = merged_config(args, PRETRAIN_DEFAULTS, cli_keys=CLI_KEYS)
    run_pretraining(args, cfg)
    return 0


# -- probe -----------------------------------------------------------------------------------------
def _probe(args: argparse.Namespace) -> int:
    from geovit.tasks.probe import run_probe_command

    run_probe_command(args)
    return 0


def add_commands(sub) -> None:
    from geovit.training import add_training_args

    p = sub.add_parser("pretrain", help="ChA-MAEViT channel-aware MAE pretraining (So2Sat, JUMP-CP, CHAMMI)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(DATASETS), default=None, help="data set format (default so2sat)")
    p.add_argument("--data", default=None, help="dataset folder; omitted: a synthetic set (said on every line)")
    p.add_argument("--channels", default=None,
                   help="preset (so2sat, sentinel1, sentinel2, jumpcp, chammi, ...) or comma list of channel names")
    p.add_argument("--model", default=None, help="registered ChA-MAEViT variant (default chamaevit_small_patch8)")
    p.add_argument("--image-size", dest="image_size", type=int, default=None,
                   help="resize microscopy cells to this size (So2Sat: 32, JUMP-CP/CHAMMI default 224)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 4e-4)")
    p.add_argument("--mask-ratio", dest="mask_ratio", type=float, default=None,
                   help="DCP mask ratio in (0, 1) (default: the model recipe's)")
    p.add_argument("--synthetic-samples", dest="synthetic_samples", type=int, default=None,
                   help="size of the synthetic set written when --data is omitted")
    add_training_args(p)
    p.set_defaults(func=_pretrain)

    q = sub.add_parser("probe", help="linear probe and kNN of a pretrained ChA-MAEViT on full and partial channel sets")
    q.add_argument("checkpoint", type=Path, help="a `geovit pretrain` checkpoint (*.ckpt)")
    q.add_argument("--channels", default=None, help="full channel set (default: the pretraining channels)")
    q.add_argument("--subsets", default=None,
                   help="extra partial sets, ';'-separated presets or comma lists (default: presets inside --channels)")
    q.add_argument("--data", default=None, help="dataset folder (default: the one recorded in the checkpoint)")
    q.add_argument("--dataset", choices=sorted(DATASETS), default=None, help="default: the pretraining dataset")
    q.add_argument("--out", type=Path, default=None, help="output folder (default: CKPT/../../probe)")
    q.add_argument("--k", type=int, default=20, help="neighbours of the kNN classifier (cosine)")
    q.add_argument("--batch-size", type=int, default=256)
    q.add_argument("--max-samples", type=int, default=None, help="cap on samples per split (quick looks)")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_probe)
