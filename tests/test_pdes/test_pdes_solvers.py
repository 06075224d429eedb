"""Physics checks of the offline solvers (small grids): exact projection, analytic advection,
buoyant rise, entropy-wave and viscous shear-wave solutions, exact conservation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pdes.solvers import CFDConfig, CFDSolver, SmokeConfig, SmokeSolver


def _smoke(n=16, **kw) -> SmokeSolver:
    return SmokeSolver(SmokeConfig(nx=n, ny=n + 4, Lx=float(n), Ly=float(n + 4), **kw))


# ------------------------------------------------------------------------------ smoke (PDEArena)
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_projection_is_exactly_divergence_free_and_idempotent(seed):
    solver = _smoke()
    rng = np.random.default_rng(seed)
    cfg = solver.cfg
    vx = rng.standard_normal((cfg.nx + 1, cfg.ny))
    vy = rng.standard_normal((cfg.nx, cfg.ny + 1))
    px, py, _ = solver.project(vx, vy)
    assert np.abs(solver.divergence(px, py)).max() < 1e-10
    # walls carry no normal flow
    assert np.all(px[[0, -1]] == 0) and np.all(py[:, [0, -1]] == 0)
    qx, qy, _ = solver.project(px, py)
    np.testing.assert_allclose(qx, px, atol=1e-10)
    np.testing.assert_allclose(qy, py, atol=1e-10)


def test_projection_keeps_a_stream_function_flow_and_removes_a_gradient_flow():
    solver = _smoke()
    cfg = solver.cfg
    rng = np.random.default_rng(0)
    # stream function on the cell corners, zero on the walls -> discretely divergence-free, no wall flux
    psi = np.zeros((cfg.nx + 1, cfg.ny + 1))
    psi[1:-1, 1:-1] = rng.standard_normal((cfg.nx - 1, cfg.ny - 1))
    vx = (psi[:, 1:] - psi[:, :-1]) / cfg.dy
    vy = -(psi[1:, :] - psi[:-1, :]) / cfg.dx
    assert np.abs(solver.divergence(vx, vy)).max() < 1e-12
    px, py, _ = solver.project(vx, vy)
    np.testing.assert_allclose(px, vx, atol=1e-10)
    np.testing.assert_allclose(py, vy, atol=1e-10)
    # a pure gradient of a cell-centred potential (zero wall flux) is removed entirely
    phi = rng.standard_normal((cfg.nx, cfg.ny))
    gx = np.zeros((cfg.nx + 1, cfg.ny))
    gy = np.zeros((cfg.nx, cfg.ny + 1))
    gx[1:-1] = (phi[1:] - phi[:-1]) / cfg.dx
    gy[:, 1:-1] = (phi[:, 1:] - phi[:, :-1]) / cfg.dy
    px, py, _ = solver.project(gx, gy)
    assert np.abs(px).max() < 1e-10 and np.abs(py).max() < 1e-10


def test_semi_lagrangian_advection_moves_a_blob_by_velocity_times_dt():
    """Uniform velocity: the smoke's centroid moves by exactly v·dt (linear interpolation keeps first moments)."""
    solver = _smoke(24)
    cfg = solver.cfg
    X, Y = solver.centres
    blob = np.exp(-((X - 10.0) ** 2 + (Y - 11.0) ** 2) / 4.0)
    vx = np.full((cfg.nx + 1, cfg.ny), 0.7)
    vy = np.full((cfg.nx, cfg.ny + 1), -0.4)
    moved = solver.advect(blob, "s", vx, vy, dt=1.5)

    def centroid(f):
        return (f * X).sum() / f.sum(), (f * Y).sum() / f.sum()

    cx, cy = centroid(moved)
    assert cx == pytest.approx(10.0 + 0.7 * 1.5, abs=1e-6)
    assert cy == pytest.approx(11.0 - 0.4 * 1.5, abs=1e-6)


def test_smoke_at_rest_stays_at_rest_and_buoyant_smoke_rises():
    solver = _smoke(16, buoyancy_y=0.0, nt=6)
    rng = np.random.default_rng(1)
    s0 = solver.initial_smoke(rng)
    cfg = solver.cfg
    s, vx, vy = s0, np.zeros((cfg.nx + 1, cfg.ny)), np.zeros((cfg.nx, cfg.ny + 1))
    for _ in range(3):
        s, vx, vy = solver.step(s, vx, vy)
    np.testing.assert_allclose(s, s0, atol=1e-12)
    assert np.abs(vx).max() == 0 and np.abs(vy).max() == 0

    traj = _smoke(16, buoyancy_y=0.5, nt=8).trajectory(np.random.default_rng(1))
    y = solver.centres[1]
    height = [(u * y).sum() / u.sum() for u in traj["u"]]
    assert height[-1] > height[0] + 0.5          # the plume's centre of mass goes up (+y) ...
    assert (traj["u"] * traj["vy"]).sum() > 0     # ... carried by upward flow where the smoke is
    assert abs(traj["vy"].mean()) < 1e-10         # (a closed incompressible box has no net vertical flux)
    assert np.all(traj["u"] >= -1e-12)            # smoke concentration stays non-negative


def test_smoke_trajectory_has_pdearena_layout():
    cfg = SmokeConfig(nx=12, ny=12, nt=5)
    traj = SmokeSolver(cfg).trajectory(np.random.default_rng(0))
    assert set(traj) == {"u", "vx", "vy"}
    for v in traj.values():
        assert v.shape == (5, 12, 12) and v.dtype == np.float64 and np.isfinite(v).all()
    # vx[i] is the left face of cell i (staggered tensor minus its last row): the wall face i = 0 is 0
    assert np.all(traj["vx"][:, 0, :] == 0) and np.all(traj["vy"][:, :, 0] == 0)
    assert np.abs(traj["vx"]).max() > 0 and np.abs(traj["vy"]).max() > 0
    np.testing.assert_allclose(cfg.times()[:2], [18.0, 19.5])


