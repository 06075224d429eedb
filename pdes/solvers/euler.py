"""2D compressible Navier–Stokes on a periodic square: the physics of PDEBench's ``2D_CFD`` data.

PDEBench (Takamoto et al., NeurIPS 2022 Datasets & Benchmarks, §3 and App. D.7) solves

    ∂ρ/∂t + ∇·(ρv) = 0
    ρ(∂v/∂t + v·∇v) = −∇p + η Δv + (ζ + η/3) ∇(∇·v)
    ∂E/∂t + ∇·((E + p) v − v·σ') = 0,     E = p/(Γ − 1) + ρ|v|²/2,  Γ = 5/3

on [0, 1]² with periodic boundaries, from random ("Rand") initial fields whose velocity scale
is set by a Mach number M, and stores 21 frames on t ∈ [0, 1] (dt_save = 0.05).

This module is a compact finite-volume solver for the same equations:

* conservative variables ``(ρ, ρvx, ρvy, E)`` on cell centres;
* MUSCL reconstruction of the primitive variables with the minmod limiter (second order in
  smooth regions, no new extrema at shocks) and the HLL approximate Riemann flux;
* viscous stress ``σ' = η(∇v + ∇vᵀ − (2/3)(∇·v) I) + ζ (∇·v) I`` from centred differences,
  added in flux-divergence form (so mass, momentum and energy stay exactly conserved);
* SSP Runge–Kutta 2 in time with an adaptive step (CFL 0.4 and the explicit viscous limit),
  clipped so that every save time is hit exactly.

For an inviscid uniform flow carrying a density perturbation (an entropy wave) the exact
solution is the translated initial density; ``tests/test_pdes_solvers.py`` checks that.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CFDConfig:
    """PDEBench ``2D_CFD`` settings (Γ = 5/3, [0,1]², 21 frames on [0, 1])."""

    nx: int = 128
    ny: int = 128
    gamma: float = 5.0 / 3.0
    eta: float = 1e-8          # shear viscosity
    zeta: float = 1e-8         # bulk viscosity
    mach: float = 0.1          # velocity scale of the random initial condition
    t_end: float = 1.0
    nt: int = 21               # saved frames, including t = 0
    cfl: float = 0.4
    n_modes: int = 4           # Fourier modes per axis in the random initial fields

    @property
    def dx(self) -> float:
        """Cell width in x (unit square domain)."""
        return 1.0 / self.nx

    @property
    def dy(self) -> float:
        """Cell height in y (unit square domain)."""
        return 1.0 / self.ny

    def times(self) -> np.ndarray:
        """The ``nt`` output times, evenly spaced in ``[0, t_end]``."""
        return np.linspace(0.0, self.t_end, self.nt)


def minmod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Minmod slope limiter: the smaller of ``a`` and ``b`` in magnitude where they share a sign, else 0."""
    return np.where(a * b > 0, np.sign(a) * np.minimum(np.abs(a), np.abs(b)), 0.0)


