"""Rollout outputs written atomically: CSV table, error-vs-time curve, GT / prediction / error strip."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from geovit._io import atomic_savefig, atomic_write_text


def write_table(path: str | Path, rows: Sequence[Mapping]) -> None:
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


def write_error_curve(path: str | Path, times: np.ndarray, errors: Mapping[str, np.ndarray], title: str = "") -> None:
    """Mean ± std over trajectories of the channel-mean error at every predicted frame, one panel per scaling."""
    plt, (fig, axes) = _figure(1, len(errors), figsize=(5 * len(errors), 3.6), squeeze=False)
    for ax, (scheme, err) in zip(axes[0], errors.items()):
        mean, std = np.nanmean(err, axis=0), np.nanstd(err, axis=0)
        ax.plot(times, mean, marker="o", ms=3)
        ax.fill_between(times, mean - std, mean + std, alpha=0.25)
        ax.set_xlabel("frame")
        ax.set_ylabel(f"error ({scheme})")
        ax.grid(alpha=0.3)
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
