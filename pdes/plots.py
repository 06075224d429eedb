"""Rollout outputs written atomically: CSV table, error-vs-time curve, GT / prediction / error strip.

The table and the curve put the model next to the baselines of :data:`pdes.rollout.BASELINES`
(persistence, mean of the given frames) scored on the same frames, so a reader sees what the
model adds. Columns of :func:`rollout_table` per scheme ``s`` (``scale_by_std``, ``scale_by_size``):
``last_step_s`` / ``mean_s`` for the model (error at the final frame / averaged over the predicted
frames) and ``<baseline>_last_step_s`` / ``<baseline>_mean_s`` for each baseline.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from geovit._io import atomic_savefig, atomic_write_text
from geovit.errors import GeovitError


def rollout_table(errors: Mapping[str, Mapping[str, np.ndarray]], ids: Sequence[Mapping]) -> list[dict]:
    """Rows of ``rollout_errors.csv``: one per trajectory and a final ``mean`` row.

    ``errors``: ``{"model" | baseline: {scheme: (N, T') channel-mean error per predicted frame,
    NaN where not predicted}}`` (as :func:`pdes.rollout.evaluate_rollout` gives, concatenated over
    batches); ``ids``: N dicts identifying the trajectories (e.g. ``trajectory, file, index``),
    copied to the front of each row. The mean row averages every error column over trajectories
    (NaN-aware) and leaves the identifying fields empty (``trajectory`` = ``"mean"``).
    """
    if "model" not in errors:
        raise GeovitError("errors: expected a 'model' entry next to the baselines")
    names = ["model"] + [k for k in errors if k != "model"]
    schemes = list(errors["model"])
    n = len(ids)
    rows = []
    for i in range(n):
        row = dict(ids[i])
        for name in names:
            prefix = "" if name == "model" else f"{name}_"
            for s in schemes:
                e = np.asarray(errors[name][s][i], dtype=float)
                finite = np.isfinite(e)
                row[f"{prefix}last_step_{s}"] = float(e[-1])
                row[f"{prefix}mean_{s}"] = float(np.mean(e[finite])) if finite.any() else float("nan")
        rows.append(row)
    mean_row = {key: "" for key in (ids[0] if n else {})}
    mean_row["trajectory"] = "mean"
    for key in rows[0] if rows else []:
        if key not in ids[0]:
            values = np.array([r[key] for r in rows], dtype=float)
            mean_row[key] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
    return rows + [mean_row]


def write_table(path: str | Path, rows: Sequence[Mapping]) -> None:
    """Write ``rows`` (mappings with the same keys, the first row's order) as CSV to ``path``, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.subplots(*args, **kwargs)


_BASELINE_STYLE = {"persistence": dict(color="tab:red", ls="--", label="persistence (last given frame)"),
                   "mean_given": dict(color="tab:green", ls=":", label="mean of the given frames")}


def _nan_stats(err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over trajectories per frame, NaN (not a warning) where no trajectory has a value."""
    err = np.asarray(err, dtype=float)
    count = np.isfinite(err).sum(axis=0)
    total = np.where(np.isfinite(err), err, 0.0).sum(axis=0)
    mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    sq = np.where(np.isfinite(err), (err - mean) ** 2, 0.0).sum(axis=0)
    return mean, np.where(count > 0, np.sqrt(sq / np.maximum(count, 1)), np.nan)


def write_error_curve(path: str | Path, times: np.ndarray, errors: Mapping[str, np.ndarray], title: str = "",
                      baselines: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                      label: str = "model") -> None:
    """Mean ± std over trajectories of the channel-mean error at every predicted frame, one panel per scaling.

    ``errors``: ``{scheme: (N, T')}`` of the model; ``baselines``: ``{name: {scheme: (N, T')}}``
    drawn as mean curves (dashed) in the same panels, with a legend.
    """
    plt, (fig, axes) = _figure(1, len(errors), figsize=(5 * len(errors), 3.6), squeeze=False)
    for ax, (scheme, err) in zip(axes[0], errors.items()):
        mean, std = _nan_stats(err)
        ax.plot(times, mean, marker="o", ms=3, color="tab:blue", label=label)
        ax.fill_between(times, mean - std, mean + std, alpha=0.25, color="tab:blue")
        for name, by_scheme in (baselines or {}).items():
            style = _BASELINE_STYLE.get(name, dict(ls="--", label=name))
            ax.plot(times, _nan_stats(by_scheme[scheme])[0], lw=1.5, **style)
        ax.set_xlabel("frame")
        ax.set_ylabel(f"error ({scheme})")
        ax.grid(alpha=0.3)
        if baselines:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def write_strip(path: str | Path, gt, pred, done, *, channel: int, times: np.ndarray, label: str, columns: int = 6) -> None:
    """Rows: ground truth, prediction, |error| of one channel at up to ``columns`` predicted frames."""
    gt, pred, done = np.asarray(gt), np.asarray(pred), np.asarray(done)
    picks = np.flatnonzero(done)
    if len(picks) > columns:
        picks = picks[np.linspace(0, len(picks) - 1, columns).round().astype(int)]
    cols = max(len(picks), 1)
    plt, (fig, axes) = _figure(3, cols, figsize=(2.2 * cols, 6.6), squeeze=False)
    lo, hi = float(gt[:, channel].min()), float(gt[:, channel].max())
    err_max = float(np.abs(gt[picks, channel] - pred[picks, channel]).max()) if len(picks) else 1.0
    for j, k in enumerate(picks):
        rows = (gt[k, channel], pred[k, channel], np.abs(gt[k, channel] - pred[k, channel]))
        for i, (img, kw) in enumerate(zip(rows, ({"vmin": lo, "vmax": hi}, {"vmin": lo, "vmax": hi},
                                                  {"vmin": 0, "vmax": err_max, "cmap": "magma"}))):
            axes[i, j].imshow(img.T, origin="lower", **kw)  # arrays are [x, y]: show y upward
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[0, j].set_title(f"frame {int(times[k])}")
    for i, name in enumerate(("ground truth", "prediction", "|error|")):
        axes[i, 0].set_ylabel(name)
    fig.suptitle(f"{label}")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
