"""Loss landscapes (paper Sec. 4.1.3, App. F, Figs. 4, 11, 12): ``wsim landscape``.

The experiment's own loss (:meth:`wsim.sysid.instance.Instance.loss`) between the target video,
rendered at the seed's truth, and renders over a 1-D or 2-D grid of one or two physical parameters,
the others at their truth; at every grid point also the adjoint gradient of that same rollout, and
whether the negative gradient points toward the truth. A study repeats the 1-D landscape for several
video lengths (``frames``) or frame rates (``substeps``) on one plot.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..config import to_dict
from ..errors import ConfigError, SimulationError
from ..export import atomic_path, write_json
from ..harness import fingerprint, progress_bar
from .config import load_experiment
from .instance import Instance

LOSSES = {None: [], "pixel": ["method=gradsim", "loss.type=pixel"], "vertices": ["method=diffphysics"],
          "pybullet": ["method=pybullet", "loss.type=pixel"]}


def parse_list(text: str | None, what: str) -> list[int]:
    if not text:
        return []
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--{what} expects comma-separated integers, got '{text}'") from None
    if not values or min(values) < (2 if what == "frames" else 1):
        raise ConfigError(f"--{what} '{text}': give positive counts (frames at least 2)")
    return values


def command_line(args, out: Path) -> str:
    """The ``wsim landscape`` command that repeats this one (from its parsed arguments)."""
    import shlex

    words = ["wsim", "landscape", args.config] + [w for p in args.params for w in ("--param", p)]
    words += [w for r in args.ranges or [] for w in ("--range", repr(r[0]), repr(r[1]))]
    for flag in ("points", "seed", "loss", "frames", "substeps"):
        if getattr(args, flag) is not None:
            words += [f"--{flag}", str(getattr(args, flag))]
    words += [w for o in args.overrides for w in ("--set", o)] + ["--device", args.device, "--out", str(out)]
    return shlex.join(words)


def grid_axes(config, names: list[str], ranges: list | None, points: int) -> list[dict]:
    """One axis per name: the values (geometric for a ``log``-space parameter, so that the grid is even
    where the optimiser steps) over ``--range`` or the parameter's ``[low, high]``."""
    allowed = [p.name for p in config.params]
    if not 1 <= len(names) <= 2:
        raise ConfigError("give one --param (a 1-D landscape) or two (a 2-D map)")
    if len(set(names)) != len(names):
        raise ConfigError(f"--param names repeat: {names}")
    if ranges and len(ranges) != len(names):
        raise ConfigError(f"give one --range per --param ({len(names)}), or none")
    if points < 2:
        raise ConfigError("--points must be at least 2")
    axes = []
    for i, name in enumerate(names):
        p = next((p for p in config.params if p.name == name), None)
        if p is None:
            raise ConfigError(f"--param '{name}' is not a parameter of experiment {config.name}; "
                              f"allowed: {', '.join(allowed)}")
        low, high = (float(v) for v in (ranges[i] if ranges else (p.low, p.high)))
        if not low < high:
            raise ConfigError(f"--range of {name}: low {low:g} must be below high {high:g}")
        log = p.space == "log" and low > 0
        values = np.geomspace(low, high, points) if log else np.linspace(low, high, points)
        axes.append({"name": name, "low": low, "high": high, "spacing": "log" if log else "linear",
                     "values": values.tolist()})
    return axes


