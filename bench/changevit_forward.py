"""Forward speed of geovit ChangeViT vs the same weights with materialised attention.

Baseline = the same model after ``set_fused_attention(model, False)``: ViT self-attention and the
feature injector's cross-attention build the full softmax(q kᵀ) matrices, as the reference code
does without xformers (specs/changevit.md §6). The injector's c2 cross-attention alone is
(H/16·W/16) x (H/2·W/2) per head: 256 x 16384 x 8 heads per image at 256².

    python bench/changevit_forward.py            # ChangeViT-T, batch 4 of 256x256 pairs, 2 threads
    python bench/changevit_forward.py --model changevit_small --size 512 --batch 1
    python bench/changevit_forward.py --device cuda --json out.json   # on a GPU (default when present)

Prints pairs/s, peak memory (``torch.cuda.max_memory_allocated`` on a GPU, torch's CPU allocations
otherwise) and the fraction of the device's measured fp32 matmul peak (FLOPs from torch's
``FlopCounterMode``).
"""
from __future__ import annotations

import argparse
import statistics

import torch
from _common import (
    add_device_arg,
    count_flops,
    device_line,
    load_average,
    peak_fraction,
    peak_memory_mib,
    setup_threads,
    synced,
    time_call,
    write_json,
)

from geovit.models import create_model
from geovit.models.layers import set_fused_attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="changevit_tiny")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256, help="image side (multiple of 16)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="batch 1 of 128² pairs, 2 repeats (bench/run_all.py --quick)")
    add_device_arg(parser)
    args = parser.parse_args()
    if args.quick:
        args.batch, args.size, args.repeat = 1, 128, 2
    setup_threads(args.threads)
    torch.manual_seed(0)
    device = args.device
    print(f"{device_line(device)}; {load_average()}")

    model = create_model(args.model).eval().to(device)
    t1 = torch.randn(args.batch, 3, args.size, args.size).to(device)
    t2 = torch.randn(args.batch, 3, args.size, args.size).to(device)

    def forward_async():
        with torch.inference_mode():
            return model(t1, t2)

    forward = synced(forward_async, device)

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
        results[name] = (args.batch / statistics.median(seconds[name]), peak_memory_mib(forward, device), forward())
    set_fused_attention(model, True)
    flops = count_flops(forward)

    (base_speed, base_mem, base_out), (speed, mem, out) = results["materialised"], results["fused (geovit)"]
    print(f"{args.model}: batch {args.batch} of {args.size}x{args.size} pairs, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {device}")
    for name, (ips, peak, _) in results.items():
        frac = peak_fraction(flops / args.batch, 1 / ips, device)
        print(f"  {name:16s} {ips:7.2f} pairs/s   peak memory {peak:8.1f} MiB   {frac:5.1%} of the matmul peak")
    print(f"  speed-up {speed / base_speed:.2f}x, peak memory {mem / base_mem:.2f}x of materialised; "
          f"max |prob difference| {(out - base_out).abs().max().item():.1e}")
    print(f"  {load_average()}")
    write_json(args.json, {"bench": "changevit_forward", "device": device, "model": args.model, "batch": args.batch,
                           "size": args.size, "samples_per_s": speed, "samples_per_s_materialised": base_speed,
                           "ratio": speed / base_speed, "peak_mib": mem,
                           "frac_matmul_peak": peak_fraction(flops / args.batch, 1 / speed, device)})


if __name__ == "__main__":
    main()
