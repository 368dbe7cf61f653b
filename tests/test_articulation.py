"""Articulated bodies (wsim.models.articulation): analytic pendulum periods, energy behaviour of the
semi-implicit integrator, joint springs and limits against hand computations, MuJoCo on the same models
with the same integrator, and adjoint gradients against central finite differences (all float64)."""

import math

import numpy as np
import pytest
import torch

from wsim.errors import ParameterError, SimulationError
from wsim.models.articulation import ArticulationBuilder, ArticulationRollout

G = 9.81


def _trajectory(articulation, dt, steps, params=None):
    """Joint positions and velocities of every step, ``[steps + 1, D]`` each, as float64 numpy."""
    rollout = ArticulationRollout(articulation, dt, 1, steps + 1)
    with torch.no_grad():
        q, qd = rollout.rollout(params)
    return q.numpy().copy(), qd.numpy().copy(), rollout


def _zero_crossings(times, values):
    """Times where ``values`` changes sign, by linear interpolation between samples."""
    sign_change = np.nonzero(np.sign(values[:-1]) * np.sign(values[1:]) < 0)[0]
    return [times[i] - values[i] * (times[i + 1] - times[i]) / (values[i + 1] - values[i]) for i in sign_change]


def test_small_angle_periods_of_a_point_mass_and_a_rod_pendulum():
    length, amplitude, dt = 1.0, 1.0e-3, 2.0e-3
    builder = ArticulationBuilder()
    builder.add_link(-1, "revolute", axis=(0, 0, 1), mass=0.5, com=(0, -length, 0), q=amplitude)
    # uniform thin rod hanging from one end: inertia m L^2 / 12 about its centre
    rod_inertia = np.diag([1.0, 0.0, 1.0]) * 2.0 * length ** 2 / 12.0
    builder.add_link(-1, "revolute", axis=(0, 0, 1), mass=2.0, com=(0, -length / 2, 0), inertia=rod_inertia,
                     q=amplitude)
    q, _, _ = _trajectory(builder.finalize(), dt, 800)
    times = np.arange(len(q)) * dt
    analytic = {0: 2 * math.pi * math.sqrt(length / G), 1: 2 * math.pi * math.sqrt(2 * length / (3 * G))}
    for dof, period in analytic.items():
        # released from rest at its amplitude, the angle crosses zero at T/4 and 3T/4
        first, second = _zero_crossings(times, q[:, dof])[:2]
        measured = 2.0 * (second - first)
        # measured -1.6e-6 (point) and -2.4e-6 (rod): the phase error of symplectic Euler, O((w dt)^2)
        assert abs(measured - period) / period < 1.0e-3, (dof, measured, period)


def _double_pendulum(q=(1.2, -0.6), qd=(0.0, 0.0), damping=0.0):
    builder = ArticulationBuilder()
    inertia = np.diag([0.004, 0.002, 0.005])
    first = builder.add_link(-1, "revolute", axis=(0, 0, 1), mass=1.0, com=(0, -0.5, 0), inertia=inertia,
                             q=q[0], qd=qd[0], damping=damping)
    builder.add_link(first, "revolute", axis=(0, 0, 1), position=(0, -1.0, 0), mass=0.7, com=(0, -0.4, 0),
                     inertia=inertia, q=q[1], qd=qd[1], damping=damping)
    return builder.finalize()


def test_energy_error_of_an_undamped_double_pendulum_is_small_and_first_order():
    scale = (1.0 * 0.5 + 0.7 * 1.4) * G  # m g l of the two links: the size of the potential energy swings
    drifts = []
    for dt, steps in ((1.0e-3, 2000), (5.0e-4, 4000)):  # 2 s of chaotic motion through large swings
        _, _, rollout = _trajectory(_double_pendulum(), dt, steps)
        energy = rollout.energy()[:, 0]
        drifts.append(np.abs(energy - energy[0]).max() / scale)
    # measured 5.27e-3 and 2.61e-3 of m g l: semi-implicit Euler's energy error is O(dt) (a modified
    # energy is conserved), so halving dt halves it (ratio 2.02); a wrong force or mass matrix would
    # add an error that does not scale this way
    assert drifts[0] < 1.0e-2, drifts
    assert 1.8 < drifts[0] / drifts[1] < 2.2, drifts


def test_joint_damping_removes_energy():
    _, _, rollout = _trajectory(_double_pendulum(damping=0.05), 1.0e-3, 1000)
    energy = rollout.energy()[:, 0]
    assert energy[-1] < energy[0] - 0.05 * abs(energy[0])


