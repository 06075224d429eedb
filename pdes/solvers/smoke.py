"""Buoyancy-driven smoke in a closed box: the physics of PDEArena's NavierStokes-2D data.

PDEArena (Gupta & Brandstetter 2022, "Towards multi-spatiotemporal-scale generalized PDE
modeling", §4 / App. B) simulated its incompressible Navier–Stokes data with phiflow:
a passive scalar ``u`` (smoke) is carried by a velocity field in a closed square box, and the
smoke pushes the fluid upward with a buoyancy force ``(0, buoyancy_y * u)``. One step is, in
phiflow's operator-splitting order

1. semi-Lagrangian advection of the smoke by the velocity,
2. semi-Lagrangian self-advection of the velocity plus ``dt * buoyancy``,
3. explicit viscous diffusion ``v += nu * dt * Δv``,
4. pressure projection onto divergence-free fields (``make_incompressible``).

This module re-implements those four operators on a staggered (MAC) grid with numpy/scipy so
that offline data with the same physics can be generated without phiflow:

* ``vx`` lives on the vertical cell faces (``nx+1, ny``), ``vy`` on the horizontal faces
  (``nx, ny+1``); the wall faces carry zero normal velocity (phiflow ``extrapolation.ZERO``);
  the smoke lives at cell centres with zero-gradient walls (``extrapolation.BOUNDARY``);
* advection back-traces each sample point with the velocity interpolated there and reads the
  field with bilinear interpolation (clamped at the walls);
* the projection solves the 5-point pressure Poisson equation with Neumann walls *exactly* in
  the discrete-cosine basis (the DCT-II diagonalises that Laplacian), so the discrete divergence
  of the result is zero to round-off.

Frames are stored the way PDEArena's generator stores them (``reshaped_native(..., groups=("x",
"y"))``): arrays indexed ``[x, y]``, velocity = the staggered tensor without its last row and
column, i.e. ``vx[i, j]`` is the velocity on the left face of cell ``(i, j)`` and ``vy[i, j]``
the one on its bottom face. Initial smoke is ``|noise|`` with a smooth random spectrum (phiflow
``Noise(scale, smoothness)`` in spirit), initial velocity zero.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft, ndimage


@dataclass(frozen=True)
class SmokeConfig:
    """PDEArena ``NavierStokes2D`` settings (domain 32 × 32, dt 1.5, nu 0.01, 128², 56 frames)."""

    nx: int = 128
    ny: int = 128
    Lx: float = 32.0
    Ly: float = 32.0
    dt: float = 1.5
    nu: float = 0.01
    buoyancy_y: float = 0.5
    nt: int = 56
    tmin: float = 18.0
    #: noise length scale (domain units) and spectral fall-off of the initial smoke
    noise_scale: float = 11.0
    noise_smoothness: float = 6.0

    @property
    def dx(self) -> float:
        """Cell width in x: ``Lx / nx``."""
        return self.Lx / self.nx

    @property
    def dy(self) -> float:
        """Cell height in y: ``Ly / ny``."""
        return self.Ly / self.ny

    def times(self) -> np.ndarray:
        """The ``nt`` output times: ``tmin + dt * k``."""
        return self.tmin + self.dt * np.arange(self.nt)


# --------------------------------------------------------------------------- interpolation
def _sample(field: np.ndarray, origin: tuple[float, float], h: tuple[float, float], px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Bilinear value of a grid ``field`` (sample ``[i, j]`` at ``origin + (i, j) * h``) at points ``(px, py)``."""
    coords = np.stack([(px - origin[0]) / h[0], (py - origin[1]) / h[1]])
    return ndimage.map_coordinates(field, coords, order=1, mode="nearest")


def _face_points(cfg: SmokeConfig):
    """Physical coordinates of the smoke (centres), vx faces and vy faces."""
    dx, dy = cfg.dx, cfg.dy
    xc, yc = (np.arange(cfg.nx) + 0.5) * dx, (np.arange(cfg.ny) + 0.5) * dy
    xf, yf = np.arange(cfg.nx + 1) * dx, np.arange(cfg.ny + 1) * dy
    return (np.meshgrid(xc, yc, indexing="ij"), np.meshgrid(xf, yc, indexing="ij"), np.meshgrid(xc, yf, indexing="ij"))