# ------------------------------------------------------------------------------ compressible (PDEBench)
def _grid(n):
    x = (np.arange(n) + 0.5) / n
    return np.meshgrid(x, x, indexing="ij")


def test_entropy_wave_matches_the_exact_translated_solution_and_converges():
    """Inviscid uniform flow (u, v) = (1, 0.5), p = 1: the density profile is carried unchanged."""
    errors = []
    for n in (16, 32):
        X, Y = _grid(n)
        rho0 = 1 + 0.2 * np.sin(2 * np.pi * (X + Y))
        W0 = np.stack([rho0, np.ones_like(X), 0.5 * np.ones_like(X), np.ones_like(X)])
        solver = CFDSolver(CFDConfig(nx=n, ny=n, eta=0.0, zeta=0.0))
        W = solver.evolve(W0, times=[0.0, 0.25])
        exact = 1 + 0.2 * np.sin(2 * np.pi * ((X - 0.25) + (Y - 0.125)))
        np.testing.assert_allclose(W[0], W0, atol=1e-14)
        np.testing.assert_allclose(W[-1, 1], 1.0, atol=1e-12)   # velocity and pressure stay uniform
        np.testing.assert_allclose(W[-1, 3], 1.0, atol=1e-12)
        errors.append(np.abs(W[-1, 0] - exact).max())
    assert errors[1] < 0.03  # of an amplitude of 0.2 (minmod clips the extrema to first order)
    assert errors[0] / errors[1] > 1.8  # at least ~first order, typically close to second


def test_viscous_shear_wave_decays_like_the_heat_equation():
    """vx = A sin(2πy), uniform ρ and p: vx obeys ∂t vx = η ∂yy vx -> amplitude A·exp(-η(2π)² t)."""
    n, eta, t = 32, 0.02, 0.3
    X, Y = _grid(n)
    W0 = np.stack([np.ones_like(X), 0.01 * np.sin(2 * np.pi * Y), np.zeros_like(X), np.ones_like(X)])
    solver = CFDSolver(CFDConfig(nx=n, ny=n, eta=eta, zeta=0.0))
    W = solver.evolve(W0, times=[t])
    amplitude = 2 * np.mean(W[-1, 1] * np.sin(2 * np.pi * Y))
    assert amplitude == pytest.approx(0.01 * np.exp(-eta * (2 * np.pi) ** 2 * t), rel=0.03)
    # without viscosity it would keep its amplitude (up to numerical dissipation): the decay is physical
    W_inv = CFDSolver(CFDConfig(nx=n, ny=n, eta=0.0, zeta=0.0)).evolve(W0, times=[t])
    assert 2 * np.mean(W_inv[-1, 1] * np.sin(2 * np.pi * Y)) > 0.0095  # viscous: 0.0079


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), mach=st.sampled_from([0.1, 1.0]), visc=st.sampled_from([0.0, 0.01]))
def test_mass_momentum_energy_are_conserved_exactly(seed, mach, visc):
    solver = CFDSolver(CFDConfig(nx=12, ny=12, mach=mach, eta=visc, zeta=visc, n_modes=3))
    W0 = solver.random_initial(np.random.default_rng(seed))
    W = solver.evolve(W0, times=[0.0, 0.1])
    U0, U1 = solver.conservative(W[0]), solver.conservative(W[1])
    np.testing.assert_allclose(U1.sum(axis=(1, 2)), U0.sum(axis=(1, 2)), rtol=1e-12, atol=1e-12)
    assert (W[1, 0] > 0).all() and (W[1, 3] > 0).all()
    assert np.abs(W[1] - W[0]).max() > 1e-4  # and the state did evolve


def test_cfd_trajectories_have_pdebench_keys_and_batched_runs_match_single_ones():
    cfg = CFDConfig(nx=8, ny=8, nt=5, t_end=0.2)
    solver = CFDSolver(cfg)
    trajs = solver.trajectories(np.random.default_rng(3), 2)
    assert [sorted(t) for t in trajs] == [["Vx", "Vy", "density", "pressure"]] * 2
    assert trajs[0]["density"].shape == (5, 8, 8)
    # a batch shares one stable time step; each trajectory stays within solver accuracy of its own run
    W0 = np.stack([trajs[1][k][0] for k in ("density", "Vx", "Vy", "pressure")])
    single = solver.evolve(W0)
    np.testing.assert_allclose(single[:, 0], trajs[1]["density"], atol=2e-3)


def test_numpy_smoke_solver_agrees_with_phiflow_pdearenas_simulator():
    """Same initial smoke through both: our operators reproduce phiflow's steps to a few percent."""
    pytest.importorskip("phi", reason="phiflow (optional) not installed")
    from pdes.solvers.phiflow_smoke import PhiflowSmokeSolver

    cfg = SmokeConfig(nx=16, ny=16, Lx=16.0, Ly=16.0, nt=3)
    ours = SmokeSolver(cfg)
    smoke = ours.initial_smoke(np.random.default_rng(0))
    a = ours.trajectory(np.random.default_rng(0))
    b = PhiflowSmokeSolver(cfg).trajectory(np.random.default_rng(0), smoke=smoke)
    for key in ("u", "vx", "vy"):
        rel = np.linalg.norm(a[key] - b[key], axis=(1, 2)) / np.linalg.norm(b[key], axis=(1, 2))
        assert rel[0] < 0.03 and rel[-1] < 0.08, (key, rel)  # a 20 % buoyancy change moves vy by ~20 %
