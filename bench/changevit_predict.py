"""Sliding-window change prediction on large GeoTIFF pairs: tiles/s and peak RSS per raster size.

Each measurement runs in a fresh subprocess (peak RSS = ``ru_maxrss`` of that process), so sizes do
not share allocator state. Two parts:

1. **pipeline memory** on generated 4096² and 8192² pairs (and 2048² for the trend): windowed reads,
   overlap blending, GeoTIFF writing, PNG overlay — with a small stand-in convolutional change model
   by default, because ChangeViT-T runs at seconds per 256² tile on a shared 2-core CPU (1849 tiles
   for 8192²). ``--pipeline-model changevit_tiny`` uses the real model (slow on CPU).
2. **ChangeViT-T throughput** (random weights, tile 256, overlap 64, batch 4) on small rasters
   (512², 1024² by default), in fresh subprocesses too: tiles/s and peak RSS; memory is the model's
   per-batch working set and must not change with raster size either.

Usage: ``python bench/changevit_predict.py [--sizes 4096 8192] [--model-sizes 512 1024] [--device cuda]``
(``--device``: where the models run, default cuda when present; ``--quick``: one 512² pipeline raster
and one 256² ChangeViT raster; ``--json``: the rows as JSON).
Prints a table; the claim is "peak RSS does not grow with raster size".
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_pair(folder: Path, size: int) -> tuple[Path, Path]:
    """Two uint8 RGB GeoTIFFs (UTM 15N, 0.5 m) of size², written in row blocks (flat memory)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(size)
    block = 512
    yy, xx = np.mgrid[0:block, 0:block]
    ground = np.stack([100 + 20 * np.sin(xx / 37.0), 115 + 15 * np.cos(yy / 23.0), 85 + 10 * np.sin((xx + yy) / 51.0)])
    before_tile = ground.astype(np.uint8)
    after_tile = before_tile.copy()
    for _ in range(6):  # new "buildings" in the after image
        y0, x0 = rng.integers(0, block - 40, 2)
        after_tile[:, y0:y0 + 30, x0:x0 + 40] = np.array([210, 205, 200], np.uint8)[:, None, None]
    paths = []
    for name, tile in (("before", before_tile), ("after", after_tile)):
        path = folder / f"{name}_{size}.tif"
        profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32615",
                       transform=from_origin(500_000.0, 3_400_000.0, 0.5, 0.5), tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate")
        with rasterio.open(path, "w", **profile) as dst:
            row = np.tile(tile, (1, 1, size // block))
            for y in range(0, size, block):
                dst.write(row, window=Window(0, y, size, block))
        paths.append(path)
    return paths[0], paths[1]


def _stand_in(device: str = "cpu"):
    """A small per-pixel-neighbourhood change model (two convolutions on [t1, t2, |t1 - t2|])."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(9, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 1, 1)).eval().to(device)

    def predict(t1, t2):
        t1, t2 = t1.to(device), t2.to(device)
        x = torch.cat([t1, t2, (t1 - t2).abs()], 1) / 255.0
        return net(x).sigmoid().cpu()

    return predict


def _changevit(name: str, device: str = "cpu"):
    import torch

    from geovit.data.change_transforms import normalize_rgb
    from geovit.models import create_model

    torch.manual_seed(0)
    model = create_model(name).eval().to(device)
    return lambda t1, t2: model(normalize_rgb(t1.to(device)), normalize_rgb(t2.to(device))).cpu()


def worker(before: str, after: str, model: str, tile: int, overlap: int, batch: int, device: str = "cpu") -> None:
    """Run one prediction in this (fresh) process and print a JSON line of stats."""
    import torch
    from _common import setup_threads

    setup_threads(2)
    from geovit.geo.sliding_window import predict_change_raster

    fn = _stand_in(device) if model == "stand-in" else _changevit(model, device)
    rss_ready = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = Path(before).with_name(f"change_{Path(before).stem}.tif")
    t0 = time.perf_counter()
    stats = predict_change_raster(fn, before, after, out, tile=tile, overlap=overlap, batch_size=batch,
                                  overlay=out.with_suffix(".png"), progress=False)
    stats.update(wall_s=time.perf_counter() - t0, rss_ready_mib=rss_ready,
                 peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, model=model, device=device)
    if torch.device(device).type == "cuda":
        stats["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(stats))


def run(before: Path, after: Path, model: str, tile: int, overlap: int, batch: int, device: str = "cpu") -> dict:
    cmd = [sys.executable, __file__, "--worker", str(before), str(after), model, str(tile), str(overlap), str(batch),
           device]
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(f"worker failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        b, a, model, tile, overlap, batch, device = sys.argv[2:9]
        worker(b, a, model, int(tile), int(overlap), int(batch), device)
        return
    from _common import add_device_arg, load_average, write_json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    p.add_argument("--pipeline-model", default="stand-in", help="stand-in or a registered ChangeViT variant")
    p.add_argument("--model-sizes", type=int, nargs="*", default=[512, 1024])
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="one 512² pipeline raster, one 256² ChangeViT raster")
    add_device_arg(p)
    args = p.parse_args()
    if args.quick:
        args.sizes, args.model_sizes = [512], [256]
    print(f"device {args.device}; {load_average()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="geovit-bench-") as tmp:
        for size in args.sizes:
            before, after = write_pair(Path(tmp), size)
            rows.append((size, run(before, after, args.pipeline_model, args.tile, args.overlap, args.batch, args.device)))
        for size in args.model_sizes:
            before, after = write_pair(Path(tmp), size)
            rows.append((size, run(before, after, "changevit_tiny", args.tile, args.overlap, args.batch, args.device)))
    print(f"\nsliding-window predict, tile {args.tile}, overlap {args.overlap}, batch {args.batch}, 2 threads "
          "(each row a fresh process)")
    print(f"{'raster':>12} {'model':>15} {'tiles':>6} {'tiles/s':>8} {'RSS ready MiB':>14} {'peak RSS MiB':>13} {'peak-ready':>11}")
    for size, s in rows:
        print(f"{size:>6}x{size:<5} {s['model']:>15} {s['tiles']:>6} {s['tiles_per_s']:>8.2f} {s['rss_ready_mib']:>14.0f} "
              f"{s['peak_rss_mib']:>13.0f} {s['peak_rss_mib'] - s['rss_ready_mib']:>11.0f}")
    pipe = [s for size, s in rows if s["model"] == args.pipeline_model]
    if len(pipe) >= 2:
        growth = pipe[-1]["peak_rss_mib"] / pipe[0]["peak_rss_mib"]
        area = (args.sizes[-1] / args.sizes[0]) ** 2
        print(f"\npeak RSS ratio {args.sizes[-1]}² / {args.sizes[0]}²: {growth:.3f} (raster area ratio {area:.0f})")
    print("fraction of the matmul peak: not measured here (a pipeline benchmark; see bench/changevit_forward.py)")
    print(load_average())
    model_rows = [s for _, s in rows if s["model"] == "changevit_tiny"]
    write_json(args.json, {"bench": "changevit_predict", "device": args.device, "rows": [dict(s, size=z) for z, s in rows],
                           "samples_per_s": model_rows[-1]["tiles_per_s"] if model_rows else None,
                           "peak_mib": max(s.get("cuda_peak_mib", s["peak_rss_mib"]) for _, s in rows),
                           "frac_matmul_peak": None})


if __name__ == "__main__":
    main()
