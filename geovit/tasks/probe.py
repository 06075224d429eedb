"""Frozen-encoder evaluation of a pretrained ChA-MAEViT: linear probe and kNN (specs/chamaevit.md §1).

The feature is the model's fused feature (hybrid token fusion, ``forward_features``), the one
the paper feeds to CHAMMI's 1-NN benchmark and to the linear probe of its SSL-only ablation
(App. F.3). Both classifiers are fitted on the training split and scored on the evaluation
split, for the full channel set and for partial sets (e.g. Sentinel-1 only): the channels left
out are simply absent from the input, as the paper evaluates partial channels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from geovit.errors import GeovitError


@torch.no_grad()
def extract_features(model: torch.nn.Module, loader: DataLoader, keep_ids: Sequence[int] | None = None,
                     device: str | torch.device = "cpu", desc: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D), labels (N,)) of the frozen encoder; ``keep_ids`` drops every other channel."""
    from tqdm import tqdm

    from geovit.tasks.pretraining import split_batch

    model.eval()
    keep = None if keep_ids is None else torch.as_tensor(list(keep_ids), dtype=torch.long)
    feats, labels = [], []
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False):
        x, ids, mask = split_batch(batch)
        if keep is not None:
            if mask is not None:
                raise GeovitError("partial channel sets need batches with one shared channel set (not padded CHAMMI batches)")
            cols = torch.isin(ids, keep)
            if not bool(cols.any()):
                raise GeovitError(f"channels {keep.tolist()} are not in the data (it has {ids.tolist()})")
            x, ids = x[:, cols], ids[cols]
        f = model.forward_features(x.to(device), channels=ids.to(device),
                                   channel_mask=None if mask is None else mask.to(device))
        feats.append(f.float().cpu().numpy())
        labels.append(batch["label"].numpy())
    return np.concatenate(feats), np.concatenate(labels)


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 seed: int = 0) -> dict[str, float]:
    """Multinomial logistic regression on standardised features (L2, C=1): accuracy and macro-F1."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(train_y)) < 2:
        raise GeovitError("linear probe: the training split holds a single class; nothing to separate")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    clf.fit(train_x, train_y)
    pred = clf.predict(test_x)
    return {"accuracy": float(accuracy_score(test_y, pred)), "macro_f1": float(f1_score(test_y, pred, average="macro"))}


def knn_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
              k: int = 20) -> dict[str, float]:
    """k-nearest-neighbour vote with cosine distance (CHAMMI's benchmark uses k = 1)."""
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.neighbors import KNeighborsClassifier

    if k < 1:
        raise GeovitError(f"--k {k}: expected at least one neighbour")
    clf = KNeighborsClassifier(n_neighbors=min(k, len(train_y)), metric="cosine")
    clf.fit(train_x, train_y)
    pred = clf.predict(test_x)
    return {"accuracy": float(accuracy_score(test_y, pred)), "macro_f1": float(f1_score(test_y, pred, average="macro"))}


def partial_sets(full_ids: Sequence[int], table: str, extra: str | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """Named channel sets to probe: the full set, presets strictly inside it, and ``extra`` sets."""
    from geovit.channels import PRESETS, resolve_channels

    full = tuple(full_ids)
    sets: list[tuple[str, tuple[int, ...]]] = [("full", full)]
    if extra:
        for spec in (s.strip() for s in extra.split(";") if s.strip()):
            sel = resolve_channels(spec, table=table)
            missing = sorted(set(sel.ids) - set(full))
            if missing:
                raise GeovitError(f"--subsets {spec!r}: channel ids {missing} are not in the full set {list(full)}")
            sets.append((spec, sel.ids))
        return sets
    for name, (tname, _) in PRESETS.items():
        if tname != table:
            continue
        ids = resolve_channels(name, table=table).ids
        if set(ids) < set(full) and all(ids != s for _, s in sets):
            sets.append((name, ids))
    return sets


def plot_probe(df, path: Path, title: str, chance: float | None = None) -> None:
    """Grouped bars: accuracy of the linear probe and kNN for every channel set (atomic PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geovit._io import atomic_savefig

    sets = list(dict.fromkeys(df["channel_set"]))
    methods = list(dict.fromkeys(df["method"]))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(sets), 3.2))
    for m, method in enumerate(methods):
        sub = df[df["method"] == method].set_index("channel_set").reindex(sets)
        xs = np.arange(len(sets)) + (m - (len(methods) - 1) / 2) * width
        ax.bar(xs, sub["accuracy"], width=width, label=method)
    ax.set_xticks(np.arange(len(sets)), [f"{s}\n({n} ch)" for s, n in
                                         zip(sets, df.drop_duplicates("channel_set")["num_channels"])], fontsize=8)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance (majority class)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=100)
    plt.close(fig)
