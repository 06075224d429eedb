"""Lightning plumbing shared by every training command (train, pretrain, change, pdes).

* :func:`add_training_args` adds the flags every training command shares:
  ``--config --out --max-steps --max-epochs --batch-size --devices --accelerator --strategy
  --num-nodes --seed --resume --num-workers --precision --ckpt-every``.
* :func:`merged_config` layers defaults < YAML file (``--config``) < explicit CLI flags.
* :func:`build_trainer` makes a ``lightning.Trainer`` with a progress bar, CSV and TensorBoard
  logs under ``--out``, and checkpoints written atomically (temp file + rename) every
  ``--ckpt-every`` steps plus ``last.ckpt``.
* :func:`resume_path` turns ``--resume`` (a path, or ``last``) into a checkpoint path.
* :func:`read_lightning_checkpoint` reads a geovit ``*.ckpt`` safely (weights_only) and checks
  it belongs to the expected family.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import yaml

from geovit._io import atomic_path
from geovit.errors import CheckpointError, GeovitError


def add_training_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("training (shared by every training command)")
    g.add_argument("--config", type=Path, help="YAML file of settings; CLI flags override it")
    g.add_argument("--out", type=Path, default=None, help="output folder: checkpoints (*.ckpt), logs, plots")
    g.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    g.add_argument("--max-epochs", type=int, default=None, help="stop after N epochs")
    g.add_argument("--batch-size", type=int, default=None, help="samples per device and step")
    g.add_argument("--devices", default="auto", help="number of devices, or 'auto'")
    g.add_argument("--accelerator", default="auto", help="cpu, gpu, or auto (cuda when present)")
    g.add_argument("--strategy", default="auto", help="auto, ddp, ddp_spawn, ...")
    g.add_argument("--num-nodes", type=int, default=1)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--resume", default=None, help="checkpoint to resume from, or 'last' (OUT/checkpoints/last.ckpt)")
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    g.add_argument("--precision", default="32-true", help="Lightning precision, e.g. 32-true, bf16-mixed")
    g.add_argument("--ckpt-every", type=int, default=None, help="also checkpoint every N steps")


def load_yaml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise GeovitError(f"--config {path}: file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise GeovitError(f"--config {path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise GeovitError(f"--config {path}: expected a mapping of settings at top level, got {type(data).__name__}")
    return data


def merged_config(args: argparse.Namespace, defaults: Mapping[str, Any], cli_keys: Iterable[str] = ()) -> dict[str, Any]:
    """defaults < ``--config`` YAML < CLI flags that were given (not None).

    Unknown YAML keys are an error (a typo should not be silently ignored).
    ``cli_keys`` lists the argparse dests that map 1:1 onto config keys.
    """
    cfg = dict(defaults)
    user = load_yaml(getattr(args, "config", None))
    unknown = sorted(set(user) - set(cfg))
    if unknown:
        raise GeovitError(f"--config {args.config}: unknown keys {unknown}; expected some of {sorted(cfg)}")
    cfg.update(user)
    for key in cli_keys:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    return cfg


def output_dir(args: argparse.Namespace, command: str) -> Path:
    out = args.out if args.out is not None else Path("runs") / command
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _atomic_checkpoint_io():
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        """Write each checkpoint to a temp file in the same folder, then rename it into place."""

        def save_checkpoint(self, checkpoint, path, storage_options=None):
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)

    return AtomicCheckpointIO()


def _progress_bar(banner: str | None):
    from lightning.pytorch.callbacks import TQDMProgressBar

    class BannerProgressBar(TQDMProgressBar):
        """Lightning's tqdm bar whose descriptions start with ``banner`` (e.g. "[SYNTHETIC DATA]")."""

        @property
        def train_description(self) -> str:
            return f"{banner} Training" if banner else "Training"

        @property
        def validation_description(self) -> str:
            return f"{banner} Validation" if banner else "Validation"

        def on_train_epoch_start(self, trainer, pl_module):
            super().on_train_epoch_start(trainer, pl_module)  # sets "Epoch N"; keep the banner
            if banner:
                self.train_progress_bar.set_description(f"{banner} Epoch {trainer.current_epoch}")

    interactive = sys.stderr.isatty() and os.environ.get("CI") is None
    return BannerProgressBar(refresh_rate=1 if interactive else 25)  # logs/CI: fewer redraws


