"""Warp functions for the joints with a quaternion coordinate (ball and free joints) of
:mod:`wsim.models.articulation`: reading the quaternion out of ``q``, the motion subspace of a rotation
whose angular velocity is measured in the child link's frame, the exponential-map update of the
quaternion, the rotation vector that drives a ball joint's spring and its cone limit's penalty torque.

Quaternions in ``q`` are stored ``(w, x, y, z)`` as MuJoCo's ``qpos`` (so a loaded model indexes like
MuJoCo); Warp's ``quatd`` is ``(x, y, z, w)``, hence the reordering here and nowhere else."""

import math

import warp as wp

vec3d = wp.vec3d
quatd = wp.quatd
mat33d = wp.mat33d
spatiald = wp.spatial_vectord

# Below this squared angle the closed forms (a division by the angle, a square root whose derivative
# is infinite at zero) are replaced by their Taylor series; the first dropped term is ~1e-24 relative
SMALL_ANGLE_SQUARED = 1.0e-12
# pi in double precision: Warp's wp.pi is a float32 value, 8.7e-8 off, which a wrapped angle would inherit
PI = wp.constant(wp.float64(math.pi))


@wp.func
def spatial(top: vec3d, bottom: vec3d):
    # Warp 1.19's two-vector spatial_vector constructor infers float32 inside these functions
    return spatiald(top[0], top[1], top[2], bottom[0], bottom[1], bottom[2])


@wp.func
def quat_at(q: wp.array2d(dtype=wp.float64), step: int, start: int):
    """The quaternion stored ``(w, x, y, z)`` at ``q[step, start:start + 4]``, normalised (as MuJoCo
    normalises it before use), as a Warp ``(x, y, z, w)`` quaternion."""
    return wp.normalize(quatd(q[step, start + 1], q[step, start + 2], q[step, start + 3], q[step, start]))


@wp.func
def rotation_subspace(rotation_matrix: mat33d, origin: vec3d, column: int):
    """World-frame Plucker motion of a unit rotation rate about the ``column``-th axis of the child link's
    frame through the point ``origin``: ``(e, origin x e)``. Ball and free joints measure their angular
    velocity in the child frame, as MuJoCo does (its ``cdof`` are the columns of the body's ``xmat``)."""
    axis = vec3d(rotation_matrix[0, column], rotation_matrix[1, column], rotation_matrix[2, column])
    return spatial(axis, wp.cross(origin, axis))


@wp.func
def integrate_quat(quat: quatd, rate: vec3d, dt: wp.float64):
    """``quat * exp(dt rate / 2)``, normalised: the rotation by the angle ``dt |rate|`` about ``rate``
    applied in the child frame (right multiplication), MuJoCo's ``mju_quatIntegrate``. The small-angle
    branch keeps the update and its derivative finite at zero rate."""
    rate_squared = wp.dot(rate, rate)
    half = wp.float64(0.5) * dt
    half_angle_squared = half * half * rate_squared
    cosine = wp.float64(0.0)
    sine_over_rate = wp.float64(0.0)  # sin(dt |rate| / 2) / |rate|
    if half_angle_squared < wp.float64(SMALL_ANGLE_SQUARED):
        fourth = half_angle_squared * half_angle_squared
        cosine = wp.float64(1.0) - half_angle_squared / wp.float64(2.0) + fourth / wp.float64(24.0)
        sine_over_rate = half * (wp.float64(1.0) - half_angle_squared / wp.float64(6.0) + fourth / wp.float64(120.0))
    else:
        speed = wp.sqrt(rate_squared)
        cosine = wp.cos(half * speed)
        sine_over_rate = wp.sin(half * speed) / speed
    turn = quatd(rate[0] * sine_over_rate, rate[1] * sine_over_rate, rate[2] * sine_over_rate, cosine)
    return wp.normalize(quat * turn)


@wp.func
def rotation_vector(quat: quatd, reference: quatd):
    """The rotation vector (axis times angle in (-pi, pi], child frame) taking the unit ``reference`` to
    the unit ``quat``: ``log(reference^-1 quat)``, MuJoCo's ``mju_subQuat``; a ball joint's spring acts on it."""
    conjugate = quatd(-reference[0], -reference[1], -reference[2], reference[3])
    difference = conjugate * quat
    vector = vec3d(difference[0], difference[1], difference[2])
    w = difference[3]
    sine_squared = wp.dot(vector, vector)
    factor = wp.float64(0.0)  # angle / sin(angle / 2)
    if sine_squared < wp.float64(SMALL_ANGLE_SQUARED):
        # 2 atan2(s, w) / s to second order; with w < 0 (the same rotation, negated) the wrap below gives
        # the same series, so it holds for both signs
        factor = wp.float64(2.0) / w * (wp.float64(1.0) - sine_squared / (wp.float64(3.0) * w * w))
    else:
        sine = wp.sqrt(sine_squared)
        angle = wp.float64(2.0) * wp.atan2(sine, w)
        if angle > PI:
            angle = angle - wp.float64(2.0) * PI
        factor = angle / sine
    return vector * factor


@wp.func
def cone_limit_torque(quat: quatd, limit: wp.float64, ke: wp.float64):
    """Penalty torque (child frame) of a ball joint's cone limit, MuJoCo's ball ``range="0 limit"``: the
    angle ``theta = |log(quat)|`` from the joint frame's own orientation (MuJoCo measures the limit from
    the identity, not from qpos0 or the spring's reference) must stay <= ``limit``; beyond it
    ``-ke (theta - limit)`` about the rotation axis. The rotation vector's axis is the same in the parent
    and the child frames, so it is the child-frame direction the dofs measure. Zero inside the cone, so the
    motion there is the unlimited joint's exactly; ``limit >= 0`` (the builder checks it) keeps theta > 0
    where it is divided by."""
    identity = quatd(wp.float64(0.0), wp.float64(0.0), wp.float64(0.0), wp.float64(1.0))
    turned = rotation_vector(quat, identity)
    squared = wp.dot(turned, turned)
    torque = vec3d(wp.float64(0.0), wp.float64(0.0), wp.float64(0.0))
    # compared squared: the square root (infinite derivative at zero) is taken only beyond the limit
    if squared > limit * limit:
        angle = wp.sqrt(squared)
        torque = turned * (-ke * (angle - limit) / angle)
    return torque
