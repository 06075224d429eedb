"""Small offline data sets in the exact on-disk formats, from real physics (:mod:`pdes.solvers`).

* :func:`write_ns2d` — buoyancy-driven smoke, PDEArena NavierStokes-2D shards
  ``NavierStokes2D_{split}_{seed}_{buoyancy:.5f}_{n}.h5`` (group per split; ``u``, ``vx``, ``vy``
  (N, T, X, Y) float64 and ``t``, ``dt``, ``x``, ``dx``, ``y``, ``dy``, ``buo_y`` as PDEArena's
  generator writes them).
* :func:`write_cfd2d` — compressible Navier–Stokes, PDEBench 2D CFD
  ``2D_CFD_Rand_M{M}_Eta{η}_Zeta{ζ}_periodic_{res}_Train.hdf5`` (``density``, ``Vx``, ``Vy``,
  ``pressure`` (N, T, X, Y) float32 + ``x-coordinate``, ``y-coordinate``, ``t-coordinate``), or
  VICON's re-chunked ``{split}/{i}.h5`` folders (``layout="vicon"``).

Both accept ``dropped_every``: also write ``dropped_mask`` (N, T) with every k-th frame of the
reference window marked unavailable (for the dropped-frame rollout). These are SYNTHETIC data:
the real physics at tiny sizes, not the released data sets.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from geovit._io import atomic_path
from geovit.errors import GeovitError
from pdes.solvers import CFDConfig, CFDSolver, SmokeConfig, SmokeSolver

DEFAULT_SPLITS = {"train": 24, "valid": 4, "test": 4}


def _dropped_mask(n: int, t: int, every: int | None, window: int = 10) -> np.ndarray | None:
    if not every:
        return None
    mask = np.zeros((n, t), dtype=bool)
    mask[:, 1:window:every] = True  # keep frame 0; drop 1, 1+k, ... inside the reference window
    return mask


def _progress(iterable, desc: str, total: int):
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)


def write_ns2d(
    out_dir: str | Path, *, splits: dict[str, int] | None = None, resolution: int = 32, num_frames: int = 24,
    seed: int = 0, buoyancy: float | None = None, dropped_every: int | None = None, progress: bool = True,
    backend: str = "numpy", **config,
) -> list[Path]:
    """Write one PDEArena NavierStokes-2D shard per split; returns the file paths.

    Default physics is PDEArena's (domain 32, dt 1.5, nu 0.01); ``buoyancy`` defaults to a draw
    from [0.2, 0.5] (the conditioned data set's range), one value per shard as in the file names.
    ``backend``: ``"numpy"`` (:class:`~pdes.solvers.smoke.SmokeSolver`, no extra dependency) or
    ``"phiflow"`` (PDEArena's own recipe through phiflow, :mod:`pdes.solvers.phiflow_smoke`).
    """
    if backend not in ("numpy", "phiflow"):
        raise GeovitError(f"backend {backend!r}: expected 'numpy' or 'phiflow'")
    splits = dict(DEFAULT_SPLITS if splits is None else splits)
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    paths = []
    for split, n in splits.items():
        if n <= 0:
            continue
        buo = float(rng.uniform(0.2, 0.5)) if buoyancy is None else float(buoyancy)
        cfg = SmokeConfig(nx=resolution, ny=resolution, nt=num_frames, buoyancy_y=buo, **config)
        if backend == "phiflow":
            from pdes.solvers.phiflow_smoke import PhiflowSmokeSolver

            solver = PhiflowSmokeSolver(cfg)
        else:
            solver = SmokeSolver(cfg)
        shard_seed = int(rng.integers(0, 2**31 - 1))
        traj_rng = np.random.default_rng(shard_seed)
        items = range(n)
        trajs = [solver.trajectory(traj_rng) for _ in (_progress(items, f"ns2d {split}", n) if progress else items)]
        path = out_dir / f"NavierStokes2D_{split}_{shard_seed}_{buo:.5f}_{n}.h5"
        _write_pdearena(path, split, trajs, cfg, _dropped_mask(n, num_frames, dropped_every))
        paths.append(path)
    return paths


def _write_pdearena(path: Path, split: str, trajs: list[dict], cfg: SmokeConfig, dropped) -> None:
    import h5py

    n = len(trajs)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        g = f.create_group(split)
        for key in ("u", "vx", "vy"):
            g.create_dataset(key, data=np.stack([t[key] for t in trajs]).astype(float))
        g.create_dataset("t", data=np.tile(cfg.times(), (n, 1)))
        g.create_dataset("dt", data=np.full(n, cfg.dt))
        g.create_dataset("x", data=np.tile(np.linspace(0, cfg.Lx, cfg.nx), (n, 1)))
        g.create_dataset("dx", data=np.full(n, cfg.dx))
        g.create_dataset("y", data=np.tile(np.linspace(0, cfg.Ly, cfg.ny), (n, 1)))
        g.create_dataset("dy", data=np.full(n, cfg.dy))
        g.create_dataset("buo_y", data=np.full(n, cfg.buoyancy_y))
        if dropped is not None:
            g.create_dataset("dropped_mask", data=dropped)


def _write_pdebench(path: Path, trajs: list[dict], cfg: CFDConfig, dropped) -> None:
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key in ("density", "Vx", "Vy", "pressure"):
            f.create_dataset(key, data=np.stack([t[key] for t in trajs]).astype(np.float32))
        f.create_dataset("x-coordinate", data=((np.arange(cfg.nx) + 0.5) * cfg.dx).astype(np.float32))
        f.create_dataset("y-coordinate", data=((np.arange(cfg.ny) + 0.5) * cfg.dy).astype(np.float32))
        dt = cfg.t_end / (cfg.nt - 1)
        f.create_dataset("t-coordinate", data=(np.arange(cfg.nt + 1) * dt).astype(np.float32))
        f.attrs["eta"], f.attrs["zeta"], f.attrs["M"] = cfg.eta, cfg.zeta, cfg.mach
        if dropped is not None:
            f.create_dataset("dropped_mask", data=dropped)


def write_cfd2d(
    out_dir: str | Path, *, splits: dict[str, int] | None = None, resolution: int = 32, num_frames: int = 21,
    seed: int = 0, mach: float = 0.1, eta: float = 1e-8, zeta: float = 1e-8, layout: str = "pdebench",
    chunk: int = 4, dropped_every: int | None = None, progress: bool = True, frame_dt: float = 0.05, **config,
) -> list[Path]:
    """Write PDEBench 2D CFD trajectories; returns the file paths.

    ``layout="pdebench"``: one original-style file holding all trajectories (the loader splits it
    80/10/10 by index; ``splits`` only sets the total). ``layout="vicon"``: ``{split}/{i}.h5``
    files of ``chunk`` trajectories each. ``frame_dt``: time between saved frames (PDEBench: 0.05).
    """
    if layout not in ("pdebench", "vicon"):
        raise GeovitError(f"layout {layout!r}: expected 'pdebench' or 'vicon'")
    splits = dict(DEFAULT_SPLITS if splits is None else splits)
    cfg = CFDConfig(nx=resolution, ny=resolution, nt=num_frames, mach=mach, eta=eta, zeta=zeta,
                    t_end=(num_frames - 1) * frame_dt, **config)
    solver = CFDSolver(cfg)
    rng = np.random.default_rng(seed)
    total = sum(splits.values())
    sim_batch = 16  # trajectories simulated together (one shared stable time step)
    batches = range(0, total, sim_batch)
    trajs = [t for start in (_progress(batches, "cfd2d", len(batches)) if progress else batches)
             for t in solver.trajectories(rng, min(sim_batch, total - start))]
    out_dir = Path(out_dir)
    if layout == "pdebench":
        name = f"2D_CFD_Rand_M{mach:g}_Eta{eta:g}_Zeta{zeta:g}_periodic_{resolution}_Train.hdf5"
        path = out_dir / name
        _write_pdebench(path, trajs, cfg, _dropped_mask(total, num_frames, dropped_every))
        return [path]
    paths, start = [], 0
    for split, n in splits.items():
        part = trajs[start:start + n]
        start += n
        for i in range(0, len(part), chunk):
            block = part[i:i + chunk]
            path = out_dir / split / f"{i // chunk}.h5"
            _write_pdebench(path, block, cfg, _dropped_mask(len(block), num_frames, dropped_every))
            paths.append(path)
    return paths


def write_default_sets(out_dir: str | Path, *, resolution: int = 32, seed: int = 0, progress: bool = True,
                       splits: dict[str, int] | None = None) -> list[Path]:
    """The two generated data sets ``train`` uses when no ``--data`` is given: ``ns2d/``, ``cfd2d/``."""
    out_dir = Path(out_dir)
    write_ns2d(out_dir / "ns2d", resolution=resolution, seed=seed, progress=progress, splits=splits)
    write_cfd2d(out_dir / "cfd2d", resolution=resolution, seed=seed + 1, layout="vicon", progress=progress,
                splits=splits)
    return [out_dir / "ns2d", out_dir / "cfd2d"]


def _split_counts(num_samples: int | None) -> dict[str, int]:
    n = DEFAULT_SPLITS["train"] if num_samples is None else int(num_samples)
    if n < 1:
        raise GeovitError(f"--num-samples {num_samples}: expected a positive number of training trajectories")
    return {"train": n, "valid": max(n // 6, 1), "test": max(n // 6, 1)}


def write_synthetic_ns2d(out_dir: str | Path, *, num_samples: int | None = None, seed: int = 0) -> Path:
    """``geovit data synth pdearena_ns2d OUT`` (the ``geovit.cli.data.SYNTH_WRITERS`` signature)."""
    write_ns2d(out_dir, splits=_split_counts(num_samples), seed=seed)
    return Path(out_dir)


def write_synthetic_cfd2d(out_dir: str | Path, *, num_samples: int | None = None, seed: int = 0) -> Path:
    """``geovit data synth pdebench_cfd2d OUT`` (VICON's ``{split}/{i}.h5`` layout)."""
    write_cfd2d(out_dir, splits=_split_counts(num_samples), seed=seed, layout="vicon")
    return Path(out_dir)
