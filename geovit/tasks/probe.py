"""Frozen-encoder evaluation of a pretrained ChA-MAEViT: linear probe and kNN (specs/chamaevit.md §1).

The feature is the model's fused feature (hybrid token fusion, ``forward_features``), the one
the paper feeds to CHAMMI's 1-NN benchmark and to the linear probe of its SSL-only ablation
(App. F.3). Both classifiers are fitted on the training split and scored on the evaluation
split, for the full channel set and for partial sets (e.g. Sentinel-1 only): the channels left
out are simply absent from the input, as the paper evaluates partial channels.

What pretraining adds is only measured against the same probe on an *untrained* encoder of the
same architecture: :func:`random_init_like` builds it (same config, fresh seeded weights), and
:func:`probe_channel_sets` runs both classifiers over the channel sets for any encoder::

    model, hp = load_pretrained(ckpt)
    rows = probe_channel_sets(model, train_loader, eval_loader, sets, table="so2sat")
    rows0 = probe_channel_sets(random_init_like(model, seed=0), train_loader, eval_loader, sets, table="so2sat")
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from geovit.errors import GeovitError


@torch.no_grad()
def extract_features(model: torch.nn.Module, loader: DataLoader, keep_ids: Sequence[int] | None = None,
                     device: str | torch.device = "cpu", desc: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D), labels (N,)) of the frozen encoder; ``keep_ids`` drops every other channel.

    Args:
        model: encoder with ``forward_features(x, channels=, channel_mask=)``.
        loader: batches with ``image``, ``channels`` (and ``channel_mask`` when padded), ``label``.
        keep_ids: absolute channel ids to keep (``None``: all).
        device: where the encoder runs.
        desc: progress-bar label.

    Returns:
        ``(features, labels)``.

    Raises:
        GeovitError: a partial set on padded batches, or ids the data does not have.
    """
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


def random_init_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """The same architecture as ``model`` with fresh random weights, in eval mode: the baseline of a probe.

    The model is rebuilt from its ``config`` by its family's ``build`` (the constructor's own
    initialisation, under ``torch.manual_seed(seed)``), so every setting — channel table, memory
    tokens, pooling, decoder — matches the pretrained one and only the training is missing.
    The global torch RNG state is restored afterwards.

    Args:
        model: a geovit model with a ``config`` whose class lives in a family module (e.g. a
            pretrained ChA-MAEViT).
        seed: seed of the initialisation.

    Returns:
        The untrained model, on ``model``'s device.

    Raises:
        GeovitError: ``model`` carries no ``family`` / ``config`` to rebuild it from.
    """
    from geovit.models.families import FAMILIES, family_module

    config = getattr(model, "config", None)
    family = getattr(model, "family", None) or next(
        (name for name, path in FAMILIES.items() if path == type(model).__module__), None)
    if not family or not isinstance(config, dict):
        raise GeovitError(f"random_init_like: {type(model).__name__} has no model family and 'config' to rebuild it "
                          "from; expected a geovit model (e.g. from geovit.tasks.pretraining.load_pretrained)")
    device = next(iter(model.parameters()), torch.empty(0)).device
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(seed))
        fresh = family_module(family).build(config)
    finally:
        torch.random.set_rng_state(state)
    return fresh.to(device).eval()


def probe_channel_sets(model: torch.nn.Module, train_loader: DataLoader, eval_loader: DataLoader,
                       sets: Sequence[tuple[str, Sequence[int]]], table: str, *, k: int = 20, seed: int = 0,
                       device: str | torch.device = "cpu", log=None) -> list[dict]:
    """Linear probe and kNN of a frozen encoder on each channel set (rows of ``probe.csv``).

    Args:
        model: encoder with ``forward_features(x, channels=, channel_mask=)``.
        train_loader: batches the classifiers are fitted on.
        eval_loader: batches they are scored on.
        sets: ``(name, ids)`` channel sets (:func:`partial_sets`); ``"full"`` keeps every channel.
        table: channel table the ids index (for the channel names in the rows).
        k: neighbours of the kNN vote.
        seed: seed of the logistic regression.
        device: where the encoder runs.
        log: optional ``log(message)`` called once per set.

    Returns:
        Rows ``channel_set, num_channels, channels, method ("linear" / "knn<k>"), train_samples,
        eval_samples, accuracy, macro_f1, chance`` (chance: majority class of the training split,
        scored on the evaluation split).
    """
    from geovit.channels import TABLES

    model = model.to(device)
    rows: list[dict] = []
    for name, ids in sets:
        keep = None if name == "full" else ids
        tr = extract_features(model, train_loader, keep, device, desc=f"{name}: train")
        te = extract_features(model, eval_loader, keep, device, desc=f"{name}: eval")
        chance = float(np.mean(te[1] == np.bincount(tr[1]).argmax()))
        for method, result in (("linear", linear_probe(*tr, *te, seed=seed)), (f"knn{k}", knn_probe(*tr, *te, k=k))):
            rows.append({"channel_set": name, "num_channels": len(ids),
                         "channels": ",".join(TABLES[table][i] for i in ids), "method": method,
                         "train_samples": len(tr[1]), "eval_samples": len(te[1]), **result, "chance": chance})
        if log is not None:
            log(f"probe [{name}, {len(ids)} ch]: linear {rows[-2]['accuracy']:.3f}, kNN {rows[-1]['accuracy']:.3f}")
    return rows


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 seed: int = 0) -> dict[str, float]:
    """Multinomial logistic regression on standardised features (L2, C=1): accuracy and macro-F1.

    Args:
        train_x: training features (N, D).
        train_y: training labels (N,).
        test_x: evaluation features.
        test_y: evaluation labels.
        seed: solver seed.

    Returns:
        ``{"accuracy", "macro_f1"}``.

    Raises:
        GeovitError: a training split with a single class.
    """
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
    """k-nearest-neighbour vote with cosine distance (CHAMMI's benchmark uses k = 1).

    Args:
        train_x: training features (N, D).
        train_y: training labels (N,).
        test_x: evaluation features.
        test_y: evaluation labels.
        k: neighbours (at most the training size).

    Returns:
        ``{"accuracy", "macro_f1"}``.

    Raises:
        GeovitError: ``k`` < 1.
    """
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.neighbors import KNeighborsClassifier

    if k < 1:
        raise GeovitError(f"--k {k}: expected at least one neighbour")
    clf = KNeighborsClassifier(n_neighbors=min(k, len(train_y)), metric="cosine")
    clf.fit(train_x, train_y)
    pred = clf.predict(test_x)
    return {"accuracy": float(accuracy_score(test_y, pred)), "macro_f1": float(f1_score(test_y, pred, average="macro"))}


def partial_sets(full_ids: Sequence[int], table: str, extra: str | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """Named channel sets to probe: the full set, presets strictly inside it, and ``extra`` sets.

    Args:
        full_ids: the channels of the data.
        table: their channel table.
        extra: ``;``-separated presets or comma lists replacing the presets.

    Returns:
        ``(name, ids)`` pairs, ``("full", full_ids)`` first.

    Raises:
        GeovitError: an ``extra`` set with channels outside ``full_ids``.
    """
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
    """Grouped bars: accuracy of the linear probe and kNN for every channel set (atomic PNG).

    Args:
        df: :func:`probe_channel_sets` rows (a ``method`` column per bar group).
        path: PNG to write.
        title: figure title.
        chance: majority-class accuracy, drawn as a dashed line.
    """
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
