"""Tetrahedral finite elements with the stable Neo-Hookean model (paper Eq. 1 / Eq. 6, Smith et al. 2018).

Energy density of one constant-strain tetrahedron (rest volume ``V0``, deformation gradient
``F = Ds Dm^-1``, ``Ds = [x1 - x0, x2 - x0, x3 - x0]`` the current and ``Dm`` the rest edge matrix)::

    Psi = mu/2 (Ic - 3) + lambda/2 (J - a + act)^2 - mu/2 log(Ic + 1),   Ic = ||F||_F^2,  J = det F

with the rest-stable shift ``a = 1 + 3 mu / (4 lambda)`` (``dPsi/dF = 0`` at ``F = I`` when ``act = 0``)
and the per-element activation ``act`` (the paper's alpha): the element's preferred volume ratio is
``J = 1 - act`` (``act > 0`` contracts, ``act < 0`` expands). ``lambda (J - a + act)`` is evaluated as
``lambda (J - 1 + act) - 3 mu / 4`` so that ``lambda = 0`` (no volume stiffness) is allowed.

Forces ``f_i = -V0 dPsi/dx_i`` plus Kelvin-Voigt damping ``k_d`` (Pa s) on the rate of the Green strain
``E = (F^T F - I) / 2``: ``dE/dt = sym(F^T dF/dt)``, second Piola-Kirchhoff damping stress
``S_d = k_d dE/dt`` and ``P_d = F S_d``. ``dE/dt`` vanishes for a rigid rotation (``dF/dt = W F``, W skew),
so spinning is not braked, and the damping power ``P_d : dF/dt = k_d |dE/dt|^2 >= 0``. (Damping
``k_d dF/dt`` itself, as the public Warp/Newton kernel does, brakes rigid rotation.)

* deviatoric: ``P = mu F (1 - 1 / (Ic + 1)) + k_d F sym(F^T dF/dt)``; vertices 1..3 receive ``-V0`` times
  the columns of ``P Dm^-T``;
* volumetric: ``s = lambda (J - 1 + act) - 3 mu / 4 + k_d dJ/dt`` (``dJ/dt`` is rotation-invariant too) along ``dJ/dx_1 = (x2 - x0) x (x3 - x0)
  / det Dm`` (cyclic), vertex i receives ``-V0 s dJ/dx_i``;
* vertex 0 receives minus the sum of the others (the forces are translation invariant).

Inverted elements (``J <= 0``) stay finite: ``Ic + 1 >= 1`` and nothing divides by ``J``.

Parameters (per tetrahedron, shape [T]; a scalar broadcasts): ``lame_mu`` (Pa), ``lame_lambda`` (Pa),
``tet_damping`` (Pa s), ``tet_activation`` (dimensionless), and the optional per-frame-interval
``control_tet_activation`` [frames - 1, T] which is added to ``tet_activation``. ``young_modulus`` and
``poisson_ratio`` are accepted by :meth:`wsim.simulation.Simulation.resolve` instead of the Lame pair.
"""

from __future__ import annotations

import numpy as np
import warp as wp

from ..errors import MeshError
from ..parameters import ParameterSpec, declare

def lame_from_young_poisson(young, poisson):
    """The energy's ``(mu, lambda)`` for Young's modulus E (Pa) and Poisson's ratio nu (0 <= nu < 0.5):
    numbers, arrays or torch tensors (differentiable). The stable Neo-Hookean energy's small-strain
    moduli are ``mu_L = 3/4 mu`` and ``lambda_L = lambda - 5/8 mu`` (Smith et al. 2018), so the textbook
    ``mu_L = E / (2 (1 + nu))``, ``lambda_L = E nu / ((1 + nu)(1 - 2 nu))`` are remapped to
    ``mu = 4/3 mu_L`` and ``lambda = lambda_L + 5/6 mu_L``; then a small strain sees E and nu."""
    mu_l = young / (2.0 * (1.0 + poisson))
    lam_l = young * poisson / ((1.0 + poisson) * (1.0 - 2.0 * poisson))
    return mu_l * (4.0 / 3.0), lam_l + mu_l * (5.0 / 6.0)


def young_poisson_from_lame(mu, lam):
    """The inverse of :func:`lame_from_young_poisson`: the small-strain ``(E, nu)`` of the energy's
    ``mu`` and ``lambda`` (Pa)."""
    mu_l, lam_l = 0.75 * mu, lam - 0.625 * mu
    return mu_l * (3.0 * lam_l + 2.0 * mu_l) / (lam_l + mu_l), lam_l / (2.0 * (lam_l + mu_l))


