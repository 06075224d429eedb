"""`geovit predict` on synthetic Sentinel-2 + Sentinel-1 scenes: peak memory per scene size, windows/s.

Two parts, each measurement in a fresh subprocess (peak RSS = ``ru_maxrss`` of that process):

1. **memory** — :func:`geovit.predict.predict_scene` (map + probabilities + PNG preview, clouds
   masked, a SAR swath gap) on scenes of ``--sizes`` px (default 1024², 4096², 8192²; 32 px windows:
   1 024 to 65 536 windows). The model is a small stand-in ChannelViT (random weights, ``--model``)
   so that the 8192² scene finishes on a CPU; memory is that of the pipeline (windowed reads,
   chunks, block writes), which must not grow with the scene: the claim is peak RSS at the largest
   size <= 1.10 x peak RSS at the smallest. Peak RSS is the process's ``VmHWM`` (``ru_maxrss`` would
   carry over the parent's peak into the child); "ready" is the peak after loading the model and a
   warm-up prediction on a 256² scene (imports, GDAL drivers, fonts).
2. **throughput** — windows/s of ``predict_scene`` with windows batched by channel set
   (``--batch-size``) vs the same pipeline run window by window (batch size 1: one
   ``model(x, channels=ids)`` call per window, no grouping), on one ``--throughput-size`` scene, in
   the same process, alternating rounds (``--rounds`` each), for the stand-in and for
   ``channelvit_tiny_patch8`` (the So2Sat ViT-Ti/8 shape).

Usage: ``python bench/predict_scene.py [--sizes 1024 4096 8192] [--throughput-size 256] [--device cpu]``
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = {
    # small stand-in: the pipeline's cost, not the network's, dominates
    "stand-in": ("channelvit_tiny_patch16", dict(embed_dim=32, depth=1, num_heads=2)),
    # So2Sat ViT-Ti/8 (16 patches per band)
    "channelvit_tiny_patch8": ("channelvit_tiny_patch8", {}),
}


def make_checkpoint(folder: Path, model: str) -> Path:
    """A ``geovit train``-format checkpoint of an 18-band, 32 px, 17-class ChannelViT with random weights."""
    import torch

    from geovit.tasks.classification import ClassificationTask

    name, kwargs = MODELS[model]
    torch.manual_seed(0)
    task = ClassificationTask(model=name, channel_ids=list(range(18)), num_classes=17,
                              model_kwargs=dict(in_chans=18, img_size=32, **kwargs))
    path = folder / f"{model}.ckpt"
    torch.save({"hyper_parameters": dict(task.hparams), "state_dict": task.state_dict()}, path)
    return path


def make_scene(folder: Path, size: int) -> Path:
    from geovit.geo.synthetic import write_synthetic_scene

    out = folder / f"scene{size}"
    if not (out / "scene.json").exists():
        # the 'simple' generator: the physical renderer would take ~12 min for 8192² (the pipeline is what is measured)
        write_synthetic_scene(out, height=size, window=32, clouds="blobs", cloud_cover=0.3, s1_gap=0.15, seed=size,
                              generator="simple")
    return out


def _predict(ckpt: str, scene: str, out: str, batch: int, device: str, probabilities: bool = True,
             preview: bool = True) -> dict:
    from geovit.predict import predict_scene

    s = Path(scene)
    return predict_scene(ckpt, [s / "s2.tif", s / "s1.tif"], out, masks=[str(s / "cloud_mask.tif")],
                         probabilities=Path(out).with_name("probabilities.tif") if probabilities else None,
                         preview=preview, batch_size=batch, device=device, progress=False)


def peak_rss_mib() -> float:
    """High-water mark of this process's resident set (``VmHWM``; falls back to ``ru_maxrss``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_worker(ckpt: str, scene: str, warmup_scene: str, batch: int, device: str) -> None:
    """One full prediction in this fresh process, after a warm-up on a small scene; prints a JSON line."""
    from _common import setup_threads

    setup_threads(int(os.environ.get("BENCH_THREADS", "2")))
    _predict(ckpt, warmup_scene, str(Path(warmup_scene) / "warmup_map.tif"), batch, device)
    ready = peak_rss_mib()
    out = Path(scene) / "map.tif"
    t0 = time.perf_counter()
    stats = _predict(ckpt, scene, str(out), batch, device)
    print(json.dumps({"windows": stats["windows"], "nodata": stats["nodata_windows"], "calls": stats["model_calls"],
                      "sets": len(stats["channel_sets"]), "wall_s": time.perf_counter() - t0,
                      "windows_per_s": stats["windows_per_s"], "rss_ready_mib": ready, "peak_rss_mib": peak_rss_mib()}))


