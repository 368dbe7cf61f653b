"""Articulated bodies in reduced coordinates: kinematic trees of links joined by revolute, prismatic and
fixed joints, forward dynamics by the composite-rigid-body algorithm and a Cholesky solve.

Every link ``l`` hangs from its parent (or the world) by one joint. The joint frame sits at
``joint_position[l]`` (m) rotated by ``joint_rotation[l]`` (quaternion ``(x, y, z, w)``), both in the
parent link's frame (the world frame for a root); the link frame is the joint frame moved by the joint:
rotated by ``q`` (rad) about the unit ``joint_axis[l]`` (joint frame) for a revolute joint, translated by
``q`` (m) along it for a prismatic one, not at all for a fixed joint (no degree of freedom). This is
MuJoCo's body/joint convention with the joint at the body origin. A link has a mass ``link_mass`` (kg), a
centre of mass ``link_com`` (m, link frame) and an inertia ``link_inertia`` about the centre of mass (kg
m^2, link frame). Links are stored in depth-first pre-order (a parent before its children, every subtree
contiguous); :class:`ArticulationBuilder` enforces it, so a subtree is the index range
``[l, link_subtree_end[l])`` and composite inertias are plain range sums.

Dynamics, with ``H(q)`` the joint-space mass matrix and ``C(q, qd)`` the bias forces (Coriolis,
centrifugal and gravity)::

    (H + diag(armature)) qdd = tau - k (q - q_target) - d qd + f_limit - C
    f_limit = ke (lower - q) if q < lower,  ke (upper - q) if q > upper,  else 0

``H`` comes from the composite-rigid-body algorithm, ``C`` from recursive Newton-Euler with ``qdd = 0``
and the base accelerated by ``-gravity``; both work in world-frame spatial vectors (Plucker coordinates
about the world origin: motion ``(w, v_O)``, force ``(n_O, f)``), where a joint's motion subspace,
a link's velocity and its spatial inertia need no frame changes between parent and child. A spatial
inertia is kept as the triple (mass m, first moment h = m c, rotational inertia about the origin J),
which sums linearly over a subtree. The integrator is semi-implicit Euler like the rest of wsim:
``qd+ = qd + dt qdd``, ``q+ = q + dt qd+`` (MuJoCo's ``Euler`` integrator when joint damping is zero).

Precision: everything is float64. An articulation's thread solves one small dense system per step, so the
cost is negligible, and float64 is what makes a 0.1 % period check over thousands of steps, a comparison
with MuJoCo (double) to round-off and finite differences with small steps possible.

Differentiability: one rollout allocates every per-step intermediate (``[steps, ...]`` buffers, a row per
step) and every kernel writes each array element once, so ``wp.Tape`` can replay and reverse the whole
rollout. No kernel keeps a local accumulator across the iterations of a dynamic loop: Warp does not
differentiate one (its code generator flags it as possibly non-differentiable; measured, the gradients
came out 0.5 % to 280 % off). Subtree sums are atomic adds into zeroed per-step arrays; the solver keeps
every partial sum of its inner products in per-step arrays instead, since Warp's deterministic mode
refuses atomics that the same kernel reads back. Scratch per step: O(n^3) for an articulation with n
degrees of freedom (8000 float64 for a 20-dof hand).

Parameters of a rollout (``ArticulationRollout.input_dtypes``; ``L`` links, ``D`` degrees of freedom,
``A`` articulations; every value float64):

=====================  ==================  =========  ====================================================
name                   shape               unit       meaning
=====================  ==================  =========  ====================================================
``link_mass``          [L]                 kg         mass of each link
``link_com``           [L, 3]              m          centre of mass, link frame
``link_inertia``       [L, 3, 3]           kg m^2     inertia about the centre of mass, link frame
``joint_stiffness``    [D]                 N m/rad    spring k toward ``joint_target`` (N/m prismatic)
``joint_damping``      [D]                 N m s/rad  viscous damping d (N s/m prismatic)
``joint_armature``     [D]                 kg m^2     added to H's diagonal (kg prismatic)
``joint_target``       [D]                 rad        rest position of the joint spring (m prismatic)
``joint_limit_lower``  [D]                 rad        lower limit (m prismatic)
``joint_limit_upper``  [D]                 rad        upper limit (m prismatic)
``joint_limit_ke``     [D]                 N m/rad    penalty stiffness outside the limits (N/m)
``gravity``            [1, 3]              m/s^2      gravitational acceleration (wsim: Y up)
``joint_q``            [D]                 rad, m     initial joint positions
``joint_qd``           [D]                 rad/s, m/s initial joint velocities
``joint_torque``       [frames - 1, D]     N m, N     applied joint torque/force per frame interval
=====================  ==================  =========  ====================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import warp as wp

from ..bridge import run_tape_program, to_torch
from ..device import torch_device
from ..errors import ParameterError, SimulationError

REVOLUTE = wp.constant(0)
PRISMATIC = wp.constant(1)
FIXED = wp.constant(2)
JOINT_TYPES = {"revolute": REVOLUTE, "prismatic": PRISMATIC, "fixed": FIXED}

# Limits are off by default; a finite bound keeps ``q - bound`` finite in every branch of the adjoint.
NO_LIMIT = 1.0e10

vec3d = wp.vec3d
quatd = wp.quatd
mat33d = wp.mat33d
spatiald = wp.spatial_vectord


@wp.func
def _spatial(top: vec3d, bottom: vec3d):
    # Warp 1.19's two-vector spatial_vector constructor infers float32 inside these functions
    return spatiald(top[0], top[1], top[2], bottom[0], bottom[1], bottom[2])


@wp.func
def _inertia_times(mass: wp.float64, moment: vec3d, inertia_origin: mat33d, motion: spatiald):
    """Spatial inertia (m, h = m c, J about the origin) times a motion vector (w, v_O): the momentum
    ``(J w + h x v_O, m v_O + w x h)``."""
    w = wp.spatial_top(motion)
    v = wp.spatial_bottom(motion)
    return _spatial(inertia_origin * w + wp.cross(moment, v), mass * v + wp.cross(w, moment))


@wp.kernel
def _kinematics_kernel(
    articulation_link_start: wp.array(dtype=wp.int32),
    link_parent: wp.array(dtype=wp.int32),
    joint_type: wp.array(dtype=wp.int32),
    joint_dof: wp.array(dtype=wp.int32),
    joint_position: wp.array(dtype=vec3d),
    joint_rotation: wp.array(dtype=quatd),
    joint_axis: wp.array(dtype=vec3d),
    link_mass: wp.array(dtype=wp.float64),
    link_com: wp.array(dtype=vec3d),
    link_inertia: wp.array(dtype=mat33d),
    gravity: wp.array(dtype=vec3d),
    step: int,
    q: wp.array2d(dtype=wp.float64),
    qd: wp.array2d(dtype=wp.float64),
    link_rotation: wp.array2d(dtype=quatd),
    link_origin: wp.array2d(dtype=vec3d),
    link_subspace: wp.array2d(dtype=spatiald),
    link_velocity: wp.array2d(dtype=spatiald),
    link_acceleration: wp.array2d(dtype=spatiald),
    link_moment: wp.array2d(dtype=vec3d),
    link_inertia_origin: wp.array2d(dtype=mat33d),
    link_bias_force: wp.array2d(dtype=spatiald),
):
    """Forward pass, root to leaves: poses, motion subspaces, velocities, velocity-product accelerations
    (gravity as a base acceleration) and the Newton-Euler force each link needs at ``qdd = 0``."""
    a = wp.tid()
    zero = wp.float64(0.0)
    for l in range(articulation_link_start[a], articulation_link_start[a + 1]):
        parent = link_parent[l]
        parent_rotation = quatd(zero, zero, zero, wp.float64(1.0))
        parent_origin = vec3d(zero, zero, zero)
        parent_velocity = spatiald()
        parent_acceleration = _spatial(vec3d(zero, zero, zero), -gravity[0])
        if parent >= 0:
            parent_rotation = link_rotation[step, parent]
            parent_origin = link_origin[step, parent]
            parent_velocity = link_velocity[step, parent]
            parent_acceleration = link_acceleration[step, parent]

        frame_rotation = parent_rotation * joint_rotation[l]
        frame_origin = parent_origin + wp.quat_rotate(parent_rotation, joint_position[l])
        axis = wp.quat_rotate(frame_rotation, joint_axis[l])
        rotation = frame_rotation
        origin = frame_origin
        subspace = spatiald()
        joint_velocity = spatiald()
        kind = joint_type[l]
        if kind != FIXED:
            dof = joint_dof[l]
            if kind == REVOLUTE:
                rotation = frame_rotation * wp.quat_from_axis_angle(joint_axis[l], q[step, dof])
                # a rotation about the axis through o moves the body point at the origin with o x w
                subspace = _spatial(axis, wp.cross(frame_origin, axis))
            else:
                origin = frame_origin + axis * q[step, dof]
                subspace = _spatial(vec3d(zero, zero, zero), axis)
            joint_velocity = subspace * qd[step, dof]

        velocity = parent_velocity + joint_velocity
        # the subspace is fixed in the parent, so it changes at rate parent_velocity x S
        acceleration = parent_acceleration + wp.spatial_cross(parent_velocity, joint_velocity)

        mass = link_mass[l]
        rotation_matrix = wp.quat_to_matrix(rotation)
        com = origin + rotation_matrix * link_com[l]
        inertia_com = rotation_matrix * link_inertia[l] * wp.transpose(rotation_matrix)
        # parallel-axis theorem to the world origin: J = I_c + m (|c|^2 1 - c c^T)
        inertia_origin = inertia_com + mass * (wp.dot(com, com) * wp.identity(n=3, dtype=wp.float64)
                                               - wp.outer(com, com))
        moment = mass * com
        momentum = _inertia_times(mass, moment, inertia_origin, velocity)
        force = _inertia_times(mass, moment, inertia_origin, acceleration) + wp.spatial_cross_dual(velocity, momentum)

        link_rotation[step, l] = rotation
        link_origin[step, l] = origin
        link_subspace[step, l] = subspace
        link_velocity[step, l] = velocity
        link_acceleration[step, l] = acceleration
        link_moment[step, l] = moment
        link_inertia_origin[step, l] = inertia_origin
        link_bias_force[step, l] = force


@wp.kernel
def _subtree_kernel(
    link_subtree_end: wp.array(dtype=wp.int32),
    link_mass: wp.array(dtype=wp.float64),
    step: int,
    link_moment: wp.array2d(dtype=vec3d),
    link_inertia_origin: wp.array2d(dtype=mat33d),
    link_bias_force: wp.array2d(dtype=spatiald),
    composite_mass: wp.array2d(dtype=wp.float64),
    composite_moment: wp.array2d(dtype=vec3d),
    composite_inertia: wp.array2d(dtype=mat33d),
    composite_force: wp.array2d(dtype=spatiald),
):
    """Composite spatial inertia and total bias force of the subtree rooted at each link (all in world
    coordinates about the origin, so the backward pass of CRBA and RNEA is a sum over the subtree).
    The outputs must arrive zeroed. Sums go through atomic adds on the outputs, not a local accumulator:
    Warp does not differentiate a local variable mutated across the iterations of a dynamic loop."""
    l = wp.tid()
    for k in range(l, link_subtree_end[l]):
        wp.atomic_add(composite_mass, step, l, link_mass[k])
        wp.atomic_add(composite_moment, step, l, link_moment[step, k])
        wp.atomic_add(composite_inertia, step, l, link_inertia_origin[step, k])
        wp.atomic_add(composite_force, step, l, link_bias_force[step, k])


@wp.kernel
def _solve_integrate_kernel(
    articulation_dof_start: wp.array(dtype=wp.int32),
    articulation_matrix_start: wp.array(dtype=wp.int32),
    articulation_cube_start: wp.array(dtype=wp.int32),
    dof_link: wp.array(dtype=wp.int32),
    link_subtree_end: wp.array(dtype=wp.int32),
    link_subspace: wp.array2d(dtype=spatiald),
    composite_mass: wp.array2d(dtype=wp.float64),
    composite_moment: wp.array2d(dtype=vec3d),
    composite_inertia: wp.array2d(dtype=mat33d),
    composite_force: wp.array2d(dtype=spatiald),
    joint_stiffness: wp.array(dtype=wp.float64),
    joint_damping: wp.array(dtype=wp.float64),
    joint_armature: wp.array(dtype=wp.float64),
    joint_target: wp.array(dtype=wp.float64),
    joint_limit_lower: wp.array(dtype=wp.float64),
    joint_limit_upper: wp.array(dtype=wp.float64),
    joint_limit_ke: wp.array(dtype=wp.float64),
    joint_torque: wp.array2d(dtype=wp.float64),
    interval: int,
    q: wp.array2d(dtype=wp.float64),
    qd: wp.array2d(dtype=wp.float64),
    dt: wp.float64,
    step: int,
    mass_matrix: wp.array2d(dtype=wp.float64),
    schur_partial: wp.array2d(dtype=wp.float64),
    cholesky: wp.array2d(dtype=wp.float64),
    forward_partial: wp.array2d(dtype=wp.float64),
    forward: wp.array2d(dtype=wp.float64),
    backward_partial: wp.array2d(dtype=wp.float64),
    qdd: wp.array2d(dtype=wp.float64),
    bad_step: wp.array(dtype=wp.int32),
):
    """Mass matrix (CRBA), generalised forces, Cholesky solve for qdd, semi-implicit Euler step.

    ``mass_matrix`` and ``cholesky`` hold each articulation's n x n block row-major (lower triangle used).
    Every inner sum of the factorisation and of the two triangular solves is kept as its sequence of
    partial sums, each written once: ``schur_partial`` (n^3 block, entry ``(i n + j) n + k`` is
    ``H_ij - sum_{m <= k} L_im L_jm``), ``forward_partial`` and ``backward_partial`` (n x n blocks). A local
    accumulator is not differentiated by Warp across the iterations of a dynamic loop, and atomic sums
    read back in the same kernel are refused by Warp's deterministic mode, which wsim turns on."""
    a = wp.tid()
    d0 = articulation_dof_start[a]
    n = articulation_dof_start[a + 1] - d0
    m0 = articulation_matrix_start[a]
    c0 = articulation_cube_start[a]

    # H_ij = S_j . (I^c_i S_i) when link j is an ancestor of (or is) link i; dofs follow link order
    for i in range(n):
        link_i = dof_link[d0 + i]
        crb_force = _inertia_times(composite_mass[step, link_i], composite_moment[step, link_i],
                                   composite_inertia[step, link_i], link_subspace[step, link_i])
        for j in range(i + 1):
            link_j = dof_link[d0 + j]
            entry = wp.float64(0.0)
            if link_i < link_subtree_end[link_j]:
                entry = wp.dot(link_subspace[step, link_j], crb_force)
            if i == j:
                entry += joint_armature[d0 + i]
            mass_matrix[step, m0 + i * n + j] = entry

    for i in range(n):
        for j in range(i + 1):
            ij = m0 + i * n + j
            partial = c0 + (i * n + j) * n
            for k in range(j):
                previous = mass_matrix[step, ij]
                if k > 0:
                    previous = schur_partial[step, partial + k - 1]
                product = cholesky[step, m0 + i * n + k] * cholesky[step, m0 + j * n + k]
                schur_partial[step, partial + k] = previous - product
            s = mass_matrix[step, ij]
            if j > 0:
                s = schur_partial[step, partial + j - 1]
            if i == j:
                cholesky[step, ij] = wp.sqrt(s)
            else:
                cholesky[step, ij] = s / cholesky[step, m0 + j * n + j]

    for i in range(n):
        d = d0 + i
        link = dof_link[d]
        position = q[step, d]
        bias = wp.dot(link_subspace[step, link], composite_force[step, link])
        generalised = (joint_torque[interval, d] - joint_stiffness[d] * (position - joint_target[d])
                       - joint_damping[d] * qd[step, d] - bias)
        if position < joint_limit_lower[d]:
            generalised += joint_limit_ke[d] * (joint_limit_lower[d] - position)
        if position > joint_limit_upper[d]:
            generalised += joint_limit_ke[d] * (joint_limit_upper[d] - position)
        for k in range(i):
            previous = generalised
            if k > 0:
                previous = forward_partial[step, m0 + i * n + k - 1]
            forward_partial[step, m0 + i * n + k] = previous - cholesky[step, m0 + i * n + k] * forward[step, d0 + k]
        if i > 0:
            generalised = forward_partial[step, m0 + i * n + i - 1]
        forward[step, d] = generalised / cholesky[step, m0 + i * n + i]

    for r in range(n):
        i = n - 1 - r
        for k in range(i + 1, n):
            previous = forward[step, d0 + i]
            if k > i + 1:
                previous = backward_partial[step, m0 + i * n + k - 1]
            backward_partial[step, m0 + i * n + k] = previous - cholesky[step, m0 + k * n + i] * qdd[step, d0 + k]
        value = forward[step, d0 + i]
        if i < n - 1:
            value = backward_partial[step, m0 + i * n + n - 1]
        qdd[step, d0 + i] = value / cholesky[step, m0 + i * n + i]

    for i in range(n):
        d = d0 + i
        velocity = qd[step, d] + dt * qdd[step, d]
        position = q[step, d] + dt * velocity
        qd[step + 1, d] = velocity
        q[step + 1, d] = position
        if not (wp.isfinite(velocity) and wp.isfinite(position)):
            wp.atomic_min(bad_step, 0, step)


