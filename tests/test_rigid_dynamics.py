"""Rigid bodies and particles against analytic solutions and an independent ODE solver."""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.spatial.transform import Rotation

from wsim import ModelBuilder, Simulation, primitive

G = 9.80665


def free_fall(device, dt, duration, kind):
    builder = ModelBuilder(ground=False)
    v0 = np.array([0.7, 2.0, -0.4])
    x0 = np.array([0.1, 3.0, 0.2])
    if kind == "body":
        builder.add_body(primitive("box", 0.1), density=300.0, position=x0, velocity=v0)
    else:
        builder.add_particle(x0, v0, mass=0.2)
    model = builder.finalize(device, dt=dt)
    frames = 11
    substeps = int(round(duration / dt / (frames - 1)))
    sim = Simulation(model, dt, substeps, frames)
    states = None
    sim.rollout()
    states = sim.frame_states()
    position = states["body_q"][:, 0] if kind == "body" else states["particle_q"][:, 0]
    t = np.arange(frames) * substeps * dt
    exact = x0 + v0 * t[:, None] + 0.5 * np.array([0, -G, 0]) * t[:, None] ** 2
    return position, exact, x0


@pytest.mark.parametrize("kind", ["particle", "body"])
def test_free_fall_matches_analytic_trajectory(device, kind):
    position, exact, x0 = free_fall(device, dt=5e-5, duration=1.0, kind=kind)
    relative = np.abs(position - exact).max() / np.abs(exact - x0).max()
    assert relative < 1e-4


def angular_momentum(rotation_xyzw, inertia_body, omega_world):
    matrix = Rotation.from_quat(rotation_xyzw).as_matrix()
    return matrix @ inertia_body @ matrix.T @ omega_world


def spinning_body(device, dt=1e-3, frames=21, substeps=50):
    builder = ModelBuilder(ground=False, gravity=(0, 0, 0))
    omega0 = np.array([0.3, 5.0, 0.4])  # near the intermediate axis: strongly gyroscopic
    builder.add_body(primitive("box", [0.1, 0.2, 0.3]), density=500.0, position=(0, 1, 0),
                     rotation=Rotation.from_euler("xyz", [0.3, -0.2, 0.5]).as_quat(), angular_velocity=omega0)
    model = builder.finalize(device, dt=dt)
    sim = Simulation(model, dt, substeps, frames)
    sim.rollout()
    return sim, sim.frame_states()


def test_torque_free_body_conserves_angular_momentum(device):
    sim, states = spinning_body(device)
    inertia = sim.model.defaults["body_inertia"][0]
    momenta = np.array([angular_momentum(r[0], inertia, w[0]) for r, w in zip(states["body_r"], states["body_w"])])
    drift = np.linalg.norm(momenta - momenta[0], axis=1).max() / np.linalg.norm(momenta[0])
    assert drift < 1e-3
    # and it really tumbles: the body-frame angular velocity changes direction (gyroscopic term at work)
    omega_body = [Rotation.from_quat(r[0]).as_matrix().T @ w[0] for r, w in zip(states["body_r"], states["body_w"])]
    assert np.linalg.norm(omega_body[-1] - omega_body[0]) > 0.5


def test_tumbling_matches_euler_equations_solved_independently(device):
    """Body-frame angular velocity vs Euler's rigid-body equations integrated by scipy (RK45)."""
    sim, states = spinning_body(device, dt=2e-4, frames=21, substeps=250)
    inertia = np.diag(sim.model.defaults["body_inertia"][0])
    rotation0 = Rotation.from_quat(states["body_r"][0, 0]).as_matrix()
    omega_body0 = rotation0.T @ states["body_w"][0, 0]

    def euler(_, w):
        return (np.cross(inertia * w, w)) / inertia

    times = np.arange(sim.frames) * sim.substeps * sim.dt
    reference = solve_ivp(euler, (0, times[-1]), omega_body0, t_eval=times, rtol=1e-10, atol=1e-12).y.T
    ours = np.array([Rotation.from_quat(r[0]).as_matrix().T @ w[0] for r, w in zip(states["body_r"], states["body_w"])])
    error = np.linalg.norm(ours - reference, axis=1).max() / np.linalg.norm(omega_body0)
    assert error < 2e-2


def test_impulse_sets_linear_and_angular_velocity(device):
    dt = 1e-3
    builder = ModelBuilder(ground=False, gravity=(0, 0, 0))
    impulse, point = np.array([1.5, 0.0, -0.5]), np.array([0.0, 0.1, 0.0])
    builder.add_body(primitive("box", [0.2, 0.2, 0.2]), density=400.0, position=(0, 1, 0), push_impulse=impulse,
                     push_point=point, push_start=0.002, push_duration=0.01)
    model = builder.finalize(device, dt=dt)
    sim = Simulation(model, dt, 10, 4)
    sim.rollout()
    states = sim.frame_states()
    mass = model.defaults["body_mass"][0]
    np.testing.assert_allclose(states["body_v"][-1, 0], impulse / mass, rtol=1e-4)
    inertia_world = model.defaults["body_inertia"][0]  # cube: isotropic, unaffected by rotation
    expected_omega = np.linalg.solve(inertia_world, np.cross(point, impulse))
    np.testing.assert_allclose(states["body_w"][-1, 0], expected_omega, rtol=2e-2, atol=1e-3)


