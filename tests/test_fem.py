"""Tetrahedral FEM: stable Neo-Hookean forces, hanging beam, inversion, activation, gradients."""

import numpy as np
import pytest
import torch
from conftest import central_difference, particle_forces, rollout, tet_volumes

from wsim.geometry import tetmesh
from wsim.builder import ModelBuilder
from wsim.errors import MeshError, ParameterError
from wsim.gradcheck import gradcheck, projection_loss
from wsim.simulation import Simulation


def element_forces(model, positions, velocities=None, mu=None, lam=None, damping=None, activation=None):
    """Forces [P, 3] of every tetrahedron of ``model`` at the given state (the simulator's float32 step)."""
    overrides = (("lame_mu", mu), ("lame_lambda", lam), ("tet_damping", damping), ("tet_activation", activation))
    return particle_forces(model, positions, velocities, {name: value for name, value in overrides
                                                          if value is not None})


def energy(mesh, positions, mu, lam, activation=0.0):
    """Total stable Neo-Hookean energy (paper Eq. 1 with the rest-stable shift), float64."""
    rest = mesh.vertices[mesh.tets]
    x = positions[mesh.tets]
    Dm = np.stack([rest[:, c] - rest[:, 0] for c in (1, 2, 3)], axis=2)
    Ds = np.stack([x[:, c] - x[:, 0] for c in (1, 2, 3)], axis=2)
    F = Ds @ np.linalg.inv(Dm)
    ic = np.einsum("tij,tij->t", F, F)
    J = np.linalg.det(F)
    a = 1.0 + 0.75 * mu / lam
    psi = 0.5 * mu * (ic - 3) + 0.5 * lam * (J - a + activation) ** 2 - 0.5 * mu * np.log(ic + 1)
    return float(np.sum(np.linalg.det(Dm) / 6.0 * psi))


def single_mesh_model(device, mesh, mu=1.0e4, lam=2.0e4, damping=0.0, **kwargs):
    builder = ModelBuilder(ground=False)
    builder.add_soft_mesh(mesh, density=1000.0, mu=mu, lam=lam, damping=damping, **kwargs)
    return builder.finalize(device)


def test_zero_force_at_rest(device):
    mesh = tetmesh.box((0.3, 0.2, 0.1), (2, 2, 1))
    model = single_mesh_model(device, mesh)
    forces = element_forces(model, mesh.vertices)
    scale = 1.0e4 * mesh.volume  # mu * volume: the size of any elastic force here
    assert np.abs(forces).max() < 1e-5 * scale


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_uniformly_scaled_element_is_pushed_back(device, factor):
    mesh = tetmesh.TetMesh(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float) * 0.1, [[0, 1, 2, 3]])
    model = single_mesh_model(device, mesh)
    centroid = mesh.vertices.mean(axis=0)
    scaled = centroid + factor * (mesh.vertices - centroid)
    forces = element_forces(model, scaled)
    radial = np.einsum("ij,ij->i", forces, scaled - centroid)
    assert np.all(radial * np.sign(factor - 1.0) < 0)  # inwards when stretched, outwards when squeezed
    assert np.abs(forces.sum(axis=0)).max() < 1e-6 * np.abs(forces).max()


def test_forces_are_minus_energy_gradient(device):
    mesh = tetmesh.box((0.2, 0.2, 0.2), (1, 1, 1))
    model = single_mesh_model(device, mesh, mu=3.0e3, lam=7.0e3)
    rng = np.random.default_rng(0)
    x = mesh.vertices + 0.03 * rng.standard_normal(mesh.vertices.shape)
    activation = 0.1
    forces = element_forces(model, x, activation=activation)
    numeric = -central_difference(lambda p: energy(mesh, p, 3.0e3, 7.0e3, activation), x, 1e-6)
    assert np.allclose(forces, numeric, rtol=2e-3, atol=2e-3 * np.abs(numeric).max())


def test_inverted_element_stays_finite(device):
    mesh = tetmesh.TetMesh(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float) * 0.1, [[0, 1, 2, 3]])
    model = single_mesh_model(device, mesh, mu=1.0e3, lam=1.0e3, damping=1.0)
    # Collapsed and fully inverted states give finite forces ...
    for x in (np.zeros((4, 3)), mesh.vertices * np.array([1.0, 1.0, -1.0])):
        assert np.all(np.isfinite(element_forces(model, x)))
    # ... and a rollout that drives an element through inversion stays finite (no NaN).
    sim = Simulation(model, 1e-4, 10, 21)
    velocity = np.zeros((4, 3))
    velocity[3] = (0.0, 0.0, -40.0)  # the apex flies through the opposite face
    out = sim.rollout({"particle_velocity": torch.tensor(velocity, dtype=torch.float32),
                       "gravity": torch.zeros(3)})
    assert torch.isfinite(out).all()
    volumes = [tet_volumes(frame, mesh.tets)[0] for frame in out.cpu().numpy()]
    assert min(volumes) < 0  # it really inverted
    assert volumes[-1] > 0  # and the stable energy restored it


