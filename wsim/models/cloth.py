"""Cloth membrane: constant-strain triangles embedded in 3D with the stable Neo-Hookean model in-plane.

Paper Appendix A.1 ("Deformable thin-shells"), C.1: the constitutive model of Eq. (1) applied to the
in-plane deformation of each triangle. With the rest triangle mapped to a 2D frame (edge matrix
``Dm`` 2x2, rest area ``A0 = det(Dm) / 2``) and the current edges ``Ds = [x1 - x0, x2 - x0]`` (3x2),
``F = Ds Dm^-1`` (3x2), ``Ic = ||F||_F^2`` and ``J = area / A0``::

    Psi = mu/2 (Ic - 2) + lambda/2 (J - a)^2 - mu/2 log(Ic + 1),   a = 1 + 2 mu / (3 lambda)

(the 2D rest-stable shift: ``dPsi/dF = 0`` at rest). Forces ``f_i = -A0 dPsi/dx_i`` plus Kelvin-Voigt
damping ``k_d`` (N s/m) of the in-plane Green strain rate ``dE/dt = sym(F^T dF/dt)`` (2x2, ``F`` and
``dF/dt`` 3x2): ``P_d = k_d F sym(F^T dF/dt)``. It vanishes under any rigid motion of the triangle, so a
spinning or tumbling sheet is not braked, and dissipates ``k_d |dE/dt|^2 >= 0`` per unit rest area.

* deviatoric: ``P = mu F (1 - 1 / (Ic + 1)) + k_d F sym(F^T dF/dt)``; vertices 1, 2 receive ``-A0`` times
  the columns of ``P Dm^-T``;
* area: ``s = lambda (J - 1) - 2 mu / 3 + k_d dJ/dt`` along ``dJ/dx_1 = (x2 - x0) x n / (2 A0)`` and
  ``dJ/dx_2 = n x (x1 - x0) / (2 A0)`` (n the unit normal); vertex 0 receives minus the sum.

Parameters per triangle (shape [tri_count], scalars broadcast): ``cloth_lame_mu`` (N/m: a membrane
is a 2D continuum, so its Lame parameters are per unit length), ``cloth_lame_lambda`` (N/m),
``cloth_damping`` (N s/m), ``tri_activation`` (dimensionless) and the optional per-frame-interval
``control_tri_activation`` [frames - 1, tri_count] added to it: like the FEM activation, the area term
becomes ``lambda (J - 1 + act)`` so that a triangle prefers the area ratio ``J = 1 - act`` (``act > 0``
contracts it; the 2D walker of the visuomotor control task is actuated this way). Bending is in :mod:`wsim.models.bending`, air in :mod:`wsim.models.aerodynamics`.
"""

from __future__ import annotations

import numpy as np
import warp as wp

from ..errors import MeshError
from ..parameters import ParameterSpec, declare

PARAMETER_SPECS = declare(
    ParameterSpec("cloth_lame_mu", wp.float32, "tri", "membrane Lame parameter mu (shear) of each triangle",
                  "N/m", 0.0, None, True),
    ParameterSpec("cloth_lame_lambda", wp.float32, "tri", "membrane Lame parameter lambda (area) of each triangle",
                  "N/m", 0.0, None, True),
    # P_d = k_d (F sym(F^T dF/dt) + dJ/dt dJ/dF): the in-plane strain rate and area rate, zero under rigid
    # motion; N s/m because a membrane's stresses are per unit length.
    ParameterSpec("cloth_damping", wp.float32, "tri",
                  "strain-rate damping k_d of each triangle: P_d = k_d (F sym(F^T dF/dt) + dJ/dt dJ/dF)",
                  "N s/m", 0.0, None, True),
    ParameterSpec("tri_activation", wp.float32, "tri",
                  "membrane activation alpha: preferred area ratio 1 - alpha (alpha > 0 contracts)"),
    ParameterSpec("control_tri_activation", wp.float32, "interval_tri",
                  "activation added to tri_activation on the physics steps of each frame interval"),
)