def throughput_worker(ckpt: str, scene: str, batch: int, device: str, rounds: int) -> None:
    """Alternating rounds batched / window by window in this process; prints a JSON line."""
    from _common import setup_threads

    setup_threads(int(os.environ.get("BENCH_THREADS", "2")))
    out = str(Path(scene) / "tp_map.tif")
    _predict(ckpt, scene, out, batch, device, probabilities=False, preview=False)  # warm-up
    rates: dict[str, list[float]] = {"batched": [], "window_by_window": []}
    calls = {}
    for _ in range(rounds):
        for kind, b in (("batched", batch), ("window_by_window", 1)):
            stats = _predict(ckpt, scene, out, b, device, probabilities=False, preview=False)
            rates[kind].append(stats["windows_per_s"])
            calls[kind] = stats["model_calls"]
    print(json.dumps({"rates": rates, "calls": calls, "windows": stats["windows"],
                      "sets": [(s["num_channels"], s["windows"]) for s in stats["channel_sets"]]}))


def _run(args: list[str], threads: int = 2) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "BENCH_THREADS": str(threads)}
    res = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(f"worker failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-worker":
        ckpt, scene, warmup, batch, device = sys.argv[2:7]
        return memory_worker(ckpt, scene, warmup, int(batch), device)
    if len(sys.argv) > 1 and sys.argv[1] == "--throughput-worker":
        ckpt, scene, batch, device, rounds = sys.argv[2:7]
        return throughput_worker(ckpt, scene, int(batch), device, int(rounds))
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[1024, 4096, 8192])
    p.add_argument("--model", default="stand-in", choices=tuple(MODELS), help="model of the memory part")
    p.add_argument("--throughput-size", type=int, default=256)
    p.add_argument("--throughput-models", nargs="*", default=list(MODELS), choices=tuple(MODELS))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=2,
                   help="torch / OpenMP threads of the workers (use 1 on an oversubscribed machine: spinning OpenMP "
                        "threads then dominate small-batch timings)")
    p.add_argument("--workdir", default=None, help="keep scenes here (default: a temporary folder)")
    args = p.parse_args()
    print(f"load average at start: {os.getloadavg()}; device {args.device}; {args.threads} thread(s)", flush=True)
    with tempfile.TemporaryDirectory(prefix="geovit-bench-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        mem_rows = []
        ckpt = make_checkpoint(work, args.model)
        warmup = make_scene(work, 256) if args.sizes else None
        for size in args.sizes:
            scene = make_scene(work, size)
            mem_rows.append((size, _run(["--memory-worker", str(ckpt), str(scene), str(warmup), str(args.batch_size),
                                         args.device], args.threads)))
            print(f"  {size}² done: {mem_rows[-1][1]}", flush=True)
        tp_rows = []
        if args.throughput_size:
            scene = make_scene(work, args.throughput_size)
            for model in args.throughput_models:
                c = make_checkpoint(work, model)
                tp_rows.append((model, _run(["--throughput-worker", str(c), str(scene), str(args.batch_size), args.device,
                                             str(args.rounds)], args.threads)))
    if mem_rows:
        print(f"\nmemory: predict_scene with model {args.model}, 32 px windows, batch {args.batch_size}, {args.threads} "
              "thread(s) "
              "(each row a fresh process; map + probabilities + preview)")
        print(f"{'scene':>12} {'windows':>8} {'nodata':>7} {'sets':>5} {'windows/s':>10} {'RSS ready MiB':>14} "
              f"{'peak RSS MiB':>13} {'peak-ready':>11}")
        for size, s in mem_rows:
            print(f"{size:>6}x{size:<5} {s['windows']:>8} {s['nodata']:>7} {s['sets']:>5} {s['windows_per_s']:>10.1f} "
                  f"{s['rss_ready_mib']:>14.0f} {s['peak_rss_mib']:>13.0f} {s['peak_rss_mib'] - s['rss_ready_mib']:>11.0f}")
        if len(mem_rows) >= 2:
            ratio = mem_rows[-1][1]["peak_rss_mib"] / mem_rows[0][1]["peak_rss_mib"]
            print(f"peak RSS {mem_rows[-1][0]}² / {mem_rows[0][0]}²: {ratio:.3f} "
                  f"(scene area ratio {(mem_rows[-1][0] / mem_rows[0][0]) ** 2:.0f}; claim <= 1.10: "
                  f"{'holds' if ratio <= 1.10 else 'FAILS'})")
    for model, t in tp_rows:
        b, w = t["rates"]["batched"], t["rates"]["window_by_window"]
        ratios = [x / y for x, y in zip(b, w)]
        print(f"\nthroughput, {model}, {args.throughput_size}² scene ({t['windows']} windows, channel sets "
              f"{t['sets']}): batched by channel set {', '.join(f'{x:.1f}' for x in b)} windows/s "
              f"({t['calls']['batched']} calls) vs window by window {', '.join(f'{x:.1f}' for x in w)} windows/s "
              f"({t['calls']['window_by_window']} calls); ratio per round {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
