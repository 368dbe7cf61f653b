"""2-D stable-fluids smoke (wsim.models.smoke, wsim.fluid): the projection against a direct sparse
solve of the same discrete Poisson system, exact semi-Lagrangian shifts, bounds, gradients against
central differences, error messages, and the App. C.4 study (benchmarks/study_smoke.py) at toy size."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import spsolve

from wsim.errors import ParameterError, SimulationError
from wsim.fluid import SmokeSimulation, divergence, render_smoke

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import study_smoke  # noqa: E402


def _smooth_velocity(n, m, seed, scale=1.0):
    """A smooth, non-divergence-free field [N, M, 2] (a few random Fourier modes)."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.arange(n) / n, np.arange(m) / m, indexing="ij")
    u = np.zeros((n, m, 2))
    for c in range(2):
        for _ in range(3):
            kx, ky, phase = rng.uniform(0.5, 2.0), rng.uniform(0.5, 2.0), rng.uniform(0, 2 * np.pi)
            u[..., c] += rng.normal() * np.sin(2 * np.pi * (kx * x + ky * y) + phase)
    return (scale * u / np.abs(u).max()).astype(np.float32)


def _operators_1d(n, h):
    """Central difference D (normal velocity mirrored with flipped sign beyond the walls) and
    gradient G (pressure mirrored), as the module docstring defines them, built independently."""
    d = sp.lil_matrix((n, n))
    g = sp.lil_matrix((n, n))
    for i in range(n):
        for k, s in ((i + 1, 1.0), (i - 1, -1.0)):
            if 0 <= k < n:
                d[i, k] += s / (2 * h)
            else:
                d[i, i] -= s / (2 * h)  # ghost = -u_i
            g[i, min(max(k, 0), n - 1)] += s / (2 * h)
    return d.tocsr(), g.tocsr()


def _poisson(n, m, h):
    dn, gn = _operators_1d(n, h)
    dm, gm = _operators_1d(m, h)
    a = sp.kron(dn @ gn, sp.identity(m)) + sp.kron(sp.identity(n), dm @ gm)
    div = sp.hstack([sp.kron(dn, sp.identity(m)), sp.kron(sp.identity(n), dm)])  # acts on [u0.ravel(), u1.ravel()]
    return a.tocsc(), div.tocsr()


def test_pressure_solve_matches_a_direct_sparse_solve_and_removes_the_divergence():
    n, m, h = 9, 7, 0.1
    u = _smooth_velocity(n, m, 0)
    a, div = _poisson(n, m, h)
    assert np.allclose(a.diagonal(), -1.0 / h ** 2)  # the damped-Jacobi step assumes this diagonal
    assert abs(a - a.T).max() < 1e-9  # G = -D^T
    rhs = div @ np.concatenate([u[..., 0].ravel(), u[..., 1].ravel()])
    assert np.allclose(divergence(u, h).ravel(), rhs, atol=1e-4)
    # A is singular (constants); damped Jacobi from 0 keeps mean(p) = 0, so pin that solution
    pinned = (a - sp.csc_matrix(np.full((n * m, n * m), 1.0 / (n * m)))).tocsc()
    exact = spsolve(pinned, rhs).reshape(n, m)
    sim = SmokeSimulation((n, m), cell_size=h)
    projected, pressure = sim.solve_pressure(u, iterations=3000)
    assert np.abs(pressure - exact).max() < 1e-4 * np.abs(exact).max()
    before, after = np.abs(divergence(u, h)).max(), np.abs(divergence(projected, h)).max()
    assert after < 1e-4 * before
    # the residual D(u - G p) never grows with the sweep count, and falls a lot
    residuals = [np.linalg.norm(divergence(sim.solve_pressure(u, iterations=k)[0], h)) for k in (0, 5, 20, 80, 320)]
    assert all(b < a for a, b in zip(residuals, residuals[1:])), residuals
    assert residuals[-1] < 0.02 * residuals[0]


