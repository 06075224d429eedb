"""ChA-MAEViT pretraining as a geovit task (Pham et al., "ChA-MAEViT", specs/chamaevit.md §1, §6-7).

One joint objective, as the paper trains: reconstruction of DCP-masked patches (MSE with
per-patch pixel normalisation + the Fourier term) plus the supervised task term when labels
exist and the DiChaViT regularisers — all computed by ``ChAMAEViT.pretrain_step``. AdamW
(β 0.9/0.999, eps 1e-8), linear warm-up then cosine decay, gradient clipping (Trainer).

Exact resumption: the data module fixes the data order by (seed, epoch) and seeds augmentations
by (seed, epoch, index); the global RNGs (DCP masks draw from ``np.random`` and ``torch``) are
re-seeded from (seed, global step, rank) before every step (BaseTask); and :class:`~geovit.tasks.base.BaseTask`
records how many batches of the current epoch were consumed, which the data module skips on
resume — so a run resumed from any checkpoint replays what the uninterrupted run would have done.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from geovit.data.collate import shared_channels
from geovit.tasks.base import BaseTask, build_optimizer, build_scheduler

FAMILY = "chamaevit"
#: losses logged every step (as train_<name>)
LOG_KEYS = ("loss", "loss_mae", "loss_recon", "loss_fourier", "loss_ce", "loss_proxy",
            "loss_token_diversity", "loss_channel_diversity")


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


class PretrainingTask(BaseTask):
    """ChA-MAEViT channel-aware MAE pretraining of a model built from its ``model_config``.

    Args:
        model_config: constructor config of the ChA-MAEViT (rebuilds it without code:
            ``geovit.models.chamaevit.build``).
        model_name: the registered variant it came from.
        channel_table: name of the channel table.
        channel_names: the channels pretrained on.
        dataset: registered dataset name.
        data_root: where the data came from (default data of ``geovit probe``).
        synthetic: whether ``data_root`` is a synthetic set.
        lr: peak learning rate.
        weight_decay: AdamW decay on weights.
        warmup_steps: linear warm-up steps.
        total_steps: length of the cosine schedule.
        seed: seed of the per-step RNG re-seeding.
        plot_samples: samples in the per-epoch reconstruction plot.
        image_size: input side the model was pretrained at.
        so2sat_version: So2Sat version of ``data_root``.
    """

    family = FAMILY

    def __init__(self, model_config: dict[str, Any], model_name: str = "chamaevit_small_patch8",
                 channel_table: str = "so2sat", channel_names: Sequence[str] = (), dataset: str = "so2sat",
                 data_root: str | None = None, synthetic: bool = False, lr: float = 4e-4, weight_decay: float = 5e-5,
                 warmup_steps: int = 0, total_steps: int = 1000, seed: int = 0, plot_samples: int = 2,
                 image_size: int | None = None, so2sat_version: str = "2"):
        super().__init__()
        self._viz: dict[str, torch.Tensor] | None = None

    def configure_models(self) -> None:
        from geovit.models.chamaevit import build

        self.model = build(self.hparams.model_config)

    def compile_targets(self) -> dict[str, torch.nn.Module]:
        """The encoder blocks and the decoder: ``pretrain_step`` calls them (not the model's forward).

        The masking, the token gathers and the losses stay eager (data-dependent shapes); CA-MAE's
        per-channel decoder, which loops over the channel ids present, is left eager too.
        """
        targets = {f"model.blocks.{i}": blk for i, blk in enumerate(self.model.blocks)}
        decoder = getattr(self.model, "decoder", None)
        if decoder is not None and getattr(self.model, "decoder_type", "chamaevit_decoder") == "chamaevit_decoder":
            targets["model.decoder"] = decoder
        return targets

    # -- steps --------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, ids, mask = split_batch(batch)
        out = self.model.pretrain_step(x, channels=ids, channel_mask=mask, labels=batch.get("label"))
        bs, distributed = x.shape[0], self.trainer.world_size > 1
        for key in LOG_KEYS:
            if key in out:
                self.log(f"train_{key}", out[key].detach(), on_step=True, on_epoch=True, prog_bar=key == "loss",
                         batch_size=bs, sync_dist=distributed)
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
        hp = self.hparams
        opt = build_optimizer(self.model, name="adamw", lr=hp.lr, weight_decay=hp.weight_decay, betas=(0.9, 0.999))
        return {"optimizer": opt, "lr_scheduler": build_scheduler(opt, "warmup_cosine", warmup_steps=hp.warmup_steps,
                                                                    total_steps=hp.total_steps)}


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

    Raises:
        CheckpointError: a checkpoint of another family, a foreign file, or weights that do not fit.
    """
    task = PretrainingTask.load_from_checkpoint(path, map_location=map_location)
    return task.model, dict(task.hparams)
