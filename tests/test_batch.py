"""Batched scenes (wsim.batch) and system identification in lockstep (wsim.sysid.lockstep): a batch is
N single runs, bit for bit on the CPU."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from wsim.batch import BatchedSimulation, BatchError, concat_models
from wsim.config import load_config
from wsim.errors import ParameterError, SimulationError
from wsim.scene import build_scene

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BOX_ON_GROUND = ["bodies.0.position=[0.0, 0.102, 0.0]", "bodies.0.velocity=[1.5, -1.0, 0.5]"]
SHORT = ["sim.dt=0.00025", "sim.substeps=10", "sim.frames=9", "contact.smoothing=0.01", "contact.margin=0.0"]


def scene(name: str, *overrides: str):
    return build_scene(load_config(CONFIGS / f"{name}.yaml", SHORT + list(overrides)), "cpu")


def leaves(values: dict) -> dict:
    return {k: torch.as_tensor(v, dtype=torch.float32).clone().requires_grad_(True) for k, v in values.items()}


def test_a_batch_of_different_scenes_is_each_single_rollout_bit_for_bit():
    # a rigid box on the ground, the same box heavier and tilted, a soft ball (tetrahedra) and a cloth:
    # different meshes, element kinds and materials in one Model
    # (each starts touching the ground, so that the contact parameters act within the short rollout)
    box = BOX_ON_GROUND
    scenes = [scene("box-drop", *box), scene("box-drop", *box, "bodies.0.density=900"),
              scene("soft-ball", "soft_bodies.0.position=[0.0, 0.101, 0.0]", "soft_bodies.0.velocity=[0.5, -1.0, 0.0]"),
              scene("cloth-drop", "cloths.0.position=[0.0, 0.06, 0.0]")]
    params = [{"density": 450.0, "ke": 2.0e4, "mu": 0.4}, {"kf": 50.0, "velocity": [[0.5, -1.0, 0.2]]},
              {"young_modulus": 3.0e4, "kd": 3.0}, {"particle_velocity": [[0.0, -1.5, 0.3]]}]
    batch = BatchedSimulation([s.simulation for s in scenes])
    inputs = [leaves(p) for p in params]
    outs = batch.rollout(inputs)
    weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(i)) for i, o in enumerate(outs)]
    sum((w * o).sum() for w, o in zip(weights, outs)).backward()
    for s, p, o, x, w in zip(scenes, params, outs, inputs, weights):
        single_inputs = leaves(p)
        single = s.simulation.rollout(single_inputs)
        (w * single).sum().backward()
        assert single.shape == o.shape
        assert torch.equal(single, o)
        for name in p:
            assert x[name].grad is not None and torch.count_nonzero(x[name].grad) > 0, name
            assert torch.equal(x[name].grad, single_inputs[name].grad), name
    # the scenes really are side by side: every body and particle once, the materials one set per scene
    model, layout = concat_models([s.model for s in scenes])
    assert model.body_count == sum(s.model.body_count for s in scenes)
    assert model.particle_count == sum(s.model.particle_count for s in scenes)
    assert model.material_count == sum(s.model.material_count for s in scenes)
    assert layout.columns(3, "particle").start == scenes[2].model.particle_count


def test_a_scene_that_blows_up_is_named_and_the_others_are_not_affected():
    scenes = [scene("box-drop", *BOX_ON_GROUND) for _ in range(3)]
    batch = BatchedSimulation([s.simulation for s in scenes])
    with pytest.raises(BatchError) as caught:
        batch.rollout([{}, {"ke": 1.0e12, "kd": 0.0}, {}])
    assert set(caught.value.errors) == {1}
    alone = pytest.raises(SimulationError)
    with alone:
        scenes[1].simulation.rollout({"ke": 1.0e12, "kd": 0.0})
    assert str(caught.value.errors[1]) == str(alone.excinfo.value)


def test_a_batch_refuses_scenes_it_cannot_run_together():
    with pytest.raises(ParameterError, match="frames"):
        BatchedSimulation([scene("box-drop").simulation, scene("box-drop", "sim.frames=5").simulation])
    with pytest.raises(ParameterError, match="ground_height"):
        BatchedSimulation([scene("box-drop").simulation, scene("box-drop", "ground.height=0.5").simulation])
    batch = BatchedSimulation([scene("box-drop").simulation, scene("box-drop").simulation])
    with pytest.raises(ParameterError, match="gravity"):
        batch.rollout([{"gravity": [0.0, -9.8, 0.0]}, {"gravity": [0.0, -1.0, 0.0]}])


SYSID = ["render.resolution=16", "scene.sim.frames=8", "optim.iterations=6", "optim.polish_iterations=2",
         "loss.horizon_iterations=3", "seed=1000"]


def test_system_identification_in_lockstep_gives_the_results_of_one_instance_at_a_time(tmp_path):
    from wsim.harness.runner import Batched, executing
    from wsim.sysid import load_experiment, run_experiment

    config = load_experiment("rigid-mass", SYSID)
    alone = run_experiment(config, tmp_path / "alone", "cpu", 3, progress=False, write_outputs=False)
    with executing(Batched(3)):
        batched = run_experiment(config, tmp_path / "batched", "cpu", 3, progress=False, write_outputs=False)
    for a, b in zip(alone["results"], batched["results"]):
        assert a["seed"] == b["seed"]
        assert a["estimate"] == b["estimate"] and a["final_loss"] == b["final_loss"]
        assert a["loss_history"] == b["loss_history"] and a["status"] == b["status"]
        assert a["uncertainty"] == b["uncertainty"]
    assert alone["summary"]["rows"] == batched["summary"]["rows"]


@pytest.mark.parametrize("cores", [None, 1])
def test_lockstep_serves_concurrent_rollouts_in_one_batched_pass(tmp_path, cores):
    """Three members share one forward and one backward pass, also when they compute one at a time
    (``cores=1``: each waits for its turn, and the last to wait serves the batch)."""
    from wsim.sysid import load_experiment
    from wsim.sysid.instance import Instance
    from wsim.sysid.lockstep import Lockstep

    config = load_experiment("rigid-mass", SYSID)
    instances = [Instance(config, seed, tmp_path / str(seed)) for seed in (1000, 1001, 1002)]
    lockstep = Lockstep(instances, cores=cores)
    values = [leaves({"density": 3.0 + k}) for k in range(3)]
    outs, grads = [None] * 3, [None] * 3

    def work(k):
        with lockstep.joined(k):
            vertices = instances[k].rollout(values[k])
            (vertices ** 2).sum().backward()
            outs[k] = vertices.detach()
            grads[k] = values[k]["density"].grad.clone()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert lockstep.served == {"batched": 3, "alone": 0, "forward_passes": 1, "backward_passes": 1}
    for k, inst in enumerate(instances):
        single = leaves({"density": 3.0 + k})
        vertices = inst.sim.rollout(single)
        (vertices ** 2).sum().backward()
        assert torch.equal(outs[k], vertices.detach()) and torch.equal(grads[k], single["density"].grad)
        assert inst.simulator is inst.sim  # back to its own simulation after the optimisation


def test_batch_flag_errors(tmp_path, capsys):
    from wsim.cli import main

    assert main(["run", "rigid-mass", "--batch", "2", "--executor", "ray", "--out", str(tmp_path)]) == 2
    assert "--batch goes with the local executor" in capsys.readouterr().err
    assert main(["run", "rigid-mass", "--batch", "0", "--out", str(tmp_path)]) == 2
    assert "--batch must be an integer >= 1" in capsys.readouterr().err
