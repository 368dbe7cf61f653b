"""Articulated chains in scene configs (wsim.articulated): the link meshes follow the forward kinematics
of the joint angles, the vertex gradients agree with central finite differences, bad configs name the
key, and `wsim run pendulum` (shortened) recovers the length and damping from video."""

import math

import numpy as np
import pytest
import torch

from wsim.config import SceneConfig, from_dict
from wsim.errors import ConfigError, ParameterError
from wsim.scene import build_scene

PIVOT = (0.0, 1.5, 0.0)


def _scene(links, mass_model="rod", frames=21, **articulation):
    config = {"sim": {"dt": 0.004, "substeps": 5, "frames": frames}, "ground": {"enabled": False},
              "articulation": {"position": list(PIVOT), "mass_model": mass_model, "links": links, **articulation}}
    return build_scene(from_dict(SceneConfig, config), "cpu")


def _tip(vertices: np.ndarray, joint: np.ndarray, count: int = 4) -> np.ndarray:
    """The centre of the ``count`` vertices farthest from ``joint``: the far end face of a box link."""
    far = np.argsort(np.linalg.norm(vertices - joint, axis=-1))[-count:]
    return vertices[far].mean(0)


def test_link_vertices_follow_the_forward_kinematics_of_the_joint_angles():
    lengths = (0.6, 0.4)
    scene = _scene([{"length": lengths[0], "q": 1.1, "qd": 0.5, "shape": "box", "radius": 0.03},
                    {"length": lengths[1], "q": -0.4, "shape": "box", "radius": 0.02, "offset": 0.05}])
    sim = scene.simulation
    with torch.no_grad():
        vertices = sim.rollout().double().numpy()
    q = sim.frame_states()["joint_q"]
    starts = scene.model.body_vertex_start
    assert vertices.shape == (sim.frames, starts[-1], 3) and np.all(np.isfinite(vertices))
    assert q.std(0).min() > 0.05  # both joints move
    pivot = np.array(PIVOT)
    upper, lower = vertices[:, starts[0]:starts[1]], vertices[:, starts[1]:starts[2]]
    elbow, ends = [], []
    for frame in range(sim.frames):
        # a tip is length * (sin q, -cos q) from its joint, q summed down the chain (all axes are Z)
        angle = q[frame, 0]
        expected = pivot + lengths[0] * np.array([math.sin(angle), -math.cos(angle), 0.0])
        elbow.append(_tip(upper[frame], pivot))
        assert np.allclose(elbow[-1], expected, atol=2e-6), frame
        angle = q[frame, 0] + q[frame, 1]
        # the lower link hangs 0.05 m along its (Z) axis in front of the upper one's tip
        expected = expected + lengths[1] * np.array([math.sin(angle), -math.cos(angle), 0.0]) + [0.0, 0.0, 0.05]
        ends.append(_tip(lower[frame], elbow[-1] + [0.0, 0.0, 0.05]))
        assert np.allclose(ends[-1], expected, atol=2e-6), frame
    # rigid links: every vertex keeps its distance to its own joint
    for link, joints in ((upper, np.broadcast_to(pivot, (sim.frames, 3))), (lower, np.array(elbow) + [0, 0, 0.05])):
        distance = np.linalg.norm(link - joints[:, None], axis=-1)
        assert np.abs(distance - distance[0]).max() < 2e-6


def test_a_point_mass_pendulum_keeps_the_analytic_small_angle_period():
    length, amplitude = 0.5, 0.01
    scene = _scene([{"length": length, "q": amplitude, "radius": 0.01}], mass_model="point", frames=201)
    with torch.no_grad():
        scene.simulation.rollout()
    q = scene.simulation.frame_states()["joint_q"][:, 0]
    times = np.arange(len(q)) * scene.simulation.dt * scene.simulation.substeps
    cross = np.nonzero(np.sign(q[:-1]) * np.sign(q[1:]) < 0)[0]
    crossings = [times[i] - q[i] * (times[i + 1] - times[i]) / (q[i + 1] - q[i]) for i in cross]
    period = 2.0 * (crossings[1] - crossings[0])
    # measured -1.8e-6: the phase error of semi-implicit Euler (sin q ~ q to 2e-5 at this amplitude)
    assert abs(period / (2.0 * math.pi * math.sqrt(length / 9.80665)) - 1.0) < 2e-3


