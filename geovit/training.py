"""Lightning plumbing shared by every training command (train, pretrain, change train, pdes train).

* :func:`output_dir` makes the run folder and writes the resolved ``config.yaml`` into it.
* :func:`build_trainer` makes a ``lightning.Trainer`` from a :class:`geovit.config.TrainerConfig`:
  a progress bar on a terminal, plain periodic lines (step, loss, rate, ETA) when the output is
  redirected, the expected run time after the first steps, CSV and TensorBoard logs under ``out``, checkpoints written atomically (temp file
  + rename) every ``ckpt_every`` steps plus ``last.ckpt`` every epoch and at the end, and
  ``best-*.ckpt`` on the task's monitored metric.
* ``compile`` (``--compile``): :func:`compile_task` runs ``torch.compile`` on the modules the
  task's training step calls (:meth:`geovit.tasks.base.BaseTask.compile_targets`), in place, so
  checkpoint keys stay the same and a compiled run's checkpoint loads into an uncompiled model.
* :func:`resume_path` turns ``resume`` (a path, or ``last``) into a checkpoint path after checking,
  with a ``weights_only`` read, that it is a checkpoint of the expected family.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Iterable

import torch

from geovit._io import atomic_path, atomic_write_text
from geovit.config import TrainerConfig
from geovit.errors import GeovitError
from geovit.progress import EVERY, format_duration, interactive
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

    return BannerProgressBar()


def _line_progress(banner: str | None, *, periodic: bool, every: float = EVERY, stream=None):
    from lightning.pytorch.callbacks import Callback

    class LineProgress(Callback):
        """Plain progress lines for logs: the expected run time after the first steps, then (with
        ``periodic``) one line every ``every`` seconds — step, epoch, loss, rate, ETA — and the
        validation metrics of each epoch. No carriage returns, no escape codes."""

        def __init__(self):
            self.prefix = f"{banner} " if banner else ""
            self.stream = stream if stream is not None else sys.stdout

        def _print(self, text: str) -> None:
            print(self.prefix + text, file=self.stream, flush=True)

        def _total(self, trainer) -> int | None:
            total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
            try:
                est = int(trainer.estimated_stepping_batches)
                total = min(total, est) if total else est
            except Exception:  # infinite or unknown length
                pass
            return total

        def on_train_start(self, trainer, pl_module):
            self.t0, self.last, self.step0 = time.perf_counter(), time.perf_counter(), trainer.global_step
            self.total, self.announced = self._total(trainer), False

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if not trainer.is_global_zero:
                return
            now, done = time.perf_counter(), trainer.global_step - self.step0
            rate = done / max(now - self.t0, 1e-9)
            left = (self.total - trainer.global_step) if self.total else None
            if not self.announced and done >= 3 and left:
                self.announced = True
                self._print(f"{1 / rate:.2f} s/step over the first {done} steps: about "
                            f"{format_duration(left / rate)} for the {left} steps left")
            if periodic and (now - self.last >= every or (self.total and trainer.global_step >= self.total)):
                self.last = now
                loss = trainer.callback_metrics.get("train_loss_step", trainer.callback_metrics.get("train_loss"))
                text = f"step {trainer.global_step}" + (f"/{self.total}" if self.total else "")
                text += f" · epoch {trainer.current_epoch}"
                if loss is not None:
                    text += f" · train_loss {float(loss):.4g}"
                text += f" · {rate:.2f} steps/s"
                if left:
                    text += f" · ETA {format_duration(left / max(rate, 1e-9))}"
                self._print(text)

        def on_validation_end(self, trainer, pl_module):
            if periodic and trainer.is_global_zero and not trainer.sanity_checking:
                shown = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
                if shown:
                    self._print(f"epoch {trainer.current_epoch} validation: "
                                + ", ".join(f"{k} {v:.4g}" for k, v in sorted(shown.items())))

    return LineProgress()


def quiet_lightning() -> None:
    """Hide Lightning's start-up chatter (device summary, advertisements) and warnings that do
    not apply to geovit's runs (its loaders resume exactly; small CPU runs log less often than
    50 steps; single-process loaders are the CPU default), so a log shows what matters."""
    import logging
    import warnings

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
                    r".*your dataloader is not resumable.*",
                    r".*smaller than the logging interval.*",
                    r".*does not have many workers.*",
                    r".*Checkpoint directory .* exists and is not empty.*",
                    r".*You passed in a `val_dataloader` but have no `validation_step`.*"):
        warnings.filterwarnings("ignore", message=message)


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


def compile_task(task) -> list[str]:
    """``torch.compile`` the modules of ``task`` its training step calls, in place.

    The targets come from ``task.compile_targets()`` (default: the task's ``model``); each is
    compiled with :meth:`torch.nn.Module.compile`, which keeps parameter names (no ``_orig_mod.``).

    Returns:
        The compiled modules' names (for the log).

    Raises:
        GeovitError: ``torch.compile`` is not available here (no torch 2, no C++ compiler on the CPU).
    """
    from geovit.config import compile_unavailable

    device = next(iter(task.parameters()), torch.empty(0)).device
    problem = compile_unavailable("cpu" if device.type == "cpu" else "gpu")
    if problem:
        raise GeovitError(f"--compile: {problem}")
    targets = task.compile_targets() if hasattr(task, "compile_targets") else {"model": task.model}
    for module in targets.values():
        module.compile()
    return list(targets)


def _compile_callback():
    from lightning.pytorch.callbacks import Callback

    class CompileModel(Callback):
        """Compile the task's modules when fitting starts (after a resumed checkpoint is loaded)."""

        def on_fit_start(self, trainer, pl_module):
            names = compile_task(pl_module)
            if trainer.is_global_zero:
                shown = names if len(names) <= 4 else names[:3] + [f"... ({len(names)} modules)"]
                print(f"torch.compile: {', '.join(shown)} (the first steps compile and are slower)", flush=True)

    return CompileModel()


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

    quiet_lightning()
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"
    bar = interactive(sys.stdout)  # a redrawn bar on a terminal, plain lines in a log
    cbs = [_progress_bar(banner)] if bar else []
    cbs.append(_line_progress(banner, periodic=not bar))
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
    if getattr(cfg, "compile", False):
        cbs.append(_compile_callback())
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
        enable_progress_bar=bar,
        **trainer_kwargs,
    )


