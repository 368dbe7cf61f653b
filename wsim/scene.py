"""From a config to a ready-to-run scene: meshes, ModelBuilder, Model and Simulation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .builder import ModelBuilder
from .config import SceneConfig
from .device import resolve_device
from .errors import ConfigError, MeshError, ParameterError
from .geometry import load_mesh, primitive
from .model_state import Model
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
    if config.articulation is not None:
        return _articulated_scene(config, device)
    if config.robot is not None:
        return _robot_scene(config, device, base)
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
        for j, rotor in enumerate(body.rotors):
            try:
                builder.add_rotor(len(builder.bodies) - 1, position=rotor.position, axis=rotor.axis, spin=rotor.spin,
                                  torque_ratio=rotor.torque_ratio, max_thrust=rotor.max_thrust, thrust=rotor.thrust,
                                  name=f"{where}.rotors.{j}")
            except ParameterError as error:
                raise ConfigError(str(error)) from None
        colors.append(_body_colors(body, builder.bodies[-1]["vertices"]))
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
    for index, soft in enumerate(config.soft_bodies):
        colors.append(_add_soft_body(builder, soft, index, base, _material(builder, c, soft.contact)))
    for index, cloth in enumerate(config.cloths):
        colors.append(_add_cloth(builder, cloth, index, base, _material(builder, c, cloth.contact)))
    model = builder.finalize(device, dt=sim.dt)
    simulation = Simulation(model, sim.dt, sim.substeps, sim.frames, checkpoint_every=sim.checkpoint_every,
                            graph=sim.graph)
    colors = np.concatenate(colors) if colors else np.zeros((0, 3), dtype=np.float32)
    return Scene(config, model, simulation, colors)


def _articulated_scene(config: SceneConfig, device: str) -> Scene:
    from .articulated import ArticulatedSimulation

    sim = config.sim
    try:
        simulation = ArticulatedSimulation(config.articulation, config.gravity, sim.dt, sim.substeps, sim.frames,
                                           device, ground=config.ground, contact=config.contact)
    except ParameterError as error:
        raise ConfigError(f"articulation: {error}") from None
    starts = simulation.model.body_vertex_start
    art = config.articulation
    looks = [link.color for link in art.links] + ([art.base_color] if art.base_size is not None else [])
    colors = np.concatenate([np.tile(np.asarray(color, dtype=np.float32)[:3], (int(last - first), 1))
                             for color, first, last in zip(looks, starts[:-1], starts[1:])])
    return Scene(config, simulation.model, simulation, colors)


def _robot_scene(config: SceneConfig, device: str, base: Path | None) -> Scene:
    from .robot import RobotSimulation, robot_path

    sim = config.sim
    try:
        simulation = RobotSimulation(config.robot, robot_path(config.robot, base), config.gravity, sim.dt,
                                     sim.substeps, sim.frames, device, ground=config.ground, contact=config.contact)
    except ParameterError as error:
        raise ConfigError(f"robot: {error}") from None
    return Scene(config, simulation.model, simulation, simulation.colors)


def _material(builder: ModelBuilder, contact, override) -> int:
    """Material 0 (the global contact section) or a new one with the override's values."""
    values = (override.ke, override.kd, override.kf, override.mu)
    if all(v is None for v in values):
        return 0
    defaults = (contact.ke, contact.kd, contact.kf, contact.mu)
    return builder.add_material(*(d if v is None else v for v, d in zip(values, defaults)))


def _selected(selection, vertices: np.ndarray, where: str) -> np.ndarray:
    """Mesh vertex indices chosen by a :class:`~wsim.config.ParticleSelection` (a pin or a push; ``where``
    names it) on world positions."""
    mask = np.zeros(len(vertices), dtype=bool)
    for i in selection.indices:
        if not 0 <= i < len(vertices):
            raise ConfigError(f"{where}.indices: {i} is not a vertex index in [0, {len(vertices) - 1}]")
        mask[i] = True
    if selection.below is not None or selection.above is not None:
        axes = {"x": 0, "y": 1, "z": 2}
        if selection.axis not in axes:
            raise ConfigError(f"{where}.axis must be x, y or z when below/above is given, got {selection.axis!r}")
        coordinate = vertices[:, axes[selection.axis]]
        if selection.ends:
            selected = (coordinate <= selection.below) | (coordinate >= selection.above)
        else:
            selected = np.ones(len(vertices), dtype=bool)
            if selection.below is not None:
                selected &= coordinate <= selection.below
            if selection.above is not None:
                selected &= coordinate >= selection.above
        mask |= selected
    return np.flatnonzero(mask)


def soft_body_mesh(mesh_config, base: Path | None = None, where: str = "mesh"):
    """The :class:`~wsim.geometry.tetmesh.TetMesh` described by a :class:`~wsim.config.TetMeshConfig`."""
    from .geometry import tetmesh

    m = mesh_config
    try:
        if m.file:
            path = Path(m.file)
            if not path.is_absolute() and base is not None and not path.exists():
                path = base / path
            from .geometry import MESH_FILE_SUFFIXES

            if path.suffix.lower() in MESH_FILE_SUFFIXES:
                return tetmesh.tetrahedralize(load_mesh(path), max_volume=m.max_volume)
            return tetmesh.load_tet_mesh(path)
        size = np.asarray(m.size, dtype=np.float64).reshape(-1)
        if m.type == "box":
            return tetmesh.box(size if size.size == 3 else float(size[0]), m.cells)
        if m.type == "beam":
            if size.size != 3:
                raise ConfigError(f"{where}.size: a beam needs [length, height, width], got {m.size}")
            return tetmesh.beam(size[0], size[2], size[1], m.cells)
        if m.type == "sphere":
            return tetmesh.sphere(float(size[0]), m.resolution)
        if m.type == "gear":
            return tetmesh.gear(float(size[0]))
    except MeshError as error:
        raise ConfigError(f"{where}: {error}") from None
    raise ConfigError(f"{where}.type must be box, beam, sphere or gear (or give a file), got {m.type!r}")