class Landscape:
    """The loss and its gradient over a grid, for one instance of a config."""

    def __init__(self, config, seed: int, out: Path, device, base, axes: list[dict]):
        self.instance = Instance(config, seed, out, device, base)
        self.axes = axes
        if self.instance.truth is None:
            raise ConfigError("a landscape needs the truth: this experiment's target video has none")
        for p in (p for p in config.params if p.name in [a["name"] for a in axes]):
            if self.instance.value_shape(p, "one") not in ((), (1,)):
                raise ConfigError(f"--param {p.name} is a vector per element; a landscape sweeps scalars")
        self.truth = [float(self.instance.truth[a["name"]].float().mean()) for a in axes]
        self.reinforce = None
        if config.method == "pybullet":  # gradSim Fig. 4: the landscape a black-box simulator offers
            from .reinforce import Reinforce

            self.reinforce = Reinforce(self.instance)
            low, high = float(self.reinforce.param.low), float(self.reinforce.param.high)
            if min(axes[0]["values"]) < low or max(axes[0]["values"]) > high:
                raise ConfigError(f"--loss pybullet sweeps inside the parameter's range [{low:g}, {high:g}], where "
                                  "REINFORCE's policy lives; give a --range within it")

    def evaluate(self, point) -> tuple[float, list[float]]:
        """Loss and d loss / d value of every swept parameter at ``point`` (one rollout, one adjoint; with
        method pybullet: a PyBullet rollout, and REINFORCE's estimate from one step's draws, whose size is
        that of normalised rewards: only its sign compares with the adjoint's)."""
        inst = self.instance
        if self.reinforce is not None:
            return self._reinforce(point)
        leaves = [torch.tensor(float(v), dtype=torch.float32, device=inst.torch_device, requires_grad=True)
                  for v in point]
        values = {k: v.detach() for k, v in inst.truth.items()}
        for a, leaf in zip(self.axes, leaves):
            # a per-element truth (true_per: all) is swept as one shared value
            values[a["name"]] = leaf.expand(inst.truth[a["name"]].shape)
        try:
            loss, _ = inst.loss(values)
            grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        except SimulationError:  # a blown-up rollout is a hole in the map, not the end of the sweep
            return math.nan, [math.nan] * len(leaves)
        return float(loss.detach()), [0.0 if g is None else float(g) for g in grads]

    def _reinforce(self, point) -> tuple[float, list[float]]:
        from .reinforce import surrogate_gradient
        from .spaces import to_space

        r, s = self.reinforce, self.reinforce.settings
        value = torch.tensor(float(point[0]), dtype=torch.float32, device=self.instance.torch_device,
                             requires_grad=True)
        u = to_space(r.param, value)
        loss = float(r.losses(u).mean())
        draws = u.detach().cpu() + s.noise * torch.randn((s.samples,), generator=r.rng, dtype=torch.float64).float()
        rewards = torch.stack([-r.losses(d).sum() for d in draws.to(u.device)])
        (grad_u,) = surrogate_gradient(u.detach().reshape(1), draws.reshape(-1, 1).to(u.device), rewards, s.noise)
        (grad,) = torch.autograd.grad(u, value, grad_u.reshape(u.shape))  # to d/d value (log space: / value)
        return loss, [float(grad)]

    def sweep(self, label: str, progress: bool) -> dict:
        shape = tuple(len(a["values"]) for a in self.axes)
        losses = np.full(shape, np.nan)
        grads = np.full(shape + (len(shape),), np.nan)
        bar = progress_bar(int(np.prod(shape)) + 1, label, enabled=progress)
        started = time.perf_counter()
        try:
            for index in np.ndindex(*shape):
                losses[index], grads[index] = self.evaluate([a["values"][i] for a, i in zip(self.axes, index)])
                bar.set_postfix(loss=f"{losses[index]:.3e}", refresh=False)
                bar.update(1)
            truth_loss, truth_grad = self.evaluate(self.truth)
            bar.update(1)
        finally:
            bar.close()
        inst = self.instance
        return {"label": label, "frames": inst.frames, "substeps": inst.config.scene.sim.substeps,
                "fps": float(inst.scene.fps), "image_size": list(inst.size),
                "losses": losses, "gradients": grads, "truth_loss": truth_loss, "truth_gradient": truth_grad,
                "seconds": time.perf_counter() - started, **measures(self.axes, self.truth, losses, grads)}


