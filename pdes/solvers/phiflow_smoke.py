"""PDEArena's own smoke recipe run through phiflow (optional: ``pip install phiflow``).

This is the generator PDEArena used for NavierStokes-2D (``pdedatagen/navier_stokes.py``):
``smoke = |Noise(scale=11, smoothness=6)|`` on a centred grid with zero-gradient walls, velocity
on a staggered grid with zero walls, and per step ``advect.semi_lagrangian`` of smoke and
velocity, buoyancy ``dt · (0, b·smoke)`` resampled to the faces, ``diffuse.explicit`` and
``fluid.make_incompressible``. Frames are stored the way PDEArena stores them (``[x, y]``,
staggered velocity without its last row and column). Computed in float64.

:class:`pdes.solvers.smoke.SmokeSolver` re-implements the same operators without phiflow;
``tests/test_pdes_solvers.py`` compares the two when phiflow is installed.
"""
from __future__ import annotations

import numpy as np

from geovit.errors import GeovitError
from pdes.solvers.smoke import SmokeConfig


def _phi():
    try:
        from phi import flow, math
    except ImportError:
        raise GeovitError("the phiflow backend needs phiflow (pip install 'geovit[phiflow]' or pip install phiflow); "
                          "the default backend needs nothing extra") from None
    return flow, math


class PhiflowSmokeSolver:
    """Same interface as :class:`~pdes.solvers.smoke.SmokeSolver` (``step``, ``trajectory``)."""

    def __init__(self, config: SmokeConfig = SmokeConfig()):
        self.cfg = config
        self.flow, self.math = _phi()

    def _box(self):
        return self.flow.Box(x=self.cfg.Lx, y=self.cfg.Ly)

    def grids(self, smoke: np.ndarray | None = None, seed: int = 0):
        """Initial (smoke, velocity): ``smoke`` given as (nx, ny) values, or PDEArena's ``|Noise|``."""
        flow, math = self.flow, self.math
        cfg = self.cfg
        if smoke is None:
            math.seed(seed)
            values = flow.Noise(scale=cfg.noise_scale, smoothness=cfg.noise_smoothness)
        else:
            values = math.tensor(np.asarray(smoke, dtype=float), math.spatial("x,y"))
        s = flow.CenteredGrid(values, flow.extrapolation.BOUNDARY, x=cfg.nx, y=cfg.ny, bounds=self._box())
        v = flow.StaggeredGrid(0, flow.extrapolation.ZERO, x=cfg.nx, y=cfg.ny, bounds=self._box())
        return (abs(s) if smoke is None else s), v

    def step(self, smoke, velocity):
        """One PDEArena smoke step with phiflow: advect smoke and velocity, add buoyancy, diffuse, make incompressible."""
        flow, cfg = self.flow, self.cfg
        smoke = flow.advect.semi_lagrangian(smoke, velocity, cfg.dt)
        buoyancy = (smoke * (0, cfg.buoyancy_y)).at(velocity)
        velocity = flow.advect.semi_lagrangian(velocity, velocity, cfg.dt) + cfg.dt * buoyancy
        velocity = flow.diffuse.explicit(velocity, cfg.nu, cfg.dt)
        velocity, _ = flow.fluid.make_incompressible(velocity)
        return smoke, velocity

    def trajectory(self, rng: np.random.Generator, smoke: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``{"u", "vx", "vy"}`` each ``(nt, nx, ny)`` in PDEArena's layout."""
        cfg = self.cfg
        out = {k: np.empty((cfg.nt, cfg.nx, cfg.ny)) for k in ("u", "vx", "vy")}
        with self.math.precision(64):
            s, v = self.grids(smoke, seed=int(rng.integers(0, 2**31 - 1)))
            for t in range(cfg.nt):
                s, v = self.step(s, v)
                staggered = v.staggered_tensor().numpy("x,y,vector")
                out["u"][t] = s.values.numpy("x,y")
                out["vx"][t], out["vy"][t] = staggered[:-1, :-1, 0], staggered[:-1, :-1, 1]
        return out
