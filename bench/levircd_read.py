"""Benchmark: LEVIR-CD training tiles with each scene decoded once per epoch vs once per tile.

SYNTHETIC LEVIR-CD-format scenes (``--scenes`` training pairs of ``--size``² RGB PNGs, written
with ``geovit.data.levircd.write_synthetic``) are cut into ``--tile``² training tiles by
``LEVIRCDDataModule`` with ChangeViT's augmentation and normalisation, one core
(``num_workers=0``, one torch thread), two orders of the same tiles:

* **per tile** — ``scene_window=0``: tiles shuffled one by one, so nearly every tile decodes its
  whole scene (the behaviour before the tile cache);
* **cached** — ``scene_window=4`` (default): the tiles of 4 scenes shuffled together, scene
  groups in random order, the last 4 decoded scenes kept: each scene decoded once per epoch.

Both give every tile the same augmentation (seeded by tile index and epoch). Each round reads
one epoch of each, alternating; medians of ``--rounds`` rounds give tiles/s and the ratio
(target >= 4x). With ``--device cuda`` batches are also moved to the GPU.

    python bench/levircd_read.py [--scenes 8] [--size 1024] [--tile 256] [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_device_arg, device_line, load_average, max_rss_mib, peak_memory_mib, synchronize, write_json  # noqa: E402

import torch  # noqa: E402

from geovit.data.datamodules import LEVIRCDDataModule  # noqa: E402
from geovit.data.levircd import write_synthetic  # noqa: E402


def epoch(root: Path, args, window: int, epoch_number: int, device: torch.device) -> float:
    """Tiles per second of one training epoch through the DataModule's loader."""
    dm = LEVIRCDDataModule(root, tile=args.tile, batch_size=args.batch, seed=0, scene_window=window)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch_number)
    seen = 0
    t0 = time.perf_counter()
    for batch in loader:
        if device.type != "cpu":
            batch["image"].to(device, non_blocking=True)
        seen += batch["image"].shape[0]
    synchronize(device)
    return seen / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=8, help="training scenes")
    ap.add_argument("--size", type=int, default=1024, help="scene side (LEVIR-CD: 1024)")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--window", type=int, default=4, help="scene_window of the cached path")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small settings for bench/run_all.py --quick")
    add_device_arg(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.scenes, args.size, args.rounds = min(args.scenes, 4), min(args.size, 512), min(args.rounds, 3)
    torch.set_num_threads(1)
    device = torch.device(args.device)
    print(device_line(device))
    with tempfile.TemporaryDirectory(prefix="levircd-bench-") as tmp:
        # write_synthetic splits 60/20/20: total such that the training split has args.scenes pairs
        total = max(3, round(args.scenes / 0.6))
        while total - 2 * max(1, round(0.2 * total)) < args.scenes:
            total += 1
        t0 = time.perf_counter()
        root = write_synthetic(Path(tmp) / "levir", num_samples=total, size=args.size)
        print(f"wrote {total} SYNTHETIC {args.size}² pairs in {time.perf_counter() - t0:.0f} s")
        rates: dict[str, list[float]] = {"per tile": [], "cached": []}
        loads = []
        epoch(root, args, args.window, 99, device)  # warm the page cache
        for r in range(args.rounds):
            rates["per tile"].append(epoch(root, args, 0, r, device))
            rates["cached"].append(epoch(root, args, args.window, r, device))
            loads.append(load_average())
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.1f} tiles/s" for k, v in rates.items()) + f"  ({loads[-1]})")
        med = {k: statistics.median(v) for k, v in rates.items()}
        peak = peak_memory_mib(lambda: epoch(root, args, args.window, 0, device), device)
        n_tiles = LEVIRCDDataModule(root, tile=args.tile, batch_size=args.batch).batches_per_epoch() * args.batch
    print(f"\nLEVIR-CD training tiles ({args.scenes} scenes of {args.size}², {args.tile}² tiles, {n_tiles} per epoch, "
          f"augmented + normalised), 1 core, median of {args.rounds} alternating rounds:")
    for k, v in med.items():
        print(f"  {k:<9} {v:>8,.1f} tiles/s")
    print(f"  cached / per tile = {med['cached'] / med['per tile']:.1f}x   (target >= 4x)")
    print(f"  peak memory of the cached loader {peak:.0f} MiB (torch allocations), max RSS {max_rss_mib():.0f} MiB")
    print("  fraction of the matmul peak: not applicable (data path, no matmul work)")
    print(f"  {load_average()}")
    result = {"bench": "levircd_read", "device": str(device), "scenes": args.scenes, "size": args.size, "tile": args.tile,
              "samples_per_s": med, "ratio": med["cached"] / med["per tile"], "peak_mib": peak,
              "frac_matmul_peak": None, "round_loads": loads}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