def test_joint_spring_and_limit_penalties_match_hand_computations():
    mass, lever, stiffness, limit_ke = 1.0, 0.5, 100.0, 2.0e4
    inertia_pivot = mass * lever ** 2
    critical = 2.0 * math.sqrt(stiffness * inertia_pivot)
    builder = ArticulationBuilder()
    # a horizontal arm on a spring (hinge about z): k q + m g l cos q = 0 at rest
    builder.add_link(-1, "revolute", axis=(0, 0, 1), mass=mass, com=(lever, 0, 0), stiffness=stiffness,
                     damping=critical)
    # the same arm without spring, resting on a lower limit at 0: ke (0 - q) = m g l cos q
    builder.add_link(-1, "revolute", axis=(0, 0, 1), mass=mass, com=(lever, 0, 0), limit_lower=0.0,
                     limit_ke=limit_ke, damping=2.0 * math.sqrt(limit_ke * inertia_pivot))
    # a welded body between them: an articulation without degrees of freedom changes no dof numbering
    builder.add_link(-1, "fixed", position=(1, 0, 0), mass=mass)
    # a slider on a vertical axis resting on its lower limit: ke (0 - q) = m g
    builder.add_link(-1, "prismatic", axis=(0, 1, 0), mass=mass, limit_lower=0.0, limit_ke=limit_ke,
                     damping=2.0 * math.sqrt(limit_ke * mass))
    q, qd, _ = _trajectory(builder.finalize(), 1.0e-3, 1500)

    def rest_angle(k):
        angle = -mass * G * lever / k  # the small-angle answer, refined by Newton on k q + m g l cos q
        for _ in range(20):
            angle -= (k * angle + mass * G * lever * math.cos(angle)) / (k - mass * G * lever * math.sin(angle))
        return angle

    # the small-angle hand value m g l / k = 0.04905 rad is 5.9e-5 rad from the exact rest angle (cos q ~ 1 - 1.2e-3)
    assert abs(rest_angle(stiffness) + mass * G * lever / stiffness) < 1.0e-4
    expected = [rest_angle(stiffness), rest_angle(limit_ke), -mass * G / limit_ke]
    # critically damped, after 1.5 s: measured relative deviations 1.3e-11 (spring), 4e-16 and 9e-16 (limits)
    np.testing.assert_allclose(q[-1], expected, rtol=1.0e-6, atol=1.0e-10)
    assert np.abs(qd[-1]).max() < 1.0e-6


MUJOCO_DOUBLE_PENDULUM = """
<mujoco>
  <option timestep="{dt}" integrator="Euler" gravity="0 -9.81 0"/>
  <worldbody>
    <body pos="0 0 0">
      <joint type="hinge" axis="0 0 1" armature="{armature}"/>
      <inertial pos="0 -0.5 0" mass="1.0" diaginertia="0.004 0.002 0.005"/>
      <body pos="0 -1 0">
        <joint type="hinge" axis="0 0 1" armature="{armature}"/>
        <inertial pos="0 -0.4 0" mass="0.7" diaginertia="0.004 0.002 0.005"/>
      </body>
    </body>
  </worldbody>
</mujoco>
"""

# a spatial chain: hinges about three axes (one tilted, one in a rotated joint frame), a slider with a
# spring, a fixed link, off-diagonal inertia and armature
MUJOCO_CHAIN = """
<mujoco>
  <option timestep="{dt}" integrator="Euler" gravity="0 -9.81 0"/>
  <worldbody>
    <body pos="0.1 0.2 0">
      <joint type="hinge" axis="0 0 1" armature="0.01"/>
      <inertial pos="0.05 -0.3 0" mass="1.2" fullinertia="0.03 0.025 0.04 0.002 0.001 -0.003"/>
      <body pos="0 -0.6 0" quat="0.9238795 0 0.3826834 0">
        <joint type="hinge" axis="1 0 0"/>
        <inertial pos="0 -0.25 0.05" mass="0.8" diaginertia="0.01 0.005 0.012"/>
        <body pos="0 -0.5 0">
          <joint type="slide" axis="0 1 0" stiffness="40" springref="0.05"/>
          <inertial pos="0 -0.1 0" mass="0.5" diaginertia="0.002 0.002 0.002"/>
          <body pos="0.1 -0.2 0">
            <inertial pos="0.05 0 0" mass="0.3" diaginertia="0.001 0.001 0.001"/>
            <body pos="0.1 0 0">
              <joint type="hinge" axis="0.6 0 0.8" armature="0.005"/>
              <inertial pos="0 -0.15 0" mass="0.4" diaginertia="0.003 0.001 0.003"/>
            </body>
          </body>
        </body>
      </body>
    </body>
  </worldbody>
</mujoco>
"""


