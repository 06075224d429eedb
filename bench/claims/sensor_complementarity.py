"""Claim: in the built-in synthetic So2Sat, Sentinel-1 and Sentinel-2 carry complementary information.

A per-band-statistics classifier — logistic regression on the mean and standard deviation of
every z-scored band (the release's normalisation) — is fitted on Sentinel-1 only, Sentinel-2 only
and both, per data seed, on patches rendered by ``geovit.data.so2sat_synthetic.render_scenes``.

    python bench/claims/sensor_complementarity.py --seeds 0 1 2 --per-class 60

Writes ``bench/claims/results/sensor_complementarity.md`` (mean ± sd over seeds).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from _claims import RESULTS, load_average, markdown_table, mean_sd  # noqa: E402


def features(s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Per-band mean and std of the z-scored 18 bands (S1 then S2)."""
    from geovit.data.so2sat import SO2SAT_STATS

    mean, std = (np.asarray(v) for v in SO2SAT_STATS["2"])
    x = (np.concatenate([s1, s2], -1) - mean) / std
    return np.concatenate([x.mean((1, 2)), x.std((1, 2))], -1)


def main(argv=None) -> int:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from geovit._io import atomic_write_text
    from geovit.data.so2sat_synthetic import render_scenes

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--per-class", type=int, default=60, help="training patches per class (test: half)")
    args = parser.parse_args(argv)
    print(f"sensor_complementarity: {vars(args)}, load average {load_average()}", flush=True)
    s1c = list(range(8)) + [18 + c for c in range(8)]
    s2c = list(range(8, 18)) + [18 + c for c in range(8, 18)]
    cols = {"Sentinel-1 only": s1c, "Sentinel-2 only": s2c, "both": s1c + s2c}
    acc: dict[str, list[float]] = {k: [] for k in cols}
    per_class: dict[str, list[np.ndarray]] = {k: [] for k in cols}
    secs = []
    for seed in args.seeds:
        rng = np.random.default_rng([seed, 99])
        ytr, yte = np.repeat(np.arange(17), args.per_class), np.repeat(np.arange(17), args.per_class // 2)
        t0 = time.time()
        xtr, xte = features(*render_scenes(ytr, rng)), features(*render_scenes(yte, rng))
        secs.append((time.time() - t0) / (len(ytr) + len(yte)) * 1e3)
        for name, c in cols.items():
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
            pred = clf.fit(xtr[:, c], ytr).predict(xte[:, c])
            acc[name].append(float((pred == yte).mean()))
            per_class[name].append(np.array([(pred[yte == k] == k).mean() for k in range(17)]))
        print(f"seed {seed}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in acc.items()), flush=True)
    from geovit.data.so2sat import CLASSES

    rows = [(name, mean_sd(v)) for name, v in acc.items()]
    cls_rows = [(f"{k} {CLASSES[k]}", *[f"{np.mean([p[k] for p in per_class[n]]):.2f}" for n in cols]) for k in range(17)]
    text = (f"### Sentinel-1 vs Sentinel-2 vs both: per-band mean/std + logistic regression\n\n"
            f"{args.per_class} training / {args.per_class // 2} test patches per class, seeds "
            f"{', '.join(map(str, args.seeds))}; chance 0.059. Rendering: {np.mean(secs):.1f} ms per patch "
            f"(1 core, load average {load_average()}).\n\n"
            + markdown_table(("bands", "test accuracy (mean ± sd)"), rows)
            + "\n\nPer-class recall (mean over seeds):\n\n" + markdown_table(("class", *cols), cls_rows) + "\n")
    atomic_write_text(RESULTS / "sensor_complementarity.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
