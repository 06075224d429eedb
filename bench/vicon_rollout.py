"""VICON rollout time per step: fused vs materialised attention with the same weights.

A 128 × 128 trajectory with 4 active fields (PDEBench-style channel mask over VICON's 7 slots),
``gt_steps`` = 10 given frames and a prompt of 9 example pairs + 1 query pair (10 pairs, the
released ``demo_num``), rolled forward single-step. Two widths: the official one (d = 1024,
8 heads, FFN 2048, 10 layers, 87.8 M parameters) and a reduced one (d = 256, 8 heads, FFN 512,
10 layers). For each width the same model is timed with ``F.scaled_dot_product_attention`` and
with materialised ``softmax(q kᵀ) v`` (``geovit.models.layers.set_fused_attention``), and peak
torch-allocated memory of one step is recorded. A third row times the official forward shape
(all pairs, query QoI tokens included; fused) to show what ``last_only`` saves.

    OMP_NUM_THREADS=2 python bench/vicon_rollout.py [--steps 2] [--repeat 2] [--widths official reduced]
    python bench/vicon_rollout.py --device cuda --json out.json     # on a GPU (default when present)

Also printed: steps/s, peak memory (``torch.cuda.max_memory_allocated`` on a GPU) and the fraction
of the device's measured fp32 matmul peak (FLOPs of one step from torch's ``FlopCounterMode``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_device_arg,
    count_flops,
    device_line,
    load_average,
    peak_fraction,
    peak_memory_mib,
    setup_threads,
    synced,
    write_json,
)

from geovit.models.layers import set_fused_attention  # noqa: E402
from pdes.rollout import make_strategy, rollout  # noqa: E402
from pdes.vicon import OFFICIAL_CONFIG, VICON  # noqa: E402

WIDTHS = {
    "official": dict(embed_dim=1024, num_heads=8, mlp_dim=2048, depth=10),
    "reduced": dict(embed_dim=256, num_heads=8, mlp_dim=512, depth=10),
}


def trajectory(num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    traj = torch.zeros(1, num_frames, 7, 128, 128)
    traj[:, :, :4] = torch.randn(1, num_frames, 4, 128, 128, generator=g).cumsum(1) * 0.1
    mask = torch.tensor([1, 1, 1, 1, 0, 0, 0.0])
    return traj, mask


def interleaved_medians(fns: dict, repeat: int) -> tuple[dict, dict]:
    """Median wall and process-CPU time of each callable, run round-robin so that load hits all alike.

    CPU time of this process is reported too: on a shared machine it is less affected by other jobs.
    """
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    med = lambda d: {k: statistics.median(v) for k, v in d.items()}  # noqa: E731
    return med(wall), med(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="predicted frames per timed rollout")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--widths", nargs="+", default=list(WIDTHS), choices=list(WIDTHS))
    parser.add_argument("--quick", action="store_true", help="reduced width, 1 step, 1 repeat (bench/run_all.py --quick)")
    add_device_arg(parser)
    args = parser.parse_args()
    if args.quick:
        args.widths, args.steps, args.repeat = ["reduced"], 1, 1
    setup_threads(2)
    torch.manual_seed(0)
    device = args.device
    print(f"{device_line(device)}; {load_average()}")
    gt, examples = 10, 9
    traj, mask = trajectory(gt + args.steps)
    traj, mask = traj.to(device), mask.to(device)
    summary = {"bench": "vicon_rollout", "device": device, "widths": {}}
    steps = make_strategy("single_step", traj.shape[1], gt, examples)

    print(f"VICON rollout, 128x128, 7 slots (4 active), {examples} examples + 1 query, "
          f"{args.steps} steps/run, median of {args.repeat}, {torch.get_num_threads()} threads")
    for width in args.widths:
        cfg = {**OFFICIAL_CONFIG, **WIDTHS[width]}
        model = VICON(**cfg).eval().to(device)
        params = sum(p.numel() for p in model.parameters()) / 1e6

        def run() -> torch.Tensor:
            return rollout(model, traj, mask, steps, gt_steps=gt).future

        def with_attention(fn, fused):
            def call():
                set_fused_attention(model, fused)
                return fn()
            return call

        cond = traj[:, list(steps[0].demo_cond) + [steps[0].query_cond]]
        qoi = torch.cat([traj[:, list(steps[0].demo_qoi)], torch.zeros_like(traj[:, :1])], dim=1)
        fns = {
            "fused": synced(with_attention(run, True), device),
            "materialised": synced(with_attention(run, False), device),
            "full": synced(with_attention(lambda: model(cond, qoi), True), device),
            "last": synced(with_attention(lambda: model(cond, qoi, last_only=True), True), device),
        }
        with torch.no_grad():
            outs = {k: fns[k]() for k in ("fused", "materialised")}  # warm-up + outputs
            t, cpu = interleaved_medians(fns, args.repeat)
        one_step = lambda: rollout(model, traj[:, : gt + 1], mask, steps[:1], gt_steps=gt)  # noqa: E731
        results = {}
        for label in ("fused", "materialised"):
            set_fused_attention(model, label == "fused")
            results[label] = (t[label] / args.steps, peak_memory_mib(one_step, device), outs[label])
        set_fused_attention(model, True)
        with torch.no_grad():
            step_flops = count_flops(one_step)
        t_full, t_last = t["full"], t["last"]
        (tf, mf, of), (tm, mm, om) = results["fused"], results["materialised"]
        diff = (of - om).abs().max().item()
        print(f"\n[{width}] d={cfg['embed_dim']} heads={cfg['num_heads']} ffn={cfg['mlp_dim']} "
              f"depth={cfg['depth']} ({params:.1f}M params)")
        print(f"  fused SDPA     : {tf * 1e3:9.1f} ms/step   peak {mf:8.1f} MiB")
        print(f"  materialised   : {tm * 1e3:9.1f} ms/step   peak {mm:8.1f} MiB")
        print(f"  speed-up       : {tm / tf:.2f}x wall, {cpu['materialised'] / cpu['fused']:.2f}x process CPU time   "
              f"memory ratio {mm / max(mf, 1e-9):.2f}x   max |fused - materialised| = {diff:.2e}")
        print(f"  forward, official shape (all pairs) {t_full * 1e3:.1f} ms vs last_only {t_last * 1e3:.1f} ms "
              f"-> {t_full / t_last:.2f}x")
        frac = peak_fraction(step_flops, tf, device)
        print(f"  {1 / tf:.2f} steps/s fused, {frac:.1%} of the matmul peak ({step_flops / 1e9:.1f} GFLOP per step)")
        summary["widths"][width] = {"steps_per_s": 1 / tf, "steps_per_s_materialised": 1 / tm, "ratio": tm / tf,
                                    "peak_mib": mf, "frac_matmul_peak": frac}
    print(load_average())
    write_json(args.json, summary)


if __name__ == "__main__":
    main()
