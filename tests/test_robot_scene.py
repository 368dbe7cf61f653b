"""Robot models from MJCF/URDF files in scene configs (wsim.robot): the rendered geom vertices follow
MuJoCo's own forward kinematics (turned to Y up), the joint trajectory is the loader's, `wsim simulate`
exports link Xforms over static meshes, vertex gradients agree with central differences, and bad configs
name the key and the file."""

import numpy as np
import pytest
import torch
import yaml

mujoco = pytest.importorskip("mujoco", reason="needs MuJoCo, the independent reference: pip install 'wsim[robots]'")

from wsim.config import SceneConfig, from_dict  # noqa: E402
from wsim.errors import ConfigError  # noqa: E402
from wsim.robot import UP, geom_mesh  # noqa: E402
from wsim.scene import build_scene  # noqa: E402

# a two-link arm: a hinge off the body origin (pos), tilted body frame, a ball joint, a box, a capsule and a
# (tetrahedron) mesh geom, plus a world floor that the scene's ground replaces
ARM = """<mujoco>
  <option timestep="0.002"/>
  <asset><mesh name="tet" vertex="0 0 0  0.1 0 0  0 0.1 0  0 0 0.12" face="0 2 1  0 1 3  0 3 2  1 2 3"/></asset>
  <worldbody>
    <geom type="plane" size="1 1 0.1"/>
    <body name="upper" pos="0.1 0 1.2" euler="0 20 0">
      <joint name="shoulder" type="hinge" axis="0 1 0" pos="0 0 0.05" damping="0.05"/>
      <geom type="box" size="0.05 0.04 0.2" pos="0 0 -0.2" rgba="0.8 0.2 0.2 1"/>
      <body name="lower" pos="0 0 -0.4" euler="10 0 30">
        <joint name="wrist" type="ball" damping="0.02"/>
        <geom type="capsule" fromto="0 0 0 0.3 0 -0.1" size="0.03" rgba="0.2 0.8 0.2 1"/>
        <geom type="mesh" mesh="tet" pos="0.3 0 -0.1" euler="30 0 0" rgba="0.2 0.2 0.8 1"/>
      </body>
    </body>
  </worldbody>
</mujoco>
"""

ARM_URDF = """<robot name="arm">
  <link name="base"/>
  <link name="arm">
    <inertial><mass value="1"/><inertia ixx="0.02" iyy="0.02" izz="0.005" ixy="0" ixz="0" iyz="0"/></inertial>
    <collision><origin xyz="0 0 -0.2"/><geometry><cylinder radius="0.03" length="0.4"/></geometry></collision>
  </link>
  <link name="hand">
    <inertial><origin xyz="0 0 -0.1"/><mass value="0.5"/>
      <inertia ixx="0.003" iyy="0.003" izz="0.001" ixy="0" ixz="0" iyz="0"/></inertial>
    <collision><origin xyz="0 0 -0.1" rpy="0.3 0 0"/><geometry><box size="0.08 0.05 0.2"/></geometry></collision>
    <collision><origin xyz="0 0 -0.2"/><geometry><sphere radius="0.04"/></geometry></collision>
  </link>
  <joint name="j1" type="revolute"><parent link="base"/><child link="arm"/><origin xyz="0 0 1" rpy="0 0.2 0"/>
    <axis xyz="1 0 0"/><limit lower="-3" upper="3" effort="1" velocity="1"/></joint>
  <joint name="j2" type="continuous"><parent link="arm"/><child link="hand"/><origin xyz="0 0 -0.4"/>
    <axis xyz="0 1 0"/></joint>
</robot>
"""

BASE = [0.2, 0.1, -0.3]
WRIST = [0.9, 0.3, -0.2, 0.25]  # (w, x, y, z), normalised by the joint


def _write(tmp_path, name="arm.xml", text=ARM, frames=16, ground=False, **robot):
    (tmp_path / name).write_text(text)
    robot = {"file": name, "base_position": BASE, **robot}
    config = {"name": "robot", "sim": {"dt": 0.002, "substeps": 4, "frames": frames},
              "ground": {"enabled": ground}, "robot": robot}
    path = tmp_path / "scene.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, config


def _scene(tmp_path, **kwargs):
    _, config = _write(tmp_path, **kwargs)
    return build_scene(from_dict(SceneConfig, config), "cpu", base=tmp_path)


def _arm(tmp_path, **kwargs):
    return _scene(tmp_path, q={"shoulder": 0.7, "wrist": WRIST}, qd={"shoulder": 1.5, "wrist": [0.5, -1.0, 2.0]},
                  **kwargs)