def _chain():
    builder = ArticulationBuilder()
    first = builder.add_link(-1, "revolute", axis=(0, 0, 1), position=(0.1, 0.2, 0), mass=1.2, com=(0.05, -0.3, 0),
                             inertia=[[0.03, 0.002, 0.001], [0.002, 0.025, -0.003], [0.001, -0.003, 0.04]],
                             armature=0.01, q=0.7, qd=0.5)
    # MuJoCo writes quaternions (w, x, y, z), wsim (x, y, z, w)
    second = builder.add_link(first, "revolute", axis=(1, 0, 0), position=(0, -0.6, 0),
                              rotation=(0, 0.3826834, 0, 0.9238795), mass=0.8, com=(0, -0.25, 0.05),
                              inertia=np.diag([0.01, 0.005, 0.012]), q=-0.4, qd=1.0)
    third = builder.add_link(second, "prismatic", axis=(0, 1, 0), position=(0, -0.5, 0), mass=0.5, com=(0, -0.1, 0),
                             inertia=np.eye(3) * 0.002, stiffness=40.0, target=0.05, q=0.1, qd=-0.2)
    fixed = builder.add_link(third, "fixed", position=(0.1, -0.2, 0), mass=0.3, com=(0.05, 0, 0),
                             inertia=np.eye(3) * 0.001)
    builder.add_link(fixed, "revolute", axis=(0.6, 0, 0.8), position=(0.1, 0, 0), mass=0.4, com=(0, -0.15, 0),
                     inertia=np.diag([0.003, 0.001, 0.003]), armature=0.005, q=0.3, qd=-0.7)
    return builder.finalize()


def _mujoco_trajectory(xml, q0, qd0, dt, steps):
    mujoco = pytest.importorskip("mujoco", reason="needs MuJoCo, the independent reference: pip install 'wsim[robots]'")
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    data.qpos[:] = q0
    data.qvel[:] = qd0
    q = [data.qpos.copy()]
    for _ in range(steps):
        mujoco.mj_step(model, data)
        q.append(data.qpos.copy())
    return np.array(q)


@pytest.mark.parametrize("armature", [0.0, 0.02])
def test_double_pendulum_matches_mujoco(armature):
    dt, steps = 1.0e-3, 500
    q0, qd0 = (1.2, -0.6), (0.3, -0.5)
    articulation = _double_pendulum(q0, qd0)
    params = {"joint_armature": torch.full((2,), armature, dtype=torch.float64)}
    q, _, _ = _trajectory(articulation, dt, steps, params)
    reference = _mujoco_trajectory(MUJOCO_DOUBLE_PENDULUM.format(dt=dt, armature=armature), q0, qd0, dt, steps)
    # same model, same semi-implicit Euler, both float64: the difference is round-off, measured 2.2e-15
    # (no armature) and 5.6e-16 rad over 0.5 s of swings of 1.1 and 1.5 rad; the motion is chaotic, so
    # round-off would grow over longer horizons, hence the margin
    assert np.abs(q - reference).max() < 1.0e-10


def test_spatial_chain_matches_mujoco():
    dt, steps = 1.0e-3, 500
    articulation = _chain()
    q, _, _ = _trajectory(articulation, dt, steps)
    defaults = articulation.defaults
    reference = _mujoco_trajectory(MUJOCO_CHAIN.format(dt=dt), defaults["joint_q"], defaults["joint_qd"], dt, steps)
    # measured 2.5e-16 over 0.5 s with the joints moving 0.17 .. 0.67 (rad or m): the same equations to
    # round-off, including the rotated joint frame, the fixed link, the spring and the armature
    assert np.abs(q - reference).max() < 1.0e-10
    assert (q.max(axis=0) - q.min(axis=0)).min() > 0.1


def _gradient_model():
    builder = ArticulationBuilder()
    inertia = np.diag([0.01, 0.02, 0.015])
    first = builder.add_link(-1, "revolute", axis=(0, 0, 1), mass=1.0, com=(0, -0.5, 0), inertia=inertia, q=0.4,
                             qd=0.3, damping=0.05)
    second = builder.add_link(first, "revolute", axis=(1, 0, 1), position=(0, -1, 0), mass=0.7, com=(0.1, -0.4, 0),
                              inertia=inertia, q=-0.3, damping=0.02, stiffness=2.0, limit_upper=-0.25,
                              limit_ke=100.0)
    builder.add_link(second, "prismatic", axis=(0, 1, 0), position=(0, -0.8, 0), mass=0.3, com=(0, -0.1, 0),
                     inertia=inertia * 0.5, q=0.05, stiffness=30.0, damping=0.1)
    return builder.finalize()


