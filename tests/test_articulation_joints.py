"""Ball and free joints of wsim.models.articulation (quaternion coordinates, angular velocity in the child
frame): MuJoCo on the same models with the same semi-implicit Euler step, the analytic torque-free
precession of a symmetric top and the analytic free fall, conservation of momentum and energy, loading
MJCF files with ball and free joints, and adjoint gradients against central finite differences."""

import math

import numpy as np
import pytest
import torch
import warp as wp

from wsim.errors import ParameterError
from wsim.models.articulation import ArticulationBuilder, ArticulationRollout
from wsim.models.articulation_joints import integrate_quat, rotation_vector

mujoco = pytest.importorskip("mujoco", reason="needs MuJoCo, the independent reference: pip install 'wsim[robots]'")
from wsim.models.articulation_io import load_mjcf  # noqa: E402  (needs mujoco)

DT, STEPS = 1.0e-3, 500
FULL_INERTIA = [[0.03, 0.002, 0.001], [0.002, 0.025, -0.003], [0.001, -0.003, 0.04]]
FULL_INERTIA_MJCF = "0.03 0.025 0.04 0.002 0.001 -0.003"  # MuJoCo's fullinertia: xx yy zz xy xz yz


def _unit(values):
    values = np.asarray(values, dtype=np.float64)
    return values / np.linalg.norm(values)


def _matrix(quat_wxyz):
    """Rotation matrix of a unit quaternion (w, x, y, z)."""
    w, x, y, z = quat_wxyz
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def _axis_angle(axis, angle):
    """Rotation matrix of ``angle`` about the unit ``axis`` (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _rollout(articulation, dt, steps, params=None):
    rollout = ArticulationRollout(articulation, dt, 1, steps + 1)
    with torch.no_grad():
        q, qd = rollout.rollout(params)
    return q.numpy().copy(), qd.numpy().copy()


def _mujoco(model, q0, qd0, steps):
    """MuJoCo's qpos and qvel over ``steps`` Euler steps from (q0, qd0), damping explicit like wsim's."""
    model.opt.integrator, model.opt.timestep = mujoco.mjtIntegrator.mjINT_EULER, DT
    model.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_EULERDAMP)  # MuJoCo's Euler: damping explicit
    data = mujoco.MjData(model)
    data.qpos[:], data.qvel[:] = q0, qd0
    q, qd = [data.qpos.copy()], [data.qvel.copy()]
    for _ in range(steps):
        mujoco.mj_step(model, data)
        q.append(data.qpos.copy())
        qd.append(data.qvel.copy())
    return np.array(q), np.array(qd)


SPHERICAL_PENDULUM = """
<mujoco>
  <option timestep="0.001" gravity="0 0 -9.81"/>
  <worldbody>
    <body pos="0 0 1" quat="0.9238795 0.3826834 0 0">
      <joint type="ball" stiffness="{stiffness}" damping="{damping}"/>
      <inertial pos="0.1 0.05 -0.6" mass="1.3" fullinertia="{inertia}"/>
    </body>
  </worldbody>
