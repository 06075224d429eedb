"""ChA-MAEViT pretraining step: fused attention (geovit) vs materialised attention, same weights.

One step = ``pretrain_step`` (DCP masking, encoder, hybrid fusion, channel-aware decoder, every
loss, labels given) + backward + AdamW step. Both variants start from the same weights and use
the same injected DCP masks, so their losses must agree; the baseline is the same model after
``geovit.models.layers.set_fused_attention(model, False)`` (timm's q@kᵀ softmax path).

    python bench/chamaevit_pretrain.py                 # ViT-S/8, 18x32² and 8x224², 2 threads
    python bench/chamaevit_pretrain.py --only 32       # just the So2Sat-sized batch
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import max_rss_mib, setup_threads  # noqa: E402

from geovit.models import create_model  # noqa: E402
from geovit.models.chamae_masking import BOTH  # noqa: E402
from geovit.models.layers import set_fused_attention  # noqa: E402

# (label, channels, image size, batch, timed iterations)
SETTINGS = {
    "32": ("18x32²  (So2Sat)", 18, 32, 16, 4),
    "224": ("8x224²  (6272 patch tokens)", 8, 224, 1, 2),
}


def make_step(model, x, labels, masks):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        out = model.pretrain_step(x, masks=masks, labels=labels)
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))

    return step, losses


def run(key: str) -> None:
    label, channels, size, batch, iters = SETTINGS[key]
    torch.manual_seed(0)
    np.random.seed(0)
    fused = create_model("chamaevit_small_patch8", in_chans=channels, img_size=size, num_classes=17).train()
    plain = copy.deepcopy(fused)
    switched = set_fused_attention(plain, False)
    x = torch.randn(batch, channels, size, size)
    labels = torch.randint(0, 17, (batch,))
    # one fixed DCP draw (So2Sat recipe: channel + patch masking, r = 0.25), shared by both variants
    torch.manual_seed(0)
    masks = fused.sample_masks(batch, channels, strategy=BOTH)
    n_vis = masks.tokens_to_keep.shape[1]
    print(f"\n== ViT-S/8 on {label}, batch {batch}: encoder sees {n_vis} of {masks.ind_restore.shape[1]} patch "
          f"tokens, decoder {masks.ind_restore.shape[1] + fused.num_extra_tokens}; {switched} attention modules switched")

    # alternate the two variants step by step, so load changes on a shared machine hit both alike
    variants = {"geovit (fused SDPA)": fused, "materialised attention": plain}
    steps = {name: make_step(model, x, labels, masks) for name, model in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(iters + 1):  # the first round is warm-up
        for name, (step, _) in steps.items():
            t0 = time.perf_counter()
            step()
            if i:
                times[name].append(time.perf_counter() - t0)
            else:  # fused warms up first, so its line is its own peak; the second is the max of both
                print(f"{name:>24}: peak RSS after its warm-up step {max_rss_mib():.0f} MiB")
    results = {}
    for name, (_, losses) in steps.items():
        seconds = statistics.median(times[name])
        results[name] = (batch / seconds, losses)
        print(f"{name:>24}: {seconds * 1e3:9.1f} ms/step (median of {iters})  {batch / seconds:8.3f} samples/s")
    (sf, lf), (sp, lp) = results.values()
    drift = max(abs(a - b) for a, b in zip(lf, lp))
    print(f"first step (identical weights): loss fused {lf[0]:.7f}, materialised {lp[0]:.7f}, "
          f"|diff| {abs(lf[0] - lp[0]):.2e}")
    print(f"speed-up: {sf / sp:.2f}x samples/s (target >= 1.3x); "
          f"losses over {len(lf)} identical steps: max |diff| {drift:.2e} (relative {drift / abs(lf[0]):.1e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SETTINGS), help="run one setting")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    setup_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for key in ([args.only] if args.only else list(SETTINGS)):
        run(key)


if __name__ == "__main__":
    main()
