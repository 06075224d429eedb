"""ChA-MAEViT pretraining as a LightningModule (specs/chamaevit.md §1, §6-7).

One joint objective, as the paper trains: reconstruction of DCP-masked patches (MSE with
per-patch pixel normalisation + the Fourier term) plus the supervised task term when labels
exist and the DiChaViT regularisers — all computed by ``ChAMAEViT.pretrain_step``. AdamW
(β 0.9/0.999, eps 1e-8), linear warm-up then cosine decay, gradient clipping (Trainer).

Exact resumption: the data order is a permutation fixed by (seed, epoch), augmentations are
seeded by (seed, epoch, index), the global RNGs (DCP masks draw from ``np.random`` and
``torch``) are re-seeded from (seed, global step, rank) before every step, and checkpoints
record how many batches of the current epoch were consumed, which the sampler skips on resume —
so a run resumed from any checkpoint (epoch end or ``--ckpt-every`` mid-epoch) replays exactly
what the uninterrupted run would have done.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from geovit.data.collate import pad_channels_collate, shared_channels
from geovit.errors import GeovitError

FAMILY = "chamaevit"
#: losses logged every step (train/<name>)
LOG_KEYS = ("loss", "loss_mae", "loss_recon", "loss_fourier", "loss_ce", "loss_proxy",
            "loss_token_diversity", "loss_channel_diversity")


def _mix(*values: int) -> int:
    """A 32-bit seed from integers (stable across processes, unlike ``hash``)."""
    digest = hashlib.blake2b(repr(values).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


class SeededAugment(Dataset):
    """Apply a random sample transform seeded by (seed, epoch, index): reproducible augmentation.

    ``make_transform(generator)`` returns the transform for one sample. :meth:`set_epoch` is
    called by :class:`EpochSampler` before each epoch's iterator is built.
    """

    def __init__(self, dataset: Dataset, make_transform: Callable[[torch.Generator], Callable[[dict], dict]], seed: int = 0):
        self.dataset, self.make_transform, self.seed, self.epoch = dataset, make_transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(_mix(self.seed, self.epoch, int(index)))
        return self.make_transform(g)(self.dataset[index])


class EpochSampler(DistributedSampler):
    """Shuffle fixed by (seed, epoch), sharded over ranks; also tells the dataset the epoch.

    Lightning calls ``set_epoch`` at the start of every epoch (also after a resume), so the
    order only depends on the seed and the epoch number. ``skip`` leading indices of this
    rank's shard are dropped once (the batches a resumed epoch had already consumed); the
    length stays the full epoch's, as Lightning counts the consumed batches itself.
    """

    def __init__(self, *args, skip: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip = int(skip)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __iter__(self):
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])


def seed_step(seed: int, step: int, rank: int) -> None:
    """Re-seed torch (all devices) and numpy's global RNG for one optimisation step."""
    s = _mix(seed, step, rank)
    torch.manual_seed(s)
    np.random.seed(s)