def test_activation_changes_rest_volume(device):
    mesh = tetmesh.box(0.1, (1, 1, 1))
    model = single_mesh_model(device, mesh, mu=1.0e3, lam=1.0e4, damping=20.0)
    sim = Simulation(model, 2e-4, 50, 21)
    out = rollout(sim, {"tet_activation": torch.tensor(0.2), "gravity": torch.zeros(3)})
    volume = tet_volumes(out[-1], mesh.tets).sum()
    assert volume < 0.95 * mesh.volume  # alpha > 0 contracts (target volume ratio 1 - alpha)


def hanging_beam_deflection(device, mu, lam):
    mesh = tetmesh.beam(0.5, 0.1, 0.1, (8, 2, 2))
    builder = ModelBuilder(ground=False)
    builder.add_soft_mesh(mesh, position=(0, 1, 0), density=1000.0, mu=mu, lam=lam, damping=500.0,
                          pinned=np.flatnonzero(mesh.vertices[:, 0] < 1e-6))
    # strain-rate damping barely damps the first bending mode (it brakes no rotation of a cross-section),
    # so the beam swings about its static shape: take the middle of the tip's range over the last 0.6 s,
    # more than one full swing (0.43 s)
    sim = Simulation(builder.finalize(device), 2e-4, 50, 121)
    tip = rollout(sim)[:, mesh.vertices[:, 0] > 0.499, 1].mean(axis=1)
    late = tip[-61:]
    return 1.0 - 0.5 * (late.min() + late.max())


def test_hanging_beam_deflection_decreases_with_stiffness(device):
    base = hanging_beam_deflection(device, 5.0e5, 5.0e5)
    stiffer_mu = hanging_beam_deflection(device, 1.0e6, 5.0e5)
    stiffer_lambda = hanging_beam_deflection(device, 5.0e5, 1.0e6)
    assert 0.01 < base < 0.2
    assert stiffer_mu < 0.8 * base
    assert stiffer_lambda < base


def test_young_poisson_match_lame(device):
    mesh = tetmesh.box(0.1, (1, 1, 1))
    sim = Simulation(single_mesh_model(device, mesh), 1e-3, 1, 2)
    resolved = sim.resolve({"young_modulus": 1.0e5, "poisson_ratio": 0.25})
    # the textbook small-strain moduli, remapped to the stable Neo-Hookean energy's (4/3 mu, lam + 5/6 mu)
    mu_l, lam_l = 1.0e5 / 2.5, 1.0e5 * 0.25 / (1.25 * 0.5)
    assert torch.allclose(resolved["lame_mu"], torch.tensor(4.0 / 3.0 * mu_l))
    assert torch.allclose(resolved["lame_lambda"], torch.tensor(lam_l + 5.0 / 6.0 * mu_l))
    from wsim.models.fem import lame_from_young_poisson, young_poisson_from_lame

    assert young_poisson_from_lame(*lame_from_young_poisson(1.0e5, 0.25)) == pytest.approx((1.0e5, 0.25))
    for bad in ({"poisson_ratio": 0.5}, {"poisson_ratio": -0.1}, {"young_modulus": 0.0},
                {"young_modulus": float("nan")}, {"young_modulus": 1.0, "lame_mu": 1.0}):
        with pytest.raises(ParameterError):
            sim.resolve(bad)
    with pytest.raises(ParameterError, match="lame_mu"):
        sim.resolve({"lame_mu": -1.0})


def test_bad_elements_are_named(device):
    mesh = tetmesh.TetMesh(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], float),
                           [[0, 1, 2, 3], [0, 1, 4, 2]])  # the second one is flat
    with pytest.raises(MeshError, match="tetrahedron 1"):
        mesh.check()
    builder = ModelBuilder()
    for p in mesh.vertices:
        builder.add_particle(p)
    builder.add_tetrahedron(0, 2, 1, 3)  # negative volume
    with pytest.raises(MeshError, match="tetrahedron 0 .*negative"):
        builder.finalize(device)
    with pytest.raises(ParameterError, match="mu"):
        ModelBuilder().add_soft_mesh(tetmesh.box(0.1, 1), density=1.0, mu=-1.0)


