"""Forward speed of geovit ChangeViT vs the same weights with materialised attention.

Baseline = the same model after ``set_fused_attention(model, False)``: ViT self-attention and the
feature injector's cross-attention build the full softmax(q kᵀ) matrices, as the reference code
does without xformers (specs/changevit.md §6). The injector's c2 cross-attention alone is
(H/16·W/16) x (H/2·W/2) per head: 256 x 16384 x 8 heads per image at 256².

    python bench/changevit_forward.py            # ChangeViT-T, batch 4 of 256x256 pairs, 2 threads
    python bench/changevit_forward.py --model changevit_small --size 512 --batch 1
"""
from __future__ import annotations

import argparse
import statistics

import torch
from _common import peak_memory_of, setup_threads, time_call

from geovit.models import create_model
from geovit.models.layers import set_fused_attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="changevit_tiny")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256, help="image side (multiple of 16)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    setup_threads(args.threads)
    torch.manual_seed(0)

    model = create_model(args.model).eval()
    t1 = torch.randn(args.batch, 3, args.size, args.size)
    t2 = torch.randn(args.batch, 3, args.size, args.size)

    def forward():
        with torch.inference_mode():
            return model(t1, t2)

    modes = {"materialised": False, "fused (geovit)": True}
    seconds = {name: [] for name in modes}
    for name, fused in modes.items():  # warm-up, then alternate so machine load hits both alike
        set_fused_attention(model, fused)
        forward()
    for _ in range(args.repeat):
        for name, fused in modes.items():
            set_fused_attention(model, fused)
            seconds[name].append(time_call(forward, warmup=0, repeat=1))
    results = {}
    for name, fused in modes.items():
        set_fused_attention(model, fused)
        results[name] = (args.batch / statistics.median(seconds[name]), peak_memory_of(forward), forward())

    (base_speed, base_mem, base_out), (speed, mem, out) = results["materialised"], results["fused (geovit)"]
    print(f"{args.model}: batch {args.batch} of {args.size}x{args.size} pairs, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    for name, (ips, peak, _) in results.items():
        print(f"  {name:16s} {ips:7.2f} pairs/s   peak torch memory {peak:8.1f} MiB")
    print(f"  speed-up {speed / base_speed:.2f}x, peak memory {mem / base_mem:.2f}x of materialised; "
          f"max |prob difference| {(out - base_out).abs().max().item():.1e}")


if __name__ == "__main__":
    main()