def test_vertex_loss_gradients_match_central_finite_differences():
    scene = _scene([{"length": 0.5, "q": 1.0, "damping": 0.05, "torque": 0.5},
                    {"length": 0.4, "q": 0.5, "damping": 0.05}])
    sim = scene.simulation
    weights = torch.randn(sim.frames, scene.model.vertex_count, 3, generator=torch.Generator().manual_seed(0),
                          dtype=torch.float64)
    values = {"link_mass": torch.tensor([1.0, 0.7], dtype=torch.float64),
              "joint_damping": torch.tensor(0.05, dtype=torch.float64),
              "link_length": torch.tensor([0.5, 0.4], dtype=torch.float64)}

    def loss(params):
        q, _, full = sim.joint_trajectory(params)
        return (sim.vertices(q, full["link_length"]) * weights).sum()

    leaves = {name: value.clone().requires_grad_(True) for name, value in values.items()}
    loss(leaves).backward()
    for name, value in values.items():
        for index in np.ndindex(value.shape):
            eps = 1e-6 * float(value[index])
            plus, minus = value.clone(), value.clone()
            plus[index] += eps
            minus[index] -= eps
            with torch.no_grad():
                numeric = (loss({**values, name: plus}) - loss({**values, name: minus})).item() / (2 * eps)
            analytic = leaves[name].grad[index].item()
            # measured 1e-10 to 1.4e-8 relative (float64 throughout)
            assert abs(analytic - numeric) <= 1e-5 * max(abs(numeric), 1.0), (name, index, analytic, numeric)


