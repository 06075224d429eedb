"""A trained channel-adaptive model as the scene tools use it: channels, input size, statistics.

:func:`load_model` reads a geovit training checkpoint (``weights_only``, through
:meth:`geovit.tasks.base.BaseTask.load_from_checkpoint`) of either family that takes a channel
subset per call:

* ``channelvit`` — ``geovit train`` (:class:`~geovit.tasks.classification.ClassificationTask`):
  a ChannelViT classifier (Bao et al., ICLR 2024, §3: any subset of channels with their
  absolute ids); its embedding is the CLS feature;
* ``chamaevit`` — ``geovit pretrain`` (:class:`~geovit.tasks.pretraining.PretrainingTask`):
  a ChA-MAEViT (Pham et al., specs/chamaevit.md §1) whose embedding is the fused feature
  (hybrid token fusion, §3.2) and which is a classifier when pretrained with a classifier head
  (So2Sat: the supervised task term of the joint objective).

The result, :class:`SceneModel`, knows the channel table and ids the model was trained on, its
input size, the class names and the per-band statistics its training data were normalised with,
so raw raster values can be fed to it (:meth:`SceneModel.prepare`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geovit.channels import TABLES
from geovit.errors import CheckpointError, GeovitError

#: families whose models take ``model(x, channels=ids)`` with any subset of their channel table
FAMILIES = ("channelvit", "chamaevit")


def band_statistics(table: str, version: str = "2") -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel ``(mean, std)`` over a table's ids that geovit's data modules normalise with.

    Args:
        table: channel table name.
        version: So2Sat version (its statistics differ by version).

    Returns:
        Two float32 arrays indexed by channel id, or ``None`` for tables without statistics.
    """
    if table == "so2sat":
        from geovit.data.so2sat import normalization

        norm = normalization(version)
    elif table == "jumpcp":
        from geovit.data.jumpcp import normalization

        norm = normalization()
    else:
        return None
    return norm.mean.numpy().astype(np.float32), norm.std.numpy().astype(np.float32)


