"""The task base class every geovit training task builds on (torchgeo's ``BaseTask`` pattern).

A task is a :class:`lightning.LightningModule` whose ``__init__`` takes keyword hyper-parameters
(saved in every checkpoint, together with the task's model ``family``) and then calls three hooks:

* :meth:`BaseTask.configure_models` builds ``self.model``;
* :meth:`BaseTask.configure_losses` sets ``self.criterion`` (optional);
* :meth:`BaseTask.configure_metrics` sets torchmetrics collections (synchronised under DDP).

Optimisation goes through one parameter-group/optimiser builder (:func:`build_optimizer`) and one
schedule builder (:func:`build_scheduler`); metrics are logged as ``train_loss``, ``val_loss``,
``val_<metric>`` and ``test_<metric>``. :meth:`BaseTask.load_from_checkpoint` is the one way a
geovit ``*.ckpt`` is read back: a ``weights_only=True`` read, a family check, strict weights.

Exact resume: before every training step the global RNGs (torch on every device, numpy,
``random``) are re-seeded from ``(seed, global step, rank)`` (:func:`seed_step`), so dropout,
drop-path, channel sampling and masking depend on the step alone, not on what else drew from
the RNGs before (loader start-up, validation, a resume). The task also records how far into the current epoch training has got (``(epoch, batches)``,
saved in checkpoints as ``geovit_data_position``); after a resume it is offered to the data
module as :attr:`BaseTask.resume_position`, so a mid-epoch checkpoint resumes at the next batch.
"""
from __future__ import annotations

import inspect
import math
import os
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import lightning as L
import torch

from geovit.errors import CheckpointError, GeovitError

#: key under which tasks store their data position in a checkpoint
POSITION_KEY = "geovit_data_position"


def seed_step(seed: int, step: int, rank: int = 0) -> None:
    """Re-seed torch (all devices), numpy's and Python's global RNGs for one optimisation step."""
    import random

    import numpy as np

    from geovit.data.samplers import mix_seed

    s = mix_seed(seed, step, rank)
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)


# --------------------------------------------------------------------------------- optimisers
def build_optimizer(module: torch.nn.Module, *, name: str = "adamw", lr: float, weight_decay: float = 0.0,
                    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                    decay_norms_and_biases: bool = False) -> torch.optim.Optimizer:
    """The optimiser of a recipe.

    Args:
        module: whose trainable parameters are optimised.
        name: ``"adamw"`` (decoupled weight decay) or ``"adam"`` (L2 weight decay, as ChangeViT).
        lr: learning rate.
        weight_decay: decay strength.
        betas: Adam betas.
        eps: Adam epsilon.
        decay_norms_and_biases: False: biases and 1-D parameters get no decay
            (``timm.optim.param_groups_weight_decay``, the DINO / MAE rule); True: one group, all decayed.

    Raises:
        GeovitError: an unknown ``name``.
    """
    if decay_norms_and_biases:
        params: Any = [p for p in module.parameters() if p.requires_grad]
    else:
        from timm.optim import param_groups_weight_decay

        params = param_groups_weight_decay(module, weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    raise GeovitError(f"optimizer {name!r}: expected 'adamw' or 'adam'")


def warmup_cosine_factor(step: int, warmup: int, total: int, min_ratio: float = 0.002) -> float:
    """DINO / ChannelViT recipe: warm-up ``(step + 1) / warmup``, then cosine to ``min_ratio``.

    Hand-written because it differs from timm's ``CosineLRScheduler`` in two ways: the warm-up
    reaches the peak one step earlier (``step + 1``) and the floor is a ratio of the peak.
    """
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_poly_factor(step: int, warmup: int, total: int, power: float = 0.9) -> float:
    """ChangeViT recipe: warm-up from 0.1× (``0.1 + 0.9 (step + 1) / warmup``), then ``(1 - step/total)^power``.

    Hand-written because timm's ``PolyLRScheduler`` starts the decay after the warm-up
    (``step - warmup``) and warms up from ``step``, not ``step + 1``.
    """
    if step < warmup:
        return 0.1 + 0.9 * (step + 1) / warmup
    return max(0.0, 1 - step / max(1, total)) ** power


SCHEDULES: dict[str, Callable[..., float]] = {"warmup_cosine": warmup_cosine_factor, "warmup_poly": warmup_poly_factor}


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, *, warmup_steps: int, total_steps: int,
                    **kwargs: Any) -> dict[str, Any]:
    """Lightning ``lr_scheduler`` dict of a per-step schedule.

    Args:
        optimizer: the optimiser.
        name: ``"cosine"`` — linear warm-up from 0 (``step / warmup``) then cosine to 0, which is
            timm's ``CosineLRScheduler`` exactly (VICON's official schedule); ``"warmup_cosine"``
            or ``"warmup_poly"`` — the hand-written recipes in :data:`SCHEDULES`.
        warmup_steps: warm-up length.
        total_steps: length of the whole schedule.
        **kwargs: extra arguments of the hand-written factor (``min_ratio``, ``power``).

    Raises:
        GeovitError: an unknown ``name``.
    """
    if name == "cosine":
        from timm.scheduler import CosineLRScheduler

        sched: Any = CosineLRScheduler(optimizer, t_initial=max(total_steps - warmup_steps, 1), lr_min=0.0,
                                       warmup_t=warmup_steps, warmup_lr_init=0.0, warmup_prefix=True,
                                       cycle_limit=1, t_in_epochs=False)
    elif name in SCHEDULES:
        factor = SCHEDULES[name]
        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: factor(s, warmup_steps, total_steps, **kwargs))
    else:
        raise GeovitError(f"schedule {name!r}: expected one of cosine, {', '.join(SCHEDULES)}")
    return {"scheduler": sched, "interval": "step"}


