"""ChA-MAEViT pretraining step: geovit vs a reference-style step, same weights, same masks.

One step = ``pretrain_step`` (encoder, hybrid fusion, channel-aware decoder, every loss, labels
given) + backward + AdamW step, with one injected DCP draw (the So2Sat recipe's channel + patch
masking, r = 0.25) so both variants do identical work; their losses must agree. The baseline is
the same model run the way the reference code runs on a machine without xformers/GPU
(``specs/chamaevit.md`` §2): materialised attention (q·kᵀ, softmax; ``set_fused_attention(model,
False)``) and the Conv3d patch projection (``model.patch_projection = "conv"``). geovit runs fused
SDPA and the projection as one matmul; ``geovit, conv projection`` is geovit before the matmul
projection (fused SDPA + Conv3d), timed in the same rounds, so the before/after ratio is measured
side by side. ``--compile`` adds ``geovit + torch.compile``: the encoder blocks and the decoder
compiled in place, what ``geovit pretrain --compile`` compiles (``PretrainingTask.compile_targets``).

Printed per variant: ms/step and samples/s (median over ``--rounds`` alternating rounds; on the
CPU the process CPU time of the step, which other jobs on a shared machine do not inflate, next to
its wall time; on a GPU the wall time), peak
memory (``torch.cuda.max_memory_allocated`` on a GPU, torch's CPU allocations otherwise) and the
fraction of the device's measured fp32 matmul peak the step reaches (FLOPs counted by
``torch.utils.flop_counter``); the load average before and after. ``--profile`` adds where one
geovit step spends its time (torch.profiler self time by op family, and the DCP draw).

    python bench/chamaevit_pretrain.py                        # ViT-S/8, 18x32² and 8x224², cuda when present
    python bench/chamaevit_pretrain.py --only 32 --profile    # the So2Sat-sized batch, with the breakdown
    python bench/chamaevit_pretrain.py --device cpu --threads 1 --rounds 7
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
from _common import (add_device_arg, device_line, load_average, peak_memory_mib, setup_threads,  # noqa: E402
                     synchronize, write_json)

from geovit.models import create_model  # noqa: E402
from geovit.models.chamae_masking import BOTH  # noqa: E402
from geovit.models.layers import set_fused_attention  # noqa: E402

# (label, channels, image size, batch, steps per round)
SETTINGS = {
    "32": ("18x32²  (So2Sat)", 18, 32, 16, 1),
    "224": ("8x224²  (6272 patch tokens)", 8, 224, 1, 1),
}
#: op families of the profile breakdown (first match wins)
FAMILIES = (
    ("matmul (Linear, bmm)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul")),
    ("attention (SDPA / softmax)", ("scaled_dot_product", "aten::_softmax", "aten::softmax")),
    ("GELU, LayerNorm", ("gelu", "layer_norm")),
    ("gathers, scatters, cat, repeat (masking / decoder layout)",
     ("aten::gather", "aten::scatter", "aten::index", "aten::cat", "repeat_interleave", "aten::repeat",
      "aten::masked", "aten::where", "aten::argsort", "aten::sort")),
    ("copies (copy_, clone, contiguous)", ("aten::copy_", "aten::clone", "aten::contiguous", "aten::_to_copy")),
    ("FFT (Fourier loss)", ("fft",)),
    ("patch projection conv", ("convolution",)),
    ("optimizer (AdamW)", ("lerp", "addcdiv", "addcmul", "aten::sqrt", "_foreach")),
)


def cpu_time_peak(device) -> float:
    """The fp32 matmul peak measured now, on the step's clock: process CPU time on the CPU (what
    a core does while it runs, whatever else shares the machine), wall time on a GPU.

    ``_common.device_peak_gflops`` measures wall time once per process (the number printed in
    the header); on a shared CPU that is lowered by the other jobs, so the fraction of peak is
    taken against this one, measured the same way as the steps.
    """
    device = torch.device(device)
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    n = 8192 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    times = []
    for i in range(9):
        synchronize(device)
        t0 = clock()
        a @ b
        synchronize(device)
        if i >= 2:
            times.append(clock() - t0)
    return 2 * n ** 3 / statistics.median(times) / 1e9


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


def step_flops(model, x, labels, masks) -> float:
    """FLOPs of forward + backward of one step (matmuls, attention, convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model)
    with FlopCounterMode(display=False) as counter:
        probe.pretrain_step(x, masks=masks, labels=labels)["loss"].backward()
    return float(counter.get_total_flops())