def box_on_ground(device, velocity=(0.0, 0.0, 0.0), height=0.1, ke=2e4, kd=200.0, kf=1e3, mu=0.5, smoothing=1e-2,
                  frames=41, substeps=50, dt=5e-4):
    builder = ModelBuilder(contact_smoothing=smoothing)
    builder.add_material(ke, kd, kf, mu)
    builder.add_body(primitive("box", 0.2), density=500.0, position=(0, height, 0), velocity=velocity)
    model = builder.finalize(device, dt=dt)
    sim = Simulation(model, dt, substeps, frames)
    sim.rollout()
    return model, sim.frame_states()


def equilibrium_depth(weight_per_vertex, ke, smoothing):
    """Penetration p at which the contact law e(p) = weight / ke (see wsim.models.contact)."""
    target = weight_per_vertex / ke
    if smoothing == 0:
        return target
    q = np.sqrt(2 * smoothing * target)
    return q - smoothing / 2 if q < smoothing else target


@pytest.mark.parametrize("smoothing", [0.0, 1e-2])
def test_dropped_box_comes_to_rest_at_contact_equilibrium(device, smoothing):
    ke = 2e4
    model, states = box_on_ground(device, height=0.35, ke=ke, smoothing=smoothing)
    speed = np.linalg.norm(states["body_v"][-1, 0])
    assert speed < 1e-3
    weight_per_vertex = model.defaults["body_mass"][0] * G / 4.0
    expected = equilibrium_depth(weight_per_vertex, ke, smoothing)
    depth = 0.1 - states["body_q"][-1, 0, 1]
    tolerance = weight_per_vertex / ke + smoothing / 2  # documented contact tolerance
    assert depth <= tolerance
    assert depth == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("mu", [0.3, 0.6])
def test_friction_stops_sliding_box_at_coulomb_distance(device, mu):
    v0 = 2.0
    ke = 2e4
    start = 0.1 - equilibrium_depth(500.0 * 0.008 * G / 4, ke, 1e-2)  # rest on the ground from the start
    model, states = box_on_ground(device, velocity=(v0, 0, 0), height=start, mu=mu, frames=31, substeps=80)
    assert np.linalg.norm(states["body_v"][-1, 0]) < 1e-3
    distance = states["body_q"][-1, 0, 0] - states["body_q"][0, 0, 0]
    assert distance == pytest.approx(v0**2 / (2 * mu * G), rel=0.05)


def test_same_scene_twice_gives_identical_results(device):
    runs = [box_on_ground(device, velocity=(1.0, 0, 0.3), height=0.3, frames=11, substeps=40)[1] for _ in range(2)]
    for name in runs[0]:
        np.testing.assert_array_equal(runs[0][name], runs[1][name])


def test_spring_oscillates_at_its_natural_frequency(device):
    """A mass on a spring (other end pinned, no gravity) against x(t) = A cos(sqrt(k/m) t)."""
    k, m, amplitude, dt = 50.0, 0.2, 0.05, 1e-4
    builder = ModelBuilder(ground=False, gravity=(0, 0, 0))
    builder.add_particle((0, 0, 0), pinned=True)
    builder.add_particle((1.0 + amplitude, 0, 0), mass=m)
    builder.add_spring(0, 1, k, 0.0, rest_length=1.0)
    sim = Simulation(builder.finalize(device), dt, 100, 11)
    vertices = sim.rollout().numpy()
    t = np.arange(11) * 100 * dt
    np.testing.assert_allclose(vertices[:, 1, 0] - 1.0, amplitude * np.cos(np.sqrt(k / m) * t), atol=2e-4)


def test_control_forces_act_on_their_frame_interval(device):
    """A force on the second frame interval only: v jumps by F/m * interval duration, then stays."""
    import torch

    from wsim import Control

    dt, substeps, mass = 1e-3, 10, 0.5
    builder = ModelBuilder(ground=False, gravity=(0, 0, 0))
    builder.add_particle((0, 1, 0), mass=mass)
    builder.add_body(primitive("box", 0.2), mass=2.0, position=(1, 1, 0))
    sim = Simulation(builder.finalize(device, dt=dt), dt, substeps, 4)
    particle_force = torch.zeros(3, 1, 3)
    particle_force[1, 0] = torch.tensor([2.0, 0.0, -1.0])
    body_force = torch.zeros(3, 1, 3)
    body_force[2, 0, 1] = 4.0
    vertices = sim.rollout(control=Control(particle_force=particle_force, body_force=body_force))
    states = sim.frame_states()
    np.testing.assert_allclose(states["particle_qd"][1, 0], 0.0, atol=1e-7)
    np.testing.assert_allclose(states["particle_qd"][2, 0], [2.0 / mass * 0.01, 0.0, -1.0 / mass * 0.01], rtol=1e-5)
    np.testing.assert_allclose(states["particle_qd"][3, 0], states["particle_qd"][2, 0], rtol=1e-6)
    np.testing.assert_allclose(states["body_v"][3, 0], [0.0, 4.0 / 2.0 * 0.01, 0.0], rtol=1e-5)
    assert vertices.shape == (4, 9, 3)
