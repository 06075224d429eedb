"""Helpers shared by the benchmark scripts (not part of the package, not a test)."""
from __future__ import annotations

import gc
import json
import os
import resource
import statistics
import time
from pathlib import Path
from typing import Callable

import torch


def setup_threads(n: int = 2) -> None:
    torch.set_num_threads(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))


def time_call(fn: Callable[[], object], *, warmup: int = 2, repeat: int = 5) -> float:
    """Median wall time of ``fn()`` in seconds after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_memory_of(fn: Callable[[], object]) -> float:
    """Peak CPU memory (MiB) allocated by torch during ``fn()``, via the profiler's allocator stats."""
    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # Peak = largest running total of allocations/frees, taken from the raw event stream.
    running, peak = 0, 0
    for evt in sorted(prof.events(), key=lambda e: e.time_range.start):
        running += evt.self_cpu_memory_usage  # self: nested ops are not counted twice
        peak = max(peak, running)
    return peak / 2**20


def max_rss_mib() -> float:
    """Peak resident set size of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_PEAK_CACHE: dict[tuple[str, int], float] = {}


def matmul_peak_gflops(n: int = 1024, dtype=torch.float32, device: str | torch.device = "cpu") -> float:
    """Measured fp32 matmul throughput of ``device`` (GFLOP/s), the roofline for 'fraction of peak'.

    Measured once per (device, n) and process (cached); on a GPU with ``n = 4096`` by default
    callers should pass a larger ``n`` (:func:`device_peak_gflops` does).
    """
    device = torch.device(device)
    key = (str(device), n)
    if key in _PEAK_CACHE:
        return _PEAK_CACHE[key]
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    t = time_call(lambda: (a @ b, synchronize(device)), warmup=2, repeat=7)
    _PEAK_CACHE[key] = 2 * n**3 / t / 1e9
    return _PEAK_CACHE[key]


# -- devices ------------------------------------------------------------------------------------
def default_device() -> str:
    """``"cuda"`` when a GPU is present, else ``"cpu"`` (the default of every ``--device``)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_device_arg(parser) -> None:
    """Add ``--device`` (default: cuda when present) and ``--json`` (write the results there)."""
    parser.add_argument("--device", default=default_device(), help="cpu, cuda, cuda:1, ... (default: %(default)s)")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this file (bench/run_all.py)")


def synchronize(device: str | torch.device) -> None:
    """Wait for the queued work of ``device`` (no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_peak_gflops(device: str | torch.device) -> float:
    """The measured fp32 matmul peak of ``device``: 1024² on CPU, 8192² on a GPU."""
    return matmul_peak_gflops(n=8192 if torch.device(device).type == "cuda" else 1024, device=device)


def peak_memory_mib(fn: Callable[[], object], device: str | torch.device) -> float:
    """Peak memory (MiB) of ``fn()``: ``torch.cuda.max_memory_allocated`` on a GPU, else
    the peak of torch's CPU allocations (:func:`peak_memory_of`)."""
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_memory_of(fn)


def load_average() -> str:
    """The 1/5/15-minute load averages, formatted for the bench output."""
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def device_line(device: str | torch.device) -> str:
    """One line naming the device (GPU name) and its measured matmul peak."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return f"device {device} = {name}; measured fp32 matmul peak {device_peak_gflops(device):.1f} GFLOP/s"


def write_json(path: str | os.PathLike | None, results: dict) -> None:
    """Write ``results`` (plus device, load average, time) as JSON to ``path`` when given."""
    if not path:
        return
    results = {**results, "loadavg": list(os.getloadavg()), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def count_flops(fn: Callable[[], object]) -> float:
    """FLOPs of one ``fn()`` as torch's ``FlopCounterMode`` counts them (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def synced(fn: Callable[[], object], device: str | torch.device) -> Callable[[], object]:
    """``fn`` followed by :func:`synchronize` (so wall times cover the GPU work)."""
    def call():
        out = fn()
        synchronize(device)
        return out
    return call


def peak_fraction(flops: float, seconds: float, device: str | torch.device) -> float:
    """Achieved FLOP/s over the measured matmul peak of ``device``."""
    return flops / seconds / 1e9 / device_peak_gflops(device)
