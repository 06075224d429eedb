"""Claim: channel-aware MAE pretraining (ChA-MAEViT) learns features a linear probe / kNN can use.

Pham et al., "ChA-MAEViT", NeurIPS 2025, App. F.3 (the SSL-only setting: reconstruction loss
only, then a linear probe). What pretraining adds is measured against the same probes on the
same architecture with random weights, and against a supervised model trained for the same
number of steps on the labels.

Protocol, per seed (data seed = run seed; the built-in SYNTHETIC So2Sat, 1536 / 384 / 384):

* **MAE only**: ``geovit pretrain`` (``geovit.cli.pretrain.run_pretraining``) of a
  ChA-MAEViT-T/16 (``chamaevit_tiny_patch8``'s So2Sat recipe with patch 16 — 4 patches per
  band, the demo's cost —, width 96, encoder depth 4, 3 heads, 1 decoder block, 8 memory
  tokens, additive fusion, DCP "Combination" with mask ratio ``--mask-ratio``),
  cross-entropy weight 0 (no label is seen), AdamW lr ``--lr``, batch 64, ``--steps`` steps,
  seeded flips / rotations;
* **random init**: the same architecture, freshly initialised (``geovit.tasks.probe.random_init_like``);
* **supervised**: ``geovit train`` (``geovit.cli.classify.run_training``) of ``geovit demo``'s
  ChannelViT-T/16 (same width / depth / patch, with HCS), the demo's lr 4e-3, batch 64, the
  same number of steps; its own head is scored, and its CLS feature is probed;
* probes (``geovit.tasks.probe.probe_channel_sets``): logistic regression on standardised
  features and a 20-NN cosine vote, fitted on the 1536 training patches, scored on the 384 test
  patches, for all 18 bands, Sentinel-1 only and Sentinel-2 only.

    python bench/claims/chamae_probe.py --seeds 0 1 2
    python bench/claims/chamae_probe.py --report
    python bench/claims/chamae_probe.py --seeds 0 1 2 --use-self-image-norm --mae-loss-norm none
    python bench/claims/chamae_probe.py --seeds 0 1 2 --channel-sampling hcs

The reference options of the MAE variant (``--use-self-image-norm``, ``--mae-loss-norm``,
``--decoder-type``, ``--channel-sampling``) are part of a run's name: their raw results and
table (``chamae_probe_steps{N}_{options}.md``) sit beside the default run's. With
``--baseline-from-default`` only the MAE variant is trained (the random-init and supervised rows
of the default run at the same steps and seeds are reused in the table: they do not depend on
the MAE options).

Writes ``bench/claims/results/raw/chamae_*.json`` and ``chamae_probe_steps{N}[_{options}].md``.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _claims import (RESULTS, markdown_table, mean_sd, quiet_lightning, read_raw, run_cli_banner,  # noqa: E402
                     setup_threads, synthetic_root, write_raw)

SETS = (("full", "so2sat"), ("Sentinel-1 only", "sentinel1"), ("Sentinel-2 only", "sentinel2"))
ENCODER = {"embed_dim": 96, "depth": 4, "num_heads": 3, "patch_size": 16}


class _ClsFeatures:
    """``forward_features`` = the CLS token of a ChannelViT (what its head reads), for the probes."""

    def __init__(self, model):
        self.model = model

    def to(self, device):
        self.model.to(device)
        return self

    def eval(self):
        self.model.eval()
        return self

    def forward_features(self, x, channels=None, channel_mask=None):
        return self.model.forward_features(x, channels)[:, 0]


def _loaders(root: Path):
    from geovit.data.datamodules import So2SatDataModule

    dm = So2SatDataModule(root, version="2", bands="so2sat", batch_size=256, augment=False)
    return dm.split_dataloader("train"), dm.split_dataloader("test")


def _sets():
    from geovit.channels import resolve_channels

    return [(name, resolve_channels(preset).ids) for name, preset in SETS]


def _recon_losses(out: Path) -> dict:
    """First and last logged reconstruction loss of a pretraining run (logs/metrics.csv)."""
    path = out / "logs" / "metrics.csv"
    values = []
    with open(path) as f:
        for row in csv.DictReader(f):
            v = row.get("train_loss_recon_step") or row.get("train_loss_recon")
            if v:
                values.append(float(v))
    tail = values[-max(1, len(values) // 10):]
    return {"recon_first": values[0] if values else None, "recon_last": sum(tail) / len(tail) if tail else None}


def option_tag(args: argparse.Namespace) -> str:
    """The MAE options that differ from the default run, as a file-name suffix ("" for none)."""
    parts = []
    if args.use_self_image_norm:
        parts.append("selfnorm")
    if args.mae_loss_norm != "norm_pix_loss":
        parts.append(f"target-{args.mae_loss_norm}")
    if args.decoder_type != "chamaevit_decoder":
        parts.append(args.decoder_type)
    if args.channel_sampling != "none":
        parts.append(args.channel_sampling)
    return "_".join(parts)


def mae_options(args: argparse.Namespace) -> dict:
    """Model keywords of the MAE variant's reference options."""
    return {"use_self_image_norm": bool(args.use_self_image_norm),
            "mae_loss_norm": None if args.mae_loss_norm == "none" else args.mae_loss_norm,
            "channel_sampling": None if args.channel_sampling == "none" else args.channel_sampling}


