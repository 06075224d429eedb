"""ChA-MAEViT pretraining as a LightningModule (specs/chamaevit.md §1, §6-7).

One joint objective, as the paper trains: reconstruction of DCP-masked patches (MSE with
per-patch pixel normalisation + the Fourier term) plus the supervised task term when labels
exist and the DiChaViT regularisers — all computed by ``ChAMAEViT.pretrain_step``. AdamW
(β 0.9/0.999, eps 1e-8), linear warm-up then cosine decay, gradient clipping (Trainer).

Exact resumption: the data order is a permutation fixed by (seed, epoch), augmentations are
seeded by (seed, epoch, index), and the global RNGs (DCP masks draw from ``np.random`` and
``torch``) are re-seeded from (seed, global step, rank) before every step — so a run resumed
from an epoch-end checkpoint replays exactly what the uninterrupted run would have done.
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
    order only depends on the seed and the epoch number.
    """

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


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

    # -- data ---------------------------------------------------------------------------------
    def attach_data(self, dataset: Dataset, batch_size: int, num_workers: int = 0) -> None:
        self.train_data, self.batch_size, self.num_workers = dataset, int(batch_size), int(num_workers)

    def train_dataloader(self) -> DataLoader:
        if self.train_data is None:
            raise GeovitError("ChaMAEPretraining: no training data attached (call attach_data)")
        sampler = EpochSampler(self.train_data, num_replicas=self.trainer.world_size, rank=self.global_rank,
                               shuffle=True, seed=self.hparams.seed, drop_last=False)
        return DataLoader(self.train_data, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                          collate_fn=pad_channels_collate, num_workers=self.num_workers,
                          persistent_workers=False, pin_memory=torch.cuda.is_available())

    # -- steps --------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        seed_step(self.hparams.seed, self.global_step, self.global_rank)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, ids, mask = split_batch(batch)
        out = self.model.pretrain_step(x, channels=ids, channel_mask=mask, labels=batch.get("label"))
        bs = x.shape[0]
        for key in LOG_KEYS:
            if key in out:
                self.log(f"train/{key}", out[key].detach(), on_step=True, on_epoch=True, prog_bar=key == "loss",
                         batch_size=bs)
        if batch_idx == 0 and self.hparams.plot_samples > 0:
            n = min(bs, self.hparams.plot_samples)
            keep = torch.ones_like(batch["channel_mask"][:n]) if mask is None else mask[:n]
            self._viz = {"image": x[:n].detach().cpu(), "hidden": out["pixel_mask"][:n].cpu(),
                         "recon": out["reconstruction"][:n].detach().float().cpu(), "valid": keep.cpu(),
                         "channels": batch["channels"][:n].cpu()}
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


def plot_reconstruction(viz: dict[str, torch.Tensor], path: Path, names: Sequence[str], title: str) -> None:
    """PNG grid: for each sample, rows original / masked input / reconstruction, one column per channel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geovit._io import atomic_savefig

    image, hidden, recon, valid, ids = viz["image"], viz["hidden"], viz["recon"], viz["valid"], viz["channels"]
    n, c = image.shape[:2]
    fig, axes = plt.subplots(3 * n, c, figsize=(1.3 * c + 1.2, 1.35 * 3 * n), squeeze=False)
    cmap = plt.get_cmap("gray").copy()
    cmap.set_bad("#d9534f")  # hidden patches in red
    for i in range(n):
        for j in range(c):
            cols = [axes[3 * i + r, j] for r in range(3)]
            for ax in cols:
                ax.set_xticks([])
                ax.set_yticks([])
            if not bool(valid[i, j]):
                for ax in cols:
                    ax.axis("off")
                continue
            orig = image[i, j].numpy()
            lo, hi = np.percentile(orig, [1, 99])
            hi = hi if hi > lo else lo + 1e-6
            masked = np.where(hidden[i, j].numpy(), np.nan, orig)
            cols[0].imshow(orig, cmap=cmap, vmin=lo, vmax=hi)
            cols[1].imshow(np.ma.masked_invalid(masked), cmap=cmap, vmin=lo, vmax=hi)
            cols[2].imshow(recon[i, j].numpy(), cmap=cmap, vmin=lo, vmax=hi)
            cid = int(ids[i, j])
            if i == 0:
                cols[0].set_title(names[cid] if cid < len(names) else str(cid), fontsize=7)
            if j == 0:
                for ax, label in zip(cols, ("original", "masked", "reconstructed")):
                    ax.set_ylabel(f"#{i} {label}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=80)
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
    result = model.load_state_dict(inner, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"checkpoint {path}: tensors do not fit the saved model config "
                              f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})")
    return model.eval().to(map_location), hp