</mujoco>
"""


@pytest.mark.parametrize("stiffness, damping", [(0.0, 0.0), (3.0, 0.2)])
def test_spinning_spherical_pendulum_matches_mujoco(stiffness, damping):
    builder = ArticulationBuilder(gravity=(0, 0, -9.81))
    q0 = _unit([0.9, 0.3, -0.2, 0.25])
    # tilted, swinging and spinning fast (6 rad/s) about the link's long axis z
    builder.add_link(-1, "ball", position=(0, 0, 1), rotation=(0.3826834, 0, 0, 0.9238795), mass=1.3,
                     com=(0.1, 0.05, -0.6), inertia=FULL_INERTIA, q=q0, qd=(0.8, -0.5, 6.0), stiffness=stiffness,
                     damping=damping)
    articulation = builder.finalize()
    assert (articulation.coord_count, articulation.dof_count) == (4, 3)
    q, qd = _rollout(articulation, DT, STEPS)
    xml = SPHERICAL_PENDULUM.format(stiffness=stiffness, damping=damping, inertia=FULL_INERTIA_MJCF)
    reference, reference_qd = _mujoco(mujoco.MjModel.from_xml_string(xml), q0, (0.8, -0.5, 6.0), STEPS)
    error = np.abs(q - reference).max()
    # measured 8.9e-16 and 1.1e-15 (qd: 3.7e-15, 1.6e-14 rad/s) over 0.5 s, quaternion components moving
    # 0.15 .. 1.2: the same equations to round-off, spring on the rotation vector and damping included
    assert error < 1.0e-10, error
    assert np.abs(qd - reference_qd).max() < 1.0e-9
    assert np.ptp(q, axis=0).min() > 0.1  # every quaternion component moves
    assert np.abs(np.linalg.norm(q, axis=1) - 1).max() < 1.0e-14  # kept unit length


def _symmetric_top(dt, com=(0.1, -0.05, 0.2), gravity=(0.0, 0.0, 0.0), spin=(1.0, 0.5, 6.0)):
    builder = ArticulationBuilder(gravity=gravity)
    q0 = np.r_[0.2, -0.1, 0.5, _unit([0.8, 0.2, -0.4, 0.3])]
    builder.add_link(-1, "free", mass=2.0, com=com, inertia=np.diag([0.03, 0.03, 0.05]), q=q0,
                     qd=np.r_[(0.3, -0.2, 0.1), spin])
    return builder.finalize()


def test_torque_free_symmetric_top_precesses_as_the_analytic_solution():
    """A free axisymmetric body without gravity (centre of mass off the link origin, so translation and
    rotation couple in the coordinates): body-frame angular velocity turning about the symmetry axis at
    (I3 - I1) / I1 w3, the symmetry axis precessing about the fixed angular momentum at |L| / I1, the centre
    of mass on a straight line, momentum and energy conserved up to the integrator's O(dt) error."""
    mass, i1, i3, com = 2.0, 0.03, 0.05, np.array([0.1, -0.05, 0.2])
    errors = {}
    for dt in (1.0e-3, 5.0e-4):
        steps = round(0.5 / dt)
        articulation = _symmetric_top(dt)
        q, qd = _rollout(articulation, dt, steps)
        t = np.arange(steps + 1) * dt
        rate = qd[:, 3:]
        omega = (i3 - i1) / i1 * rate[0, 2]
        turning = (rate[0, 0] + 1j * rate[0, 1]) * np.exp(1j * omega * t)
        rotations = np.array([_matrix(quat) for quat in q[:, 3:]])
        world_rate = np.einsum("nij,nj->ni", rotations, rate)
        centre = q[:, :3] + rotations @ com
        centre_velocity = qd[:, :3] + np.cross(world_rate, rotations @ com)
        inertia_world = rotations @ np.diag([i1, i1, i3]) @ rotations.transpose(0, 2, 1)
        momentum = mass * np.cross(centre, centre_velocity) + np.einsum("nij,nj->ni", inertia_world, world_rate)
        energy = 0.5 * mass * (centre_velocity ** 2).sum(1) + 0.5 * (rate * (rate @ np.diag([i1, i1, i3]))).sum(1)
        spin_momentum = inertia_world[0] @ world_rate[0]  # about the centre of mass
        precession = np.array([_axis_angle(_unit(spin_momentum), np.linalg.norm(spin_momentum) / i1 * s)
                               @ rotations[0][:, 2] for s in t])
        errors[dt] = {
            "w3": np.abs(rate[:, 2] - rate[0, 2]).max(),  # exactly constant for a symmetric body
            "body rate": np.abs(rate[:, 0] + 1j * rate[:, 1] - turning).max(),
            "axis": np.abs(rotations[:, :, 2] - precession).max(),
            "centre": np.abs(centre - (centre[0] + t[:, None] * centre_velocity[0])).max(),
            "momentum": np.abs(momentum - momentum[0]).max() / np.linalg.norm(momentum[0]),
            "energy": np.abs(energy - energy[0]).max() / energy[0],
        }
        # the reference for this very model: MuJoCo's Euler step
        if dt == DT:
            reference, _ = _mujoco(mujoco.MjModel.from_xml_string(FREE_BODY.format(gravity="0 0 0")),
                                   articulation.defaults["joint_q"], articulation.defaults["joint_qd"], steps)
            errors[dt]["mujoco"] = np.abs(q - reference).max()
    coarse, fine = errors[1.0e-3], errors[5.0e-4]
    # measured 7.8e-16 against MuJoCo over 0.5 s (the body turns 1.6 rad about its axis, precesses 0.9 rad)
    assert coarse["mujoco"] < 1.0e-10
    # I1 = I2 makes the Euler update of w3 exactly zero, measured 0.0
    assert coarse["w3"] < 1.0e-12
    # measured at dt = 1e-3 (and ratios to dt = 5e-4): body rate 4.5e-3 rad/s of 1.1 (2.00), axis 6.3e-4
    # (2.00), centre 7.9e-4 m (2.00), momentum 7.5e-3 relative (2.00), energy 2.9e-3 relative (2.01)
    for name, bound in (("body rate", 1e-2), ("axis", 2e-3), ("centre", 2e-3), ("momentum", 1.5e-2),
                        ("energy", 6e-3)):
        assert coarse[name] < bound, (name, coarse[name])
        # first order: halving dt halves the error, which a wrong bias force or frame would not do
        assert 1.7 < coarse[name] / fine[name] < 2.3, (name, coarse[name], fine[name])