@dataclass
class SceneModel:
    """A loaded classifier / encoder and what is needed to feed it raw raster values.

    Attributes:
        module: the network (eval mode), called as ``module(x, channels=ids)``.
        family: ``"channelvit"`` or ``"chamaevit"``.
        channel_table: the table its channel ids index.
        channel_ids: ids it was trained on (other ids have untrained embeddings).
        window: input side in pixels.
        num_classes: classes of its head (0: an encoder only).
        class_names: one name per class.
        mean: per-channel-id mean of the training data (``None``: inputs are used as they are).
        std: per-channel-id std.
        checkpoint: where it came from.
        hparams: the checkpoint's hyper-parameters.
    """

    module: nn.Module
    family: str
    channel_table: str
    channel_ids: tuple[int, ...]
    window: int
    num_classes: int
    class_names: tuple[str, ...]
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    checkpoint: str = ""
    hparams: dict[str, Any] = field(default_factory=dict)

    @property
    def is_classifier(self) -> bool:
        """Whether the model has a classification head."""
        return self.num_classes > 0

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are."""
        return next(self.module.parameters()).device

    def channel_names(self, ids=None) -> list[str]:
        """Names of ``ids`` (default: the trained ids) in the channel table."""
        table = TABLES[self.channel_table]
        return [table[i] for i in (self.channel_ids if ids is None else ids)]

    def prepare(self, x: np.ndarray, usable: np.ndarray, ids) -> np.ndarray:
        """Normalise raw values ``(n, k, h, w)`` of channels ``ids``; unusable pixels become the mean (0).

        Args:
            x: raw float32 values.
            usable: bool mask of the same shape.
            ids: the ``k`` channel ids.

        Returns:
            float32 ``(n, k, h, w)``, z-scored with the training statistics when the model has them.
        """
        ids = np.asarray(ids, np.int64)
        if self.mean is not None:
            x = (x - self.mean[ids][None, :, None, None]) / self.std[ids][None, :, None, None]
        return np.where(usable, x, np.float32(0)).astype(np.float32, copy=False)

    @torch.no_grad()
    def logits(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Class logits ``(n, num_classes)`` of prepared inputs ``(n, k, h, w)`` with channel ids ``(k,)``."""
        return self.module(x, channels=ids)

    @torch.no_grad()
    def features(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Embedding ``(n, D)``: ChannelViT's CLS feature, ChA-MAEViT's fused feature."""
        if self.family == "channelvit":
            return self.module.forward_head(self.module.forward_features(x, ids), pre_logits=True)
        return self.module.forward_features(x, channels=ids)

    @torch.no_grad()
    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits of embeddings from :meth:`features` (``logits == head(features)``)."""
        if self.family == "channelvit":
            return self.module.head(features)
        return self.module.forward_head(features)

    def to(self, device: str | torch.device) -> "SceneModel":
        """Move the model to ``device`` (in place); returns self."""
        self.module.to(device)
        return self


def _task_class(family: str):
    if family == "channelvit":
        from geovit.tasks.classification import ClassificationTask

        return ClassificationTask
    if family == "chamaevit":
        from geovit.tasks.pretraining import PretrainingTask

        return PretrainingTask
    return None


def load_model(checkpoint: str | os.PathLike, *, classifier: bool = True, map_location: str | torch.device = "cpu",
               class_names: list[str] | tuple[str, ...] | None = None) -> SceneModel:
    """Load a ``geovit train`` (ChannelViT) or ``geovit pretrain`` (ChA-MAEViT) checkpoint.

    Args:
        checkpoint: a ``*.ckpt`` file, or a run folder (its best checkpoint, else ``last.ckpt``).
        classifier: require a classification head (``geovit predict``); ``False`` accepts encoders.
        map_location: device of the model.
        class_names: names of the classes (default: So2Sat's local climate zones for a 17-class
            So2Sat model, else ``class 0`` …).

    Returns:
        The :class:`SceneModel` (eval mode).

    Raises:
        CheckpointError: an unreadable or foreign file, a model family that is not a
            channel-adaptive classifier / encoder, a ChA-MAEViT without head when ``classifier``.
        GeovitError: ``class_names`` of the wrong length.
    """
    from geovit.hub import read_checkpoint
    from geovit.tasks.base import find_checkpoint

    path = find_checkpoint(checkpoint)
    ckpt = read_checkpoint(path)
    hp = ckpt.get("hyper_parameters")
    if not isinstance(hp, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"checkpoint {path}: not a geovit training checkpoint (no hyper_parameters/state_dict); "
                              "expected a *.ckpt written by geovit train or geovit pretrain")
    family = hp.get("family")
    task_cls = _task_class(family)
    if task_cls is None:
        raise CheckpointError(f"checkpoint {path}: holds a {family!r} model, which is not a channel-adaptive "
                              f"{'classifier' if classifier else 'encoder'}; expected a checkpoint of geovit train "
                              "(channelvit) or geovit pretrain (chamaevit)")
    del ckpt
    task = task_cls.load_from_checkpoint(path, map_location=map_location)
    hp = dict(task.hparams)
    module = task.model.eval()
    table = hp.get("channel_table", "so2sat")
    if table not in TABLES:
        raise CheckpointError(f"checkpoint {path}: channel table {table!r} is not known; expected one of {', '.join(TABLES)}")
    if family == "channelvit":
        ids = tuple(int(i) for i in hp.get("channel_ids") or range(module.in_chans))
        version = str(hp.get("version", "2"))
    else:
        names = list(hp.get("channel_names") or TABLES[table])
        ids = tuple(TABLES[table].index(n) for n in names)
        version = str(hp.get("so2sat_version", "2"))
    num_classes = int(getattr(module, "num_classes", 0) or 0)
    if classifier and num_classes == 0:
        raise CheckpointError(f"checkpoint {path}: the {family} model has no classification head (num_classes=0), so it "
                              "is not a classifier; use geovit embed for its features")
    if class_names is None:
        from geovit.data.so2sat import CLASSES

        class_names = CLASSES if table == "so2sat" and num_classes == len(CLASSES) else [f"class {i}" for i in range(num_classes)]
    if num_classes and len(class_names) != num_classes:
        raise GeovitError(f"--class-names: {len(class_names)} name(s) for a model of {num_classes} classes")
    stats = band_statistics(table, version)
    window = int(module.config["img_size"])
    return SceneModel(module, family, table, ids, window, num_classes, tuple(class_names),
                      None if stats is None else stats[0], None if stats is None else stats[1], str(Path(path)), hp)