def test_uniform_velocity_shifts_density_by_whole_cells_exactly():
    n, m = 16, 12
    rng = np.random.default_rng(1)
    rho = np.zeros((n, m), np.float32)
    rho[2:7, 2:6] = rng.uniform(0.2, 1.0, size=(5, 4))
    # 2 cells per step along axis 0, 1 along axis 1 (dt u / h whole numbers); no projection: the box
    # walls would turn the uniform flow, which is not what is tested here
    sim = SmokeSimulation((n, m), dt=0.5, steps=3, jacobi_iterations=0, cell_size=0.25)
    velocity = np.zeros((n, m, 2), np.float32)
    velocity[..., 0], velocity[..., 1] = 2 * 0.25 / 0.5, 1 * 0.25 / 0.5
    with torch.no_grad():
        frames = sim.rollout(torch.tensor(velocity), torch.tensor(rho)).numpy()
    for k in range(3):
        expected = np.zeros_like(rho)
        expected[2 + 2 * (k + 1):7 + 2 * (k + 1), 2 + (k + 1):6 + (k + 1)] = rho[2:7, 2:6]
        assert np.array_equal(frames[k], expected), k
    assert frames[-1].sum() == pytest.approx(rho.sum(), rel=1e-6)  # a pure shift conserves mass


def test_constant_density_stays_constant_and_density_stays_within_its_bounds():
    n = 12
    sim = SmokeSimulation((n, n), dt=0.1, steps=6, cell_size=1.0 / n)
    velocity = torch.tensor(_smooth_velocity(n, n, 2, scale=0.8))
    with torch.no_grad():
        flat = sim.rollout(velocity, torch.full((n, n), 0.7)).numpy()
        rho = torch.tensor(np.random.default_rng(3).uniform(0.1, 0.9, size=(n, n)), dtype=torch.float32)
        frames = sim.rollout(velocity, rho).numpy()
    assert np.abs(flat - 0.7).max() < 1e-6
    # bilinear sampling is a convex combination: a maximum principle, but no conservation of the total
    assert frames.min() >= rho.min().item() - 1e-6 and frames.max() <= rho.max().item() + 1e-6
    drift = abs(frames[-1].sum() / rho.sum().item() - 1.0)
    assert 1e-5 < drift < 0.2


def _loss_and_grads(sim, velocity, density, weights, viscosity):
    u = torch.tensor(velocity, requires_grad=True)
    nu = torch.tensor(viscosity, requires_grad=True)
    frames = sim.rollout(u.permute(2, 0, 1), density, viscosity=nu)
    loss = (frames.double() * weights).sum()
    loss.backward()
    return loss.item(), u.grad.numpy().astype(np.float64), nu.grad.item()


def _loss(sim, velocity, density, weights, viscosity):
    with torch.no_grad():
        frames = sim.rollout(torch.tensor(velocity), density, viscosity=torch.tensor(viscosity))
    return (frames.double() * weights).sum().item()


def test_gradients_match_central_differences():
    """float32 throughout: the directional derivative along a random smooth direction and d/d nu agree
    with central differences to 2 %. Bilinear interpolation is only piecewise smooth in the departure
    point (its slope jumps where the point crosses a cell line, by the field's curvature times h), so
    the fields are smooth and the step small (1e-3 m/s along a unit direction, 1 % of nu); with a rough
    (per-cell random) density the same check is off by tens of percent at any step size."""
    n, m = 10, 9
    sim = SmokeSimulation((n, m), dt=0.1, steps=4, jacobi_iterations=15, cell_size=0.1, diffusion_iterations=8)
    velocity = _smooth_velocity(n, m, 4, scale=0.7)
    rng = np.random.default_rng(5)
    density = torch.tensor(1.0 + _smooth_velocity(n, m, 7)[..., 0])
    weights = torch.tensor(rng.normal(size=(4, n, m)))
    viscosity = 0.02
    _, grad_u, grad_nu = _loss_and_grads(sim, velocity, density, weights, viscosity)
    direction = _smooth_velocity(n, m, 6, scale=1.0)
    eps = 1e-3
    fd = (_loss(sim, velocity + eps * direction, density, weights, viscosity)
          - _loss(sim, velocity - eps * direction, density, weights, viscosity)) / (2 * eps)
    analytic = float((grad_u * direction).sum())
    assert abs(analytic) > 1e-2
    assert analytic == pytest.approx(fd, rel=0.02)
    eps_nu = 1e-2 * viscosity
    fd_nu = (_loss(sim, velocity, density, weights, viscosity + eps_nu)
             - _loss(sim, velocity, density, weights, viscosity - eps_nu)) / (2 * eps_nu)
    assert abs(grad_nu) > 1e-2
    assert grad_nu == pytest.approx(fd_nu, rel=0.02)