# ----------------------------------------------------------------------------------- the task
class BaseTask(L.LightningModule):
    """Base of geovit's Lightning tasks: hooks, one optimiser path, one checkpoint reader.

    Subclasses set :attr:`family` (the model family their checkpoints hold), :attr:`monitor`
    (the metric ``best-*.ckpt`` is chosen on) and implement :meth:`configure_models`; they call
    ``super().__init__()`` from their own ``__init__`` so Lightning saves its keyword arguments.
    """

    #: model family stored in ``hparams["family"]`` (``channelvit``, ``chamaevit``, ...)
    family: ClassVar[str] = ""
    #: metric ``best-*.ckpt`` is chosen on (``None``: keep only ``last.ckpt``), and its direction
    monitor: ClassVar[str | None] = None
    monitor_mode: ClassVar[str] = "max"

    def __init__(self, ignore: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["ignore", *ignore])
        self.hparams["family"] = self.family
        self.resume_position: tuple[int, int] | None = None
        self._position = (0, 0)  # (epoch, batches of it started)
        try:
            self.configure_models()
        except (TypeError, ValueError) as err:  # a keyword the model does not take, or a value of the wrong kind
            given = dict(self.hparams.get("model_kwargs") or {})
            if not given and "unexpected keyword argument" not in str(err):
                raise
            raise GeovitError(f"model_kwargs {given}: the model could not be built ({err}); "
                              "expected constructor arguments of the model with values of their types") from None
        self.configure_losses()
        self.configure_metrics()

    # -- hooks ------------------------------------------------------------------------------
    def configure_models(self) -> None:
        """Build ``self.model`` from the hyper-parameters."""
        raise NotImplementedError

    def configure_losses(self) -> None:
        """Set ``self.criterion`` (optional)."""

    def configure_metrics(self) -> None:
        """Set torchmetrics collections such as ``self.val_metrics`` (optional)."""

    def compile_targets(self) -> dict[str, torch.nn.Module]:
        """``name -> module`` that ``--compile`` compiles: the modules the training step calls.

        Default: the whole ``model`` (its forward). Override when the step calls another method
        of the model (compiling its forward alone would compile nothing the step runs).
        """
        return {"model": self.model}

    # -- data position (exact resume within an epoch) ----------------------------------------
    def on_train_epoch_start(self) -> None:
        self._position = (self.current_epoch, 0)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Counted when a batch starts: ModelCheckpoint saves in on_train_batch_end, before a
        # module hook there would run, and the saved position must include this batch.
        self._position = (self._position[0], self._position[1] + 1)
        seed_step(int(self.hparams.get("seed", 0)), self.global_step, self.global_rank)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[POSITION_KEY] = {"epoch": self._position[0], "batches": self._position[1]}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        pos = checkpoint.get(POSITION_KEY)
        self.resume_position = (int(pos["epoch"]), int(pos["batches"])) if pos else None
        if self.resume_position is not None:
            # Lightning does not call on_train_epoch_start for an epoch resumed mid-way: carry the
            # position on, so a checkpoint saved later in this epoch counts every consumed batch.
            self._position = self.resume_position

    def lr_scheduler_step(self, scheduler: Any, metric: Any = None) -> None:
        """torch schedulers step by one; timm schedulers are told the optimiser-step count."""
        if hasattr(scheduler, "step_update"):
            scheduler.step_update(num_updates=self.global_step)
        else:
            scheduler.step()

    # -- checkpoints -------------------------------------------------------------------------
    @classmethod
    def init_arguments(cls) -> set[str]:
        """Keyword arguments ``__init__`` accepts (hyper-parameters of other versions are dropped)."""
        names = set()
        for c in cls.__mro__:
            if issubclass(c, BaseTask) and c is not BaseTask and "__init__" in c.__dict__:
                params = inspect.signature(c.__dict__["__init__"]).parameters.values()
                names |= {p.name for p in params if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD}
        return names - {"self"}

    @classmethod
    def read_checkpoint(cls, path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """``(hyper_parameters, state_dict)`` of a checkpoint of this task's family (:func:`read_task_checkpoint`)."""
        return read_task_checkpoint(path, cls.family)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | os.PathLike, map_location: Any = None,
                             hparams_file: Any = None, strict: bool = True, **overrides: Any):
        """Rebuild the task from a geovit ``*.ckpt`` (weights_only read, strict weights), eval mode.

        Args:
            checkpoint_path: the checkpoint, or a run folder (its best checkpoint, else ``last.ckpt``).
            map_location: device to move the task to (default cpu).
            hparams_file: not supported (the hyper-parameters are in the checkpoint).
            strict: require the weights to match the model exactly.
            **overrides: hyper-parameters to replace.

        Raises:
            CheckpointError: see :meth:`read_checkpoint`, or weights that do not fit.
        """
        if hparams_file is not None:
            raise GeovitError("load_from_checkpoint: hparams_file is not supported; the checkpoint holds them")
        checkpoint_path = find_checkpoint(checkpoint_path)
        hp, state = cls.read_checkpoint(checkpoint_path)
        known = cls.init_arguments()
        task = cls(**{k: v for k, v in {**hp, **overrides}.items() if k in known})
        try:
            task.load_state_dict(state, strict=strict)
        except RuntimeError as err:  # missing / unexpected keys or wrong shapes
            raise CheckpointError(f"checkpoint {checkpoint_path}: weights do not fit the saved configuration: {err}") from None
        return task.to(map_location or "cpu").eval()


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A ``.ckpt`` file, or a run folder's ``checkpoints/best-*.ckpt`` (newest), else its ``last.ckpt``.

    Raises:
        CheckpointError: a folder that holds neither.
    """
    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        best = sorted(folder.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
        if best:
            return best[-1]
        if (folder / "last.ckpt").is_file():
            return folder / "last.ckpt"
        raise CheckpointError(f"{path}: folder holds no best-*.ckpt or last.ckpt")
    return path


def read_task_checkpoint(path: str | os.PathLike, family: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(hyper_parameters, state_dict)`` of a geovit training checkpoint of ``family``.

    The file is read with ``torch.load(weights_only=True)`` (``geovit.hub.read_checkpoint``)
    whatever the environment says, so a crafted pickle cannot run code.

    Raises:
        CheckpointError: the file is missing, unreadable, not a geovit training checkpoint, or
            holds another family (both families are named).
    """
    from geovit.hub import read_checkpoint

    ckpt = read_checkpoint(path)
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"checkpoint {path}: not a geovit training checkpoint (no hyper_parameters/state_dict); "
                              f"for official weights use geovit.hub.load_official({family!r}, ...)")
    got = hp.get("family")
    if got != family:
        raise CheckpointError(f"checkpoint {path}: holds a {got!r} model, but a {family!r} checkpoint was expected")
    return hp, ckpt["state_dict"]


def inner_state(state: Mapping[str, torch.Tensor], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The entries of a task state dict under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
