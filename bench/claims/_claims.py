"""Shared plumbing of the claim experiments (not part of the package, not a test).

Every run goes through geovit's own Python APIs — ``geovit.cli.classify.run_training`` (what
``geovit train`` runs), ``geovit.cli.pretrain.run_pretraining`` (``geovit pretrain``),
``geovit.tasks.robustness`` and ``geovit.tasks.probe`` — on the built-in SYNTHETIC So2Sat
(``geovit.data.so2sat_synthetic``), so a user reproduces the tables with the commands a user has.
Each (experiment, seed, variant) writes its raw result to ``RESULTS/raw/*.json``; the report
step of each script aggregates whatever raw results exist, so seeds can run in separate
processes (``--seeds 0`` and ``--seeds 1`` side by side) and be summarised afterwards.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import sys
from pathlib import Path
from collections.abc import Iterable, Sequence
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def setup_threads(n: int) -> None:
    """Pin torch's intra-op threads (1 is much faster than 2 on a CPU shared with other jobs)."""
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    torch.set_num_threads(n)


def load_average() -> str:
    """The 1/5/15-minute load average, printed with every result (shared machines)."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        return "n/a"


def synthetic_root(runs: Path, num_samples: int, seed: int) -> Path:
    """The synthetic So2Sat set of ``seed`` under ``runs`` (written once, shared by every variant)."""
    from geovit.data.registry import resolve_data

    root, synthetic = resolve_data("so2sat", None, runs / f"data_seed{seed}", num_samples=num_samples, seed=seed,
                                   version="2", log=lambda m: print(m, flush=True))
    assert synthetic
    return root


def mean_sd(values: Iterable[float], digits: int = 3) -> str:
    """``"0.812 ± 0.021"`` (sample sd; ``± n/a`` for one value)."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    if not v:
        return "n/a"
    sd = statistics.stdev(v) if len(v) > 1 else float("nan")
    return f"{statistics.fmean(v):.{digits}f} ± {sd:.{digits}f}" if len(v) > 1 else f"{v[0]:.{digits}f} ± n/a"


def write_raw(name: str, payload: dict[str, Any]) -> Path:
    """Write one run's result to ``RESULTS/raw/<name>.json`` (atomically)."""
    from geovit._io import atomic_write_text

    path = RESULTS / "raw" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=1) + "\n")
    return path


def read_raw(prefix: str) -> list[dict[str, Any]]:
    """Every raw result whose file name starts with ``prefix``."""
    return [json.loads(p.read_text()) for p in sorted((RESULTS / "raw").glob(f"{prefix}*.json"))]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def quiet_lightning() -> None:
    """Fewer Lightning banners in the logs of long sweeps."""
    import logging
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*exists and is not empty.*")


def run_cli_banner(script: str, args: Any) -> None:
    """Print what is run, where and under which load."""
    import torch

    print(f"{script}: {vars(args)}\n  torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"load average {load_average()}, python {sys.version.split()[0]}", flush=True)
