"""Warp kernels of the articulated-body dynamics (:mod:`wsim.models.articulation` documents the model
and the conventions): forward kinematics, subtree sums, the mass-matrix solve with semi-implicit
integration, and the energy diagnostic. Every kernel writes each element of its outputs once per step,
so ``wp.Tape`` can reverse a rollout."""

import warp as wp

from .articulation_joints import cone_limit_torque, integrate_quat, quat_at, rotation_subspace, rotation_vector
from .articulation_joints import spatial as _spatial
from .contact import plane_contact_force

REVOLUTE = wp.constant(0)
PRISMATIC = wp.constant(1)
FIXED = wp.constant(2)
BALL = wp.constant(3)
FREE = wp.constant(4)

# what a degree of freedom is, for its spring, limit and coordinate: a hinge or slide coordinate (limits
# apply), a free joint's translation coordinate, one component of a ball or free joint's rotation
DOF_SCALAR = wp.constant(0)
DOF_TRANSLATION = wp.constant(1)
DOF_ROTATION = wp.constant(2)

vec3d = wp.vec3d
quatd = wp.quatd
mat33d = wp.mat33d
spatiald = wp.spatial_vectord


@wp.func
def _inertia_times(mass: wp.float64, moment: vec3d, inertia_origin: mat33d, motion: spatiald):
    """Spatial inertia (m, h = m c, J about the origin) times a motion vector (w, v_O): the momentum
    ``(J w + h x v_O, m v_O + w x h)``."""
    w = wp.spatial_top(motion)
    v = wp.spatial_bottom(motion)
    return _spatial(inertia_origin * w + wp.cross(moment, v), mass * v + wp.cross(w, moment))


@wp.kernel
def kinematics_kernel(
    articulation_link_start: wp.array(dtype=wp.int32),
    link_parent: wp.array(dtype=wp.int32),
    joint_type: wp.array(dtype=wp.int32),
    joint_dof: wp.array(dtype=wp.int32),
    joint_coord: wp.array(dtype=wp.int32),
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
    dof_subspace: wp.array2d(dtype=spatiald),
    link_velocity: wp.array2d(dtype=spatiald),
    link_acceleration: wp.array2d(dtype=spatiald),
    link_moment: wp.array2d(dtype=vec3d),
    link_inertia_origin: wp.array2d(dtype=mat33d),
    link_bias_force: wp.array2d(dtype=spatiald),
):
    """Forward pass, root to leaves: poses, motion subspaces (one per dof), velocities, velocity-product
    accelerations (gravity as a base acceleration) and the Newton-Euler force each link needs at ``qdd = 0``."""
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
        joint_velocity = spatiald()
        # velocity-product term of the joint itself, beyond parent_velocity x joint_velocity (nonzero for free joints)
        joint_bias = spatiald()
        kind = joint_type[l]
        dof = joint_dof[l]
        coord = joint_coord[l]
        if kind == REVOLUTE:
            rotation = frame_rotation * wp.quat_from_axis_angle(joint_axis[l], q[step, coord])
            # a rotation about the axis through o moves the body point at the origin with o x w
            subspace = _spatial(axis, wp.cross(frame_origin, axis))
            dof_subspace[step, dof] = subspace
            joint_velocity = subspace * qd[step, dof]
        if kind == PRISMATIC:
            origin = frame_origin + axis * q[step, coord]
            subspace = _spatial(vec3d(zero, zero, zero), axis)
            dof_subspace[step, dof] = subspace
            joint_velocity = subspace * qd[step, dof]
        if kind == BALL:
            rotation = frame_rotation * quat_at(q, step, coord)
            link_matrix = wp.quat_to_matrix(rotation)
            s0 = rotation_subspace(link_matrix, frame_origin, 0)
            s1 = rotation_subspace(link_matrix, frame_origin, 1)
            s2 = rotation_subspace(link_matrix, frame_origin, 2)
            dof_subspace[step, dof] = s0
            dof_subspace[step, dof + 1] = s1
            dof_subspace[step, dof + 2] = s2
            # the axes turn with the child, S' = v_child x S, and (v_parent + v_J) x v_J = v_parent x v_J:
            # the same acceleration term as a joint whose axis is fixed in the parent
            joint_velocity = s0 * qd[step, dof] + s1 * qd[step, dof + 1] + s2 * qd[step, dof + 2]
        if kind == FREE:
            # translation along the joint frame's axes (the world's for a root with the default frame), by
            # q[0:3]; then the rotation q[3:7] about the moved origin, rates in the child frame
            frame_matrix = wp.quat_to_matrix(frame_rotation)
            origin = frame_origin + frame_matrix * vec3d(q[step, coord], q[step, coord + 1], q[step, coord + 2])
            rotation = frame_rotation * quat_at(q, step, coord + 3)
            link_matrix = wp.quat_to_matrix(rotation)
            t0 = _spatial(vec3d(zero, zero, zero), wp.transpose(frame_matrix)[0])
            t1 = _spatial(vec3d(zero, zero, zero), wp.transpose(frame_matrix)[1])
            t2 = _spatial(vec3d(zero, zero, zero), wp.transpose(frame_matrix)[2])
            s0 = rotation_subspace(link_matrix, origin, 0)
            s1 = rotation_subspace(link_matrix, origin, 1)
            s2 = rotation_subspace(link_matrix, origin, 2)
            dof_subspace[step, dof] = t0
            dof_subspace[step, dof + 1] = t1
            dof_subspace[step, dof + 2] = t2
            dof_subspace[step, dof + 3] = s0
            dof_subspace[step, dof + 4] = s1
            dof_subspace[step, dof + 5] = s2
            translation = t0 * qd[step, dof] + t1 * qd[step, dof + 1] + t2 * qd[step, dof + 2]
            turning = s0 * qd[step, dof + 3] + s1 * qd[step, dof + 4] + s2 * qd[step, dof + 5]
            joint_velocity = translation + turning
            # translation axes are fixed in the frame (S' = v_parent x S), rotation axes move with the
            # translated child (S' = (v_parent + translation) x S): the extra term is translation x turning
            joint_bias = wp.spatial_cross(translation, turning)

        velocity = parent_velocity + joint_velocity
        # a subspace fixed in the parent changes at rate parent_velocity x S
        acceleration = parent_acceleration + wp.spatial_cross(parent_velocity, joint_velocity) + joint_bias

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
        link_velocity[step, l] = velocity
        link_acceleration[step, l] = acceleration
        link_moment[step, l] = moment
        link_inertia_origin[step, l] = inertia_origin
        link_bias_force[step, l] = force