def test_adjoint_gradients_match_central_differences():
    rollout = ArticulationRollout(_gradient_model(), 2.0e-3, 10, 21)
    generator = torch.Generator().manual_seed(0)
    weights_q = torch.randn(3, generator=generator, dtype=torch.float64)
    weights_qd = torch.randn(3, generator=generator, dtype=torch.float64)

    def loss(params):
        q, qd = rollout.rollout(params)
        return (q[-1] * weights_q).sum() + (qd[-1] * weights_qd).sum()

    names = ["link_mass", "joint_damping", "joint_qd", "link_inertia", "link_com", "joint_stiffness",
             "joint_limit_ke", "joint_limit_upper", "joint_target", "joint_armature", "gravity", "joint_torque",
             "joint_q"]
    for name in names:
        base = rollout.default(name)
        variable = base.clone().requires_grad_(True)
        loss({name: variable}).backward()
        direction = torch.randn(base.shape, generator=generator, dtype=torch.float64)
        direction /= direction.norm()
        adjoint = float((variable.grad * direction).sum())
        step = 1.0e-6
        with torch.no_grad():
            plus, minus = loss({name: base + step * direction}), loss({name: base - step * direction})
            difference = float(plus - minus) / (2 * step)
        # float64 throughout; measured relative errors 5e-11 (limit_upper) .. 1.1e-9 (gravity) .. 8.2e-8
        # (torque, derivative 1.3e-2) .. 8.9e-7 (limit_ke, derivative 2e-3, i.e. 1.8e-9 absolute). The floor
        # is the difference's own round-off: a loss of O(1) built from O(10) terms, known to ~1e-15, over
        # 2h = 2e-6 leaves ~1e-9 absolute
        assert abs(adjoint - difference) <= 1.0e-6 * abs(difference) + 1.0e-8, (name, adjoint, difference)


def test_the_limit_is_active_in_the_gradient_model():
    q, _, _ = _trajectory(_gradient_model(), 2.0e-3, 200)
    assert (q[:, 1] > -0.25).any()  # the second joint passes its upper limit, so the penalty is differentiated


def test_builder_rejects_links_out_of_depth_first_order():
    builder = ArticulationBuilder()
    root = builder.add_link(-1)
    first = builder.add_link(root)
    builder.add_link(first)  # a grandchild while its parent's subtree is open: allowed
    builder.add_link(root)  # a sibling closes the subtree of the first child
    with pytest.raises(ParameterError, match="depth-first"):
        builder.add_link(first)
    fixed_root = builder.add_link(-1, "fixed")  # a second articulation without degrees of freedom, then a third
    builder.add_link(fixed_root, "fixed")
    builder.add_link(-1, "prismatic")
    articulation = builder.finalize()
    assert articulation.articulation_link_start.numpy().tolist() == [0, 4, 6, 7]
    assert articulation.articulation_dof_start.numpy().tolist() == [0, 4, 4, 5]
    assert articulation.link_subtree_end.numpy().tolist() == [4, 3, 3, 4, 6, 6, 7]


def test_torch_jacobian_of_the_final_state_matches_central_differences():
    """The rollout as a torch operation: every row of d(final q, qd) / d(initial qd, torques) from a
    backward pass against central differences of the whole rollout."""
    rollout = ArticulationRollout(_double_pendulum((0.8, -0.3)), 2.0e-3, 5, 5)
    base = {"joint_qd": rollout.default("joint_qd") + 0.2, "joint_torque": torch.full((4, 2), 0.1, dtype=torch.float64)}

    def final_state(params):
        q, qd = rollout.rollout(params)
        return torch.cat([q[-1], qd[-1]])

    sizes = [base[name].numel() for name in base]
    adjoint = []
    for row in range(4):
        variables = {name: value.clone().requires_grad_(True) for name, value in base.items()}
        final_state(variables)[row].backward()
        adjoint.append(torch.cat([variables[name].grad.reshape(-1) for name in base]))
    adjoint = torch.stack(adjoint)

    step = 1.0e-6
    columns = []
    for name, size in zip(base, sizes):
        for index in range(size):
            shift = torch.zeros(size, dtype=torch.float64)
            shift[index] = step
            shift = shift.reshape(base[name].shape)
            with torch.no_grad():
                plus = final_state({**base, name: base[name] + shift})
                minus = final_state({**base, name: base[name] - shift})
            columns.append((plus - minus) / (2 * step))
    finite = torch.stack(columns, dim=1)
    # measured max |adjoint - fd| 2.5e-9 against entries up to 1.04; the absolute floor is the differences'
    # round-off (O(1) states to ~1e-16 over 2h = 2e-6)
    assert torch.allclose(adjoint, finite, rtol=1e-6, atol=1e-8), (adjoint - finite).abs().max()
    assert finite.abs().max() > 1e-3


