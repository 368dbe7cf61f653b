"""Loading articulations from MJCF and URDF (wsim.models.articulation_io): the loaded model rolled out by
wsim against MuJoCo simulating the very same file with the same semi-implicit Euler integrator, and the
errors for what wsim does not support (ball and free joints are loaded in tests/test_articulation_joints.py)."""

import numpy as np
import pytest
import torch

from wsim.errors import ConfigError
from wsim.models.articulation import ArticulationRollout

mujoco = pytest.importorskip("mujoco", reason="needs MuJoCo, the independent reference: pip install 'wsim[robots]'")
from wsim.models.articulation_io import load_mjcf, load_urdf  # noqa: E402  (needs mujoco)

DT, STEPS = 1.0e-3, 500

# A spatial chain in MuJoCo's Z-up world: a tilted hinge off its body origin with a reference angle
# (degrees, converted by MuJoCo's compiler), a slide joint with range, spring and springref, a hinge with
# armature, full (off-diagonal) inertia and a jointless body welded to the last link.
CHAIN_MJCF = """
<mujoco model="chain">
  <option timestep="0.001" integrator="Euler"/>
  <worldbody>
    <body name="upper" pos="0.1 0.2 1.5" quat="0.9659258 0.2588190 0 0">
      <joint name="shoulder" type="hinge" axis="1 0 1" pos="0 0.05 0.02" ref="20"/>
      <inertial pos="0.05 0 -0.3" mass="1.2" fullinertia="0.03 0.025 0.04 0.002 0.001 -0.003"/>
      <body name="slider" pos="0 0 -0.6" euler="0 30 0">
        <joint name="extend" type="slide" axis="0 0.3 -1" range="-0.8 0.9" stiffness="40" springref="0.05"/>
        <inertial pos="0 0.05 -0.1" quat="0.9238795 0 0.3826834 0" mass="0.8" diaginertia="0.01 0.005 0.012"/>
        <body name="forearm" pos="0 0 -0.4">
          <joint name="elbow" type="hinge" axis="0 1 0" armature="0.02"/>
          <inertial pos="0 0 -0.2" mass="0.5" fullinertia="0.004 0.005 0.002 0.0005 0 0.0003"/>
          <body name="hand" pos="0.1 0 -0.4" euler="10 0 20">
            <inertial pos="0.02 0 -0.05" mass="0.3" diaginertia="0.001 0.002 0.0015"/>
          </body>
        </body>
      </body>
    </body>
  </worldbody>
</mujoco>
"""

# Two revolute links and a fixed tool link, inertial frames rotated by rpy; the massless base link
# becomes MuJoCo's world and the tool is fused into its parent (MuJoCo's URDF defaults)
ARM_URDF = """<?xml version="1.0"?>
<robot name="arm">
  <link name="base"/>
  <link name="link1">
    <inertial>
      <origin xyz="0.02 0.01 0.25" rpy="0.3 -0.2 0.5"/>
      <mass value="1.5"/>
      <inertia ixx="0.03" iyy="0.025" izz="0.01" ixy="0.002" ixz="-0.001" iyz="0.0015"/>
    </inertial>
  </link>
  <link name="link2">
    <inertial>
      <origin xyz="0.2 0 0.03" rpy="0 0.4 -0.3"/>
      <mass value="0.9"/>
      <inertia ixx="0.004" iyy="0.012" izz="0.011" ixy="0" ixz="0.0007" iyz="0"/>
    </inertial>
  </link>
  <link name="tool">
    <inertial>
      <origin xyz="0 0 0.05" rpy="0.2 0 0"/>
      <mass value="0.4"/>
      <inertia ixx="0.002" iyy="0.002" izz="0.001" ixy="0" ixz="0" iyz="0"/>
    </inertial>
  </link>
  <joint name="j1" type="revolute">
    <parent link="base"/><child link="link1"/>
    <origin xyz="0 0 0.3" rpy="0.2 0 0"/>
    <axis xyz="0.3 1 0"/>
    <limit lower="-3" upper="3" effort="10" velocity="10"/>
  </joint>
  <joint name="j2" type="revolute">
    <parent link="link1"/><child link="link2"/>
    <origin xyz="0 0.05 0.5" rpy="0 0 0.4"/>
    <axis xyz="1 0 0"/>
    <limit lower="-3" upper="3" effort="10" velocity="10"/>
  </joint>
  <joint name="tool_mount" type="fixed">
    <parent link="link2"/><child link="tool"/>
    <origin xyz="0.4 0 0" rpy="0 1.0 0"/>
  </joint>
</robot>
"""


