"""``geovit pdes train`` settings: a typed, printable :class:`geovit.config.TrainerConfig`.

Model keys are the VICON constructor's (:class:`pdes.vicon.VICON`); the official recipe is
lr 1e-4, weight decay 1e-4, 20k warm-up steps of 200k, gradient clipping 1.0, ``min_ex`` 5
(specs/vicon.md §1.8) — the defaults here are sized for short CPU runs.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Optional

from geovit.config import ConfigError, TrainerConfig, option

#: the config keys that are VICON constructor arguments
MODEL_KEYS = ("embed_dim", "num_heads", "mlp_dim", "depth", "dropout", "max_pairs", "num_patches", "patch_size")


@dataclass
class VICONConfig(TrainerConfig):
    """``geovit pdes train``: VICON on PDEArena / PDEBench data sets (one batch of each per step)."""

    command: typing.ClassVar[str] = "pdes train"
    out: str = option("runs/pdes", "output folder: checkpoints, logs, config.yaml")
    batch_size: int = option(8, "prompts per data set, device and step", minimum=1)
    max_steps: Optional[int] = option(2000, "stop after this many optimizer steps", minimum=1)
    data: Optional[list[str]] = option(None, "data sets (PDEArena shard folder, PDEBench .hdf5 folder/file, VICON {split}/ "
                                              "folder); none: synthetic sets generated in OUT/synthetic_data")
    # model (pdes.vicon.VICON); patch_size None = frame_size // num_patches
    embed_dim: int = option(128, "transformer width", minimum=1)
    num_heads: int = option(4, "attention heads", minimum=1)
    mlp_dim: int = option(256, "MLP hidden width", minimum=1)
    depth: int = option(4, "transformer blocks", minimum=1)
    dropout: float = option(0.0, "dropout", minimum=0, maximum=1)
    max_pairs: int = option(10, "largest number of (condition, QoI) pairs in a prompt", minimum=2)
    num_patches: int = option(4, "patches per side", minimum=1)
    patch_size: Optional[int] = option(None, "patch side in pixels (default frame_size // num_patches)", minimum=1)
    # data: frame_size None = the stored resolution; channels None = every field of each data set
    frame_size: Optional[int] = option(None, "average-pool frames to this size (default: stored resolution)", minimum=1)
    channels: Optional[list[str]] = option(None, "fields to train on (default: every field of each data set)")
    num_pairs: int = option(10, "pairs per training prompt", minimum=2)
    max_stride: int = option(5, "largest time stride between a condition and its QoI", minimum=1)
    # optimisation
    lr: float = option(5e-4, "peak learning rate (AdamW)", minimum=0, exclusive=True)
    weight_decay: float = option(1e-4, "AdamW weight decay", minimum=0)
    warmup_steps: int = option(200, "linear warm-up steps from 0", minimum=0)
    total_steps: Optional[int] = option(None, "length of the cosine schedule (default max_steps)", minimum=1)
    grad_clip: float = option(1.0, "gradient-norm clipping", minimum=0)
    min_ex: int = option(5, "smallest number of example pairs a loss term uses", minimum=1)
    # generated data when no data is given
    synthetic_resolution: int = option(32, "side of the synthetic fields", minimum=8)
    synthetic_trajectories: int = option(24, "training trajectories of each synthetic set", minimum=2)

    def check(self) -> None:
        """Check the shared trainer settings, then ``min_ex < num_pairs <= max_pairs`` (a :class:`geovit.config.ConfigError` naming the field otherwise)."""
        super().check()
        if self.num_pairs > self.max_pairs or self.min_ex >= self.num_pairs:
            raise ConfigError("num_pairs", self.num_pairs, f"min_ex ({self.min_ex}) < num_pairs <= max_pairs ({self.max_pairs})")

    def model_config(self, frame: int) -> dict:
        """VICON constructor config for ``frame``×``frame`` inputs.

        Raises:
            ConfigError: ``num_patches``/``patch_size`` do not tile the frame.
        """
        model = {k: getattr(self, k) for k in MODEL_KEYS}
        if model["patch_size"] is None:
            if frame % model["num_patches"]:
                raise ConfigError("num_patches", model["num_patches"],
                                  f"a divisor of the frame size {frame} (or set patch_size)")
            model["patch_size"] = frame // model["num_patches"]
        if model["num_patches"] * model["patch_size"] != frame:
            raise ConfigError("patch_size", model["patch_size"],
                              f"num_patches * patch_size = the frame size {frame} (got "
                              f"{model['num_patches'] * model['patch_size']})")
        model["num_channels"] = 7
        return model
