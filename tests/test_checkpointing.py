"""Gradient checkpointing (``Simulation(checkpoint_every=K)``): the same outputs, gradients and errors as
the single tape, for segments that divide the frame intervals and segments that do not.

Tolerance: the checkpointed backward pass runs the single tape's adjoint kernels in the same order and
accumulates every parameter adjoint in the same float32 arrays, so on CPU the gradients are expected to
be identical; they are asserted to agree within 1e-6 of the largest component of each gradient
(float32 round-off), and the forward vertices exactly.
"""

import re

import numpy as np
import pytest
import torch

from wsim import Control, ModelBuilder, Simulation, primitive
from wsim.config import load_config
from wsim.errors import ConfigError, ParameterError, SimulationError
from wsim.scene import build_scene

RELATIVE = 1e-6


def scene_simulation(name, overrides):
    return build_scene(load_config(name, overrides), "cpu").simulation


def forward_backward(sim, every, names, control_fields=None):
    """Vertices and the gradients of a fixed weighting of them with respect to ``names`` (model defaults)
    and ``control_fields`` ({field: tensor}), with ``sim.checkpoint_every = every``."""
    sim.checkpoint_every = every
    params = {name: sim.default(name).clone().requires_grad_(True) for name in names}
    control = None
    if control_fields:
        control = Control(**{k: v.clone().requires_grad_(True) for k, v in control_fields.items()})
    vertices = sim.rollout(params, control)
    weights = torch.sin(torch.arange(vertices.numel(), dtype=torch.float32)).reshape(vertices.shape)
    (vertices * weights).sum().backward()
    grads = {name: p.grad for name, p in params.items()}
    if control is not None:
        grads.update({f"control_{k}": getattr(control, k).grad for k in control_fields})
    return vertices.detach().clone(), grads


def assert_same(reference, checkpointed):
    v0, g0 = reference
    v1, g1 = checkpointed
    assert torch.equal(v0, v1)
    assert sorted(g0) == sorted(g1)
    for name in g0:
        assert g0[name] is not None and g1[name] is not None, name
        scale = float(g0[name].abs().max())
        assert scale > 0, f"{name}: the loss does not reach it; the test would prove nothing"
        difference = float((g0[name] - g1[name]).abs().max())
        assert difference <= RELATIVE * scale, (name, difference, scale)


@pytest.fixture(scope="module")
def box_drop():
    # dropped from just above the ground so that contact (ke, kd, kf, mu) starts within 15 intervals
    return scene_simulation("box-drop", ["sim.frames=16", "bodies.0.position=[0.0,0.13,0.0]"])


@pytest.mark.parametrize("every", [5, 4])  # 15 intervals: 3 segments; 4 segments, the last one of 3
def test_rigid_body_with_ground_contact_and_controls(box_drop, every):
    sim = box_drop
    names = ["density", "ke", "kd", "kf", "mu", "velocity", "angular_velocity"]
    rng = np.random.default_rng(0)
    control = {"body_force": torch.tensor(rng.normal(0.0, 1.0, (15, 1, 3)), dtype=torch.float32),
               "body_torque": torch.tensor(rng.normal(0.0, 0.05, (15, 1, 3)), dtype=torch.float32)}
    reference = forward_backward(sim, None, names, control)
    assert sim.last_buffers is not None  # the single tape ran
    checkpointed = forward_backward(sim, every, names, control)
    assert sim.last_buffers is None
    assert_same(reference, checkpointed)


@pytest.fixture(scope="module")
def soft_ball():
    return scene_simulation("soft-ball", ["sim.frames=13", "soft_bodies.0.position=[0.0,0.11,0.0]"])


@pytest.mark.parametrize("every", [3, 5])  # 12 intervals: 4 segments; 3 segments, the last one of 2
def test_fem_soft_body_with_ground_contact_and_activation(soft_ball, every):
    sim = soft_ball
    names = ["lame_mu", "lame_lambda", "particle_velocity", "ke", "mu"]
    activation = torch.linspace(-0.05, 0.05, 12 * sim.model.tet_count).reshape(12, sim.model.tet_count)
    reference = forward_backward(sim, None, names, {"tet_activation": activation})
    assert_same(reference, forward_backward(sim, every, names, {"tet_activation": activation}))


def test_push_window_split_across_segments():
    """body-impulse pushes over the first 40 steps (2 frames): segments of one frame cut the window."""
    sim = scene_simulation("body-impulse", ["sim.frames=6"])
    names = ["impulse", "density", "ke", "mu"]
    assert_same(forward_backward(sim, None, names), forward_backward(sim, 1, names))


def test_rotor_thrust_schedule():
    builder = ModelBuilder(ground=False)
    builder.add_body(primitive("box", [0.5, 0.08, 0.4]), mass=3.0, position=(0.0, 1.0, 0.0))
    for position, spin in (((0.25, 0.0, 0.0), 1), ((-0.25, 0.0, 0.0), -1)):
        builder.add_rotor(0, position, spin=spin, torque_ratio=0.016, max_thrust=30.0, thrust=16.0)
    sim = Simulation(builder.finalize("cpu", dt=1e-3), 1e-3, 10, 9)
    thrust = torch.tensor([[16.0 + k, 15.0 - 0.5 * k] for k in range(8)])
    names = ["mass", "velocity"]
    reference = forward_backward(sim, None, names, {"rotor_thrust": thrust})
    assert_same(reference, forward_backward(sim, 3, names, {"rotor_thrust": thrust}))