FREE_BODY = """
<mujoco>
  <option timestep="0.001" gravity="{gravity}"/>
  <worldbody>
    <body>
      <freejoint/>
      <inertial pos="0.1 -0.05 0.2" mass="2" diaginertia="0.03 0.03 0.05"/>
    </body>
  </worldbody>
</mujoco>
"""


def test_free_fall_follows_the_discrete_and_the_analytic_parabola():
    """A spinning free body with its centre of mass at the link origin: its translation decouples from the
    rotation, so the origin follows semi-implicit Euler's parabola exactly, p_n = p_0 + n dt v_0 +
    g dt^2 n (n + 1) / 2, which lies g dt t / 2 from the analytic one; the spin stays torque-free."""
    gravity = np.array([0.0, 0.0, -9.81])
    articulation = _symmetric_top(DT, com=(0.0, 0.0, 0.0), gravity=gravity)
    q, qd = _rollout(articulation, DT, STEPS)
    p0, v0 = q[0, :3], qd[0, :3]
    n = np.arange(STEPS + 1)[:, None]
    t = n * DT
    discrete = p0 + n * DT * v0 + gravity * DT ** 2 * n * (n + 1) / 2
    analytic = p0 + v0 * t + 0.5 * gravity * t ** 2
    # measured 6.7e-15 m and 2.8e-14 m/s: the Cholesky solve's round-off in qdd = g, summed over 500 steps
    assert np.abs(q[:, :3] - discrete).max() < 1.0e-12
    assert np.abs(qd[:, :3] - (v0 + gravity * t)).max() < 1.0e-12
    np.testing.assert_allclose(np.linalg.norm(analytic - q[:, :3], axis=1), 9.81 * DT * t[:, 0] / 2, atol=1e-12)
    assert np.abs(q[-1, :3] - p0).max() > 1.0  # it moved 0.15, 0.1 and 1.18 m
    free, _ = _rollout(_symmetric_top(DT, com=(0.0, 0.0, 0.0)), DT, STEPS)
    assert np.abs(q[:, 3:] - free[:, 3:]).max() < 1.0e-12  # the rotation ignores gravity: measured 2.2e-16
    model = mujoco.MjModel.from_xml_string(FREE_BODY.replace("0.1 -0.05 0.2", "0 0 0").format(gravity="0 0 -9.81"))
    reference, _ = _mujoco(model, articulation.defaults["joint_q"], articulation.defaults["joint_qd"], STEPS)
    assert np.abs(q - reference).max() < 1.0e-10  # measured 7.8e-16