def profile_step(step, model, batch, channels, device) -> None:
    """Where one step's time goes: profiler self time by op family, plus the DCP draw."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(device).type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        synchronize(device)
    cuda = torch.device(device).type == "cuda"
    events = [e for e in prof.key_averages() if not e.key.startswith(("Optimizer.", "ProfilerStep"))]
    # leaf time: self time (CPU) or device self time (GPU); autograd wrappers have ~0 self time
    self_time = {e.key: (e.self_device_time_total if cuda else e.self_cpu_time_total) for e in events}
    total = sum(self_time.values()) or 1.0
    shares: dict[str, float] = {}
    for key, t in self_time.items():
        family = next((name for name, pats in FAMILIES if any(p in key for p in pats)), "other")
        shares[family] = shares.get(family, 0.0) + t
    print(f"  where one geovit step spends its {'device' if cuda else 'CPU'} time (profiler self time, "
          f"{total / 1e3:.0f} ms in ops):")
    for name, t in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"    {name:<58} {100 * t / total:5.1f} %")
    top = sorted(((k, t) for k, t in self_time.items()
                  if not any(p in k for _, pats in FAMILIES[:1] for p in pats)), key=lambda kv: -kv[1])[:6]
    print("    largest non-matmul ops: " + ", ".join(f"{k} {100 * t / total:.1f} %" for k, t in top))
    t0 = time.perf_counter()
    for _ in range(20):
        model.sample_masks(batch, channels, device=device, strategy=BOTH)
    synchronize(device)
    print(f"    DCP draw (sample_masks, outside the timed step): {(time.perf_counter() - t0) / 20 * 1e3:.2f} ms")


def run(key: str, args) -> dict:
    label, channels, size, batch, iters = SETTINGS[key]
    device = torch.device(args.device)
    torch.manual_seed(0)
    np.random.seed(0)
    geovit = create_model("chamaevit_small_patch8", in_chans=channels, img_size=size, num_classes=17).to(device).train()
    reference = copy.deepcopy(geovit)
    switched = set_fused_attention(reference, False)
    reference.patch_projection = "conv"
    before = copy.deepcopy(geovit)
    before.patch_projection = "conv"
    x = torch.randn(batch, channels, size, size, device=device)
    labels = torch.randint(0, 17, (batch,), device=device)
    torch.manual_seed(0)
    masks = geovit.sample_masks(batch, channels, device=device, strategy=BOTH)
    n_vis = masks.tokens_to_keep.shape[1]
    print(f"\n== ViT-S/8 on {label}, batch {batch}: encoder sees {n_vis} of {masks.ind_restore.shape[1]} patch "
          f"tokens, decoder {masks.ind_restore.shape[1] + geovit.num_extra_tokens}; {switched} attention modules "
          "materialised in the reference-style variant")

    flops = step_flops(geovit, x, labels, masks)
    peak = cpu_time_peak(device)
    variants = {"geovit": geovit, "geovit, conv projection": before, "reference-style": reference}
    if args.compile:
        compiled = copy.deepcopy(geovit)
        for module in [*compiled.blocks, compiled.decoder]:
            module.compile()
        variants["geovit + torch.compile"] = compiled
    steps = {name: make_step(model, x, labels, masks) for name, model in variants.items()}
    memory = {name: peak_memory_mib(steps[name][0], device) for name in variants}  # also the warm-up step
    for name in variants:
        steps[name][0]()
    # alternate the variants round by round, so load changes on a shared machine hit both alike
    on_cpu = device.type == "cpu"
    clock = time.process_time if on_cpu else time.perf_counter
    rounds: dict[str, list[float]] = {name: [] for name in variants}
    walls: dict[str, list[float]] = {name: [] for name in variants}
    ratios, ratios_before, ratios_compiled = [], [], []
    for _ in range(args.rounds):
        for name, (step, _) in steps.items():
            synchronize(device)
            t0, w0 = clock(), time.perf_counter()
            for _ in range(iters):
                step()
            synchronize(device)
            rounds[name].append((clock() - t0) / iters)
            walls[name].append((time.perf_counter() - w0) / iters)
        ratios.append(rounds["reference-style"][-1] / rounds["geovit"][-1])
        ratios_before.append(rounds["reference-style"][-1] / rounds["geovit, conv projection"][-1])
        if args.compile:
            ratios_compiled.append(rounds["reference-style"][-1] / rounds["geovit + torch.compile"][-1])
    result = {"setting": label, "batch": batch, "flops_per_step": flops, "matmul_peak_gflops": peak}
    for name in variants:
        seconds = statistics.median(rounds[name])
        frac = flops / seconds / 1e9 / peak
        wall = statistics.median(walls[name])
        result[name] = {"ms_per_step": seconds * 1e3, "wall_ms_per_step": wall * 1e3, "samples_per_s": batch / seconds,
                        "peak_memory_mib": memory[name], "fraction_of_matmul_peak": frac,
                        "clock": "process CPU time" if on_cpu else "wall"}
        shown = f" ({'CPU' if on_cpu else 'wall'}; wall {wall * 1e3:.0f})" if on_cpu else ""
        print(f"{name:>24}: {seconds * 1e3:9.1f} ms/step{shown} (median of {args.rounds} rounds x {iters})  "
              f"{batch / seconds:8.2f} samples/s  peak memory {memory[name]:7.0f} MiB  "
              f"{flops / seconds / 1e9:6.1f} GFLOP/s = {100 * frac:4.1f} % of the matmul peak")
    lg, lr_ = steps["geovit"][1], steps["reference-style"][1]
    drift = max(abs(a - b) for other in ("geovit, conv projection", "reference-style")
                for a, b in zip(lg, steps[other][1]))
    ratio = statistics.median(ratios)
    ratio_before = statistics.median(ratios_before)
    peak_end = cpu_time_peak(device)
    result.update(speedup_median_of_rounds=ratio, speedups=ratios, speedup_before_median_of_rounds=ratio_before,
                  speedups_before=ratios_before, loss_first=(lg[0], lr_[0]), loss_max_abs_diff=drift)
    print(f"first step (identical weights): loss geovit {lg[0]:.7f}, reference-style {lr_[0]:.7f}, "
          f"|diff| {abs(lg[0] - lr_[0]):.2e}; over {len(lg)} identical steps max |diff| {drift:.2e}")
    print(f"speed-up vs reference-style: {ratio:.2f}x samples/s (median of the {args.rounds} per-round ratios "
          f"{', '.join(f'{r:.2f}' for r in ratios)}); before the matmul projection {ratio_before:.2f}x "
          f"({', '.join(f'{r:.2f}' for r in ratios_before)}); {flops / 1e9:.1f} GFLOP per step; "
          f"matmul peak ({'CPU' if on_cpu else 'wall'} time) {peak:.1f} GFLOP/s at the start, {peak_end:.1f} at the end")
    if args.compile:
        print(f"torch.compile: {statistics.median(ratios_compiled):.2f}x vs reference-style "
              f"({', '.join(f'{r:.2f}' for r in ratios_compiled)}), max |loss diff| vs geovit "
              f"{max(abs(a - b) for a, b in zip(lg, steps['geovit + torch.compile'][1])):.2e}")
        result["speedup_compiled_median_of_rounds"] = statistics.median(ratios_compiled)
    if args.profile:
        profile_step(steps["geovit"][0], geovit, batch, channels, device)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(SETTINGS), help="run one setting")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds (median reported)")
    parser.add_argument("--profile", action="store_true", help="also print where one geovit step spends its time")
    parser.add_argument("--compile", action="store_true", help="also time geovit with torch.compile (blocks, decoder)")
    add_device_arg(parser)
    args = parser.parse_args()
    setup_threads(args.threads)
    print(f"torch {torch.__version__}, {device_line(args.device)}; {load_average()}")
    results = {"bench": "chamaevit_pretrain", "device": args.device, "threads": torch.get_num_threads(),
               "settings": [run(key, args) for key in ([args.only] if args.only else list(SETTINGS))]}
    print(f"done; {load_average()}")
    write_json(args.json, results)


if __name__ == "__main__":
    main()
