"""Benchmark: geovit ChannelViT-S (fused SDPA attention) vs materialised attention (q@kᵀ→softmax→@v).

Same weights, same input, eval forward, 2 threads. Cases:
  (a) S/16, 8 channels, 224²  (JUMP-CP-like; 1 + 8·196 = 1569 tokens)
  (b) S/8, 18 channels, 32²   (So2Sat; 1 + 18·16 = 289 tokens)
Prints images/s, the speed ratio, peak memory of each path (peak of torch's CPU allocations
during one forward, from the profiler) and the fraction of this machine's measured fp32 matmul
peak. Then the same with bf16 autocast (max abs deviation from the fp32 output), and
training samples/s with HCS vs full-channel training.

    python bench/channelvit_forward.py [--repeat 5] [--skip-memory] [--device cuda] [--quick] [--json out.json]

On a GPU (``--device cuda``, the default when one is present) peak memory is
``torch.cuda.max_memory_allocated`` and the peak is the GPU's measured fp32 matmul rate.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_device_arg,
    device_line,
    device_peak_gflops,
    load_average,
    peak_memory_mib,
    setup_threads,
    synced,
    time_call,
    write_json,
)

import torch  # noqa: E402

from geovit.models import create_model  # noqa: E402
from geovit.models.layers import set_fused_attention  # noqa: E402

CASES = {
    "a": dict(name="S/16, 8 ch, 224²", model="channelvit_small_patch16", chans=8, size=224, batch=4),
    "b": dict(name="S/8, 18 ch, 32²", model="channelvit_small_patch8", chans=18, size=32, batch=64),
}


def build(case: dict, fused: bool, device: str = "cpu"):
    torch.manual_seed(0)
    model = create_model(case["model"], in_chans=case["chans"], img_size=case["size"]).eval().to(device)
    set_fused_attention(model, fused)
    x = torch.randn(case["batch"], case["chans"], case["size"], case["size"], generator=torch.Generator().manual_seed(1))
    return model, x.to(device)


def forward_flops(model, case: dict) -> float:
    d, p = model.embed_dim, model.patch_size
    n = (case["size"] // p) ** 2 * case["chans"]
    seq = n + 1
    per_layer = 24 * seq * d * d + 4 * seq * seq * d
    return case["batch"] * (len(model.blocks) * per_layer + 2 * n * p * p * d)


def bench_forward(key: str, repeat: int, peak: float, skip_memory: bool, device: str = "cpu", bf16: bool = True) -> dict:
    case = CASES[key]
    model, x = build(case, True, device)
    fwd = synced(lambda: model(x), device)
    with torch.no_grad():
        ref = model(x)
        t_fused = time_call(fwd, repeat=repeat)
        set_fused_attention(model, False)
        t_mat = time_call(fwd, repeat=repeat)
        diff_impl = (model(x) - ref).abs().max().item()
        set_fused_attention(model, True)
        t_bf16 = t_bf16_mat = float("nan")
        bf16_out = ref
        if bf16:
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
                t_bf16 = time_call(fwd, repeat=repeat)
                bf16_out = model(x).float()
                set_fused_attention(model, False)
                t_bf16_mat = time_call(fwd, repeat=repeat)
                set_fused_attention(model, True)
    flops = forward_flops(model, case)
    b = case["batch"]
    print(f"\n({key}) ChannelViT-{case['name']}, batch {b}, fp32, {device}, {torch.get_num_threads()} threads")
    print(f"  fused SDPA      : {b / t_fused:8.1f} img/s   ({flops / t_fused / 1e9:6.1f} GFLOP/s = {flops / t_fused / 1e9 / peak:5.1%} of matmul peak)")
    print(f"  materialised    : {b / t_mat:8.1f} img/s   ({flops / t_mat / 1e9:6.1f} GFLOP/s = {flops / t_mat / 1e9 / peak:5.1%} of matmul peak)")
    print(f"  speed ratio     : {t_mat / t_fused:5.2f}x   (max |Δ| between the two paths {diff_impl:.1e})")
    m_fused = m_mat = None
    if not skip_memory:
        with torch.no_grad():
            m_fused = peak_memory_mib(lambda: model(x), device)
            set_fused_attention(model, False)
            m_mat = peak_memory_mib(lambda: model(x), device)
            set_fused_attention(model, True)
        print(f"  peak memory     : fused {m_fused:7.1f} MiB, materialised {m_mat:7.1f} MiB, ratio {m_fused / max(m_mat, 1e-9):4.2f}")
    dev = (bf16_out - ref).abs().max().item()
    rel = dev / ref.abs().max().item()
    if bf16:
        print(f"  bf16 autocast   : fused {b / t_bf16:8.1f} img/s, materialised {b / t_bf16_mat:8.1f} img/s, ratio {t_bf16_mat / t_bf16:4.2f}x; "
          f"max |bf16 − fp32| = {dev:.3e} ({rel:.1%} of max |out|)")
    return {"case": case["name"], "img_per_s": b / t_fused, "img_per_s_materialised": b / t_mat,
            "ratio": t_mat / t_fused, "frac_matmul_peak": flops / t_fused / 1e9 / peak, "peak_mib": m_fused,
            "peak_mib_materialised": m_mat, "bf16_img_per_s": b / t_bf16}


def bench_hcs_training(repeat: int, device: str = "cpu") -> dict:
    """Samples/s of training steps with HCS (random channel subsets) vs all 18 channels."""
    case = dict(CASES["b"], batch=32)
    rates = {}
    for hcs in (True, False):
        torch.manual_seed(0)
        model = create_model(case["model"], in_chans=18, img_size=32, num_classes=17, hcs=hcs, hcs_seed=0).train().to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(case["batch"], 18, 32, 32, generator=gen).to(device)
        y = torch.randint(0, 17, (case["batch"],), generator=gen).to(device)

        def step():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

        steps = max(repeat * 4, 12)  # HCS steps vary in length: average over many draws
        t = time_call(synced(lambda: [step() for _ in range(steps)], device), warmup=1, repeat=1) / steps
        rates[hcs] = case["batch"] / t
    print(f"\nTraining ChannelViT-S/8 on 18×32², batch {case['batch']}: HCS {rates[True]:.1f} samples/s, "
          f"full channels {rates[False]:.1f} samples/s, ratio {rates[True] / rates[False]:.2f}x")
    return {"hcs_samples_per_s": rates[True], "full_samples_per_s": rates[False]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--cases", default="ab")
    ap.add_argument("--quick", action="store_true",
                    help="case b at batch 4, 2 repeats, no bf16 and HCS-training parts (bench/run_all.py --quick)")
    add_device_arg(ap)
    args = ap.parse_args()
    if args.quick:
        args.cases, args.repeat = "b", min(args.repeat, 2)
        CASES["b"] = dict(CASES["b"], batch=4)
    setup_threads(2)
    peak = device_peak_gflops(args.device)
    print(f"torch {torch.__version__}; {device_line(args.device)}; {load_average()}")
    results = {"bench": "channelvit_forward", "device": args.device, "peak_gflops": peak, "cases": {}}
    for key in args.cases:
        results["cases"][key] = bench_forward(key, args.repeat, peak, args.skip_memory, args.device, bf16=not args.quick)
    if not args.quick:
        results["hcs_training"] = bench_hcs_training(args.repeat, args.device)
    print(load_average())
    write_json(args.json, results)


if __name__ == "__main__":
    main()
