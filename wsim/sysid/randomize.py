"""Per-instance randomisation of an experiment's scene (shape, scale, pose, velocities, known push, rotor
thrust schedules)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import numpy as np
from pydantic import Field, model_validator

from ..config import Positive, Vec3, list_default
from ..config_io import ConfigModel

if TYPE_CHECKING:
    from .config import ExperimentConfig


class RandomizeConfig(ConfigModel):
    """Per-instance randomisation of ``scene.bodies.0`` (each draw uniform in [low, high] per component):
    ``shapes`` (names from :data:`wsim.geometry.shapes.SHAPES`; empty keeps the scene's shape), anisotropic
    ``scale``, ``position``, a random orientation (``rotation``), ``velocity``, ``angular_velocity`` and the
    known ``impulse`` (N s, applied over ``scene.bodies.0.push.duration`` at ``push_point``; with
    ``impulse_per_volume`` the draw is per m^3 of the body, so that the velocity it causes, impulse /
    (density x volume), has the same range for every shape and scale). With ``position_from_ground`` the
    drawn height (position y) is the gap between the body's lowest vertex and the ground plane instead of
    the height of its centre of mass, so that every shape and scale starts the same distance above it.
    ``rotor_thrust_low``/``rotor_thrust_high`` (N, both or neither): every rotor of the body gets a thrust
    schedule drawn uniformly in that range, one value per frame interval (random actions)."""

    enabled: bool = False
    shapes: list[str] = Field(default_factory=list)
    shape_resolution: int = Field(8, ge=3)
    scale: Annotated[list[Positive], Field(min_length=2, max_length=2)] = list_default(1.0, 1.0)
    position_low: Vec3 = list_default(0.0, 1.0, 0.0)
    position_high: Vec3 = list_default(0.0, 1.0, 0.0)
    rotation: bool = False
    velocity_low: Vec3 = list_default(0.0, 0.0, 0.0)
    velocity_high: Vec3 = list_default(0.0, 0.0, 0.0)
    angular_velocity_low: Vec3 = list_default(0.0, 0.0, 0.0)
    angular_velocity_high: Vec3 = list_default(0.0, 0.0, 0.0)
    impulse_low: Vec3 = list_default(0.0, 0.0, 0.0)
    impulse_high: Vec3 = list_default(0.0, 0.0, 0.0)
    impulse_per_volume: bool = False
    position_from_ground: bool = False
    push_point_low: Vec3 = list_default(0.0, 0.0, 0.0)
    push_point_high: Vec3 = list_default(0.0, 0.0, 0.0)
    rotor_thrust_low: Optional[float] = None
    rotor_thrust_high: Optional[float] = None

    @model_validator(mode="after")
    def _thrust_range(self):
        low, high = self.rotor_thrust_low, self.rotor_thrust_high
        if (low is None) != (high is None):
            raise ValueError("give both rotor_thrust_low and rotor_thrust_high (N) or neither")
        if low is not None and not low <= high:
            raise ValueError(f"rotor_thrust_low ({low}) must be <= rotor_thrust_high ({high})")
        return self


def _uniform(rng, low, high):
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    return (low + (high - low) * rng.random(np.broadcast(low, high).shape)).tolist()


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
        from ..geometry.transforms import random_quaternion

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
    if r.rotor_thrust_low is not None and body.rotors:
        # drawn last, and only when asked, so that the draws above stay those of earlier versions
        intervals = scene.sim.frames - 1
        thrust = _uniform(rng, np.full((intervals, len(body.rotors)), r.rotor_thrust_low), r.rotor_thrust_high)
        for j, rotor in enumerate(body.rotors):
            rotor.thrust = [row[j] for row in thrust]
    return scene


def lowest_point(body) -> float:
    """The lowest height of ``body``'s vertices relative to its centre of mass (in its initial orientation)."""
    from ..geometry import mass_properties
    from ..scene import body_mesh
    from ..geometry.transforms import rotation_matrix

    mesh = body_mesh(body.shape)
    vertices = np.asarray(mesh.vertices, dtype=np.float64) - mass_properties(mesh).center_of_mass
    return float((vertices @ rotation_matrix(body.rotation).T)[:, 1].min())