@wp.kernel
def subtree_kernel(
    link_subtree_end: wp.array(dtype=wp.int32),
    link_mass: wp.array(dtype=wp.float64),
    step: int,
    link_moment: wp.array2d(dtype=vec3d),
    link_inertia_origin: wp.array2d(dtype=mat33d),
    link_bias_force: wp.array2d(dtype=spatiald),
    link_external_force: wp.array2d(dtype=spatiald),
    composite_mass: wp.array2d(dtype=wp.float64),
    composite_moment: wp.array2d(dtype=vec3d),
    composite_inertia: wp.array2d(dtype=mat33d),
    composite_force: wp.array2d(dtype=spatiald),
):
    """Composite spatial inertia and total bias force of the subtree rooted at each link (all in world
    coordinates about the origin, so the backward pass of CRBA and RNEA is a sum over the subtree).
    The outputs must arrive zeroed. Sums go through atomic adds on the outputs, not a local accumulator:
    Warp does not differentiate a local variable mutated across the iterations of a dynamic loop.
    External forces on a link (ground contact) count against its bias force: the force the joints must
    supply is what the motion needs less what the environment already applies."""
    l = wp.tid()
    for k in range(l, link_subtree_end[l]):
        wp.atomic_add(composite_mass, step, l, link_mass[k])
        wp.atomic_add(composite_moment, step, l, link_moment[step, k])
        wp.atomic_add(composite_inertia, step, l, link_inertia_origin[step, k])
        wp.atomic_add(composite_force, step, l, link_bias_force[step, k] - link_external_force[step, k])


@wp.kernel
def link_contact_kernel(
    contact_link: wp.array(dtype=wp.int32),
    contact_point: wp.array(dtype=vec3d),
    contact_radius: wp.array(dtype=wp.float64),
    normal: wp.array(dtype=vec3d),
    ground_height: wp.array(dtype=wp.float64),
    ke: wp.array(dtype=wp.float64),
    kd: wp.array(dtype=wp.float64),
    kf: wp.array(dtype=wp.float64),
    mu: wp.array(dtype=wp.float64),
    smoothing: wp.array(dtype=wp.float64),
    step: int,
    link_rotation: wp.array2d(dtype=quatd),
    link_origin: wp.array2d(dtype=vec3d),
    link_velocity: wp.array2d(dtype=spatiald),
    contact_force: wp.array2d(dtype=vec3d),
    link_external_force: wp.array2d(dtype=spatiald),
):
    """Ground contact (:mod:`wsim.models.articulation_contact`), one thread per contact point: its world position and velocity from its link's pose and spatial
    velocity ``(w, v_O)`` (the velocity of the body point at the world origin, so a point ``x`` moves at
    ``v_O + w x x``), the contact force (``contact_force``, written once per step, a diagnostic) and its
    spatial force about the origin, summed per link by atomic adds into the zeroed ``link_external_force``."""
    i = wp.tid()
    l = contact_link[i]
    position = link_origin[step, l] + wp.quat_rotate(link_rotation[step, l], contact_point[i])
    velocity = link_velocity[step, l]
    point_velocity = wp.spatial_bottom(velocity) + wp.cross(wp.spatial_top(velocity), position)
    force = plane_contact_force(position, point_velocity, normal[0], ground_height[0], contact_radius[i],
                                ke[0], kd[0], kf[0], mu[0], smoothing[0])
    contact_force[step, i] = force
    wp.atomic_add(link_external_force, step, l, _spatial(wp.cross(position, force), force))


