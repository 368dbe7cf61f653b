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
from .geometry.surface import TriangleMesh, mass_properties
from .geometry.tetmesh import TetMesh
from .geometry.transforms import rotation_matrix
from .model_state import Model
from .models import external


def _vector(name, value, length=3):
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    if array.size != length:
        raise ParameterError(f"{name} must have {length} components, got {array.size}")
    check_finite(name, array)
    return array


def _pinned_mask(name, pinned, count):
    """A boolean mask [count] from ``None``, a boolean mask or a list of indices."""
    mask = np.zeros(count, dtype=bool)
    if pinned is None:
        return mask
    values = np.asarray(pinned).reshape(-1)
    if values.dtype == bool:
        if len(values) != count:
            raise ParameterError(f"{name} mask must have {count} entries, got {len(values)}")
        return values.copy()
    if len(values) and (values.min() < 0 or values.max() >= count):
        raise ParameterError(f"{name} indices must lie in [0, {count - 1}]")
    mask[values.astype(np.int64)] = True
    return mask


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
        self.particle_pushes: dict[int, tuple] = {}  # particle -> (impulse N s, start s, duration s)
        self.springs: list[tuple[int, int, float, float, float]] = []
        self.bodies: list[dict] = []
        self.rotors: list[dict] = []
        self.particle_faces: list[tuple[int, int, int]] = []
        # FEM tetrahedra (i, j, k, l, mu, lambda, damping, activation), cloth triangles
        # (i, j, k, mu, lambda, damping, drag, lift), bending edges (o1, o2, e0, e1, stiffness, damping, activation)
        self.tets: list[tuple] = []
        self.tris: list[tuple] = []
        self.edges: list[tuple] = []

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

    def add_particle_push(self, particles, impulse, start: float = 0.0, duration: float = 0.0) -> None:
        """A known push on a set of particles: the total linear ``impulse`` (N s, world frame) is split
        equally over ``particles`` (global indices) and delivered as a constant force over
        ``[start, start + duration)`` seconds (at least one physics step). A particle takes one push."""
        indices = [int(i) for i in np.asarray(particles, dtype=np.int64).reshape(-1)]
        if not indices:
            raise ParameterError("particle push: select at least one particle")
        self._check_particles("particle push", indices)
        taken = sorted(set(indices) & set(self.particle_pushes))
        if taken or len(set(indices)) != len(indices):
            raise ParameterError(f"particle push: particle {taken[0] if taken else indices[0]} is pushed twice")
        check_range("particle push start", start, 0.0, None, low_inclusive=True)
        check_range("particle push duration", duration, 0.0, None, low_inclusive=True)
        share = _vector("particle push impulse", impulse) / len(indices)
        for i in indices:
            self.particle_pushes[i] = (share, float(start), float(duration))

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

    def add_rotor(self, body: int, position=(0.0, 0.0, 0.0), axis=(0.0, 1.0, 0.0), spin: int = 1,
                  torque_ratio: float = 0.016, max_thrust: float = 500.0, thrust=0.0, name: str | None = None) -> int:
        """Add a rotor to ``body`` (see :mod:`wsim.models.rotors`); returns its index.

        ``position`` (m, body frame, relative to the centre of mass) is where it pushes along ``axis``
        (body frame, normalised here); ``spin`` (+1 or -1) is the sign of its reaction torque
        ``torque_ratio * thrust`` (m times N) along the axis; the thrust is clamped to
        ``[0, max_thrust]`` (N) where it acts. ``thrust`` (N) is its default schedule: one number for the
        whole rollout, or one value per frame interval (``frames - 1`` of them; every rotor of a model
        with such a list must have a list of that length or a single number). ``name`` labels errors."""
        from .models.rotors import rotor_record

        where = name or f"rotor {len(self.rotors)}"
        if not 0 <= int(body) < len(self.bodies):
            raise ParameterError(f"{where}: body must be a body index in [0, {len(self.bodies) - 1}], got {body}")
        self.rotors.append(rotor_record(where, int(body), _vector(f"{where} position", position),
                                        _vector(f"{where} axis", axis), spin, torque_ratio, max_thrust, thrust))
        return len(self.rotors) - 1

    # -- deformable solids (FEM) ------------------------------------------------------------------
    def _check_particles(self, what: str, indices) -> tuple:
        n = len(self.particles)
        indices = tuple(int(i) for i in indices)
        if len(set(indices)) != len(indices) or not all(0 <= i < n for i in indices):
            raise ParameterError(f"{what} particles must be distinct indices in [0, {n - 1}], got {indices}")
        return indices

    def add_tetrahedron(self, i: int, j: int, k: int, l: int, mu: float = 1.0e4, lam: float = 1.0e4,
                        damping: float = 0.0, activation: float = 0.0) -> int:
        """Add a stable Neo-Hookean tetrahedron on particles (i, j, k, l) (see :mod:`wsim.models.fem`).

        Its rest shape is the particles' positions at :meth:`finalize`; it must have a positive volume.
        ``mu``/``lam`` are the Lame parameters (Pa), ``damping`` k_d (Pa s), ``activation`` alpha."""
        indices = self._check_particles("tetrahedron", (i, j, k, l))
        check_range("tetrahedron mu", mu, 0.0, None, low_inclusive=True)
        check_range("tetrahedron lambda", lam, 0.0, None, low_inclusive=True)
        check_range("tetrahedron damping", damping, 0.0, None, low_inclusive=True)
        check_finite("tetrahedron activation", activation)
        self.tets.append((*indices, float(mu), float(lam), float(damping), float(activation)))
        return len(self.tets) - 1

    def add_soft_mesh(self, mesh: TetMesh, position=(0.0, 0.0, 0.0), rotation=(0.0, 0.0, 0.0, 1.0), scale=1.0,
                      velocity=(0.0, 0.0, 0.0), density: float | None = None, particle_mass: float | None = None,
                      mu: float = 1.0e4, lam: float = 1.0e4, damping: float = 0.0, activation: float = 0.0,
                      radius: float = 0.0, pinned=None, material: int | None = None, name: str = "soft") -> dict:
        """Add a deformable solid: one particle per vertex of ``mesh`` and one tetrahedron per element.

        The mesh is scaled, rotated (quaternion x, y, z, w) and moved to ``position`` (m). Masses are
        lumped from ``density`` (kg/m^3: each particle gets a quarter of the mass of every element it
        belongs to) or set to ``particle_mass`` (kg, every particle); give exactly one. ``pinned`` lists
        particle indices of the mesh (or a boolean mask) that stay fixed. The boundary surface is added
        to the rendered faces. Returns ``{"particles": range, "tets": range}`` (global indices)."""
        if (density is None) == (particle_mass is None):
            raise ParameterError(f"soft body '{name}': give exactly one of density or particle_mass")
        try:
            placed = mesh.transformed(scale, rotation, position)
            placed.check()
        except Exception as error:
            raise MeshError(f"soft body '{name}': {error}") from None
        count = len(placed.vertices)
        if density is not None:
            check_range(f"soft body '{name}' density", density, 0.0, None)
            masses = np.zeros(count)
            np.add.at(masses, placed.tets.reshape(-1), np.repeat(placed.volumes() * float(density) / 4.0, 4))
            if np.any(masses <= 0):
                raise MeshError(f"soft body '{name}': vertex {int(np.argmin(masses))} belongs to no tetrahedron "
                                "(remove unused vertices)")
        else:
            check_range(f"soft body '{name}' particle_mass", particle_mass, 0.0, None)
            masses = np.full(count, float(particle_mass))
        fixed = _pinned_mask(f"soft body '{name}' pinned", pinned, count)
        velocity = _vector(f"soft body '{name}' velocity", velocity)
        first = len(self.particles)
        for v in range(count):
            self.add_particle(placed.vertices[v], velocity, masses[v], radius, pinned=bool(fixed[v]), material=material)
        first_tet = len(self.tets)
        for tet in placed.tets:
            self.add_tetrahedron(*(first + tet), mu=mu, lam=lam, damping=damping, activation=activation)
        self.particle_faces.extend((placed.boundary_faces() + first).tolist())
        return {"particles": range(first, first + count), "tets": range(first_tet, len(self.tets))}

    # -- cloth ------------------------------------------------------------------------------------
    def add_triangle(self, i: int, j: int, k: int, mu: float = 100.0, lam: float = 100.0, damping: float = 0.0,
                     drag: float = 0.0, lift: float = 0.0) -> int:
        """Add a cloth triangle (membrane, :mod:`wsim.models.cloth`; air, :mod:`wsim.models.aerodynamics`).

        ``mu``/``lam`` membrane Lame parameters (N/m), ``damping`` (N s/m), ``drag``/``lift`` air
        coefficients (kg/m^3). Its rest shape is the particles' positions at :meth:`finalize`."""
        indices = self._check_particles("triangle", (i, j, k))
        for what, value in (("mu", mu), ("lambda", lam), ("damping", damping), ("drag", drag), ("lift", lift)):
            check_range(f"triangle {what}", value, 0.0, None, low_inclusive=True)
        self.tris.append((*indices, float(mu), float(lam), float(damping), float(drag), float(lift)))
        return len(self.tris) - 1

    def add_bending_edge(self, o1: int, o2: int, e0: int, e1: int, stiffness: float = 0.0, damping: float = 0.0,
                         activation: float = 0.0) -> int:
        """Add a dihedral bending element on edge (e0, e1) between triangles (o1, e0, e1) and (o2, e1, e0)
        (see :mod:`wsim.models.bending`); the rest angle is the angle at :meth:`finalize`."""
        indices = self._check_particles("bending edge", (o1, o2, e0, e1))
        check_range("bending stiffness", stiffness, 0.0, None, low_inclusive=True)
        check_range("bending damping", damping, 0.0, None, low_inclusive=True)
        check_finite("bending activation", activation)
        self.edges.append((*indices, float(stiffness), float(damping), float(activation)))
        return len(self.edges) - 1

    def add_cloth(self, mesh: TriangleMesh, position=(0.0, 0.0, 0.0), rotation=(0.0, 0.0, 0.0, 1.0), scale=1.0,
                  velocity=(0.0, 0.0, 0.0), density: float | None = None, particle_mass: float | None = None,
                  mu: float = 100.0, lam: float = 100.0, damping: float = 0.0, bending_stiffness: float = 0.0,
                  bending_damping: float = 0.0, drag: float = 0.0, lift: float = 0.0, radius: float = 0.0,
                  pinned=None, anchors=None, anchor_stiffness: float = 1.0e3, anchor_damping: float = 1.0,
                  material: int | None = None, name: str = "cloth") -> dict:
        """Add a cloth: one particle per vertex, one triangle per face, one bending edge per interior edge.

        Masses come from ``density`` (kg/m^2, a third of each triangle's mass to each corner) or
        ``particle_mass`` (kg each). ``pinned`` (mesh vertex indices or a mask) fixes particles;
        ``anchors`` (mesh vertex indices) ties each listed particle to a fixed point at its initial
        position with a spring of ``anchor_stiffness`` (N/m) and ``anchor_damping`` (N s/m).
        Returns ``{"particles", "tris", "edges", "anchors"}`` ranges of global indices."""
        from .geometry.cloth import bending_edges

        if (density is None) == (particle_mass is None):
            raise ParameterError(f"cloth '{name}': give exactly one of density or particle_mass")
        scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (3,))
        if np.any(scale <= 0):
            raise ParameterError(f"cloth '{name}' scale must be positive, got {scale.tolist()}")
        try:
            vertices = (mesh.vertices * scale) @ rotation_matrix(rotation).T + _vector(f"cloth '{name}' position",
                                                                                     position)
            edges = bending_edges(mesh.faces)
        except MeshError as error:
            raise MeshError(f"cloth '{name}': {error}") from None
        faces = np.asarray(mesh.faces, dtype=np.int64)
        x = vertices[faces]
        areas = 0.5 * np.linalg.norm(np.cross(x[:, 1] - x[:, 0], x[:, 2] - x[:, 0]), axis=1)
        scale_sq = max(float(np.ptp(vertices, axis=0).max()), 1e-30) ** 2
        if np.any(areas <= 1e-12 * scale_sq):
            raise MeshError(f"cloth '{name}': triangle {int(np.argmin(areas))} has zero area")
        count = len(vertices)
        if density is not None:
            check_range(f"cloth '{name}' density", density, 0.0, None)
            masses = np.zeros(count)
            np.add.at(masses, faces.reshape(-1), np.repeat(areas * float(density) / 3.0, 3))
            if np.any(masses <= 0):
                raise MeshError(f"cloth '{name}': vertex {int(np.argmin(masses))} belongs to no triangle")
        else:
            check_range(f"cloth '{name}' particle_mass", particle_mass, 0.0, None)
            masses = np.full(count, float(particle_mass))
        fixed = _pinned_mask(f"cloth '{name}' pinned", pinned, count)
        velocity = _vector(f"cloth '{name}' velocity", velocity)
        first = len(self.particles)
        for v in range(count):
            self.add_particle(vertices[v], velocity, masses[v], radius, pinned=bool(fixed[v]), material=material)
        first_tri, first_edge = len(self.tris), len(self.edges)
        for face in faces:
            self.add_triangle(*(first + face), mu=mu, lam=lam, damping=damping, drag=drag, lift=lift)
        for edge in edges:
            self.add_bending_edge(*(first + edge), stiffness=bending_stiffness, damping=bending_damping)
        first_spring = len(self.springs)
        anchor_list = [] if anchors is None else np.asarray(anchors, dtype=np.int64).reshape(-1)
        for v in anchor_list:
            if not 0 <= v < count:
                raise ParameterError(f"cloth '{name}' anchors must be vertex indices in [0, {count - 1}], got {v}")
            anchor = self.add_particle(vertices[v], mass=1.0, pinned=True, material=material)
            self.add_spring(anchor, first + int(v), anchor_stiffness, anchor_damping, rest_length=0.0)
        self.particle_faces.extend((faces + first).tolist())
        return {"particles": range(first, first + count), "tris": range(first_tri, len(self.tris)),
                "edges": range(first_edge, len(self.edges)), "anchors": range(first_spring, len(self.springs))}

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
            if self.particle_pushes:
                if dt is None:
                    raise ParameterError("finalize(dt=...) is required to place push windows on physics steps")
                start, steps, impulse = np.zeros(P, np.int32), np.zeros(P, np.int32), np.zeros((P, 3))
                for i, (share, begin, duration) in self.particle_pushes.items():
                    start[i], steps[i], impulse[i] = round(begin / dt), max(round(duration / dt), 1), share
                model.particle_push_start_step = wp.array(start, dtype=wp.int32, device=device)
                model.particle_push_window = external.push_window(start, start + steps)
                model.particle_push_end_step = wp.array(start + steps, dtype=wp.int32, device=device)
                defaults["particle_push_force"] = impulse / (np.maximum(steps, 1) * dt)[:, None]
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
            model.body_push_window = external.push_window(start, start + steps)
            model.body_push_end_step = wp.array(start + steps, dtype=wp.int32, device=device)
            model.body_push_point = wp.array(np.array([b["push_point"] for b in self.bodies]), dtype=wp.vec3,
                                             device=device)
            durations = np.maximum(steps, 1) * (dt or 1.0)
            defaults["body_push_force"] = np.array([b["impulse"] for b in self.bodies]) / durations[:, None]
            defaults["body_push_force"][steps == 0] = 0.0
        model.body_vertex_start = np.array(starts)
        from .models.rotors import upload_rotors

        upload_rotors(model, defaults, self.rotors, device)
        self._finalize_elements(model, defaults, device)
        if self.particle_faces:
            faces.append(np.asarray(self.particle_faces) + model.shape_vertex_count)
        model.render_faces = (np.concatenate(faces) if faces else np.zeros((0, 3))).astype(np.int32)
        return model

    def _finalize_elements(self, model: Model, defaults: dict, device: str) -> None:
        """Rest shapes and parameter defaults of tetrahedra, cloth triangles and bending edges (each
        computed by its force model)."""
        from .models import bending, cloth, fem

        positions = np.array([p["position"] for p in self.particles]).reshape(-1, 3)
        if self.tets:
            fem.upload_elements(model, defaults, positions, np.asarray(self.tets, dtype=np.float64), device)
        if self.tris:
            cloth.upload_elements(model, defaults, positions, np.asarray(self.tris, dtype=np.float64), device)
        if self.edges:
            bending.upload_elements(model, defaults, positions, np.asarray(self.edges, dtype=np.float64), device)
