"""Helpers shared by the benchmark scripts (not part of the package, not a test)."""
from __future__ import annotations

import gc
import os
import resource
import statistics
import time
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


def matmul_peak_gflops(n: int = 1024, dtype=torch.float32) -> float:
    """Measured fp32 matmul throughput of this machine (GFLOP/s), the roofline for 'fraction of peak'."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    t = time_call(lambda: a @ b, warmup=2, repeat=7)
    return 2 * n**3 / t / 1e9