@wp.kernel
def solve_integrate_kernel(
    articulation_dof_start: wp.array(dtype=wp.int32),
    articulation_matrix_start: wp.array(dtype=wp.int32),
    articulation_cube_start: wp.array(dtype=wp.int32),
    articulation_link_start: wp.array(dtype=wp.int32),
    joint_type: wp.array(dtype=wp.int32),
    joint_dof: wp.array(dtype=wp.int32),
    joint_coord: wp.array(dtype=wp.int32),
    dof_link: wp.array(dtype=wp.int32),
    dof_kind: wp.array(dtype=wp.int32),
    dof_coord: wp.array(dtype=wp.int32),
    dof_component: wp.array(dtype=wp.int32),
    link_subtree_end: wp.array(dtype=wp.int32),
    dof_subspace: wp.array2d(dtype=spatiald),
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
    """Mass matrix (CRBA), generalised forces, Cholesky solve for qdd, semi-implicit Euler step (quaternion
    coordinates by the exponential map of the new angular velocity).

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
                                   composite_inertia[step, link_i], dof_subspace[step, d0 + i])
        for j in range(i + 1):
            link_j = dof_link[d0 + j]
            entry = wp.float64(0.0)
            if link_i < link_subtree_end[link_j]:
                entry = wp.dot(dof_subspace[step, d0 + j], crb_force)
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
        kind = dof_kind[d]
        c = dof_coord[d]
        position = q[step, c]
        # the spring acts on the coordinate's offset from its target; for a rotation, on the component of
        # the rotation vector from the target orientation (MuJoCo's ball-joint spring)
        displacement = position - joint_target[c]
        cone = wp.float64(0.0)  # a ball joint's cone limit (free joints carry an unreachable one)
        if kind == DOF_ROTATION:
            quat = quat_at(q, step, c)
            turned = rotation_vector(quat, wp.normalize(quatd(joint_target[c + 1], joint_target[c + 2],
                                                              joint_target[c + 3], joint_target[c])))
            displacement = turned[dof_component[d]]
            cone = cone_limit_torque(quat, joint_limit_upper[d], joint_limit_ke[d])[dof_component[d]]
        bias = wp.dot(dof_subspace[step, d], composite_force[step, link])
        generalised = (joint_torque[interval, d] - joint_stiffness[d] * displacement
                       - joint_damping[d] * qd[step, d] - bias + cone)
        if kind == DOF_SCALAR:
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

    # semi-implicit Euler, joint by joint: velocities first, then the coordinates with the new velocities
    for l in range(articulation_link_start[a], articulation_link_start[a + 1]):
        kind = joint_type[l]
        d = joint_dof[l]
        c = joint_coord[l]
        if kind == REVOLUTE or kind == PRISMATIC:
            velocity = qd[step, d] + dt * qdd[step, d]
            position = q[step, c] + dt * velocity
            qd[step + 1, d] = velocity
            q[step + 1, c] = position
            if not (wp.isfinite(velocity) and wp.isfinite(position)):
                wp.atomic_min(bad_step, 0, step)
        if kind == FREE:
            linear = vec3d(qd[step, d] + dt * qdd[step, d], qd[step, d + 1] + dt * qdd[step, d + 1],
                           qd[step, d + 2] + dt * qdd[step, d + 2])
            place = vec3d(q[step, c], q[step, c + 1], q[step, c + 2]) + dt * linear
            for k in range(3):
                qd[step + 1, d + k] = linear[k]
                q[step + 1, c + k] = place[k]
            if not (wp.isfinite(linear) and wp.isfinite(place)):
                wp.atomic_min(bad_step, 0, step)
        if kind == BALL or kind == FREE:
            r = 0
            if kind == FREE:
                r = 3
            rate = vec3d(qd[step, d + r] + dt * qdd[step, d + r], qd[step, d + r + 1] + dt * qdd[step, d + r + 1],
                         qd[step, d + r + 2] + dt * qdd[step, d + r + 2])
            spun = integrate_quat(quat_at(q, step, c + r), rate, dt)
            for k in range(3):
                qd[step + 1, d + r + k] = rate[k]
                q[step + 1, c + r + 1 + k] = spun[k]  # stored (w, x, y, z)
            q[step + 1, c + r] = spun[3]
            if not (wp.isfinite(rate) and wp.isfinite(spun)):
                wp.atomic_min(bad_step, 0, step)


@wp.kernel
def energy_kernel(
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
def copy_float64(source: wp.array(dtype=wp.float64), target: wp.array2d(dtype=wp.float64)):
    i = wp.tid()
    target[0, i] = source[i]


@wp.kernel
def every_frame(states: wp.array2d(dtype=wp.float64), substeps: int, frames: wp.array2d(dtype=wp.float64)):
    frame, i = wp.tid()
    frames[frame, i] = states[frame * substeps, i]
