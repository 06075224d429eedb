"""``geovit cate``: units CSV + imagery → multi-scale embeddings → causal forests → CATE and RATE.

Example (the simulated RCT of ``causal.simulate``)::

    geovit cate --simulate sim/ --out sim/results          # writes and analyses a simulated RCT
    geovit cate --units units.csv --raster mosaic.tif --scales 32,64,256 \\
        [--encoder ENC.safetensors | channelvit_small_patch8 | timm:resnet18 | tiny] --out DIR
    geovit cate --units units.csv --raster emb.zarr --out DIR   # a store of geovit embed --raster: no re-encoding

Writes into ``DIR``:

* ``cate.csv``: per unit τ̂ (``tau_hat``, forest on the chosen scale combination), its standard
  error ``tau_se`` and the interval ``tau_ci_lower_95`` / ``tau_ci_upper_95`` (the number is the
  level in %, set by ``--ci-level``), the out-of-bag τ̂ (``tau_hat_oob``) and its quantile
  ``group``, and the out-of-sample τ̂ of the selection step;
* ``groups.csv``: the average effect of each quantile group of τ̂ from doubly-robust scores, with
  its interval (``ci_lower_95`` / ``ci_upper_95``);
* ``rate.csv`` (RATE, SE and RATE Ratio of every scale subset on the selection units, and of the
  two winners on the held-out confirmation units), ``toc.csv`` / ``toc.png`` (TOC curves of the
  best single scale and the best multi-scale subset) and ``summary.json`` (with grf's
  calibration test of the final forest, and the intervals' coverage when the units table holds
  the true effect ``tau_true``, as a simulated trial does).

What the intervals mean. The per-unit intervals are τ̂(x) ± z·σ̂(x), σ̂ the forest's
bootstrap-of-little-bags standard error: they account for sampling noise, not for the forest's
smoothing bias, so where the forest shrinks effects towards their mean (calibration test:
``differential.forest.prediction`` clearly above 1) they cover the true τ(x) far less often
than their level says. The group intervals cover each group's average effect whatever that
bias. Options a grf user would try for the per-unit intervals: ``--select-features 1``
(pilot-forest variable selection), ``--no-honesty`` (small samples), ``--n-estimators`` (more
trees make σ̂ precise; they do not remove bias).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from geovit.cli.options import bounded
from geovit._io import atomic_path, atomic_savefig, atomic_write_text
from geovit.errors import GeovitError


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated crop widths in pixels, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive crop widths, got {text!r}")
    return values


def _propensity(text: str):
    if text == "estimate":
        return None
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability or 'estimate', got {text!r}") from None
    if not 0 < p < 1:
        raise argparse.ArgumentTypeError(f"the propensity must lie strictly between 0 and 1, got {p}")
    return p


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-zero integer (-1 = all cores), got {text!r}") from None
    if value == 0:
        raise argparse.ArgumentTypeError("expected a non-zero integer (-1 = all cores), got 0")
    return value


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def _folder(value, flag: str) -> Path:
    """``value`` as a folder that exists afterwards; a file in the way is a clear error."""
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise GeovitError(f"{flag} {path}: exists and is a file; expected a folder (existing or new)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise GeovitError(f"{flag} {path}: cannot create the folder, part of the path is a file") from None
    return path


def _per_scale_pca(ds, n: int, seed: int) -> dict:
    from causal.embeddings import combine

    return {int(s): combine(ds, [int(s)], pca=n, random_state=seed) for s in ds["scale"].values}


def _pct(level: float) -> str:
    return f"{100 * level:.10g}"


def run(args: argparse.Namespace) -> int:
    """Run ``geovit cate`` with the parsed arguments (see the module docstring for what it writes).

    Returns:
        0. Bad input raises :class:`geovit.errors.GeovitError` (``geovit`` prints it and exits 2).
    """
    from causal.calibration import ci_column_names, group_average_effects, interval_coverage, test_calibration
    from causal.embeddings import embed_units, embedding_stores
    from causal.estimators import MultiScaleCATE, scale_search
    from causal.plots import plot_toc, toc_table
    from causal.units import read_rct_units

    out = _folder(args.out, "--out")
    if args.cache:
        _folder(args.cache, "--cache")
    if args.simulate:
        from causal.simulate import simulate_rct

        _folder(args.simulate, "--simulate")
        sim = simulate_rct(args.simulate, n_units=args.sim_units, seed=args.seed)
        args.units, args.raster = str(sim.units_csv), str(sim.raster)
        if args.scales is None:
            args.scales = [sim.small_px, sim.small_px * 2, sim.tile_px]
        print(f"wrote a simulated RCT (SYNTHETIC) to {args.simulate}: {sim.units_csv.name}, {sim.raster.name}")
    if not args.units or not args.raster:
        raise GeovitError("--units and --raster are required (or --simulate DIR)")
    stores = embedding_stores(args.raster)
    if stores is not None:  # features of geovit embed: one crop width (the store's window), no encoder
        if args.encoder is not None or args.channels:
            raise GeovitError(f"--encoder/--channels: do not apply to --raster {args.raster}, an embedding store of "
                              "geovit embed (its checkpoint encoded the windows)")
        encoder, scales = None, args.scales
    else:
        encoder, scales = args.encoder or "tiny", args.scales or [32, 64, 256]
    coords = (args.x_col, args.y_col) if args.x_col or args.y_col else (args.lon_col, args.lat_col)
    if (args.x_col is None) != (args.y_col is None):
        raise GeovitError("--x-col and --y-col go together (coordinates in the raster's CRS)")
    units = read_rct_units(args.units, id_col=args.id_col, treatment_col=args.treatment_col,
                           outcome_col=args.outcome_col, cluster_col=args.cluster_col, coord_cols=coords,
                           treated_value=args.treated_value)
    ds = embed_units(units, stores or args.raster, encoder, scales, id_col=args.id_col, lon_col=args.lon_col,
                     lat_col=args.lat_col, x_col=args.x_col, y_col=args.y_col, units_crs=args.units_crs,
                     channels=args.channels, normalize=args.normalize, batch_size=args.batch_size,
                     cache=args.cache or out / "embeddings", on_outside=args.outside, on_nodata=args.nodata,
                     device=args.device)
    scales = [int(s) for s in ds["scale"].values]
    kept = units.set_index(units[args.id_col].astype(str)).loc[ds["unit"].values.astype(str)]
    y, w = kept["Y"].to_numpy(), kept["W"].to_numpy()
    arms = np.bincount(w, minlength=2)
    if arms.min() < 8:
        raise GeovitError(f"--units {args.units}: {arms[1]} treated and {arms[0]} control units are left after "
                          "skipping; the scale search needs at least 8 of each (more for stable results)")
    clusters = kept[args.cluster_col].to_numpy() if args.cluster_col else None
    X = _per_scale_pca(ds, args.pca, args.seed) if args.pca else ds
    forest_options = dict(propensity=args.propensity, n_estimators=args.n_estimators, n_jobs=args.n_jobs,
                          min_samples_leaf=args.min_leaf, honest=not args.no_honesty,
                          subforest_size=args.ci_group_size, random_state=args.seed)
    template = MultiScaleCATE(**forest_options)
    template._check_params()  # bad forest settings fail before the long search
    search = scale_search(y, w, X, estimator=template, max_k=min(args.max_k, len(scales)),
                          holdout_fraction=args.holdout, swap=not args.no_swap, n_bootstrap=args.n_bootstrap,
                          clusters=clusters, random_state=args.seed, progress=True)

    table = search.table.drop(columns="subset").assign(stage="selection")
    if search.confirmation is not None:
        table = pd.concat([table, search.confirmation.assign(stage="confirmation")], ignore_index=True)
    _write_csv(table, out / "rate.csv")

    chosen = list(search.table.iloc[0]["subset"])
    final = MultiScaleCATE(scales=chosen, select_features=args.select_features,
                           **forest_options).fit(y, w, X, groups=clusters)
    tau = final.effect(X)
    se = final.effect_stderr(X)
    lo, hi = final.effect_interval(X, alpha=1 - args.ci_level)
    oob = final.oob_effect()
    scores = final.dr_scores()
    truth = None  # a simulated trial's units table holds the true effects: then coverage is measured
    if "tau_true" in kept:
        values = pd.to_numeric(kept["tau_true"], errors="coerce").to_numpy(float)
        if np.isfinite(values).all():
            truth = values
        else:
            print(f"note: column 'tau_true' of {args.units} is not a number for every unit; coverage not measured")
    groups = group_average_effects(scores, oob, n_groups=min(args.groups, len(y) // 2), clusters=clusters,
                                   level=args.ci_level, truth=truth)
    rank = np.empty(len(oob), dtype=int)
    rank[np.argsort(oob, kind="stable")] = np.arange(len(oob))
    sel_ev = search.evaluations[tuple(chosen)]
    oos = np.full(len(y), np.nan)
    oos[search.selection_units] = sel_ev.cate_out_of_sample(len(search.selection_units))
    lo_name, hi_name = ci_column_names(args.ci_level, prefix="tau_ci")
    cate = pd.DataFrame({args.id_col: kept.index, "x": ds["x"].values, "y": ds["y"].values, "tau_hat": tau,
                         "tau_se": se, lo_name: lo, hi_name: hi, "tau_hat_oob": oob,
                         "group": rank * len(groups) // len(oob) + 1, "tau_hat_out_of_sample": oos,
                         "scales": "+".join(map(str, chosen))})
    _write_csv(cate, out / "cate.csv")
    _write_csv(groups, out / "groups.csv")
    try:
        calibration, calibration_error = test_calibration(final), None
    except GeovitError as err:  # e.g. τ̂ constant: nothing to calibrate, the rest still stands
        calibration, calibration_error = None, str(err)

    best = {f"best single: {'+'.join(map(str, search.best_single))}": search.evaluations[tuple(search.best_single)]}
    if search.best_multi is not None:
        best[f"best multi: {'+'.join(map(str, search.best_multi))}"] = search.evaluations[tuple(search.best_multi)]
    _write_csv(pd.concat([toc_table(ev).assign(rule=k) for k, ev in best.items()], ignore_index=True), out / "toc.csv")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = plot_toc(best)
    atomic_savefig(ax.figure, out / "toc.png", dpi=120, bbox_inches="tight")
    plt.close(ax.figure)

    coverage = None
    if truth is not None:
        coverage = {"ci_level": args.ci_level, "unit_intervals": interval_coverage(lo, hi, truth),
                    "unit_interval_mean_width": float(np.mean(hi - lo)),
                    "group_intervals": float(groups["covered"].mean()), "n_groups": len(groups),
                    "pehe": float(np.sqrt(np.mean((tau - truth) ** 2)))}
    summary = {"units": len(y), "skipped_units": int(len(units) - len(y)),
               "nodata_policy": args.nodata, "nodata_units": int(ds.attrs.get("nodata_units", 0)),
               "scales": scales, "chosen": chosen,
               "best_single": list(search.best_single),
               "best_multi": None if search.best_multi is None else list(search.best_multi),
               "multiscale_gain": search.multiscale_gain, "selection_gain": search.selection_gain,
               "encoder": ds.attrs["encoder"], "ate_dr": float(np.ravel(final.forest_.ate_)[0]),
               "ci_level": args.ci_level,
               "intervals": "tau_ci_*: forest sampling variance only (bootstrap of little bags); groups.csv: "
                            "doubly-robust group averages",
               "selected_features": int(final.selected_features_.size),
               "calibration": calibration.to_dict() if calibration is not None else {"error": calibration_error},
               "coverage": coverage}
    # NaN gains (no multi-scale winner) become null: summary.json stays valid JSON
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return None if isinstance(v, float) and not np.isfinite(v) else v

    atomic_write_text(out / "summary.json", json.dumps(clean(summary), indent=2, default=float, allow_nan=False))
    with pd.option_context("display.width", 120, "display.precision", 3):
        print(table.to_string(index=False))
    print(f"chosen scales {'+'.join(map(str, chosen))}; Multi-scale Gain (confirmation) "
          f"{search.multiscale_gain:.3f}")
    if calibration is None:
        print(f"calibration test of the final forest: not available ({calibration_error})")
    else:
        print(f"calibration test of the final forest (grf test_calibration):\n{calibration}")
    if calibration is not None and calibration.slope_one_t > 2:
        print(f"note: differential.forest.prediction is {calibration.differential_forest_prediction:.2f} > 1: the "
              f"forest shrinks effects towards their mean, so the per-unit {_pct(args.ci_level)} % intervals "
              f"(sampling variance only) will cover the true effects less often than {_pct(args.ci_level)} %; "
              "the group intervals of groups.csv do not have this problem. On the simulated trial "
              "--select-features 1 --no-honesty (pilot variable selection, adaptive forest) brought the forest "
              "back to calibration and the per-unit coverage close to its level (data_cards/simulated_rct.md)")
    with pd.option_context("display.width", 120, "display.precision", 3):
        print(f"average effect per quantile group of the out-of-bag τ̂ ({_pct(args.ci_level)} % intervals):")
        print(groups.to_string(index=False))
    if coverage is not None:
        print(f"coverage of the true effect (tau_true): per-unit {_pct(args.ci_level)} % intervals "
              f"{coverage['unit_intervals']:.1%} (mean width {coverage['unit_interval_mean_width']:.2f}); "
              f"group intervals {coverage['group_intervals']:.0%} of {coverage['n_groups']}")
    print(f"wrote cate.csv, groups.csv, rate.csv, toc.csv, toc.png, summary.json to {out}")
    return 0


def add_commands(sub) -> None:
    """Register ``geovit cate`` on the ``geovit`` subparsers ``sub`` (entry point ``geovit.commands``)."""
    p = sub.add_parser("cate", help="multi-scale image embeddings → causal forest CATE, RATE and TOC for an RCT",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("input and output")
    io.add_argument("--units", help="CSV with one row per unit: id, coordinates, treatment, outcome")
    io.add_argument("--raster", help="GeoTIFF mosaic or zarr cube (band, y, x) covering the units, or an embedding "
                                     "store of geovit embed --raster (each unit takes its nearest window's features)")
    io.add_argument("--simulate", metavar="DIR", help="write a simulated RCT into DIR and analyse it")
    io.add_argument("--sim-units", type=bounded(int, 2), default=600, help="units of the simulated RCT (default 600)")
    io.add_argument("--out", required=True, help="output folder (created if needed; must not be a file)")
    io.add_argument("--cache", help="embedding cache folder (default OUT/embeddings)")
    cols = p.add_argument_group("columns of the units CSV")
    cols.add_argument("--id-col", default="unit_id")
    cols.add_argument("--lon-col", default="lon")
    cols.add_argument("--lat-col", default="lat")
    cols.add_argument("--x-col", help="x coordinate column (in the raster's CRS) instead of lon/lat")
    cols.add_argument("--y-col", help="y coordinate column (in the raster's CRS) instead of lon/lat")
    cols.add_argument("--units-crs", default="EPSG:4326", help="CRS of --lon-col/--lat-col (default WGS84)")
    cols.add_argument("--treatment-col", default="treatment")
    cols.add_argument("--treated-value", help="label of the treated arm when the treatment column holds labels")
    cols.add_argument("--outcome-col", default="outcome")
    cols.add_argument("--cluster-col", help="cluster (e.g. village) ids: clustered splits and bootstrap")
    emb = p.add_argument_group("embeddings")
    emb.add_argument("--scales", type=_int_list, default=None, help="crop widths in pixels (default 32,64,256)")
    emb.add_argument("--encoder", default=None,
                     help="geovit .safetensors, geovit model name, timm:NAME, or 'tiny' (random CNN baseline; the "
                          "default for imagery; not for an embedding store)")
    emb.add_argument("--channels", help="geovit channel preset/names of the raster bands (channel-adaptive encoders)")
    emb.add_argument("--normalize", default="zscore", choices=["zscore", "minmax", "none"])
    emb.add_argument("--outside", default="error", choices=["error", "skip"],
                     help="units outside the raster: fail naming them, or skip them")
    emb.add_argument("--nodata", default="skip", choices=["skip", "fill"],
                     help="units whose crops contain nodata or out-of-raster pixels: skip them (default; "
                          "how many and which is printed) or fill the gaps with the band mean")
    emb.add_argument("--batch-size", type=bounded(int, 1), default=64)
    emb.add_argument("--device", default=None, help="cuda / cpu (default: cuda when present)")
    est = p.add_argument_group("estimation")
    est.add_argument("--propensity", type=_propensity, default=0.5,
                     help="known P(treated) of the RCT, or 'estimate' (default 0.5)")
    est.add_argument("--pca", type=bounded(int, 0), default=0, help="PCA components per scale (0 = raw embeddings)")
    est.add_argument("--max-k", type=bounded(int, 1), default=2, help="largest scale subset searched (default 2 = pairs)")
    est.add_argument("--holdout", type=bounded(float, 0, 1, open_high=True), default=0.5,
                     help="fraction of units held out to confirm the choice (0 = none)")
    est.add_argument("--no-swap", action="store_true", help="score one half only (default swaps halves)")
    est.add_argument("--n-estimators", type=bounded(int, 1), default=500, help="trees per causal forest (grf: 2000)")
    est.add_argument("--n-bootstrap", type=bounded(int, 2), default=200, help="half-sample bootstrap replicates of RATE")
    est.add_argument("--n-jobs", type=_jobs, default=1)
    est.add_argument("--seed", type=int, default=0)
    unc = p.add_argument_group("uncertainty of the CATE (see the description above)")
    unc.add_argument("--ci-level", type=bounded(float, 0, 1, open_low=True, open_high=True), default=0.95,
                     help="level of the intervals: cate.csv columns tau_ci_lower_<level %%>/tau_ci_upper_<level %%> "
                          "(per unit, forest sampling variance only) and groups.csv ci_lower_/ci_upper_ "
                          "(group averages); default 0.95 → tau_ci_lower_95")
    unc.add_argument("--groups", type=bounded(int, 1), default=5, help="quantile groups of τ̂ in groups.csv (default 5)")
    unc.add_argument("--ci-group-size", type=bounded(int, 2), default=4,
                     help="trees per little bag of the variance estimate (grf ci.group.size: 2; default 4)")
    unc.add_argument("--min-leaf", type=bounded(int, 1), default=5, help="minimum leaf size (grf min.node.size, default 5)")
    unc.add_argument("--no-honesty", action="store_true",
                     help="grow the forests without honest splitting (grf's advice for small samples: less "
                          "bias, but the interval theory assumes honesty)")
    unc.add_argument("--select-features", type=bounded(float, 0), default=None, metavar="C",
                     help="final forest: keep the effect modifiers whose pilot-forest importance exceeds C × the "
                          "mean importance (1 = Athey & Wager 2019); the others stay in the nuisance models")
    p.set_defaults(func=run)