def test_parameters_are_checked_and_blow_ups_reported():
    rollout = ArticulationRollout(_double_pendulum(), 1.0e-3, 1, 3)
    with pytest.raises(ParameterError, match="unknown parameter"):
        rollout.rollout({"joint_mass": 1.0})
    with pytest.raises(ParameterError, match="expected"):
        rollout.rollout({"joint_qd": torch.zeros(3)})
    # a scalar broadcasts to every joint
    q, _ = rollout.rollout({"joint_damping": 0.1})
    assert q.shape == (3, 2) and q.dtype == torch.float64
    stiff = ArticulationRollout(_double_pendulum(), 1.0, 1, 40)
    with pytest.raises(SimulationError, match="physics step"):
        stiff.rollout({"joint_stiffness": 1.0e6})


def _rotation_matrix(quat_wxyz):
    w, x, y, z = quat_wxyz
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def _quat_wxyz_product(a, b):
    """Hamilton product of quaternions stored (w, x, y, z)."""
    w1, v1, w2, v2 = a[0], np.asarray(a[1:]), b[0], np.asarray(b[1:])
    return np.r_[w1 * w2 - v1 @ v2, w1 * v2 + w2 * v1 + np.cross(v1, v2)]


def test_a_free_joint_in_a_moved_frame_is_the_same_motion_in_world_coordinates():
    """A free joint moves its link in the joint frame (position, rotation): the same body in the world
    frame, started from the transformed coordinates, follows the transformed trajectory. Gravity is
    not along a frame axis, so a translation taken in the wrong frame would fall the wrong way."""
    frame_position, frame_wxyz = np.array([0.3, -0.2, 0.5]), np.array([0.8, 0.2, -0.4, 0.4])
    frame_wxyz = frame_wxyz / np.linalg.norm(frame_wxyz)
    rotation = _rotation_matrix(frame_wxyz)
    local = np.r_[0.1, 0.2, -0.3, np.array([0.9, -0.1, 0.3, 0.2]) / np.linalg.norm([0.9, -0.1, 0.3, 0.2])]
    velocity = np.array([0.4, -0.3, 0.2, 1.5, -2.0, 3.0])
    world = np.r_[frame_position + rotation @ local[:3], _quat_wxyz_product(frame_wxyz, local[3:])]
    world_velocity = np.r_[rotation @ velocity[:3], velocity[3:]]  # angular rates are in the link frame in both
    trajectories = []
    for position, quat, q, qd in (((0, 0, 0), (0, 0, 0, 1), world, world_velocity),
                                  (frame_position, np.roll(frame_wxyz, -1), local, velocity)):
        builder = ArticulationBuilder()
        root = builder.add_link(-1, "free", position=position, rotation=quat, mass=1.5, com=(0.1, 0.0, -0.2),
                                inertia=np.diag([0.02, 0.03, 0.04]), q=q, qd=qd)
        builder.add_link(root, "revolute", axis=(1, 0, 0), position=(0, 0, -0.4), mass=0.5, com=(0, 0, -0.2),
                         inertia=np.eye(3) * 0.002, q=0.5, qd=1.0)
        trajectories.append(_trajectory(builder.finalize(), 1.0e-3, 300))
    (q_world, qd_world, _), (q_local, qd_local, _) = trajectories
    mapped = np.array([np.r_[frame_position + rotation @ row[:3], _quat_wxyz_product(frame_wxyz, row[3:7]), row[7]]
                       for row in q_local])
    # measured 9.2e-16 (positions, quaternions, hinge angle) and 3.6e-15 (velocities) over 0.3 s
    assert np.abs(mapped - q_world).max() < 1.0e-12
    assert np.abs(np.c_[qd_local[:, :3] @ rotation.T, qd_local[:, 3:]] - qd_world).max() < 1.0e-12
    assert np.abs(q_world[-1, :3] - q_world[0, :3]).max() > 0.2  # moved 0.17, 0.35 and 0.10 m