def measures(axes: list[dict], truth: list[float], losses: np.ndarray, grads: np.ndarray) -> dict:
    """Where the minimum is, how many local minima, and at what fraction of the grid points the negative
    gradient points toward the truth (in the grid's coordinates: log ones for a log axis)."""
    log = [a["spacing"] == "log" for a in axes]
    mesh = np.stack(np.meshgrid(*[np.asarray(a["values"]) for a in axes], indexing="ij"), -1)
    u = np.where(log, np.log(np.maximum(mesh, 1e-300)), mesh)
    toward = np.where(log, np.log(np.maximum(truth, 1e-300)), truth) - u
    grad_u = np.where(log, grads * mesh, grads)  # d loss / d ln x = x d loss / d x
    span = np.array([np.ptp(u[..., k]) for k in range(len(axes))])
    finite = np.isfinite(losses)
    counted = finite & (np.linalg.norm(toward / span, axis=-1) > 1e-6)  # the truth itself has no direction
    downhill = np.sum(-grad_u * toward, axis=-1) > 0
    # per axis, a stricter reading: each component alone points toward the truth's coordinate
    per_axis = [fraction(-grad_u[..., k] * toward[..., k] > 0, finite & (np.abs(toward[..., k]) > 1e-6 * span[k]))
                for k in range(len(axes))]
    nearest = np.unravel_index(np.argmin(np.linalg.norm(toward / span, axis=-1)), losses.shape)
    filled = np.where(np.isfinite(losses), losses, np.inf)
    argmin = np.unravel_index(np.argmin(filled), losses.shape)
    minima = 0
    for index in np.ndindex(*losses.shape):
        here = filled[index]
        around = [filled[index[:k] + (index[k] + d,) + index[k + 1:]] for k in range(losses.ndim) for d in (-1, 1)
                  if 0 <= index[k] + d < losses.shape[k]]
        minima += bool(np.isfinite(here) and all(here <= n for n in around))
    # the adjoint against the landscape's own slope (central differences between grid neighbours): a
    # median ratio near 1 says the gradient sees what the loss does; steps it cannot see pull it below 1
    slope_ratio = []
    for k in range(losses.ndim):
        x = np.moveaxis(mesh[..., k], k, 0)
        central = (np.moveaxis(losses, k, 0)[2:] - np.moveaxis(losses, k, 0)[:-2]) / (x[2:] - x[:-2])
        ratio = np.moveaxis(grads[..., k], k, 0)[1:-1] / np.where(central != 0, central, np.nan)
        slope_ratio.append(float(np.nanmedian(ratio)) if np.isfinite(ratio).any() else None)
    return {"argmin": list(map(int, argmin)), "nearest_to_truth": list(map(int, nearest)),
            "gradient_to_grid_slope": slope_ratio,
            "min_at_nearest": bool(argmin == nearest), "local_minima": minima,
            "downhill_fraction": fraction(downhill, counted), "downhill_points": int(counted.sum()),
            "downhill_fraction_per_axis": per_axis, "nonfinite_points": int((~finite).sum())}


def fraction(hits: np.ndarray, where: np.ndarray) -> float | None:
    return float(hits[where].mean()) if where.any() else None


def study_variants(config, frames: list[int], substeps: list[int]) -> list[tuple[str, list[str]]]:
    """(label, overrides) per curve: video lengths at the config's frame rate, or frame rates over
    the config's video duration (as near as whole frames allow)."""
    if frames and substeps:
        raise ConfigError("give --frames or --substeps, not both")
    sim = config.scene.sim
    if frames:
        return [(f"{f} frames", [f"scene.sim.frames={f}"]) for f in frames]
    if substeps:
        count = {s: 1 + max(1, round((sim.frames - 1) * sim.substeps / s)) for s in substeps}
        return [(f"{1.0 / (sim.dt * s):.0f} fps ({s} substeps, {count[s]} frames)",
                 [f"scene.sim.substeps={s}", f"scene.sim.frames={count[s]}"]) for s in substeps]
    return [(f"{sim.frames} frames", [])]


def run_landscape(experiment: str, params: list[str], overrides: list[str], out: Path, *, ranges=None,
                  points: int | None = None, seed: int | None = None, loss: str | None = None, frames=(),
                  substeps=(), device=None, base=None, progress: bool = True, command: str = "") -> dict:
    """Compute the landscape(s) and write ``out/landscape.json`` and ``out/landscape.png``; returns the record."""
    overrides = list(overrides) + LOSSES[loss]
    config = load_experiment(experiment, overrides)
    points = points or (15 if len(params) == 1 else 9)
    axes = grid_axes(config, params, ranges, points)
    variants = study_variants(config, list(frames), list(substeps))
    if len(variants) > 1 and len(axes) != 1:
        raise ConfigError("a --frames/--substeps study sweeps one --param")
    seed = config.seed if seed is None else int(seed)
    started = time.perf_counter()
    camera = []
    if len(variants) > 1 and config.render.camera.mode != "look_at":
        # one camera for every curve (the config's own video frames it), so only the video changes
        keys = Instance(config, seed, out, device, base).camera_keys
        camera = ["render.camera=" + json.dumps({"mode": "look_at", **keys})]
    sweeps, truth = [], None
    for label, extra in variants:
        variant = load_experiment(experiment, overrides + extra + camera)
        landscape = Landscape(variant, seed, out, device, base, axes)
        truth = landscape.truth
        sweeps.append(landscape.sweep(label, progress))
    record = {"experiment": config.name, "seed": seed, "command": command, "overrides": overrides,
              "fingerprint": fingerprint(to_dict(config), seed, "landscape"),
              "loss": "vertices" if config.method == "diffphysics" else config.loss.type,
              "device": str(landscape.instance.sim.device), "camera": landscape.instance.camera_record(), "grid": axes,
              "truth": dict(zip(params, truth)), "study": None if len(variants) == 1 else (
                  "frames" if frames else "substeps"), "landscapes": sweeps,
              "evaluations": sum(int(np.prod(s["losses"].shape)) + 1 for s in sweeps),
              "wall_time_s": time.perf_counter() - started}
    write_json(out / "landscape.json", record)
    write_plot(out / "landscape.png", record)
    return record


