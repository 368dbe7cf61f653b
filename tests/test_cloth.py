"""Cloth: membrane and bending forces, draping on the ground, lift/drag, gradients."""

import numpy as np
import pytest
import torch
from conftest import central_difference, particle_forces, rollout

from wsim.geometry import cloth as cloth_mesh
from wsim.builder import ModelBuilder
from wsim.errors import MeshError
from wsim.gradcheck import gradcheck
from wsim.simulation import Simulation


def cloth_model(device, mesh, ground=False, **kwargs):
    builder = ModelBuilder(ground=ground)
    options = dict(density=0.2, mu=50.0, lam=80.0, bending_stiffness=2e-3)
    options.update(kwargs)
    builder.add_cloth(mesh, **options)
    return builder.finalize(device)


# each force model alone: the others' coefficients set to zero (the simulator's own float32 step)
MEMBRANE_ONLY = {"bending_stiffness": 0.0, "bending_damping": 0.0, "drag_coefficient": 0.0, "lift_coefficient": 0.0}
BENDING_ONLY = {"cloth_lame_mu": 0.0, "cloth_lame_lambda": 0.0, "cloth_damping": 0.0, "drag_coefficient": 0.0,
                "lift_coefficient": 0.0}
AIR_ONLY = {"cloth_lame_mu": 0.0, "cloth_lame_lambda": 0.0, "cloth_damping": 0.0, "bending_stiffness": 0.0,
            "bending_damping": 0.0}


def membrane_forces(model, x, v=None):
    return particle_forces(model, x, v, MEMBRANE_ONLY)


def bending_forces(model, x, v=None, activation=None):
    params = dict(BENDING_ONLY)
    if activation is not None:
        params["bending_activation"] = torch.full((model.edge_count,), float(activation))
    return particle_forces(model, x, v, params)


def membrane_energy(mesh, x, mu, lam):
    rest, cur = mesh.vertices[mesh.faces], x[mesh.faces]
    total = 0.0
    for r, c in zip(rest, cur):
        u = (r[1] - r[0]) / np.linalg.norm(r[1] - r[0])
        n = np.cross(r[1] - r[0], r[2] - r[0])
        n /= np.linalg.norm(n)
        w = np.cross(n, u)
        Dm = np.array([[(r[1] - r[0]) @ u, (r[2] - r[0]) @ u], [(r[1] - r[0]) @ w, (r[2] - r[0]) @ w]])
        F = np.column_stack([c[1] - c[0], c[2] - c[0]]) @ np.linalg.inv(Dm)
        area0 = 0.5 * np.linalg.det(Dm)
        J = 0.5 * np.linalg.norm(np.cross(c[1] - c[0], c[2] - c[0])) / area0
        ic = np.sum(F * F)
        a = 1.0 + 2.0 * mu / (3.0 * lam)
        total += area0 * (0.5 * mu * (ic - 2) + 0.5 * lam * (J - a) ** 2 - 0.5 * mu * np.log(ic + 1))
    return total


def bending_energy(mesh, x, k, activation=0.0):
    edges = cloth_mesh.bending_edges(mesh.faces)

    def angle(p):
        x1, x2, x3, x4 = (p[edges[:, c]] for c in range(4))
        n1, n2, e = np.cross(x3 - x1, x4 - x1), np.cross(x4 - x2, x3 - x2), x4 - x3
        sin = np.einsum("ij,ij->i", np.cross(n1, n2), e) / np.linalg.norm(e, axis=1)
        return np.arctan2(sin, np.einsum("ij,ij->i", n1, n2)), n1, n2, e

    rest, n1, n2, e = angle(mesh.vertices)
    weight = 3 * np.sum(e * e, axis=1) / (0.5 * (np.linalg.norm(n1, axis=1) + np.linalg.norm(n2, axis=1)))
    theta = angle(x)[0]
    return float(np.sum(0.5 * k * weight * (theta - rest - activation) ** 2))


