"""Claim: Hierarchical Channel Sampling makes ChannelViT degrade gracefully when channels are missing.

Bao et al., "Channel Vision Transformers", ICLR 2024, §3.2 and Tables 2 / 4: a ChannelViT
trained with HCS (a random subset of the input channels per training step) keeps much of its
accuracy when only some channels are available at test time, at a similar full-band accuracy;
one trained on all channels every step collapses on partial inputs.

Protocol (equal compute: the same model, data, seed, batch, learning-rate schedule and number
of optimizer steps; only ``hcs`` differs — an HCS step even sees fewer tokens):

* data: the built-in SYNTHETIC So2Sat (``geovit.data.so2sat_synthetic``), 1536 training /
  384 validation / 384 test patches, data seed = run seed;
* model and recipe: ``geovit demo``'s ChannelViT-T/16 (width 96, depth 4, 3 heads), AdamW
  lr 4e-3, weight decay 0.05, 30 warm-up steps then cosine, batch 64, ``--steps`` steps,
  trained on all 18 bands through ``geovit.cli.classify.run_training``; the checkpoint with the
  best validation accuracy is evaluated;
* test: every subset size 1..18 (``--per-size`` seeded subsets per size, the same subsets for
  every run), Sentinel-1 only and Sentinel-2 only (ChannelViT's protocol: only the available
  channels and their ids are passed, nothing is zero-filled).

    python bench/claims/hcs_channelvit.py --seeds 0 1 2            # train, evaluate, report
    python bench/claims/hcs_channelvit.py --seeds 3 --steps 1440   # a longer schedule
    python bench/claims/hcs_channelvit.py --report                 # tables from the raw results

Writes ``bench/claims/results/raw/hcs_*.json``, ``hcs_channelvit.md`` (tables, mean ± sd over
seeds) and ``hcs_channelvit.png`` (accuracy vs channels available, both variants).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _claims import (RESULTS, markdown_table, mean_sd, quiet_lightning, read_raw, run_cli_banner,  # noqa: E402
                     setup_threads, synthetic_root, write_raw)

VARIANTS = {"hcs": True, "no_hcs": False}
LABELS = {"hcs": "ChannelViT + HCS", "no_hcs": "ChannelViT, no HCS"}
NAMED_SIZES = {"Sentinel-1 only": 8, "Sentinel-2 only": 10}


def train_and_evaluate(seed: int, variant: str, args: argparse.Namespace) -> dict:
    """One run: train ``variant`` on all bands, evaluate every subset size; return the raw result."""
    import torch

    from geovit.channels import resolve_channels
    from geovit.cli.classify import run_training
    from geovit.config import ClassifyConfig, DemoConfig
    from geovit.data.datamodules import So2SatDataModule
    from geovit.tasks.classification import ClassificationTask
    from geovit.tasks.robustness import evaluate_subsets, subset_plan

    runs = Path(args.runs)
    root = synthetic_root(runs, args.num_samples, seed)
    demo = DemoConfig().to_dict()
    cfg = ClassifyConfig.from_dict({
        **demo, "out": str(runs / f"hcs_steps{args.steps}_lr{args.lr:g}" / f"seed{seed}_{variant}"), "data": str(root),
        "seed": seed, "max_steps": args.steps, "lr": args.lr, "channels": "so2sat",
        "model_kwargs": {**demo["model_kwargs"], "hcs": VARIANTS[variant]},
    })
    t0 = time.time()
    best = run_training(cfg)
    train_s = time.time() - t0
    module = ClassificationTask.load_from_checkpoint(best)
    ids = list(module.hparams.channel_ids)
    named = {"Sentinel-1 only": resolve_channels("sentinel1").ids, "Sentinel-2 only": resolve_channels("sentinel2").ids}
    plan = subset_plan(ids, per_size=args.per_size, seed=0, named=named)
    dm = So2SatDataModule(root, version="2", bands="so2sat", batch_size=256, augment=False)
    t1 = time.time()
    with torch.no_grad():
        df = evaluate_subsets(module.model, dm.split_dataloader("test"), plan)
    return {"seed": seed, "variant": variant, "steps": args.steps, "lr": args.lr, "batch_size": cfg.batch_size,
            "num_samples": args.num_samples, "per_size": args.per_size, "checkpoint": Path(best).name,
            "train_seconds": round(train_s, 1), "eval_seconds": round(time.time() - t1, 1),
            "rows": df.to_dict(orient="records")}


def _per_size(raw: dict) -> dict:
    rows = raw["rows"]
    out = {}
    for size in sorted({r["size"] for r in rows if r["subset"].startswith("size")}):
        out[size] = statistics.fmean(r["accuracy"] for r in rows if r["subset"] == f"size{size}")
    for r in rows:
        if not r["subset"].startswith("size"):
            out[r["subset"]] = r["accuracy"]
    return out


def report(steps: int, lr: float) -> str:
    """Tables (markdown) and the plot of every raw result of ``steps`` / ``lr``."""
    import pandas as pd

    from geovit.tasks.robustness import plot_comparison

    raws = [r for r in read_raw("hcs_") if r["steps"] == steps and r["lr"] == lr]
    if not raws:
        return f"no raw results for {steps} steps, lr {lr:g}"
    by = {v: {r["seed"]: _per_size(r) for r in raws if r["variant"] == v} for v in VARIANTS}
    seeds = sorted(set(by["hcs"]) & set(by["no_hcs"]))
    keys = [k for k in by["hcs"][seeds[0]]] if seeds else []
    sizes = [k for k in keys if isinstance(k, int)]
    rows, wins = [], 0
    for key in sorted(sizes, reverse=True) + [k for k in keys if not isinstance(k, int)]:
        h = [by["hcs"][s][key] for s in seeds]
        n = [by["no_hcs"][s][key] for s in seeds]
        d = [a - b for a, b in zip(h, n)]
        if isinstance(key, int):
            wins += statistics.fmean(d) > 0
        name = f"{key} of 18" if isinstance(key, int) else key
        rows.append((name, mean_sd(h), mean_sd(n), mean_sd(d, 3)))
    raw0 = raws[0]
    secs = {v: mean_sd([r["train_seconds"] for r in raws if r["variant"] == v], 0) for v in VARIANTS}
    text = (f"### HCS vs no HCS — {steps} optimizer steps, batch {raw0['batch_size']}, lr {lr:g}, "
            f"seeds {', '.join(map(str, seeds))}\n\n"
            f"Test accuracy (mean ± sd over {len(seeds)} seeds) by channels available at test time "
            f"(each size: mean over {raw0['per_size']} seeded subsets, the same for every run; chance 0.059). "
            f"HCS wins on {wins} of {len(sizes)} subset sizes.\n\n"
            + markdown_table(("channels at test", LABELS["hcs"], LABELS["no_hcs"], "HCS − no HCS"), rows)
            + f"\n\nTraining wall time per run (s, shared 2-core CPU, 1 thread): HCS {secs['hcs']}, "
              f"no HCS {secs['no_hcs']}.\n")
    summaries, spread = {}, {}
    for v in VARIANTS:
        recs = []
        for s in seeds:
            for key, acc in by[v][s].items():
                recs.append({"seed": s, "key": key, "acc": acc})
        df = pd.DataFrame(recs)
        table = []
        for key, g in df.groupby("key", sort=False):
            size = key if isinstance(key, int) else NAMED_SIZES[key]
            subset = f"{key} channels" if isinstance(key, int) else key
            table.append({"subset": subset, "size": size, "mean": g.acc.mean(), "min": g.acc.min(), "max": g.acc.max(),
                          "sd": g.acc.std(ddof=1) if len(g) > 1 else 0.0})
        t = pd.DataFrame(table)
        sized = t[t.subset.str.endswith("channels")].sort_values("size")
        summaries[LABELS[v]] = pd.concat([sized, t[~t.subset.str.endswith("channels")]], ignore_index=True)
        spread[LABELS[v]] = sized[["size", "sd"]]
    png = RESULTS / f"hcs_channelvit_steps{steps}.png"
    plot_comparison(summaries, png, chance=1 / 17, spread=spread,
                    title=f"SYNTHETIC So2Sat · ChannelViT-T/16, {steps} steps, {len(seeds)} seeds")
    return text + f"\nPlot: `{png.relative_to(RESULTS.parent.parent.parent)}`\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=480, help="optimizer steps of every run (demo: 480)")
    parser.add_argument("--lr", type=float, default=4e-3, help="peak learning rate (demo: 4e-3)")
    parser.add_argument("--num-samples", type=int, default=1536, help="synthetic training patches (demo: 1536)")
    parser.add_argument("--per-size", type=int, default=6, help="channel subsets evaluated per subset size")
    parser.add_argument("--runs", default="runs/claims", help="run folders (checkpoints, logs, data)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", action="store_true", help="only aggregate the raw results")
    args = parser.parse_args(argv)
    from geovit._io import atomic_write_text

    setup_threads(args.threads)
    quiet_lightning()
    run_cli_banner("hcs_channelvit", args)
    if not args.report:
        for seed in args.seeds:
            for variant in args.variants:
                raw = train_and_evaluate(seed, variant, args)
                write_raw(f"hcs_steps{args.steps}_lr{args.lr:g}_seed{seed}_{variant}", raw)
                full = _per_size(raw)
                print(f"[SYNTHETIC DATA] seed {seed} {variant}: all 18 {full[18]:.3f}, S1 {full['Sentinel-1 only']:.3f}, "
                      f"S2 {full['Sentinel-2 only']:.3f} ({raw['train_seconds']} s training)", flush=True)
    text = report(args.steps, args.lr)
    atomic_write_text(RESULTS / f"hcs_channelvit_steps{args.steps}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