class CFDSolver:
    """Finite-volume solver; state arrays are ``(4, nx, ny)`` conservative ``(ρ, ρvx, ρvy, E)``."""

    def __init__(self, config: CFDConfig = CFDConfig()):
        self.cfg = config

    # ---------------------------------------------------------------- conversions
    def primitive(self, U: np.ndarray) -> np.ndarray:
        """Primitive variables ``(ρ, vx, vy, p)`` of the conservative state ``U`` (ideal gas, ``gamma``)."""
        rho = U[0]
        vx, vy = U[1] / rho, U[2] / rho
        p = (self.cfg.gamma - 1) * (U[3] - 0.5 * rho * (vx ** 2 + vy ** 2))
        return np.stack([rho, vx, vy, p])

    def conservative(self, W: np.ndarray) -> np.ndarray:
        """Conservative state ``(ρ, ρvx, ρvy, E)`` of the primitive variables ``W``; inverse of :meth:`primitive`."""
        rho, vx, vy, p = W
        E = p / (self.cfg.gamma - 1) + 0.5 * rho * (vx ** 2 + vy ** 2)
        return np.stack([rho, rho * vx, rho * vy, E])

    # ---------------------------------------------------------------- fluxes
    def _flux_x(self, W: np.ndarray) -> np.ndarray:
        """Physical flux along x of primitive states ``W = (ρ, vn, vt, p)``."""
        rho, vn, vt, p = W
        E = p / (self.cfg.gamma - 1) + 0.5 * rho * (vn ** 2 + vt ** 2)
        return np.stack([rho * vn, rho * vn ** 2 + p, rho * vn * vt, (E + p) * vn])

    def _hll(self, WL: np.ndarray, WR: np.ndarray) -> np.ndarray:
        g = self.cfg.gamma
        cL, cR = np.sqrt(g * WL[3] / WL[0]), np.sqrt(g * WR[3] / WR[0])
        sL = np.minimum(WL[1] - cL, WR[1] - cR)
        sR = np.maximum(WL[1] + cL, WR[1] + cR)
        FL, FR = self._flux_x(WL), self._flux_x(WR)
        UL, UR = self.conservative(WL), self.conservative(WR)
        hll = (sR * FL - sL * FR + sL * sR * (UR - UL)) / np.maximum(sR - sL, 1e-12)
        return np.where(sL >= 0, FL, np.where(sR <= 0, FR, hll))

    def _interface_flux(self, W: np.ndarray, axis: int) -> np.ndarray:
        """HLL flux through the face between cell i and i+1 along ``axis`` (-2 = x, -1 = y)."""
        if axis == -1:  # rotate so that the normal velocity comes first
            W = W[[0, 2, 1, 3]]
        slope = minmod(W - np.roll(W, 1, axis=axis), np.roll(W, -1, axis=axis) - W)
        WL = W + 0.5 * slope
        WR = np.roll(W - 0.5 * slope, -1, axis=axis)
        F = self._hll(WL, WR)
        return F[[0, 2, 1, 3]] if axis == -1 else F

    def _viscous_flux(self, W: np.ndarray):
        """``(Fx, Fy)`` viscous fluxes (momentum: −σ', energy: −σ'·v) at cell centres."""
        cfg = self.cfg
        if cfg.eta == 0 and cfg.zeta == 0:
            return None
        vx, vy = W[1], W[2]

        def d(f, axis, h):
            return (np.roll(f, -1, axis) - np.roll(f, 1, axis)) / (2 * h)

        dvx_dx, dvx_dy = d(vx, -2, cfg.dx), d(vx, -1, cfg.dy)
        dvy_dx, dvy_dy = d(vy, -2, cfg.dx), d(vy, -1, cfg.dy)
        div = dvx_dx + dvy_dy
        sxx = cfg.eta * (2 * dvx_dx - 2 / 3 * div) + cfg.zeta * div
        syy = cfg.eta * (2 * dvy_dy - 2 / 3 * div) + cfg.zeta * div
        sxy = cfg.eta * (dvx_dy + dvy_dx)
        zero = np.zeros_like(vx)
        Fx = -np.stack([zero, sxx, sxy, sxx * vx + sxy * vy])
        Fy = -np.stack([zero, sxy, syy, sxy * vx + syy * vy])
        return Fx, Fy

    def rhs(self, U: np.ndarray) -> np.ndarray:
        """Time derivative of ``U``: minus the divergence of the limited interface fluxes, plus viscous terms (periodic domain)."""
        cfg = self.cfg
        W = self.primitive(U)
        Fx = self._interface_flux(W, -2)
        Fy = self._interface_flux(W, -1)
        out = -(Fx - np.roll(Fx, 1, axis=-2)) / cfg.dx - (Fy - np.roll(Fy, 1, axis=-1)) / cfg.dy
        visc = self._viscous_flux(W)
        if visc is not None:
            Vx, Vy = visc
            out -= (np.roll(Vx, -1, -2) - np.roll(Vx, 1, -2)) / (2 * cfg.dx)
            out -= (np.roll(Vy, -1, -1) - np.roll(Vy, 1, -1)) / (2 * cfg.dy)
        return out

    def max_dt(self, U: np.ndarray) -> float:
        """Largest stable time step for ``U``: the CFL limit of the fastest wave, and the explicit viscous limit."""
        cfg = self.cfg
        W = self.primitive(U)
        c = np.sqrt(cfg.gamma * W[3] / W[0])
        speed = max(float(np.max(np.abs(W[1]) + c)) / cfg.dx, float(np.max(np.abs(W[2]) + c)) / cfg.dy)
        dt = cfg.cfl / speed
        nu = (cfg.eta * 4 / 3 + cfg.zeta) / float(np.min(W[0]))
        if nu > 0:
            dt = min(dt, 0.2 * min(cfg.dx, cfg.dy) ** 2 / nu)
        return dt

    def step(self, U: np.ndarray, dt: float) -> np.ndarray:
        """SSP-RK2 (Heun) step."""
        U1 = U + dt * self.rhs(U)
        return 0.5 * (U + U1 + dt * self.rhs(U1))

    def evolve(self, W0: np.ndarray, times: np.ndarray | None = None) -> np.ndarray:
        """Primitive states ``(len(times), 4, ..., nx, ny)`` at ``times`` (default: the save times).

        ``W0`` is ``(4, nx, ny)`` or a batch ``(4, B, nx, ny)`` of initial states advanced together
        (one shared, stable time step).
        """
        times = self.cfg.times() if times is None else np.asarray(times, dtype=float)
        U = self.conservative(np.asarray(W0, dtype=float))
        out = np.empty((len(times),) + U.shape)
        t = 0.0
        for k, t_save in enumerate(times):
            while t < t_save - 1e-12:
                dt = min(self.max_dt(U), t_save - t)
                U = self.step(U, dt)
                t += dt
            out[k] = self.primitive(U)
        if not np.all(np.isfinite(out)) or np.any(out[:, 0] <= 0) or np.any(out[:, 3] <= 0):  # pragma: no cover
            raise FloatingPointError("CFD solver produced a non-physical state (negative density/pressure)")
        return out

    # ---------------------------------------------------------------- random initial conditions
    def _random_field(self, rng: np.random.Generator) -> np.ndarray:
        """Sum of random sinusoids with wave numbers 1..n_modes, unit max amplitude."""
        cfg = self.cfg
        x = (np.arange(cfg.nx) + 0.5) * cfg.dx
        y = (np.arange(cfg.ny) + 0.5) * cfg.dy
        X, Y = np.meshgrid(x, y, indexing="ij")
        f = np.zeros_like(X)
        for _ in range(cfg.n_modes):
            kx, ky = rng.integers(1, cfg.n_modes + 1, size=2)
            f += rng.uniform(0.1, 1.0) * np.sin(2 * np.pi * (kx * X + ky * Y) + rng.uniform(0, 2 * np.pi))
        return f / np.max(np.abs(f))

    def random_initial(self, rng: np.random.Generator) -> np.ndarray:
        """PDEBench-style "Rand" initial state ``(ρ, vx, vy, p)``: random smooth fields, |v| ≈ M · c."""
        cfg = self.cfg
        rho = 1.0 + 0.2 * rng.uniform(0.3, 1.0) * self._random_field(rng)
        p = 1.0 + 0.2 * rng.uniform(0.3, 1.0) * self._random_field(rng)
        c = np.sqrt(cfg.gamma * p / rho).mean()
        vx = cfg.mach * c * self._random_field(rng)
        vy = cfg.mach * c * self._random_field(rng)
        return np.stack([rho, vx, vy, p])

    def trajectory(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``{"density", "Vx", "Vy", "pressure"}`` each ``(nt, nx, ny)`` (PDEBench key names)."""
        return self.trajectories(rng, 1)[0]

    def trajectories(self, rng: np.random.Generator, count: int) -> list[dict[str, np.ndarray]]:
        """``count`` trajectories from random initial states, simulated as one batch."""
        W0 = np.stack([self.random_initial(rng) for _ in range(count)], axis=1)  # (4, B, nx, ny)
        W = self.evolve(W0)  # (nt, 4, B, nx, ny)
        keys = ("density", "Vx", "Vy", "pressure")
        return [{k: W[:, c, b] for c, k in enumerate(keys)} for b in range(count)]
