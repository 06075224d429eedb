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
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd
import torch
from tqdm import tqdm


def subset_plan(ids: Sequence[int], per_size: int = 8, seed: int = 0,
                named: Mapping[str, Sequence[int]] | None = None) -> list[tuple[str, tuple[int, ...]]]:
    """(name, channel ids) pairs: all/sampled subsets of each size, then the named ones.

    Args:
        ids: the channels the model was trained on.
        per_size: subsets per size; every subset when a size has at most this many.
        seed: seed of the sampled subsets (the same seed gives the same plan).
        named: extra ``name -> ids`` rows (kept when inside ``ids``).

    Returns:
        ``("size<k>", ids)`` rows for k = 1..len(ids), then the named rows.
    """
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

    Args:
        model: classifier called as ``model(x, channel_ids)``.
        batches: dicts with ``image`` (B, C, H, W), ``channels`` (B, C) absolute ids (the same for
            every sample) and ``label`` (B,).
        plan: :func:`subset_plan` rows.
        device: where to run.

    Returns:
        One row per plan entry: ``subset, size, channels, accuracy, num_samples``.
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
    """Mean / min / max accuracy per subset size, plus the named rows as they are.

    Args:
        df: :func:`evaluate_subsets` rows.

    Returns:
        ``subset, size, mean, min, max, count`` rows.
    """
    sized = df[df.subset.str.startswith("size")]
    table = sized.groupby("size").accuracy.agg(["mean", "min", "max", "count"]).reset_index()
    table.insert(0, "subset", [f"{s} channel{'s' if s > 1 else ''}" for s in table["size"]])
    named = df[~df.subset.str.startswith("size")]
    extra = pd.DataFrame({"subset": named.subset, "size": named["size"], "mean": named.accuracy,
                          "min": named.accuracy, "max": named.accuracy, "count": 1})
    return pd.concat([table, extra], ignore_index=True)


def plot_report(summary: pd.DataFrame, path, chance: float | None = None, title: str = "") -> None:
    """Accuracy vs number of available channels (mean with min–max band), named subsets as markers.

    Args:
        summary: a :func:`summarize` table.
        path: PNG to write (atomically).
        chance: accuracy of guessing, drawn as a dashed line.
        title: figure title.
    """
    plot_comparison({"": summary}, path, chance=chance, title=title)


def plot_comparison(summaries: Mapping[str, pd.DataFrame], path, chance: float | None = None, title: str = "",
                    spread: Mapping[str, pd.DataFrame] | None = None) -> None:
    """Accuracy vs number of available channels for several runs in one figure (one curve each).

    ChannelViT's robustness plot (specs/channelvit.md §3.4), e.g. a model trained with
    Hierarchical Channel Sampling against one trained without: per run the mean over the
    evaluated subsets of each size, its min–max band, and the named subsets (Sentinel-1 only,
    ...) as markers of the run's colour.

    Args:
        summaries: ``label -> summarize() table``; an empty label draws an unlabelled single run.
        path: PNG to write (atomically).
        chance: accuracy of guessing, drawn as a dashed line.
        title: figure title.
        spread: optional ``label -> table`` with columns ``size`` and ``sd`` (e.g. the standard
            deviation over seeds), drawn as error bars instead of the min–max band.

    Raises:
        GeovitError: ``summaries`` is empty.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geovit._io import atomic_savefig
    from geovit.errors import GeovitError

    if not summaries:
        raise GeovitError("plot_comparison: no runs to plot")
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for r, (label, summary) in enumerate(summaries.items()):
        color = colors[r % len(colors)]
        sized = summary[summary.subset.str.endswith(("channel", "channels"))]
        named = summary[~summary.subset.str.endswith(("channel", "channels"))]
        tag = f"{label}: " if label else ""
        if spread is not None and label in spread:
            sd = spread[label].set_index("size").reindex(sized["size"])["sd"].to_numpy()
            ax.errorbar(sized["size"], sized["mean"], yerr=sd, color=color, marker="o", ms=4, capsize=2,
                        label=f"{label or 'mean over subsets'} (± sd over seeds)")
        else:
            ax.fill_between(sized["size"], sized["min"], sized["max"], color=color, alpha=0.2,
                            label=f"{tag}min–max over subsets")
            ax.plot(sized["size"], sized["mean"], color=color, marker="o", ms=4, label=f"{tag}mean over subsets")
        for i, (_, row) in enumerate(named.iterrows()):
            ax.scatter([row["size"]], [row["mean"]], marker="s", s=40, color=color, edgecolor="black", zorder=3)
            ax.annotate(row.subset, (row["size"], row["mean"]), textcoords="offset points", color=color,
                        xytext=(6, 8 if (i + r) % 2 == 0 else -14), fontsize=7)  # alternate above/below
    if chance is not None:
        ax.axhline(chance, color="grey", ls="--", lw=1, label="chance")
    ax.set_xlabel("channels available at test time")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.2 if len(summaries) > 1 else 1)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(title or "Channel robustness", fontsize=9)
    ax.legend(loc="upper left", fontsize=6.5, framealpha=0.8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)