def run_seed(seed: int, args: argparse.Namespace) -> list[dict]:
    """The three variants of one seed; returns their raw results."""
    import torch

    from geovit.cli.classify import run_training
    from geovit.cli.pretrain import run_pretraining
    from geovit.config import ClassifyConfig, DemoConfig, PretrainConfig
    from geovit.tasks.classification import ClassificationTask
    from geovit.tasks.pretraining import load_pretrained
    from geovit.tasks.probe import probe_channel_sets, random_init_like
    from geovit.tasks.robustness import evaluate_subsets

    tag = option_tag(args)
    runs = Path(args.runs) / (f"chamae_steps{args.steps}" + (f"_{tag}" if tag else ""))
    root = synthetic_root(Path(args.runs), args.num_samples, seed)
    train_dl, test_dl = _loaders(root)
    sets = _sets()
    results = []
    common = {"seed": seed, "steps": args.steps, "batch_size": 64, "num_samples": args.num_samples}

    # 1. MAE-only pretraining
    out = runs / f"seed{seed}_mae"
    cfg = PretrainConfig.from_dict({
        "out": str(out), "data": str(root), "seed": seed, "max_steps": args.steps, "batch_size": 64,
        "model": "chamaevit_tiny_patch8", "lr": args.lr, "warmup_steps": max(1, args.steps // 10),
        "mask_ratio": args.mask_ratio, "plot_samples": 0,
        "model_kwargs": {**ENCODER, "cross_entropy_lambda": 0.0, **mae_options(args),
                         "decoder": {"num_heads": 3, "decoder_type": args.decoder_type}},
    })
    t0 = time.time()
    run_pretraining(cfg)
    secs = time.time() - t0
    model, _ = load_pretrained(out / "checkpoints" / "last.ckpt")
    rows = probe_channel_sets(model, train_dl, test_dl, sets, "so2sat", seed=seed, log=print)
    results.append({**common, "variant": "mae", "lr": args.lr, "mask_ratio": args.mask_ratio, "options": tag,
                    "train_seconds": round(secs, 1), "rows": rows, **_recon_losses(out)})
    if args.baseline_from_default:
        return results

    # 2. the same architecture, random weights
    rows = probe_channel_sets(random_init_like(model, seed=seed), train_dl, test_dl, sets, "so2sat", seed=seed, log=print)
    results.append({**common, "variant": "random_init", "train_seconds": 0.0, "rows": rows})

    # 3. supervised ChannelViT-T/16 (HCS), same steps and batch
    demo = DemoConfig().to_dict()
    ccfg = ClassifyConfig.from_dict({
        **demo, "out": str(runs / f"seed{seed}_supervised"), "data": str(root), "seed": seed, "max_steps": args.steps,
        "model": "channelvit_tiny_patch16", "model_kwargs": {**ENCODER, "img_size": 32}, "channels": "so2sat",
    })
    t0 = time.time()
    best = run_training(ccfg)
    secs = time.time() - t0
    module = ClassificationTask.load_from_checkpoint(best)
    with torch.no_grad():
        df = evaluate_subsets(module.model, test_dl, [(name, tuple(ids)) for name, ids in sets])
    head = dict(zip(df.subset, df.accuracy))
    rows = probe_channel_sets(_ClsFeatures(module.model), train_dl, test_dl, sets, "so2sat", seed=seed, log=print)
    results.append({**common, "variant": "supervised", "lr": ccfg.lr, "train_seconds": round(secs, 1), "rows": rows,
                    "head_accuracy": head})
    return results


def report(steps: int, tag: str = "") -> str:
    """Markdown tables of every raw result of ``steps`` (MAE rows: those of the options ``tag``)."""
    raws = [r for r in read_raw("chamae_") if r["steps"] == steps
            and (r["variant"] != "mae" or r.get("options", "") == tag)]
    if not raws or not any(r["variant"] == "mae" for r in raws):
        return f"no raw results for {steps} steps" + (f" with the MAE options {tag}" if tag else "")
    seeds = sorted({r["seed"] for r in raws})
    names = {"mae": "ChA-MAEViT, MAE only", "random_init": "same architecture, random init",
             "supervised": "supervised ChannelViT (HCS)"}

    def acc(variant, method, cset):
        return [row["accuracy"] for r in raws if r["variant"] == variant for row in r["rows"]
                if row["method"] == method and row["channel_set"] == cset]

    rows = []
    for variant in ("mae", "random_init", "supervised"):
        for method in ("linear", "knn20"):
            rows.append((names[variant], "linear probe" if method == "linear" else "20-NN",
                         *[mean_sd(acc(variant, method, c)) for c, _ in SETS]))
        if variant == "supervised":
            heads = [r["head_accuracy"] for r in raws if r["variant"] == "supervised"]
            rows.append((names[variant], "its own head", *[mean_sd([h[c] for h in heads]) for c, _ in SETS]))
    mae = [r for r in raws if r["variant"] == "mae"]
    chance = mean_sd([row["chance"] for r in raws for row in r["rows"]])
    first, last = mean_sd([r["recon_first"] for r in mae]), mean_sd([r["recon_last"] for r in mae])
    secs = {v: mean_sd([r["train_seconds"] for r in raws if r["variant"] == v], 0) for v in ("mae", "supervised")}
    m0 = mae[0] if mae else {}
    return (f"### ChA-MAEViT MAE-only pretraining → frozen probes — {steps} optimizer steps, batch 64, "
            f"seeds {', '.join(map(str, seeds))}" + (f" — MAE options: {tag}" if tag else "") + "\n\n"
            f"Test accuracy (mean ± sd over {len(seeds)} seeds; majority-class chance {chance}). MAE: lr "
            f"{m0.get('lr', 'n/a')}, DCP mask ratio {m0.get('mask_ratio', 'n/a')}; reconstruction loss "
            + ("(per-patch normalised targets, 1.0 = predicting the patch mean) " if "target-" not in tag
               else f"(targets: {tag}) ")
            + f"{first} at the first logged step → "
            f"{last} over the last tenth of the run.\n\n"
            + markdown_table(("encoder", "classifier", *[c for c, _ in SETS]), rows)
            + f"\n\nTraining wall time per run (s, shared 2-core CPU, 1 thread): MAE {secs['mae']}, "
              f"supervised {secs['supervised']}.\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of every trained variant")
    parser.add_argument("--lr", type=float, default=1.5e-3, help="MAE peak learning rate")
    parser.add_argument("--mask-ratio", type=float, default=0.25, help="DCP mask ratio (So2Sat recipe: 0.25)")
    parser.add_argument("--num-samples", type=int, default=1536)
    parser.add_argument("--runs", default="runs/claims")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--use-self-image-norm", action="store_true",
                        help="MAE variant: standardise every image and channel before the encoder (reference option)")
    parser.add_argument("--mae-loss-norm", choices=("norm_pix_loss", "instance_norm", "none"), default="norm_pix_loss",
                        help="MAE variant: reconstruction target normalisation")
    parser.add_argument("--decoder-type", choices=("chamaevit_decoder", "camae_decoder"), default="chamaevit_decoder")
    parser.add_argument("--channel-sampling", choices=("none", "hcs"), default="none",
                        help="MAE variant: Hierarchical Channel Sampling before DCP")
    parser.add_argument("--baseline-from-default", action="store_true",
                        help="train only the MAE variant; the other rows come from the default run's raw results")
    args = parser.parse_args(argv)
    from geovit._io import atomic_write_text

    setup_threads(args.threads)
    quiet_lightning()
    run_cli_banner("chamae_probe", args)
    tag = option_tag(args)
    if not args.report:
        for seed in args.seeds:
            for raw in run_seed(seed, args):
                name = raw["variant"] + (f"_{tag}" if tag and raw["variant"] == "mae" else "")
                write_raw(f"chamae_steps{args.steps}_seed{seed}_{name}", raw)
    text = report(args.steps, tag)
    if text.startswith("no raw results"):
        print(text)
        return 1
    atomic_write_text(RESULTS / (f"chamae_probe_steps{args.steps}" + (f"_{tag}" if tag else "") + ".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