def _final_checkpoint(ckpt_dir: Path):
    from lightning.pytorch.callbacks import Callback

    class FinalCheckpoint(Callback):
        """Write ``last.ckpt`` when fitting ends, so it always holds the final weights.

        (``ModelCheckpoint`` only saves after validation; a run stopped by ``max_steps`` between
        two validations would otherwise leave a stale ``last.ckpt``.)
        """

        def __init__(self):
            self.saved_step = -1

        def on_fit_end(self, trainer, pl_module):
            if trainer.global_step != self.saved_step and not trainer.sanity_checking:
                trainer.save_checkpoint(ckpt_dir / "last.ckpt", weights_only=False)  # full state: resumable
                self.saved_step = trainer.global_step

    return FinalCheckpoint()


def build_trainer(
    args: argparse.Namespace,
    out: Path,
    *,
    banner: str | None = None,
    monitor: str | None = None,
    mode: str = "max",
    callbacks: Iterable = (),
    max_steps: int | None = None,
    max_epochs: int | None = None,
    **trainer_kwargs,
):
    """A Trainer with progress bar, CSV + TensorBoard logs and atomic checkpoints under ``out``.

    ``banner`` prefixes the progress-bar descriptions (every line then says e.g. that the data are
    synthetic). ``monitor``/``mode`` choose the ``best-*.ckpt`` kept besides ``last.ckpt``.
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    ckpt_dir = out / "checkpoints"
    cbs = [_progress_bar(banner)]
    if monitor:
        cbs.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best-{epoch}-{step}", monitor=monitor, mode=mode, save_top_k=1))
    # last.ckpt after every validation / epoch (ModelCheckpoint(save_last=True, monitor=...) only
    # rewrites it when the monitored metric improves, so --resume last would go back in time).
    cbs.append(ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                               enable_version_counter=False))
    if args.ckpt_every:
        cbs.append(ModelCheckpoint(
            dirpath=ckpt_dir, filename="step-{step}", every_n_train_steps=args.ckpt_every, save_top_k=-1,
        ))
    cbs.append(_final_checkpoint(ckpt_dir))
    cbs.extend(callbacks)
    max_steps = args.max_steps if args.max_steps is not None else max_steps
    max_epochs = args.max_epochs if args.max_epochs is not None else max_epochs
    # A resumed run logs to logs/resume_N/ so the metrics.csv of the interrupted run is kept.
    version = ""
    if args.resume:
        n = 1
        while (out / "logs" / f"resume_{n}").exists():
            n += 1
        version = f"resume_{n}"
    loggers = [CSVLogger(out, name="logs", version=version), TensorBoardLogger(out, name="tensorboard", version=version)]
    devices = int(args.devices) if str(args.devices).isdigit() else args.devices  # "2", "auto", "0,1"
    return L.Trainer(
        default_root_dir=out,
        accelerator=args.accelerator,
        devices=devices,
        strategy=args.strategy,
        num_nodes=args.num_nodes,
        precision=args.precision,
        max_steps=-1 if max_steps is None else max_steps,
        max_epochs=max_epochs if max_epochs is not None else (None if max_steps else 1),
        logger=loggers,
        callbacks=cbs,
        plugins=[_atomic_checkpoint_io()],
        enable_model_summary=False,
        **trainer_kwargs,
    )


def resume_path(args: argparse.Namespace, out: Path) -> str | None:
    if not args.resume:
        return None
    path = out / "checkpoints" / "last.ckpt" if args.resume == "last" else Path(args.resume)
    if not path.is_file():
        raise GeovitError(f"--resume {args.resume}: checkpoint {path} not found")
    return str(path)


def read_lightning_checkpoint(path: str | os.PathLike, family: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Return (hyper_parameters, state_dict) of a geovit Lightning checkpoint of ``family``.

    geovit's LightningModules store ``family`` in their hyper-parameters; a checkpoint of another
    family (or a foreign file) raises :class:`CheckpointError` naming what was expected.
    """
    from geovit.hub import read_checkpoint

    ckpt = read_checkpoint(path)
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"checkpoint {path}: not a geovit training checkpoint (no hyper_parameters/state_dict); "
                              f"for official weights use geovit.hub.load_official({family!r}, ...)")
    got = hp.get("family")
    if got != family:
        raise CheckpointError(f"checkpoint {path}: holds a {got!r} model, but this command expects a {family!r} checkpoint")
    return hp, ckpt["state_dict"]
