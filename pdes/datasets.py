"""The fluid data sets pdes adds to geovit's dataset registry (kept light: no Lightning import).

``DATASETS`` is read by :mod:`geovit.data.registry` through the entry point
``[project.entry-points."geovit.datasets"] pdes = "pdes.datasets:DATASETS"``:

* ``pdearena_ns2d`` — PDEArena NavierStokes-2D (buoyancy-driven smoke) shards;
* ``pdebench_cfd2d`` — PDEBench 2D CFD (compressible Navier-Stokes), VICON's ``{split}/`` layout;
* ``vicon_default`` — both of them at once, ``root/ns2d`` and ``root/cfd2d``: what
  ``geovit pdes train`` trains on when no data is given (:func:`resolve_vicon_data`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from geovit.data.registry import DatasetInfo, resolve_data
from geovit.errors import GeovitError

#: sub-folders of a ``vicon_default`` set, in training order
DEFAULT_SETS: tuple[str, ...] = ("ns2d", "cfd2d")
#: training trajectories of each ``vicon_default`` set when ``num_samples`` is not given
DEFAULT_TRAJECTORIES = 24
_SPLITS = ("train", "valid", "test")

DATASETS: tuple[DatasetInfo, ...] = (
    DatasetInfo("pdearena_ns2d", "pdes.data:TrajectoryDataset", "pdes.datamodule:VICONDataModule",
                "pdes.synthetic:write_synthetic_ns2d", None, _SPLITS,
                "PDEArena NavierStokes-2D: buoyancy-driven smoke in a closed box"),
    DatasetInfo("pdebench_cfd2d", "pdes.data:TrajectoryDataset", "pdes.datamodule:VICONDataModule",
                "pdes.synthetic:write_synthetic_cfd2d", None, _SPLITS,
                "PDEBench 2D CFD: compressible Navier-Stokes, periodic"),
    DatasetInfo("vicon_default", "pdes.data:TrajectoryDataset", "pdes.datamodule:VICONDataModule",
                "pdes.datasets:write_default_synthetic", None, _SPLITS,
                "smoke in PDEArena format (ns2d/) + compressible flow in PDEBench/VICON format (cfd2d/)"),
)


def write_default_synthetic(out_dir: str | os.PathLike, *, num_samples: int | None = None, seed: int = 0,
                            resolution: int = 32) -> Path:
    """Write the two synthetic sets ``geovit pdes train`` uses without data: ``ns2d/`` and ``cfd2d/``.

    Real solvers at tiny sizes (:func:`pdes.synthetic.write_default_sets`): smoke in PDEArena's
    shard format and compressible flow in VICON's ``{split}/{i}.h5`` layout, each with
    ``num_samples`` training trajectories and ``max(num_samples // 6, 2)`` validation and test ones.

    Args:
        out_dir: folder to write (``out_dir/ns2d``, ``out_dir/cfd2d``).
        num_samples: training trajectories of each set (default 24).
        seed: seed of the simulations (cfd2d uses ``seed + 1``).
        resolution: side of the fields in pixels.

    Returns:
        ``out_dir``.

    Raises:
        GeovitError: ``num_samples`` is below 1.
    """
    from pdes.synthetic import write_default_sets

    n = DEFAULT_TRAJECTORIES if num_samples is None else int(num_samples)
    if n < 1:
        raise GeovitError(f"num_samples={num_samples}: expected a positive number of training trajectories")
    write_default_sets(out_dir, resolution=int(resolution), seed=seed,
                       splits={"train": n, "valid": max(n // 6, 2), "test": max(n // 6, 2)})
    return Path(out_dir)


def resolve_vicon_data(data: str | os.PathLike | Sequence[str | os.PathLike] | None, out: str | os.PathLike, *,
                       resolution: int = 32, trajectories: int = DEFAULT_TRAJECTORIES, seed: int = 0,
                       log: Callable[[str], Any] = print) -> list[Path]:
    """The data-set folders to train VICON on: ``data`` as given, else the synthetic ``vicon_default`` pair.

    Without data, :func:`geovit.data.registry.resolve_data` writes ``vicon_default`` once under
    ``out/synthetic_data/vicon_default`` (rewritten when ``resolution``, ``trajectories`` or
    ``seed`` change) and every message says it is synthetic.

    Args:
        data: one folder / file or several, or ``None`` (or empty) for the synthetic sets.
        out: the run's output folder.
        resolution: side of the synthetic fields.
        trajectories: training trajectories of each synthetic set.
        seed: seed of the synthetic sets.
        log: where the messages go.

    Returns:
        The folders, one per data set.
    """
    if isinstance(data, (str, os.PathLike)):
        data = [data]
    if data:
        return [Path(d) for d in data]
    root, _ = resolve_data("vicon_default", None, out, num_samples=int(trajectories), seed=seed, log=log,
                           resolution=int(resolution))
    return [root / name for name in DEFAULT_SETS]
