"""Rotations as quaternions ``(x, y, z, w)`` (Warp's ``wp.quat`` order) and 3x3 matrices, in float64."""

from __future__ import annotations

import math

import numpy as np

from ..errors import MeshError


def rotation_matrix(quaternion) -> np.ndarray:
    """3x3 rotation matrix of a (not necessarily unit) quaternion (x, y, z, w)."""
    q = np.asarray(quaternion, dtype=np.float64).reshape(4)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-12:
        raise MeshError(f"rotation must be a non-zero quaternion (x, y, z, w), got {q.tolist()}")
    x, y, z, w = q / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_quaternion(matrices) -> np.ndarray:
    """Unit quaternions ``[..., 4]`` (x, y, z, w, with w >= 0) of rotation matrices ``[..., 3, 3]``: from
    the largest of the four diagonal combinations, so no branch divides by a vanishing component."""
    m = np.asarray(matrices, dtype=np.float64)
    flat = m.reshape(-1, 3, 3)
    trace = np.einsum("nii->n", flat)
    candidates = np.stack([1 + 2 * flat[:, 0, 0] - trace, 1 + 2 * flat[:, 1, 1] - trace,
                           1 + 2 * flat[:, 2, 2] - trace, 1 + trace], -1)  # 4 x^2, 4 y^2, 4 z^2, 4 w^2
    pick = np.argmax(candidates, -1)
    off = np.stack([flat[:, 2, 1] - flat[:, 1, 2], flat[:, 0, 2] - flat[:, 2, 0], flat[:, 1, 0] - flat[:, 0, 1],
                    flat[:, 1, 0] + flat[:, 0, 1], flat[:, 0, 2] + flat[:, 2, 0], flat[:, 2, 1] + flat[:, 1, 2]], -1)
    # 4 q_i q_j for every pair, read off the matrix; divided by 4 q_k of the picked, largest component
    products = {0: (None, 3, 4, 0), 1: (3, None, 5, 1), 2: (4, 5, None, 2), 3: (0, 1, 2, None)}
    q = np.empty((len(flat), 4))
    for k, row in products.items():
        rows = pick == k
        big = np.sqrt(np.maximum(candidates[rows, k], 0.0))
        for j, column in enumerate(row):
            q[rows, j] = big / 2.0 if column is None else off[rows, column] / (2.0 * big)
    q *= np.where(q[:, 3:] < 0, -1.0, 1.0)
    return q.reshape(m.shape[:-2] + (4,))


def axis_angle_quaternion(axis, angle: float) -> np.ndarray:
    """The unit quaternion (x, y, z, w) of a rotation by ``angle`` (radians, right-handed) about ``axis``."""
    axis = np.asarray(axis, dtype=np.float64).reshape(3)
    norm = np.linalg.norm(axis)
    if not np.isfinite(norm) or norm < 1e-12:
        raise MeshError(f"rotation axis must be a non-zero finite vector, got {axis.tolist()}")
    half = 0.5 * float(angle)
    return np.concatenate([axis / norm * np.sin(half), [np.cos(half)]])


def quaternion_multiply(a, b) -> np.ndarray:
    """The Hamilton product ``a b``: the rotation ``b`` followed by ``a``."""
    ax, ay, az, aw = np.asarray(a, dtype=np.float64).reshape(4)
    bx, by, bz, bw = np.asarray(b, dtype=np.float64).reshape(4)
    return np.array([aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz])


def transform_points(points, scale=1.0, rotation=(0.0, 0.0, 0.0, 1.0), translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    """``points`` [N, 3] scaled per axis, then rotated by the quaternion ``rotation``, then translated."""
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (3,))
    points = np.asarray(points, dtype=np.float64)
    return (points * scale) @ rotation_matrix(rotation).T + np.asarray(translation, dtype=np.float64)


def random_quaternion(rng) -> list[float]:
    """A uniformly distributed unit quaternion (x, y, z, w) (Shoemake)."""
    u1, u2, u3 = rng.random(3)
    a, b = math.sqrt(1 - u1), math.sqrt(u1)
    return [a * math.sin(2 * math.pi * u2), a * math.cos(2 * math.pi * u2), b * math.sin(2 * math.pi * u3),
            b * math.cos(2 * math.pi * u3)]