# hinge, ball (sprung, damped, in a rotated frame) and hinge, then a slide on a welded link
MIXED_CHAIN = """
<mujoco>
  <option timestep="0.001" gravity="0 -9.81 0"/>
  <worldbody>
    <body pos="0.1 0.2 0">
      <joint type="hinge" axis="0 0 1" armature="0.01"/>
      <inertial pos="0.05 -0.3 0" mass="1.2" fullinertia="{inertia}"/>
      <body pos="0 -0.6 0" quat="0.9238795 0 0.3826834 0">
        <joint type="ball" stiffness="1.5" damping="0.05" armature="0.002"/>
        <inertial pos="0 -0.25 0.05" mass="0.8" diaginertia="0.01 0.005 0.012"/>
        <body pos="0 -0.5 0">
          <joint type="hinge" axis="0.6 0 0.8"/>
          <inertial pos="0 -0.15 0" mass="0.4" diaginertia="0.003 0.001 0.003"/>
          <body pos="0.1 -0.2 0">
            <inertial pos="0.05 0 0" mass="0.3" diaginertia="0.001 0.001 0.001"/>
            <body pos="0.1 0 0">
              <joint type="slide" axis="0 1 0" stiffness="40"/>
              <inertial pos="0 -0.1 0" mass="0.5" diaginertia="0.002 0.002 0.002"/>
            </body>
          </body>
        </body>
      </body>
    </body>
  </worldbody>
</mujoco>
"""


def _mixed_chain():
    builder = ArticulationBuilder()
    first = builder.add_link(-1, "revolute", axis=(0, 0, 1), position=(0.1, 0.2, 0), mass=1.2, com=(0.05, -0.3, 0),
                             inertia=FULL_INERTIA, armature=0.01, q=0.7, qd=0.5)
    ball = builder.add_link(first, "ball", position=(0, -0.6, 0), rotation=(0, 0.3826834, 0, 0.9238795), mass=0.8,
                            com=(0, -0.25, 0.05), inertia=np.diag([0.01, 0.005, 0.012]), stiffness=1.5,
                            damping=0.05, armature=0.002, q=_unit([0.9, -0.2, 0.3, 0.1]), qd=(1.5, -2.0, 0.7))
    hinge = builder.add_link(ball, "revolute", axis=(0.6, 0, 0.8), position=(0, -0.5, 0), mass=0.4,
                             com=(0, -0.15, 0), inertia=np.diag([0.003, 0.001, 0.003]), q=0.3, qd=-0.7)
    fixed = builder.add_link(hinge, "fixed", position=(0.1, -0.2, 0), mass=0.3, com=(0.05, 0, 0),
                             inertia=np.eye(3) * 0.001)
    builder.add_link(fixed, "prismatic", axis=(0, 1, 0), position=(0.1, 0, 0), mass=0.5, com=(0, -0.1, 0),
                     inertia=np.eye(3) * 0.002, stiffness=40.0, q=0.05, qd=0.1)
    return builder.finalize()


def test_chain_mixing_ball_and_hinge_joints_matches_mujoco():
    articulation = _mixed_chain()
    assert (articulation.coord_count, articulation.dof_count) == (7, 6)
    q, qd = _rollout(articulation, DT, STEPS)
    defaults = articulation.defaults
    model = mujoco.MjModel.from_xml_string(MIXED_CHAIN.format(inertia=FULL_INERTIA_MJCF))
    reference, reference_qd = _mujoco(model, defaults["joint_q"], defaults["joint_qd"], STEPS)
    # measured 1.2e-15 (qd 2.2e-14) over 0.5 s with the coordinates moving 0.07 .. 0.63
    assert np.abs(q - reference).max() < 1.0e-10
    assert np.abs(qd - reference_qd).max() < 1.0e-9
    assert np.ptp(q, axis=0).min() > 0.05


