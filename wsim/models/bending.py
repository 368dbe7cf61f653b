"""Dihedral-angle bending of cloth (Bridson et al. 2003), with per-edge stiffness, damping and activation.

Paper Appendix A.1 ("Deformable thin-shells"): ``f_b = k_b sin(phi/2 + alpha) d`` with ``d`` the
Bridson force directions and ``alpha`` a per-edge actuation that makes the mesh flex in or out. wsim
uses the gradient form that the public Warp kernel uses (linear in the angle, no ``sin``; identical to
first order) derived from the per-edge energy::

    W_e = k_b / 2 * w_e * (theta - theta_rest - alpha)^2,      w_e = 3 |e0|^2 / (A1_0 + A2_0)

with ``theta`` the signed dihedral angle at the interior edge ``e = x4 - x3`` between triangles
``(x1, x3, x4)`` and ``(x2, x4, x3)`` (0 for a flat sheet), ``theta_rest`` its rest value and the weight
``w_e`` (|e0| rest edge length, A1_0, A2_0 rest areas of the two triangles; Grinspun et al. 2003) which
makes the stiffness mesh independent. Forces::

    f_i = -w_e (k_b (theta - theta_rest - alpha) + k_d dtheta/dt) dtheta/dx_i

with the exact angle gradients (Bridson's directions ``u_i``, ``N1 = (x3 - x1) x (x4 - x1)``,
``N2 = (x4 - x2) x (x3 - x2)``): ``dtheta/dx1 = -|e| N1 / |N1|^2``, ``dtheta/dx2 = -|e| N2 / |N2|^2``,
``dtheta/dx3 = -((x1 - x4).e_hat N1 / |N1|^2 + (x2 - x4).e_hat N2 / |N2|^2)``,
``dtheta/dx4 = (x1 - x3).e_hat N1 / |N1|^2 + (x2 - x3).e_hat N2 / |N2|^2``.

Parameters per bending edge (shape [edge_count], scalars broadcast): ``bending_stiffness`` k_b (N m),
``bending_damping`` k_d (N m s), ``bending_activation`` alpha (rad, an offset of the rest angle) and the
optional per-frame-interval ``control_bending_activation`` [frames - 1, E] added to it.
"""

from __future__ import annotations

import numpy as np
import warp as wp

from ..errors import MeshError
from ..parameters import ParameterSpec, declare
from .fem import combined_activation

PARAMETER_SPECS = declare(
    ParameterSpec("bending_stiffness", wp.float32, "edge", "dihedral bending stiffness k_b of each edge", "N m",
                  0.0, None, True),
    ParameterSpec("bending_damping", wp.float32, "edge", "dihedral bending damping k_d of each edge", "N m s",
                  0.0, None, True),
    ParameterSpec("bending_activation", wp.float32, "edge", "rest-angle offset alpha of each bending edge", "rad"),
    ParameterSpec("control_bending_activation", wp.float32, "interval_edge",
                  "rest-angle offset added to bending_activation on each frame interval", "rad"),
)