@wp.kernel
def _energy_kernel(
    articulation_link_start: wp.array(dtype=wp.int32),
    link_mass: wp.array(dtype=wp.float64),
    gravity: wp.array(dtype=vec3d),
    link_velocity: wp.array2d(dtype=spatiald),
    link_moment: wp.array2d(dtype=vec3d),
    link_inertia_origin: wp.array2d(dtype=mat33d),
    energy: wp.array2d(dtype=wp.float64),
):
    step, a = wp.tid()
    for l in range(articulation_link_start[a], articulation_link_start[a + 1]):
        velocity = link_velocity[step, l]
        moment = link_moment[step, l]
        momentum = _inertia_times(link_mass[l], moment, link_inertia_origin[step, l], velocity)
        # kinetic 1/2 v . (I v); potential -m g . c with m c the first moment
        wp.atomic_add(energy, step, a, wp.float64(0.5) * wp.dot(velocity, momentum) - wp.dot(gravity[0], moment))


@wp.kernel
def _copy_float64(source: wp.array(dtype=wp.float64), target: wp.array2d(dtype=wp.float64)):
    i = wp.tid()
    target[0, i] = source[i]


@wp.kernel
def _every_frame(states: wp.array2d(dtype=wp.float64), substeps: int, frames: wp.array2d(dtype=wp.float64)):
    frame, i = wp.tid()
    frames[frame, i] = states[frame * substeps, i]


