"""One system-identification instance: ground truth -> target video -> optimisation -> outputs.

The pipeline: parameters (torch, in their optimisation space) -> values in range -> differentiable
rollout (:meth:`wsim.simulation.Simulation.rollout`) -> vertices per frame -> soft renderer -> frames
-> loss against the target frames -> optimiser step. The DiffPhysics baseline swaps the image loss
for a 3D vertex loss; Average and Random do not optimise.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..config import to_dict
from ..errors import ConfigError, SimulationError, WsimError
from ..export import atomic_path, write_json
from .config import ExperimentConfig, ParamConfig, image_size

MIN_POSITIVE = 1e-6


# -- parameter spaces -------------------------------------------------------------------------------
def bounds_of(p: ParamConfig) -> tuple[float, float]:
    """The hard bounds of a parameter (its range widened by half its width, positive in log space)."""
    if p.bounds is not None:
        return float(p.bounds[0]), float(p.bounds[1])
    width = max(p.high - p.low, 1e-12)
    lo, hi = p.low - 0.5 * width, p.high + 0.5 * width
    if p.space == "log" or p.low > 0:
        lo = max(lo, p.low * 0.25)
    return lo, hi


def to_space(p: ParamConfig, value: torch.Tensor) -> torch.Tensor:
    lo, hi = bounds_of(p)
    value = value.clamp(lo, hi)
    if p.space == "log":
        return torch.log(value.clamp_min(MIN_POSITIVE))
    if p.space == "sigmoid":
        x = ((value - lo) / (hi - lo)).clamp(1e-6, 1 - 1e-6)
        return torch.log(x) - torch.log1p(-x)
    return value.clone()


def from_space(p: ParamConfig, u: torch.Tensor) -> torch.Tensor:
    lo, hi = bounds_of(p)
    if p.space == "log":
        return torch.exp(u).clamp(lo, hi)
    if p.space == "sigmoid":
        return lo + (hi - lo) * torch.sigmoid(u)
    return u.clamp(lo, hi)


# -- the instance -----------------------------------------------------------------------------------
class Instance:
    """A built instance: randomised scene, true and initial values, camera, renderer and target."""

    def __init__(self, config: ExperimentConfig, seed: int, out: Path, device: str | None = None,
                 base: Path | None = None):
        from ..scene import build_scene

        self.config = config
        self.seed = int(seed)
        self.out = Path(out)
        self.base = base
        self.scene_config = randomized_scene(config, np.random.default_rng([self.seed, 0]), self.out)
        self.scene = build_scene(self.scene_config, device, base=base)
        self.sim = self.scene.simulation
        self.torch_device = self.sim.torch_device
        self.params = list(config.params)
        self.external_target = config.target.video is not None
        self.truth = self._draw_truth(np.random.default_rng([self.seed, 1]))
        self.initial = self._draw_initial(np.random.default_rng([self.seed, 2]))
        self.faces = torch.as_tensor(np.asarray(self.scene.model.render_faces, dtype=np.int64), device=self.torch_device)
        self.colors = torch.as_tensor(np.asarray(self.scene.colors, dtype=np.float32), device=self.torch_device)
        self.size = image_size(config)
        self.frames = self.sim.frames
        self.loss_frames = loss_frames(config, self.frames)
        self.target_vertices = None
        if self.truth is not None:
            with torch.no_grad():
                self.target_vertices = self.rollout(self.truth).detach()
        self.camera = self._camera()
        self.renderer = self._renderer()
        if self.external_target:
            from .target import load_target

            images = load_target(config.target.video, base, self.frames, self.size)
            self.target_images = torch.as_tensor(images, device=self.torch_device)
            background = torch.tensor(config.render.background, device=self.torch_device)
            self.target_alpha = ((self.target_images - background).abs().amax(-1) > 0.05).float()
        else:
            with torch.no_grad():
                rgba = self.render(self.target_vertices)
            if config.target.bits:
                levels = float(2 ** config.target.bits - 1)
                rgba = torch.round(rgba.clamp(0.0, 1.0) * levels) / levels
            self.target_images, self.target_alpha = rgba[..., :3].contiguous(), rgba[..., 3].contiguous()
        if config.method == "diffphysics" and self.target_vertices is None:
            raise ConfigError("method diffphysics needs 3D ground truth: give params.N.true instead of a target video")

    # -- values ---------------------------------------------------------------------------------
    def full_shape(self, name: str) -> tuple:
        return tuple(self.sim.default(name).shape)

    def _shape(self, p: ParamConfig, per: str) -> tuple:
        full = self.full_shape(p.name)
        return full if per == "all" else tuple(full[1:])

    def _value(self, p: ParamConfig, given, per: str, rng, where: str) -> torch.Tensor:
        shape = self._shape(p, per)
        if given is not None:
            value = np.asarray(given, dtype=np.float64)
            try:
                value = np.broadcast_to(value, shape)
            except ValueError:
                raise ConfigError(f"{where} has shape {value.shape}, expected {shape} (or one that broadcasts)") from None
        else:
            value = rng.uniform(p.low, p.high, size=shape)
        return torch.tensor(np.array(value, dtype=np.float32), device=self.torch_device)

    def _draw_truth(self, rng):
        if self.external_target and all(p.true is None for p in self.params):
            return None
        if self.external_target and any(p.true is None for p in self.params):
            raise ConfigError("with a target video give every params.N.true or none of them")
        return {p.name: self._value(p, p.true, p.true_per, rng, f"params.{i}.true") for i, p in enumerate(self.params)}

    def _draw_initial(self, rng):
        method = self.config.method
        values = {}
        for i, p in enumerate(self.params):
            if method == "average":
                values[p.name] = self._value(p, 0.5 * (p.low + p.high), p.estimate_per, rng, f"params.{i}")
            elif p.init is not None and method != "random":
                values[p.name] = self._value(p, p.init, p.estimate_per, rng, f"params.{i}.init")
            else:
                # drawn like the truth (one shared value, or one per element), then given the estimate's shape
                draw = self._value(p, None, p.true_per if p.estimate_per == "all" else "one", rng, f"params.{i}")
                values[p.name] = torch.broadcast_to(draw, self._shape(p, p.estimate_per)).clone()
        return values

    # -- forward ----------------------------------------------------------------------------------
    def rollout(self, values: dict) -> torch.Tensor:
        values = dict(values)
        for p in self.params:
            if p.per_vertex_of_body:
                values[p.name] = values[p.name] / float(max(self.scene.model.shape_vertex_count, 1))
        return self.sim.rollout(values)

    def _camera(self):
        from ..render import Camera

        c = self.config.render.camera
        if c.mode == "look_at":
            return Camera.look_at(c.eye, c.target, c.up, fov_y=c.fov_y, near=c.near, far=c.far,
                                  device=self.torch_device)
        return Camera.framing(self.target_vertices, elevation=c.elevation, azimuth=c.azimuth, fov_y=c.fov_y,
                              margin=c.margin).to(self.torch_device)

    def _renderer(self):
        from ..render import SoftRenderer

        r = self.config.render
        return SoftRenderer(self.camera, image_size=self.size, sigma=r.sigma, gamma=r.gamma, shading=r.shading,
                            background=tuple(r.background))

    def render(self, vertices: torch.Tensor) -> torch.Tensor:
        return self.renderer(vertices, self.faces, colors=self.colors)

    def horizon(self, iteration: int | None) -> int:
        """The last frame index the loss looks at, at optimisation step ``iteration`` (None: the whole video)."""
        c = self.config.loss
        last = self.frames - 1
        if iteration is None or c.horizon_start <= 0 or c.horizon_start >= last:
            return last
        if c.horizon_iterations <= 0 or iteration >= c.horizon_iterations:
            return last
        return int(round(c.horizon_start + (last - c.horizon_start) * iteration / c.horizon_iterations))

    def residuals(self, values: dict, iteration: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual vector of the configured loss (``loss = mean(residuals^2)``) over the horizon of
        ``iteration``, and the rollout's vertices: RGB (or alpha, for ``mask``) differences of the loss
        frames, or the 3D vertex offsets of every frame (scaled by sqrt 3, so that the mean over vertices
        of the squared distance is the mean of the squared residuals) for the DiffPhysics baseline."""
        vertices = self.rollout(values)
        kind = "vertices" if self.config.method == "diffphysics" else self.config.loss.type
        horizon = self.horizon(iteration)
        if kind == "vertices":
            offsets = vertices[: horizon + 1] - self.target_vertices[: horizon + 1]
            return offsets.reshape(-1) * math.sqrt(3.0), vertices
        frames = [k for k in self.loss_frames if k <= horizon]
        if frames[-1] != horizon and kind != "first_last":
            frames.append(horizon)
        if kind == "first_last":
            frames = sorted({0, horizon})
        index = torch.as_tensor(frames, device=self.torch_device)
        rgba = self.render(vertices[index])
        if kind == "mask":
            return (rgba[..., 3] - self.target_alpha[index]).reshape(-1), vertices
        return (rgba[..., :3] - self.target_images[index]).reshape(-1), vertices

    def loss(self, values: dict, iteration: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The configured loss of ``values`` and the rollout's vertices (over the horizon of ``iteration``)."""
        residuals, vertices = self.residuals(values, iteration)
        return (residuals ** 2).mean(), vertices

    def fingerprint(self) -> str:
        data = json.dumps({"config": to_dict(self.config), "seed": self.seed}, sort_keys=True, default=str)
        return hashlib.sha256(data.encode()).hexdigest()[:16]


def loss_frames(config: ExperimentConfig, frames: int) -> list[int]:
    if config.loss.type == "first_last":
        return sorted({0, frames - 1})
    return sorted(set(range(0, frames, config.loss.every)) | {frames - 1})


# -- randomisation ----------------------------------------------------------------------------------
def _uniform(rng, low, high):
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    return (low + (high - low) * rng.random(np.broadcast(low, high).shape)).tolist()


def random_quaternion(rng) -> list[float]:
    """A uniformly distributed unit quaternion (x, y, z, w) (Shoemake)."""
    u1, u2, u3 = rng.random(3)
    a, b = math.sqrt(1 - u1), math.sqrt(u1)
    return [a * math.sin(2 * math.pi * u2), a * math.cos(2 * math.pi * u2), b * math.sin(2 * math.pi * u3),
            b * math.cos(2 * math.pi * u3)]


def randomized_scene(config: ExperimentConfig, rng, out: Path):
    """The experiment's scene with body 0 randomised for this instance (a copy; shapes written as OBJ)."""
    scene = copy.deepcopy(config.scene)
    r = config.randomize
    if not r.enabled:
        return scene
    from ..geometry.shapes import write_shape

    body = scene.bodies[0]
    if r.shapes:
        name = r.shapes[int(rng.integers(len(r.shapes)))]
        body.shape.file = str(write_shape(name, Path(out) / "shapes" / f"{name}.obj", r.shape_resolution).resolve())
        body.shape.type = name
        body.name = name
    body.shape.scale = _uniform(rng, [r.scale[0]] * 3, [r.scale[1]] * 3)
    body.position = _uniform(rng, r.position_low, r.position_high)
    if r.rotation:
        body.rotation = random_quaternion(rng)
    if r.position_from_ground:
        body.position[1] += scene.ground.height - lowest_point(body)
    body.velocity = _uniform(rng, r.velocity_low, r.velocity_high)
    body.angular_velocity = _uniform(rng, r.angular_velocity_low, r.angular_velocity_high)
    body.push.impulse = _uniform(rng, r.impulse_low, r.impulse_high)
    if r.impulse_per_volume:
        from ..geometry import mass_properties
        from ..scene import body_mesh

        volume = mass_properties(body_mesh(body.shape)).volume
        body.push.impulse = [volume * j for j in body.push.impulse]
    body.push.point = _uniform(rng, r.push_point_low, r.push_point_high)
    return scene


def lowest_point(body) -> float:
    """The lowest height of ``body``'s vertices relative to its centre of mass (in its initial orientation)."""
    from ..geometry import mass_properties
    from ..scene import body_mesh
    from ..geometry.transforms import rotation_matrix

    mesh = body_mesh(body.shape)
    vertices = np.asarray(mesh.vertices, dtype=np.float64) - mass_properties(mesh).center_of_mass
    return float((vertices @ rotation_matrix(body.rotation).T)[:, 1].min())


# -- optimisation -----------------------------------------------------------------------------------
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


def _summary_of(value: torch.Tensor):
    array = value.detach().cpu().numpy().astype(np.float64)
    return float(array) if array.ndim == 0 else array.tolist()


def _short(value: torch.Tensor) -> str:
    array = value.detach().cpu().numpy()
    return f"{float(array):.5g}" if array.ndim == 0 else f"mean {float(array.mean()):.4g}"


def _free_particles(instance: Instance) -> np.ndarray | None:
    """Indices of the particles that move (a pinned particle's mass or velocity leaves no trace)."""
    pinned = instance.scene.model.particle_pinned
    return None if pinned is None else np.flatnonzero(pinned.numpy() == 0)


def errors(instance: Instance, estimate: dict) -> dict:
    """Absolute and relative errors per parameter (vectors: norm of the difference per element, mean over
    elements; relative: divided by the norm of the true value) plus the derived body mass for density.
    Per-particle values are compared on the free (not pinned) particles."""
    if instance.truth is None:
        return {}
    from ..parameters import PARAMETERS

    result = {}
    for p in instance.params:
        true = instance.truth[p.name].detach().cpu().numpy().astype(np.float64)
        est = estimate[p.name].detach().cpu().numpy().astype(np.float64)
        full = np.broadcast_shapes(true.shape, est.shape)
        true_b, est_b = np.broadcast_to(true, full), np.broadcast_to(est, full)
        spec = PARAMETERS.get(p.name)
        free = _free_particles(instance)
        if (spec is not None and spec.per == "particle" and free is not None and true_b.ndim
                and true_b.shape[0] == instance.scene.model.particle_count):
            true_b, est_b = true_b[free], est_b[free]
        elem = len(instance.sim.default(p.name).shape[1:]) if true_b.ndim else 0
        diff = np.abs(est_b - true_b)
        if elem:
            diff_n = np.linalg.norm((est_b - true_b).reshape(-1, *true_b.shape[-elem:]).reshape(-1, int(np.prod(true_b.shape[-elem:]))), axis=1)
            true_n = np.linalg.norm(true_b.reshape(-1, int(np.prod(true_b.shape[-elem:]))), axis=1)
        else:
            diff_n, true_n = diff.reshape(-1), np.abs(true_b).reshape(-1)
        result[p.name] = {"abs": float(diff_n.mean()), "rel": float(np.mean(diff_n / np.maximum(true_n, 1e-12)))}
        if p.name == "density":
            volume = np.asarray(instance.scene.model.body_volume, dtype=np.float64)
            true_m, est_m = np.broadcast_to(true, volume.shape) * volume, np.broadcast_to(est, volume.shape) * volume
            result["mass"] = {"abs": float(np.abs(est_m - true_m).mean()),
                              "rel": float(np.mean(np.abs(est_m - true_m) / true_m)),
                              "true": true_m.tolist() if true_m.size > 1 else float(true_m[0]),
                              "estimate": est_m.tolist() if est_m.size > 1 else float(est_m[0])}
    return result


class Optimisation:
    """The optimisation state of an instance: variables, optimiser, history, best estimate, checkpoint."""

    def __init__(self, instance: Instance, initial: dict | None = None, label: str | None = None):
        """Start from ``initial`` (default: the instance's drawn initial guess); ``label`` names the run
        in the progress bar and the loss history (restarts, see :mod:`wsim.sysid.restarts`)."""
        self.instance = instance
        self.label = label
        config = instance.config
        start = instance.initial if initial is None else initial
        self.variables = {p.name: to_space(p, start[p.name]).clone().requires_grad_(True)
                          for p in instance.params}
        self.lr = config.optim.lr
        self.iteration = 0
        self.phase = self.current_phase()
        self.optimizer = self._optimizer()
        self.evaluations = 0
        self.history: list[dict] = []
        self.best = None  # (loss, values)
        self.status = "running"
        self.blowups = 0
        self.elapsed = 0.0
        self.loss_scale = None

    def polishing(self) -> bool:
        o = self.instance.config.optim
        return o.polish_iterations > 0 and self.iteration >= o.iterations

    def tied(self) -> bool:
        """Per-element estimates share their mean value for the first ``optim.tied_iterations`` steps."""
        return self.iteration < self.instance.config.optim.tied_iterations

    def uses_levenberg_marquardt(self) -> bool:
        o = self.instance.config.optim
        return o.polish == "lm" if self.polishing() else o.optimizer == "lm"

    def current_phase(self) -> tuple[bool, bool]:
        return self.polishing(), self.tied()

    def _optimizer(self):
        o = self.instance.config.optim
        variables = list(self.variables.values())
        if self.uses_levenberg_marquardt():
            from .levenberg_marquardt import LevenbergMarquardt

            return LevenbergMarquardt(variables)
        if self.polishing():
            from .bfgs import BFGS

            return BFGS(variables, max_step=o.polish_lr)
        if o.optimizer == "adam":
            return torch.optim.Adam(variables, lr=self.lr)
        if o.optimizer == "sgd":
            return torch.optim.SGD(variables, lr=self.lr, momentum=0.5)
        return torch.optim.LBFGS(variables, lr=self.lr, max_iter=1, history_size=20,
                                 line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-14)

    def values(self, detach: bool = False) -> dict:
        out = {}
        tied = self.tied()
        for p in self.instance.params:
            u = self.variables[p.name]
            if tied and p.estimate_per == "all":
                # the mean over elements (keeping the element's own shape), so every element moves together
                u = u.mean(dim=0, keepdim=True).expand_as(u)
            v = from_space(p, u)
            out[p.name] = v.detach() if detach else v
        return out

    def evaluate(self) -> torch.Tensor:
        """The loss of the current variables (recording the best values seen over the whole video)."""
        return (self.evaluate_residuals() ** 2).mean()

    def evaluate_residuals(self) -> torch.Tensor:
        self.evaluations += 1
        values = self.values()
        residuals, _ = self.instance.residuals(values, self.iteration)
        value = float((residuals.detach() ** 2).mean())
        full = self.instance.horizon(self.iteration) == self.instance.frames - 1
        if full and (self.best is None or value < self.best[0]):
            self.best = (value, {k: v.detach().clone() for k, v in values.items()})
        return residuals

    # -- checkpoint -----------------------------------------------------------------------------
    def state(self) -> dict:
        return {"fingerprint": self.instance.fingerprint(), "iteration": self.iteration,
                "phase": list(self.phase), "loss_scale": self.loss_scale,
                "evaluations": self.evaluations, "lr": self.lr, "history": self.history,
                "variables": {k: v.detach().cpu() for k, v in self.variables.items()},
                "optimizer": self.optimizer.state_dict(), "elapsed": self.elapsed, "blowups": self.blowups,
                "best": None if self.best is None else (self.best[0], {k: v.cpu() for k, v in self.best[1].items()})}

    def save(self, path: Path) -> None:
        with atomic_path(path) as temporary:
            torch.save(self.state(), temporary)

    def load(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("fingerprint") != self.instance.fingerprint():
            raise ConfigError(f"checkpoint '{path}' belongs to a different config or seed; remove it or run "
                              "without --resume")
        with torch.no_grad():
            for name, value in state["variables"].items():
                self.variables[name].copy_(value.to(self.variables[name].device))
        self.iteration, self.evaluations = state["iteration"], state["evaluations"]
        self.lr = state["lr"]
        self.phase = tuple(state.get("phase", (False, False)))
        self.loss_scale = state.get("loss_scale")
        self.optimizer = self._optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration, self.evaluations = state["iteration"], state["evaluations"]
        self.history, self.elapsed, self.blowups = state["history"], state["elapsed"], state["blowups"]
        if state["best"] is not None:
            device = self.instance.torch_device
            self.best = (state["best"][0], {k: v.to(device) for k, v in state["best"][1].items()})

    # -- loop -----------------------------------------------------------------------------------
    def _set_lr(self, lr: float) -> None:
        self.lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self) -> float:
        o = self.instance.config.optim
        if self.current_phase() != self.phase:
            if self.phase[1] and not self.tied():  # untie: every element starts from the shared value
                with torch.no_grad():
                    for p in self.instance.params:
                        if p.estimate_per == "all":
                            u = self.variables[p.name]
                            u.copy_(u.mean(dim=0, keepdim=True).expand_as(u))
            self.phase = self.current_phase()
            self.optimizer = self._optimizer()
            self.loss_scale = None
        polish = self.polishing()
        previous = {k: v.detach().clone() for k, v in self.variables.items()}
        try:
            if self.uses_levenberg_marquardt():
                with torch.no_grad():
                    loss = self.optimizer.step(self.evaluate_residuals)
            elif polish:
                def closure():
                    self.optimizer.zero_grad()
                    loss = self.evaluate()
                    loss.backward()
                    last.setdefault("loss", float(loss.detach()))
                    return loss.detach()

                last = {}
                self.optimizer.step(closure)
                loss = last.get("loss", self.optimizer.state["f"])
            elif o.optimizer == "lbfgs":
                # L-BFGS has absolute thresholds (curvature pairs, line search): keep its loss O(1)
                # by dividing by the loss where the quasi-Newton phase started
                def closure():
                    self.optimizer.zero_grad()
                    try:
                        loss = self.evaluate()
                    except SimulationError:
                        self.blowups += 1
                        return torch.tensor(1e6)
                    if self.loss_scale is None:
                        self.loss_scale = 1.0 / max(float(loss.detach()), 1e-30)
                    last["loss"] = float(loss.detach())
                    scaled = loss * self.loss_scale
                    scaled.backward()
                    return scaled.detach()

                last = {}
                self.optimizer.step(closure)
                loss = last.get("loss", float("nan"))
            else:
                self.optimizer.zero_grad()
                loss_t = self.evaluate()
                loss_t.backward()
                loss = float(loss_t.detach())
                if not all(bool(torch.isfinite(v.grad).all()) for v in self.variables.values() if v.grad is not None):
                    raise SimulationError(f"non-finite gradient at optimisation step {self.iteration}")
                self.optimizer.step()
        except SimulationError:
            # the step left the stable region: go back and halve the learning rate
            self.blowups += 1
            with torch.no_grad():
                for k, v in self.variables.items():
                    v.copy_(previous[k])
            self._set_lr(self.lr * 0.5)
            self.optimizer = self._optimizer()
            loss = float("nan")
        self.project()
        if o.lr_decay != 1.0 and not polish:
            self._set_lr(self.lr * o.lr_decay)
        return loss

    def project(self) -> None:
        """Put every variable back inside its parameter's bounds. The values are clamped there anyway,
        but a variable left beyond a bound sits where the clamp has no gradient and could never return."""
        with torch.no_grad():
            for p in self.instance.params:
                if p.space == "sigmoid":
                    continue
                lo, hi = bounds_of(p)
                if p.space == "log":
                    lo, hi = math.log(max(lo, MIN_POSITIVE)), math.log(hi)
                self.variables[p.name].clamp_(lo, hi)

    def record(self, loss: float, values_before: dict) -> None:
        self.history.append({"iteration": self.iteration, "loss": loss,
                             "values": {k: _summary_of(v) for k, v in values_before.items()}})

    def run(self, checkpoint: Path | None, progress: bool = True) -> None:
        from tqdm import tqdm

        config = self.instance.config
        total = config.optim.iterations + config.optim.polish_iterations if config.method in ("gradsim", "diffphysics") else 0
        bar = tqdm(total=total, initial=min(self.iteration, total), disable=not progress or total == 0,
                   desc=f"{config.name} seed {self.instance.seed}" + (f" {self.label}" if self.label else ""),
                   leave=False, dynamic_ncols=True,
                   file=sys.stderr)
        try:
            while self.iteration < total:
                started = time.perf_counter()
                before = self.values(detach=True)
                loss = self.step()
                self.record(loss, before)
                self.iteration += 1
                self.elapsed += time.perf_counter() - started
                estimates = " ".join(f"{k}={_short(v)}" for k, v in self.values(detach=True).items())
                bar.set_postfix_str(f"loss={loss:.3e} {estimates}")
                bar.update(1)
                if checkpoint is not None and (self.iteration % config.optim.checkpoint_every == 0
                                               or self.iteration == total):
                    self.save(checkpoint)
                if config.optim.tolerance > 0 and math.isfinite(loss) and loss < config.optim.tolerance:
                    break
                if self.phase[0] and getattr(self.optimizer, "state", {}).get("converged"):
                    if self.tied() and self.iteration < total:
                        self.iteration = config.optim.tied_iterations  # go on untied
                        bar.update(min(self.iteration, total) - bar.n)
                        continue
                    break  # no step along the quasi-Newton direction lowers the loss any more
            self.status = "done"
        except KeyboardInterrupt:
            self.status = "interrupted"
            if checkpoint is not None:
                self.save(checkpoint)
            raise
        finally:
            bar.close()

    def estimate(self) -> dict:
        """The estimate: the lowest-loss values seen (the current ones when nothing was evaluated)."""
        current = self.values(detach=True)
        if self.best is None:
            return current
        # the current values were not evaluated yet; evaluate them once so the best is honest
        with torch.no_grad():
            try:
                loss, _ = self.instance.loss(current)
                if float(loss) < self.best[0]:
                    self.best = (float(loss), current)
            except SimulationError:
                pass
        return self.best[1]


# -- running and writing --------------------------------------------------------------------------
def run_instance(config: ExperimentConfig, seed: int, out: Path, device: str | None = None,
                 base: Path | None = None, resume: bool = False, progress: bool = True,
                 write_outputs: bool = True) -> dict:
    """Run one instance into ``out``; returns the results dict (also written to ``out/results.json``).
    On Ctrl-C the results so far are written (status ``interrupted``) before KeyboardInterrupt propagates."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    instance = Instance(config, seed, out, device, base)
    setup = time.perf_counter() - started
    optimisation = Optimisation(instance)
    checkpoint = out / "checkpoint.pt"
    if resume and checkpoint.exists():
        optimisation.load(checkpoint)
    search = None
    if config.optim.restarts > 0 and config.method in ("gradsim", "diffphysics"):
        from .restarts import Restarts

        search = Restarts(instance, optimisation, out)
    interrupted = False
    try:
        optimisation.run(checkpoint, progress)
        if search is not None:
            search.run(resume, progress)
    except KeyboardInterrupt:
        interrupted = True
    estimate = optimisation.estimate() if search is None else search.best_so_far()[1]
    results = results_dict(instance, optimisation, estimate, setup, time.perf_counter() - started, search)
    if interrupted:
        results["status"] = "interrupted"  # also when the restarts, not the first run, were interrupted
    if not interrupted:
        from .uncertainty import video_uncertainty

        results["uncertainty"] = video_uncertainty(instance, estimate)
    write_json(out / "results.json", results)
    if write_outputs:
        write_instance_outputs(instance, optimisation, estimate, out, search)
        results["wall_time_s"] = time.perf_counter() - started
        write_json(out / "results.json", results)
    if interrupted:
        raise KeyboardInterrupt
    return results


def all_history(optimisation: Optimisation, search=None) -> list[dict]:
    """The per-iteration history of the first run followed by those of the restarts (if any)."""
    return optimisation.history + ([h for run in search.histories for h in run] if search is not None else [])


def results_dict(instance: Instance, optimisation: Optimisation, estimate: dict, setup: float, wall: float,
                 search=None) -> dict:
    """The ``results.json`` of an instance; with screened restarts (``search``) the loss, iteration and
    evaluation counts, time and histories cover every run, and ``restarts`` lists them."""
    config = instance.config
    body = instance.scene_config.bodies[0] if instance.scene_config.bodies else None
    history = all_history(optimisation, search)
    result = {
        "experiment": config.name, "method": config.method, "seed": instance.seed,
        "status": optimisation.status, "loss_type": "vertices" if config.method == "diffphysics" else config.loss.type,
        "shape": None if body is None else (body.name or body.shape.type),
        "true": None if instance.truth is None else {k: _summary_of(v) for k, v in instance.truth.items()},
        "initial": {k: _summary_of(v) for k, v in instance.initial.items()},
        "estimate": {k: _summary_of(v) for k, v in estimate.items()},
        "errors": errors(instance, estimate),
        "initial_errors": errors(instance, instance.initial),
        "final_loss": None if optimisation.best is None else optimisation.best[0],
        "iterations": optimisation.iteration, "evaluations": optimisation.evaluations,
        "blowups": optimisation.blowups,
        "loss_history": [h["loss"] for h in history],
        "value_history": [h["values"] for h in history],
        "optimisation_time_s": optimisation.elapsed, "setup_time_s": setup, "wall_time_s": wall,
        "device": str(instance.sim.device), "torch_device": str(instance.torch_device),
        "frames": instance.frames, "loss_frames": instance.loss_frames, "image_size": list(instance.size),
        "versions": _versions(), "scene": to_dict(instance.scene_config),
        "config": to_dict(config),
    }
    if search is not None:
        summary = search.summary()
        result["restarts"] = summary
        result["final_loss"] = summary["final_loss"] if math.isfinite(summary["final_loss"]) else None
        result["iterations"] += search.iterations
        result["evaluations"] += search.evaluations + search.screening_evaluations
        result["optimisation_time_s"] += search.elapsed
        result["loss_history_runs"] = [h.get("run", "first run") for h in history]
    return result


def write_instance_outputs(instance: Instance, optimisation: Optimisation, estimate: dict, out: Path,
                           search=None) -> None:
    from .outputs import write_compare_video, write_loss_plot, write_target_frames
    from ..export import write_rollout_usd

    model = instance.scene.model
    with torch.no_grad():
        vertices = instance.rollout(estimate).detach()
        images = instance.render(vertices)[..., :3]
    write_loss_plot(out / "loss.png", all_history(optimisation, search), instance)
    write_compare_video(out / f"compare.{instance.config.video_format}", instance.target_images, images,
                        instance.scene.fps, instance.config.render.video_scale)
    if not instance.external_target:
        write_target_frames(out / "target_frames", instance.target_images)
    write_rollout_usd(out / "estimate.usda", vertices.cpu().numpy(), model.render_faces, instance.scene.fps,
                      model.body_vertex_start, model.body_names, instance.scene.colors,
                      model.ground_height if model.ground else None)