class SmokeSolver:
    """Stable-fluids step of buoyant smoke on a MAC grid (see the module docstring)."""

    def __init__(self, config: SmokeConfig = SmokeConfig()):
        self.cfg = config
        self.centres, self.xfaces, self.yfaces = _face_points(config)
        h = (config.dx, config.dy)
        self._grids = {
            "s": ((0.5 * h[0], 0.5 * h[1]), h),
            "vx": ((0.0, 0.5 * h[1]), h),
            "vy": ((0.5 * h[0], 0.0), h),
        }
        kx = np.arange(config.nx)
        ky = np.arange(config.ny)
        lam = ((2 * np.cos(np.pi * kx / config.nx) - 2) / h[0] ** 2)[:, None] + \
              ((2 * np.cos(np.pi * ky / config.ny) - 2) / h[1] ** 2)[None, :]
        lam[0, 0] = 1.0  # the constant mode: pressure is defined up to a constant
        self._laplace_eigs = lam

    # ---------------------------------------------------------------- operators
    def velocity_at(self, vx: np.ndarray, vy: np.ndarray, px: np.ndarray, py: np.ndarray):
        """The staggered velocity ``(vx, vy)`` interpolated at the points ``(px, py)``."""
        return _sample(vx, *self._grids["vx"], px, py), _sample(vy, *self._grids["vy"], px, py)

    def advect(self, field: np.ndarray, where: str, vx: np.ndarray, vy: np.ndarray, dt: float) -> np.ndarray:
        """Semi-Lagrangian advection of ``field`` living on grid ``where`` ('s', 'vx' or 'vy')."""
        px, py = {"s": self.centres, "vx": self.xfaces, "vy": self.yfaces}[where]
        ux, uy = self.velocity_at(vx, vy, px, py)
        return _sample(field, *self._grids[where], px - dt * ux, py - dt * uy)

    def divergence(self, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
        """Divergence of the staggered (MAC) velocity at the cell centres."""
        return (vx[1:, :] - vx[:-1, :]) / self.cfg.dx + (vy[:, 1:] - vy[:, :-1]) / self.cfg.dy

    def project(self, vx: np.ndarray, vy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Remove the gradient part: returns divergence-free ``(vx, vy)`` and the pressure."""
        vx, vy = vx.copy(), vy.copy()
        vx[0], vx[-1], vy[:, 0], vy[:, -1] = 0.0, 0.0, 0.0, 0.0
        div_hat = fft.dctn(self.divergence(vx, vy), type=2, norm="ortho")
        p_hat = div_hat / self._laplace_eigs
        p_hat[0, 0] = 0.0
        p = fft.idctn(p_hat, type=2, norm="ortho")
        vx[1:-1] -= (p[1:] - p[:-1]) / self.cfg.dx
        vy[:, 1:-1] -= (p[:, 1:] - p[:, :-1]) / self.cfg.dy
        return vx, vy, p

    def diffuse(self, v: np.ndarray, dt: float) -> np.ndarray:
        """Explicit step of ``nu * Δv`` with zero-gradient extension at the walls."""
        pad = np.pad(v, 1, mode="edge")
        lap = (pad[2:, 1:-1] - 2 * v + pad[:-2, 1:-1]) / self.cfg.dx ** 2 + \
              (pad[1:-1, 2:] - 2 * v + pad[1:-1, :-2]) / self.cfg.dy ** 2
        return v + self.cfg.nu * dt * lap

    def step(self, s: np.ndarray, vx: np.ndarray, vy: np.ndarray, dt: float | None = None):
        """One PDEArena step: advect smoke, advect velocity + buoyancy, diffuse, project."""
        cfg = self.cfg
        dt = cfg.dt if dt is None else dt
        s_new = self.advect(s, "s", vx, vy, dt)
        # buoyancy force (0, b * s) resampled from the centres to the vy faces
        s_on_vy = _sample(s_new, *self._grids["s"], *self.yfaces)
        vx_new = self.advect(vx, "vx", vx, vy, dt)
        vy_new = self.advect(vy, "vy", vx, vy, dt) + dt * cfg.buoyancy_y * s_on_vy
        vx_new, vy_new = self.diffuse(vx_new, dt), self.diffuse(vy_new, dt)
        vx_new, vy_new, _ = self.project(vx_new, vy_new)
        return s_new, vx_new, vy_new

    # ---------------------------------------------------------------- trajectories
    def initial_smoke(self, rng: np.random.Generator) -> np.ndarray:
        """``|noise|``: white noise filtered to length scale ``noise_scale`` with a smooth spectrum."""
        cfg = self.cfg
        kx = np.fft.fftfreq(cfg.nx, d=cfg.dx)[:, None]
        ky = np.fft.rfftfreq(cfg.ny, d=cfg.dy)[None, :]
        k = np.sqrt(kx ** 2 + ky ** 2) * cfg.noise_scale
        spectrum = np.exp(-((k / 2.0) ** 2) * cfg.noise_smoothness / 6.0) / np.maximum(k, 1e-12)
        spectrum[0, 0] = 0.0
        white = rng.standard_normal((cfg.nx, cfg.ny))
        field = np.fft.irfft2(np.fft.rfft2(white) * spectrum, s=(cfg.nx, cfg.ny))
        field /= field.std() + 1e-12
        return np.abs(field)

    def trajectory(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``{"u", "vx", "vy"}`` each ``(nt, nx, ny)``: the frame after every step, PDEArena layout."""
        cfg = self.cfg
        s = self.initial_smoke(rng)
        vx = np.zeros((cfg.nx + 1, cfg.ny))
        vy = np.zeros((cfg.nx, cfg.ny + 1))
        out = {k: np.empty((cfg.nt, cfg.nx, cfg.ny)) for k in ("u", "vx", "vy")}
        for t in range(cfg.nt):
            s, vx, vy = self.step(s, vx, vy)
            out["u"][t], out["vx"][t], out["vy"][t] = s, vx[:-1, :], vy[:, :-1]
        return out