@dataclass
class Articulation:
    """Static description of one or more kinematic trees, on ``device`` (see the module docstring).

    Per link [L]: ``link_parent`` int32 (-1 for a root), ``link_subtree_end`` int32 (one past the last
    link of its subtree), ``joint_type`` int32 (:data:`REVOLUTE`, :data:`PRISMATIC`, :data:`FIXED`),
    ``joint_dof`` int32 (its index into q, -1 for fixed), ``joint_position`` vec3d m and
    ``joint_rotation`` quatd (joint frame in the parent frame), ``joint_axis`` vec3d unit (joint frame).
    Per dof [D]: ``dof_link`` int32. Per articulation: ``articulation_link_start`` / ``articulation_dof_start``
    int32 [A + 1] ranges, ``articulation_matrix_start`` / ``articulation_cube_start`` int32 [A] offsets of
    each articulation's n x n and n^3 blocks of solver scratch (``matrix_size`` / ``cube_size`` in all).
    ``defaults``: numpy float64 values of every parameter except ``joint_torque``.
    """

    device: str
    link_count: int
    dof_count: int
    articulation_count: int
    matrix_size: int
    cube_size: int
    link_parent: wp.array
    link_subtree_end: wp.array
    joint_type: wp.array
    joint_dof: wp.array
    joint_position: wp.array
    joint_rotation: wp.array
    joint_axis: wp.array
    dof_link: wp.array
    articulation_link_start: wp.array
    articulation_dof_start: wp.array
    articulation_matrix_start: wp.array
    articulation_cube_start: wp.array
    defaults: dict = field(default_factory=dict)