def small_soft_simulation(device, frames=6, substeps=4):
    """Two-cube soft block (12 tets), released stretched, falling onto the ground on one corner."""
    mesh = tetmesh.box((0.2, 0.1, 0.1), (2, 1, 1))
    builder = ModelBuilder(contact_smoothing=0.01)
    builder.add_material(ke=2.0e3, kd=5.0, kf=100.0, mu=0.5)
    builder.add_soft_mesh(mesh, position=(0.0, 0.08, 0.0), rotation=(0.0, 0.0, 0.1736, 0.9848), density=500.0,
                          mu=2.0e3, lam=4.0e3, damping=2.0, velocity=(0.3, -0.5, 0.0))
    model = builder.finalize(device)
    rest = model.defaults["particle_position"]
    centre = rest.mean(axis=0)
    model.defaults["particle_position"] = rest + (rest - centre) * np.array([0.15, -0.05, 0.1])
    return Simulation(model, 2e-3, substeps, frames)


def test_fem_gradients_match_finite_differences(device):
    sim = small_soft_simulation(device)
    names = ["lame_mu", "lame_lambda", "tet_damping", "tet_activation", "particle_mass", "particle_position",
             "particle_velocity"]
    rows = gradcheck(sim, names, eps=1e-2, seed=0)
    rng = np.random.default_rng(1)
    # global (scalar) Lame parameters and Young/Poisson through the torch-side conversion. A scalar mu
    # broadcasts to every tetrahedron, so its adjoint is the sum of theirs (checked above by finite
    # differences); its own finite difference is lost in round-off: this loss barely feels a uniform
    # change of mu (the differences scatter by 3 % over steps of 2^-2 to 2^2 eps).
    loss = projection_loss(sim, 2)
    scalar = torch.tensor(2.0e3, requires_grad=True)
    loss({"lame_mu": scalar}).backward()
    per_tet = torch.full((sim.model.tet_count,), 2.0e3, requires_grad=True)
    loss({"lame_mu": per_tet}).backward()
    assert float(scalar.grad) == pytest.approx(float(per_tet.grad.sum()), rel=1e-4)
    rows += gradcheck(sim, ["lame_lambda"], eps=1e-2, seed=2, base={"lame_lambda": torch.tensor(4.0e3)})
    rows += gradcheck(sim, ["young_modulus", "poisson_ratio"], eps=1e-2, seed=3)
    # per-interval activation (control)
    control = torch.tensor(0.05 * rng.standard_normal((sim.frames - 1, sim.model.tet_count)), dtype=torch.float32)
    rows += gradcheck(sim, ["control_tet_activation"], eps=1e-2, seed=4, base={"control_tet_activation": control})
    for row in rows:
        print(f"{row.name:24s} {row.adjoint:14.6e} {row.finite_difference:14.6e} {row.finite_difference_wide:14.6e} "
              f"{row.step:9.3g} {row.relative_error:9.2e}")
    failures = [(r.name, r.adjoint, r.finite_difference, r.relative_error) for r in rows if r.relative_error > 1e-2]
    assert not failures, failures


def pushed_beam_simulation(device, gravity=(0.0, 0.0, 0.0), frames=6):
    """A free (unpinned) beam whose tip particles receive a known impulse over the first 10 ms."""
    builder = ModelBuilder(gravity=gravity, ground=False)
    added = builder.add_soft_mesh(tetmesh.beam(0.4, 0.1, 0.1, (4, 1, 1)), density=500.0, mu=5.0e3, lam=1.0e4,
                                  damping=5.0)
    positions = np.array([builder.particles[i]["position"] for i in added["particles"]])
    tip = np.flatnonzero(positions[:, 0] > 0.35)
    builder.add_particle_push(np.asarray(added["particles"])[tip], impulse=(0.0, 0.3, 0.1), start=0.0, duration=0.01)
    return Simulation(builder.finalize(device, dt=1e-3), 1e-3, 10, frames), tip


def test_particle_push_delivers_its_impulse(device):
    sim, tip = pushed_beam_simulation(device)
    mass = sim.default("particle_mass").double()
    x = sim.rollout({}).double()
    velocity = (x[-1] - x[-2]) / (sim.dt * sim.substeps)  # the push is over; the free body drifts
    momentum = (mass[:, None] * velocity).sum(0)
    # internal forces cancel, so the total momentum is exactly the impulse (up to the finite difference)
    np.testing.assert_allclose(momentum.cpu().numpy(), [0.0, 0.3, 0.1], atol=2e-4)
    force = sim.default("particle_push_force").cpu().numpy()
    np.testing.assert_allclose(force[tip].sum(0), [0.0, 30.0, 10.0], rtol=1e-6)  # impulse / 10 ms
    assert np.count_nonzero(np.abs(force).sum(1)) == len(tip)


