"""System identification as an experiment family of the harness (:mod:`wsim.harness`): one instance
is ground truth -> target video -> optimisation (-> screened restarts) -> results and outputs.

Methods: ``gradsim`` optimises through the differentiable simulator and renderer; ``diffphysics``
through the simulator alone against 3D vertex positions; ``average`` predicts the range mean and
``random`` a random draw; ``pybullet`` estimates by REINFORCE through PyBullet (:mod:`.reinforce`).
``results.json`` has ``status`` ``done`` or ``not_converged`` (with the reason under ``convergence``),
the estimate of the lowest-loss run, and how far the video determines it.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from ..config import to_dict
from ..export import write_json
from ..harness import Experiment, RunOptions
from .appearance import assumed
from .config import ExperimentConfig
from .instance import Instance
from .metrics import errors, summary_of
from .optimisation import Optimisation


def _versions() -> dict:
    import warp

    import wsim

    out = {"python": sys.version.split()[0], "platform": platform.platform(), "numpy": np.__version__,
           "torch": torch.__version__, "warp": warp.config.version, "wsim": getattr(wsim, "__version__", "dev")}
    try:
        import pxr

        out["usd"] = ".".join(map(str, pxr.Usd.GetVersion()))
    except Exception:  # usd-core is optional for the numbers
        pass
    return out


class SystemIdentification(Experiment):
    """``wsim run`` for the configs of ``configs/experiments``."""

    kind = "sysid"

    def run_instance(self, config: ExperimentConfig, seed: int, folder: Path, stamp: str,
                     options: RunOptions) -> dict:
        return run_instance(config, seed, folder, options.device, options.base, options.resume, options.progress,
                            options.write_outputs, stamp=stamp)

    def run_batch(self, config: ExperimentConfig, jobs: list, options: RunOptions) -> list[dict]:
        from .lockstep import run_batch

        return run_batch(config, jobs, options)

    def summarize(self, results: list[dict], config) -> dict:
        from .outputs import summarize

        summary = summarize(results, config.paper)
        summary.update({"experiment": config.name, "method": config.method, "paper_table": config.paper.table,
                        "loss": "vertices" if config.method == "diffphysics" else config.loss.type,
                        "appearance_estimated": list(config.appearance.estimate),
                        "device": results[0].get("device") if results else None,
                        "seeds": [r.get("seed") for r in results]})
        return summary

    def format_summary(self, summary: dict, config) -> str:
        from .outputs import format_summary

        return format_summary(summary, config.name, config.method, config.paper.table)


def run_instance(config: ExperimentConfig, seed: int, out: Path, device: str | None = None,
                 base: Path | None = None, resume: bool = False, progress: bool = True,
                 write_outputs: bool = True, stamp: str | None = None, lockstep=None, index: int = 0) -> dict:
    """Run one instance into ``out``; returns the results dict (also written to ``out/results.json``).
    On Ctrl-C the results so far are written (status ``interrupted``) before KeyboardInterrupt propagates.
    ``stamp`` defaults to the harness fingerprint of ``config`` and ``seed``. With ``lockstep``
    (:class:`wsim.sysid.lockstep.Lockstep`) the instance is its built instance ``index``, and its
    optimisation runs as a member of that batch."""
    from ..harness import fingerprint, output_folder

    out = output_folder(out)
    stamp = stamp or fingerprint(to_dict(config), seed, SystemIdentification.kind)
    started = time.perf_counter()
    if lockstep is None:
        instance = Instance(config, seed, out, device, base, stamp=stamp)
        setup = time.perf_counter() - started
    else:
        instance, setup = lockstep.instances[index], lockstep.setup[index]
    if config.method == "pybullet":  # REINFORCE through PyBullet (wsim.sysid.reinforce): no resume, no restarts
        from .reinforce import Reinforce

        optimisation = Reinforce(instance)
    else:
        optimisation = Optimisation(instance)
    checkpoint = out / "checkpoint.pt"
    if resume and checkpoint.exists() and config.method != "pybullet":
        optimisation.load(checkpoint)
    search = None
    o = config.optim
    searching = (o.restarts > 0 or o.escalate > 0 or o.profile is not None or o.polish_extensions > 0
                 or o.final_refine > 0)
    if (searching and optimisation.total > 0
            and config.method != "pybullet"):
        from .restarts import Restarts

        search = Restarts(instance, optimisation, out)
    interrupted = False
    try:
        with lockstep.joined(index) if lockstep is not None else nullcontext():
            optimisation.run(checkpoint, progress)
            if search is not None:
                search.run(resume, progress)
                search.escalate(progress)
                search.settle(resume, progress)
                search.extend(resume, progress)
    except KeyboardInterrupt:
        interrupted = True
    winner = search.winner() if search is not None else {
        "label": "first run", "values": optimisation.estimate(), "convergence": optimisation.convergence(),
        "loss": optimisation.best[0] if optimisation.best is not None else None}
    check = None
    if not interrupted and optimisation.total > 0:
        from .uncertainty import noise_check

        check = noise_check(instance, winner["loss"])
        winner = dict(winner, convergence=judged(winner["convergence"], check, config.optim,
                                                 search.escalation_rounds if search is not None else 0,
                                                 restartable=config.method != "pybullet"))
    results = results_dict(instance, optimisation, winner, setup, time.perf_counter() - started, search)
    if config.method == "pybullet":
        results["reinforce"] = optimisation.record()
    if check is not None:
        results["noise_check"] = check
    if interrupted:
        results["status"] = "interrupted"  # also when the restarts, not the first run, were interrupted
    else:
        from .uncertainty import video_uncertainty

        results["uncertainty"] = video_uncertainty(instance, winner["values"], results["status"] == "done")
    write_json(out / "results.json", results)
    if write_outputs:
        write_instance_outputs(instance, optimisation, winner["values"], out, search)
        results["wall_time_s"] = time.perf_counter() - started
        write_json(out / "results.json", results)
    if interrupted:
        raise KeyboardInterrupt
    return results


def judged(convergence: dict, check: dict, optim, escalated: int, restartable: bool = True) -> dict:
    """The optimiser's ``convergence`` verdict, overruled when the final loss is far above what the
    target's noise allows (``check``, :func:`wsim.sysid.uncertainty.noise_check`): such an estimate sits
    in a local minimum, or the model cannot explain the video, and must not be reported as done.
    ``restartable``: whether the method has screened restarts to suggest (method pybullet has none)."""
    if not convergence["converged"] or not check["applicable"] or check["explained"]:
        return convergence
    loss = "no finite loss" if check["loss"] is None else f"the final loss {check['loss']:.3e}"
    ratio = "" if check["ratio"] is None else f" (residual RMS {check['ratio']:.3g}x the noise)"
    then = (f" after {escalated} escalation round(s) of restarts over every parameter" if escalated else
            "; optim.escalate > 0 would try restarts over every parameter" if restartable else "")
    return {"converged": False, "reason": f"{loss} is above what the target's noise ({check['noise']:.2g}) allows, "
            f"{check['allowed_loss']:.2e} (optim.escalate_ratio {optim.escalate_ratio:g}){ratio}{then}: a local "
            f"minimum, or a model that cannot explain the video", "optimiser": convergence["reason"]}


def all_history(optimisation: Optimisation, search=None) -> list[dict]:
    """The per-iteration history of the first run followed by those of the restarts (if any)."""
    return optimisation.history + ([h for run in search.histories for h in run] if search is not None else [])


def results_dict(instance: Instance, optimisation: Optimisation, winner: dict, setup: float, wall: float,
                 search=None) -> dict:
    """The ``results.json`` of an instance: the estimate, loss and status of the ``winner`` run; with
    screened restarts (``search``) the iteration and evaluation counts, time and histories cover every
    run, and ``restarts`` lists them."""
    config = instance.config
    body = instance.scene_config.bodies[0] if instance.scene_config.bodies else None
    history = all_history(optimisation, search)
    estimate, convergence = winner["values"], winner["convergence"]
    loss = winner["loss"]
    result = {
        "experiment": config.name, "method": config.method, "seed": instance.seed, "fingerprint": instance.stamp,
        "status": "done" if convergence["converged"] else "not_converged", "convergence": convergence,
        "loss_type": "vertices" if config.method == "diffphysics" else config.loss.type,
        "shape": None if body is None else (body.name or body.shape.type),
        "true": None if instance.truth is None else {k: summary_of(v) for k, v in instance.truth.items()},
        "initial": {k: summary_of(v) for k, v in instance.initial.items()},
        "estimate": {k: summary_of(v) for k, v in estimate.items()},
        "estimate_from": winner["label"],
        "errors": errors(instance, estimate),
        "initial_errors": errors(instance, instance.initial),
        "final_loss": loss if loss is not None and math.isfinite(loss) else None,
        "iterations": optimisation.iteration, "evaluations": optimisation.evaluations,
        "blowups": optimisation.blowups,
        "loss_history": [h["loss"] for h in history],
        "value_history": [h["values"] for h in history],
        "optimisation_time_s": optimisation.elapsed, "setup_time_s": setup, "wall_time_s": wall,
        "device": str(instance.sim.device), "torch_device": str(instance.torch_device),
        "frames": instance.frames, "loss_frames": instance.loss_frames, "image_size": list(instance.size),
        "camera": instance.camera_record(), "target": instance.target_record,
        "appearance": {"estimated": list(config.appearance.estimate), "assumed": assumed(config),
                       "mask": instance.mask_record},
        "versions": _versions(), "scene": to_dict(instance.scene_config),
        "config": to_dict(config),
    }
    if search is not None:
        result["restarts"] = search.summary()
        result["iterations"] += search.iterations
        result["evaluations"] += search.evaluations + search.screening_evaluations
        result["optimisation_time_s"] += search.elapsed
        result["loss_history_runs"] = [h.get("run", "first run") for h in history]
    return result


def write_instance_outputs(instance: Instance, optimisation: Optimisation, estimate: dict, out: Path,
                           search=None) -> None:
    from ..export import body_poses, write_rollout_usd
    from .outputs import write_compare_video, write_loss_plot, write_rollouts, write_target_frames

    model = instance.scene.model
    with torch.no_grad():
        vertices = instance.rollout(estimate).detach()
        poses = body_poses(instance.sim.frame_states())  # before any other rollout replaces the states
        images = instance.render(vertices, estimate)[..., :3]
    write_loss_plot(out / "loss.png", all_history(optimisation, search), instance)
    write_compare_video(out / f"compare.{instance.config.video_format}", instance.target_images, images,
                        instance.scene.fps, instance.config.render.video_scale)
    if not instance.external_target:
        write_target_frames(out / "target_frames", instance.target_images)
    write_rollouts(out, instance, vertices, estimate)
    write_rollout_usd(out / "estimate.usda", vertices.cpu().numpy(), model.render_faces, instance.scene.fps,
                      model.body_vertex_start, model.body_names, instance.scene.colors,
                      model.ground_height if model.ground else None, poses)