class ArticulationBuilder:
    """Collects links in depth-first pre-order and finalises them into an :class:`Articulation`.

    A link whose parent is -1 starts a new articulation. Units are SI, gravity defaults to
    ``(0, -9.81, 0)`` m/s^2 (wsim is Y up). Every degree of freedom must move some mass or inertia (or
    carry armature): otherwise the mass matrix is singular and the rollout raises ``SimulationError``.
    """

    def __init__(self, gravity=(0.0, -9.81, 0.0)):
        self.gravity = np.asarray(gravity, dtype=np.float64).reshape(1, 3)
        self.links: list[dict] = []
        self.dofs: list[dict] = []

    def add_link(self, parent: int, joint: str = "revolute", axis=(0.0, 0.0, 1.0), position=(0.0, 0.0, 0.0),
                 rotation=(0.0, 0.0, 0.0, 1.0), mass: float = 1.0, com=(0.0, 0.0, 0.0), inertia=None,
                 q: float = 0.0, qd: float = 0.0, stiffness: float = 0.0, damping: float = 0.0,
                 armature: float = 0.0, target: float = 0.0, limit_lower: float = -NO_LIMIT,
                 limit_upper: float = NO_LIMIT, limit_ke: float = 0.0) -> int:
        """Append a link hanging from ``parent`` by a ``joint`` ("revolute", "prismatic" or "fixed") and
        return its index. ``inertia`` is the 3x3 inertia about the centre of mass (kg m^2, link frame;
        default zero: a point mass). Joint arguments are ignored for a fixed joint."""
        if joint not in JOINT_TYPES:
            raise ParameterError(f"unknown joint type '{joint}'; allowed: {', '.join(JOINT_TYPES)}")
        index = len(self.links)
        if parent >= index or parent < -1:
            raise ParameterError(f"link {index}: parent {parent} must be -1 or an existing link")
        if parent >= 0 and not self._on_last_path(parent):
            raise ParameterError(f"link {index}: parent {parent} breaks depth-first order (add a subtree's links "
                                 "before its siblings)")
        axis = np.asarray(axis, dtype=np.float64)
        if joint != "fixed" and not np.linalg.norm(axis) > 0:
            raise ParameterError(f"link {index}: the joint axis must be non-zero")
        if not mass > 0:
            raise ParameterError(f"link {index}: mass must be > 0, got {mass}")
        rotation = np.asarray(rotation, dtype=np.float64)
        self.links.append({
            "parent": parent, "type": JOINT_TYPES[joint], "axis": axis / max(np.linalg.norm(axis), 1e-300),
            "position": np.asarray(position, dtype=np.float64), "rotation": rotation / np.linalg.norm(rotation),
            "mass": float(mass), "com": np.asarray(com, dtype=np.float64),
            "inertia": np.zeros((3, 3)) if inertia is None else np.asarray(inertia, dtype=np.float64),
            "dof": -1 if joint == "fixed" else len(self.dofs),
        })
        if joint != "fixed":
            self.dofs.append({"link": index, "q": q, "qd": qd, "stiffness": stiffness, "damping": damping,
                              "armature": armature, "target": target, "limit_lower": limit_lower,
                              "limit_upper": limit_upper, "limit_ke": limit_ke})
        return index

    def _on_last_path(self, parent: int) -> bool:
        """Whether ``parent`` is the last link or one of its ancestors (pre-order keeps subtrees contiguous)."""
        link = len(self.links) - 1
        while link >= 0:
            if link == parent:
                return True
            link = self.links[link]["parent"]
        return False

    def finalize(self, device: str = "cpu") -> Articulation:
        """The collected links as an :class:`Articulation` on the Warp ``device`` ("cpu", "cuda:0"...)."""
        links, dofs = self.links, self.dofs
        count = len(links)
        if not count:
            raise ParameterError("an articulation needs at least one link")
        subtree_end = list(range(1, count + 1))
        for index in reversed(range(count)):
            parent = links[index]["parent"]
            if parent >= 0:
                subtree_end[parent] = max(subtree_end[parent], subtree_end[index])
        roots = [i for i, link in enumerate(links) if link["parent"] < 0]
        link_start = roots + [count]
        # dofs are numbered in link order, so an articulation's first dof counts the dofs of the links before it
        dof_start = [sum(1 for link in links[:start] if link["dof"] >= 0) for start in link_start]
        matrix_start, matrix_size, cube_start, cube_size = [], 0, [], 0
        for a in range(len(roots)):
            n = dof_start[a + 1] - dof_start[a]
            matrix_start.append(matrix_size)
            matrix_size += n * n
            cube_start.append(cube_size)
            cube_size += n ** 3

        def array(values, dtype):
            return wp.array(np.asarray(values), dtype=dtype, device=device)

        def column(rows, key):
            return np.array([row[key] for row in rows], dtype=np.float64)

        defaults = {
            "link_mass": column(links, "mass"), "link_com": np.stack([l["com"] for l in links]),
            "link_inertia": np.stack([l["inertia"] for l in links]), "gravity": self.gravity.copy(),
            "joint_q": column(dofs, "q"), "joint_qd": column(dofs, "qd"),
            "joint_stiffness": column(dofs, "stiffness"), "joint_damping": column(dofs, "damping"),
            "joint_armature": column(dofs, "armature"), "joint_target": column(dofs, "target"),
            "joint_limit_lower": column(dofs, "limit_lower"), "joint_limit_upper": column(dofs, "limit_upper"),
            "joint_limit_ke": column(dofs, "limit_ke"),
        }
        return Articulation(
            device=device, link_count=count, dof_count=len(dofs), articulation_count=len(roots),
            matrix_size=matrix_size, cube_size=cube_size,
            link_parent=array([l["parent"] for l in links], wp.int32),
            link_subtree_end=array(subtree_end, wp.int32),
            joint_type=array([l["type"] for l in links], wp.int32),
            joint_dof=array([l["dof"] for l in links], wp.int32),
            joint_position=array(np.stack([l["position"] for l in links]), vec3d),
            joint_rotation=array(np.stack([l["rotation"] for l in links]), quatd),
            joint_axis=array(np.stack([l["axis"] for l in links]), vec3d),
            dof_link=array([d["link"] for d in dofs] or [0], wp.int32),
            articulation_link_start=array(link_start, wp.int32),
            articulation_dof_start=array(dof_start, wp.int32),
            articulation_matrix_start=array(matrix_start, wp.int32),
            articulation_cube_start=array(cube_start, wp.int32),
            defaults=defaults,
        )