def _mujoco_vertices(sim, q: np.ndarray) -> dict:
    """Each geom's vertices placed by MuJoCo's kinematics at ``qpos = q``, turned to Y up and moved by the base."""
    model = sim.mj_model
    data = mujoco.MjData(model)
    data.qpos[:] = q
    mujoco.mj_kinematics(model, data)
    placed = {}
    for g in sim.geom_vertex_range:
        local = geom_mesh(model, g, sim.config.resolution)[0]
        world = data.geom_xpos[g] + local @ data.geom_xmat[g].reshape(3, 3).T
        placed[g] = np.asarray(BASE) + world @ UP.T
    return placed


@pytest.mark.parametrize("kind", ["mjcf", "urdf"])
def test_geom_vertices_follow_mujoco_forward_kinematics(tmp_path, kind):
    if kind == "mjcf":
        scene = _arm(tmp_path)
    else:
        scene = _scene(tmp_path, name="arm.urdf", text=ARM_URDF, q={"j1": 0.4, "j2": -0.3}, qd={"j1": 2.0, "j2": 3.0})
    sim = scene.simulation
    with torch.no_grad():
        vertices = sim.rollout().double().numpy()
    q = sim.frame_states()["joint_q"]
    assert vertices.shape == (sim.frames, scene.model.vertex_count, 3) and len(scene.colors) == vertices.shape[1]
    assert np.abs(q[-1] - q[0]).max() > 0.05  # the joints move
    # box, capsule, mesh / cylinder, box, sphere (the floor is the scene's ground)
    assert len(sim.geom_vertex_range) == 3
    worst = 0.0
    for frame in (0, 5, sim.frames - 1):
        for g, expected in _mujoco_vertices(sim, q[frame]).items():
            first, last = sim.geom_vertex_range[g]
            worst = max(worst, np.abs(vertices[frame, first:last] - expected).max())
    assert worst < 1e-5, worst
    if kind == "mjcf":  # geom colours from rgba; the mesh geom is MuJoCo's own vertices
        first, last = sim.geom_vertex_range[3]  # geom 0 is the floor, 1 the box, 2 the capsule
        assert np.allclose(scene.colors[first], [0.2, 0.2, 0.8])
        assert last - first == sim.mj_model.mesh_vertnum[sim.mj_model.geom_dataid[3]] == 4


def test_joint_trajectory_is_the_loaders(tmp_path):
    from wsim.models.articulation import ArticulationRollout
    from wsim.models.articulation_io import load_mjcf

    scene = _arm(tmp_path, frames=12)
    sim = scene.simulation
    with torch.no_grad():
        sim.rollout()
    states = sim.frame_states()
    art, info = load_mjcf(tmp_path / "arm.xml")
    rollout = ArticulationRollout(art, sim.dt, sim.substeps, sim.frames)
    q0, qd0 = rollout.default("joint_q"), rollout.default("joint_qd")
    q0[info.coord_index["shoulder"]], qd0[info.dof_index["shoulder"]] = 0.7, 1.5
    q0[info.coord_index["wrist"]:info.coord_index["wrist"] + 4] = torch.tensor(WRIST, dtype=torch.float64)
    qd0[info.dof_index["wrist"]:info.dof_index["wrist"] + 3] = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    with torch.no_grad():
        q, qd = rollout.rollout({"joint_q": q0, "joint_qd": qd0})
    np.testing.assert_array_equal(states["joint_q"], q.numpy())
    np.testing.assert_array_equal(states["joint_qd"], qd.numpy())
    # the default gravity is the file's turned to Y up
    assert np.allclose(scene.model.defaults["gravity"], [[0.0, -9.81, 0.0]])


def test_simulate_writes_usd_link_xforms_over_static_meshes_and_a_video(tmp_path):
    from conftest import assert_usd_body_follows
    from pxr import Usd

    from wsim.cli import main

    path, _ = _write(tmp_path, q={"shoulder": 0.7, "wrist": WRIST}, qd={"shoulder": 1.5}, frames=9, ground=True)
    out = tmp_path / "out"
    assert main(["simulate", str(path), "--device", "cpu", "--out", str(out), "--resolution", "64"]) == 0
    assert (out / "rollout.mp4").stat().st_size > 0
    saved = np.load(out / "rollout.npz")
    vertices, starts = saved["vertices"], saved["body_vertex_start"]
    stage = Usd.Stage.Open(str(out / "rollout.usda"))
    for link, name in enumerate(("upper", "lower")):
        assert_usd_body_follows(stage, f"/World/{name}/mesh", vertices[:, starts[link]:starts[link + 1]], (0, 4, 8))


