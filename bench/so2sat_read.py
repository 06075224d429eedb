"""Benchmark: So2Sat training reads, batched (one HDF5 slice per run of rows) vs one row per call.

A float64 So2Sat-format file (``--samples`` patches of 32x32x18, 147,592 bytes each, written
with ``geovit.data.so2sat.write_h5`` into a temporary folder, or ``--file`` to reuse one) is
read three ways, one core (``num_workers=0``, one torch thread):

* **baseline** — torchgeo's reader pattern: open the file for every sample, read one row of
  ``sen1``, ``sen2`` and ``label``, ``default_collate`` (written here, as torchgeo 0.8 reads);
* **per-sample** — geovit's ``So2SatDataModule(reads="sample")`` training loader (file opened
  once per process, one row per sample, normalised);
* **batched** — geovit's default ``So2SatDataModule`` training loader
  (:class:`~geovit.data.samplers.BlockBatchSampler` + ``So2Sat.__getitems__``, normalised).

Each round times every path over the same number of samples, alternating; the medians of
``--rounds`` rounds give samples/s and the ratio batched / baseline. The read rate
(bytes per sample x samples/s) is compared with a measured ``numpy`` copy rate of this core
(memory bandwidth). The file is read from the page cache after the first round. With
``--device cuda`` batches are also moved to the GPU (pinned memory).

    python bench/so2sat_read.py [--samples 20000] [--rounds 5] [--block 16] [--batch 256]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_device_arg,
    device_line,
    load_average,
    max_rss_mib,
    peak_memory_mib,
    synchronize,
    write_json,
)

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from geovit.data.datamodules import So2SatDataModule  # noqa: E402
from geovit.data.so2sat import write_h5  # noqa: E402

BYTES_PER_SAMPLE = 32 * 32 * 18 * 8 + 17 * 8


class TorchgeoStyleSo2Sat(Dataset):
    """The baseline: torchgeo's ``So2Sat.__getitem__`` pattern (open per sample, one row per call)."""

    def __init__(self, path: Path):
        self.path = path
        with h5py.File(path, "r") as f:
            self.n = f["label"].shape[0]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        with h5py.File(self.path, "r") as f:
            s1 = f["sen1"][index].astype(np.float64)
            s2 = f["sen2"][index].astype(np.float64)
            label = torch.tensor(f["label"][index].argmax())
            s1 = torch.from_numpy(np.rollaxis(s1, 2, 0))
            s2 = torch.from_numpy(np.rollaxis(s2, 2, 0))
        return {"image": torch.cat([s1, s2]).float(), "label": label}