@wp.kernel
def triangle_forces_kernel(
    particle_q: wp.array(dtype=wp.vec3),
    particle_qd: wp.array(dtype=wp.vec3),
    tri_indices: wp.array2d(dtype=wp.int32),
    rest_inverse: wp.array(dtype=wp.mat22),
    rest_area: wp.array(dtype=float),
    lame_mu: wp.array(dtype=float),
    lame_lambda: wp.array(dtype=float),
    damping: wp.array(dtype=float),
    activation: wp.array(dtype=float),
    particle_f: wp.array(dtype=wp.vec3),
):
    """In-plane stable Neo-Hookean forces of each triangle (paper Eq. 1 in 2D) into ``particle_f`` [P] (N)."""
    t = wp.tid()
    i = tri_indices[t, 0]
    j = tri_indices[t, 1]
    k = tri_indices[t, 2]
    x0 = particle_q[i]
    e1 = particle_q[j] - x0
    e2 = particle_q[k] - x0
    v0 = particle_qd[i]
    w1 = particle_qd[j] - v0
    w2 = particle_qd[k] - v0

    d = rest_inverse[t]
    area0 = rest_area[t]
    mu = lame_mu[t]
    lam = lame_lambda[t]
    kd = damping[t]

    f1 = e1 * d[0, 0] + e2 * d[1, 0]
    f2 = e1 * d[0, 1] + e2 * d[1, 1]
    r1 = w1 * d[0, 0] + w2 * d[1, 0]
    r2 = w1 * d[0, 1] + w2 * d[1, 1]
    ic = wp.dot(f1, f1) + wp.dot(f2, f2)
    scale = mu * (1.0 - 1.0 / (ic + 1.0))
    # Green strain rate sym(F^T dF/dt), 2x2 symmetric [[a, b], [b, c]]
    a = wp.dot(f1, r1) * kd
    b = 0.5 * (wp.dot(f1, r2) + wp.dot(f2, r1)) * kd
    c = wp.dot(f2, r2) * kd
    p1 = f1 * (scale + a) + f2 * b
    p2 = f1 * b + f2 * (scale + c)
    g1 = (p1 * d[0, 0] + p2 * d[0, 1]) * area0
    g2 = (p1 * d[1, 0] + p2 * d[1, 1]) * area0

    normal = wp.cross(e1, e2)
    twice_area = wp.length(normal)
    n = normal / wp.max(twice_area, 1.0e-20)
    J = 0.5 * twice_area / area0
    dj1 = wp.cross(e2, n) * (0.5 / area0)
    dj2 = wp.cross(n, e1) * (0.5 / area0)
    djdt = wp.dot(dj1, w1) + wp.dot(dj2, w2)
    s = (lam * (J - 1.0 + activation[t]) - (2.0 / 3.0) * mu + kd * djdt) * area0
    g1 = g1 + dj1 * s
    g2 = g2 + dj2 * s

    wp.atomic_add(particle_f, i, g1 + g2)
    wp.atomic_sub(particle_f, j, g1)
    wp.atomic_sub(particle_f, k, g2)


def apply_forces(model, state, params, step: int, interval: int) -> None:
    """Accumulate the membrane forces of every cloth triangle into ``state.particle_f``."""
    if not model.tri_count:
        return
    from .fem import combined_activation

    activation = combined_activation(model, params, "tri_activation", "control_tri_activation",
                                     model.tri_count, interval)
    wp.launch(
        triangle_forces_kernel, dim=model.tri_count, device=model.device,
        inputs=[state.particle_q, state.particle_qd, model.tri_indices, model.tri_rest_inverse,
                model.tri_rest_area, params["cloth_lame_mu"], params["cloth_lame_lambda"], params["cloth_damping"],
                activation],
        outputs=[state.particle_f],
    )


def upload_elements(model, defaults: dict, positions: np.ndarray, tris: np.ndarray, device: str) -> None:
    """Rest shapes (inverse 2x2 rest edge matrix in the triangle's plane, area) and parameter defaults of
    the cloth triangles ``tris`` (rows: 3 particle indices, mu, lambda, damping, drag, lift)."""
    indices = tris[:, :3].astype(np.int64)
    x = positions[indices]
    e1, e2 = x[:, 1] - x[:, 0], x[:, 2] - x[:, 0]
    normal = np.cross(e1, e2)
    twice_area = np.linalg.norm(normal, axis=1)
    bad = np.flatnonzero(twice_area <= 1e-12 * np.maximum(np.einsum("ij,ij->i", e1, e1), 1e-30))
    if len(bad):
        raise MeshError(f"cloth triangle {int(bad[0])} (particles {indices[bad[0]].tolist()}) has zero area")
    u = e1 / np.linalg.norm(e1, axis=1, keepdims=True)
    w = np.cross(normal / twice_area[:, None], u)
    rest = np.stack([np.stack([np.einsum("ij,ij->i", e1, u), np.einsum("ij,ij->i", e2, u)], axis=1),
                     np.stack([np.einsum("ij,ij->i", e1, w), np.einsum("ij,ij->i", e2, w)], axis=1)], axis=1)
    model.tri_count = len(tris)
    model.tri_indices = wp.array(indices.astype(np.int32), dtype=wp.int32, device=device)
    model.tri_rest_inverse = wp.array(np.linalg.inv(rest).astype(np.float32), dtype=wp.mat22, device=device)
    model.tri_rest_area = wp.array((0.5 * twice_area).astype(np.float32), dtype=float, device=device)
    for column, name in enumerate(("cloth_lame_mu", "cloth_lame_lambda", "cloth_damping", "drag_coefficient",
                                   "lift_coefficient")):
        defaults[name] = tris[:, 3 + column]
    defaults["tri_activation"] = np.zeros(len(tris))
