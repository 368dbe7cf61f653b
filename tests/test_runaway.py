"""Runs never lie: a rigid body that runs away while staying finite raises SimulationError naming the step.

The four cases below used to exit 0 with the box of box-drop (dropped from 0.25 m) kilometres up:
``sim.dt = 0.02`` (2.7 km), ``sim.dt = 0.5`` (2.5e7 m), ``contact.ke = 1e30`` (2.5e21 m) and a box
1e-7 m thick (6 km). Every shipped scene must run without tripping the check, with a wide margin.
"""

import glob
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import warp as wp

from wsim.config import load_config
from wsim.errors import SimulationError
from wsim.scene import build_scene

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def rollout(name, overrides):
    scene = build_scene(load_config(CONFIGS / f"{name}.yaml", overrides), "cpu")
    with torch.no_grad():
        scene.simulation.rollout()
    return scene.simulation


@pytest.mark.parametrize("overrides, step", [
    (["sim.dt=0.02", "sim.frames=3"], 9),
    (["sim.dt=0.5", "sim.frames=2"], 1),
    (["contact.ke=1e30", "sim.frames=21"], None),
    (["bodies.0.shape.size=[0.2,1e-7,0.2]", "sim.frames=26"], None),
])
def test_runaway_rigid_body_raises_naming_the_step(overrides, step):
    with pytest.raises(SimulationError) as caught:
        rollout("box-drop", overrides)
    message = str(caught.value)
    found = re.search(r"ran away at physics step (\d+) \(t = [^,]+, between frames (\d+) and (\d+)\)", message)
    assert found, message
    reported = int(found.group(1))
    substeps = 20
    assert int(found.group(2)) == reported // substeps
    if step is not None:
        assert reported == step, message
    assert "body 'box'" in message and "sim.dt" in message and "contact.ke" in message


def test_the_reported_step_is_where_the_energy_jumps():
    """The step named is the first whose state exceeds the bound; the state before it is within it."""
    scene = build_scene(load_config(CONFIGS / "box-drop.yaml", ["sim.dt=0.02", "sim.frames=3"]), "cpu")
    sim = scene.simulation
    sim.check_runaway = False
    with torch.no_grad():
        sim.rollout()  # no error when the check is off: the result is there to inspect
    height = sim.last_buffers["body_q"].numpy()[:, 0, 1]
    assert height.max() > 1.0  # it really ran away (dropped from 0.25 m)
    sim.check_runaway = True
    with pytest.raises(SimulationError, match="physics step 9 "):
        with torch.no_grad():
            sim.rollout()


@pytest.mark.parametrize("path", sorted(glob.glob(str(CONFIGS / "*.yaml"))), ids=lambda p: Path(p).stem)
def test_shipped_scenes_stay_far_from_the_bounds(path):
    scene = build_scene(load_config(path, ["sim.frames=21"]), "cpu")
    sim = scene.simulation
    with torch.no_grad():
        sim.rollout()
    ratios = [float(r) for r in sim._runaway.last_ratios]
    # measured over the full scenes: at most 0.07 (spring-chain, particle distance); body energy 0.02
    assert max(ratios) < 0.25, ratios


def test_runaway_particles_raise_before_the_state_overflows():
    """A stiff spring pair at a step just past its explicit limit (omega dt = 2.05): the oscillation grows
    by about 1.4x a step and stays finite for hundreds of steps; the step-length bound names it early."""
    from wsim.builder import ModelBuilder
    from wsim.simulation import Simulation

    builder = ModelBuilder(ground=False, gravity=(0.0, 0.0, 0.0))
    builder.add_particle((0.0, 1.0, 0.0), mass=1.0)
    builder.add_particle((0.1, 1.0, 0.0), velocity=(1e-3, 0.0, 0.0), mass=1.0)
    builder.add_spring(0, 1, 5.0e3)
    omega = (2 * 5.0e3 / 1.0) ** 0.5
    sim = Simulation(builder.finalize("cpu"), 2.05 / omega, 10, 11)  # 100 steps (non-finite from step 154)
    with pytest.raises(SimulationError, match=r"ran away at physics step \d+ .*particle \d moved") as caught:
        with torch.no_grad():
            sim.rollout()
    step = int(re.search(r"physics step (\d+)", str(caught.value)).group(1))
    sim.check_runaway = False
    with torch.no_grad():
        sim.rollout()
    x = sim.last_buffers["particle_q"].numpy()
    assert np.isfinite(x).all()  # finite: the NaN check alone would have passed it
    assert step < 40  # measured: step 19, 135 steps before the state overflows


def test_particle_far_from_the_scene_is_named_with_its_step():
    """The distance bound, on the rows' maxima: a particle placed far away in one row of an otherwise
    healthy rollout (a state the integrator cannot reach that fast, so the test edits the buffers) is
    named with its step, from Warp arrays and from torch views (a checkpointed segment) alike."""
    from wsim.builder import ModelBuilder
    from wsim.simulation import Simulation

    builder = ModelBuilder(ground=False)
    for k in range(3):
        builder.add_particle((0.1 * k, 1.0, 0.0), mass=1.0)
    sim = Simulation(builder.finalize("cpu"), 1e-3, 4, 5)
    with torch.no_grad():
        sim.rollout()
    check = sim.runaway_check()
    assert check.check(sim._last_params, sim.last_buffers) is None
    ratio = float(check.last_ratios[0])
    assert 0.0 < ratio < 0.25
    views = {name: wp.to_torch(array).clone() for name, array in sim.last_buffers.items() if array is not None}
    views["particle_q"][7, 2] = torch.tensor([1.0e4, 1.0, 0.0])
    message = check.check(sim._last_params, views)
    assert message is not None and "physics step 6 " in message, message
    assert re.search(r"particle 2 is 1e\+04 m from the scene's centre", message), message
    views["particle_q"][7, 2] = views["particle_q"][6, 2]
    views["particle_qd"][3, 1] = torch.tensor([0.0, 1.0e6, 0.0])
    message = check.check(sim._last_params, views)
    assert message is not None and "physics step 2 " in message and "particle 1 moved 1e+03 m" in message, message