@pytest.mark.parametrize("name", ["joint_qd", "joint_damping"])
def test_vertex_gradient_matches_central_differences(tmp_path, name):
    scene = _arm(tmp_path, frames=8)
    sim = scene.simulation
    generator = torch.Generator().manual_seed(3)
    weights = torch.randn(sim.frames, scene.model.vertex_count, 3, generator=generator, dtype=torch.float64)

    def loss(value):
        # the float64 vertices behind rollout()'s float32 ones: a float32 sum would bury the difference in rounding
        q, _, _ = sim.joint_trajectory({name: value})
        return (sim.vertices(q) * weights).sum()

    value = sim.default(name).double() + (0.05 if name == "joint_damping" else 0.0)
    direction = torch.randn(value.shape, generator=generator, dtype=torch.float64)
    variable = value.clone().requires_grad_(True)
    loss(variable).backward()
    adjoint = float((variable.grad * direction).sum())
    eps = 1e-5
    with torch.no_grad():
        numeric = float((loss(value + eps * direction) - loss(value - eps * direction)) / (2 * eps))
    assert adjoint == pytest.approx(numeric, rel=1e-6, abs=1e-9), (adjoint, numeric)


def test_ground_contact_holds_a_falling_link(tmp_path):
    # a free box dropped onto the scene's ground stops on it (the Z-up file meets the Y-up ground)
    text = """<mujoco><worldbody><body name="box" pos="0 0 0.3"><freejoint name="free"/>
      <geom type="box" size="0.1 0.1 0.1" mass="1"/></body></worldbody></mujoco>"""
    scene = _scene(tmp_path, name="box.xml", text=text, frames=60, ground=True, base_position=[0.0, 0.0, 0.0])
    with torch.no_grad():
        vertices = scene.simulation.rollout().numpy()
    lowest = vertices[:, :, 1].min(1)
    assert lowest[0] == pytest.approx(0.2, abs=1e-6)
    assert -0.02 < lowest[-1] < 0.01


def test_scene_gravity_acts_along_wsim_axes(tmp_path):
    # gravity_from_file false: the scene's gravity, given in wsim's Y-up frame, reaches the Z-up dynamics turned
    text = """<mujoco><worldbody><body name="ball" pos="0 0 1"><freejoint name="free"/>
      <geom type="sphere" size="0.1" mass="1"/></body></worldbody></mujoco>"""
    _, config = _write(tmp_path, name="ball.xml", text=text, frames=11, gravity_from_file=False,
                       base_position=[0.0, 0.0, 0.0])
    config["gravity"] = [1.0, 0.0, -2.0]
    scene = build_scene(from_dict(SceneConfig, config), "cpu", base=tmp_path)
    sim = scene.simulation
    with torch.no_grad():
        vertices = sim.rollout().double().numpy()
    shift = vertices[-1].mean(0) - vertices[0].mean(0)
    time = (sim.frames - 1) * sim.substeps * sim.dt
    # semi-implicit Euler: x_n = g dt^2 n (n + 1) / 2 (first order in dt against g t^2 / 2)
    steps = (sim.frames - 1) * sim.substeps
    expected = np.array([1.0, 0.0, -2.0]) * sim.dt ** 2 * steps * (steps + 1) / 2
    assert np.allclose(shift, expected, atol=1e-6) and np.allclose(shift, 0.5 * np.array([1, 0, -2]) * time ** 2,
                                                                   rtol=0.05)


def test_config_errors_name_the_key_and_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"robot\.file.*missing\.xml.*does not exist"):
        build_scene(from_dict(SceneConfig, {"robot": {"file": "missing.xml"}}), "cpu", base=tmp_path)
    with pytest.raises(ConfigError, match=r"robot\.q: 'elbow' is not a joint of arm\.xml.*shoulder, wrist"):
        _scene(tmp_path, q={"elbow": 0.3})
    with pytest.raises(ConfigError, match=r"robot\.qd\.wrist: a ball joint takes 3 value"):
        _scene(tmp_path, qd={"wrist": 1.0})
    with pytest.raises(ConfigError, match=r"robot\.file: .*bad\.xml: MuJoCo could not compile it"):
        _scene(tmp_path, name="bad.xml", text="<mujoco><worldbody><body></mujoco>")
    with pytest.raises(ConfigError, match=r"robot\.file.*arm\.obj.*MJCF.*URDF"):
        from_dict(SceneConfig, {"robot": {"file": "arm.obj"}})
    with pytest.raises(ConfigError, match=r"robot"):
        from_dict(SceneConfig, {"robot": {"file": "arm.xml", "joints": {}}})
