"""Figures of a multi-scale CATE analysis: TOC curves and a map of the estimated effects."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from geovit.errors import GeovitError


def _labels(evaluation) -> list[str]:
    return list(evaluation.folds[0].labels) or ["priorities"]


def toc_table(evaluation, priority: str | None = None) -> pd.DataFrame:
    """TOC of a :class:`causal.estimators.CATEEvaluation` averaged over its evaluation halves.

    Columns ``q, estimate, std_err`` (SE combined as for the RATE: √(Σ SE²) / n_halves). For a
    paired evaluation (two rules) name the rule with ``priority`` (e.g. ``"best_multi"``).
    """
    toc = evaluation.toc
    labels = _labels(evaluation)
    if priority is None and len(labels) > 1:
        raise GeovitError(f"this evaluation compares rules {labels}; pass priority= one of them")
    if priority is not None:
        if priority not in set(toc["priority"]):
            raise GeovitError(f"no TOC for priority {priority!r}; available: {sorted(set(toc['priority']))}")
        toc = toc[toc["priority"] == priority]
    g = toc.groupby("q")
    return pd.DataFrame({
        "q": np.asarray(list(g.groups)),
        "estimate": g["estimate"].mean().to_numpy(),
        "std_err": (g["std_err"].apply(lambda s: np.sqrt(np.sum(np.square(s)))) / g.size()).to_numpy(),
    })


def rate_ratio(evaluation, priority: str | None = None) -> float:
    """The RATE ratio of one rule of an evaluation (of the named rule when it is paired)."""
    ratio = np.atleast_1d(evaluation.rate_ratio)
    if ratio.size == 1:
        return float(ratio[0])
    labels = _labels(evaluation) + [f"{_labels(evaluation)[0]} - {_labels(evaluation)[1]}"]
    return float(ratio[labels.index(priority)])


def plot_toc(evaluations: Mapping[str, object], ax=None, z: float = 1.96):
    """TOC curves (estimate ± z·SE), one per entry ``label: evaluation`` or ``label: (evaluation, priority)``."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for label, entry in evaluations.items():
        ev, priority = entry if isinstance(entry, tuple) else (entry, None)
        t = toc_table(ev, priority)
        line, = ax.plot(t["q"], t["estimate"], marker="o", ms=3,
                        label=f"{label} (RATE ratio {rate_ratio(ev, priority):.2f})")
        ax.fill_between(t["q"], t["estimate"] - z * t["std_err"], t["estimate"] + z * t["std_err"],
                        color=line.get_color(), alpha=0.15)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("fraction treated first, q (by predicted CATE)")
    ax.set_ylabel("TOC(q) = ATE among top q − ATE")
    ax.set_title("Targeting operator characteristic (AUTOC)")
    ax.legend(fontsize=8)
    return ax


def plot_cate_map(x, y, tau_hat, ax=None, *, crs: str = "", title: str = "Estimated CATE per unit"):
    """Scatter map of τ̂ at the units' coordinates (raster CRS)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    sc = ax.scatter(x, y, c=tau_hat, s=12, cmap="viridis")
    ax.figure.colorbar(sc, ax=ax, label="τ̂(x)")
    ax.set_aspect("equal")
    ax.set_xlabel(f"x {crs}".strip())
    ax.set_ylabel(f"y {crs}".strip())
    ax.set_title(title)
    return ax