def newest_checkpoint(ckpt_dir: str | os.PathLike) -> Path | None:
    """The checkpoint of ``ckpt_dir`` a crashed run should continue from, or None.

    That is the one written last among ``last.ckpt`` and the ``step-*.ckpt`` files (temp files
    of an interrupted write start with a dot and are never candidates); on a tie ``last.ckpt``,
    written at the end of an epoch, wins. The write time, not the step in the name, decides, so
    step checkpoints an earlier run left in a reused ``--out`` never win over the crashed run's.
    """
    ckpt_dir = Path(ckpt_dir)
    candidates = [p for p in [ckpt_dir / "last.ckpt", *ckpt_dir.glob("step-*.ckpt")] if p.is_file()]

    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt")) if candidates else None


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


def best_checkpoint(trainer, monitor: str | None, *, banner: str | None = None) -> Path:
    """The checkpoint a finished run recommends, printed with how it was chosen.

    ``best-*.ckpt`` when a validation ran and chose one on ``monitor``; otherwise the run's final
    ``last.ckpt``, and the message says that no validation chose it (a run shorter than one
    epoch never validates), so an unvalidated checkpoint is never called "best".
    """
    out = Path(trainer.default_root_dir)
    prefix = f"{banner} " if banner else ""
    say = print if trainer.is_global_zero else (lambda *a, **k: None)
    last = out / "checkpoints" / "last.ckpt"
    callback = next((c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None) == monitor), None) \
        if monitor else None
    best = getattr(callback, "best_model_path", "") if callback is not None else ""
    if best:
        score = callback.best_model_score
        shown = "" if score is None else f" = {float(score):.4f}"
        say(f"{prefix}best checkpoint (chosen on {monitor}{shown}): {best}")
        return Path(best)
    if monitor:
        say(f"{prefix}no validation ran (the run stopped at step {trainer.global_step}, epoch {trainer.current_epoch}, "
              f"before an epoch ended), so nothing was chosen on {monitor}; final weights: {last}")
    else:
        say(f"{prefix}final checkpoint: {last}")
    return last


def fit(trainer, task, datamodule, ckpt_path: str | None) -> None:
    """``trainer.fit`` that reads a resumed checkpoint with ``weights_only=True``.

    ``ckpt_path`` comes from :func:`resume_path` (already checked); asking Lightning for a
    ``weights_only`` read as well means ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` in the environment
    cannot turn it into a full unpickling.
    """
    trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
