"""ModelBuilder: assemble particles, springs, rigid bodies and contact materials into a Model.

Typical use::

    builder = ModelBuilder(gravity=(0, -9.80665, 0))
    body = builder.add_body(primitive("box", 0.2), density=500.0, position=(0, 0.5, 0))
    model = builder.finalize("cpu")
    sim = Simulation(model, dt=1e-3, substeps=10, frames=60)
    vertices = sim.rollout({"density": torch.tensor(400.0, requires_grad=True)})

Every value handed to the builder is validated (name of the field and allowed range in the error).
"""

from __future__ import annotations

import numpy as np
import warp as wp

from .device import init_warp
from .errors import MeshError, ParameterError, check_finite, check_range
from .meshes import TriangleMesh, mass_properties
from .model import Model

# Importing the models and the integrator registers their parameters.
from . import models as _models  # noqa: F401
from .integrators import semi_implicit as _integrator  # noqa: F401
from . import simulation as _simulation  # noqa: F401


def _vector(name, value, length=3):
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    if array.size != length:
        raise ParameterError(f"{name} must have {length} components, got {array.size}")
    check_finite(name, array)
    return array


class ModelBuilder:
    """Collects a scene on the host; :meth:`finalize` uploads it to a device as a :class:`Model`."""

    def __init__(self, gravity=(0.0, -9.80665, 0.0), ground: bool = True, ground_height: float = 0.0,
                 contact_margin: float = 0.0, contact_smoothing: float = 1.0e-2):
        self.gravity = _vector("gravity", gravity)
        check_finite("ground.height", ground_height)
        check_range("contact.margin", contact_margin, 0.0, None, low_inclusive=True)
        self.ground = bool(ground)
        self.ground_height = float(ground_height)
        self.contact_margin = float(contact_margin)
        check_range("contact.smoothing", contact_smoothing, 0.0, None, low_inclusive=True)
        self.contact_smoothing = float(contact_smoothing)
        self.materials: list[tuple[float, float, float, float]] = []
        self.particles: list[dict] = []
        self.springs: list[tuple[int, int, float, float, float]] = []
        self.bodies: list[dict] = []
        self.particle_faces: list[tuple[int, int, int]] = []

    # -- contact ----------------------------------------------------------------------------------
    def add_material(self, ke: float = 1.0e4, kd: float = 100.0, kf: float = 1.0e3, mu: float = 0.5) -> int:
        """Add a contact material (paper's theta = [ke, kd, kf, mu]); returns its index."""
        for name, value in (("ke", ke), ("kd", kd), ("kf", kf), ("mu", mu)):
            check_range(f"contact.{name}", value, 0.0, None, low_inclusive=True)
        self.materials.append((float(ke), float(kd), float(kf), float(mu)))
        return len(self.materials) - 1

    def _material(self, material):
        if material is None:
            if not self.materials:
                self.add_material()
            return 0
        if not 0 <= int(material) < len(self.materials):
            raise ParameterError(f"material index must lie in [0, {len(self.materials) - 1}], got {material}")
        return int(material)

    # -- particles and springs --------------------------------------------------------------------
    def add_particle(self, position, velocity=(0.0, 0.0, 0.0), mass: float = 1.0, radius: float = 0.0,
                     pinned: bool = False, material: int | None = None) -> int:
        """Add a point mass (kg) at ``position`` (m); ``radius`` (m) is its contact thickness."""
        check_range("particle.mass", mass, 0.0, None)
        check_range("particle.radius", radius, 0.0, None, low_inclusive=True)
        self.particles.append(dict(position=_vector("particle.position", position),
                                   velocity=_vector("particle.velocity", velocity), mass=float(mass),
                                   radius=float(radius), pinned=bool(pinned), material=self._material(material)))
        return len(self.particles) - 1

    def add_spring(self, i: int, j: int, stiffness: float, damping: float = 0.0, rest_length: float | None = None):
        """Add a damped spring between particles i and j; the rest length defaults to their distance."""
        n = len(self.particles)
        if not (0 <= i < n and 0 <= j < n) or i == j:
            raise ParameterError(f"spring particles must be two distinct indices in [0, {n - 1}], got ({i}, {j})")
        check_range("spring.stiffness", stiffness, 0.0, None, low_inclusive=True)
        check_range("spring.damping", damping, 0.0, None, low_inclusive=True)
        if rest_length is None:
            rest_length = float(np.linalg.norm(self.particles[i]["position"] - self.particles[j]["position"]))
        check_range("spring.rest_length", rest_length, 0.0, None, low_inclusive=True)
        self.springs.append((i, j, float(stiffness), float(damping), float(rest_length)))
        return len(self.springs) - 1

    # -- rigid bodies -----------------------------------------------------------------------------
    def add_body(self, mesh: TriangleMesh, density: float | None = None, mass: float | None = None,
                 position=(0.0, 0.0, 0.0), rotation=(0.0, 0.0, 0.0, 1.0), velocity=(0.0, 0.0, 0.0),
                 angular_velocity=(0.0, 0.0, 0.0), material: int | None = None, name: str | None = None,
                 push_impulse=None, push_point=(0.0, 0.0, 0.0), push_start: float = 0.0,
                 push_duration: float = 0.0) -> int:
        """Add a rigid body whose surface is the closed ``mesh`` (mesh frame).

        Mass and inertia come from the mesh and ``density`` (kg/m^3) or a total ``mass`` (kg, uniform
        density). ``position`` places the centre of mass (m); ``rotation`` is a quaternion (x, y, z, w);
        velocities are world-frame. ``push_impulse`` (N s, world) is delivered at ``push_point`` (body
        frame, relative to the centre of mass) over ``[push_start, push_start + push_duration)`` seconds.
        """
        name = name or f"body{len(self.bodies)}"
        if (density is None) == (mass is None):
            raise ParameterError(f"body '{name}': give exactly one of density or mass")
        try:
            properties = mass_properties(mesh)
        except MeshError as error:
            raise MeshError(f"body '{name}': {error}") from None
        if density is not None:
            check_range(f"body '{name}' density", density, 0.0, None)
            density = float(density)
        else:
            check_range(f"body '{name}' mass", mass, 0.0, None)
            density = float(mass) / properties.volume
        rotation = _vector(f"body '{name}' rotation", rotation, 4)
        norm = np.linalg.norm(rotation)
        if norm < 1e-8:
            raise ParameterError(f"body '{name}' rotation must be a non-zero quaternion (x, y, z, w)")
        check_range(f"body '{name}' push_duration", push_duration, 0.0, None, low_inclusive=True)
        check_range(f"body '{name}' push_start", push_start, 0.0, None, low_inclusive=True)
        impulse = np.zeros(3) if push_impulse is None else _vector(f"body '{name}' push impulse", push_impulse)
        self.bodies.append(dict(
            name=name, vertices=mesh.vertices - properties.center_of_mass, faces=mesh.faces, density=density,
            volume=properties.volume, unit_inertia=properties.inertia,
            position=_vector(f"body '{name}' position", position), rotation=rotation / norm,
            velocity=_vector(f"body '{name}' velocity", velocity),
            angular_velocity=_vector(f"body '{name}' angular_velocity", angular_velocity),
            material=self._material(material), impulse=impulse,
            push_point=_vector(f"body '{name}' push point", push_point), push_start=float(push_start),
            push_duration=float(push_duration),
        ))
        return len(self.bodies) - 1

    # -- upload -----------------------------------------------------------------------------------
    def finalize(self, device: str = "cpu", dt: float | None = None) -> Model:
        """Upload to ``device``. ``dt`` (s) converts push windows to physics steps (required for pushes)."""
        init_warp()
        if not self.materials:
            self.add_material()
        model = Model(device=device, ground=self.ground, ground_height=self.ground_height,
                      contact_margin=self.contact_margin,
                      contact_smoothing=self.contact_smoothing, material_count=len(self.materials))
        defaults = model.defaults
        defaults["gravity"] = self.gravity[None]
        materials = np.asarray(self.materials, dtype=np.float64)
        for column, name in enumerate(("contact_ke", "contact_kd", "contact_kf", "contact_mu")):
            defaults[name] = materials[:, column]

        P = model.particle_count = len(self.particles)
        if P:
            model.particle_radius = wp.array([p["radius"] for p in self.particles], dtype=float, device=device)
            model.particle_pinned = wp.array([int(p["pinned"]) for p in self.particles], dtype=wp.int32, device=device)
            model.particle_material = wp.array([p["material"] for p in self.particles], dtype=wp.int32, device=device)
            defaults["particle_mass"] = np.array([p["mass"] for p in self.particles])
            defaults["particle_position"] = np.array([p["position"] for p in self.particles])
            defaults["particle_velocity"] = np.array([p["velocity"] for p in self.particles])
        S = model.spring_count = len(self.springs)
        if S:
            springs = np.asarray(self.springs, dtype=np.float64)
            model.spring_indices = wp.array(springs[:, :2].astype(np.int32), dtype=wp.int32, device=device)
            defaults["spring_stiffness"] = springs[:, 2]
            defaults["spring_damping"] = springs[:, 3]
            defaults["spring_rest_length"] = springs[:, 4]

        B = model.body_count = len(self.bodies)
        faces = []
        starts = [0]
        if B:
            if dt is None and any(b["push_duration"] > 0 for b in self.bodies):
                raise ParameterError("finalize(dt=...) is required to place push windows on physics steps")
            vertices = np.concatenate([b["vertices"] for b in self.bodies])
            vertex_body = np.concatenate([np.full(len(b["vertices"]), i) for i, b in enumerate(self.bodies)])
            for b in self.bodies:
                faces.append(b["faces"] + starts[-1])
                starts.append(starts[-1] + len(b["vertices"]))
            model.shape_vertex_count = len(vertices)
            model.shape_vertices = wp.array(vertices, dtype=wp.vec3, device=device)
            model.shape_vertex_body = wp.array(vertex_body.astype(np.int32), dtype=wp.int32, device=device)
            model.body_material = wp.array([b["material"] for b in self.bodies], dtype=wp.int32, device=device)
            model.body_volume = np.array([b["volume"] for b in self.bodies])
            model.body_unit_inertia = np.array([b["unit_inertia"] for b in self.bodies])
            model.body_names = [b["name"] for b in self.bodies]
            density = np.array([b["density"] for b in self.bodies])
            model.extras["body_density"] = density
            defaults["body_mass"] = density * model.body_volume
            defaults["body_inertia"] = density[:, None, None] * model.body_unit_inertia
            defaults["body_position"] = np.array([b["position"] for b in self.bodies])
            defaults["body_rotation"] = np.array([b["rotation"] for b in self.bodies])
            defaults["body_velocity"] = np.array([b["velocity"] for b in self.bodies])
            defaults["body_angular_velocity"] = np.array([b["angular_velocity"] for b in self.bodies])
            start = np.array([round(b["push_start"] / dt) if dt else 0 for b in self.bodies], dtype=np.int32)
            steps = np.array([max(round(b["push_duration"] / dt), 1 if b["push_duration"] > 0 else 0) if dt else 0
                              for b in self.bodies], dtype=np.int32)
            model.body_push_start_step = wp.array(start, dtype=wp.int32, device=device)
            model.body_push_end_step = wp.array(start + steps, dtype=wp.int32, device=device)
            model.body_push_point = wp.array(np.array([b["push_point"] for b in self.bodies]), dtype=wp.vec3,
                                             device=device)
            durations = np.maximum(steps, 1) * (dt or 1.0)
            defaults["body_push_force"] = np.array([b["impulse"] for b in self.bodies]) / durations[:, None]
            defaults["body_push_force"][steps == 0] = 0.0
        model.body_vertex_start = np.array(starts)
        if self.particle_faces:
            faces.append(np.asarray(self.particle_faces) + model.shape_vertex_count)
        model.render_faces = (np.concatenate(faces) if faces else np.zeros((0, 3))).astype(np.int32)
        return model