# a floating torso (free joint, damped) with an arm on a ball joint off its body origin (sprung, damped,
# with a 60 degree cone limit it never reaches) and a hinge with a reference angle; MuJoCo's damping made explicit
FLOATING_MJCF = """
<mujoco model="floating">
  <option timestep="0.001" integrator="Euler">
    <flag eulerdamp="disable"/>
  </option>
  <worldbody>
    <body name="torso" pos="0.2 -0.1 1.0" quat="0.9 0.1 0.3 -0.2">
      <joint name="root" type="free" damping="0.02"/>
      <inertial pos="0.02 0.01 -0.05" mass="3" fullinertia="0.05 0.04 0.03 0.002 -0.001 0.003"/>
      <body name="arm" pos="0.1 0 -0.2" euler="10 20 0">
        <joint name="shoulder" type="ball" pos="0 0.02 0.03" stiffness="2" damping="0.1" range="0 60"/>
        <inertial pos="0 0.01 -0.25" quat="0.9238795 0 0.3826834 0" mass="0.8" diaginertia="0.01 0.012 0.004"/>
        <body name="forearm" pos="0 0 -0.5">
          <joint name="elbow" type="hinge" axis="0 1 0" ref="15"/>
          <inertial pos="0 0 -0.2" mass="0.5" diaginertia="0.004 0.005 0.002"/>
        </body>
      </body>
    </body>
  </worldbody>
</mujoco>
"""


@pytest.mark.filterwarnings("error::UserWarning")  # the ball joint's range is modelled: no warning
def test_mjcf_with_free_and_ball_joints_matches_mujoco():
    articulation, info = load_mjcf(FLOATING_MJCF)
    model = mujoco.MjModel.from_xml_string(FLOATING_MJCF)
    assert info.joint_names == ["root", "shoulder", "elbow"]
    assert info.coord_index == {"root": 0, "shoulder": 7, "elbow": 11} and (model.nq, model.nv) == (12, 10)
    assert info.dof_index == {"root": 0, "shoulder": 6, "elbow": 9}
    assert (articulation.coord_count, articulation.dof_count) == (12, 10)
    defaults = articulation.defaults
    # q starts at MuJoCo's qpos0: the torso's pos and (normalised) quat, the identity, the elbow's 15 degrees
    np.testing.assert_allclose(defaults["joint_q"], model.qpos0, atol=1e-15)
    np.testing.assert_allclose(defaults["joint_target"], model.qpos_spring, atol=1e-15)
    assert defaults["joint_stiffness"][6:9].tolist() == [2.0] * 3
    assert defaults["joint_damping"][:6].tolist() == [0.02] * 6
    qd0 = np.array([0.3, -0.2, 0.5, 1.0, -2.0, 0.5, 2.0, -1.0, 3.0, 1.5])
    q, qd = _rollout(articulation, DT, STEPS, {"joint_qd": torch.tensor(qd0)})
    model.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_LIMIT)  # the cone is never reached (below)
    reference, reference_qd = _mujoco(model, model.qpos0, qd0, STEPS)
    # measured 1.6e-15 (qd 1.2e-14) over 0.5 s: anchor offset, rotated frames, springs, explicit damping
    assert np.abs(q - reference).max() < 1.0e-10
    assert np.abs(qd - reference_qd).max() < 1.0e-9
    # every coordinate moves: the least, the shoulder quaternion's w, by 0.012 (a 0.3 rad turn)
    assert np.ptp(q, axis=0).min() > 0.01 and 2 * np.arccos(np.abs(q[:, 7]).min()) < math.pi / 3  # in the cone


def test_urdf_floating_joint_is_a_free_joint(tmp_path):
    path = tmp_path / "float.urdf"
    path.write_text("""<robot name="float"><link name="base"/>
      <link name="body"><inertial><origin xyz="0.1 0 0.05"/><mass value="1.5"/>
        <inertia ixx="0.02" iyy="0.03" izz="0.04" ixy="0.001" ixz="0" iyz="0"/></inertial></link>
      <joint name="float" type="floating"><parent link="base"/><child link="body"/>
        <origin xyz="0 0.2 1" rpy="0.3 0 0"/></joint></robot>""")
    from wsim.models.articulation_io import load_urdf

    articulation, info = load_urdf(path)
    model = mujoco.MjModel.from_xml_path(str(path))
    assert info.coord_index == {"float": 0} and (articulation.coord_count, articulation.dof_count) == (7, 6)
    np.testing.assert_allclose(articulation.defaults["joint_q"], model.qpos0, atol=1e-15)
    qd0 = np.array([0.5, 0.0, 2.0, 3.0, -1.0, 0.5])
    q, _ = _rollout(articulation, DT, STEPS, {"joint_qd": torch.tensor(qd0)})
    reference, _ = _mujoco(model, model.qpos0, qd0, STEPS)
    assert np.abs(q - reference).max() < 1.0e-10  # measured 1.1e-15
    assert q[-1, 2] < q[0, 2] - 0.1  # thrown up at 2 m/s, it is 0.18 m lower after 0.5 s