def test_gradient_of_a_rendered_video_flows_to_the_initial_velocity():
    n = 8
    sim = SmokeSimulation((n, n), dt=0.1, steps=3, jacobi_iterations=5, cell_size=1.0 / n)
    u = torch.zeros(2, n, n, requires_grad=True)
    rho = torch.zeros(n, n)
    rho[3:5, 2:4] = 1.0
    images = render_smoke(sim.rollout(u, rho))
    assert images.shape == (3, n, n, 3) and 0.0 <= images.min() and images.max() <= 1.0
    images[..., 0].mean().backward()
    assert u.grad.shape == (2, n, n) and torch.isfinite(u.grad).all() and u.grad.abs().max() > 0


def test_bad_input_names_the_field_and_range():
    with pytest.raises(ParameterError, match=r"shape must be two integers .* >= 3"):
        SmokeSimulation((2, 8))
    with pytest.raises(ParameterError, match=r"dt must lie in \(0, inf\)"):
        SmokeSimulation((8, 8), dt=0.0)
    with pytest.raises(ParameterError, match="viscosity must lie in"):
        SmokeSimulation((8, 8), viscosity=-1.0)
    with pytest.raises(ParameterError, match="jacobi_iterations must be an integer >= 0"):
        SmokeSimulation((8, 8), jacobi_iterations=-1)
    with pytest.raises(ParameterError, match=r"omega must lie in \(0, 1\)"):
        SmokeSimulation((8, 8), omega=1.0)
    sim = SmokeSimulation((8, 6), steps=2)
    with pytest.raises(ParameterError, match=r"velocity must have shape \[2, 8, 6\] or \[8, 6, 2\]"):
        sim.rollout(torch.zeros(6, 8, 2), torch.zeros(8, 6))
    with pytest.raises(ParameterError, match=r"density must have shape \[8, 6\]"):
        sim.rollout(torch.zeros(2, 8, 6), torch.zeros(6, 8))
    bad = torch.zeros(2, 8, 6)
    bad[1, 3, 3] = float("nan")
    with pytest.raises(ParameterError, match="velocity must be finite"):
        sim.rollout(bad, torch.zeros(8, 6))
    with pytest.raises(ParameterError, match="opacity must lie in"):
        render_smoke(torch.zeros(2, 8, 6), opacity=-1.0)


def test_blow_up_names_the_first_non_finite_step():
    # a density source of 1e37 per second adds 1e37 a step; float32 tops out at 3.4e38: step 35
    sim = SmokeSimulation((4, 4), dt=1.0, steps=40, jacobi_iterations=0)
    with pytest.raises(SimulationError, match="blew up at step 35 of 40: non-finite density"):
        sim.rollout(torch.zeros(2, 4, 4), torch.zeros(4, 4), source=torch.full((4, 4), 1e37))


def test_study_recovers_the_velocity_at_toy_size(tmp_path):
    study_smoke.main(["--seeds", "1000", "--grid", "16", "--steps", "8", "--iterations", "30", "--smooth", "1.5",
                      "--lr", "0.03", "--quiet", "--out", str(tmp_path)])
    record = json.loads((tmp_path / "smoke_study.json").read_text())
    (run,) = record["runs"]
    assert run["loss_reduction"] > 20, run["loss_reduction"]
    assert run["error_region_initial"] == pytest.approx(1.0)  # the zero guess
    assert run["error_effective_region"] < 0.5 and run["error_region"] < 0.7, run
    assert (tmp_path / "smoke_study.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 1000 |" in (tmp_path / "smoke_study.md").read_text()


def test_untaped_rollouts_reuse_buffers_without_touching_earlier_results():
    n = 8
    sim = SmokeSimulation((n, n), dt=0.1, steps=4, jacobi_iterations=10, viscosity=0.01, diffusion=0.01,
                          cell_size=1.0 / n)
    u = torch.tensor(_smooth_velocity(n, n, 8, scale=0.5))
    rho = torch.tensor(np.random.default_rng(9).uniform(size=(n, n)), dtype=torch.float32)
    with torch.no_grad():
        first = sim.rollout(u, rho)
        kept = first.clone()
        sim.rollout(2 * u, rho)  # reuses the ping-pong buffers, not the returned frames
    taped = sim.rollout(u.clone().requires_grad_(), rho)  # fresh arrays for every launch
    assert torch.equal(first, kept) and torch.equal(taped.detach(), kept)