PARAMETER_DTYPES = {
    "link_mass": wp.float64, "link_com": vec3d, "link_inertia": mat33d, "gravity": vec3d,
    "joint_q": wp.float64, "joint_qd": wp.float64, "joint_stiffness": wp.float64, "joint_damping": wp.float64,
    "joint_armature": wp.float64, "joint_target": wp.float64, "joint_limit_lower": wp.float64,
    "joint_limit_upper": wp.float64, "joint_limit_ke": wp.float64, "joint_torque": wp.float64,
}

# per-link, per-step intermediates of one rollout, in the order of the kernels' outputs: name -> dtype
_KINEMATIC_OUTPUTS = {
    "link_rotation": quatd, "link_origin": vec3d, "link_subspace": spatiald, "link_velocity": spatiald,
    "link_acceleration": spatiald, "link_moment": vec3d, "link_inertia_origin": mat33d, "link_bias_force": spatiald,
}
_SUBTREE_OUTPUTS = {
    "composite_mass": wp.float64, "composite_moment": vec3d, "composite_inertia": mat33d,
    "composite_force": spatiald,
}


class ArticulationRollout:
    """A differentiable rollout of ``articulation`` over ``frames`` frames, ``substeps`` physics steps of
    ``dt`` seconds per frame interval (``joint_torque`` row k acts on the steps of interval k).

    It is a tape program for :mod:`wsim.bridge`: :meth:`rollout` maps float64 torch parameters (any
    subset of :data:`PARAMETER_DTYPES`; the rest take the articulation's defaults, torques default to
    zero) to the joint positions and velocities of every frame, ``q, qd`` each ``[frames, D]`` float64;
    ``backward()`` on a loss of them fills every parameter's gradient. ``check_nan`` raises
    :class:`~wsim.errors.SimulationError` naming the first non-finite step.
    """

    def __init__(self, articulation: Articulation, dt: float, substeps: int, frames: int, check_nan: bool = True):
        if not dt > 0:
            raise ParameterError(f"dt must be > 0, got {dt}")
        if int(substeps) != substeps or substeps < 1 or int(frames) != frames or frames < 1:
            raise ParameterError(f"substeps and frames must be integers >= 1, got {substeps} and {frames}")
        self.articulation = articulation
        self.device = articulation.device
        self.dt = float(dt)
        self.substeps = int(substeps)
        self.frames = int(frames)
        self.steps = (self.frames - 1) * self.substeps
        self.check_nan = check_nan
        self.input_dtypes = dict(PARAMETER_DTYPES)
        self.torch_device = torch_device(self.device)
        self.last_buffers = None
        self._bad_step = None
        self._defaults = {name: wp.array(self.default(name).cpu().numpy(), dtype=dtype, device=self.device)
                          for name, dtype in PARAMETER_DTYPES.items()}

    def shape(self, name: str) -> tuple:
        """The full shape of parameter ``name`` (element shape included)."""
        art = self.articulation
        leading = {"link": (art.link_count,), "joint": (art.dof_count,), "gravity": (1,)}[name.split("_")[0]]
        if name == "joint_torque":
            leading = (max(self.frames - 1, 1), art.dof_count)
        return leading + tuple(getattr(PARAMETER_DTYPES[name], "_shape_", None) or ())

    def default(self, name: str) -> torch.Tensor:
        """The articulation's value of parameter ``name`` as a float64 torch tensor (a copy)."""
        if name == "joint_torque":
            return torch.zeros(self.shape(name), dtype=torch.float64, device=self.torch_device)
        if name not in self.articulation.defaults:
            raise ParameterError(f"unknown parameter '{name}'; allowed: {', '.join(sorted(PARAMETER_DTYPES))}")
        return torch.tensor(self.articulation.defaults[name], dtype=torch.float64, device=self.torch_device)

    def rollout(self, params: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint positions and velocities of every frame, ``([frames, D], [frames, D])`` float64."""
        inputs = {}
        for name, value in (params or {}).items():
            if name not in PARAMETER_DTYPES:
                raise ParameterError(f"unknown parameter '{name}'; allowed: {', '.join(sorted(PARAMETER_DTYPES))}")
            value = torch.as_tensor(value).to(device=self.torch_device, dtype=torch.float64)
            try:
                inputs[name] = torch.broadcast_to(value, self.shape(name))
            except RuntimeError:
                raise ParameterError(f"parameter '{name}' has shape {tuple(value.shape)}, expected "
                                     f"{self.shape(name)}") from None
        return run_tape_program(self, inputs)

    def record(self, inputs: dict) -> tuple:
        art = self.articulation
        device = self.device
        params = dict(self._defaults)
        params.update(inputs)
        steps, L, D = self.steps, art.link_count, art.dof_count

        def buffer(rows, count, dtype):
            return wp.zeros((rows, max(count, 1)), dtype=dtype, device=device, requires_grad=True)

        buffers = {name: buffer(steps, L, dtype) for name, dtype in {**_KINEMATIC_OUTPUTS, **_SUBTREE_OUTPUTS}.items()}
        buffers.update({"q": buffer(steps + 1, D, wp.float64), "qd": buffer(steps + 1, D, wp.float64),
                        "qdd": buffer(steps, D, wp.float64), "forward": buffer(steps, D, wp.float64),
                        "forward_partial": buffer(steps, art.matrix_size, wp.float64),
                        "backward_partial": buffer(steps, art.matrix_size, wp.float64),
                        "mass_matrix": buffer(steps, art.matrix_size, wp.float64),
                        "schur_partial": buffer(steps, art.cube_size, wp.float64),
                        "cholesky": buffer(steps, art.matrix_size, wp.float64)})
        self._bad_step = wp.array([np.iinfo(np.int32).max], dtype=wp.int32, device=device)
        if D:
            wp.launch(_copy_float64, dim=D, inputs=[params["joint_q"]], outputs=[buffers["q"]], device=device)
            wp.launch(_copy_float64, dim=D, inputs=[params["joint_qd"]], outputs=[buffers["qd"]], device=device)
        # the kernels take whole [steps, ...] buffers and the step index: per-step row views made a CPU step
        # 9x slower (2.2 ms against 0.25 ms for a double pendulum, measured), all of it host overhead
        A = art.articulation_count
        kinematic = [buffers[name] for name in _KINEMATIC_OUTPUTS]
        subtree = [buffers[name] for name in _SUBTREE_OUTPUTS]
        solve = [buffers[name] for name in ("mass_matrix", "schur_partial", "cholesky", "forward_partial", "forward",
                                            "backward_partial", "qdd")]
        for step in range(steps):
            wp.launch(_kinematics_kernel, dim=A, device=device,
                      inputs=[art.articulation_link_start, art.link_parent, art.joint_type, art.joint_dof,
                              art.joint_position, art.joint_rotation, art.joint_axis, params["link_mass"],
                              params["link_com"], params["link_inertia"], params["gravity"], step, buffers["q"],
                              buffers["qd"]],
                      outputs=kinematic)
            wp.launch(_subtree_kernel, dim=L, device=device,
                      inputs=[art.link_subtree_end, params["link_mass"], step, buffers["link_moment"],
                              buffers["link_inertia_origin"], buffers["link_bias_force"]],
                      outputs=subtree)
            wp.launch(_solve_integrate_kernel, dim=A, device=device,
                      inputs=[art.articulation_dof_start, art.articulation_matrix_start, art.articulation_cube_start,
                              art.dof_link,
                              art.link_subtree_end, buffers["link_subspace"], *subtree,
                              params["joint_stiffness"], params["joint_damping"], params["joint_armature"],
                              params["joint_target"], params["joint_limit_lower"], params["joint_limit_upper"],
                              params["joint_limit_ke"], params["joint_torque"], step // self.substeps,
                              buffers["q"], buffers["qd"], wp.float64(self.dt), step],
                      outputs=[*solve, self._bad_step])
        q_frames = buffer(self.frames, D, wp.float64)
        qd_frames = buffer(self.frames, D, wp.float64)
        if D:
            for states, frames in ((buffers["q"], q_frames), (buffers["qd"], qd_frames)):
                wp.launch(_every_frame, dim=(self.frames, D), inputs=[states, self.substeps], outputs=[frames],
                          device=device)
        self.last_buffers = buffers
        self._last_params = params
        return q_frames, qd_frames

    def after_forward(self, outputs) -> None:
        if self.check_nan:
            bad = int(self._bad_step.numpy()[0])
            if bad != np.iinfo(np.int32).max:
                raise SimulationError(f"the articulation blew up: its state became NaN or infinite at physics step "
                                      f"{bad} (t = {(bad + 1) * self.dt:.6g} s); reduce dt or the stiffnesses")

    def energy(self) -> np.ndarray:
        """Mechanical energy (J, kinetic plus gravitational; joint springs excluded) of every articulation
        at the start of every physics step of the last rollout, ``[steps, A]`` float64 (host copy)."""
        if self.last_buffers is None:
            raise RuntimeError("no rollout has run yet")
        buffers = self.last_buffers
        out = wp.zeros((self.steps, self.articulation.articulation_count), dtype=wp.float64, device=self.device)
        if self.steps:
            wp.launch(_energy_kernel, dim=out.shape, device=self.device,
                      inputs=[self.articulation.articulation_link_start, self._last_params["link_mass"],
                              self._last_params["gravity"], buffers["link_velocity"], buffers["link_moment"],
                              buffers["link_inertia_origin"]],
                      outputs=[out])
        return out.numpy()

    def states(self) -> dict[str, np.ndarray]:
        """Every step's ``q`` and ``qd`` of the last rollout, ``[steps + 1, D]`` float64 (host copies)."""
        if self.last_buffers is None:
            raise RuntimeError("no rollout has run yet")
        return {name: to_torch(self.last_buffers[name]).detach().cpu().numpy() for name in ("q", "qd")}