def split_batch(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(image, channel ids, channel_mask) for the model: shared (C,) ids when the batch is regular."""
    shared = shared_channels(batch)
    if shared is not None:
        return batch["image"], shared, None
    return batch["image"], batch["channels"], batch["channel_mask"]


def parameter_digest(module: torch.nn.Module) -> int:
    """A 63-bit digest of every parameter's bytes (to compare replicas across ranks)."""
    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") >> 1


class ChaMAEPretraining(L.LightningModule):
    """Lightning wrapper around a ChA-MAEViT model built from its ``config`` dict.

    Hyper-parameters (saved in every checkpoint) include ``family="chamaevit"``, the model
    config (rebuilds the network without code: ``geovit.models.chamaevit.build``), the channel
    table and names, and where the data came from (``dataset``, ``data_root``, ``synthetic``).
    """

    def __init__(
        self,
        model_config: dict[str, Any],
        model_name: str = "chamaevit_small_patch8",
        channel_table: str = "so2sat",
        channel_names: Sequence[str] = (),
        dataset: str = "so2sat",
        data_root: str | None = None,
        synthetic: bool = False,
        lr: float = 4e-4,
        weight_decay: float = 5e-5,
        warmup_steps: int = 0,
        total_steps: int = 1000,
        seed: int = 0,
        plot_samples: int = 2,
        family: str = FAMILY,
        **data_info: Any,
    ):
        super().__init__()
        if family != FAMILY:
            raise GeovitError(f"ChaMAEPretraining: family {family!r}, expected {FAMILY!r}")
        self.save_hyperparameters()
        from geovit.models.chamaevit import build

        self.model = build(model_config)
        self.train_data: Dataset | None = None
        self.batch_size, self.num_workers = 32, 0
        self._viz: dict[str, torch.Tensor] | None = None
        self._batches_done = (0, 0)  # (epoch, batches of it consumed): saved in checkpoints
        self._resume_from: tuple[int, int] | None = None

    # -- data ---------------------------------------------------------------------------------
    def attach_data(self, dataset: Dataset, batch_size: int, num_workers: int = 0) -> None:
        self.train_data, self.batch_size, self.num_workers = dataset, int(batch_size), int(num_workers)

    def train_dataloader(self) -> DataLoader:
        if self.train_data is None:
            raise GeovitError("ChaMAEPretraining: no training data attached (call attach_data)")
        sampler = EpochSampler(self.train_data, num_replicas=self.trainer.world_size, rank=self.global_rank,
                               shuffle=True, seed=self.hparams.seed, drop_last=False)
        epoch = self.current_epoch
        if self._resume_from is not None:
            saved_epoch, done = self._resume_from
            if saved_epoch == epoch and 0 < done < len(sampler) // self.batch_size:
                sampler.skip = done * self.batch_size  # resumed mid-epoch: drop the consumed samples
            elif done >= len(sampler) // self.batch_size:
                epoch = max(epoch, saved_epoch + 1)  # resumed at an epoch end: the next epoch runs
        # set now (Lightning sets it again before iterating): worker processes copy the dataset early
        sampler.set_epoch(epoch)
        return DataLoader(self.train_data, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                          collate_fn=pad_channels_collate, num_workers=self.num_workers,
                          persistent_workers=False, pin_memory=torch.cuda.is_available())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["geovit_data_position"] = {"epoch": self._batches_done[0], "batches": self._batches_done[1]}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        pos = checkpoint.get("geovit_data_position")
        self._resume_from = (int(pos["epoch"]), int(pos["batches"])) if pos else None
        if self._resume_from is not None:
            # Lightning does not call on_train_epoch_start for an epoch resumed mid-way: carry the
            # position on, so a checkpoint saved later in this epoch counts every consumed batch.
            self._batches_done = self._resume_from

    # -- steps --------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._batches_done = (self.current_epoch, 0)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        seed_step(self.hparams.seed, self.global_step, self.global_rank)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, ids, mask = split_batch(batch)
        out = self.model.pretrain_step(x, channels=ids, channel_mask=mask, labels=batch.get("label"))
        bs, distributed = x.shape[0], self.trainer.world_size > 1
        for key in LOG_KEYS:
            if key in out:
                self.log(f"train/{key}", out[key].detach(), on_step=True, on_epoch=True, prog_bar=key == "loss",
                         batch_size=bs, sync_dist=distributed)
        if batch_idx == 0 and self.hparams.plot_samples > 0:
            n = min(bs, self.hparams.plot_samples)
            keep = torch.ones_like(batch["channel_mask"][:n]) if mask is None else mask[:n]
            self._viz = {"image": x[:n].detach().cpu(), "hidden": out["pixel_mask"][:n].cpu(),
                         "recon": out["reconstruction"][:n].detach().float().cpu(), "valid": keep.cpu(),
                         "channels": batch["channels"][:n].cpu()}
        self._batches_done = (self._batches_done[0], self._batches_done[1] + 1)
        return out["loss"]

    def on_train_epoch_end(self) -> None:
        if self._viz is None or not self.trainer.is_global_zero:
            return
        path = Path(self.trainer.default_root_dir) / "plots" / f"reconstruction_epoch{self.current_epoch:03d}.png"
        names = _channel_names(self.hparams.channel_table)
        title = f"epoch {self.current_epoch} · step {self.global_step}"
        if self.hparams.synthetic:
            title = "SYNTHETIC data · " + title
        plot_reconstruction(self._viz, path, names, title)
        self._viz = None

    def on_train_end(self) -> None:
        """Compare the replicas' weights (DDP) and write OUT/run_summary.json on rank 0."""
        digest = torch.tensor([parameter_digest(self.model)], dtype=torch.long, device=self.device)
        gathered = self.all_gather(digest).reshape(-1).tolist() if self.trainer.world_size > 1 else digest.tolist()
        if self.trainer.is_global_zero:
            from geovit._io import atomic_write_text

            summary = {"family": FAMILY, "world_size": self.trainer.world_size, "global_step": self.global_step,
                       "epochs_completed": self.current_epoch, "synthetic": bool(self.hparams.synthetic),
                       "rank_parameter_digests": [str(d) for d in gathered],
                       "replicas_identical": len(set(gathered)) == 1}
            atomic_write_text(Path(self.trainer.default_root_dir) / "run_summary.json", json.dumps(summary, indent=2) + "\n")

    def configure_optimizers(self):
        from geovit.tasks.classification import param_groups, warmup_cosine

        hp = self.hparams
        opt = torch.optim.AdamW(param_groups(self.model, hp.weight_decay), lr=hp.lr, betas=(0.9, 0.999), eps=1e-8)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, hp.warmup_steps, hp.total_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _channel_names(table: str) -> tuple[str, ...]:
    from geovit.channels import TABLES

    return TABLES.get(table, ())


def reconstruction_grid(viz: dict[str, torch.Tensor], gap: int = 2) -> np.ndarray:
    """RGB mosaic (3·n rows of tiles × C columns): original / masked input (hidden = red) / reconstruction.

    Each channel is scaled by the 1st-99th percentile of its original; padded channels stay white.
    """
    image, hidden, recon, valid = viz["image"], viz["hidden"], viz["recon"], viz["valid"]
    n, c, h, w = image.shape
    grid = np.ones((3 * n * (h + gap) - gap, c * (w + gap) - gap, 3), dtype=np.float32)
    for i in range(n):
        for j in range(c):
            if not bool(valid[i, j]):
                continue
            orig = image[i, j].numpy()
            lo, hi = np.percentile(orig, [1, 99])
            scale = (hi - lo) if hi > lo else 1.0

            def tile(a):
                return np.repeat(np.clip((a - lo) / scale, 0, 1)[..., None], 3, axis=-1)

            masked = tile(orig)
            masked[hidden[i, j].numpy()] = (0.85, 0.33, 0.31)
            x0 = j * (w + gap)
            for r, t in enumerate((tile(orig), masked, tile(recon[i, j].numpy()))):
                y0 = (3 * i + r) * (h + gap)
                grid[y0:y0 + h, x0:x0 + w] = t
    return grid


def plot_reconstruction(viz: dict[str, torch.Tensor], path: Path, names: Sequence[str], title: str) -> None:
    """PNG grid (atomic write): per sample, rows original / masked / reconstructed; one column per channel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geovit._io import atomic_savefig

    grid = reconstruction_grid(viz)
    n, c, h, w = viz["image"].shape
    fig, ax = plt.subplots(figsize=(min(24.0, 1.0 + 0.75 * c), 0.6 + 0.75 * 3 * n))
    ax.imshow(grid, interpolation="nearest")
    ids = viz["channels"][0].tolist()
    ax.set_xticks([j * (w + 2) + w / 2 for j in range(c)],
                  [names[k] if k < len(names) and bool(viz["valid"][0, j]) else "" for j, k in enumerate(ids)],
                  rotation=90, fontsize=7)
    ax.set_yticks([r * (h + 2) + h / 2 for r in range(3 * n)],
                  [f"#{r // 3} {('original', 'masked', 'reconstructed')[r % 3]}" for r in range(3 * n)], fontsize=7)
    ax.tick_params(length=0)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


def load_pretrained(path, map_location: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """(ChA-MAEViT model in eval mode, hyper-parameters) from a ``geovit pretrain`` checkpoint.

    Raises :class:`geovit.CheckpointError` for a checkpoint of another family or a foreign file.
    """
    from geovit.errors import CheckpointError
    from geovit.models.chamaevit import build
    from geovit.training import read_lightning_checkpoint

    hp, state = read_lightning_checkpoint(path, FAMILY)
    if "model_config" not in hp:
        raise CheckpointError(f"checkpoint {path}: no 'model_config' in its hyper-parameters; "
                              "expected a checkpoint written by `geovit pretrain`")
    model = build(hp["model_config"])
    inner = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    try:
        model.load_state_dict(inner, strict=True)
    except RuntimeError as err:  # missing / unexpected keys or wrong shapes
        raise CheckpointError(f"checkpoint {path}: tensors do not fit the saved model config: {err}") from None
    return model.eval().to(map_location), hp