@wp.kernel
def bending_forces_kernel(
    particle_q: wp.array(dtype=wp.vec3),
    particle_qd: wp.array(dtype=wp.vec3),
    edge_indices: wp.array2d(dtype=wp.int32),
    rest_angle: wp.array(dtype=float),
    rest_weight: wp.array(dtype=float),
    stiffness: wp.array(dtype=float),
    damping: wp.array(dtype=float),
    activation: wp.array(dtype=float),
    particle_f: wp.array(dtype=wp.vec3),
):
    """Bridson bending forces of each interior edge [E] into ``particle_f`` [P] (N)."""
    t = wp.tid()
    i1 = edge_indices[t, 0]
    i2 = edge_indices[t, 1]
    i3 = edge_indices[t, 2]
    i4 = edge_indices[t, 3]
    x1 = particle_q[i1]
    x2 = particle_q[i2]
    x3 = particle_q[i3]
    x4 = particle_q[i4]
    n1 = wp.cross(x3 - x1, x4 - x1)
    n2 = wp.cross(x4 - x2, x3 - x2)
    e = x4 - x3
    n1_sq = wp.dot(n1, n1)
    n2_sq = wp.dot(n2, n2)
    e_len = wp.length(e)
    if n1_sq < 1.0e-24 or n2_sq < 1.0e-24 or e_len < 1.0e-12:
        return
    e_hat = e / e_len
    theta = wp.atan2(wp.dot(wp.cross(n1, n2), e_hat), wp.dot(n1, n2))
    a1 = n1 / n1_sq
    a2 = n2 / n2_sq
    g1 = a1 * (-e_len)
    g2 = a2 * (-e_len)
    g3 = -(a1 * wp.dot(x1 - x4, e_hat) + a2 * wp.dot(x2 - x4, e_hat))
    g4 = a1 * wp.dot(x1 - x3, e_hat) + a2 * wp.dot(x2 - x3, e_hat)
    rate = (wp.dot(g1, particle_qd[i1]) + wp.dot(g2, particle_qd[i2]) + wp.dot(g3, particle_qd[i3])
            + wp.dot(g4, particle_qd[i4]))
    s = -rest_weight[t] * (stiffness[t] * (theta - rest_angle[t] - activation[t]) + damping[t] * rate)
    wp.atomic_add(particle_f, i1, g1 * s)
    wp.atomic_add(particle_f, i2, g2 * s)
    wp.atomic_add(particle_f, i3, g3 * s)
    wp.atomic_add(particle_f, i4, g4 * s)


def apply_forces(model, state, params, step: int, interval: int) -> None:
    """Accumulate the bending forces of every interior cloth edge into ``state.particle_f``."""
    if not model.edge_count:
        return
    activation = combined_activation(model, params, "bending_activation", "control_bending_activation",
                                     model.edge_count, interval)
    wp.launch(
        bending_forces_kernel, dim=model.edge_count, device=model.device,
        inputs=[state.particle_q, state.particle_qd, model.edge_indices, model.edge_rest_angle,
                model.edge_rest_weight, params["bending_stiffness"], params["bending_damping"], activation],
        outputs=[state.particle_f],
    )


def upload_elements(model, defaults: dict, positions: np.ndarray, edges: np.ndarray, device: str) -> None:
    """Rest dihedral angles, weights and parameter defaults of the bending edges ``edges`` (rows: the
    two opposite and the two edge particles, stiffness, damping, activation)."""
    indices = edges[:, :4].astype(np.int64)
    x1, x2, x3, x4 = (positions[indices[:, c]] for c in range(4))
    n1 = np.cross(x3 - x1, x4 - x1)
    n2 = np.cross(x4 - x2, x3 - x2)
    e = x4 - x3
    e_len = np.linalg.norm(e, axis=1)
    sin = np.einsum("ij,ij->i", np.cross(n1, n2), e) / np.maximum(e_len, 1e-30)
    angle = np.arctan2(sin, np.einsum("ij,ij->i", n1, n2))
    areas = 0.5 * (np.linalg.norm(n1, axis=1) + np.linalg.norm(n2, axis=1))
    if np.any(areas <= 0) or np.any(e_len <= 0):
        raise MeshError(f"bending edge {int(np.argmin(areas * e_len))} has a degenerate triangle or edge")
    model.edge_count = len(edges)
    model.edge_indices = wp.array(indices.astype(np.int32), dtype=wp.int32, device=device)
    model.edge_rest_angle = wp.array(angle.astype(np.float32), dtype=float, device=device)
    model.edge_rest_weight = wp.array((3.0 * e_len ** 2 / areas).astype(np.float32), dtype=float, device=device)
    for column, name in enumerate(("bending_stiffness", "bending_damping", "bending_activation")):
        defaults[name] = edges[:, 4 + column]
