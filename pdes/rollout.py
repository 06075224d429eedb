"""Autoregressive rollout of VICON (specs/vicon.md §3; official ``rollout_strategy.py`` and
``rollout_utils.py``; paper §4 "rollout strategies" and the imperfect-measurement experiments).

The first ``gt_steps`` frames of each trajectory are given; every later frame is predicted. Each
*step* builds a prompt from example pairs (always given frames) and one query pair
(COND = a known frame, QoI = zeros), runs the full pipeline (normalise → model → de-normalise, see
:meth:`pdes.vicon.VICON.predict`), writes the physical slots of the target frame and copies the
node-type slot from frame 0. A query COND may be an earlier prediction.

Strategies (names of the official config in brackets):

* ``single_step`` (``fixed_single_step``): examples ``0→1, …, k−1→k`` (k = ``num_examples``),
  query ``t−1 → t``.
* ``multi_norepeat`` / ``multi_repeat`` (``fixed_multi_step_norepeat`` / ``_repeat``) with
  ``max_stride`` = s_max: the k-th predicted frame uses stride ``s = min(k, s_max)`` and query
  ``t−s → t``; the examples are the pairs ``q−s → q`` of the last ``n = min(num_examples, gt−s)``
  given frames ``q``. ``repeat`` tiles them to exactly ``num_examples`` (earlier pairs get the extra
  copies, time-sorted), ``norepeat`` uses the ``n`` pairs (a shorter prompt).
* Dropped frames (``dropped_mask``, True = unavailable): the available frames are the not-dropped
  ones before ``gt_steps``; examples for stride ``s`` are pairs of available frames exactly ``s``
  apart (enumerated as the official code, which skips pairs starting among the last ``s``
  available frames), repeated in place to ``num_examples`` or cut to the first ``num_examples``.
  Prediction starts right after the last available frame. Single-step mode uses the fixed stride
  ``max_stride``; multi-step mode takes the largest stride ≤ min(distance from the last available
  frame, s_max, largest stride with pairs) whose COND frame is known; targets with none are skipped
  (``repeat`` and ``norepeat`` coincide here, as in the official code).

Public API::

    steps = make_strategy("multi_repeat", num_frames=21, gt_steps=10, num_examples=9, max_stride=5,
                          dropped_mask=None)                    # list[Step]
    result = rollout(model, trajectories, channel_mask, "multi_repeat", gt_steps=10, num_examples=9,
                     max_stride=5, dropped_mask=None, batch_size=None, progress=False)
        # trajectories (B, T, C, H, W) raw fields (last slot node type); channel_mask (B, C) or (C,);
        # dropped_mask None, (T,) or (B, T) bool -> RolloutResult
    result.future        # (B, T - gt_steps, C, H, W) predicted frames gt_steps..T-1
    result.frames        # (B, T, C, H, W): available given frames + predictions (zeros elsewhere)
    result.predicted     # (B, T) bool: frames written by the rollout
    result.baselines     # {"persistence": ..., "mean_given": ...}, each (B, T - gt_steps, C, H, W)
    persistence(trajectories, gt_steps, dropped_mask=None)   # every future frame = the last given frame
    given_mean(trajectories, gt_steps, dropped_mask=None)    # every future frame = the mean given frame
    evaluate_rollout(result, trajectories, channel_mask)
        # {"model" | baseline: {scheme: (B, T - gt_steps) channel-mean error, NaN where not predicted}}

Baselines (always computed by :func:`rollout`, so every report can show what the model adds):
*persistence* repeats the last given frame, *mean_given* the pixel-wise mean of the given frames;
with dropped frames both use only the available (not dropped) given frames. A model that does
not beat persistence has learned nothing about the dynamics; the mean field is the best constant
forecast of a statistically stationary flow.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from geovit.errors import GeovitError

#: geovit name -> official ``rollout.strategy`` name
STRATEGIES: dict[str, str] = {
    "single_step": "fixed_single_step",
    "multi_norepeat": "fixed_multi_step_norepeat",
    "multi_repeat": "fixed_multi_step_repeat",
}


@dataclass(frozen=True)
class Step:
    """One rollout step: example pairs ``demo_cond[j] → demo_qoi[j]`` and query ``query_cond → query_qoi``."""

    demo_cond: tuple[int, ...]
    demo_qoi: tuple[int, ...]
    query_cond: int
    query_qoi: int


def _strategy_name(name: str) -> str:
    official = {v: k for k, v in STRATEGIES.items()}
    if name in official:
        return official[name]
    if name not in STRATEGIES:
        raise GeovitError(f"rollout strategy {name!r}: expected one of {', '.join(STRATEGIES)} "
                          f"(or the official {', '.join(official)})")
    return name


def _repeat_in_place(items: Sequence, count: int) -> list:
    """Each item repeated consecutively so that there are ``count`` (earlier items get the extras)."""
    n = len(items)
    copies = [count // n + (j < count % n) for j in range(n)]
    return [item for item, c in zip(items, copies) for _ in range(c)]


def single_step_strategy(num_frames: int, gt_steps: int, num_examples: int) -> list[Step]:
    """Official ``single_step`` rollout: every step predicts frame t from t-1, prompted by the example
    pairs ``(0, 1), (1, 2), …`` among the given frames.

    Raises:
        GeovitError: fewer than ``num_examples + 1`` given frames.
    """
    if num_examples > gt_steps - 1:
        raise GeovitError(f"single_step: num_examples={num_examples} example pairs 0→1 … need "
                          f"gt_steps >= {num_examples + 1} given frames, got gt_steps={gt_steps}")
    cond = tuple(range(num_examples))
    qoi = tuple(t + 1 for t in cond)
    return [Step(cond, qoi, t - 1, t) for t in range(gt_steps, num_frames)]


def multi_step_strategy(num_frames: int, gt_steps: int, num_examples: int, max_stride: int, repeat: bool) -> list[Step]:
    """Official multi-step rollouts: the stride grows by one per step up to ``max_stride`` and each
    step is prompted by the last example pairs of that stride among the given frames;
    ``repeat=True`` (``multi_repeat``) repeats pairs to fill ``num_examples`` where fewer exist,
    ``repeat=False`` (``multi_norepeat``) uses fewer.

    Raises:
        GeovitError: fewer than ``max_stride + 1`` given frames.
    """
    if gt_steps < max_stride + 1:
        raise GeovitError(f"multi-step rollout: max_stride={max_stride} needs gt_steps >= {max_stride + 1} "
                          f"given frames (one example pair of the largest stride), got gt_steps={gt_steps}")
    examples = {}
    for s in range(1, max_stride + 1):
        n = min(num_examples, gt_steps - s)
        qoi = list(range(gt_steps - n, gt_steps))
        if repeat:
            qoi = _repeat_in_place(qoi, num_examples)
        examples[s] = (tuple(q - s for q in qoi), tuple(qoi))
    steps = []
    for t in range(gt_steps, num_frames):
        s = min(t - gt_steps + 1, max_stride)
        steps.append(Step(*examples[s], t - s, t))
    return steps


def available_pairs(available: Sequence[int], stride: int, num_examples: int) -> list[tuple[int, int]]:
    """Example pairs ``(a, a+stride)`` of available frames, as the official ``get_available_pairs``."""
    avail = sorted(available)
    present = set(avail)
    pairs = [(a, a + stride) for a in avail[: max(len(avail) - stride, 0)] if a + stride in present]
    if not pairs:
        return []
    if len(pairs) < num_examples:
        pairs = _repeat_in_place(pairs, num_examples)
    return pairs[:num_examples]


def dropped_strategy(
    num_frames: int, gt_steps: int, num_examples: int, max_stride: int, available: Sequence[int], multi_step: bool,
) -> list[Step]:
    """Rollout when only the frames in ``available`` are known: example pairs are the pairs of
    available frames (:func:`available_pairs`); each predicted frame becomes known for later steps.
    ``multi_step=True`` uses every stride up to ``max_stride`` (the largest that fits), else
    ``max_stride`` only.

    Raises:
        GeovitError: no available frame, or no pair of a usable stride.
    """
    avail = sorted(t for t in available if t < gt_steps)
    if not avail:
        raise GeovitError(f"dropped_mask: no available frame among the first gt_steps={gt_steps}")
    strides = range(1, max_stride + 1) if multi_step else [max_stride]
    pairs = {s: p for s in strides if (p := available_pairs(avail, s, num_examples))}
    if not pairs:
        raise GeovitError(f"dropped_mask: available frames {avail} contain no pair "
                          f"{'with a stride up to' if multi_step else 'of stride'} {max_stride}")
    start, known, steps = avail[-1], set(avail), []
    for t in range(start + 1, num_frames):
        limit = min(t - start, max_stride, max(pairs)) if multi_step else max_stride
        stride = next((s for s in sorted(pairs, reverse=True) if s <= limit and t - s in known), None)
        if stride is None:
            continue
        steps.append(Step(tuple(a for a, _ in pairs[stride]), tuple(b for _, b in pairs[stride]), t - stride, t))
        known.add(t)
    return steps


def make_strategy(
    name: str, num_frames: int, gt_steps: int = 10, num_examples: int = 9, max_stride: int = 1,
    dropped_mask: Sequence[bool] | torch.Tensor | None = None,
) -> list[Step]:
    """The list of rollout steps of strategy ``name`` for trajectories of ``num_frames`` frames."""
    name = _strategy_name(name)
    if num_frames <= gt_steps:
        raise GeovitError(f"trajectories have {num_frames} frames; a rollout given gt_steps={gt_steps} frames "
                          f"needs at least {gt_steps + 1}")
    if num_examples < 1 or max_stride < 1 or gt_steps < 1:
        raise GeovitError(f"rollout: num_examples={num_examples}, max_stride={max_stride}, gt_steps={gt_steps} "
                          "must all be >= 1")
    if dropped_mask is not None:
        dropped = torch.as_tensor(dropped_mask, dtype=torch.bool).flatten()
        if dropped.numel() != num_frames:
            raise GeovitError(f"dropped_mask: expected {num_frames} entries (one per frame), got {dropped.numel()}")
        available = [int(t) for t in torch.nonzero(~dropped).flatten()]
        return dropped_strategy(num_frames, gt_steps, num_examples, max_stride, available, name != "single_step")
    if name == "single_step":
        return single_step_strategy(num_frames, gt_steps, num_examples)
    return multi_step_strategy(num_frames, gt_steps, num_examples, max_stride, repeat=name == "multi_repeat")


#: baseline name -> what it predicts for every frame after the given ones
BASELINES: dict[str, str] = {
    "persistence": "the last given frame",
    "mean_given": "the pixel-wise mean of the given frames",
}


@dataclass
class RolloutResult:
    """Rollout output: ``frames`` (B, T, C, H, W), ``predicted`` (B, T) bool, ``gt_steps`` and the
    ``baselines`` of :data:`BASELINES` (name → (B, T − gt_steps, C, H, W)) from the same given frames."""

    frames: torch.Tensor
    predicted: torch.Tensor
    gt_steps: int
    baselines: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def future(self) -> torch.Tensor:
        """Predicted frames ``gt_steps … T−1``, (B, T − gt_steps, C, H, W)."""
        return self.frames[:, self.gt_steps:]


def _run_steps(model, frames: torch.Tensor, channel_mask: torch.Tensor, steps: list[Step], progress: bool,
               node_type: torch.Tensor) -> None:
    """Run ``steps`` in place on ``frames`` (B, T, C, H, W) — one shared strategy for the batch.

    ``node_type`` (B, H, W) is the fixed geometry written into every predicted frame.
    """
    iterator = steps
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(steps, desc="rollout", unit="frame", leave=False)
    for step in iterator:
        cond = frames[:, list(step.demo_cond) + [step.query_cond]]
        qoi = torch.cat([frames[:, list(step.demo_qoi)], torch.zeros_like(frames[:, :1])], dim=1)
        pred = model.predict(cond, qoi, channel_mask, last_only=True)
        frames[:, step.query_qoi, :-1] = pred[:, 0]
        frames[:, step.query_qoi, -1] = node_type


def _prepare(model, trajectories: torch.Tensor, channel_mask, dropped_mask, gt_steps: int):
    """Validate the rollout input; returns the (B, C) channel mask on the model's device, the groups
    ``(rows, dropped (T,) or None)`` of trajectories sharing one strategy, and the (B, gt_steps)
    availability of the given frames."""
    if trajectories.ndim != 5:
        raise GeovitError(f"trajectories: expected (batch, time, channels, H, W), got shape {tuple(trajectories.shape)}")
    B, T, C = trajectories.shape[:3]
    if T <= gt_steps:
        raise GeovitError(f"trajectories have {T} frames; a rollout given gt_steps={gt_steps} frames needs at "
                          f"least {gt_steps + 1}")
    mask = torch.as_tensor(channel_mask, device=next(model.parameters()).device)
    mask = mask.expand(B, -1) if mask.ndim == 1 else mask
    if tuple(mask.shape) != (B, C):
        raise GeovitError(f"channel_mask: expected ({B}, {C}) or ({C},), got {tuple(mask.shape)}")
    if not (mask[:, :-1] != 0).any(dim=1).all():
        raise GeovitError("channel_mask: some trajectory has no active field slot (all zeros before the node-type slot)")
    if dropped_mask is None:
        groups = [(torch.arange(B), None)]
        available = torch.ones(B, gt_steps, dtype=torch.bool)
    else:
        drops = torch.as_tensor(dropped_mask, dtype=torch.bool).cpu()
        drops = drops.expand(B, -1) if drops.ndim == 1 else drops
        if tuple(drops.shape) != (B, T):
            raise GeovitError(f"dropped_mask: expected ({T},) or ({B}, {T}), got {tuple(drops.shape)}")
        unique, inverse = torch.unique(drops, dim=0, return_inverse=True)
        groups = [(torch.nonzero(inverse == g).flatten(), unique[g]) for g in range(len(unique))]
        available = ~drops[:, :gt_steps]
    finite = torch.isfinite(trajectories[:, :gt_steps]).flatten(2).all(dim=2).cpu()
    bad = torch.nonzero((available & ~finite).any(dim=1)).flatten().tolist()
    if bad:
        raise GeovitError(f"trajectories {bad[:10]}: non-finite values among the given (not dropped) frames "
                          f"before gt_steps={gt_steps}")
    return mask, groups, available


@torch.no_grad()
def rollout(
    model, trajectories: torch.Tensor, channel_mask, strategy: str | list[Step] = "single_step", *,
    gt_steps: int = 10, num_examples: int = 9, max_stride: int = 1, dropped_mask=None,
    batch_size: int | None = None, progress: bool = False,
) -> RolloutResult:
    """Roll ``model`` forward on ``trajectories`` from their first ``gt_steps`` frames.

    ``strategy`` is a name (see :data:`STRATEGIES`) or an explicit list of :class:`Step`.
    ``dropped_mask`` (T,) or (B, T), True = frame unavailable, selects the dropped-frame variants;
    trajectories sharing a mask are rolled out together. ``batch_size`` bounds how many
    trajectories go through the model at once. The model runs in eval mode (restored after).
    """
    mask, groups, available = _prepare(model, trajectories, channel_mask, dropped_mask, gt_steps)
    param = next(model.parameters())
    B, T = trajectories.shape[:2]
    frames = torch.zeros_like(trajectories, device=param.device, dtype=param.dtype)
    predicted = torch.zeros(B, T, dtype=torch.bool)
    was_training = model.training
    model.eval()
    try:
        for rows, drop in groups:
            steps = strategy if isinstance(strategy, list) else make_strategy(
                strategy, T, gt_steps, num_examples, max_stride, drop)
            longest = max((len(s.demo_cond) for s in steps), default=0)
            if longest + 1 > model.max_pairs:
                raise GeovitError(f"rollout: prompts of {longest} examples + 1 query exceed the model's "
                                  f"max_pairs={model.max_pairs}; use num_examples <= {model.max_pairs - 1}")
            keep = available[rows[0]]
            for start in range(0, len(rows), batch_size or len(rows)):
                idx = rows[start:start + (batch_size or len(rows))]
                part = torch.zeros_like(frames[idx])
                part[:, :gt_steps][:, keep] = trajectories[idx][:, :gt_steps][:, keep].to(part)
                first_known = int(torch.as_tensor(keep).nonzero()[0])  # geometry from a frame that is given
                node_type = trajectories[idx][:, first_known, -1].to(part)
                _run_steps(model, part, mask[idx.to(mask.device)], steps, progress, node_type)
                frames[idx.to(frames.device)] = part
            for step in steps:
                predicted[rows, step.query_qoi] = True
    finally:
        model.train(was_training)
    given = trajectories.to(device=frames.device, dtype=frames.dtype)
    return RolloutResult(frames=frames, predicted=predicted.to(frames.device), gt_steps=gt_steps,
                         baselines=baselines(given, gt_steps, dropped_mask))


def _given(trajectories: torch.Tensor, gt_steps: int, dropped_mask) -> torch.Tensor:
    """(B, gt_steps) bool: the given frames that are available (not dropped)."""
    if trajectories.ndim != 5:
        raise GeovitError(f"trajectories: expected (batch, time, channels, H, W), got shape {tuple(trajectories.shape)}")
    B, T = trajectories.shape[:2]
    if not 1 <= gt_steps < T:
        raise GeovitError(f"trajectories have {T} frames; need 1 <= gt_steps < {T}, got gt_steps={gt_steps}")
    if dropped_mask is None:
        return torch.ones(B, gt_steps, dtype=torch.bool, device=trajectories.device)
    drops = torch.as_tensor(dropped_mask, dtype=torch.bool, device=trajectories.device)
    drops = drops.expand(B, -1) if drops.ndim == 1 else drops
    if tuple(drops.shape) != (B, T):
        raise GeovitError(f"dropped_mask: expected ({T},) or ({B}, {T}), got {tuple(drops.shape)}")
    available = ~drops[:, :gt_steps]
    empty = torch.nonzero(~available.any(dim=1)).flatten().tolist()
    if empty:
        raise GeovitError(f"dropped_mask: trajectories {empty[:10]} have no available frame among the first "
                          f"gt_steps={gt_steps}")
    return available


def persistence(trajectories: torch.Tensor, gt_steps: int, dropped_mask=None) -> torch.Tensor:
    """Baseline: every frame after ``gt_steps`` is the last given frame, (B, T − gt_steps, C, H, W).

    With ``dropped_mask`` ((T,) or (B, T), True = unavailable) it is the last *available* given frame.
    """
    available = _given(trajectories, gt_steps, dropped_mask)
    B, T = trajectories.shape[:2]
    steps = torch.arange(gt_steps, device=trajectories.device)
    last = torch.where(available, steps, torch.full_like(steps, -1)).max(dim=1).values  # (B,)
    frame = trajectories[torch.arange(B, device=trajectories.device), last]
    return frame[:, None].expand(B, T - gt_steps, *trajectories.shape[2:]).clone()


def given_mean(trajectories: torch.Tensor, gt_steps: int, dropped_mask=None) -> torch.Tensor:
    """Baseline: every frame after ``gt_steps`` is the pixel-wise mean of the given frames.

    With ``dropped_mask`` ((T,) or (B, T), True = unavailable) only the available given frames count.
    Returns (B, T − gt_steps, C, H, W).
    """
    available = _given(trajectories, gt_steps, dropped_mask)
    B, T = trajectories.shape[:2]
    w = available.to(trajectories.dtype)[:, :, None, None, None]
    given = trajectories[:, :gt_steps]
    head = torch.where(available[:, :, None, None, None], given, torch.zeros_like(given))
    mean = head.sum(dim=1) / w.sum(dim=1)
    return mean[:, None].expand(B, T - gt_steps, *trajectories.shape[2:]).clone()


def baselines(trajectories: torch.Tensor, gt_steps: int, dropped_mask=None) -> dict[str, torch.Tensor]:
    """Every baseline of :data:`BASELINES`: name → (B, T − gt_steps, C, H, W)."""
    return {"persistence": persistence(trajectories, gt_steps, dropped_mask),
            "mean_given": given_mean(trajectories, gt_steps, dropped_mask)}


def evaluate_rollout(result: RolloutResult, trajectories: torch.Tensor, channel_mask,
                     schemes: Sequence[str] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Channel-mean errors of the model and of every baseline against the true future frames.

    ``trajectories`` (B, T, C, H, W) hold the truth (last slot: node type, not scored);
    ``channel_mask`` (C,) or (B, C) as for :func:`rollout`. Returns ``{"model": {scheme: (B, T −
    gt_steps)}, "persistence": {...}, "mean_given": {...}}`` on the CPU; frames the model did not
    predict (dropped-frame strategies) are NaN for the baselines too, so every curve averages
    over the same frames.
    """
    from pdes import metrics

    schemes = tuple(metrics.SCHEMES if schemes is None else schemes)
    g = result.gt_steps
    truth = trajectories[:, g:, :-1].detach().cpu().float()
    mask = torch.as_tensor(channel_mask).cpu()
    mask = mask[..., :-1]
    done = result.predicted[:, g:].cpu()
    forecasts = {"model": result.future, **result.baselines}
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, frames in forecasts.items():
        pred = frames[:, :, :-1].detach().cpu().float()
        out[name] = {}
        for s in schemes:
            err = metrics.channel_mean(metrics.scaled_error(pred, truth, s), mask)
            out[name][s] = torch.where(done, err, torch.full_like(err, float("nan")))
    return out
