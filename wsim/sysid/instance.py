"""One system-identification instance: randomised scene, ground truth, initial guess, camera,
renderer and target video, and the loss of a set of parameter values against that video.

The pipeline: parameter values -> differentiable rollout (:meth:`wsim.simulation.Simulation.rollout`)
-> vertices per frame -> soft renderer -> frames -> residuals against the target frames. The
DiffPhysics baseline swaps the image residuals for 3D vertex offsets.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..render.meshes import ParticleGlyphs
from .appearance import NUISANCE, Appearance, foreground_mask, nuisance_params
from .config import ExperimentConfig, ParamConfig, image_size
from .randomize import randomized_scene


def draw_values(p: ParamConfig, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    """Values of ``p`` of ``shape`` drawn from ``[p.low, p.high]`` as ``p.draw`` says."""
    if p.draw == "log_uniform":
        return np.exp(rng.uniform(np.log(p.low), np.log(p.high), size=shape))
    return rng.uniform(p.low, p.high, size=shape)


class Instance:
    """A built instance: randomised scene, true and initial values, camera, renderer and target."""

    def __init__(self, config: ExperimentConfig, seed: int, out: Path, device: str | None = None,
                 base: Path | None = None, stamp: str | None = None):
        """``stamp``: the fingerprint of the config and seed (:func:`wsim.harness.fingerprint`), which
        checkpoints of this instance carry."""
        from ..scene import build_scene

        self.config = config
        self.seed = int(seed)
        self.stamp = stamp or ""
        self.out = Path(out)
        self.base = base
        self.scene_config = randomized_scene(config, np.random.default_rng([self.seed, 0]), self.out)
        self.scene = build_scene(self.scene_config, device, base=base)
        self.sim = self.scene.simulation
        #: what runs this instance's rollouts: its Simulation, or a member of a lockstep batch
        #: (:mod:`wsim.sysid.lockstep`) while the optimisation runs
        self.simulator = self.sim
        self.torch_device = self.sim.torch_device
        #: the physical parameters, then the appearance values estimated with them (see .appearance)
        self.params = list(config.params) + nuisance_params(config)
        self.external_target = config.target.video is not None
        self.truth = self._draw_truth(np.random.default_rng([self.seed, 1]))
        self.initial = self._draw_initial(np.random.default_rng([self.seed, 2]))
        model = self.scene.model
        self.faces = torch.as_tensor(np.asarray(model.render_faces, dtype=np.int64), device=self.torch_device)
        self.colors = torch.as_tensor(np.asarray(self.scene.colors, dtype=np.float32), device=self.torch_device)
        #: spheres that make the particles no face uses visible (mass-spring chains), or None
        self.glyphs = None
        if model.particle_count:
            glyphs = ParticleGlyphs(self.faces, model.vertex_count, model.shape_vertex_count,
                                    model.particle_radius.numpy())
            if glyphs.count:
                self.glyphs = glyphs
                self.faces = glyphs.faces.to(self.torch_device)
                self.colors = glyphs.colors(self.colors)
        self.appearance = Appearance(config, self.colors)
        self.mask_record = None
        self._risp = None  # (network, target states) of loss.type risp, loaded on first use
        self._features = None  # (network, target features) of loss.type perceptual
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

            images, alpha, self.target_record = load_target(config.target.video, base, self.frames, self.size,
                                                            config.render.background)
            self.target_images = torch.as_tensor(images, device=self.torch_device)
            self.target_alpha = self._target_mask(alpha) if config.loss.type == "mask" else None
        else:
            with torch.no_grad():
                target_look = Appearance(config, self.colors, target=True)
                rgba = self.renderer(self._drawn(self.target_vertices), self.faces, **target_look.render_kwargs())
            if config.target.bits:
                levels = float(2 ** config.target.bits - 1)
                rgba = torch.round(rgba.clamp(0.0, 1.0) * levels) / levels
            self.target_images, self.target_alpha = rgba[..., :3].contiguous(), rgba[..., 3].contiguous()
            self.target_record = {"source": "rendered", "bits": config.target.bits, "frames": self.frames,
                                  "size": list(self.size)}
        self.target_record["truth"] = ("unknown" if self.truth is None else "seeded"
                                       if not self.external_target or config.target.truth == "seeded" else "given")
        from .uncertainty import target_noise

        # the noise of the frames the residuals compare (after any resampling): what the uncertainty step
        # measures again (with its floor at that time) from the same frames
        self.target_noise = target_noise(self.target_images[self.loss_frames].detach().cpu().numpy(),
                                         config.uncertainty.noise)
        self.target_record["noise"] = self.target_noise
        if "background" in config.appearance.estimate and config.method not in ("average", "random"):
            from .appearance import border_background

            # the video shows its background along the border: a far better start than the assumed colour
            self.initial["background"] = border_background(self.target_images).clamp(0.01, 0.99)
        if config.method == "diffphysics" and self.target_vertices is None:
            raise ConfigError("method diffphysics needs 3D ground truth: give params.N.true instead of a target video")

    # -- values ---------------------------------------------------------------------------------
    def full_shape(self, name: str) -> tuple:
        if name in NUISANCE:
            return (1,) + NUISANCE[name][0]
        return tuple(self.sim.default(name).shape)

    def value_shape(self, p: ParamConfig, per: str) -> tuple:
        """The shape of a value of ``p``: every element's (``per="all"``) or one element's (``"one"``)."""
        full = self.full_shape(p.name)
        return full if per == "all" else tuple(full[1:])

    def _value(self, p: ParamConfig, given, per: str, rng, where: str) -> torch.Tensor:
        shape = self.value_shape(p, per)
        if given is not None:
            value = np.asarray(given, dtype=np.float64)
            try:
                value = np.broadcast_to(value, shape)
            except ValueError:
                raise ConfigError(f"{where} has shape {value.shape}, expected {shape} (or one that broadcasts)") from None
        else:
            value = draw_values(p, shape, rng)
        return torch.tensor(np.array(value, dtype=np.float32), device=self.torch_device)

    def _draw_truth(self, rng):
        """The truth drawn from the seed (``params.N.true`` where given); for a target video only with
        ``target.truth: seeded``, else the given ``params.N.true`` (every one, or none: unknown). An
        estimated appearance value has a truth only for a target wsim rendered (``appearance.target``)."""
        physical = self.params[:len(self.config.params)]
        if self.external_target and self.config.target.truth == "given":
            if all(p.true is None for p in physical):
                return None
            if any(p.true is None for p in physical):
                raise ConfigError("with a target video give every params.N.true or none of them (or "
                                  "target.truth: seeded for the truth the seed draws)")
        truth = {p.name: self._value(p, p.true, p.true_per, rng, f"params.{i}.true")
                 for i, p in enumerate(self.params) if p.true is not None or p in physical}
        for i, p in enumerate(self.params):
            if p.true_per_weight is not None and p.true is None:
                scale = p.true_per_weight
                draw = np.exp(np.random.default_rng([self.seed, 1, i]).uniform(np.log(scale.low), np.log(scale.high)))
                value = draw * self._true_weight(truth) * (float(truth[scale.times].mean()) if scale.times else 1.0)
                truth[p.name] = torch.full_like(truth[p.name], float(value))
        return truth

    def _true_weight(self, truth: dict) -> float:
        """The body's weight m g (N) under the truth's density or mass (else the scene's)."""
        model = self.scene.model
        if "density" in truth:
            mass = float(truth["density"].mean()) * float(np.sum(model.body_volume))
        elif "body_mass" in truth:
            mass = float(truth["body_mass"].sum())
        else:
            mass = float(self.sim.default("body_mass").sum())
        return mass * float(np.linalg.norm(self.config.scene.gravity))

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
                values[p.name] = torch.broadcast_to(draw, self.value_shape(p, p.estimate_per)).clone()
        return values

    # -- forward ----------------------------------------------------------------------------------
    def rollout(self, values: dict) -> torch.Tensor:
        values = {k: v for k, v in values.items() if k not in NUISANCE}
        for p in self.config.params:
            if p.per_vertex_of_body:
                values[p.name] = values[p.name] / float(max(self.scene.model.shape_vertex_count, 1))
        return self.simulator.rollout(values)

    def _camera(self):
        """The camera of ``render.camera``, always built by :meth:`Camera.look_at` from the keys that
        :meth:`camera_record` writes, so that ``--set render.camera=results.json`` rebuilds it bit for bit
        (``mode: auto`` frames the truth rollout, and its look_at keys are read off that framing)."""
        from ..render import Camera

        c = self.config.render.camera
        if c.mode == "look_at":
            keys = {"eye": list(c.eye), "target": list(c.target), "up": list(c.up), "fov_y": float(c.fov_y),
                    "near": float(c.near), "far": float(c.far)}
        else:
            framed = Camera.framing(self.target_vertices, elevation=c.elevation, azimuth=c.azimuth, fov_y=c.fov_y,
                                    margin=c.margin)
            view = framed.view[0].detach().cpu().double()
            eye = framed.eye[0].detach().cpu().double()
            keys = {"eye": eye.tolist(), "target": (eye - view[2, :3]).tolist(), "up": view[1, :3].tolist(),
                    "fov_y": float(c.fov_y), "near": float(framed.near), "far": float(framed.far)}
        self.camera_keys = keys
        return Camera.look_at(keys["eye"], keys["target"], keys["up"], fov_y=keys["fov_y"], near=keys["near"],
                              far=keys["far"], device=self.torch_device)

    def camera_record(self) -> dict:
        """The camera as ``render.camera`` keys of ``mode: look_at`` that rebuild it exactly (so a saved
        target video can be reused with the camera ``mode: auto`` chose: ``--set
        render.camera=results.json``), its ``resolution`` [H, W] and its world-to-view matrix."""
        return {"mode": "look_at", **self.camera_keys, "resolution": [int(self.size[0]), int(self.size[1])],
                "view_matrix": self.camera.view[0].detach().cpu().double().tolist()}

    def _renderer(self):
        from ..render import SoftRenderer

        r = self.config.render
        return SoftRenderer(self.camera, image_size=self.size, sigma=r.sigma, gamma=r.gamma, shading=r.shading,
                            background=tuple(r.background), supersample=r.supersample)

    def render(self, vertices: torch.Tensor, values: dict | None = None) -> torch.Tensor:
        """RGBA frames of ``vertices`` with the appearance of ``values`` (the estimated nuisance values;
        the assumed appearance for the others)."""
        return self.renderer(self._drawn(vertices), self.faces, **self.appearance.render_kwargs(values))

    def _drawn(self, vertices: torch.Tensor) -> torch.Tensor:
        """The vertex buffer the renderer draws: the simulation's, with the particle glyphs appended."""
        return vertices if self.glyphs is None else self.glyphs.vertices(vertices)

    def _target_mask(self, alpha) -> torch.Tensor:
        """The foreground mask of an external target: the user's mask video, an RGBA video's alpha
        channel (its coverage), or background subtraction."""
        c = self.config
        if c.loss.mask_video is not None:
            from .target import load_target

            masks, _, record = load_target(c.loss.mask_video, self.base, self.frames, self.size, (0.0, 0.0, 0.0))
            self.mask_record = {"source": "loss.mask_video", **record}
            return torch.as_tensor(masks.mean(-1) > 0.5, dtype=torch.float32, device=self.torch_device)
        if alpha is not None:
            self.mask_record = {"source": "the video's alpha channel"}
            return torch.as_tensor(alpha, dtype=torch.float32, device=self.torch_device)
        try:
            mask, self.mask_record = foreground_mask(self.target_images)
        except ValueError as error:
            raise ConfigError(f"target.video '{c.target.video}': {error}; give loss.mask_video") from None
        return mask

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
        rgba = self.render(vertices[index], values)
        if kind == "mask":
            return (rgba[..., 3] - self.target_alpha[index]).reshape(-1), vertices
        if kind == "risp":
            net, target_states = self.risp_states()
            return ((net(rgba[..., :3]) - target_states[index]) / net.state_scale).reshape(-1), vertices
        if kind == "perceptual":
            net, target_features = self.perceptual_features()
            return (net(rgba[..., :3].permute(0, 3, 1, 2)) - target_features[index]).reshape(-1), vertices
        return (rgba[..., :3] - self.target_images[index]).reshape(-1), vertices

    def risp_states(self) -> tuple:
        """The RISP network of ``risp.checkpoint`` and the states it reads off the target frames
        (normalised residuals: each state component in units of its spread in the training data)."""
        if self._risp is None:
            from ..risp.network import load_network
            from .target import resolve_target_path

            path = resolve_target_path(self.config.risp.checkpoint, self.base)
            if not path.exists():
                raise ConfigError(f"risp.checkpoint '{self.config.risp.checkpoint}' does not exist")
            try:
                net, record = load_network(path, self.torch_device)
            except ValueError as error:
                raise ConfigError(f"risp.checkpoint: {error}") from None
            if list(record.get("image_size", self.size)) != list(self.size):
                raise ConfigError(f"risp.checkpoint was trained on {record['image_size']} images; this run renders "
                                  f"{list(self.size)} (set render.resolution to match)")
            with torch.no_grad():
                target = net(self.target_images)
            self._risp = (net, target)
        return self._risp

    def perceptual_features(self) -> tuple:
        """The user's feature network of ``loss.features`` (applied one frame at a time) and its
        features of the target frames."""
        if self._features is None:
            from .target import resolve_target_path

            path = resolve_target_path(self.config.loss.features, self.base)
            if not path.exists():
                raise ConfigError(f"loss.features '{self.config.loss.features}' does not exist")
            try:
                module = torch.export.load(str(path)).module()
            except Exception:  # not an exported program: TorchScript, or neither
                try:
                    module = torch.jit.load(str(path), map_location=self.torch_device)
                except RuntimeError as error:
                    raise ConfigError(f"loss.features '{path}' is neither a torch.export program (torch.export.save) "
                                      f"nor a TorchScript module: {str(error).splitlines()[0]}") from None
            module = module.to(self.torch_device)
            for p in module.parameters():
                p.requires_grad_(False)

            def net(images: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] -> [B, ...], one frame per call
                return torch.stack([module(image[None])[0] for image in images])

            with torch.no_grad():
                target = net(self.target_images.permute(0, 3, 1, 2))
            self._features = (net, target)
        return self._features

    def loss(self, values: dict, iteration: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The configured loss of ``values`` and the rollout's vertices (over the horizon of ``iteration``)."""
        residuals, vertices = self.residuals(values, iteration)
        return (residuals ** 2).mean(), vertices


def loss_frames(config: ExperimentConfig, frames: int) -> list[int]:
    if config.loss.type == "first_last":
        return sorted({0, frames - 1})
    return sorted(set(range(0, frames, config.loss.every)) | {frames - 1})
