"""Ground contact of articulated links (wsim.models.articulation_contact): statics against a hand
computation, a free body resting and tumbling against wsim's own rigid-body simulation of the same body,
Coulomb sliding, and adjoint gradients of the contact parameters against central differences."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from wsim.builder import ModelBuilder
from wsim.config import SceneConfig, from_dict
from wsim.geometry import primitive
from wsim.models.articulation import ArticulationBuilder, ArticulationRollout, GroundContact
from wsim.scene import build_scene
from wsim.simulation import Simulation

G = 9.80665


def resting_gap(weight_per_point, ke, smoothing):
    """Height of a resting contact sphere's surface above the plane (negative: penetration) where the
    law's elastic term ke e(p) carries ``weight_per_point`` (the module docstring of wsim.models.contact:
    e = p beyond s/2 of penetration, e = q^2 / 2s with q = p + s/2 on the smoothed onset)."""
    target = weight_per_point / ke
    if smoothing == 0.0 or target >= smoothing / 2:
        return -target
    return smoothing / 2 - math.sqrt(2.0 * smoothing * target)


@pytest.mark.parametrize("smoothing", [0.0, 1.0e-2])
def test_a_rod_lowered_onto_the_ground_rests_where_the_tip_force_balances_gravity(smoothing):
    """A uniform rod (scene config) on a hinge at height h, released above the ground, falls onto it and
    settles with its tip on the plane. Torques about the hinge: gravity m g (L/2) sin q at the centre,
    the tip's normal force F L sin q (friction vanishes at rest), so F = m g / 2 whatever the angle, the
    tip sphere sits at ``resting_gap(m g / 2)`` and cos q = (h - r - gap) / L."""
    h, length, radius, mass, ke = 0.5, 1.0, 0.02, 1.0, 1.0e4
    scene = build_scene(from_dict(SceneConfig, {
        "sim": {"dt": 1.0e-3, "substeps": 50, "frames": 41},
        "ground": {"enabled": True, "height": 0.0},
        "contact": {"ke": ke, "kd": 50.0, "kf": 100.0, "mu": 0.5, "smoothing": smoothing},
        "articulation": {"position": [0.0, h, 0.0], "mass_model": "rod",
                         "links": [{"length": length, "mass": mass, "q": 1.3, "damping": 0.3, "radius": radius}]},
    }), device="cpu")
    sim = scene.simulation
    assert sim.parameter_names() == sorted(sim.parameter_names())
    assert {"contact_ke", "contact_kd", "contact_kf", "contact_mu"} <= set(sim.parameter_names())
    q, qd, _ = sim.joint_trajectory()
    gap = resting_gap(mass * G / 2.0, ke, smoothing)
    expected = math.acos((h - radius - gap) / length)
    # measured after 2 s: |qd| 6e-14 rad/s, angle error 7e-16 rad (q = 1.06958 rad for s = 0, 1.07227 for
    # s = 1 cm), tip force m g / 2 to 3e-13 relative
    assert abs(qd[-1, 0].item()) < 1e-9
    assert q[-1, 0].item() == pytest.approx(expected, abs=1e-10)
    forces = sim.dynamics.contact_forces()[-1]
    assert forces[:, 1].sum() == pytest.approx(mass * G / 2.0, rel=1e-9)  # the tip carries half the weight
    assert np.count_nonzero(forces[:, 1]) == 1  # only the tip sphere touches


def test_links_keep_off_the_ground_when_it_is_disabled_or_switched_off():
    """The same rod passes through a disabled ground, and through an enabled one with ground_contact off."""
    base = {"sim": {"dt": 1.0e-3, "substeps": 10, "frames": 41},
            "articulation": {"position": [0.0, 0.5, 0.0], "links": [{"length": 1.0, "q": 1.3}]}}
    angles = []
    for ground, switch in ((False, True), (True, False)):
        config = {**base, "ground": {"enabled": ground},
                  "articulation": {**base["articulation"], "ground_contact": switch}}
        sim = build_scene(from_dict(SceneConfig, config), device="cpu").simulation
        assert "contact_ke" not in sim.parameter_names() and not sim.model.ground
        angles.append(sim.joint_trajectory()[0][:, 0])
    torch.testing.assert_close(angles[0], angles[1], rtol=0.0, atol=0.0)
    assert angles[0].min().item() < 0.5  # swung through where the ground would have stopped it (q ~ 1.07)


def _box_articulation(size, mass, inertia, q, qd, gravity=(0.0, -G, 0.0)):
    builder = ArticulationBuilder(gravity=gravity)
    link = builder.add_link(-1, "free", mass=mass, inertia=inertia, q=q, qd=qd)
    for corner in primitive("box", size).vertices:  # the same 8 points the rigid body uses as contact vertices
        builder.add_contact_point(link, corner)
    return builder.finalize("cpu")


@pytest.mark.parametrize("up", ["y", "z"])
def test_a_dropped_free_box_rests_at_the_penetration_of_its_weight_on_its_bottom_corners(up):
    """A free box of mass m dropped flat onto the ground rests on N = 4 corners at the penetration
    m g / (N ke) (smoothing 0: the linear law). With gravity along -Z (an MJCF model) the default ground
    normal is +Z."""
    mass, ke, half = 4.0, 2.0e4, 0.1
    axis = {"y": 1, "z": 2}[up]
    gravity = np.zeros(3)
    gravity[axis] = -G
    start = np.zeros(3)
    start[axis] = 0.3
    art = _box_articulation(2 * half, mass, np.eye(3) * mass * (2 * half) ** 2 / 6.0, [*start, 1.0, 0.0, 0.0, 0.0],
                            0.0, gravity=gravity)
    rollout = ArticulationRollout(art, 5.0e-4, 50, 41, ground=GroundContact(ke=ke, kd=200.0, kf=1.0e3, mu=0.5,
                                                                            smoothing=0.0))
    q, qd = rollout.rollout()
    depth = half - q[-1, axis].item()
    # measured after 1 s: depth 4.903325e-4 m = m g / (4 ke) to 2e-13 relative, speed 1e-14 m/s (Y and Z up)
    assert depth == pytest.approx(mass * G / (4 * ke), rel=1e-9)
    assert qd[-1].abs().max().item() < 1e-9
    normal = rollout.contact_forces()[-1][:, axis]
    np.testing.assert_allclose(np.sort(normal)[4:], mass * G / 4, rtol=1e-9)  # 4 corners share the weight
    assert np.all(np.sort(normal)[:4] == 0.0)  # the top ones stay clear


def _tumbling_box(dt, substeps, frames):
    """A 0.3 x 0.1 x 0.2 m box thrown tilted and spinning onto the ground, by wsim's rigid-body
    simulation and as a free joint with the box's corners as contact points; centres of mass [F, 3] and
    rotations (scipy) of both."""
    size, contact = [0.3, 0.1, 0.2], dict(ke=2.0e4, kd=200.0, kf=1.0e3, mu=0.5)
    rotation, position, velocity = Rotation.from_rotvec([0.3, 0.2, 0.4]), (0.0, 0.3, 0.0), (0.5, 0.0, 0.2)
    omega = np.array([1.0, -2.0, 0.5])
    builder = ModelBuilder(contact_smoothing=1.0e-2)
    builder.add_material(**contact)
    builder.add_body(primitive("box", size), density=500.0, position=position, rotation=rotation.as_quat(),
                     velocity=velocity, angular_velocity=omega)
    model = builder.finalize("cpu", dt=dt)
    rigid = Simulation(model, dt, substeps, frames)
    rigid.rollout()
    states = rigid.frame_states()
    mass = float(model.defaults["body_mass"][0])
    inertia = np.asarray(model.defaults["body_inertia"][0], dtype=np.float64)
    x, y, z, w = rotation.as_quat()
    # a free joint's angular velocity is in the body frame
    art = _box_articulation(size, mass, inertia, [*position, w, x, y, z], [*velocity, *rotation.inv().apply(omega)])
    q, _ = ArticulationRollout(art, dt, substeps, frames, ground=GroundContact(**contact, smoothing=1.0e-2)).rollout()
    q = q.numpy()
    return (q[:, :3], Rotation.from_quat(q[:, [4, 5, 6, 3]]), states["body_q"][:, 0],
            Rotation.from_quat(states["body_r"][:, 0]))


def test_a_tumbling_free_box_follows_the_rigid_body_simulation_of_the_same_contact_law():
    """Same body, same contact points, same law, two implementations: the maximal-coordinate rigid
    integrator (float32, angular momentum in the world frame) and the reduced-coordinate free joint
    (float64, body-frame angular velocity through the Newton-Euler bias). Both are semi-implicit Euler but
    they step the rotation differently (the gyroscopic term enters explicitly here), so the residual is
    first order in dt: halving dt halves it. Float32 rounding alone is ~1e-7 (a cube, whose gyroscopic
    term vanishes, agrees to 2e-6 m over the same 0.4 s)."""
    residuals = []
    for dt, substeps in ((5.0e-4, 20), (2.5e-4, 40)):
        art_x, art_r, rigid_x, rigid_r = _tumbling_box(dt, substeps, 41)
        assert rigid_x[-1, 1] < 0.06 and abs(rigid_x[-1, 1] - rigid_x[-2, 1]) < 1e-3  # landed, settling
        residuals.append((np.abs(art_x - rigid_x).max(), (art_r.inv() * rigid_r).magnitude().max()))
    # measured: 6.1e-5 m and 4.8e-4 rad at dt = 0.5 ms, 3.2e-5 m and 2.4e-4 rad at 0.25 ms
    assert residuals[0][0] < 2e-4 and residuals[0][1] < 2e-3
    for coarse, fine in zip(*residuals):
        assert 1.6 < coarse / fine < 2.4


def test_a_sliding_plate_decelerates_at_mu_g_and_stops():
    """A flat box (a plate: friction at its base barely tips it) resting on the ground, pushed to v0 along
    X: while it slides the relaxed Coulomb friction is saturated (|f_t| = mu |f_n| tanh(kf v / mu |f_n|),
    tanh = 1 - 1e-8 above 0.05 m/s), so it decelerates at mu g and stops after v0 / (mu g), v0^2 / (2 mu g)
    further on; then the stick stiffness kf holds it. (A cube tips forward and rocks on the smoothed
    onset, whose damping ramps in: its deceleration then wobbles with the load on its corners.)"""
    mass, size, ke, mu, v0 = 4.0, [0.4, 0.04, 0.4], 2.0e4, 0.4, 1.0
    a, b, c = size
    inertia = mass / 12.0 * np.diag([b * b + c * c, a * a + c * c, a * a + b * b])
    rest = b / 2 + resting_gap(mass * G / 4, ke, 1.0e-2)
    art = _box_articulation(size, mass, inertia, [0.0, rest, 0.0, 1.0, 0.0, 0.0, 0.0], [v0, 0.0, 0.0, 0.0, 0.0, 0.0])
    dt, substeps = 5.0e-4, 10
    rollout = ArticulationRollout(art, dt, substeps, 101, ground=GroundContact(ke=ke, kd=200.0, kf=1.0e3, mu=mu,
                                                                               smoothing=1.0e-2))
    q, _ = rollout.rollout()
    speed = rollout.states()["qd"][:, 0]  # every physics step
    t = np.arange(len(speed)) * dt
    sliding = speed > 0.1
    slope = np.polyfit(t[sliding], speed[sliding], 1)[0]
    # measured: deceleration 3.92229 against mu g = 3.92266 m/s^2; stop (< 1 mm/s) at 0.2555 s against
    # 0.2549 s (the tanh lets go below ~1 cm/s); distance 0.12721 m against 0.12746 m; final speed 1.5e-7 m/s
    assert -slope == pytest.approx(mu * G, rel=5e-4)
    stop = t[np.argmax(speed < 1e-3)]
    assert stop == pytest.approx(v0 / (mu * G), abs=2e-3)
    assert np.abs(speed[-400:]).max() < 1e-4  # stopped, and stays
    assert q[-1, 0].item() == pytest.approx(v0 ** 2 / (2 * mu * G), rel=5e-3)


def test_adjoint_gradients_of_the_contact_parameters_and_initial_velocity_match_central_differences():
    """A tilted box lands sliding and spinning (impact: ke, kd; slip in the tanh's transition, kf / mu |f_n|
    ~ 1: kf and mu); the gradient of a weighted sum of the final state with respect to ke, kd, kf, mu, the
    smoothing and the initial velocity against central differences (float64, fixed steps)."""
    mass, half = 4.0, 0.1
    tilt = Rotation.from_rotvec([0.0, 0.0, 0.15]).as_quat()
    art = _box_articulation(2 * half, mass, np.eye(3) * mass * (2 * half) ** 2 / 6.0,
                            [0.0, 0.13, 0.0, tilt[3], *tilt[:3]], 0.0)
    rollout = ArticulationRollout(art, 5.0e-4, 20, 16, ground=GroundContact(ke=2.0e4, kd=100.0, kf=100.0, mu=0.4,
                                                                            smoothing=1.0e-2))
    base = {"contact_ke": torch.tensor([2.0e4]), "contact_kd": torch.tensor([100.0]),
            "contact_kf": torch.tensor([100.0]), "contact_mu": torch.tensor([0.4]),
            "contact_smoothing": torch.tensor([1.0e-2]),
            "joint_qd": torch.tensor([0.3, -0.2, 0.1, 0.5, -1.0, 0.8])}
    base = {name: value.double() for name, value in base.items()}
    weights = torch.linspace(-1.0, 1.0, 7 + 6, dtype=torch.float64)

    def loss(params):
        q, qd = rollout.rollout(params)
        return (torch.cat([q[-1], qd[-1]]) * weights).sum()

    leaves = {name: value.clone().requires_grad_(True) for name, value in base.items()}
    loss(leaves).backward()
    for name, value in base.items():
        for index in range(value.numel()):
            step = 1e-6 * max(abs(value.view(-1)[index].item()), 1.0)
            values = []
            for sign in (1.0, -1.0):
                moved = value.clone()
                moved.view(-1)[index] += sign * step
                values.append(loss({**base, name: moved}).item())
            numeric = (values[0] - values[1]) / (2 * step)
            analytic = leaves[name].grad.view(-1)[index].item()
            # measured: relative errors <= 1.1e-7 (the largest for the initial angular velocity about Y)
            assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8), (name, index, analytic, numeric)


def test_an_mjcf_capsule_on_a_free_joint_rests_on_its_collision_geom_spheres():
    """``contacts=True`` turns a loaded model's collision geoms into contact points (a capsule: its end
    spheres; visual-only geoms skipped, unsupported types listed); the ground normal follows the file's
    gravity (-Z), so the capsule lying along X rests with its axis at r - m g / (2 ke)."""
    pytest.importorskip("mujoco", reason="needs MuJoCo, the independent reference: pip install 'wsim[robots]'")
    from wsim.models.articulation_io import load_mjcf

    xml = """<mujoco><worldbody><geom type="plane" size="1 1 0.1"/>
      <body name="rod" pos="0 0 0.1"><freejoint name="free"/>
        <inertial pos="0 0 0" mass="2" diaginertia="0.005 0.03 0.03"/>
        <geom type="capsule" fromto="-0.2 0 0 0.2 0 0" size="0.05"/>
        <geom type="sphere" size="0.01" pos="0 0 0.1" contype="0" conaffinity="0"/>
        <geom name="can" type="cylinder" size="0.02 0.05" pos="0 0 0.1"/>
      </body></worldbody></mujoco>"""
    with pytest.warns(UserWarning, match="contacts of geoms can"):
        art, info = load_mjcf(xml, contacts=True)
    assert art.contact_count == 2
    np.testing.assert_allclose(np.abs(art.defaults["contact_point"]), [[0.2, 0.0, 0.0]] * 2, atol=1e-12)
    np.testing.assert_allclose(art.contact_radius.numpy(), [0.05, 0.05])
    ke = 1.0e4
    rollout = ArticulationRollout(art, 1.0e-3, 50, 21, ground=GroundContact(ke=ke, kd=200.0, kf=1.0e3, mu=0.5,
                                                                           smoothing=0.0))
    q, qd = rollout.rollout()
    # measured: rest height 0.049019 m = r - m g / (2 ke) to 4e-17 m (g = 9.81, MuJoCo's default) after 1 s
    assert q[-1, 2].item() == pytest.approx(0.05 - 2.0 * 9.81 / (2 * ke), abs=1e-9)
    assert qd[-1].abs().max().item() < 1e-6


def test_scene_gradients_of_contact_material_and_link_length_match_central_differences():
    """Through the scene wrapper: a two-link chain swung onto the ground, its joint angles differentiated
    with respect to the contact material and the link lengths (which move the contact spheres along the
    links) against central differences."""
    scene = build_scene(from_dict(SceneConfig, {
        "sim": {"dt": 1.0e-3, "substeps": 20, "frames": 11},
        "ground": {"enabled": True, "height": 0.0},
        "contact": {"ke": 5.0e3, "kd": 20.0, "kf": 50.0, "mu": 0.5, "smoothing": 1.0e-2},
        "articulation": {"position": [0.0, 0.45, 0.0], "contact_points": 3,
                         "links": [{"length": 0.5, "q": 1.0, "qd": -1.5, "radius": 0.03},
                                   {"length": 0.4, "q": 0.3, "radius": 0.03}]},
    }), device="cpu")
    sim = scene.simulation
    base = {"contact_ke": torch.tensor([5.0e3]), "contact_kd": torch.tensor([20.0]),
            "contact_kf": torch.tensor([50.0]), "contact_mu": torch.tensor([0.5]),
            "link_length": torch.tensor([0.5, 0.4])}
    base = {name: value.double() for name, value in base.items()}
    weights = torch.linspace(0.5, 1.5, 2 * 11, dtype=torch.float64).reshape(11, 2)

    def loss(params):
        return (sim.joint_trajectory(params)[0] * weights).sum()

    leaves = {name: value.clone().requires_grad_(True) for name, value in base.items()}
    loss(leaves).backward()
    assert np.abs(sim.dynamics.contact_forces()).max() > 1.0  # the chain does hit the ground
    for name, value in base.items():
        for index in range(value.numel()):
            step = 1e-6 * max(abs(value[index].item()), 1e-2)
            moved = [value.clone(), value.clone()]
            moved[0][index] += step
            moved[1][index] -= step
            numeric = (loss({**base, name: moved[0]}).item() - loss({**base, name: moved[1]}).item()) / (2 * step)
            analytic = leaves[name].grad[index].item()
            # measured: relative errors <= 9.2e-7 (the largest for contact_kf)
            assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-9), (name, index, analytic, numeric)


def test_bad_contact_points_and_ground_parameters_raise_parameter_errors():
    from wsim.errors import ParameterError

    builder = ArticulationBuilder()
    builder.add_link(-1, "revolute")
    with pytest.raises(ParameterError, match="link 3 does not exist"):
        builder.add_contact_point(3, (0.0, 0.0, 0.0))
    with pytest.raises(ParameterError, match="radius must be >= 0"):
        builder.add_contact_point(0, (0.0, 0.0, 0.0), radius=-0.1)
    with pytest.raises(ParameterError, match="ke must be finite and >= 0"):
        GroundContact(ke=-1.0)
    with pytest.raises(ParameterError, match="normal must be a finite non-zero vector"):
        GroundContact(normal=(0.0, 0.0, 0.0)).unit_normal((0.0, -9.81, 0.0))
    np.testing.assert_allclose(GroundContact().unit_normal([[0.0, 0.0, -9.81]]), [0.0, 0.0, 1.0])
    builder.add_contact_point(0, (0.0, -1.0, 0.0))
    rollout = ArticulationRollout(builder.finalize(), 1.0e-3, 1, 2, ground=GroundContact())
    assert rollout.shape("contact_point") == (1, 3) and rollout.shape("contact_ke") == (1,)
    with pytest.raises(ParameterError, match="unknown parameter 'contact_ke'"):
        ArticulationRollout(builder.finalize(), 1.0e-3, 1, 2).rollout({"contact_ke": 1.0})