def _gradient_model():
    builder = ArticulationBuilder(gravity=(0, 0, -9.81))
    root = builder.add_link(-1, "free", mass=2.0, com=(0.05, -0.02, 0.1), inertia=np.diag([0.03, 0.04, 0.05]),
                            q=np.r_[0.1, 0.2, 1.0, _unit([0.9, 0.2, -0.1, 0.3])], qd=(0.2, -0.1, 0.3, 0.5, -1.0, 2.0),
                            damping=0.01)
    # the ball starts at its spring's rest orientation and at rest: the small-angle branches are differentiated
    ball = builder.add_link(root, "ball", position=(0.1, 0, -0.2), rotation=_unit([0.1, 0.2, 0.0, 0.95]), mass=0.8,
                            com=(0, 0.02, -0.25), inertia=np.diag([0.01, 0.012, 0.004]), stiffness=(2.0, 1.5, 1.0),
                            damping=0.1, armature=0.001)
    builder.add_link(ball, "revolute", axis=(0, 1, 0), position=(0, 0, -0.5), mass=0.5, com=(0, 0, -0.2),
                     inertia=np.diag([0.004, 0.005, 0.002]), q=0.4, qd=1.0, damping=0.02)
    return builder.finalize()


def test_adjoint_gradients_through_ball_and_free_joints_match_central_differences():
    rollout = ArticulationRollout(_gradient_model(), 2.0e-3, 10, 21)
    generator = torch.Generator().manual_seed(1)
    weights_q = torch.randn(12, generator=generator, dtype=torch.float64)
    weights_qd = torch.randn(10, generator=generator, dtype=torch.float64)

    def loss(params):
        q, qd = rollout.rollout(params)
        return (q[-1] * weights_q).sum() + (qd[-1] * weights_qd).sum()

    names = ["joint_qd", "link_mass", "joint_damping", "joint_torque", "joint_stiffness", "joint_q", "joint_target",
             "link_inertia", "link_com", "joint_armature", "gravity"]
    measured = {}
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
        measured[name] = (adjoint, difference)
    # measured relative errors 3.7e-11 (link_inertia) .. 3.6e-10 (joint_q) .. 2e-8 (torque, gravity)
    # .. 7.9e-8 (stiffness, derivative 2.6e-2): the floor of the differences' own round-off (see
    # tests/test_articulation.py)
    for name, (adjoint, difference) in measured.items():
        assert abs(difference) > 1.0e-3, (name, difference)  # every parameter matters to the loss
        assert abs(adjoint - difference) <= 1.0e-6 * abs(difference) + 1.0e-8, (name, adjoint, difference)


def test_gradient_at_rest_goes_through_the_small_angle_branches():
    """A ball pendulum hanging at rest at its spring's rest orientation: the exponential map and the
    rotation vector sit at zero angle for the whole rollout, where their closed forms divide by zero. The
    derivative of the final state in the initial angular velocity is then the linearised motion: a
    damped, sprung oscillator per axis, compared here with central differences."""
    builder = ArticulationBuilder(gravity=(0, 0, -9.81))
    builder.add_link(-1, "ball", mass=1.0, com=(0, 0, -0.5), inertia=np.diag([0.01, 0.02, 0.015]), stiffness=2.0,
                     damping=0.1)
    rollout = ArticulationRollout(builder.finalize(), 1.0e-3, 10, 11)
    weights = torch.tensor([0.3, -1.0, 0.7, 0.5, 0.2, -0.4, 0.9], dtype=torch.float64)

    def final_state(qd0):
        q, qd = rollout.rollout({"joint_qd": qd0})
        return torch.cat([q[-1], qd[-1]])

    variable = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    (final_state(variable) * weights).sum().backward()
    step = 1.0e-6
    with torch.no_grad():
        finite = torch.stack([((final_state(step * e) - final_state(-step * e)) * weights).sum() / (2 * step)
                              for e in torch.eye(3, dtype=torch.float64)])
    assert torch.isfinite(variable.grad).all()
    # measured max difference 1.1e-15 against entries of 0.12 .. 0.30
    assert torch.allclose(variable.grad, finite, rtol=1e-6, atol=1e-9), (variable.grad, finite)
    assert finite.abs().min() > 1.0e-2