def test_particle_push_gradients_match_finite_differences(device):
    sim, _ = pushed_beam_simulation(device, gravity=(0.0, -9.81, 0.0))
    rows = gradcheck(sim, ["particle_mass", "particle_push_force"], eps=1e-2, seed=5)
    failures = [(r.name, r.adjoint, r.finite_difference, r.relative_error) for r in rows if r.relative_error > 1e-2]
    assert not failures, failures


def test_particle_push_errors(device):
    builder = ModelBuilder(ground=False)
    builder.add_soft_mesh(tetmesh.box(0.1, (1, 1, 1)), density=500.0)
    with pytest.raises(ParameterError, match="at least one particle"):
        builder.add_particle_push([], impulse=(1.0, 0.0, 0.0))
    builder.add_particle_push([0, 1], impulse=(1.0, 0.0, 0.0), duration=0.01)
    with pytest.raises(ParameterError, match="particle 1 is pushed twice"):
        builder.add_particle_push([1, 2], impulse=(1.0, 0.0, 0.0))
    with pytest.raises(ParameterError, match="finalize"):
        builder.finalize(device)


def _reference_forces(rest, x, v, mu, lam, kd):
    """Element forces in float64 (module docstring of wsim.models.fem), [T, 4, 3]."""
    forces = np.zeros(x.shape)
    for k in range(len(rest)):
        dm = (rest[k, 1:] - rest[k, 0]).T
        inverse, volume = np.linalg.inv(dm), np.linalg.det(dm) / 6.0
        ds, dds = (x[k, 1:] - x[k, 0]).T, (v[k, 1:] - v[k, 0]).T
        f, df = ds @ inverse, dds @ inverse
        stress = mu * f * (1.0 - 1.0 / ((f * f).sum() + 1.0)) + kd * f @ (0.5 * (f.T @ df + df.T @ f))
        h = volume * stress @ inverse.T
        cof = [np.cross(ds[:, 1], ds[:, 2]), np.cross(ds[:, 2], ds[:, 0]), np.cross(ds[:, 0], ds[:, 1])]
        rate = sum(cof[i] @ dds[:, i] for i in range(3)) / (6.0 * volume)
        s = (lam * (np.linalg.det(f) - 1.0) - 0.75 * mu + kd * rate) / 6.0
        g = [h[:, i] + cof[i] * s for i in range(3)]
        forces[k, 0], forces[k, 1:] = g[0] + g[1] + g[2], -np.array(g)
    return forces


@pytest.mark.parametrize("strain, tolerance", [(1e-4, 2e-3), (1e-2, 2e-5)])
def test_element_forces_keep_float32_accuracy_on_badly_shaped_elements(strain, tolerance):
    """Random tetrahedra (many slivers) barely deformed, where the rest-stable terms nearly cancel: the
    kernel's forces against float64 to about float32's round-off of the cancelling terms. A form that
    squares the rest shape's condition number (Ic = tr(Ds^T Ds Dm^-1 Dm^-T), tried once for speed) is
    off by 0.8 and 1.6e-4 here."""
    import warp as wp

    from wsim.models.fem import tetrahedron_forces_kernel

    rng = np.random.default_rng(1)
    rest = rng.standard_normal((500, 4, 3)) * 0.05
    flip = np.linalg.det(rest[:, 1:] - rest[:, :1]) < 0
    rest[flip, 1], rest[flip, 2] = rest[flip, 2].copy(), rest[flip, 1].copy()
    x = rest + strain * 0.05 * rng.standard_normal(rest.shape)
    v = 0.1 * rng.standard_normal(rest.shape)
    mu, lam, kd = 3e4, 6e4, 5.0
    dm = np.transpose(rest[:, 1:] - rest[:, :1], (0, 2, 1))
    T = len(rest)
    forces = wp.zeros(4 * T, dtype=wp.vec3)
    wp.launch(tetrahedron_forces_kernel, dim=T, device="cpu",
              inputs=[wp.array(x.reshape(-1, 3).astype(np.float32), dtype=wp.vec3),
                      wp.array(v.reshape(-1, 3).astype(np.float32), dtype=wp.vec3),
                      wp.array(np.arange(4 * T, dtype=np.int32).reshape(T, 4), dtype=wp.int32),
                      wp.array(np.linalg.inv(dm).astype(np.float32), dtype=wp.mat33),
                      wp.array((np.linalg.det(dm) / 6.0).astype(np.float32), dtype=float),
                      *(wp.full(T, value, dtype=float) for value in (mu, lam, kd, 0.0))],
              outputs=[forces])
    expected = _reference_forces(rest, x, v, mu, lam, kd)
    error = np.abs(forces.numpy().reshape(T, 4, 3) - expected).max() / np.abs(expected).max()
    assert error < tolerance