PARAMETER_SPECS = declare(
    ParameterSpec("lame_mu", wp.float32, "tet", "first Lame parameter mu (shear) of each tetrahedron", "Pa",
                  0.0, None, True),
    ParameterSpec("lame_lambda", wp.float32, "tet", "second Lame parameter lambda (volume) of each tetrahedron",
                  "Pa", 0.0, None, True),
    # P_damp = k_d F sym(F^T dF/dt) + k_d dJ/dt cof(F): Kelvin-Voigt on the Green strain rate and the
    # volume rate, both zero under rigid motion (k_d in Pa s: stress per unit strain rate).
    ParameterSpec("tet_damping", wp.float32, "tet",
                  "strain-rate damping k_d of each tetrahedron: P_d = k_d (F sym(F^T dF/dt) + dJ/dt cof F)",
                  "Pa s", 0.0, None, True),
    ParameterSpec("tet_activation", wp.float32, "tet",
                  "activation alpha: preferred volume ratio 1 - alpha (alpha > 0 contracts)"),
    ParameterSpec("control_tet_activation", wp.float32, "interval_tet",
                  "activation added to tet_activation on the physics steps of each frame interval"),
)


@wp.kernel
def tetrahedron_forces_kernel(
    particle_q: wp.array(dtype=wp.vec3),
    particle_qd: wp.array(dtype=wp.vec3),
    tet_indices: wp.array2d(dtype=wp.int32),
    rest_inverse: wp.array(dtype=wp.mat33),
    rest_volume: wp.array(dtype=float),
    lame_mu: wp.array(dtype=float),
    lame_lambda: wp.array(dtype=float),
    damping: wp.array(dtype=float),
    activation: wp.array(dtype=float),
    particle_f: wp.array(dtype=wp.vec3),
):
    """Stable Neo-Hookean element forces (paper Eq. 6), accumulated into ``particle_f`` [P] (N)."""
    t = wp.tid()
    i = tet_indices[t, 0]
    j = tet_indices[t, 1]
    k = tet_indices[t, 2]
    l = tet_indices[t, 3]
    x0 = particle_q[i]
    e1 = particle_q[j] - x0
    e2 = particle_q[k] - x0
    e3 = particle_q[l] - x0
    v0 = particle_qd[i]
    w1 = particle_qd[j] - v0
    w2 = particle_qd[k] - v0
    w3 = particle_qd[l] - v0

    dm_inv = rest_inverse[t]
    volume = rest_volume[t]
    mu = lame_mu[t]
    lam = lame_lambda[t]
    kd = damping[t]

    F = wp.matrix_from_cols(e1, e2, e3) * dm_inv
    dFdt = wp.matrix_from_cols(w1, w2, w3) * dm_inv
    f1 = wp.vec3(F[0, 0], F[1, 0], F[2, 0])
    f2 = wp.vec3(F[0, 1], F[1, 1], F[2, 1])
    f3 = wp.vec3(F[0, 2], F[1, 2], F[2, 2])
    d1 = wp.vec3(dFdt[0, 0], dFdt[1, 0], dFdt[2, 0])
    d2 = wp.vec3(dFdt[0, 1], dFdt[1, 1], dFdt[2, 1])
    d3 = wp.vec3(dFdt[0, 2], dFdt[1, 2], dFdt[2, 2])
    ic = wp.dot(f1, f1) + wp.dot(f2, f2) + wp.dot(f3, f3)

    # deviatoric part + damping of the Green strain rate: P = F M with the symmetric
    # M = V0 (mu (1 - 1 / (Ic + 1)) I + kd sym(F^T dF/dt)), one product instead of F a + F S b (14 %
    # faster at 10k tets), and sym(F^T dF/dt) from the six column dots it needs; H = V0 P Dm^-T
    a = mu * (1.0 - 1.0 / (ic + 1.0)) * volume
    b = kd * volume
    hb = 0.5 * b
    m12 = (wp.dot(f1, d2) + wp.dot(f2, d1)) * hb
    m13 = (wp.dot(f1, d3) + wp.dot(f3, d1)) * hb
    m23 = (wp.dot(f2, d3) + wp.dot(f3, d2)) * hb
    M = wp.mat33(a + wp.dot(f1, d1) * b, m12, m13,
                 m12, a + wp.dot(f2, d2) * b, m23,
                 m13, m23, a + wp.dot(f3, d3) * b)
    H = F * (M * wp.transpose(dm_inv))
    g1 = wp.vec3(H[0, 0], H[1, 0], H[2, 0])
    g2 = wp.vec3(H[0, 1], H[1, 1], H[2, 1])
    g3 = wp.vec3(H[0, 2], H[1, 2], H[2, 2])

    # volumetric part with the rest-stable shift: dJ/dx_i = cofactor columns / det(Dm), det(Dm) = 6 V0,
    # and J = det(Ds) / det(Dm) from the same cofactors (no 3x3 determinant)
    c1 = wp.cross(e2, e3)
    c2 = wp.cross(e3, e1)
    c3 = wp.cross(e1, e2)
    inv_det_dm = 1.0 / (6.0 * volume)
    J = wp.dot(e1, c1) * inv_det_dm
    djdt = (wp.dot(c1, w1) + wp.dot(c2, w2) + wp.dot(c3, w3)) * inv_det_dm
    s = (lam * (J - 1.0 + activation[t]) - 0.75 * mu + kd * djdt) * (1.0 / 6.0)  # V0 / det(Dm)
    g1 = g1 + c1 * s
    g2 = g2 + c2 * s
    g3 = g3 + c3 * s

    wp.atomic_add(particle_f, i, g1 + g2 + g3)
    wp.atomic_sub(particle_f, j, g1)
    wp.atomic_sub(particle_f, k, g2)
    wp.atomic_sub(particle_f, l, g3)