@pytest.mark.parametrize("articulation, key", [
    ({"links": [{"length": -0.5}]}, "articulation.links.0.length"),
    ({"links": [{"axis": [0.0, 0.0, 0.0]}]}, "articulation.links.0.axis"),
    ({"links": [{"shape": "torus"}]}, "articulation.links.0.shape"),
    ({"links": []}, "articulation.links"),
    ({"links": [{"torque": [1.0, 2.0]}]}, "articulation.links.0.torque"),
    ({"links": [{"lenght": 0.5}]}, "articulation.links.0.lenght"),
])
def test_bad_articulation_fields_raise_a_config_error_naming_the_key(articulation, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict(SceneConfig, {"sim": {"frames": 5}, "articulation": articulation})


def test_an_articulation_needs_a_scene_of_its_own_and_known_parameter_names():
    with pytest.raises(ConfigError, match="articulation cannot share a scene"):
        from_dict(SceneConfig, {"bodies": [{}], "articulation": {"links": [{}]}})
    sim = _scene([{"length": 0.5}], frames=3).simulation
    with pytest.raises(ParameterError, match="unknown parameter 'density'.*link_length"):
        sim.rollout({"density": 1.0})
    with pytest.raises(ParameterError, match="link_mass"):
        sim.rollout({"link_mass": -1.0})


def test_a_blown_up_rollout_names_the_physics_step():
    from wsim.errors import SimulationError

    # a joint spring far too stiff for the step: semi-implicit Euler diverges within a few dozen steps
    sim = _scene([{"length": 0.5, "q": 0.5, "stiffness": 1.0e9}], frames=21).simulation
    with pytest.raises(SimulationError, match=r"NaN or infinite at physics step \d+"):
        sim.rollout()


def test_wsim_run_pendulum_recovers_length_and_damping(tmp_path):
    from wsim.sysid import load_experiment, run_instance

    config = load_experiment("pendulum", ["scene.sim.frames=16", "render.resolution=32", "optim.iterations=15",
                                          "optim.polish_iterations=20", "optim.escalate=0", "uncertainty.enabled=false"])
    result = run_instance(config, 0, tmp_path, "cpu", progress=False, write_outputs=False)
    errors = result["errors"]
    # measured on seed 0: 1.7e-5 (length) and 4.0e-4 (damping) relative, from initial errors of 0.43 and 0.23,
    # done after 18 BFGS steps
    assert result["status"] == "done", result["convergence"]
    assert errors["link_length"]["rel"] < 1e-3, errors
    assert errors["joint_damping"]["rel"] < 1e-2, errors
    assert result["initial_errors"]["link_length"]["rel"] > 0.2


def _tree(**extra):
    """Two fingers on a fixed palm: roots at anchors on the base, each with a child at its tip."""
    finger = {"shape": "box", "radius": 0.02, "axis": [1.0, 0.0, 0.0], "damping": 0.05, "stiffness": 1.0,
              "mass": 0.1, "limit": math.pi / 4, "limit_stiffness": 20.0}
    links = [{**finger, "parent": -1, "anchor": [-0.1, -0.2, 0.0], "length": 0.2, "group": "a",
              "torque_wave": {"magnitude": 0.8, "delay": 2.0, "period": 10.0}},
             {**finger, "length": 0.15, "group": "a", "torque_wave": {"magnitude": 0.8, "delay": 2.0, "period": 10.0}},
             {**finger, "parent": -1, "anchor": [0.1, -0.2, 0.0], "length": 0.2, "group": "b", "q": 0.3},
             {**finger, "parent": 2, "length": 0.12, "group": "b", "torque": 0.2}]
    return _scene(links, frames=13, base_size=[0.4, 0.4, 0.05], **extra)


def test_a_tree_of_fingers_on_a_fixed_palm_follows_its_forward_kinematics():
    """parent/anchor build a tree: each root hangs from the base at its anchor, each child from its
    parent's tip; the palm's vertices never move; the joint torques are the configured waves
    m sin(2 pi clamp((k - delay) / period, 0, 1)) plus the constant torques."""
    scene = _tree()
    sim = scene.simulation
    with torch.no_grad():
        vertices = sim.rollout().double().numpy()
    q = sim.frame_states()["joint_q"]
    starts = scene.model.body_vertex_start
    assert scene.model.body_names[-1] == "base" and len(starts) == 6 and q.std(0).min() > 1e-3
    palm = vertices[:, starts[4]:starts[5]]
    assert np.abs(palm - palm[0]).max() == 0.0 and np.allclose(palm[0].mean(0), PIVOT, atol=1e-9)
    pivot = np.array(PIVOT)
    for frame in range(sim.frames):
        for root, child, x in ((0, 1, -0.1), (2, 3, 0.1)):
            joint = pivot + [x, -0.2, 0.0]
            a = q[frame, root]
            knuckle = joint + 0.2 * np.array([0.0, -math.cos(a), -math.sin(a)])  # about +X: -Y turns to -Z
            assert np.allclose(_tip(vertices[frame, starts[root]:starts[root + 1]], joint), knuckle, atol=2e-6)
            b = a + q[frame, child]
            length = 0.15 if child == 1 else 0.12
            end = knuckle + length * np.array([0.0, -math.cos(b), -math.sin(b)])
            assert np.allclose(_tip(vertices[frame, starts[child]:starts[child + 1]], knuckle), end, atol=2e-6)
    torque = sim.default("joint_torque").double().numpy()
    phase = np.clip((np.arange(12) - 2.0) / 10.0, 0.0, 1.0)
    assert np.allclose(torque[:, 0], 0.8 * np.sin(2 * np.pi * phase), atol=1e-6)
    assert np.allclose(torque[:, 3], 0.2) and np.allclose(torque[:, 2], 0.0)
    with pytest.raises(ConfigError, match="articulation.links.3.parent"):
        _scene([{"parent": -1}, {}, {"parent": -1}, {"parent": 1}])  # 1's subtree is closed: not depth-first


def test_group_stiffness_sets_every_joint_of_its_group_and_its_gradient_matches_differences():
    sim = _tree().simulation
    assert sim.group_names == ["a", "b"]
    weights = torch.randn(sim.frames, sim.model.vertex_count, 3, generator=torch.Generator().manual_seed(1),
                          dtype=torch.float64)

    def loss(stiffness):
        q, _, full = sim.joint_trajectory({"group_stiffness": stiffness})
        return (sim.vertices(q, full["link_length"]) * weights).sum()

    value = torch.tensor([0.6, 1.4], dtype=torch.float64)
    with torch.no_grad():
        q_group = sim.joint_trajectory({"group_stiffness": value})[0]
        joint = torch.tensor([0.6, 0.6, 1.4, 1.4], dtype=torch.float64)
        q_joint = sim.joint_trajectory({"joint_stiffness": joint})[0]
    assert torch.equal(q_group, q_joint)
    leaf = value.clone().requires_grad_(True)
    loss(leaf).backward()
    for index in range(2):
        eps = 1e-6
        plus, minus = value.clone(), value.clone()
        plus[index] += eps
        minus[index] -= eps
        with torch.no_grad():
            numeric = (loss(plus) - loss(minus)).item() / (2 * eps)
        assert abs(leaf.grad[index].item() - numeric) <= 1e-5 * max(abs(numeric), 1.0)


def test_a_joint_limit_holds_a_pushed_finger_where_the_penalty_balances_the_torque():
    """A single finger pushed by a constant 2 N m against its pi/4 limit, heavily damped, settles where
    stiffness, limit penalty and torque balance (gravity off): k q + ke (q - pi/4) = u."""
    scene = _scene([{"axis": [1.0, 0.0, 0.0], "stiffness": 1.0, "damping": 0.5, "mass": 0.1, "length": 0.2,
                     "limit": math.pi / 4, "limit_stiffness": 20.0, "torque": 2.0}], frames=121)
    sim = scene.simulation
    with torch.no_grad():
        sim.joint_trajectory({"gravity": torch.zeros(1, 3, dtype=torch.float64)})
    settled = sim.frame_states()["joint_q"][-1, 0]
    expected = (2.0 + 20.0 * math.pi / 4) / (1.0 + 20.0)
    assert settled == pytest.approx(expected, abs=1e-4) and settled > math.pi / 4


def test_usd_export_poses_every_link_over_its_static_mesh(tmp_path):
    from conftest import assert_usd_body_follows
    from pxr import Usd

    from wsim.export import body_poses, write_rollout_usd

    scene = _scene([{"length": 0.5, "q": 0.9, "qd": 1.0, "shape": "box", "radius": 0.03},
                    {"length": 0.3, "q": -0.6, "shape": "capsule", "radius": 0.02}], frames=9)
    sim, model = scene.simulation, scene.model
    with torch.no_grad():
        vertices = sim.rollout().numpy()
    write_rollout_usd(tmp_path / "chain.usda", vertices, model.render_faces, scene.fps, model.body_vertex_start,
                      model.body_names, scene.colors, None, body_poses(sim.frame_states()))
    stage = Usd.Stage.Open(str(tmp_path / "chain.usda"))
    starts = model.body_vertex_start
    for link, name in enumerate(model.body_names):
        assert_usd_body_follows(stage, f"/World/{name}/mesh", vertices[:, starts[link]:starts[link + 1]], (0, 4, 8))