def test_zero_forces_at_rest(device):
    mesh = cloth_mesh.grid((1.0, 0.8), (3, 2))
    model = cloth_model(device, mesh, drag=1.0, lift=1.0)
    assert np.abs(membrane_forces(model, mesh.vertices)).max() < 1e-5 * 80.0 * 0.3  # round-off of lambda * edge
    assert np.abs(bending_forces(model, mesh.vertices)).max() < 1e-9
    assert np.abs(particle_forces(model, mesh.vertices, None, AIR_ONLY)).max() == 0.0
    # moving, the air pushes back; membrane and bending stay zero for a rigid translation
    moving = np.tile([0.3, -1.0, 0.2], (len(mesh.vertices), 1))
    assert np.abs(particle_forces(model, mesh.vertices, moving, AIR_ONLY)).max() > 0.0
    assert np.abs(membrane_forces(model, mesh.vertices, moving)).max() < 1e-5 * 80.0 * 0.3


def test_membrane_and_bending_forces_are_minus_energy_gradients(device):
    mesh = cloth_mesh.grid((0.4, 0.3), (2, 2))
    model = cloth_model(device, mesh, mu=40.0, lam=70.0, bending_stiffness=0.05)
    rng = np.random.default_rng(0)
    x = mesh.vertices * 1.05 + 0.03 * rng.standard_normal(mesh.vertices.shape)
    numeric = -central_difference(lambda p: membrane_energy(mesh, p, 40.0, 70.0), x, 1e-6)
    assert np.allclose(membrane_forces(model, x), numeric, rtol=1e-3, atol=1e-3 * np.abs(numeric).max())
    numeric = -central_difference(lambda p: bending_energy(mesh, p, 0.05, 0.2), x, 1e-6)
    forces = bending_forces(model, x, activation=0.2)
    assert np.allclose(forces, numeric, rtol=2e-3, atol=2e-3 * np.abs(numeric).max())
    # a flat sheet with a positive rest-angle offset is driven to fold: the activation bends it
    assert np.abs(bending_forces(model, mesh.vertices, activation=0.3)).max() > 0


def test_bending_edges_and_grid_sizes():
    for triangles in (64, 128, 512, 2048):
        mesh = cloth_mesh.grid_for_triangles(triangles)
        assert len(mesh.faces) == triangles
        edges = cloth_mesh.bending_edges(mesh.faces)
        sides = np.sort(np.concatenate([mesh.faces[:, [0, 1]], mesh.faces[:, [1, 2]], mesh.faces[:, [2, 0]]]), axis=1)
        unique = len(np.unique(sides, axis=0))
        # every interior edge is a side of two faces, a boundary edge of one: 3 T = 2 interior + boundary
        assert len(edges) == 3 * triangles - unique
        assert len(mesh.vertices) - unique + triangles == 1  # a grid is a disk (Euler characteristic 1)
        opposite = edges[:, :2]
        hinge = np.sort(edges[:, 2:], axis=1)
        assert len(np.unique(hinge, axis=0)) == len(edges)  # one bending element per interior edge
        assert np.all(opposite[:, 0] != opposite[:, 1])
    bad = np.array([[0, 1, 2], [0, 1, 3]])  # inconsistent winding on edge (0, 1)
    with pytest.raises(MeshError, match="edge"):
        cloth_mesh.bending_edges(bad)


def drop_cloth(device, drag=0.0, lift=0.0, frames=41, ground=True, height=0.5):
    mesh = cloth_mesh.grid((0.6, 0.6), (8, 8))
    builder = ModelBuilder(ground=ground, contact_smoothing=0.005)
    # per-particle masses are ~1 g: keep k dt^2 / m and c dt / m well below 1 for explicit stability
    builder.add_material(ke=200.0, kd=0.5, kf=0.5, mu=0.5)
    builder.add_cloth(mesh, position=(0.0, height, 0.0), rotation=(0.0, 0.0, 0.0998, 0.995), density=0.2,
                      mu=20.0, lam=40.0, damping=0.02, bending_stiffness=1e-4, bending_damping=1e-6,
                      drag=drag, lift=lift, radius=0.005)
    return rollout(Simulation(builder.finalize(device), 1e-3, 25, frames)), mesh


