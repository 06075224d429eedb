"""Offline physics solvers that produce training data in the real on-disk formats.

* :mod:`pdes.solvers.smoke` — buoyancy-driven incompressible smoke in a closed box
  (PDEArena ``NavierStokes2D``; staggered grid, semi-Lagrangian advection, exact DCT projection).
* :mod:`pdes.solvers.phiflow_smoke` — the same smoke through phiflow, PDEArena's simulator
  (optional dependency).
* :mod:`pdes.solvers.euler` — 2D compressible Navier–Stokes on a periodic square
  (PDEBench ``2D_CFD``; finite volumes, MUSCL–HLL, SSP-RK2).

:mod:`pdes.synthetic` turns their trajectories into HDF5 files.
"""
from pdes.solvers.euler import CFDConfig, CFDSolver
from pdes.solvers.smoke import SmokeConfig, SmokeSolver

__all__ = ["CFDConfig", "CFDSolver", "SmokeConfig", "SmokeSolver"]
