"""The three visuomotor control scenes and their controllers.

A :class:`ControlTask` holds, for one seed: the model and differentiable :class:`~wsim.simulation.
Simulation`, the goal configuration (vertices and centre of mass), the camera and soft renderer, and
the target image (the rendered goal, or a user image). Controllers produce the simulation inputs:

* walker and fem: a :class:`~wsim.control.policy.SinusoidPolicy` giving one activation per triangle
  (``control_tri_activation``) or per tetrahedron (``control_tet_activation``) at every frame interval;
* cloth: the initial velocity of the cloth (one 3-vector for every particle).

Scenes (Y up):

* ``walker``: a 2D walker of triangles in the plane z = 0 (:func:`wsim.geometry.cloth.walker`) standing
  on the ground with friction; the goal is its settled pose moved to the right by a random distance.
* ``fem``: a soft gear of 1152 tetrahedra lying on the ground; the goal is its settled pose moved by a
  random distance in a random horizontal direction.
* ``cloth``: a cloth of a random number of triangles (log-uniform in ``cloth.triangles``) and size at a
  random start; the goal is where it lands (last frame) when thrown with a random hidden velocity under
  gravity, lift and drag.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..builder import ModelBuilder
from ..errors import ConfigError
from ..geometry.transforms import axis_angle_quaternion, quaternion_multiply
from ..simulation import Simulation
from .config import ControlConfig
from .policy import SinusoidPolicy, interval_times

CONTROL_PARAMETER = {"walker": "control_tri_activation", "fem": "control_tet_activation"}


class ControlTask:
    """One instance (seed) of a control scene: simulation, goal, camera, renderer and target image."""

    def __init__(self, config: ControlConfig, seed: int, device: str | None = None, base=None):
        from ..device import resolve_device

        self.config = config
        self.seed = int(seed)
        self.scene = config.scene
        self.rng = np.random.default_rng([self.seed, 6])
        self.device = resolve_device(device)
        s = config.sim
        build = {"walker": self._build_walker, "fem": self._build_fem, "cloth": self._build_cloth}[self.scene]
        builder, self.info = build()
        self.model = builder.finalize(self.device)
        self.sim = Simulation(self.model, s.dt, s.substeps, s.frames, checkpoint_every=s.checkpoint_every)
        self.torch_device = self.sim.torch_device
        self.fps = 1.0 / (s.dt * s.substeps)
        self.times = interval_times(s.frames, s.dt, s.substeps).to(self.torch_device)
        self.faces = torch.as_tensor(self.model.render_faces, dtype=torch.int64, device=self.torch_device)
        mass = np.asarray(self.model.defaults["particle_mass"], dtype=np.float64)
        self.mass = torch.as_tensor(mass / mass.sum(), dtype=torch.float32, device=self.torch_device)
        self.colors = self._colors()
        with torch.no_grad():
            self.goal_vertices = self._goal()
        self.goal_com = self.com(self.goal_vertices)
        self.camera = self._camera()
        from ..render import SoftRenderer

        r = config.render
        self.renderer = SoftRenderer(self.camera, image_size=(r.size, r.size), sigma=r.sigma, gamma=r.gamma,
                                     shading="flat")
        self.target = self._target(base)

    # -- scenes ------------------------------------------------------------------------------------
    def _build_walker(self):
        from ..geometry.cloth import walker

        w = self.config.walker
        builder = ModelBuilder(contact_smoothing=w.smoothing)
        builder.add_material(w.ke, w.kd, w.kf, w.friction)
        mesh = walker(cell=w.cell)
        builder.add_cloth(mesh, density=w.density, mu=w.mu, lam=w.lam, damping=w.damping)
        self.goal_offset = np.array([self.rng.uniform(*w.goal_distance), 0.0, 0.0])
        return builder, {"particles": len(mesh.vertices), "triangles": len(mesh.faces),
                         "goal_offset": self.goal_offset.tolist()}

    def _build_fem(self):
        from ..geometry.tetmesh import gear

        f = self.config.fem
        builder = ModelBuilder(contact_smoothing=f.smoothing)
        builder.add_material(f.ke, f.kd, f.kf, f.friction)
        mesh = gear(radius=f.radius, tooth_length=f.tooth_length, thickness=f.thickness, teeth=f.teeth,
                    rings=f.rings, layers=f.layers)
        mu = f.young / (2.0 * (1.0 + f.poisson))
        lam = f.young * f.poisson / ((1.0 + f.poisson) * (1.0 - 2.0 * f.poisson))
        lift = 0.5 * f.thickness * f.scale + 1e-3
        builder.add_soft_mesh(mesh, position=(0.0, lift, 0.0), scale=f.scale, density=f.density, mu=mu, lam=lam,
                              damping=f.damping)
        distance = self.rng.uniform(*f.goal_distance)
        angle = 0.0 if f.goal_directions == "+x" else self.rng.uniform(0.0, 2.0 * math.pi)
        self.goal_offset = np.array([distance * math.cos(angle), 0.0, distance * math.sin(angle)])
        return builder, {"particles": len(mesh.vertices), "tetrahedra": len(mesh.tets),
                         "goal_offset": self.goal_offset.tolist()}

    def _build_cloth(self):
        from ..geometry.cloth import grid

        c = self.config.cloth
        rng = self.rng
        lo, hi = c.triangles
        target = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        size = rng.uniform(*c.size, size=2)
        # cells as square as the size allows: nx / ny ~ size_x / size_y, 2 nx ny triangles in [lo, hi]
        nx = max(1, int(round(math.sqrt(0.5 * target * size[0] / size[1]))))
        ny = max(1, int(round(0.5 * target / nx)))
        while 2 * nx * ny > hi:
            ny -= 1
        while 2 * nx * ny < lo:
            ny += 1
        mesh = grid(size=(float(size[0]), float(size[1])), cells=(nx, ny))
        height = rng.uniform(*c.height)
        start = np.array([rng.uniform(-0.3, 0.3), height, rng.uniform(-0.3, 0.3)])
        yaw = rng.uniform(0.0, math.pi)
        tilt = rng.uniform(-0.3, 0.3)
        rotation = quaternion_multiply(axis_angle_quaternion((0.0, 1.0, 0.0), yaw),
                                       axis_angle_quaternion((1.0, 0.0, 0.0), tilt))
        builder = ModelBuilder(gravity=(0.0, c.gravity, 0.0), contact_smoothing=0.005)
        builder.add_material()
        builder.add_cloth(mesh, position=start, rotation=rotation, density=c.density, mu=c.mu, lam=c.lam,
                          damping=c.damping, bending_stiffness=c.bending_stiffness, drag=c.drag, lift=c.lift)
        # contact scaled to the lightest particle (see ClothConfig): stable forward and adjoint for every seed
        light, dt = min(p["mass"] for p in builder.particles), self.config.sim.dt
        builder.materials[0] = (c.contact_ke * light / dt ** 2, c.contact_kd * light / dt, c.contact_kf * light / dt,
                                c.friction)
        speed = rng.uniform(*c.speed)
        azimuth = rng.uniform(0.0, 2.0 * math.pi)
        elevation = rng.uniform(math.radians(15.0), math.radians(45.0))
        self.goal_velocity = speed * np.array([math.cos(elevation) * math.cos(azimuth), math.sin(elevation),
                                               math.cos(elevation) * math.sin(azimuth)])
        return builder, {"particles": len(mesh.vertices), "triangles": len(mesh.faces),
                         "size": size.tolist(), "start": start.tolist(), "goal_velocity": self.goal_velocity.tolist()}

    def _goal(self) -> torch.Tensor:
        """Goal vertices ``[V, 3]``: the settled pose moved by the goal offset (walker, fem) or the last
        frame of the throw with the hidden velocity (cloth)."""
        if self.scene == "cloth":
            velocity = torch.as_tensor(self.goal_velocity, dtype=torch.float32, device=self.torch_device)
            return self.sim.rollout({"particle_velocity": velocity})[-1].detach()
        rest = self.sim.rollout()[-1].detach()
        return rest + torch.as_tensor(self.goal_offset, dtype=torch.float32, device=self.torch_device)

    def _colors(self) -> torch.Tensor:
        """Per-vertex colours: a left-to-right blue-to-orange ramp so that the pose is visible."""
        x = np.asarray(self.model.defaults["particle_position"])
        u = (x[:, 0] - x[:, 0].min()) / max(float(np.ptp(x[:, 0])), 1e-9)
        if self.scene == "cloth":
            u = (x[:, 2] - x[:, 2].min()) / max(float(np.ptp(x[:, 2])), 1e-9) * 0.5 + 0.5 * u
        a, b = np.array([0.15, 0.35, 0.85]), np.array([0.95, 0.55, 0.15])
        return torch.as_tensor(a + (b - a) * u[:, None], dtype=torch.float32, device=self.torch_device)

    def _camera(self):
        from ..render import Camera

        start = torch.as_tensor(np.asarray(self.model.defaults["particle_position"]), dtype=torch.float32,
                                device=self.torch_device)
        if self.scene == "walker":
            w = self.config.walker
            far = start + torch.tensor([w.goal_distance[1], 0.0, 0.0], device=self.torch_device)
            points = torch.cat([start, far])
            lo, hi = points.min(0).values, points.max(0).values
            centre = 0.5 * (lo + hi)
            half = 0.5 * float(max(hi[0] - lo[0], hi[1] - lo[1])) * 1.25
            dist = half / math.tan(math.radians(20.0))
            eye = centre + torch.tensor([0.0, 0.0, dist], device=self.torch_device)
            return Camera.look_at(eye, centre, fov_y=40.0, near=0.1, far=dist * 3.0)
        if self.scene == "fem":
            f = self.config.fem
            reach = f.goal_distance[1]
            shifts = torch.tensor([[reach, 0, 0], [-reach, 0, 0], [0, 0, reach], [0, 0, -reach]],
                                  dtype=torch.float32, device=self.torch_device)
            if f.goal_directions == "+x":
                shifts = shifts[:1]
            points = torch.cat([start] + [start + s for s in shifts])
            return Camera.framing(points, elevation=55.0, azimuth=20.0, margin=1.0)
        points = torch.cat([start, self.goal_vertices])
        return Camera.framing(points, elevation=self.config.cloth.camera_elevation, azimuth=0.0, margin=1.05)

    def _target(self, base) -> torch.Tensor:
        """The target image ``[H, W, 4]``: a user image file or the rendered goal configuration."""
        if self.config.target_image:
            return load_target_image(self.config.target_image, self.config.render.size, self.torch_device, base)
        with torch.no_grad():
            return self.render(self.goal_vertices[None])[0]

    # -- evaluation --------------------------------------------------------------------------------
    def rollout(self, inputs: dict) -> torch.Tensor:
        return self.sim.rollout(inputs)

    def render(self, vertices: torch.Tensor) -> torch.Tensor:
        """RGBA images ``[F, H, W, 4]`` of ``vertices`` ``[F, V, 3]``."""
        return self.renderer(vertices, self.faces, colors=self.colors)

    def com(self, vertices: torch.Tensor) -> torch.Tensor:
        """Centre of mass ``[..., 3]`` of ``vertices`` ``[..., V, 3]``."""
        return (vertices * self.mass[:, None]).sum(-2)

    def blur_sigma(self, iteration: int | None) -> float:
        """The coarse-to-fine blur (px) of iteration ``iteration`` (0: none; ``None``: the final, sharp loss)."""
        r = self.config.render
        if iteration is None or r.blur_start <= 0.0:
            return 0.0
        sigma = r.blur_start * r.blur_decay ** iteration
        return sigma if sigma >= r.blur_min else 0.0

    def image_loss(self, vertices: torch.Tensor, iteration: int | None = None) -> torch.Tensor:
        """Pixel MSE (RGB) between the last rendered frame and the target image, both blurred by the
        coarse-to-fine schedule at ``iteration`` (``None``: unblurred), plus the ``render.blur`` terms."""
        image, target = self.render(vertices[-1:])[0][..., :3], self.target[..., :3]
        sigma = self.blur_sigma(iteration)
        if sigma > 0.0:
            loss = torch.mean((_blur(image, sigma) - _blur(target, sigma)) ** 2)
        else:
            loss = torch.mean((image - target) ** 2)
        for sigma in self.config.render.blur:
            loss = loss + torch.mean((_blur(image, sigma) - _blur(target, sigma)) ** 2)
        return loss

    def com_loss(self, vertices: torch.Tensor) -> torch.Tensor:
        """DiffPhysics: mean over frames 1.. of the squared distance of the centre of mass to the goal's."""
        com = self.com(vertices[1:])
        return torch.mean(torch.sum((com - self.goal_com) ** 2, dim=-1))

    def distance(self, vertices: torch.Tensor) -> float:
        """Distance (m) of the last frame's centre of mass to the goal's."""
        return float(torch.linalg.norm(self.com(vertices[-1].detach()) - self.goal_com))

    # -- controllers -------------------------------------------------------------------------------
    def controller(self, generator: torch.Generator | None = None) -> torch.nn.Module:
        if self.scene == "cloth":
            return VelocityController(self.model.particle_count, self.config.cloth.initial_speed).to(self.torch_device)
        p = self.config.policy
        count = self.model.tri_count if self.scene == "walker" else self.model.tet_count
        policy = SinusoidPolicy(count, p.sinusoids, p.frequency, p.scale, p.init_std, generator=generator)
        return PolicyController(policy, CONTROL_PARAMETER[self.scene], self.times).to(self.torch_device)

    def random_inputs(self, rng: np.random.Generator) -> dict:
        """Random actions: uniform activations in [-scale, scale] per element and interval (walker,
        fem), or a random initial velocity with a speed in the goal range (cloth)."""
        if self.scene == "cloth":
            c = self.config.cloth
            direction = rng.normal(size=3)
            direction[1] = abs(direction[1])
            velocity = rng.uniform(*c.speed) * direction / np.linalg.norm(direction)
            return {"particle_velocity": torch.as_tensor(velocity, dtype=torch.float32, device=self.torch_device)}
        count = self.model.tri_count if self.scene == "walker" else self.model.tet_count
        scale = self.config.policy.scale
        actions = rng.uniform(-scale, scale, size=(self.sim.frames - 1, count))
        return {CONTROL_PARAMETER[self.scene]: torch.as_tensor(actions, dtype=torch.float32, device=self.torch_device)}


