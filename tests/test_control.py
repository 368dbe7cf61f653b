"""Visuomotor control (issue 6): policy, per-triangle activation, and small control-walker runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from wsim import cloth_mesh
from wsim.builder import ModelBuilder
from wsim.control import SinusoidPolicy, interval_times, load_control, run_control
from wsim.errors import ConfigError
from wsim.gradcheck import gradcheck
from wsim.simulation import Simulation


def test_policy_is_sinusoids_linear_tanh_scaled():
    policy = SinusoidPolicy(elements=7, sinusoids=8, frequency=2.0, scale=0.25, init_std=3.0,
                            generator=torch.Generator().manual_seed(0))
    times = interval_times(frames=11, dt=1e-3, substeps=20)
    assert times.shape == (10,) and math.isclose(float(times[1]), 0.02, rel_tol=1e-6)
    out = policy(times)
    assert out.shape == (10, 7)
    assert float(out.abs().max()) <= 0.25
    features = policy.features(times)
    phases = 2 * math.pi * torch.arange(8) / 8
    expected = torch.sin(2 * math.pi * 2.0 * times[:, None] + phases)
    assert torch.allclose(features, expected, atol=1e-6)
    assert torch.allclose(out, 0.25 * torch.tanh(expected @ policy.weight.detach().t()), atol=1e-6)
    assert [name for name, _ in policy.named_parameters()] == ["weight"]  # no bias


def _membrane(ground=False):
    builder = ModelBuilder(ground=ground, gravity=(0.0, 0.0, 0.0))
    builder.add_cloth(cloth_mesh.grid((0.3, 0.3), (2, 2)), density=0.3, mu=5.0, lam=8.0, damping=0.01)
    return builder.finalize("cpu")


def test_triangle_activation_contracts_the_membrane():
    model = _membrane()
    sim = Simulation(model, 2e-3, 25, 9)
    areas = []
    for alpha in (0.0, 0.3, -0.3):
        control = torch.full((sim.frames - 1, model.tri_count), alpha)
        x = sim.rollout({"control_tri_activation": control})[-1].detach().numpy()
        faces = model.tri_indices.numpy()
        cross = np.cross(x[faces[:, 1]] - x[faces[:, 0]], x[faces[:, 2]] - x[faces[:, 0]])
        areas.append(0.5 * np.linalg.norm(cross, axis=1).sum())
    rest = 0.09
    assert abs(areas[0] - rest) < 1e-4 * rest
    assert areas[1] < 0.9 * rest and areas[2] > 1.1 * rest


def test_triangle_activation_gradient_matches_finite_differences():
    model = _membrane()
    rng = np.random.default_rng(1)
    rest = model.defaults["particle_position"]
    model.defaults["particle_position"] = rest + 0.01 * rng.standard_normal(rest.shape)
    model.defaults["particle_velocity"] = 0.1 * rng.standard_normal(rest.shape)
    sim = Simulation(model, 2e-3, 5, 6)
    control = torch.as_tensor(0.1 * rng.standard_normal((sim.frames - 1, model.tri_count)), dtype=torch.float32)
    rows = gradcheck(sim, ["control_tri_activation", "tri_activation"], eps=1e-2, seed=3,
                     base={"control_tri_activation": control})
    failures = [(r.name, r.adjoint, r.finite_difference, r.relative_error) for r in rows if r.relative_error > 1e-2]
    assert not failures, failures


WALKER_SMALL = ["sim.frames=26", "render.size=40", "render.video_size=48", "optim.iterations=6", "optim.lr=0.1",
                "walker.goal_distance=[0.15, 0.2]", "optim.reached=0.05"]


@pytest.fixture(scope="module")
def walker_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("control-walker")
    config = load_control("control-walker", WALKER_SMALL)
    return out, run_control(config, out, "cpu", instances=1, progress=False)


def test_walker_image_only_reaches_goal_random_does_not(walker_run):
    out, report = walker_run
    methods = report["results"][0]["methods"]
    gradsim, random = methods["gradsim"], methods["random"]
    first, last = gradsim["history"][0], gradsim["history"][-1]
    assert last["image_loss"] < 0.6 * first["image_loss"]
    assert last["distance"] < 0.4 * first["distance"]
    assert gradsim["reached"] and gradsim["iterations_to_reach"] <= 6
    assert not random["reached"]
    assert min(h["distance"] for h in random["history"]) > 0.5 * random["initial_distance"]
    assert methods["diffphysics"]["final_distance"] < methods["diffphysics"]["initial_distance"]


def test_control_outputs(walker_run):
    out, report = walker_run
    data = json.loads((out / "results.json").read_text())
    assert set(data["summary"]["methods"]) == {"gradsim", "diffphysics", "random"}
    assert (out / "convergence.png").stat().st_size > 0 and (out / "summary.md").is_file()
    folder = out / "instance_0"
    for name in ("target.png", "gradsim.mp4", "gradsim.usda", "random.mp4", "results.json"):
        assert (folder / name).stat().st_size > 0, name
    assert "gradsim" in report["text"] and "random" in report["text"]


def test_control_config_errors():
    with pytest.raises(ConfigError, match="scene"):
        load_control("control-walker", ["scene=boat"])
    with pytest.raises(ConfigError, match="methods"):
        load_control("control-walker", ["methods=[magic]"])
    with pytest.raises(ConfigError, match="unknown config key"):
        load_control("control-walker", ["walker.legs=3"])


def test_fem_image_only_moves_towards_goal(tmp_path):
    config = load_control("control-fem", [
        "fem.teeth=6", "fem.rings=2", "fem.layers=1", "sim.frames=21", "render.size=40", "optim.iterations=5",
        "methods=[gradsim, random]", "video=false", "usd=false", "fem.goal_distance=[0.15, 0.2]"])
    report = run_control(config, tmp_path, "cpu", instances=1, progress=False)
    methods = report["results"][0]["methods"]
    history = methods["gradsim"]["history"]
    assert report["results"][0]["instance"]["tetrahedra"] == 144
    assert history[-1]["image_loss"] < 0.8 * history[0]["image_loss"]
    assert history[-1]["distance"] < 0.8 * history[0]["distance"]
    assert not methods["random"]["reached"]


def test_cloth_image_only_reaches_goal(tmp_path):
    config = load_control("control-cloth", [
        "cloth.triangles=[64, 128]", "sim.frames=31", "render.size=48", "optim.iterations=10",
        "methods=[gradsim, random]", "video=false", "usd=false", "optim.reached=0.1"])
    report = run_control(config, tmp_path, "cpu", instances=1, progress=False)
    methods = report["results"][0]["methods"]
    gradsim = methods["gradsim"]
    info = report["results"][0]["instance"]
    assert 64 <= info["triangles"] <= 128
    assert gradsim["final_image_loss"] < 0.5 * gradsim["initial_image_loss"]
    assert gradsim["final_distance"] < 0.5 * gradsim["initial_distance"]
    assert not methods["random"]["reached"]


def test_wsim_run_dispatches_control_configs(tmp_path):
    from wsim.cli import main
    from wsim.control.config import control_config_path

    assert control_config_path("control-walker") is not None
    assert control_config_path("rigid-mass") is None  # system identification stays with wsim run's sysid
    code = main(["run", "control-walker", "--set", "sim.frames=6", "--set", "optim.iterations=1", "--set",
                 "methods=[gradsim]", "--set", "video=false", "--set", "usd=false", "--out", str(tmp_path), "--quiet"])
    assert code == 0 and (tmp_path / "results.json").is_file()
