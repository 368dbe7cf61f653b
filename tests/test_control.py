"""Visuomotor control (issue 6): policy, per-triangle activation, and small control-walker runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from wsim.geometry import cloth as cloth_mesh
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
    assert float(out.detach().abs().max()) <= 0.25
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


WALKER_SMALL = ["sim.frames=26", "render.size=40", "render.video_size=48", "render.blur_start=5", "optim.iterations=6",
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
        "cloth.triangles=[64, 128]", "sim.frames=31", "render.size=48", "render.blur_start=12", "optim.iterations=12",
        "methods=[gradsim, random]", "video=false", "usd=false", "optim.reached=0.05"])
    report = run_control(config, tmp_path, "cpu", instances=1, progress=False)
    methods = report["results"][0]["methods"]
    gradsim = methods["gradsim"]
    info = report["results"][0]["instance"]
    assert 64 <= info["triangles"] <= 128
    assert gradsim["final_image_loss"] < 0.2 * gradsim["initial_image_loss"]
    assert gradsim["final_distance"] < 0.2 * gradsim["initial_distance"]
    assert gradsim["reached"] and gradsim["final_distance"] < config.optim.reached
    assert not methods["random"]["reached"]


def test_landed_cloth_adjoint_matches_finite_differences():
    """The cloth's ground contact is scaled to its lightest particle: the gradient of where it lands with
    respect to its initial velocity is exact (with kd dt / m > 1 it pointed anywhere)."""
    from wsim.control.tasks import ControlTask

    config = load_control("control-cloth", ["cloth.triangles=[64, 64]", "sim.frames=31", "render.size=16"])
    task = ControlTask(config, 4, "cpu")
    velocity = torch.tensor([0.3, 0.5, -0.2])

    def landed(v):
        vertices = task.rollout({"particle_velocity": v})
        assert float(vertices[-1, :, 1].detach().max()) < 0.05  # on the ground
        return task.com(vertices[-1])

    adjoint = []
    for i in range(3):
        v = velocity.clone().requires_grad_(True)
        adjoint.append(torch.autograd.grad(landed(v)[i], v)[0])
    adjoint = torch.stack(adjoint)
    eps = 1e-2
    fd = torch.stack([(landed(velocity + eps * e) - landed(velocity - eps * e)) / (2 * eps) for e in torch.eye(3)], 1)
    # within 5 % of the largest entry (the landing kinks make central differences themselves approximate);
    # with the contact of before (kd dt / m = 2.5) entries were off by 3x the largest one
    assert torch.allclose(adjoint, fd, atol=0.05 * float(fd.abs().max())), (adjoint, fd)


def test_wsim_run_dispatches_control_configs(tmp_path):
    from wsim.cli import main
    from wsim.control.config import control_config_path

    assert control_config_path("control-walker") is not None
    assert control_config_path("rigid-mass") is None  # system identification stays with wsim run's sysid
    code = main(["run", "control-walker", "--set", "sim.frames=6", "--set", "optim.iterations=1", "--set",
                 "methods=[gradsim]", "--set", "video=false", "--set", "usd=false", "--out", str(tmp_path), "--quiet"])
    assert code == 0 and (tmp_path / "results.json").is_file()


CLOTH_TINY = ["cloth.triangles=[64, 64]", "sim.frames=16", "render.size=32", "optim.iterations=4",
              "methods=[gradsim, random]", "video=false", "usd=false"]


def _trace(report):
    """Per method: every iteration's (loss, image loss, COM loss, distance) and the selected result."""
    methods = report["results"][0]["methods"] if "results" in report else report["methods"]
    return {m: ([(h["loss"], h["image_loss"], h["com_loss"], h["distance"]) for h in r["history"]],
                r["final_distance"], r["selected_iteration"]) for m, r in methods.items()}


def test_interrupted_control_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    from wsim.control.tasks import ControlTask

    config = load_control("control-cloth", CLOTH_TINY)
    reference = _trace(run_control(config, tmp_path / "whole", "cpu", instances=1, progress=False))
    rollout = ControlTask.rollout
    for stop_at in (3, 7):  # Ctrl-C inside gradsim's 3rd iteration, then (resumed) inside random's 4th draw
        calls = {"n": 0}

        def interrupting(self, inputs, stop_at=stop_at):
            calls["n"] += 1
            if calls["n"] == stop_at:
                raise KeyboardInterrupt
            return rollout(self, inputs)

        monkeypatch.setattr(ControlTask, "rollout", interrupting)
        with pytest.raises(KeyboardInterrupt):
            run_control(config, tmp_path / "split", "cpu", instances=1, progress=False, resume=stop_at != 3)
        checkpoint = torch.load(tmp_path / "split" / "instance_0" / "checkpoint.pt", weights_only=True)["state"]
        assert checkpoint["current"]["method"] == ("gradsim" if stop_at == 3 else "random")
        assert checkpoint["current"]["iteration"] == (2 if stop_at == 3 else 3)
        assert not (tmp_path / "split" / "instance_0" / "results.json").exists()
    monkeypatch.setattr(ControlTask, "rollout", rollout)
    resumed = run_control(config, tmp_path / "split", "cpu", instances=1, progress=False, resume=True)
    assert _trace(resumed) == reference
    assert not (tmp_path / "split" / "instance_0" / "checkpoint.pt").exists()
    # a finished instance is reused as it is; another config's checkpoint is refused
    again = run_control(config, tmp_path / "split", "cpu", instances=1, progress=False, resume=True)
    assert _trace(again) == reference
    other = load_control("control-cloth", CLOTH_TINY + ["optim.lr=0.1"])
    (tmp_path / "split" / "instance_0" / "results.json").unlink()
    torch.save({"fingerprint": "0" * 16, "state": {"done": {}, "current": None}},
               tmp_path / "split" / "instance_0" / "checkpoint.pt")
    with pytest.raises(ConfigError, match="different config"):
        run_control(other, tmp_path / "split", "cpu", instances=1, progress=False, resume=True)
    # a corrupt checkpoint is a clear error, and one that would run code when unpickled is refused
    (tmp_path / "split" / "instance_0" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be read"):
        run_control(other, tmp_path / "split", "cpu", instances=1, progress=False, resume=True)


def test_wsim_run_resume_flag_reaches_control(tmp_path):
    from wsim.cli import main

    args = ["run", "control-cloth", "--out", str(tmp_path), "--quiet"]
    for item in CLOTH_TINY + ["optim.iterations=1", "methods=[gradsim]"]:
        args += ["--set", item]
    assert main(args) == 0
    first = json.loads((tmp_path / "instance_0" / "results.json").read_text())
    assert main(args + ["--resume"]) == 0  # reuses the finished instance
    again = json.loads((tmp_path / "instance_0" / "results.json").read_text())
    assert again == first
