"""Captured rollouts (Simulation(graph=True), wsim.bridge.GraphedProgram): the forward and backward
passes recorded once as Warp graphs and replayed give the tape's outputs and gradients, bit for bit on
the CPU, call after call."""

from pathlib import Path

import pytest
import torch

from conftest import requires_cuda
from wsim.config import load_config
from wsim.errors import ConfigError, ParameterError, SimulationError
from wsim.scene import build_scene
from wsim.simulation import Simulation

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHORT = ["sim.dt=0.00025", "sim.substeps=10", "sim.frames=9", "contact.smoothing=0.01", "contact.margin=0.0"]
# a box sliding on the ground (rigid contact and friction), a soft ball landing (tetrahedral FEM and
# particle contact) and a cloth landing (stretch, bending, particle contact)
SCENES = {
    "box-drop": (["bodies.0.position=[0.0, 0.102, 0.0]", "bodies.0.velocity=[1.5, -1.0, 0.5]"],
                 [{"density": 450.0, "ke": 2.0e4, "mu": 0.4, "kf": 20.0, "velocity": [[1.5, -1.0, 0.5]]},
                  {"density": 900.0, "ke": 1.0e4, "mu": 0.6, "kf": 50.0, "velocity": [[0.5, -1.0, 0.2]]}]),
    "soft-ball": (["soft_bodies.0.position=[0.0, 0.101, 0.0]", "soft_bodies.0.velocity=[0.5, -1.0, 0.0]"],
                  [{"young_modulus": 3.0e4, "kd": 3.0}, {"young_modulus": 5.0e4, "kd": 1.0}]),
    "cloth-drop": (["cloths.0.position=[0.0, 0.06, 0.0]"],
                   [{"particle_velocity": [[0.0, -1.5, 0.3]]}, {"particle_velocity": [[0.2, -1.0, 0.0]]}]),
}


def simulations(name: str, device: str = "cpu"):
    config = load_config(CONFIGS / f"{name}.yaml", SHORT + SCENES[name][0])
    plain = build_scene(config, device).simulation
    graphed = build_scene(config.model_copy(update={"sim": config.sim.model_copy(update={"graph": True})}),
                          device).simulation
    return plain, graphed


def run(sim, values: dict, seed: int):
    leaves = {k: torch.as_tensor(v, dtype=torch.float32, device=sim.torch_device).clone().requires_grad_(True)
              for k, v in values.items()}
    out = sim.rollout(leaves)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.device)
    (weight * out).sum().backward()
    return out.detach(), {k: v.grad for k, v in leaves.items()}


@pytest.mark.parametrize("name", sorted(SCENES))
def test_replayed_graphs_give_the_tapes_outputs_and_gradients_bit_for_bit(name):
    plain, graphed = simulations(name)
    assert graphed.graphed is not None and plain.graphed is None
    calls = SCENES[name][1] * 2  # the inputs change from call to call; gradients must not accumulate
    for seed, values in enumerate(calls):
        out, grads = run(plain, values, seed)
        replayed, replayed_grads = run(graphed, values, seed)
        assert torch.equal(out, replayed)
        for key in values:
            assert torch.count_nonzero(grads[key]) > 0, key
            assert torch.equal(grads[key], replayed_grads[key]), key
        with torch.no_grad():  # a forward pass with no gradient in between replays the same graph
            assert torch.equal(graphed.rollout(dict(values)), plain.rollout(dict(values)))
    assert graphed.graphed.captures == 1  # captured once for these input names and shapes, not per call


def test_a_graphed_blow_up_names_its_step_and_the_next_rollout_starts_clean():
    plain, graphed = simulations("box-drop")
    good, bad = {"ke": 2.0e4, "kd": 5.0}, {"ke": 1.0e12, "kd": 0.0}
    run(graphed, good, 0)
    with pytest.raises(SimulationError) as replayed:
        graphed.rollout({k: torch.tensor(v) for k, v in bad.items()})
    with pytest.raises(SimulationError) as taped:
        plain.rollout({k: torch.tensor(v) for k, v in bad.items()})
    assert str(replayed.value) == str(taped.value) and "physics step" in str(replayed.value)
    out, _ = run(graphed, good, 0)  # the NaN flag is reset by the replay itself
    assert torch.equal(out, run(plain, good, 0)[0])