def test_frame_states_and_a_second_rollout_alive_at_once(box_drop):
    """frame_states() re-simulates a checkpointed rollout to the single tape's values; two checkpointed
    rollouts alive at once each differentiate their own parameters."""
    sim = box_drop
    sim.checkpoint_every = None
    with torch.no_grad():
        sim.rollout()
    reference = sim.frame_states()
    sim.checkpoint_every = 4
    density = [torch.tensor(d, requires_grad=True) for d in (400.0, 700.0)]
    first = sim.rollout({"density": density[0]})
    second = sim.rollout({"density": density[1]})
    second.sum().backward()
    first.sum().backward()
    with torch.no_grad():
        sim.rollout()
    sim.checkpoint_every = 6  # a change after the rollout does not affect its frame states
    states = sim.frame_states()
    assert sorted(states) == sorted(reference)
    for name in reference:
        np.testing.assert_array_equal(states[name], reference[name])
    sim.checkpoint_every = None
    for d in density:
        single = d.detach().clone().requires_grad_(True)
        sim.rollout({"density": single}).sum().backward()
        torch.testing.assert_close(d.grad, single.grad, rtol=RELATIVE, atol=0.0)


def blow_up(every):
    """A spring too stiff for the step (omega dt = 2.1): the oscillation grows until it overflows."""
    builder = ModelBuilder(ground=False)
    builder.add_particle((0, 0, 0), pinned=True)
    builder.add_particle((1.5, 0, 0), mass=1e-3)
    builder.add_spring(0, 1, 45.0, rest_length=1.0)
    sim = Simulation(builder.finalize("cpu"), 1e-2, 10, 41, check_runaway=False, checkpoint_every=every)
    with pytest.raises(SimulationError, match="NaN or infinite") as caught:
        sim.rollout()
    return str(caught.value)


def test_nan_check_names_the_global_step():
    message = blow_up(None)
    step = int(re.search(r"physics step (\d+)", message).group(1))
    assert step >= 60  # in the third segment or later below, so a per-segment count would show
    assert blow_up(3) == message
    assert blow_up(2) == message
    assert blow_up(7) == message


@pytest.mark.parametrize("overrides", [["sim.dt=0.02", "sim.frames=5"], ["contact.ke=1e30", "sim.frames=21"]])
def test_runaway_check_names_the_global_step(overrides):
    messages = []
    for every in (None, 2, 3):
        sim = scene_simulation("box-drop", overrides)
        sim.checkpoint_every = every
        with pytest.raises(SimulationError, match="ran away at physics step") as caught:
            with torch.no_grad():
                sim.rollout()
        messages.append(str(caught.value))
    assert messages[1] == messages[0] and messages[2] == messages[0], messages


def test_checkpoint_every_is_validated_and_long_segments_use_one_tape():
    sim = scene_simulation("box-drop", ["sim.frames=4"])
    for bad in (0, -2, 1.5, True, "3"):
        with pytest.raises(ParameterError, match="checkpoint_every must be None or an integer >= 1"):
            sim.checkpoint_every = bad
    sim.checkpoint_every = 3  # one segment would gain nothing: the single tape runs
    with torch.no_grad():
        sim.rollout()
    assert sim.last_buffers is not None


def test_runaway_margins_of_a_healthy_rollout_match(soft_ball):
    """The per-segment runaway check sees every row against the bounds of the whole rollout."""
    ratios = []
    for every in (None, 5):
        soft_ball.checkpoint_every = every
        with torch.no_grad():
            soft_ball.rollout()
        ratios.append([float(r) for r in soft_ball._runaway.last_ratios])
    assert ratios[0] == ratios[1] and max(ratios[0]) > 0


def test_the_scene_and_control_configs_reach_the_simulation():
    """``sim.checkpoint_every`` in a scene config (and a control task's) sets the rollout's segments, and
    a scene without it keeps the single tape; an experiment config's old fingerprint is unchanged."""
    from wsim.control.config import load_control
    from wsim.harness import fingerprint
    from wsim.sysid import load_experiment
    from wsim.config import to_dict

    assert scene_simulation("box-drop", ["sim.checkpoint_every=3"]).checkpoint_every == 3
    assert scene_simulation("box-drop", []).checkpoint_every is None
    assert load_control("control-walker", ["sim.checkpoint_every=5"]).sim.checkpoint_every == 5
    with pytest.raises(ConfigError, match="sim.checkpoint_every"):
        load_config("box-drop", ["sim.checkpoint_every=0"])
    plain = to_dict(load_experiment("rigid-mass"))
    assert "checkpoint_every" in plain["scene"]["sim"]
    del plain["scene"]["sim"]["checkpoint_every"]
    assert fingerprint(plain, 0, "sysid") == fingerprint(to_dict(load_experiment("rigid-mass")), 0, "sysid")
