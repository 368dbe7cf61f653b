"""Shared test set-up: tests run on the device that exists (CPU here and in CI, CUDA when lent), and the
helpers that several test files repeat (rollouts, forces at a given state, central finite differences,
tetrahedron volumes)."""

import os

import numpy as np
import pytest

os.environ.setdefault("WSIM_DETERMINISTIC", "1")

import wsim  # noqa: E402,F401  (configures Warp quietly before any kernel compiles)
from wsim.device import cuda_available  # noqa: E402

requires_cuda = pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU (none on this machine)")


@pytest.fixture(scope="session")
def device():
    """The device the suite runs on: CUDA when present, else the CPU."""
    return "cuda:0" if cuda_available() else "cpu"


def rollout(simulation, params=None) -> np.ndarray:
    """Every frame's vertices ``[frames, V, 3]`` as float64 numpy, without a tape for gradients."""
    import torch

    with torch.no_grad():
        return simulation.rollout(params or {}).detach().cpu().numpy().astype(np.float64)


def particle_forces(model, positions, velocities=None, params=None) -> np.ndarray:
    """The forces ``[P, 3]`` (N) that every force model of ``model`` puts on its particles at the given
    state, read from the simulator's own step (gravity is not among them: the integrator adds it)."""
    import torch
    from wsim.simulation import Simulation

    simulation = Simulation(model, 1e-6, 1, 2)
    params = dict(params or {})
    params["particle_position"] = torch.as_tensor(np.asarray(positions), dtype=torch.float32)
    if velocities is not None:
        params["particle_velocity"] = torch.as_tensor(np.asarray(velocities), dtype=torch.float32)
    else:
        params["particle_velocity"] = torch.zeros(model.particle_count, 3)
    with torch.no_grad():
        simulation.rollout(params)
    forces = simulation.last_buffers["particle_f"]
    return forces.numpy()[0].astype(np.float64)


def central_difference(function, x, h: float) -> np.ndarray:
    """The gradient of the scalar ``function`` at ``x`` (any shape, float64) by central differences at the
    fixed step ``h``, one coordinate at a time."""
    x = np.asarray(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += h
        minus[index] -= h
        grad[index] = (function(plus) - function(minus)) / (2.0 * h)
    return grad


def tet_volumes(positions, tets) -> np.ndarray:
    """Signed volume of every tetrahedron ``[T]`` at ``positions`` (float64)."""
    x = np.asarray(positions, dtype=np.float64)[np.asarray(tets)]
    return np.einsum("ti,ti->t", x[:, 1] - x[:, 0], np.cross(x[:, 2] - x[:, 0], x[:, 3] - x[:, 0])) / 6.0


def assert_usd_body_follows(stage, prim_path: str, vertices: np.ndarray, frames, atol: float = 2e-6) -> None:
    """The static mesh ``prim_path`` (its points not time-sampled), placed by its composed USD transform
    at each of ``frames``, lies on ``vertices[frame]`` ``[V, 3]`` (USD matrices act on row vectors)."""
    from pxr import Usd, UsdGeom

    mesh = UsdGeom.Mesh(stage.GetPrimAtPath(prim_path))
    assert not mesh.GetPointsAttr().GetTimeSamples()
    local = np.array(mesh.GetPointsAttr().Get(), dtype=np.float64)
    for frame in frames:
        matrix = np.array(mesh.ComputeLocalToWorldTransform(Usd.TimeCode(frame)))
        np.testing.assert_allclose(local @ matrix[:3, :3] + matrix[3, :3], vertices[frame], atol=atol)