def test_a_backward_pass_after_another_forward_pass_is_refused():
    _, graphed = simulations("box-drop")
    mu = torch.tensor(0.4, requires_grad=True)
    first = graphed.rollout({"mu": mu})
    graphed.rollout({"mu": torch.tensor(0.6)})  # overwrites the buffers the first backward would read
    with pytest.raises(RuntimeError, match="backward"):
        first.sum().backward()
    second = graphed.rollout({"mu": mu})
    second.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once"):  # its state gradients are no longer zero
        second.sum().backward()
    # other input names capture again (one capture is kept: the latest)
    graphed.rollout({"mu": mu, "kf": torch.tensor(30.0)}).sum().backward()
    assert graphed.graphed.captures == 2 and mu.grad is not None


def test_graph_and_checkpointing_exclude_each_other():
    with pytest.raises(ConfigError, match="checkpoint_every"):
        load_config(CONFIGS / "box-drop.yaml", ["sim.graph=true", "sim.checkpoint_every=2"])
    from wsim.sysid import load_experiment

    with pytest.raises(ConfigError, match="sim.graph"):  # articulated scenes run on tapes
        load_experiment("pendulum", ["scene.sim.graph=true"])
    plain, _ = simulations("box-drop")
    sim = Simulation(plain.model, plain.dt, plain.substeps, plain.frames, graph=True, checkpoint_every=2)
    with pytest.raises(ParameterError, match="graph"):
        sim.rollout({"mu": torch.tensor(0.4)})


@requires_cuda
@pytest.mark.parametrize("name", sorted(SCENES))
def test_cuda_graphs_give_the_tapes_outputs_and_gradients(name):
    plain, graphed = simulations(name, "cuda:0")
    for seed, values in enumerate(SCENES[name][1] * 2):
        out, grads = run(plain, values, seed)
        replayed, replayed_grads = run(graphed, values, seed)
        torch.testing.assert_close(replayed, out, rtol=1e-5, atol=1e-6)
        for key in values:
            torch.testing.assert_close(replayed_grads[key], grads[key], rtol=1e-4, atol=1e-6)


def test_where_capture_fails_the_rollouts_run_on_tapes_with_a_warning(monkeypatch):
    import warp as wp

    plain, graphed = simulations("box-drop")

    def refuse(*args, **kwargs):
        raise RuntimeError("no capture on this device")

    monkeypatch.setattr(wp, "ScopedCapture", refuse)
    values = SCENES["box-drop"][1][0]
    with pytest.warns(RuntimeWarning, match="no capture on this device"):
        out, grads = run(graphed, values, 0)
    reference, reference_grads = run(plain, values, 0)
    assert torch.equal(out, reference) and all(torch.equal(grads[k], reference_grads[k]) for k in values)
    assert graphed.graphed.failed and graphed.graphed.captures == 0


def test_while_captures_are_paused_a_new_capture_waits_and_the_call_runs_on_a_tape():
    """wsim.bridge.captures_paused (open while lockstep threads compute: a CPU capture in Warp records
    every thread's launches): a call with new input names runs on a tape, equal to the plain rollout, and
    the capture happens at the first such call after the pause."""
    from wsim.bridge import captures_paused

    plain, graphed = simulations("soft-ball")
    values = SCENES["soft-ball"][1][0]
    run(graphed, values, 0)
    assert graphed.graphed.captures == 1
    fewer = {"young_modulus": values["young_modulus"]}  # other input names: another capture is due
    with captures_paused():
        out, grads = run(graphed, fewer, 1)
        assert graphed.graphed.captures == 1
    expected, expected_grads = run(plain, fewer, 1)
    assert torch.equal(out, expected) and torch.equal(grads["young_modulus"], expected_grads["young_modulus"])
    replayed, _ = run(graphed, fewer, 1)
    assert graphed.graphed.captures == 2 and torch.equal(replayed, expected)


def test_a_batch_of_graphed_scenes_replays_one_graph_and_equals_the_single_rollouts():
    from wsim.batch import BatchedSimulation

    pairs = [simulations("box-drop"), simulations("soft-ball")]
    batch = BatchedSimulation([graphed for _, graphed in pairs])
    assert batch.simulation.graphed is not None
    for seed in range(2):  # twice: the second call replays
        values = [SCENES["box-drop"][1][seed], SCENES["soft-ball"][1][seed]]
        leaves = [{k: torch.as_tensor(v, dtype=torch.float32).clone().requires_grad_(True) for k, v in p.items()}
                  for p in values]
        outs = batch.rollout(leaves)
        weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(i)) for i, o in enumerate(outs)]
        sum((w * o).sum() for w, o in zip(weights, outs)).backward()
        for (plain, _), p, o, x, i in zip(pairs, values, outs, leaves, range(2)):
            single, grads = run(plain, p, i)
            assert torch.equal(single, o.detach())
            assert all(torch.equal(grads[k], x[k].grad) for k in p)
    assert batch.simulation.graphed.failed is None and batch.simulation.graphed.captures == 1
