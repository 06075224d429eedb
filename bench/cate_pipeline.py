"""Benchmark: multi-scale CATE pipeline end to end, and RATE at scale (not a test).

Stages, on a simulated RCT (``causal.simulate.simulate_rct``) with ``--units`` units × 3 scales:

1. embedding: ``causal.embeddings.embed_units`` with a frozen encoder (default: the package's
   fixed-seed ``TinyConvEncoder``, 64 px, 256 features; ``--encoder vit_tiny``: timm ViT-Tiny/16
   at 64 px with random weights, 192 features -- the cost is what matters here);
2. forest: ``MultiScaleCATE.fit`` on all units (the CATE map) and the grf RATE recipe
   (``evaluate``: 2 halves × (train forest + evaluation forest));
3. RATE: AUTOC + TOC with R = 200 half-sample replicates on the evaluation half.

Then RATE on ``--rate-units`` (1e6) units: time without bootstrap (vectorised), time with R = 200,
and the traced peak memory of the bootstrap for R = 20 and R = 200 -- equal peaks show that the
replicates reuse O(n) scratch space instead of holding R half-samples (which would take
R·n/2·8 bytes for the index vectors alone, as grf's ``boot_grf`` does).

``--coverage``: instead, a coverage study of the CATE intervals on the simulated trial of
``geovit cate --simulate`` (``--units`` units, default effects τ = 1 + 3·blob + 3·edge, crops 16 and
64 px, tiny encoder) for ``--seeds`` seeds. For each forest setting it reports the share of
units whose 95 % interval covers the true τ, the mean width, PEHE, grf's calibration coefficient
``differential.forest.prediction`` (β; > 1 = effects shrunk towards the mean), the bias of τ̂ at
the lowest and highest true effect, and the coverage of the doubly-robust group intervals
(quintiles of the out-of-bag τ̂) of each group's mean true effect. Mean (sd) over seeds.

    OMP_NUM_THREADS=2 python bench/cate_pipeline.py            # 5,000 units, 2 threads
    python bench/cate_pipeline.py --units 1000 --trees 100     # quick look
    nice python bench/cate_pipeline.py --coverage --units 600 --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import max_rss_mib, setup_threads, time_call  # noqa: E402


def _stage(name: str, fn, rows: list):
    t0 = time.perf_counter()
    out = fn()
    rows.append((name, time.perf_counter() - t0, max_rss_mib()))
    print(f"  {name:<34s} {rows[-1][1]:8.2f} s   peak RSS so far {rows[-1][2]:8.0f} MiB", flush=True)
    return out


def _encoder(kind: str, device=None):
    if kind == "tiny":
        return "tiny"
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64)
    from causal.embeddings import load_encoder

    return load_encoder(model, input_size=64, device=device)


def pipeline(args) -> None:
    from causal.embeddings import embed_units
    from causal.estimators import MultiScaleCATE
    from causal.rate import rank_average_treatment_effect
    from causal.simulate import simulate_rct

    rows: list = []
    print(f"pipeline: {args.units} units × scales {args.scales}, encoder {args.encoder}, "
          f"{args.trees} trees, {args.threads} threads")
    with tempfile.TemporaryDirectory() as tmp:
        sim = _stage("simulate scenes (setup)", lambda: simulate_rct(
            tmp, n_units=args.units, tile_px=64, small_px=16, effects={"blob": 1.0, "edge": 1.0},
            seed=0), rows)
        encoder = _encoder(args.encoder, args.device)
        ds = _stage("embedding (3 scales)", lambda: embed_units(
            sim.units_csv, sim.raster, encoder, scales=args.scales, progress=False, batch_size=128,
            device=args.device), rows)
        units = sim.units.set_index("unit_id").loc[ds["unit"].values]
        y, t = units["outcome"].to_numpy(), units["treatment"].to_numpy()
        model = MultiScaleCATE(propensity=0.5, n_estimators=args.trees, n_jobs=args.threads, random_state=0)
        fitted = _stage("forest fit (all units)", lambda: model.fit(y, t, ds), rows)
        _stage("effect + effect_interval", lambda: fitted.effect_interval(ds), rows)
        ev = _stage("RATE recipe: 4 forests on halves", lambda: model.evaluate(
            y, t, ds, n_bootstrap=0, random_state=0), rows)
        rate = _stage("RATE AUTOC, R=200 (eval half)", lambda: rank_average_treatment_effect(
            ev.dr_scores[0], ev.priorities[0], n_bootstrap=200, random_state=0), rows)
    print(f"  features per unit: {ds.sizes['feature']} × {ds.sizes['scale']} scales; "
          f"RATE ratio (half A→B) = {rate.rate_ratio:.2f}")
    total = sum(r[1] for r in rows[1:])
    print(f"  total excluding scene simulation: {total:.1f} s; "
          + ", ".join(f"{name.split(' (')[0]} {100 * sec / total:.0f} %" for name, sec, _ in rows[1:]))


def rate_at_scale(n: int) -> None:
    from causal.rate import rank_average_treatment_effect

    rng = np.random.default_rng(0)
    priorities = rng.normal(size=n)
    scores = priorities + rng.normal(scale=3.0, size=n)
    print(f"RATE on {n:,} units (AUTOC, default q grid)")
    t_point = time_call(lambda: rank_average_treatment_effect(scores, priorities, n_bootstrap=0),
                        warmup=1, repeat=5)
    t_sort = time_call(lambda: np.argsort(priorities, kind="stable"), warmup=1, repeat=5)
    print(f"  point estimate + TOC (no bootstrap):  {t_point:.3f} s (median of 5) = "
          f"{t_point / t_sort:.1f}× one stable argsort of the priorities ({t_sort:.3f} s, same process)")
    t0 = time.perf_counter()
    rank_average_treatment_effect(scores, priorities, n_bootstrap=200, random_state=0)
    t_boot = time.perf_counter() - t0
    print(f"  with R = 200 half-sample replicates:  {t_boot:.2f} s  "
          f"({(t_boot - t_point) / 200 * 1e3:.1f} ms per replicate)")
    data_mib = 2 * n * 8 / 2**20
    peaks = {}
    for reps in (20, 200):
        tracemalloc.start()
        rank_average_treatment_effect(scores, priorities, n_bootstrap=reps, random_state=0)
        peaks[reps] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    copies = 200 * n / 2 * 8 / 2**20
    print(f"  input arrays: {data_mib:.0f} MiB; traced peak R=20: {peaks[20]:.0f} MiB, "
          f"R=200: {peaks[200]:.0f} MiB (ratio {peaks[200] / peaks[20]:.2f}); "
          f"R half-sample index copies alone would be {copies:.0f} MiB")


COVERAGE_SETTINGS = {
    "default (500 trees, little bags of 4)": {},
    "2000 trees (grf default)": {"n_estimators": 2000},
    "little bags of 2 (grf ci.group.size)": {"subforest_size": 2},
    "little bags of 8": {"subforest_size": 8},
    "min leaf 1": {"min_samples_leaf": 1},
    "no honesty": {"honest": False},
    "pilot feature selection (1 x mean)": {"select_features": 1.0},
    "pilot selection + no honesty": {"select_features": 1.0, "honest": False},
}


def coverage_study(args) -> None:
    import pandas as pd

    from causal.calibration import group_average_effects, interval_coverage, test_calibration
    from causal.embeddings import embed_units
    from causal.estimators import MultiScaleCATE
    from causal.simulate import simulate_rct

    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"coverage of 95 % CATE intervals: simulated RCT, {args.units} units, crops 16+64 px, tiny encoder, "
          f"seeds {seeds}")
    rows = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            sim = simulate_rct(tmp, n_units=args.units, seed=seed)
            ds = embed_units(sim.units_csv, sim.raster, "tiny", [16, 64], progress=False, device=args.device)
        units = sim.units.set_index("unit_id").loc[ds["unit"].values]
        y, w, tau = units["outcome"].to_numpy(), units["treatment"].to_numpy(), units["tau_true"].to_numpy()
        for name, settings in COVERAGE_SETTINGS.items():
            t0 = time.perf_counter()
            model = MultiScaleCATE(propensity=0.5, random_state=seed, n_jobs=args.threads, **settings).fit(y, w, ds)
            lo, hi = model.effect_interval(ds)
            tau_hat = model.effect(ds)
            groups = group_average_effects(model.dr_scores(), model.oob_effect(), truth=tau)
            rows.append({"setting": name, "seed": seed, "coverage": interval_coverage(lo, hi, tau),
                         "width": float(np.mean(hi - lo)), "pehe": float(np.sqrt(np.mean((tau_hat - tau) ** 2))),
                         "beta_diff": test_calibration(model).differential_forest_prediction,
                         "bias_low": float(np.mean(tau_hat[tau == tau.min()] - tau.min())),
                         "bias_high": float(np.mean(tau_hat[tau == tau.max()] - tau.max())),
                         "group_coverage": float(groups["covered"].mean()),
                         "seconds": time.perf_counter() - t0})
            r = rows[-1]
            print(f"  seed {seed} {name:<40s} coverage {r['coverage']:.3f} width {r['width']:.2f} "
                  f"PEHE {r['pehe']:.2f} beta {r['beta_diff']:.2f} groups {r['group_coverage']:.2f} "
                  f"({r['seconds']:.0f} s)", flush=True)
    table = pd.DataFrame(rows).drop(columns="seed").groupby("setting", sort=False)
    mean, sd = table.mean(), table.std()
    print(f"\nmean (sd) over {len(seeds)} seeds; load average {os.getloadavg()[0]:.1f}")
    cols = ["coverage", "width", "pehe", "beta_diff", "bias_low", "bias_high", "group_coverage"]
    print(f"{'setting':<40s} " + " ".join(f"{c:>15s}" for c in cols))
    for name in mean.index:
        print(f"{name:<40s} " + " ".join(f"{mean.loc[name, c]:7.2f} ({sd.loc[name, c]:4.2f})" for c in cols))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=5000)
    parser.add_argument("--scales", type=lambda s: [int(v) for v in s.split(",")], default=[16, 32, 64])
    parser.add_argument("--encoder", choices=["tiny", "vit_tiny"], default="tiny")
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rate-units", type=int, default=1_000_000)
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--coverage", action="store_true", help="run the interval coverage study instead")
    parser.add_argument("--device", default=None, help="encoder device (default: cuda when present, else cpu)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the coverage study")
    args = parser.parse_args()
    setup_threads(args.threads)
    warnings.simplefilter("ignore")
    if args.coverage:
        coverage_study(args)
        return
    if not args.skip_pipeline:
        pipeline(args)
    rate_at_scale(args.rate_units)


if __name__ == "__main__":
    main()
