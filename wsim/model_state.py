"""Model (static description), State (one per physics step) and Control (actuation) of a scene.

Conventions: Y up, SI units (m, kg, s, N), quaternions stored ``(x, y, z, w)`` as Warp's ``wp.quat``,
rigid-body positions are centre-of-mass positions, body-frame vertices are relative to the centre
of mass, angular velocities are in world coordinates.

A :class:`Model` never changes during a rollout. Everything an optimiser may change is a *parameter*:
the Model only stores its default value (``Model.defaults[name]``, a numpy array); a rollout receives
the actual values as Warp arrays, so that the same Model serves every iteration of an optimisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import warp as wp


@dataclass
class Model:
    """Static arrays of a scene, on ``device``. Counts are Python ints; arrays are Warp arrays.

    Particles: ``particle_count``; ``particle_radius`` [P] m (contact thickness);
    ``particle_pinned`` [P] int32 (1: kinematically fixed); ``particle_material`` [P] int32.
    Springs: ``spring_indices`` [S, 2] int32 particle pairs.
    Rigid bodies: ``body_count``; ``body_volume`` [B] m^3 and ``body_unit_inertia`` [B, 3, 3] kg m^2
    at unit density (numpy, used to turn a density into mass and inertia); ``body_material`` [B] int32.
    Body surface: ``shape_vertex_count``; ``shape_vertices`` [Vb] vec3, body frame, relative to the
    centre of mass; ``shape_vertex_body`` [Vb] int32.
    External pushes: ``body_push_start_step`` / ``body_push_end_step`` [B] int32 (force applied on the
    physics steps in [start, end)); ``body_push_point`` [B] vec3 body frame; ``particle_push_start_step`` /
    ``particle_push_end_step`` [P] int32 (None when no particle is pushed); ``body_push_window`` /
    ``particle_push_window`` (host ints) the steps ``[first, last)`` in which any push is open, so that
    the push kernels launch only then (None: unknown, every step).
    Rotors (:mod:`wsim.models.rotors`): ``rotor_count``; ``rotor_body`` [R] int32 the body each pushes;
    ``rotor_position`` [R] vec3 m, body frame, relative to the centre of mass; ``rotor_axis`` [R] vec3 unit
    thrust direction, body frame; ``rotor_spin`` [R] float +1 or -1 (sign of the reaction torque along
    the axis); ``rotor_torque_ratio`` [R] float m (reaction torque per newton of thrust);
    ``rotor_max_thrust`` [R] float N (the thrust is clamped to [0, max]). Their thrust schedule is the
    parameter ``control_rotor_thrust`` [frames - 1, R] N.
    Contact: ``material_count``; ``ground`` (bool), ``ground_height`` m, ``contact_margin`` m,
    ``contact_smoothing`` m (see :mod:`wsim.models.contact`).
    Tetrahedra (FEM, :mod:`wsim.models.fem`): ``tet_count``; ``tet_indices`` [T, 4] int32 particle indices
    (positively oriented); ``tet_rest_inverse`` [T] mat33 inverse rest edge matrix ``Dm^-1`` (1/m);
    ``tet_rest_volume`` [T] m^3.
    Cloth triangles (:mod:`wsim.models.cloth`, :mod:`wsim.models.aerodynamics`): ``tri_count``;
    ``tri_indices`` [C, 3] int32; ``tri_rest_inverse`` [C] mat22 inverse 2D rest edge matrix (1/m);
    ``tri_rest_area`` [C] m^2.
    Bending edges (:mod:`wsim.models.bending`): ``edge_count``; ``edge_indices`` [E, 4] int32
    ``(o1, o2, e0, e1)`` (opposite vertices of the two triangles, then the shared edge);
    ``edge_rest_angle`` [E] rad; ``edge_rest_weight`` [E] ``3 |e0|^2 / (A1_0 + A2_0)``.
    Rendering: ``render_faces`` int32 [T, 3] indices into the vertex buffer (body vertices first, in
    body order, then particles); ``body_vertex_start`` [B + 1] numpy offsets; ``body_names``.
    """

    device: str
    particle_count: int = 0
    spring_count: int = 0
    body_count: int = 0
    shape_vertex_count: int = 0
    material_count: int = 1
    particle_radius: wp.array | None = None
    particle_pinned: wp.array | None = None
    particle_material: wp.array | None = None
    spring_indices: wp.array | None = None
    body_material: wp.array | None = None
    body_volume: np.ndarray | None = None
    body_unit_inertia: np.ndarray | None = None
    body_names: list = field(default_factory=list)
    shape_vertices: wp.array | None = None
    shape_vertex_body: wp.array | None = None
    body_push_start_step: wp.array | None = None
    body_push_end_step: wp.array | None = None
    body_push_point: wp.array | None = None
    particle_push_start_step: wp.array | None = None
    particle_push_end_step: wp.array | None = None
    body_push_window: tuple[int, int] | None = None
    particle_push_window: tuple[int, int] | None = None
    rotor_count: int = 0
    rotor_body: wp.array | None = None
    rotor_position: wp.array | None = None
    rotor_axis: wp.array | None = None
    rotor_spin: wp.array | None = None
    rotor_torque_ratio: wp.array | None = None
    rotor_max_thrust: wp.array | None = None
    ground: bool = True
    ground_height: float = 0.0
    contact_margin: float = 0.0
    contact_smoothing: float = 1.0e-2
    render_faces: np.ndarray | None = None
    body_vertex_start: np.ndarray | None = None
    particle_faces: np.ndarray | None = None
    tet_count: int = 0
    tet_indices: wp.array | None = None
    tet_rest_inverse: wp.array | None = None
    tet_rest_volume: wp.array | None = None
    tri_count: int = 0
    tri_indices: wp.array | None = None
    tri_rest_inverse: wp.array | None = None
    tri_rest_area: wp.array | None = None
    edge_count: int = 0
    edge_indices: wp.array | None = None
    edge_rest_angle: wp.array | None = None
    edge_rest_weight: wp.array | None = None
    defaults: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)

    @property
    def vertex_count(self) -> int:
        """Length of the rendered vertex buffer: every body vertex, then every particle."""
        return self.shape_vertex_count + self.particle_count


@dataclass
class State:
    """Per-step dynamic arrays (views into a rollout's [steps + 1, N] buffers).

    ``particle_q``/``particle_qd`` [P] vec3 positions (m) and velocities (m/s); ``particle_f`` [P] vec3
    accumulated forces (N); ``body_q`` [B] vec3 centre-of-mass positions; ``body_r`` [B] quat
    orientations; ``body_v``/``body_w`` [B] vec3 linear (m/s) and world angular (rad/s) velocities;
    ``body_l`` [B] vec3 world angular momentum about the centre of mass (kg m^2/s), the integrated
    quantity (``body_w = R I^-1 R^T body_l`` is derived from it);
    ``body_f``/``body_t`` [B] vec3 accumulated force (N) and torque about the centre of mass (N m).
    """

    particle_q: wp.array | None = None
    particle_qd: wp.array | None = None
    particle_f: wp.array | None = None
    body_q: wp.array | None = None
    body_r: wp.array | None = None
    body_v: wp.array | None = None
    body_w: wp.array | None = None
    body_l: wp.array | None = None
    body_f: wp.array | None = None
    body_t: wp.array | None = None


@dataclass
class Control:
    """Actuation over a rollout, one row per frame interval (the physics steps between rendered frames
    k and k + 1), as torch tensors; ``None`` leaves an actuator off.

    ``particle_force`` [frames-1, P, 3] and ``body_force``/``body_torque`` [frames-1, B, 3] are external
    forces (N, N m, world frame, torque about the centre of mass); ``rotor_thrust`` [frames-1, R] is the
    commanded thrust of every rotor (N, along its body-fixed axis, see :mod:`wsim.models.rotors`); ``tet_activation`` [frames-1, T],
    ``tri_activation`` [frames-1, triangles] and ``bending_activation`` [frames-1, edges] are added to the
    elements' static activations (dimensionless). Pass it as ``Simulation.rollout(params, control)``;
    it maps onto the ``control_*`` parameters of the registry, so every field receives gradients.
    """

    particle_force: object = None
    body_force: object = None
    body_torque: object = None
    rotor_thrust: object = None
    tet_activation: object = None
    tri_activation: object = None
    bending_activation: object = None

    def as_parameters(self) -> dict:
        """``{"control_<field>": tensor}`` for every actuator that is set."""
        return {f"control_{name}": value for name, value in self.__dict__.items() if value is not None}
