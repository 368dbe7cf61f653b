"""The experiment harness and the optimiser interface: one step(closure) for every method, one blow-up
policy, strict JSON, checkpoints that refuse foreign or unsafe files, resume that never reuses another
config's result, and the target-noise estimate behind the honest video bound."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import torch

from wsim.errors import ConfigError, SimulationError
from wsim.export import write_json
from wsim.harness import (Experiment, RunOptions, fingerprint, load_checkpoint, output_folder, run_experiment,
                          save_checkpoint)
from wsim.optim import Optimiser
from wsim.sysid.uncertainty import target_noise


def _rosenbrock_residuals(x):
    return torch.stack([1.0 - x[0], 10.0 * (x[1] - x[0] ** 2)])


@pytest.mark.parametrize("method, lr, steps", [("adam", 0.05, 3000), ("sgd", 2e-3, 6000), ("lbfgs", 1.0, 200),
                                               ("bfgs", 0.5, 200), ("lm", 1.0, 200)])
def test_every_method_minimises_through_the_same_step_closure(method, lr, steps):
    x = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    optimiser = Optimiser([x], method, lr=lr, max_step=lr)
    for _ in range(steps):
        optimiser.step(lambda: _rosenbrock_residuals(x))
        if optimiser.converged:
            break
    assert x.detach().numpy() == pytest.approx([1.0, 1.0], abs=2e-2)
    assert optimiser.blowups == 0


@pytest.mark.parametrize("method", ["adam", "sgd", "lbfgs", "bfgs", "lm"])
def test_a_step_that_blows_up_is_undone_and_the_rate_halved(method):
    x = torch.tensor([0.5, -0.25], dtype=torch.float64, requires_grad=True)
    optimiser = Optimiser([x], method, lr=0.4)

    def exploding():
        raise SimulationError("the rollout blew up at physics step 7")

    assert math.isnan(optimiser.step(exploding))
    assert x.detach().tolist() == [0.5, -0.25]
    assert optimiser.blowups == 1 and optimiser.lr == pytest.approx(0.2)

    def non_finite_gradient():
        return (x * torch.tensor([float("inf"), 1.0], dtype=torch.float64)).sum() * 0.0 + (x ** 2).sum()

    if method != "lm":  # lm uses no gradient
        assert math.isnan(optimiser.step(non_finite_gradient))
        assert x.detach().tolist() == [0.5, -0.25] and optimiser.blowups == 2


def test_optimiser_state_round_trips_and_continues_identically(tmp_path):
    def run(steps, x):
        optimiser = Optimiser([x], "adam", lr=0.1)
        for _ in range(steps):
            optimiser.step(lambda: _rosenbrock_residuals(x))
        return optimiser

    whole = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    run(10, whole)
    split = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    first = run(4, split)
    save_checkpoint(tmp_path / "c.pt", {"optimiser": first.state_dict(), "x": split.detach()}, "abc")
    state = load_checkpoint(tmp_path / "c.pt", "abc")
    x = state["x"].clone().requires_grad_(True)
    second = Optimiser([x], "adam", lr=0.1)
    second.load_state_dict(state["optimiser"])
    for _ in range(6):
        second.step(lambda: _rosenbrock_residuals(x))
    assert x.detach().tolist() == whole.detach().tolist()


class _Payload:
    def __reduce__(self):  # unpickling this would run code
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoints_refuse_corrupt_foreign_and_code_carrying_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path / "good.pt", {"x": torch.ones(2)}, "stamp-a")
    assert load_checkpoint(tmp_path / "good.pt", "stamp-a")["x"].tolist() == [1.0, 1.0]
    with pytest.raises(ConfigError, match="different config or seed"):
        load_checkpoint(tmp_path / "good.pt", "stamp-b")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00garbage")
    with pytest.raises(ConfigError, match="corrupt.pt.*cannot be read"):
        load_checkpoint(tmp_path / "corrupt.pt", "stamp-a")
    torch.save({"fingerprint": "stamp-a", "state": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_checkpoint(tmp_path / "evil.pt", "stamp-a")
    assert not (tmp_path / "PWNED").exists()
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ConfigError):
        load_checkpoint(tmp_path / "plain.pkl", "stamp-a")


def test_results_are_strict_json(tmp_path):
    write_json(tmp_path / "r.json", {"loss": float("inf"), "nan": float("nan"), "array": np.array([1.0, np.nan]),
                                     "tensor": torch.tensor([2.0]), "scalar": np.float32(0.5), "nested": [(1, -math.inf)]})
    text = (tmp_path / "r.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data == {"loss": None, "nan": None, "array": [1.0, None], "tensor": [2.0], "scalar": 0.5,
                    "nested": [[1, None]]}
    assert not list(tmp_path.glob(".r.*"))  # no temporary left behind


class _Counting(Experiment):
    """A trivial experiment family: instance ``seed`` 'converges' unless its seed is in ``failing``."""

    kind = "counting"

    def __init__(self, failing=()):
        self.failing, self.runs = set(failing), []

    def run_instance(self, config, seed, folder, stamp, options):
        self.runs.append(seed)
        result = {"seed": seed, "fingerprint": stamp, "value": config["scale"] * seed,
                  "status": "not_converged" if seed in self.failing else "done"}
        write_json(folder / "results.json", result)
        return result

    def summarize(self, results, config):
        return {"total": sum(r["value"] for r in results)}

    def format_summary(self, summary, config):
        return f"total {summary['total']}"


class _Config(dict):
    def __getattr__(self, name):
        return self[name]


def _config(**changes):
    return _Config({"seed": 3, "instances": 3, "scale": 2.0, **changes})


def test_runner_resumes_only_its_own_results_and_reports_non_convergence(tmp_path, monkeypatch):
    monkeypatch.setattr("wsim.harness.runner.to_dict", dict)
    experiment = _Counting(failing={4})
    report = run_experiment(experiment, _config(), tmp_path, RunOptions(progress=False))
    assert experiment.runs == [3, 4, 5] and not report["ok"] and report["summary"]["not_converged"] == [4]
    assert "NOT CONVERGED: seed(s) 4" in (tmp_path / "summary.md").read_text()
    # resumed: every finished instance (done or not_converged) is reused, none runs again
    again = _Counting(failing={4})
    assert run_experiment(again, _config(), tmp_path, RunOptions(resume=True))["summary"] == report["summary"]
    assert again.runs == []
    # the instance count changes no result: a longer run reuses the three and runs one more
    longer = _Counting()
    run_experiment(longer, _config(instances=4), tmp_path, RunOptions(resume=True))
    assert longer.runs == [6]
    # another config's results are never reused: a clear error instead
    with pytest.raises(ConfigError, match="different config or seed"):
        run_experiment(_Counting(), _config(scale=5.0), tmp_path, RunOptions(resume=True))
    (tmp_path / "instance_000" / "results.json").write_text("{truncated")
    with pytest.raises(ConfigError, match="not valid JSON"):
        run_experiment(_Counting(), _config(), tmp_path, RunOptions(resume=True))


class _Slow(_Counting):
    """Takes a while per instance and records the seeds this process ran in ``log``."""

    def __init__(self, log):
        super().__init__()
        self.log = log

    def run_instance(self, config, seed, folder, stamp, options):
        import time

        time.sleep(0.3)
        with open(self.log, "a") as stream:
            stream.write(f"{seed}\n")
        return super().run_instance(config, seed, folder, stamp, options)


def _share(out, log):
    report = run_experiment(_Slow(log), _config(instances=6), out, RunOptions(resume=True, progress=False))
    (out / f"{log.name}.summary").write_text(json.dumps(report["summary"]))


def test_processes_sharing_one_folder_split_the_instances_and_take_over_a_dead_ones(tmp_path, monkeypatch):
    """With resume, two processes on one --out run each instance once between them (claimed.lock) and both
    end with the whole summary; a lock left by a process that died is taken over."""
    import multiprocessing
    import subprocess
    import sys

    monkeypatch.setattr("wsim.harness.runner.to_dict", dict)
    monkeypatch.setattr("wsim.harness.runner.CLAIM_POLL_S", 0.05)
    out = tmp_path / "out"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_share, args=(out, tmp_path / name)) for name in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    ran = [int(v) for name in ("a", "b") for v in (tmp_path / name).read_text().split()]
    assert sorted(ran) == [3, 4, 5, 6, 7, 8]  # every instance once, none twice
    assert min(len((tmp_path / name).read_text().split()) for name in ("a", "b")) >= 1  # both did work
    summaries = {(out / f"{name}.summary").read_text() for name in ("a", "b")}
    assert summaries == {json.dumps({"total": 2.0 * sum(range(3, 9)), "not_converged": []})}
    assert not list(out.glob("*/claimed.lock"))

    # a lock whose process is gone: taken over, not waited for
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    fresh = tmp_path / "fresh"
    (fresh / "instance_001").mkdir(parents=True)
    (fresh / "instance_001" / "claimed.lock").write_text(f"{dead.stdout.strip()} {socket.gethostname()}\n")
    experiment = _Counting()
    run_experiment(experiment, _config(), fresh, RunOptions(resume=True, progress=False))
    assert experiment.runs == [3, 4, 5]


def test_fingerprint_separates_families_seeds_and_configs():
    base = {"a": 1, "instances": 1}
    assert fingerprint(base, 0, "sysid") == fingerprint(dict(base, instances=20), 0, "sysid")
    assert len({fingerprint(base, 0, "sysid"), fingerprint(base, 1, "sysid"), fingerprint(base, 0, "control"),
                fingerprint(dict(base, a=2), 0, "sysid")}) == 4


def test_fields_added_later_leave_old_fingerprints_alone_at_their_defaults():
    """A config saved before rotors and shared RISP configurations existed keeps its fingerprint while
    it does not use them; using them changes it."""
    from wsim.config_io import to_dict
    from wsim.sysid.config import load_experiment

    new = to_dict(load_experiment("rigid-mass"))
    assert new["scene"]["bodies"][0]["rotors"] == [] and new["randomize"]["rotor_thrust_low"] is None
    old = json.loads(json.dumps(new))
    del old["scene"]["bodies"][0]["rotors"], old["randomize"]["rotor_thrust_low"], old["randomize"]["rotor_thrust_high"]
    assert fingerprint(new, 3, "sysid") == fingerprint(old, 3, "sysid")
    used = json.loads(json.dumps(new))
    used["randomize"]["rotor_thrust_low"] = [1.0]
    assert fingerprint(used, 3, "sysid") != fingerprint(new, 3, "sysid")
    risp = {"risp": {"data": {"count": 8, "configurations": 0}}}
    assert fingerprint(risp, 0, "d") == fingerprint({"risp": {"data": {"count": 8}}}, 0, "d")
    assert fingerprint(risp, 0, "d") != fingerprint({"risp": {"data": {"count": 8, "configurations": 2}}}, 0, "d")


def test_out_must_be_a_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        output_folder(tmp_path / "file")
    with pytest.raises(ConfigError, match="cannot be created"):
        output_folder(tmp_path / "file" / "below")


def test_target_noise_is_measured_from_the_frames():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:64] / 64.0
    smooth = np.stack([0.3 + 0.4 * x, 0.5 + 0.2 * np.sin(3 * y), 0.6 + 0.1 * x * y], axis=-1)[None].repeat(4, 0)
    assert target_noise(smooth, floor=0.0)["noise"] < 1e-4  # no noise in a smooth float image
    noisy = smooth + rng.normal(0.0, 0.02, smooth.shape)
    assert target_noise(noisy, floor=0.0)["measured"] == pytest.approx(0.02, rel=0.1)
    quantised = np.round(smooth * 255.0) / 255.0
    estimate = target_noise(quantised, floor=0.0)
    assert estimate["bits"] == 8 and estimate["noise"] == pytest.approx(1.0 / (255.0 * math.sqrt(12.0)), rel=0.05)
    assert target_noise(smooth, floor=0.01)["noise"] == 0.01