def write_file(folder: Path, n: int, seed: int = 0) -> Path:
    """A float64 So2Sat-format ``training.h5`` (and tiny validation/test files) of ``n`` random patches."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 17, size=n)
    onehot = np.zeros((n, 17))
    onehot[np.arange(n), labels] = 1.0
    sen1 = rng.standard_normal((n, 32, 32, 8))
    sen2 = rng.standard_normal((n, 32, 32, 10))
    write_h5(folder / "training.h5", sen1, sen2, onehot)
    del sen1, sen2
    small = min(n, 17)
    for name in ("validation.h5", "testing.h5"):
        write_h5(folder / name, rng.standard_normal((small, 32, 32, 8)), rng.standard_normal((small, 32, 32, 10)),
                 np.eye(17)[np.arange(small) % 17])
    return folder


def copy_rate(nbytes: int = 256 << 20, repeat: int = 5) -> float:
    """Bytes per second that ``np.copyto`` moves between two large float64 arrays (one core)."""
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    times = []
    for _ in range(repeat + 1):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return nbytes / statistics.median(times[1:])


def drain(loader, limit: int, device: torch.device) -> int:
    """Samples read from ``loader`` (stopping after ``limit``), each batch moved to ``device``."""
    seen = 0
    for batch in loader:
        if device.type != "cpu":
            batch["image"].to(device, non_blocking=True)
        seen += len(batch["label"])
        if seen >= limit:
            break
    synchronize(device)
    return seen


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=20000, help="patches in the file (default 20,000, ~3 GB)")
    ap.add_argument("--file", default=None, help="reuse this So2Sat root (holding training.h5) instead of writing one")
    ap.add_argument("--tmpdir", default=None, help="where the temporary file goes (default: the system's)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-round", type=int, default=None,
                    help="samples read per path and round (default: 2,000 for the per-row paths, the file for batched)")
    ap.add_argument("--block", type=int, default=16, help="rows per block of the batched path")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="small settings for bench/run_all.py --quick")
    add_device_arg(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.samples, args.rounds = min(args.samples, 2048), min(args.rounds, 3)
    torch.set_num_threads(1)
    device = torch.device(args.device)
    print(device_line(device))
    tmp = None
    if args.file:
        root = Path(args.file)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="so2sat-bench-", dir=args.tmpdir)
        root = Path(tmp.name)
        t0 = time.perf_counter()
        write_file(root, args.samples)
        print(f"wrote {args.samples} float64 samples ({(root / 'training.h5').stat().st_size / 1e9:.2f} GB) "
              f"in {time.perf_counter() - t0:.0f} s")
    n = TorchgeoStyleSo2Sat(root / "training.h5").n
    pin = device.type == "cuda"
    baseline = DataLoader(TorchgeoStyleSo2Sat(root / "training.h5"), batch_size=args.batch, shuffle=True,
                          num_workers=0, pin_memory=pin, generator=torch.Generator().manual_seed(0))

    def geovit_loader(reads: str, epoch: int):
        dm = So2SatDataModule(root, batch_size=args.batch, augment=False, reads=reads, block_size=args.block)
        loader = dm.train_dataloader()
        (loader.batch_sampler if reads == "block" else loader.sampler).set_epoch(epoch)
        return loader

    per_row = args.per_round or min(n, 2000)
    per_block = args.per_round or n
    paths = {"baseline": lambda e: (baseline, per_row),
             "per-sample": lambda e: (geovit_loader("sample", e), per_row),
             "batched": lambda e: (geovit_loader("block", e), per_block)}
    rates: dict[str, list[float]] = {k: [] for k in paths}
    cpu_rates: dict[str, list[float]] = {k: [] for k in paths}  # per second of this process's CPU time
    loads = []
    drain(geovit_loader("block", 99), n, device)  # warm the page cache
    for r in range(args.rounds):
        for name, make in paths.items():
            loader, limit = make(r)
            t0, c0 = time.perf_counter(), time.process_time()
            seen = drain(loader, limit, device)
            rates[name].append(seen / (time.perf_counter() - t0))
            cpu_rates[name].append(seen / (time.process_time() - c0))
        loads.append(load_average())
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()) + f"  ({loads[-1]})")
    med = {k: statistics.median(v) for k, v in rates.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu_rates.items()}
    bw = copy_rate()
    peak = peak_memory_mib(lambda: drain(geovit_loader("block", 0), min(n, 20 * args.batch), device), device)
    print(f"\nSo2Sat reads, {n} float64 samples ({BYTES_PER_SAMPLE:,} B each), batch {args.batch}, block {args.block}, "
          f"1 core, median of {args.rounds} alternating rounds:")
    for k, v in med.items():
        print(f"  {k:<11} {v:>10,.0f} samples/s   {v * BYTES_PER_SAMPLE / 1e9:6.2f} GB/s "
              f"({v * BYTES_PER_SAMPLE / bw:5.1%} of the numpy copy rate); "
              f"{cpu_med[k]:,.0f} samples per CPU-second ({cpu_med[k] * BYTES_PER_SAMPLE / bw:5.1%})")
    print(f"  batched / baseline = {med['batched'] / med['baseline']:.1f}x   "
          f"batched / per-sample = {med['batched'] / med['per-sample']:.1f}x   (target >= 10x the baseline); "
          f"per CPU-second {cpu_med['batched'] / cpu_med['baseline']:.1f}x and {cpu_med['batched'] / cpu_med['per-sample']:.1f}x")
    print(f"  numpy copy rate of this core: {bw / 1e9:.2f} GB/s; peak memory of the batched loader "
          f"{peak:.0f} MiB (torch allocations), max RSS {max_rss_mib():.0f} MiB")
    print("  fraction of the matmul peak: not applicable (data path, no matmul work)")
    print(f"  {load_average()}")
    result = {"bench": "so2sat_read", "device": str(device), "samples": n, "batch": args.batch, "block": args.block,
              "samples_per_s": med, "samples_per_cpu_s": cpu_med, "ratio_vs_baseline": med["batched"] / med["baseline"],
              "bytes_per_sample": BYTES_PER_SAMPLE, "copy_rate_gbps": bw / 1e9, "peak_mib": peak,
              "frac_matmul_peak": None, "round_loads": loads}
    write_json(args.json, result)
    if tmp is not None:
        tmp.cleanup()
    return result


if __name__ == "__main__":
    main()