@wp.kernel
def _quaternion_functions(rates: wp.array(dtype=wp.vec3d), turned: wp.array(dtype=wp.quatd),
                          vectors: wp.array(dtype=wp.vec3d), flipped: wp.array(dtype=wp.vec3d)):
    i = wp.tid()
    reference = wp.normalize(wp.quatd(wp.float64(0.1), wp.float64(-0.3), wp.float64(0.2), wp.float64(0.9)))
    quat = integrate_quat(reference, rates[i], wp.float64(1.0))
    turned[i] = quat
    vectors[i] = rotation_vector(quat, reference)
    flipped[i] = rotation_vector(wp.quatd(-quat[0], -quat[1], -quat[2], -quat[3]), reference)


def test_quaternion_functions_match_closed_forms_on_both_sides_of_the_small_angle_switch():
    """The exponential map and the rotation vector against numpy's closed forms (Rodrigues), for angles
    from 1e-9 rad (Taylor branch) through the switch at 1e-6 rad to 3 rad, and with the quaternion negated
    (the rotation vector must not see the sign)."""
    axis = _unit([0.3, -0.5, 0.8])
    angles = np.array([1e-9, 3e-7, 9.99e-7, 1.001e-6, 2e-6, 1e-3, 0.5, 2.0, 3.0])
    rates = wp.array(angles[:, None] * axis, dtype=wp.vec3d)
    turned = wp.zeros(len(angles), dtype=wp.quatd)
    vectors = wp.zeros(len(angles), dtype=wp.vec3d)
    flipped = wp.zeros(len(angles), dtype=wp.vec3d)
    wp.launch(_quaternion_functions, dim=len(angles), inputs=[rates], outputs=[turned, vectors, flipped])
    reference = _unit([0.9, 0.1, -0.3, 0.2])  # (w, x, y, z) of the kernel's reference
    for angle, quat, vector, negated in zip(angles, turned.numpy(), vectors.numpy(), flipped.numpy()):
        expected = _matrix(reference) @ _axis_angle(axis, angle)  # the turn applied in the child frame
        got = _matrix(np.r_[quat[3], quat[:3]])
        # measured at most 5.6e-16, 2.2e-16 and (rotation vectors, absolute) 8.9e-16. The sign test caught
        # a wrap by Warp's float32 pi, 1.4e-7 rad off
        assert np.abs(got - expected).max() < 2e-15, angle
        assert abs(np.linalg.norm(quat) - 1) < 1e-15, angle
        assert np.abs(vector - angle * axis).max() < 2e-15, angle
        assert np.abs(negated - angle * axis).max() < 2e-15, angle


def test_builder_checks_ball_and_free_joints():
    builder = ArticulationBuilder()
    root = builder.add_link(-1, "ball")
    with pytest.raises(ParameterError, match="free joint must start an articulation"):
        builder.add_link(root, "free")
    with pytest.raises(ParameterError, match="q needs 1 or 4 values for a ball joint, got 3"):
        builder.add_link(root, "ball", q=(1.0, 0.0, 0.0))
    with pytest.raises(ParameterError, match="qd needs 1 or 6 values for a free joint, got 3"):
        builder.add_link(-1, "free", qd=(1.0, 0.0, 0.0))
    with pytest.raises(ParameterError, match="quaternion of target must be non-zero"):
        builder.add_link(root, "ball", target=(0.0, 0.0, 0.0, 0.0))
    builder.add_link(-1, "free")
    articulation = builder.finalize()
    # q: the two rest quaternions then the free joint's origin and quaternion; qd: 3 then 6 dofs
    assert articulation.defaults["joint_q"].tolist() == [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    assert articulation.articulation_dof_start.numpy().tolist() == [0, 3, 9]
    assert articulation.dof_coord.numpy().tolist() == [0, 0, 0, 4, 5, 6, 7, 7, 7]