def _body_colors(body, points: np.ndarray) -> np.ndarray:
    """Per-vertex colours of a rigid body: its colour, darkened by its pattern (smooth 3-D cells of
    ``pattern_scale`` in the body frame; ``points`` are its vertices there, about the centre of mass)."""
    color = np.asarray(body.color, dtype=np.float32)[:3]
    if not body.pattern:
        return np.tile(color, (len(points), 1))
    # a smooth 3-D checker: the product of three sines, sharpened so that most of a cell has its full shade
    cells = np.tanh(4.0 * np.prod(np.sin(np.pi * np.asarray(points, dtype=np.float64) / body.pattern_scale), axis=1))
    cells /= np.tanh(4.0)
    return (color[None] * (1.0 - body.pattern * 0.5 * (1.0 + cells))[:, None]).astype(np.float32)


def _add_soft_body(builder: ModelBuilder, soft, index: int, base, material: int) -> np.ndarray:
    where = f"soft_bodies.{index}"
    mesh = soft_body_mesh(soft.mesh, base, f"{where}.mesh")
    mu, lam = soft.mu, soft.lam
    if soft.young is not None or soft.poisson is not None:
        if soft.young is None or soft.poisson is None:
            raise ConfigError(f"{where}: give both young and poisson (or mu and lam)")
        if not soft.young > 0 or not 0 <= soft.poisson < 0.5:
            raise ConfigError(f"{where}: young must be > 0 and poisson in [0, 0.5), got {soft.young}, {soft.poisson}")
        from .models.fem import lame_from_young_poisson

        mu, lam = lame_from_young_poisson(soft.young, soft.poisson)
    try:
        placed = mesh.transformed(soft.scale, soft.rotation, soft.position)
    except MeshError as error:
        raise ConfigError(f"{where}: {error}") from None
    pinned = _selected(soft.pin, placed.vertices, f"{where}.pin")
    mass = {"particle_mass": soft.particle_mass} if soft.particle_mass is not None else {"density": soft.density}
    push = soft.push
    pushed = _selected(push, placed.vertices, f"{where}.push")
    if any(push.impulse) and not len(pushed):
        raise ConfigError(f"{where}.push: the impulse {push.impulse} selects no particle (give indices or "
                          "axis with below/above)")
    try:
        added = builder.add_soft_mesh(placed, velocity=soft.velocity, mu=mu, lam=lam, damping=soft.damping,
                                      activation=soft.activation, radius=soft.radius, pinned=pinned,
                                      material=material, name=soft.name or where, **mass)
        if any(push.impulse):
            builder.add_particle_push(added["particles"][0] + pushed, push.impulse, push.start, push.duration)
    except (MeshError, ParameterError) as error:
        raise ConfigError(f"{where}: {error}") from None
    return np.tile(np.asarray(soft.color, dtype=np.float32)[:3], (len(placed.vertices), 1))


def _add_cloth(builder: ModelBuilder, cloth, index: int, base, material: int) -> np.ndarray:
    from .geometry.cloth import grid, load_cloth
    from .geometry.transforms import transform_points

    where = f"cloths.{index}"
    try:
        if cloth.file:
            path = Path(cloth.file)
            if not path.is_absolute() and base is not None and not path.exists():
                path = base / path
            mesh = load_cloth(path)
        else:
            mesh = grid(cloth.size, cloth.cells)
        world = transform_points(mesh.vertices, cloth.scale, cloth.rotation, cloth.position)
    except MeshError as error:
        raise ConfigError(f"{where}: {error}") from None
    pinned = _selected(cloth.pin, world, f"{where}.pin")
    mass = {"particle_mass": cloth.particle_mass} if cloth.particle_mass is not None else {"density": cloth.density}
    try:
        result = builder.add_cloth(
            mesh, position=cloth.position, rotation=cloth.rotation, scale=cloth.scale, velocity=cloth.velocity,
            mu=cloth.mu, lam=cloth.lam, damping=cloth.damping, bending_stiffness=cloth.bending_stiffness,
            bending_damping=cloth.bending_damping, drag=cloth.drag, lift=cloth.lift, radius=cloth.radius,
            pinned=pinned, anchors=cloth.anchors or None, anchor_stiffness=cloth.anchor_stiffness,
            anchor_damping=cloth.anchor_damping, material=material, name=cloth.name or where, **mass)
    except (MeshError, ParameterError) as error:
        raise ConfigError(f"{where}: {error}") from None
    color = np.asarray(cloth.color, dtype=np.float32)[:3]
    return np.tile(color, (len(mesh.vertices) + len(result["anchors"]), 1))
