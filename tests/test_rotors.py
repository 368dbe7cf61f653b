"""Rotors (wsim.models.rotors): thrust along a body-fixed axis at a body-fixed point, the propeller's
reaction torque, the clamp, gradients through the thrust schedule, their configs and random schedules."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from conftest import central_difference
from wsim import Control, ModelBuilder, Simulation, primitive
from wsim.config import SceneConfig, from_dict
from wsim.errors import ConfigError, ParameterError
from wsim.gradcheck import gradcheck

G = 9.80665
MASS = 3.0
ARM = 0.25
RATIO = 0.016
# a plus-shaped quadrotor: arms along x and z, spins alternating
PLUS = [((ARM, 0.0, 0.0), 1), ((0.0, 0.0, ARM), -1), ((-ARM, 0.0, 0.0), 1), ((0.0, 0.0, -ARM), -1)]


def quadrotor(device, thrust, rotation=(0.0, 0.0, 0.0, 1.0), gravity=(0.0, -G, 0.0), max_thrust=20.0,
              torque_ratio=RATIO, axis=(0.0, 1.0, 0.0)):
    """A flat 3 kg box with four rotors; ``thrust`` per rotor (a number or a schedule each)."""
    builder = ModelBuilder(gravity=gravity, ground=False)
    builder.add_body(primitive("box", [0.5, 0.08, 0.4]), mass=MASS, position=(0.0, 1.0, 0.0), rotation=rotation)
    for (position, spin), value in zip(PLUS, thrust):
        builder.add_rotor(0, position, axis=axis, spin=spin, torque_ratio=torque_ratio, max_thrust=max_thrust,
                          thrust=value)
    return builder.finalize(device, dt=1e-3)


def run(model, frames=21, substeps=10, dt=1e-3, params=None):
    sim = Simulation(model, dt, substeps, frames)
    with torch.no_grad():
        sim.rollout(params)
    return sim, sim.frame_states()


def first_step_wrench(sim):
    """Force and torque (world, about the centre of mass) the rotors put on body 0 at physics step 0."""
    return (sim.last_buffers["body_f"].numpy()[0, 0].astype(np.float64),
            sim.last_buffers["body_t"].numpy()[0, 0].astype(np.float64))


def test_four_equal_thrusts_summing_to_the_weight_hover(device):
    sim, states = run(quadrotor(device, [MASS * G / 4.0] * 4), frames=41)  # 0.4 s
    np.testing.assert_allclose(states["body_q"][:, 0], [[0.0, 1.0, 0.0]] * 41, atol=1e-6)
    np.testing.assert_allclose(states["body_v"][:, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(states["body_w"][:, 0], 0.0, atol=1e-7)
    np.testing.assert_allclose(np.abs(states["body_r"][:, 0, 3]), 1.0, atol=1e-7)


def test_alternating_spins_with_unequal_pairs_yaw_at_reaction_torque_over_inertia(device):
    """Pairs of opposite rotors with equal thrust: the lever arms cancel, the reaction torques
    ``RATIO (2 f_plus - 2 f_minus)`` remain, about the body's up axis; the total still carries the weight."""
    f_plus, f_minus = MASS * G / 4.0 + 1.0, MASS * G / 4.0 - 1.0
    model = quadrotor(device, [f_plus, f_minus, f_plus, f_minus])
    sim, states = run(model)
    torque = RATIO * (2.0 * f_plus - 2.0 * f_minus)
    inertia = np.asarray(model.defaults["body_inertia"][0], dtype=np.float64)
    assert inertia[1, 0] == inertia[1, 2] == 0.0  # y is a principal axis: a pure yaw stays one
    time = np.arange(21) * 10 * 1e-3
    omega = states["body_w"][:, 0].astype(np.float64)
    np.testing.assert_allclose(omega[:, 1], torque / inertia[1, 1] * time, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(omega[:, [0, 2]], 0.0, atol=1e-6)
    np.testing.assert_allclose(states["body_q"][:, 0], [[0.0, 1.0, 0.0]] * 21, atol=1e-6)
    yaw = Rotation.from_quat(states["body_r"][-1, 0]).as_rotvec()
    # the yaw angle of a constant angular acceleration (semi-implicit Euler: within one step of 1/2 a t^2)
    np.testing.assert_allclose(yaw[1], 0.5 * torque / inertia[1, 1] * time[-1] ** 2, rtol=5e-3)


def test_differential_thrust_gives_the_lever_arm_torque_in_the_world_frame(device):
    """A rotated body with a tilted rotor axis: force f R a and torque (R p) x F + spin ratio f R a,
    exactly, at the first step; the pitch it starts is that torque over the inertia."""
    thrust = [9.0, 7.0, 5.0, 7.0]
    axis = np.array([0.2, 1.0, -0.1]) / np.linalg.norm([0.2, 1.0, -0.1])
    rotation = Rotation.from_euler("xyz", [0.3, -0.5, 0.2])
    model = quadrotor(device, thrust, rotation=rotation.as_quat(), axis=axis)
    sim, _ = run(model, frames=2, substeps=1)
    force, torque = first_step_wrench(sim)
    matrix = rotation.as_matrix()
    expected_force, expected_torque = np.zeros(3), np.zeros(3)
    for (position, spin), f in zip(PLUS, thrust):
        world_axis = matrix @ axis
        expected_force += f * world_axis
        expected_torque += np.cross(matrix @ np.asarray(position), f * world_axis) + spin * RATIO * f * world_axis
    np.testing.assert_allclose(force, expected_force, rtol=1e-6)
    np.testing.assert_allclose(torque, expected_torque, rtol=1e-5, atol=1e-6)

    # level body, no reaction torque: 4 N more at +x than at -x pitches it about +z at ARM * 4 N / I_zz
    model = quadrotor(device, [9.0, 7.0, 5.0, 7.0], torque_ratio=0.0, gravity=(0.0, 0.0, 0.0))
    sim, states = run(model, frames=2, substeps=10)
    force, torque = first_step_wrench(sim)
    np.testing.assert_allclose(torque, [0.0, 0.0, ARM * 4.0], rtol=1e-6, atol=1e-7)
    inertia = np.asarray(model.defaults["body_inertia"][0], dtype=np.float64)
    np.testing.assert_allclose(states["body_w"][1, 0], [0.0, 0.0, ARM * 4.0 / inertia[2, 2] * 0.01], rtol=1e-3,
                               atol=1e-6)


def test_thrust_is_clamped_to_zero_and_max_thrust(device):
    model = quadrotor(device, [35.0, -4.0, 12.0, 0.0], max_thrust=20.0, torque_ratio=0.0, gravity=(0.0, 0.0, 0.0))
    sim, _ = run(model, frames=2, substeps=1)
    force, torque = first_step_wrench(sim)
    np.testing.assert_allclose(force, [0.0, 20.0 + 12.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(torque, [0.0, 0.0, ARM * (20.0 - 12.0)], rtol=1e-6)
    # no gradient where the clamp holds the thrust
    thrust = sim.default("control_rotor_thrust").requires_grad_(True)
    sim.rollout({"control_rotor_thrust": thrust}).sum().backward()
    assert thrust.grad[0, 0] == 0.0 and thrust.grad[0, 1] == 0.0 and thrust.grad[0, 2] != 0.0


def test_schedules_per_interval_act_on_their_interval_and_come_through_control(device):
    hover = MASS * G / 4.0
    schedule = [hover, hover + 3.0, hover]  # one extra newton per rotor on the second interval only
    model = quadrotor(device, [schedule] * 4)
    sim, states = run(model, frames=4)
    np.testing.assert_allclose(states["body_v"][1, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(states["body_v"][2, 0], [0.0, 12.0 / MASS * 0.01, 0.0], rtol=1e-4)
    np.testing.assert_allclose(states["body_v"][3, 0], states["body_v"][2, 0], rtol=1e-5)
    # the same schedule given as a Control on a model with constant thrust
    constant = Simulation(quadrotor(device, [hover] * 4), 1e-3, 10, 4)
    with torch.no_grad():
        vertices = constant.rollout(control=Control(rotor_thrust=torch.tensor([schedule] * 4).T))
    np.testing.assert_allclose(vertices.numpy(), sim.rollout().detach().numpy(), atol=1e-6)
    with pytest.raises(ParameterError, match=r"'control_rotor_thrust' has 3 row\(s\).*sim.frames - 1 = 5"):
        Simulation(model, 1e-3, 10, 6)


def projection(sim, seed=0):
    """A fixed random projection of every vertex of every frame (float64 accumulation)."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn((sim.frames, sim.model.vertex_count, 3), generator=generator, dtype=torch.float64)
    return lambda params: (sim.rollout(params).double() * weights).sum()


def flight(device):
    """100 steps of a tilted quadrotor under random thrusts around hover."""
    rng = np.random.default_rng(4)
    schedules = (MASS * G / 4.0 + rng.uniform(-0.5, 0.5, size=(4, 10))).tolist()
    model = quadrotor(device, schedules, rotation=Rotation.from_euler("xyz", [0.1, 0.3, -0.2]).as_quat())
    return Simulation(model, 2e-3, 10, 11)


@pytest.mark.parametrize("name", ["mass", "thrust"])
def test_gradients_match_central_differences(device, name):
    """d loss / d mass and d loss / d one thrust value (interval 3, rotor 1) through 100 steps of flight,
    against central differences at a fixed step."""
    sim = flight(device)
    loss = projection(sim)
    thrust0 = sim.default("control_rotor_thrust").numpy().astype(np.float64)

    def params(x):
        if name == "mass":
            return {"mass": torch.tensor(x, dtype=torch.float32)}
        full = thrust0.copy()
        full[3, 1] = x
        return {"control_rotor_thrust": torch.tensor(full, dtype=torch.float32)}

    x0, h = (MASS, 1e-2) if name == "mass" else (float(thrust0[3, 1]), 5e-2)
    variable = torch.tensor(x0 if name == "mass" else thrust0, dtype=torch.float32, requires_grad=True)
    loss({"mass" if name == "mass" else "control_rotor_thrust": variable}).backward()
    adjoint = float(variable.grad) if name == "mass" else float(variable.grad[3, 1])
    with torch.no_grad():
        difference = float(central_difference(lambda x: float(loss(params(float(x)))), x0, h))
    assert abs(adjoint) > 1e-3
    assert abs(adjoint - difference) <= 1e-2 * abs(difference), (adjoint, difference)


def test_gradcheck_of_the_whole_schedule_and_the_mass(device):
    """The project's check (random probe direction, step ladder): every thrust value at once."""
    for row in gradcheck(flight(device), ["control_rotor_thrust", "mass"], eps=1e-2, seed=1):
        assert row.relative_error < 1e-2 and abs(row.adjoint) > 0, row


# -- configs ------------------------------------------------------------------------------------------
def scene(rotors, frames=11):
    return {"sim": {"dt": 0.001, "substeps": 10, "frames": frames}, "ground": {"enabled": False},
            "bodies": [{"shape": {"type": "box", "size": [0.5, 0.1, 0.5]}, "mass": 3.0, "rotors": rotors}]}


def test_rotor_configs_build_and_their_errors_name_the_field(device):
    from wsim.scene import build_scene

    rotors = [{"position": [0.25, 0.0, 0.0], "axis": [0.0, 2.0, 0.0], "spin": -1, "thrust": 5.0},
              {"position": [-0.25, 0.0, 0.0], "thrust": [float(k) for k in range(10)], "max_thrust": 8.0}]
    built = build_scene(from_dict(SceneConfig, scene(rotors)), device)
    model, sim = built.model, built.simulation
    assert model.rotor_count == 2
    np.testing.assert_allclose(model.rotor_axis.numpy(), [[0.0, 1.0, 0.0]] * 2)  # normalised
    np.testing.assert_allclose(model.rotor_spin.numpy(), [-1.0, 1.0])
    np.testing.assert_allclose(model.rotor_torque_ratio.numpy(), [0.016, 0.016])
    np.testing.assert_allclose(sim.default("control_rotor_thrust").numpy(),
                               np.column_stack([np.full(10, 5.0), np.arange(10.0)]))

    with pytest.raises(ConfigError, match=r"bodies\.0\.rotors\.0\.axis: the rotor axis must be a non-zero vector"):
        from_dict(SceneConfig, scene([{"axis": [0.0, 0.0, 0.0]}]))
    with pytest.raises(ConfigError, match=r"bodies\.0\.rotors\.1\.thrust has 4 values; give one number or one "
                                          r"value per frame interval: sim.frames - 1 = 10"):
        from_dict(SceneConfig, scene([{"thrust": 1.0}, {"thrust": [1.0, 2.0, 3.0, 4.0]}]))
    with pytest.raises(ConfigError, match=r"bodies\.0\.rotors\.0\.spin' must be one of 1 or -1, got 2"):
        from_dict(SceneConfig, scene([{"spin": 2}]))
    with pytest.raises(ConfigError, match=r"bodies\.0\.rotors\.0\.max_thrust' must lie in \(0, inf\)"):
        from_dict(SceneConfig, scene([{"max_thrust": 0.0}]))
    with pytest.raises(ConfigError, match=r"bodies\.0\.rotors\.0\.torque_ratio' must lie in \[0, inf\)"):
        from_dict(SceneConfig, scene([{"torque_ratio": -0.1}]))
    builder = ModelBuilder()
    builder.add_body(primitive("box", 0.1), density=1.0)
    with pytest.raises(ParameterError, match="rotor 0: axis must be a non-zero vector"):
        builder.add_rotor(0, axis=(0.0, 0.0, 0.0))
    with pytest.raises(ParameterError, match="rotor 0: body must be a body index in \\[0, 0\\], got 1"):
        builder.add_rotor(1)


def test_randomized_thrust_schedules_are_seeded_and_reach_risp_training_states(tmp_path):
    from wsim.risp.data import Rollouts
    from wsim.sysid.config import load_experiment
    from wsim.sysid.randomize import randomized_scene

    config = load_experiment("risp-quadrotor")
    low, high = config.randomize.rotor_thrust_low, config.randomize.rotor_thrust_high
    draws = [randomized_scene(config, np.random.default_rng([seed, 0]), tmp_path).bodies[0].rotors
             for seed in (0, 0, 1)]
    schedules = [np.array([rotor.thrust for rotor in rotors]) for rotors in draws]
    assert schedules[0].shape == (4, config.scene.sim.frames - 1)
    assert low <= schedules[0].min() and schedules[0].max() <= high
    np.testing.assert_array_equal(schedules[0], schedules[1])
    assert not np.allclose(schedules[0], schedules[2])
    # RISP's training rollouts: each seed flies its own random actions
    rollouts = Rollouts(config, tmp_path / "instances")
    first, _ = rollouts.get(100000)
    thrust_a = first.sim.default("control_rotor_thrust")
    second, states = rollouts.get(100001)
    assert not torch.allclose(thrust_a, second.sim.default("control_rotor_thrust"))
    assert states.shape == (config.scene.sim.frames, 9) and "mass" in second.truth

    with pytest.raises(ConfigError, match="give both rotor_thrust_low and rotor_thrust_high"):
        load_experiment("risp-quadrotor", ["randomize.rotor_thrust_high=null"])
    with pytest.raises(ConfigError, match=r"scene.bodies.0.rotors, which has no rotors"):
        load_experiment("risp-cube", ["randomize.rotor_thrust_low=1.0", "randomize.rotor_thrust_high=2.0"])


def test_quadrotor_experiment_stays_in_view_around_hover(tmp_path):
    """Seed 0 of risp-quadrotor: every vertex of every frame inside the 48 px image; its random thrusts
    (24 intervals, 4 rotors) carry the true weight on average to within 1 N."""
    from wsim.sysid.config import load_experiment
    from wsim.sysid.instance import Instance

    instance = Instance(load_experiment("risp-quadrotor"), 0, tmp_path)
    pixels = instance.camera.project_to_pixels(instance.target_vertices, instance.size)[..., :2]
    assert float(pixels.min()) > 0.0 and float(pixels.max()) < 48.0
    assert float(instance.truth["mass"]) == 3.0
    thrust = instance.sim.default("control_rotor_thrust")
    assert thrust.shape == (24, 4) and abs(float(thrust.sum(1).mean()) - MASS * G) < 1.0