class PolicyController(torch.nn.Module):
    """Wraps a policy: ``forward()`` gives ``{control parameter: activations [frames - 1, elements]}``."""

    def __init__(self, policy: SinusoidPolicy, parameter: str, times: torch.Tensor):
        super().__init__()
        self.policy = policy
        self.parameter = parameter
        self.register_buffer("times", times)

    def forward(self) -> dict:
        return {self.parameter: self.policy(self.times)}


class VelocityController(torch.nn.Module):
    """The initial velocity of the cloth (every particle), starting straight up at ``speed``."""

    def __init__(self, particles: int, speed: float):
        super().__init__()
        self.velocity = torch.nn.Parameter(torch.tensor([0.0, float(speed), 0.0]))

    def forward(self) -> dict:
        return {"particle_velocity": self.velocity}


def load_target_image(path, size: int, device, base=None) -> torch.Tensor:
    """A user goal image as RGBA ``[size, size, 4]`` in [0, 1] (resized with area averaging)."""
    from pathlib import Path

    import imageio.v3 as iio

    file = Path(path)
    if not file.is_absolute() and not file.exists() and base is not None:
        file = Path(base) / file
    if not file.is_file():
        raise ConfigError(f"target_image '{path}' does not exist")
    image = np.asarray(iio.imread(file), dtype=np.float32)
    if image.max() > 1.0:
        image = image / 255.0
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.shape[2] == 3:
        image = np.concatenate([image, np.ones_like(image[..., :1])], axis=2)
    tensor = torch.as_tensor(image[..., :4]).permute(2, 0, 1)[None]
    tensor = torch.nn.functional.interpolate(tensor, size=(size, size), mode="area")
    return tensor[0].permute(1, 2, 0).contiguous().to(device)


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (``sigma`` in pixels, replicate border) of an ``[H, W, C]`` image."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = image.shape[-1]
    data = image.permute(2, 0, 1)[None]
    data = torch.nn.functional.pad(data, (radius, radius, radius, radius), mode="replicate")
    data = torch.nn.functional.conv2d(data, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    data = torch.nn.functional.conv2d(data, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return data[0].permute(1, 2, 0)
