"""Channel-robustness report: accuracy when only some channels are available at test time.

ChannelViT's evaluation protocol (specs/channelvit.md §3.4): for every subset of the channels the
model was trained on, pass only those planes and their ids (no zero-filling, no rescaling) and
report the mean accuracy per subset size. With many channels (18 for So2Sat: 262,143 subsets)
we evaluate every subset of a size when there are at most ``per_size`` of them, else a seeded
random sample of ``per_size`` subsets. Named subsets (e.g. Sentinel-1 only) are added as rows.
"""
from __future__ import annotations

import itertools
import math
import random
from typing import Iterable, Mapping, Sequence

import pandas as pd
import torch
from tqdm import tqdm


def subset_plan(ids: Sequence[int], per_size: int = 8, seed: int = 0,
                named: Mapping[str, Sequence[int]] | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """(name, channel ids) pairs: all/sampled subsets of each size, then the named ones."""
    ids = tuple(ids)
    rng = random.Random(seed)
    plan: list[tuple[str, tuple[int, ...]]] = []
    for size in range(1, len(ids) + 1):
        if math.comb(len(ids), size) <= per_size:
            chosen = list(itertools.combinations(ids, size))
        else:
            seen: set[tuple[int, ...]] = set()
            while len(seen) < per_size:
                seen.add(tuple(sorted(rng.sample(ids, size))))
            chosen = sorted(seen)
        plan.extend((f"size{size}", c) for c in chosen)
    for name, chans in (named or {}).items():
        if set(chans) <= set(ids):
            plan.append((name, tuple(chans)))
    return plan


@torch.no_grad()
def evaluate_subsets(model: torch.nn.Module, batches: Iterable[dict], plan: Sequence[tuple[str, tuple[int, ...]]],
                     device: str | torch.device = "cpu") -> pd.DataFrame:
    """Accuracy of ``model`` for each channel subset in ``plan``, reading the data only once.

    ``batches`` yield dicts with ``image`` (B, C, H, W), ``channels`` (B, C) absolute ids (the same
    for every sample) and ``label`` (B,).
    """
    model = model.eval().to(device)
    correct = torch.zeros(len(plan), dtype=torch.long)
    total = 0
    for batch in tqdm(batches, desc="channel-subset evaluation", unit="batch"):
        image, have = batch["image"].to(device), batch["channels"][0].tolist()
        labels = batch["label"].to(device)
        for j, (_, chans) in enumerate(plan):
            pos = torch.tensor([have.index(c) for c in chans], device=device)
            logits = model(image.index_select(1, pos), pos.new_tensor(chans))
            correct[j] += int((logits.argmax(1) == labels).sum())
        total += labels.shape[0]
    rows = [dict(subset=name, size=len(chans), channels=" ".join(map(str, chans)),
                 accuracy=correct[j].item() / max(total, 1), num_samples=total)
            for j, (name, chans) in enumerate(plan)]
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean / min / max accuracy per subset size, plus the named rows as they are."""
    sized = df[df.subset.str.startswith("size")]
    table = sized.groupby("size").accuracy.agg(["mean", "min", "max", "count"]).reset_index()
    table.insert(0, "subset", [f"{s} channel{'s' if s > 1 else ''}" for s in table["size"]])
    named = df[~df.subset.str.startswith("size")]
    extra = pd.DataFrame({"subset": named.subset, "size": named["size"], "mean": named.accuracy,
                          "min": named.accuracy, "max": named.accuracy, "count": 1})
    return pd.concat([table, extra], ignore_index=True)


def plot_report(summary: pd.DataFrame, path, chance: float | None = None, title: str = "") -> None:
    """Accuracy vs number of available channels (mean with min–max band), named subsets as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geovit._io import atomic_savefig

    sized = summary[summary.subset.str.endswith(("channel", "channels"))]
    named = summary[~summary.subset.str.endswith(("channel", "channels"))]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.fill_between(sized["size"], sized["min"], sized["max"], alpha=0.25, label="min–max over subsets")
    ax.plot(sized["size"], sized["mean"], marker="o", label="mean over subsets")
    for i, (_, row) in enumerate(named.iterrows()):
        ax.scatter([row["size"]], [row["mean"]], marker="s", s=50, zorder=3)
        ax.annotate(row.subset, (row["size"], row["mean"]), textcoords="offset points",
                    xytext=(6, 8 if i % 2 == 0 else -14), fontsize=8)  # alternate above/below the curve
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1, label="chance")
    ax.set_xlabel("channels available at test time")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title or "Channel robustness")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)