@wp.kernel
def add_interval_activation_kernel(
    base: wp.array(dtype=float), control: wp.array2d(dtype=float), interval: int, out: wp.array(dtype=float)
):
    """``out[t] = base[t] + control[interval, t]`` (static plus per-interval activation)."""
    t = wp.tid()
    out[t] = base[t] + control[interval, t]


def combined_activation(model, params, static_name: str, control_name: str, count: int, interval: int):
    """The static activation array, plus the control row of ``interval`` when the control is given."""
    if control_name not in params:
        return params[static_name]
    out = wp.empty(count, dtype=float, device=model.device, requires_grad=True)
    wp.launch(add_interval_activation_kernel, dim=count, device=model.device,
              inputs=[params[static_name], params[control_name], interval], outputs=[out])
    return out


def apply_forces(model, state, params, step: int, interval: int) -> None:
    """Accumulate the forces of every tetrahedron of ``model`` into ``state.particle_f``."""
    if not model.tet_count:
        return
    activation = combined_activation(model, params, "tet_activation", "control_tet_activation",
                                     model.tet_count, interval)
    wp.launch(
        tetrahedron_forces_kernel, dim=model.tet_count, device=model.device,
        inputs=[state.particle_q, state.particle_qd, model.tet_indices, model.tet_rest_inverse,
                model.tet_rest_volume, params["lame_mu"], params["lame_lambda"], params["tet_damping"], activation],
        outputs=[state.particle_f],
    )


def upload_elements(model, defaults: dict, positions: np.ndarray, tets: np.ndarray, device: str) -> None:
    """Rest shapes (inverse rest edge matrix, volume) and parameter defaults of the tetrahedra ``tets``
    (rows: 4 particle indices, mu, lambda, damping, activation) at the particles' ``positions`` [P, 3]."""
    indices = tets[:, :4].astype(np.int64)
    x = positions[indices]
    rest = np.stack([x[:, 1] - x[:, 0], x[:, 2] - x[:, 0], x[:, 3] - x[:, 0]], axis=2)  # columns
    volume = np.linalg.det(rest) / 6.0
    edge = np.linalg.norm(rest, axis=1).max(axis=1)
    bad = np.flatnonzero(volume <= 1e-9 * edge ** 3)
    if len(bad):
        t = int(bad[0])
        raise MeshError(f"tetrahedron {t} (particles {indices[t].tolist()}) has "
                        f"{'zero' if abs(volume[t]) <= 1e-9 * edge[t] ** 3 else 'negative'} rest volume "
                        f"{volume[t]:.3g} m^3; every tetrahedron needs a positive volume "
                        "(det(x1 - x0, x2 - x0, x3 - x0) > 0: swap two of its vertices)")
    model.tet_count = len(tets)
    model.tet_indices = wp.array(indices.astype(np.int32), dtype=wp.int32, device=device)
    model.tet_rest_inverse = wp.array(np.linalg.inv(rest).astype(np.float32), dtype=wp.mat33, device=device)
    model.tet_rest_volume = wp.array(volume.astype(np.float32), dtype=float, device=device)
    for column, name in enumerate(("lame_mu", "lame_lambda", "tet_damping", "tet_activation")):
        defaults[name] = tets[:, 4 + column]