def write_plot(path: Path, record: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    axes, truth = record["grid"], list(record["truth"].values())
    title = f"{record['experiment']} seed {record['seed']}, {record['loss']} loss"
    if len(axes) == 1:
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True)
        x = np.asarray(axes[0]["values"])
        for s in record["landscapes"]:
            line, = top.plot(x, s["losses"], "o-", ms=3, label=f"{s['label']}: downhill "
                             f"{100 * (s['downhill_fraction'] or 0):.0f} %")
            bottom.plot(x, s["gradients"][:, 0], "o-", ms=3, color=line.get_color())
            # the arrow at each point is -grad's direction: toward the truth where the landscape is good
            direction = -np.sign(s["gradients"][:, 0])
            top.quiver(x, s["losses"], direction, np.zeros_like(x), color=line.get_color(), width=0.004,
                       scale=30, alpha=0.7)
            top.plot(truth[0], s["truth_loss"], "k*", ms=8)
        for ax in (top, bottom):
            ax.axvline(truth[0], color="k", ls="--", lw=1, label="truth" if ax is top else None)
            if axes[0]["spacing"] == "log":
                ax.set_xscale("log")
                ax.set_xticks(x[np.linspace(0, len(x) - 1, min(len(x), 6)).round().astype(int)])
                ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.3g"))
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.grid(True, alpha=0.3)
        bottom.axhline(0.0, color="0.5", lw=0.8)
        top.set_ylabel("loss")
        bottom.set_ylabel(f"d loss / d {axes[0]['name']}")
        bottom.set_xlabel(axes[0]["name"])
        top.legend(fontsize=7)
        top.set_title(title)
    else:
        s = record["landscapes"][0]
        coords = [np.log10(a["values"]) if a["spacing"] == "log" else np.asarray(a["values"]) for a in axes]
        labels = [f"log10 {a['name']}" if a["spacing"] == "log" else a["name"] for a in axes]
        mark = [math.log10(t) if a["spacing"] == "log" else t for a, t in zip(axes, truth)]
        X, Y = np.meshgrid(*coords, indexing="ij")
        # the quiver shows -grad in the plotted coordinates, normalised: its direction is the point
        scale = [X * math.log(10) if a["spacing"] == "log" else np.ones_like(X) for a, X in
                 zip(axes, np.meshgrid(*[np.asarray(a["values"]) for a in axes], indexing="ij"))]
        g = np.stack([-s["gradients"][..., k] * scale[k] for k in range(2)], -1)
        g /= np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-300)
        fig, ax = plt.subplots(figsize=(6.4, 5.4))
        filled = ax.contourf(X, Y, np.log10(np.maximum(s["losses"], 1e-30)), levels=20, cmap="viridis")
        fig.colorbar(filled, ax=ax, label="log10 loss")
        ax.quiver(X, Y, g[..., 0], g[..., 1], color="w", width=0.004, pivot="mid")
        ax.plot(*mark, "r*", ms=14, label="truth")
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        ax.legend(loc="upper right", fontsize=8)
        ax.set_title(f"{title}\n-grad toward the truth at {100 * (s['downhill_fraction'] or 0):.0f} % of points")
    fig.tight_layout()
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=120, format="png")
    plt.close(fig)
