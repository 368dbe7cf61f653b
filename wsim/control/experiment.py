"""Visuomotor control experiments: optimise a controller towards a goal given as one image.

For every instance (seed; each seed draws a different goal) and every method:

* ``gradsim``: loss = pixel MSE between the last rendered frame and the target image; gradients flow
  through the soft renderer and the simulation into the controller (Adam);
* ``diffphysics``: loss = mean over frames of the squared distance of the centre of mass (COM) to the
  goal's (dense 3D supervision of the full state), same controller and optimiser;
* ``random``: random actions every iteration (no learning).

Each iteration records the optimised loss, the image loss, the COM loss and the distance of the last
frame's COM to the goal's. Outputs (``out/``): ``results.json`` (every instance and method, and a
summary per method), ``convergence.png`` (COM distance to goal vs iteration, mean and spread over
seeds per method, like the paper's Fig. 6), ``summary.md``, and per instance ``instance_<seed>/``:
``results.json``, ``target.png``, ``<method>.mp4`` (target | rollout | difference) and
``<method>.usda`` (the final rollout). While an instance runs, ``instance_<seed>/checkpoint.pt`` holds
its finished methods and the running method's state (rewritten atomically after every iteration);
``resume=True`` (``wsim run ... --resume``) reuses finished instances and continues from it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..config import to_dict
from ..export import atomic_path, write_json, write_rollout_usd
from ..errors import SimulationError
from ..harness import (Experiment, RunOptions, load_checkpoint, progress_bar, run_experiment, save_checkpoint,
                       to_device)
from ..optim import Optimiser
from .config import ControlConfig
from .tasks import ControlTask


class MethodRun:
    """One method's optimisation (or random sampling) on a task, resumable from a checkpoint.

    ``state()`` holds everything the next iteration needs (controller weights, optimiser moments and
    learning rate, the random generator, the history, the best and last iterates and the time spent), so
    that a run restored with ``load()`` continues exactly as if it had not stopped."""

    def __init__(self, task: ControlTask, method: str):
        self.task, self.method = task, method
        config = task.config
        self.controller = self.optimizer = self.rng = None
        if method == "random":
            self.rng = np.random.default_rng([task.seed, 7])
        else:
            generator = torch.Generator().manual_seed(task.seed)
            self.controller = task.controller(generator)
            self.optimizer = Optimiser(list(self.controller.parameters()), config.optim.optimizer, config.optim.lr,
                                       momentum=0.9)
        self.iteration = 0           # the next iteration to run
        self.history: list[dict] = []
        self.best = None             # (own loss, iteration, vertices, inputs, distance)
        self.final = None            # (vertices, inputs) of the last iteration
        self.reached_at = None       # (iteration, time s)
        self.elapsed = 0.0           # seconds spent before this process took over

    # -- checkpoint -----------------------------------------------------------------------------
    def state(self) -> dict:
        return {"method": self.method, "iteration": self.iteration, "history": self.history, "best": self.best,
                "final": self.final, "reached_at": self.reached_at, "elapsed": self.elapsed,
                "controller": None if self.controller is None else self.controller.state_dict(),
                "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
                "rng": None if self.rng is None else self.rng.bit_generator.state}

    def load(self, state: dict) -> None:
        device = self.task.torch_device
        self.iteration, self.history = state["iteration"], state["history"]
        self.best, self.final = to_device(state["best"], device), to_device(state["final"], device)
        self.reached_at = None if state["reached_at"] is None else tuple(state["reached_at"])
        self.elapsed = state["elapsed"]
        if self.controller is not None:
            self.controller.load_state_dict(state["controller"])
            self.optimizer.load_state_dict(state["optimizer"])
        if self.rng is not None:
            self.rng.bit_generator.state = state["rng"]

    # -- iterations -----------------------------------------------------------------------------
    def done(self) -> bool:
        config = self.task.config
        return self.iteration > config.optim.iterations or (
            self.reached_at is not None and config.optim.stop_when_reached)

    def step(self, started: float) -> dict:
        """One iteration: evaluate (and, but for the last, update) the controller; returns its record."""
        task, method, config = self.task, self.method, self.task.config
        last = self.iteration == config.optim.iterations
        if method == "random":
            inputs = task.random_inputs(self.rng)
            with torch.no_grad():
                vertices = task.rollout(inputs)
                image_loss, com_loss = task.image_loss(vertices), task.com_loss(vertices)
            loss = image_loss
        else:
            seen = {}

            def closure():
                inputs = self.controller()
                vertices = task.rollout(inputs)
                if method == "gradsim":
                    loss = image_loss = task.image_loss(vertices, self.iteration)
                    with torch.no_grad():
                        com_loss = task.com_loss(vertices)
                        if task.blur_sigma(self.iteration) > 0.0:  # record the sharp loss (it also selects keep_best)
                            image_loss = task.image_loss(vertices.detach())
                else:
                    loss = com_loss = task.com_loss(vertices)
                    with torch.no_grad():
                        image_loss = task.image_loss(vertices.detach())
                seen.update(inputs=inputs, vertices=vertices, loss=loss, image_loss=image_loss, com_loss=com_loss)
                return loss

            if last:
                with torch.no_grad():
                    closure()
            else:
                self.optimizer.step(closure)
                self.optimizer.decay(config.optim.decay)
            if "vertices" not in seen:  # the very first evaluation blew up: nothing to record
                raise SimulationError(f"{config.name} seed {task.seed} {method}: the rollout failed at iteration "
                                      f"{self.iteration}")
            inputs, vertices, loss = seen["inputs"], seen["vertices"], seen["loss"]
            image_loss, com_loss = seen["image_loss"], seen["com_loss"]
        distance = task.distance(vertices)
        elapsed = self.elapsed + time.perf_counter() - started
        record = {"iteration": self.iteration, "loss": float(loss.detach()), "image_loss": float(image_loss.detach()),
                  "com_loss": float(com_loss.detach()), "distance": distance, "time_s": elapsed}
        self.history.append(record)
        if self.reached_at is None and distance <= config.optim.reached:
            self.reached_at = (self.iteration, elapsed)
        detached = {k: v.detach() for k, v in inputs.items()}
        # keep_best selects by the method's own measure: the (sharp) image loss for gradsim, COM loss for diffphysics
        own = record["image_loss"] if method == "gradsim" else record["com_loss"]
        if method != "random" and (self.best is None or own < self.best[0]):
            self.best = (own, self.iteration, vertices.detach(), detached, distance)
        self.final = (vertices.detach(), detached)
        self.iteration += 1
        return record

    def run(self, progress: bool = True, save=None) -> dict:
        """Iterate until done; ``save(state)`` is called after every iteration (and on Ctrl-C, with the
        state after the last complete iteration, before KeyboardInterrupt propagates)."""
        config = self.task.config
        bar = progress_bar(config.optim.iterations + 1, f"{config.name} seed {self.task.seed} {self.method}",
                           self.iteration, progress)
        started = time.perf_counter()
        try:
            while not self.done():
                record = self.step(started)
                now = time.perf_counter()
                self.elapsed, started = self.elapsed + now - started, now
                bar.set_postfix(loss=f"{record['loss']:.3e}", dist=f"{record['distance']:.3f}")
                bar.update(1)
                if save is not None:
                    save(self.state())
        finally:
            self.elapsed += time.perf_counter() - started
            bar.close()
        return self.result()

    def result(self) -> dict:
        # the random baseline's result is its last draw (no learning); a learner returns its last iterate, or
        # with optim.keep_best the iterate of lowest *own* loss (image loss for gradsim: no privileged data)
        history = self.history
        vertices, inputs = self.final
        final_distance = history[-1]["distance"]
        selected = len(history) - 1
        if self.method != "random" and self.task.config.optim.keep_best:
            _, selected, vertices, inputs, final_distance = self.best
        return {
            "method": self.method,
            "history": history,
            "initial_distance": history[0]["distance"],
            "final_distance": final_distance,
            "last_distance": history[-1]["distance"],
            "selected_iteration": selected,
            "best_distance": min(h["distance"] for h in history),
            "final_image_loss": history[selected]["image_loss"],
            "initial_image_loss": history[0]["image_loss"],
            "iterations": len(history) - 1,
            "reached": self.reached_at is not None,
            "iterations_to_reach": None if self.reached_at is None else self.reached_at[0],
            "time_to_reach_s": None if self.reached_at is None else self.reached_at[1],
            "wall_time_s": self.elapsed,
            "vertices": vertices,
            "inputs": inputs,
        }


def run_method(task: ControlTask, method: str, progress: bool = True) -> dict:
    """Optimise (or sample, for ``random``) on ``task``; returns the history and final rollout."""
    return MethodRun(task, method).run(progress)


def write_method_outputs(task: ControlTask, result: dict, folder: Path) -> list[Path]:
    """``<method>.mp4`` (target | rollout | difference) and ``<method>.usda`` of the final rollout."""
    written = []
    config = task.config
    vertices = result["vertices"]
    if config.video:
        from ..render import SoftRenderer
        from ..sysid.outputs import write_compare_video

        size = config.render.video_size
        renderer = SoftRenderer(task.camera, image_size=(size, size), sigma=config.render.sigma, shading="flat")
        with torch.no_grad():
            frames = torch.cat([renderer(vertices[i:i + 16], task.faces, colors=task.colors)
                                for i in range(0, len(vertices), 16)])
            if config.target_image:
                from .tasks import load_target_image

                target = load_target_image(config.target_image, size, task.torch_device)
            else:
                target = renderer(task.goal_vertices[None], task.faces, colors=task.colors)[0]
        path = folder / f"{result['method']}.mp4"
        write_compare_video(path, target.expand_as(frames), frames, fps=task.fps)
        written.append(path)
    if config.usd:
        path = folder / f"{result['method']}.usda"
        colors = task.colors.cpu().numpy()
        write_rollout_usd(path, vertices.cpu().numpy(), task.model.render_faces, task.fps,
                          task.model.body_vertex_start, task.model.body_names, colors,
                          task.model.ground_height if task.model.ground else None)
        written.append(path)
    return written


def _public(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("vertices", "inputs")}


class VisuomotorControl(Experiment):
    """``wsim run`` for the configs with ``task: control`` (``configs/control``)."""

    kind = "control"
    summary_always = True

    def folder(self, out: Path, index: int, seed: int, count: int) -> Path:
        return out / f"instance_{seed}"

    def run_instance(self, config: ControlConfig, seed: int, folder: Path, stamp: str, options: RunOptions) -> dict:
        return run_instance(config, seed, folder, stamp, options)

    def summarize(self, results: list[dict], config: ControlConfig) -> dict:
        return summarize(results, config)

    def format_summary(self, summary: dict, config: ControlConfig) -> str:
        return format_summary(summary)

    def write_extras(self, out: Path, results: list[dict], summary: dict, config: ControlConfig) -> None:
        write_json(out / "results.json", {"config": to_dict(config), "summary": summary, "instances": results})
        write_convergence_plot(out / "convergence.png", results, config)


def run_instance(config: ControlConfig, seed: int, folder: Path, stamp: str, options: RunOptions) -> dict:
    """Every method of ``config`` on the instance ``seed``, in ``folder``.

    ``folder/checkpoint.pt`` is rewritten (atomically) after every iteration: the finished methods and
    the running method's state; with ``options.resume`` an unfinished instance continues from it. The
    checkpoint is removed once the instance is complete."""
    from ..render import write_png

    folder = Path(folder)
    record_path, checkpoint = folder / "results.json", folder / "checkpoint.pt"
    state = {"done": {}, "current": None}
    if options.resume and checkpoint.is_file():
        state = load_checkpoint(checkpoint, stamp)
    started = time.perf_counter()
    task = ControlTask(config, seed, options.device, base=options.base)
    setup = time.perf_counter() - started
    if options.write_outputs:
        write_png(task.target, folder / "target.png")

    def save(current):
        state["current"] = current
        save_checkpoint(checkpoint, state, stamp)

    methods = {}
    for method in config.methods:
        if method in state["done"]:
            methods[method] = state["done"][method]
            continue
        run = MethodRun(task, method)
        if state["current"] is not None and state["current"]["method"] == method:
            run.load(state["current"])
        result = run.run(options.progress, save)
        if options.write_outputs:
            write_method_outputs(task, result, folder)
        methods[method] = state["done"][method] = _public(result)
        save(None)
    record = {"seed": int(seed), "status": "done", "scene": config.scene, "device": str(task.device),
              "setup_s": setup, "fingerprint": stamp, "instance": task.info, "goal_com": task.goal_com.tolist(),
              "methods": methods}
    write_json(record_path, record)
    checkpoint.unlink(missing_ok=True)
    return record


def summarize(results: list[dict], config: ControlConfig) -> dict:
    """Per method over instances: final distance (mean, std), share reached, iterations and time to reach."""
    rows = {}
    for method in config.methods:
        runs = [r["methods"][method] for r in results if method in r["methods"]]
        final = np.array([m["final_distance"] for m in runs])
        initial = np.array([m["initial_distance"] for m in runs])
        reached = [m for m in runs if m["reached"]]
        rows[method] = {
            "instances": len(runs),
            "initial_distance_mean": float(initial.mean()),
            "final_distance_mean": float(final.mean()), "final_distance_std": float(final.std()),
            "final_image_loss_mean": float(np.mean([m["final_image_loss"] for m in runs])),
            "reached": len(reached),
            "iterations_to_reach_mean": float(np.mean([m["iterations_to_reach"] for m in reached])) if reached else None,
            "time_to_reach_s_mean": float(np.mean([m["time_to_reach_s"] for m in reached])) if reached else None,
            "wall_time_s_mean": float(np.mean([m["wall_time_s"] for m in runs])),
        }
    return {"experiment": config.name, "scene": config.scene, "instances": len(results),
            "seeds": [r["seed"] for r in results], "reached_threshold_m": config.optim.reached,
            "iterations": config.optim.iterations, "device": results[0]["device"] if results else None,
            "methods": rows}


def format_summary(summary: dict) -> str:
    lines = [f"{summary['experiment']} ({summary['scene']}): {summary['instances']} instance(s) on "
             f"{summary['device']}, {summary['iterations']} iterations, goal reached when the COM is within "
             f"{summary['reached_threshold_m']:g} m",
             "| method | initial dist (m) | final dist (m), mean ± std | reached | iters to reach | time to reach (s) "
             "| wall time/run (s) |", "|---|---|---|---|---|---|---|"]
    for method, row in summary["methods"].items():
        iters = "-" if row["iterations_to_reach_mean"] is None else f"{row['iterations_to_reach_mean']:.1f}"
        reach_t = "-" if row["time_to_reach_s_mean"] is None else f"{row['time_to_reach_s_mean']:.1f}"
        lines.append(f"| {method} | {row['initial_distance_mean']:.3f} | {row['final_distance_mean']:.3f} ± "
                     f"{row['final_distance_std']:.3f} | {row['reached']}/{row['instances']} | {iters} | {reach_t} "
                     f"| {row['wall_time_s_mean']:.1f} |")
    return "\n".join(lines)


def write_convergence_plot(path: Path, results: list[dict], config: ControlConfig) -> Path:
    """COM distance to the goal vs iteration per method: mean line and min..max band over seeds (Fig. 6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"gradsim": "tab:blue", "diffphysics": "tab:orange", "random": "tab:green"}
    labels = {"gradsim": "∇Sim (image only)", "diffphysics": "DiffPhysics (dense 3D COM)", "random": "random actions"}
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for method in config.methods:
        curves = [[h["distance"] for h in r["methods"][method]["history"]] for r in results if method in r["methods"]]
        if not curves:
            continue
        length = max(len(c) for c in curves)
        data = np.array([c + [c[-1]] * (length - len(c)) for c in curves])
        x = np.arange(length)
        mean, std = data.mean(0), data.std(0)
        ax.plot(x, mean, color=colors.get(method), label=labels.get(method, method), lw=2)
        ax.fill_between(x, np.maximum(mean - std, 0.0), mean + std, color=colors.get(method), alpha=0.2)
    ax.axhline(config.optim.reached, color="k", ls=":", lw=1, label="goal reached")
    ax.set_xlabel("iteration")
    ax.set_ylabel("COM distance to goal (m)")
    ax.set_title(f"{config.name}: {len(results)} seed(s), mean ± std")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as temporary:
        fig.savefig(temporary, dpi=110, format="png")
    plt.close(fig)
    return Path(path)


def run_control(config: ControlConfig, out, device: str | None = None, instances: int | None = None,
                progress: bool = True, base=None, resume: bool = False, write_outputs: bool = True) -> dict:
    """Run ``instances`` seeds (``config.seed`` ...) of every method on the harness
    (:func:`wsim.harness.run_experiment`); writes per-instance results, ``results.json``,
    ``convergence.png`` and ``summary.md``. ``resume``: reuse finished instances and continue an
    interrupted one from its checkpoint (Ctrl-C leaves one in ``out/instance_<seed>/checkpoint.pt``).
    ``write_outputs``: each instance's target image and each method's video and USD stage (False: results
    only)."""
    options = RunOptions(device=device, base=base, resume=resume, progress=progress, write_outputs=write_outputs)
    return run_experiment(VisuomotorControl(), config, out, options, instances)
