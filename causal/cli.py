"""``geovit cate``: units CSV + imagery → multi-scale embeddings → causal forests → CATE and RATE.

Example (the simulated RCT of ``causal.simulate``)::

    geovit cate --simulate sim/ --out sim/results          # writes and analyses a simulated RCT
    geovit cate --units units.csv --raster mosaic.tif --scales 32,64,256 \\
        [--encoder ENC.safetensors | channelvit_small_patch8 | timm:resnet18 | tiny] --out DIR

Writes into ``DIR``: ``cate.csv`` (per-unit τ̂ with its confidence interval from the forest on
the chosen scale combination, and the out-of-sample τ̂ of the selection step), ``rate.csv`` (RATE,
SE and RATE Ratio of every scale subset on the selection units, and of the two winners on the
held-out confirmation units), ``toc.csv`` / ``toc.png`` (TOC curves of the best single scale and
the best multi-scale subset) and ``summary.json``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

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


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def _per_scale_pca(ds, n: int, seed: int) -> dict:
    from causal.embeddings import combine

    return {int(s): combine(ds, [int(s)], pca=n, random_state=seed) for s in ds["scale"].values}


def run(args: argparse.Namespace) -> int:
    from causal.embeddings import embed_units
    from causal.estimators import MultiScaleCATE, scale_search
    from causal.plots import plot_toc, toc_table
    from causal.units import read_rct_units

    out = Path(args.out)
    if args.simulate:
        from causal.simulate import simulate_rct

        sim = simulate_rct(args.simulate, n_units=args.sim_units, seed=args.seed)
        args.units, args.raster = str(sim.units_csv), str(sim.raster)
        if args.scales is None:
            args.scales = [sim.small_px, sim.small_px * 2, sim.tile_px]
        print(f"wrote a simulated RCT (SYNTHETIC) to {args.simulate}: {sim.units_csv.name}, {sim.raster.name}")
    if not args.units or not args.raster:
        raise GeovitError("--units and --raster are required (or --simulate DIR)")
    scales = args.scales or [32, 64, 256]
    coords = (args.x_col, args.y_col) if args.x_col or args.y_col else (args.lon_col, args.lat_col)
    if (args.x_col is None) != (args.y_col is None):
        raise GeovitError("--x-col and --y-col go together (coordinates in the raster's CRS)")
    units = read_rct_units(args.units, id_col=args.id_col, treatment_col=args.treatment_col,
                           outcome_col=args.outcome_col, cluster_col=args.cluster_col, coord_cols=coords,
                           treated_value=args.treated_value)
    ds = embed_units(units, args.raster, args.encoder, scales, id_col=args.id_col, lon_col=args.lon_col,
                     lat_col=args.lat_col, x_col=args.x_col, y_col=args.y_col, units_crs=args.units_crs,
                     channels=args.channels, normalize=args.normalize, batch_size=args.batch_size,
                     cache=args.cache or out / "embeddings", on_outside=args.outside, device=args.device)
    kept = units.set_index(units[args.id_col].astype(str)).loc[ds["unit"].values.astype(str)]
    y, w = kept["Y"].to_numpy(), kept["W"].to_numpy()
    clusters = kept[args.cluster_col].to_numpy() if args.cluster_col else None
    X = _per_scale_pca(ds, args.pca, args.seed) if args.pca else ds
    template = MultiScaleCATE(propensity=args.propensity, n_estimators=args.n_estimators,
                              n_jobs=args.n_jobs, random_state=args.seed)
    search = scale_search(y, w, X, estimator=template, max_k=min(args.max_k, len(scales)), holdout_fraction=args.holdout,
                          swap=not args.no_swap, n_bootstrap=args.n_bootstrap, clusters=clusters,
                          random_state=args.seed, progress=True)

    table = search.table.drop(columns="subset").assign(stage="selection")
    if search.confirmation is not None:
        table = pd.concat([table, search.confirmation.assign(stage="confirmation")], ignore_index=True)
    _write_csv(table, out / "rate.csv")

    chosen = list(search.table.iloc[0]["subset"])
    final = MultiScaleCATE(scales=chosen, propensity=args.propensity, n_estimators=args.n_estimators,
                           n_jobs=args.n_jobs, random_state=args.seed).fit(y, w, X, groups=clusters)
    tau = final.effect(X)
    lo, hi = final.effect_interval(X)
    sel_ev = search.evaluations[tuple(chosen)]
    oos = np.full(len(y), np.nan)
    oos[search.selection_units] = sel_ev.cate_out_of_sample(len(search.selection_units))
    cate = pd.DataFrame({args.id_col: kept.index, "x": ds["x"].values, "y": ds["y"].values, "tau_hat": tau,
                         "tau_lower": lo, "tau_upper": hi, "tau_hat_out_of_sample": oos,
                         "scales": "+".join(map(str, chosen))})
    _write_csv(cate, out / "cate.csv")

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

    summary = {"units": len(y), "skipped_units": int(len(units) - len(y)), "scales": scales, "chosen": chosen,
               "best_single": list(search.best_single),
               "best_multi": None if search.best_multi is None else list(search.best_multi),
               "multiscale_gain": search.multiscale_gain, "selection_gain": search.selection_gain,
               "encoder": ds.attrs["encoder"], "ate_dr": float(np.ravel(final.forest_.ate_)[0])}
    # NaN gains (no multi-scale winner) become null: summary.json stays valid JSON
    summary = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in summary.items()}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=float, allow_nan=False))
    with pd.option_context("display.width", 120, "display.precision", 3):
        print(table.to_string(index=False))
    print(f"chosen scales {'+'.join(map(str, chosen))}; Multi-scale Gain (confirmation) "
          f"{search.multiscale_gain:.3f}; wrote cate.csv, rate.csv, toc.csv, toc.png, summary.json to {out}")
    return 0


def _count(minimum: int):
    """argparse type: an integer >= ``minimum`` (argparse turns the ValueError into a usage error)."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise ValueError(text)
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def add_commands(sub) -> None:
    p = sub.add_parser("cate", help="multi-scale image embeddings → causal forest CATE, RATE and TOC for an RCT",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("input and output")
    io.add_argument("--units", help="CSV with one row per unit: id, coordinates, treatment, outcome")
    io.add_argument("--raster", help="GeoTIFF mosaic or zarr cube (band, y, x) covering the units")
    io.add_argument("--simulate", metavar="DIR", help="write a simulated RCT into DIR and analyse it")
    io.add_argument("--sim-units", type=int, default=600, help="units of the simulated RCT (default 600)")
    io.add_argument("--out", required=True, help="output folder")
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
    emb.add_argument("--encoder", default="tiny",
                     help="geovit .safetensors, geovit model name, timm:NAME, or 'tiny' (random CNN baseline)")
    emb.add_argument("--channels", help="geovit channel preset/names of the raster bands (channel-adaptive encoders)")
    emb.add_argument("--normalize", default="zscore", choices=["zscore", "minmax", "none"])
    emb.add_argument("--outside", default="error", choices=["error", "skip"],
                     help="units outside the raster: fail naming them, or skip them")
    emb.add_argument("--batch-size", type=int, default=64)
    emb.add_argument("--device", default=None, help="cuda / cpu (default: cuda when present)")
    est = p.add_argument_group("estimation")
    est.add_argument("--propensity", type=_propensity, default=0.5,
                     help="known P(treated) of the RCT, or 'estimate' (default 0.5)")
    est.add_argument("--pca", type=_count(0), default=0, help="PCA components per scale (0 = raw embeddings)")
    est.add_argument("--max-k", type=_count(1), default=2, help="largest scale subset searched (default 2 = pairs)")
    est.add_argument("--holdout", type=float, default=0.5, help="fraction of units held out to confirm the choice")
    est.add_argument("--no-swap", action="store_true", help="score one half only (default swaps halves)")
    est.add_argument("--n-estimators", type=int, default=500)
    est.add_argument("--n-bootstrap", type=int, default=200)
    est.add_argument("--n-jobs", type=int, default=1)
    est.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
