"""Lightning plumbing shared by every training command (train, pretrain, change train, pdes train).

* :func:`output_dir` makes the run folder and writes the resolved ``config.yaml`` into it.
* :func:`build_trainer` makes a ``lightning.Trainer`` from a :class:`geovit.config.TrainerConfig`:
  progress bar, CSV and TensorBoard logs under ``out``, checkpoints written atomically (temp file
  + rename) every ``ckpt_every`` steps plus ``last.ckpt`` every epoch and at the end, and
  ``best-*.ckpt`` on the task's monitored metric.
* :func:`resume_path` turns ``resume`` (a path, or ``last``) into a checkpoint path after checking,
  with a ``weights_only`` read, that it is a checkpoint of the expected family.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable

import torch

from geovit._io import atomic_path, atomic_write_text
from geovit.config import TrainerConfig
from geovit.errors import GeovitError
from geovit.tasks.base import read_task_checkpoint


def output_dir(cfg: TrainerConfig) -> Path:
    """Create ``cfg.out`` and write the resolved configuration to ``out/config.yaml`` (atomically)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", cfg.to_yaml())
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
    cfg: TrainerConfig,
    *,
    banner: str | None = None,
    monitor: str | None = None,
    mode: str = "max",
    callbacks: Iterable = (),
    max_steps: int | None = None,
    max_epochs: int | None = None,
    **trainer_kwargs,
):
    """A Trainer with progress bar, CSV + TensorBoard logs and atomic checkpoints under ``cfg.out``.

    Args:
        cfg: the run's trainer settings.
        banner: prefixes the progress-bar descriptions (e.g. that the data are synthetic).
        monitor: metric of the ``best-*.ckpt`` kept besides ``last.ckpt`` (``mode`` max or min).
        callbacks: extra callbacks.
        max_steps: used when ``cfg.max_steps`` is None.
        max_epochs: used when ``cfg.max_epochs`` is None.
        **trainer_kwargs: passed to ``lightning.Trainer``.
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"
    cbs = [_progress_bar(banner)]
    if monitor:
        cbs.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best-{epoch}-{step}", monitor=monitor, mode=mode, save_top_k=1))
    # last.ckpt after every validation / epoch (ModelCheckpoint(save_last=True, monitor=...) only
    # rewrites it when the monitored metric improves, so --resume last would go back in time).
    cbs.append(ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                               enable_version_counter=False))
    if cfg.ckpt_every:
        cbs.append(ModelCheckpoint(
            dirpath=ckpt_dir, filename="step-{step}", every_n_train_steps=cfg.ckpt_every, save_top_k=-1,
        ))
    cbs.append(_final_checkpoint(ckpt_dir))
    cbs.extend(callbacks)
    max_steps = cfg.max_steps if cfg.max_steps is not None else max_steps
    max_epochs = cfg.max_epochs if cfg.max_epochs is not None else max_epochs
    # A resumed run logs to logs/resume_N/ so the metrics.csv of the interrupted run is kept.
    version = ""
    if cfg.resume:
        n = 1
        while (out / "logs" / f"resume_{n}").exists():
            n += 1
        version = f"resume_{n}"
    loggers = [CSVLogger(out, name="logs", version=version), TensorBoardLogger(out, name="tensorboard", version=version)]
    trainer_kwargs.setdefault("use_distributed_sampler", False)  # geovit's data modules shard themselves
    return L.Trainer(
        default_root_dir=out,
        accelerator=cfg.accelerator,
        devices=cfg.trainer_devices,
        strategy=cfg.strategy,
        num_nodes=cfg.num_nodes,
        precision=cfg.precision,
        max_steps=-1 if max_steps is None else max_steps,
        max_epochs=max_epochs if max_epochs is not None else (None if max_steps else 1),
        logger=loggers,
        callbacks=cbs,
        plugins=[_atomic_checkpoint_io()],
        enable_model_summary=False,
        **trainer_kwargs,
    )


def newest_checkpoint(ckpt_dir: str | os.PathLike) -> Path | None:
    """The checkpoint of ``ckpt_dir`` a crashed run should continue from, or None.

    That is the one with the highest ``global_step`` among ``last.ckpt`` and the ``step-*.ckpt``
    files (temp files of an interrupted write start with a dot and are never candidates); on a
    tie ``last.ckpt``, written at the end of an epoch, wins. Each candidate's step is read with a
    memory-mapped ``weights_only`` load, so no weights are read.
    """
    ckpt_dir = Path(ckpt_dir)
    candidates = [p for p in [ckpt_dir / "last.ckpt", *ckpt_dir.glob("step-*.ckpt")] if p.is_file()]

    def key(path: Path) -> tuple[int, int, int]:
        try:
            step = int(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step", -1))
        except Exception:  # unreadable: the full read in read_task_checkpoint names the problem
            step = -1
        return step, path.name == "last.ckpt", path.stat().st_mtime_ns

    return max(candidates, key=key) if candidates else None


def resume_path(cfg: TrainerConfig, family: str) -> str | None:
    """The checkpoint ``cfg.resume`` names, or None.

    ``last`` means the newest checkpoint the run in ``cfg.out`` wrote (:func:`newest_checkpoint`:
    a step checkpoint of ``--ckpt-every`` or the epoch-end ``last.ckpt``), so a run killed inside
    its first epoch continues from its last step checkpoint. The file is read once with
    ``weights_only=True`` and must be a geovit checkpoint of ``family``, so a wrong or crafted
    file is refused before training starts.

    Raises:
        GeovitError: no checkpoint there.
        CheckpointError: it is not a geovit checkpoint of ``family`` (or not a checkpoint at all).
    """
    if not cfg.resume:
        return None
    if cfg.resume == "last":
        ckpt_dir = Path(cfg.out).resolve() / "checkpoints"
        path = newest_checkpoint(ckpt_dir)
        if path is None:
            raise GeovitError(f"resume='last': {ckpt_dir} holds no last.ckpt or step-*.ckpt to continue from "
                              f"(is --out the folder of the interrupted run?)")
    else:
        path = Path(cfg.resume).expanduser()
        if path.is_dir():
            raise GeovitError(f"resume={cfg.resume!r}: is a folder; give a *.ckpt file, or 'last' with --out set to the run folder")
        if not path.is_file():
            raise GeovitError(f"resume={cfg.resume!r}: checkpoint {path} not found")
    read_task_checkpoint(path, family)
    return str(path)


def fit(trainer, task, datamodule, ckpt_path: str | None) -> None:
    """``trainer.fit`` that reads a resumed checkpoint with ``weights_only=True``.

    ``ckpt_path`` comes from :func:`resume_path` (already checked); asking Lightning for a
    ``weights_only`` read as well means ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` in the environment
    cannot turn it into a full unpickling.
    """
    trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
