"""Runs never lie: a rigid body that runs away while staying finite raises SimulationError naming the step.

The four cases below used to exit 0 with the box of box-drop (dropped from 0.25 m) kilometres up:
``sim.dt = 0.02`` (2.7 km), ``sim.dt = 0.5`` (2.5e7 m), ``contact.ke = 1e30`` (2.5e21 m) and a box
1e-7 m thick (6 km). Every shipped scene must run without tripping the check, with a wide margin.
"""

import glob
import re
from pathlib import Path

import pytest
import torch

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
    # measured over the full scenes: at most 0.07 (energy) and 0.005 (step length, distance)
    assert max(ratios) < 0.25, ratios