def _compare_with_mujoco(articulation, model, q0, qd0):
    """Max |q_wsim - qpos_mujoco| over STEPS Euler steps of DT from (q0, qd0), and the per-joint travel."""
    rollout = ArticulationRollout(articulation, DT, 1, STEPS + 1)
    with torch.no_grad():
        q, _ = rollout.rollout({"joint_q": torch.tensor(q0), "joint_qd": torch.tensor(qd0)})
    q = q.numpy()
    model.opt.integrator, model.opt.timestep = mujoco.mjtIntegrator.mjINT_EULER, DT  # wsim's integrator and step
    data = mujoco.MjData(model)
    data.qpos[:], data.qvel[:] = q0, qd0
    reference = [data.qpos.copy()]
    for _ in range(STEPS):
        mujoco.mj_step(model, data)
        reference.append(data.qpos.copy())
    return np.abs(q - np.array(reference)).max(), q.max(axis=0) - q.min(axis=0)


def test_mjcf_chain_matches_mujoco():
    articulation, info = load_mjcf(CHAIN_MJCF)
    assert info.link_names == ["upper", "slider", "forearm", "hand"]
    assert info.joint_names == ["shoulder", "extend", "elbow"] and info.dof_index["elbow"] == 2
    assert info.timestep == DT and np.allclose(info.gravity, (0, 0, -9.81)) and not info.ignored
    defaults = articulation.defaults
    # the reference angle (20 degrees) is the initial q, like MuJoCo's qpos0; the slide's range is loaded
    np.testing.assert_allclose(defaults["joint_q"], [np.radians(20), 0, 0], atol=1e-15)
    assert defaults["joint_limit_lower"][1] == -0.8 and defaults["joint_limit_upper"][1] == 0.9
    assert defaults["joint_limit_ke"][1] > 0 and defaults["joint_limit_ke"][0] == 0
    q0, qd0 = np.array([0.6, 0.1, -0.5]), np.array([0.8, -0.3, 1.2])
    error, travel = _compare_with_mujoco(articulation, mujoco.MjModel.from_xml_string(CHAIN_MJCF), q0, qd0)
    # measured 3.3e-16 over 0.5 s with the joints travelling 0.84 rad, 0.46 m and 0.22 rad: round-off.
    # The slide stays inside its range: MuJoCo's soft-constraint limit and wsim's penalty differ (with the
    # range narrowed to (-0.4, 0.5) the slide hits it and the trajectories part by 1.9e-2)
    assert error < 1.0e-10, error
    assert travel.min() > 0.1, travel
    with torch.no_grad():
        q, _ = ArticulationRollout(articulation, DT, 1, STEPS + 1).rollout({"joint_q": torch.tensor(q0),
                                                                              "joint_qd": torch.tensor(qd0)})
    assert -0.8 < q[:, 1].min() and q[:, 1].max() < 0.9


def test_urdf_arm_matches_mujoco(tmp_path):
    path = tmp_path / "arm.urdf"
    path.write_text(ARM_URDF)
    articulation, info = load_urdf(path)
    # the massless base is the world, the fixed tool is fused into link2 by MuJoCo's URDF compiler
    assert info.link_names == ["link1", "link2"] and info.joint_names == ["j1", "j2"]
    assert np.allclose(info.gravity, (0, 0, -9.81))
    model = mujoco.MjModel.from_xml_path(str(path))
    q0, qd0 = np.array([0.4, -0.7]), np.array([-0.5, 1.5])
    error, travel = _compare_with_mujoco(articulation, model, q0, qd0)
    # measured 3.6e-15 over 0.5 s with the joints travelling 1.7 and 1.1 rad (limits of +-3 not reached)
    assert error < 1.0e-10, error
    assert travel.min() > 0.1, travel


def test_several_joints_on_a_body_and_missing_files_are_clear_errors(tmp_path):
    two = """<mujoco><worldbody><body name="gimbal"><joint name="yaw" axis="0 0 1"/><joint name="pitch" axis="0 1 0"/>
             <geom size="0.1"/></body></worldbody></mujoco>"""
    with pytest.raises(ConfigError, match="body 'gimbal' has 2 joints \\(yaw, pitch\\)"):
        load_mjcf(two)
    missing = tmp_path / "nowhere.xml"
    with pytest.raises(ConfigError, match="nowhere.xml' does not exist"):
        load_mjcf(str(missing))
    with pytest.raises(ConfigError, match="robot.urdf' does not exist"):
        load_urdf(tmp_path / "robot.urdf")
    broken = tmp_path / "broken.xml"
    broken.write_text("<mujoco><worldbody><body><joint type='spiral'/></body></worldbody></mujoco>")
    with pytest.raises(ConfigError, match="broken.xml: MuJoCo could not compile it"):
        load_mjcf(broken)


def test_features_without_a_counterpart_are_reported():
    xml = """<mujoco><worldbody><body name="arm"><joint name="hinge" frictionloss="0.1"/>
             <geom size="0.1" pos="0.2 0 0"/></body></worldbody>
             <actuator><motor joint="hinge"/></actuator></mujoco>"""
    with pytest.warns(UserWarning, match="1 actuators; friction loss of joints hinge"):
        _, info = load_mjcf(xml)
    assert info.ignored == ["1 actuators", "friction loss of joints hinge"]
