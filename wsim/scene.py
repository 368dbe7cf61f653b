"""From a config to a ready-to-run scene: meshes, ModelBuilder, Model and Simulation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .builder import ModelBuilder
from .config import SceneConfig
from .device import resolve_device
from .errors import ConfigError, MeshError
from .meshes import load_mesh, primitive
from .model import Model
from .simulation import Simulation


@dataclass
class Scene:
    """A built scene: its ``config``, ``model``, ``simulation`` and per-vertex ``colors`` [V, 3]."""

    config: SceneConfig
    model: Model
    simulation: Simulation
    colors: np.ndarray

    @property
    def fps(self) -> float:
        return 1.0 / (self.config.sim.dt * self.config.sim.substeps)


def body_mesh(shape, base: Path | None = None, where: str = "shape"):
    """The TriangleMesh of a body's ``shape`` config (primitive or file, then scaled)."""
    if shape.file:
        path = Path(shape.file)
        if not path.is_absolute() and base is not None and not path.exists():
            path = base / path
        try:
            mesh = load_mesh(path)
        except MeshError as error:
            raise ConfigError(f"{where}.file: {error}") from None
    else:
        try:
            mesh = primitive(shape.type, shape.size, shape.resolution)
        except MeshError as error:
            raise ConfigError(f"{where}: {error}") from None
    return mesh.scaled(shape.scale)


def build_scene(config: SceneConfig, device: str | None = None, base: Path | None = None) -> Scene:
    """Build the Model and Simulation described by ``config`` on ``device`` (default: auto)."""
    device = resolve_device(device)
    sim = config.sim
    builder = ModelBuilder(gravity=config.gravity, ground=config.ground.enabled,
                           ground_height=config.ground.height, contact_margin=config.contact.margin,
                           contact_smoothing=config.contact.smoothing)
    c = config.contact
    builder.add_material(c.ke, c.kd, c.kf, c.mu)
    colors = []
    for index, body in enumerate(config.bodies):
        where = f"bodies.{index}"
        override = body.contact
        material = 0
        if any(v is not None for v in (override.ke, override.kd, override.kf, override.mu)):
            material = builder.add_material(*(c_ if o is None else o for o, c_ in
                                              ((override.ke, c.ke), (override.kd, c.kd), (override.kf, c.kf),
                                               (override.mu, c.mu))))
        mesh = body_mesh(body.shape, base, f"{where}.shape")
        mass_kwargs = {"mass": body.mass} if body.mass is not None else {"density": body.density}
        builder.add_body(mesh, **mass_kwargs, position=body.position, rotation=body.rotation,
                         velocity=body.velocity, angular_velocity=body.angular_velocity, material=material,
                         name=body.name or f"body{index}", push_impulse=body.push.impulse,
                         push_point=body.push.point, push_start=body.push.start, push_duration=body.push.duration)
        colors.append(np.tile(np.asarray(body.color, dtype=np.float32)[:3], (len(mesh.vertices), 1)))
    for chain in config.chains:
        if chain.count < 2:
            raise ConfigError(f"chains: count must be >= 2, got {chain.count}")
        points = np.linspace(chain.start, chain.end, chain.count)
        first = len(builder.particles)
        for k, point in enumerate(points):
            builder.add_particle(point, chain.velocity, chain.mass, chain.radius, pinned=chain.pin_first and k == 0)
            if k:
                builder.add_spring(first + k - 1, first + k, chain.stiffness, chain.damping)
        colors.append(np.tile(np.array([0.2, 0.4, 0.9], dtype=np.float32), (chain.count, 1)))
    model = builder.finalize(device, dt=sim.dt)
    simulation = Simulation(model, sim.dt, sim.substeps, sim.frames)
    colors = np.concatenate(colors) if colors else np.zeros((0, 3), dtype=np.float32)
    return Scene(config, model, simulation, colors)