def test_cloth_drapes_on_the_ground_and_comes_to_rest(device):
    out, mesh = drop_cloth(device, frames=49)  # 1.2 s at the default dt of 1 ms
    assert np.all(np.isfinite(out))
    final = out[-1]
    assert final[:, 1].max() < 0.05 and final[:, 1].min() > -0.01  # lies on the ground
    speed = np.abs(out[-1] - out[-2]).max() / 0.025
    assert speed < 0.05  # at rest
    # no edge has stretched wildly (no explosion)
    edges = np.concatenate([mesh.faces[:, [0, 1]], mesh.faces[:, [1, 2]]])
    rest = np.linalg.norm(mesh.vertices[edges[:, 0]] - mesh.vertices[edges[:, 1]], axis=1)
    now = np.linalg.norm(final[edges[:, 0]] - final[edges[:, 1]], axis=1)
    assert now.max() < 1.5 * rest.max()


def test_lift_and_drag_slow_a_falling_sheet(device):
    still, _ = drop_cloth(device, ground=False, frames=21, height=2.0)
    airy, _ = drop_cloth(device, drag=0.5, lift=0.5, ground=False, frames=21, height=2.0)
    fall_still = 2.0 - still[-1, :, 1].mean()
    fall_airy = 2.0 - airy[-1, :, 1].mean()
    assert fall_airy < 0.8 * fall_still


def small_cloth_simulation(device):
    mesh = cloth_mesh.grid((0.3, 0.3), (2, 2))
    builder = ModelBuilder(ground=False)
    builder.add_cloth(mesh, position=(0.0, 1.0, 0.0), rotation=(0.0, 0.0, 0.2588, 0.9659), density=0.3,
                      mu=5.0, lam=8.0, damping=0.01, bending_stiffness=2e-3, bending_damping=1e-5, drag=0.8,
                      lift=0.6, velocity=(1.0, 2.0, 0.5), pinned=[0])
    model = builder.finalize(device)
    rest = model.defaults["particle_position"]
    rng = np.random.default_rng(3)
    centre = rest.mean(axis=0)  # released stretched by 10 % so that the membrane forces matter
    model.defaults["particle_position"] = centre + 1.1 * (rest - centre) + 0.01 * rng.standard_normal(rest.shape)
    model.defaults["bending_activation"] = 0.2 * rng.standard_normal(model.edge_count)
    return Simulation(model, 2e-3, 5, 6)


def test_cloth_gradients_match_finite_differences(device):
    sim = small_cloth_simulation(device)
    names = ["cloth_lame_mu", "cloth_lame_lambda", "cloth_damping", "bending_stiffness", "bending_damping",
             "bending_activation", "drag_coefficient", "lift_coefficient", "particle_mass", "particle_position",
             "particle_velocity"]
    rows = gradcheck(sim, names, eps=1e-2, seed=0)
    rows += gradcheck(sim, ["drag_coefficient", "lift_coefficient", "bending_stiffness"], eps=1e-2, seed=5,
                      base={"drag_coefficient": torch.tensor(0.8), "lift_coefficient": torch.tensor(0.6),
                            "bending_stiffness": torch.tensor(2e-3)})
    control = torch.zeros(sim.frames - 1, sim.model.edge_count)
    rows += gradcheck(sim, ["control_bending_activation"], eps=1e-2, seed=6,
                      base={"control_bending_activation": control})
    for row in rows:
        print(f"{row.name:28s} {row.adjoint:14.6e} {row.finite_difference:14.6e} {row.finite_difference_wide:14.6e} "
              f"{row.step:9.3g} {row.relative_error:9.2e}")
    failures = [(r.name, r.relative_error) for r in rows if r.relative_error > 1e-2]
    assert not failures, failures
