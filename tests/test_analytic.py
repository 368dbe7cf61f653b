"""Physics against closed-form answers: the small-strain moduli of the stable Neo-Hookean energy, a
cantilever against Euler-Bernoulli, the volume an activated body settles to, and the air force on one
triangle (and the fall it causes) against a hand computation of the formulas in
wsim/models/aerodynamics.py."""

import functools
import math

import numpy as np
import pytest
import scipy.sparse as sparse
import scipy.sparse.linalg as sparse_linalg
import torch
from conftest import particle_forces, rollout, tet_volumes
from scipy.optimize import brentq

from wsim.geometry import tetmesh
from wsim.builder import ModelBuilder
from wsim.simulation import Simulation


# -- small-strain moduli -----------------------------------------------------------------------------
# Expanding Psi = mu/2 (Ic - 3) + lam/2 (J - a)^2 - mu/2 log(Ic + 1), a = 1 + 3 mu / (4 lam), to second
# order in H = F - I gives mu_L |sym H|^2 + lam_L/2 (tr H)^2 with mu_L = 3/4 mu and lam_L = lam - 5/8 mu
# (Smith et al. 2018, section 3.4). So a material with small-strain Young's modulus E and Poisson ratio
# nu needs mu = 4/3 mu_L and lam = lam_L + 5/6 mu_L.
def lame(young, poisson):
    return young / (2 * (1 + poisson)), young * poisson / ((1 + poisson) * (1 - 2 * poisson))


def stable_neo_hookean(young, poisson):
    """The (mu, lam) of wsim's energy whose small-strain Young's modulus and Poisson ratio are given."""
    mu_l, lam_l = lame(young, poisson)
    return 4.0 / 3.0 * mu_l, lam_l + 5.0 / 6.0 * mu_l


def uniaxial_face_forces(device, mu, lam, strain, poisson):
    """Total force on the +x and +y faces of a 0.1 m cube under the homogeneous deformation
    F = diag(1 + e, 1 - nu e, 1 - nu e) (uniaxial stress for a linear material with that nu), as the
    odd part (f(e) - f(-e)) / 2, which has no O(e^2) term."""
    mesh = tetmesh.box(0.1, (2, 2, 2))
    builder = ModelBuilder(ground=False)
    builder.add_soft_mesh(mesh, density=1000.0, mu=mu, lam=lam)
    model = builder.finalize(device)
    odd = 0.0
    for sign in (1.0, -1.0):
        e = sign * strain
        odd = odd + 0.5 * sign * particle_forces(model, mesh.vertices * np.array([1 + e, 1 - poisson * e,
                                                                                  1 - poisson * e]))
    return odd[mesh.vertices[:, 0] > 0.049].sum(0), odd[mesh.vertices[:, 1] > 0.049].sum(0)


def test_small_strain_moduli_of_the_energy(device):
    """Constant-strain tetrahedra carry a homogeneous strain exactly: the +x face needs the force
    E e A, the lateral faces none (uniaxial stress), up to O(e^2) = 1e-6 and float32 round-off."""
    young, poisson, strain, area = 2.0e5, 0.3, 1e-3, 0.01
    on_x, on_y = uniaxial_face_forces(device, *stable_neo_hookean(young, poisson), strain, poisson)
    expected = young * strain * area
    assert on_x[0] == pytest.approx(-expected, rel=1e-3)  # the elements pull the face back
    assert abs(on_y[1]) < 1e-3 * expected


def test_young_modulus_parameter_is_the_small_strain_modulus(device):
    young, poisson, strain = 2.0e5, 0.3, 1e-3
    mesh = tetmesh.box(0.1, (1, 1, 1))
    builder = ModelBuilder(ground=False)
    builder.add_soft_mesh(mesh, density=1000.0)
    resolved = Simulation(builder.finalize(device), 1e-3, 1, 2).resolve({"young_modulus": young,
                                                                         "poisson_ratio": poisson})
    mu, lam = float(resolved["lame_mu"][0]), float(resolved["lame_lambda"][0])
    on_x, on_y = uniaxial_face_forces(device, mu, lam, strain, poisson)
    assert on_x[0] == pytest.approx(-young * strain * 0.01, rel=2e-2)
    assert abs(on_y[1]) < 2e-2 * young * strain * 0.01


# -- cantilever --------------------------------------------------------------------------------------
LENGTH, HEIGHT, WIDTH = 1.0, 0.1, 0.025
YOUNG, DENSITY = 1.0e6, 1000.0
# nu = 0: no lateral contraction to be held back at the clamp, and a beam of any width bends as E-B says
MU, LAM = stable_neo_hookean(YOUNG, 0.0)
# 0.2 m/s^2 bends the tip by 3 % of the length: large enough that the float32 round-off of the element
# forces (a strain of about 6e-8 / 2.5 cm from the positions alone) stays near 0.2 % of the answer, small
# enough that the large-deflection correction (about 0.1 %) does not matter
GRAVITY = 0.2


def euler_bernoulli_tip():
    """w L^4 / (8 E I) for the beam's own weight w per unit length."""
    w = DENSITY * GRAVITY * HEIGHT * WIDTH
    return w * LENGTH ** 4 / (8 * YOUNG * WIDTH * HEIGHT ** 3 / 12)


def corotated_stiffness(mesh, mu_l, lam_l, positions):
    """Small-strain stiffness [3V, 3V] of linear tetrahedra, each turned by the rotation of its polar
    decomposition at ``positions`` (an independent float64 assembly: the tangent of a small-strain,
    large-rotation solid, which is what a bending beam is)."""
    x = mesh.vertices[mesh.tets]
    edges = np.stack([x[:, c] - x[:, 0] for c in (1, 2, 3)], axis=2)
    volume = np.abs(np.linalg.det(edges)) / 6
    inverse = np.linalg.inv(edges)
    grad = np.concatenate([-inverse.sum(1, keepdims=True), inverse], 1)  # shape-function gradients [T, 4, 3]
    k = (lam_l * np.einsum("tai,tbk->taibk", grad, grad)
         + mu_l * np.einsum("tal,tbl,ik->taibk", grad, grad, np.eye(3))
         + mu_l * np.einsum("tak,tbi->taibk", grad, grad)) * volume[:, None, None, None, None]
    y = positions[mesh.tets]
    u, _, vt = np.linalg.svd(np.stack([y[:, c] - y[:, 0] for c in (1, 2, 3)], axis=2) @ inverse)
    rotation = u @ vt  # no element inverts here, so no reflection to undo
    k = np.einsum("tij,tajbk,tlk->taibl", rotation, k, rotation, optimize=True)
    dof = (mesh.tets[:, :, None] * 3 + np.arange(3)).reshape(-1, 12)
    rows, cols = np.repeat(dof, 12, axis=1), np.tile(dof, (1, 12))
    n = 3 * len(mesh.vertices)
    return sparse.csr_matrix((k.reshape(-1), (rows.reshape(-1), cols.reshape(-1))), shape=(n, n))


def cantilever(device, cells):
    mesh = tetmesh.beam(LENGTH, WIDTH, HEIGHT, cells)
    clamped = mesh.vertices[:, 0] < 1e-9
    builder = ModelBuilder(gravity=(0.0, -GRAVITY, 0.0), ground=False)
    builder.add_soft_mesh(mesh, density=DENSITY, mu=MU, lam=LAM, damping=0.0, pinned=np.flatnonzero(clamped))
    return mesh, builder.finalize(device), clamped


@functools.lru_cache(maxsize=None)
def static_deflection(device, cells):
    """Equilibrium of the simulator's own element forces under gravity: Newton-like iterations whose
    residual comes from the simulator and whose matrix is an independent corotated small-strain
    stiffness (the tangent up to the small stresses, so a few iterations converge; the stiffness at
    rest alone diverges at this deflection, as it sees the rotated elements as stretched). Returns the
    mesh, model, positions and the mean downward deflection of the tip face."""
    mesh, model, clamped = cantilever(device, cells)
    free = np.repeat(~clamped, 3)
    weight = np.zeros_like(mesh.vertices)
    weight[:, 1] = -model.defaults["particle_mass"] * GRAVITY
    tip = mesh.vertices[:, 0] > LENGTH - 1e-9
    x = mesh.vertices.copy()
    deflections = []
    for _ in range(3):
        residual = (particle_forces(model, x) + weight).reshape(-1)
        tangent = corotated_stiffness(mesh, *lame(YOUNG, 0.0), x)[free][:, free]
        x.reshape(-1)[free] += sparse_linalg.spsolve(tangent.tocsc(), residual[free])
        deflections.append(float(np.mean(mesh.vertices[tip, 1] - x[tip, 1])))
    assert abs(deflections[-1] - deflections[-2]) < 2e-3 * deflections[-1]  # converged to round-off
    return mesh, model, x, deflections[-1]


def test_cantilever_tip_deflection_matches_euler_bernoulli(device):
    """Linear tetrahedra are much stiffer than a beam in bending (shear locking) and converge as h^2:
    with the same beam in a float64 small-strain solve of this mesh family, the tip deflection over
    E-B is 0.550, 0.839, 0.961, 0.996 for 20, 40, 80, 160 cells along the length (4 to 1 aspect), and
    Richardson's extrapolation of 40/80 gives 1.001 (of 80/160, 1.008: E-B leaves out shear, +0.8 % at
    L/h = 10). The simulator's forces reproduce that (measured: 0.838 and 0.960 at 3 % deflection, the
    extrapolation 1.0006): each mesh within 1 % of the float64 value, the extrapolation within 2 %
    of E-B."""
    expected = euler_bernoulli_tip()
    coarse = static_deflection(device, (40, 4, 1))[3] / expected
    fine = static_deflection(device, (80, 8, 1))[3] / expected
    assert coarse == pytest.approx(0.8389, rel=1e-2)
    assert fine == pytest.approx(0.9607, rel=1e-2)
    assert fine + (fine - coarse) / 3 == pytest.approx(1.0, abs=2e-2)


def test_cantilever_rests_at_its_static_deflection(device):
    """A rollout started at the static solution with no damping stays there: over a quarter period of
    the first bending mode (a wrong equilibrium would show its full offset by then) the tip moves by
    less than 1 % of its deflection, while a beam released straight has sagged by about as much as
    the deflection."""
    mesh, model, x, deflection = static_deflection(device, (40, 4, 1))
    bending = 1.875 ** 2 * math.sqrt(YOUNG * HEIGHT ** 2 / 12 / DENSITY) / LENGTH ** 2 / math.sqrt(0.8389)
    dt = 2e-4  # below the stability limit of the 2.5 cm elements (about 0.3 h / c)
    substeps = int(0.5 * math.pi / bending / dt / 8) + 1
    sim = Simulation(model, dt, substeps, 9)
    tip = mesh.vertices[:, 0] > LENGTH - 1e-9
    path = rollout(sim, {"particle_position": torch.tensor(x, dtype=torch.float32)})[:, tip, 1].mean(1)
    assert np.abs(path - path[0]).max() < 1e-2 * deflection
    straight = rollout(sim)[:, tip, 1].mean(1)
    assert mesh.vertices[tip, 1].mean() - straight.min() > 0.8 * deflection


# -- activation ----------------------------------------------------------------------------------------
def equilibrium_volume_ratio(mu, lam, activation):
    """J = s^3 of the uniform scaling F = s I where the energy is stationary: with Ic = 3 s^2, J = s^3,
    dPsi/ds = 3 s^2 [mu 3 s / (3 s^2 + 1) + lam (s^3 - 1 + act) - 3 mu / 4] (derived from the energy in
    wsim/models/fem.py; it is not 1 - act unless mu = 0)."""
    def stationary(s):
        return mu * 3 * s / (3 * s * s + 1) + lam * (s ** 3 - 1 + activation) - 0.75 * mu

    return brentq(stationary, 0.3, 2.0, xtol=1e-14) ** 3


@pytest.mark.parametrize("activation", [0.2, -0.15])
def test_activated_body_settles_to_the_energy_minimum_volume(device, activation):
    """A free cube with a uniform activation and no gravity contracts or swells uniformly to the
    volume ratio where the energy is stationary under uniform scaling. With mu = lam that ratio differs
    from 1 - act by 3 % (0.773 against 0.8 for act = 0.2), more than the 0.2 % tolerance."""
    mu = lam = 1.0e3
    mesh = tetmesh.box(0.1, (2, 2, 2))
    builder = ModelBuilder(gravity=(0.0, 0.0, 0.0), ground=False)
    builder.add_soft_mesh(mesh, density=1000.0, mu=mu, lam=lam, damping=30.0, activation=activation)
    sim = Simulation(builder.finalize(device), 2e-4, 100, 21)
    out = rollout(sim)
    rest = tet_volumes(mesh.vertices, mesh.tets)
    ratios = [tet_volumes(frame, mesh.tets) / rest for frame in out[-2:]]
    expected = equilibrium_volume_ratio(mu, lam, activation)
    assert abs(expected - (1 - activation)) > 0.01
    for ratio in ratios:  # settled: the last two frames agree
        np.testing.assert_allclose(ratio, expected, rtol=2e-3)


# -- lift and drag -------------------------------------------------------------------------------------
def air_force(corners, velocity, drag, lift):
    """The total air force on a triangle moving with ``velocity``, from the formulas of the module
    docstring: drag k_d A |n.v| v and lift k_l A (pi/2 - acos(n.v / |v|)) |v|^2 n, the air pushing
    with minus their sum."""
    a, b, c = (np.asarray(p, dtype=np.float64) for p in corners)
    v = np.asarray(velocity, dtype=np.float64)
    normal = np.cross(b - a, c - a)
    area = 0.5 * np.linalg.norm(normal)
    n = normal / np.linalg.norm(normal)
    speed = np.linalg.norm(v)
    cosine = np.clip(n @ v / speed, -1 + 1e-6, 1 - 1e-6)  # the module clamps the same way
    return -(drag * area * abs(n @ v) * v + lift * area * (math.pi / 2 - math.acos(cosine)) * speed ** 2 * n)


def triangle_model(device, corners, drag, lift, mass=0.01, gravity=(0.0, 0.0, 0.0)):
    builder = ModelBuilder(gravity=gravity, ground=False)
    for corner in corners:
        builder.add_particle(corner, mass=mass)
    builder.add_triangle(0, 1, 2, mu=10.0, lam=10.0, drag=drag, lift=lift)
    return builder.finalize(device)


@pytest.mark.parametrize("velocity", [(0.0, -2.0, 0.0), (1.5, -0.8, 0.3), (3.0, 0.0, 0.0), (0.2, 0.5, -1.0)])
@pytest.mark.parametrize("flip", [False, True])
def test_air_force_on_one_triangle_matches_hand_computation(device, velocity, flip):
    """A triangle translating through still air (so that no membrane force acts): every corner gets a
    third of the hand-computed force, whichever way the triangle is wound."""
    corners = [(0.0, 1.0, 0.0), (0.4, 1.0, 0.1), (0.1, 1.05, 0.3)]
    if flip:
        corners = corners[::-1]
    drag, lift = 1.3, 0.7
    model = triangle_model(device, corners, drag, lift)
    forces = particle_forces(model, corners, np.tile(velocity, (3, 1)))
    expected = air_force(corners, velocity, drag, lift)
    # float32 kernel: 6e-5 relative measured
    np.testing.assert_allclose(forces, np.tile(expected / 3, (3, 1)), rtol=3e-4, atol=1e-5 * np.abs(expected).max())


def test_flat_triangle_falls_at_the_drag_limited_speed(device):
    """A level triangle falling face-on keeps level (equal corner masses, equal shares of the force)
    and obeys m dv/dt = m g - k v^2 with k = (k_drag + k_lift asin(c)) A (lift is along n, here along
    v): y(t) = y0 - v_t^2 / g ln cosh(g t / v_t), v_t = sqrt(m g / k). Semi-implicit Euler at 1 ms
    follows it to 1e-3 of the fall."""
    corners = [(0.0, 2.0, 0.0), (0.3, 2.0, 0.0), (0.0, 2.0, 0.3)]
    drag, lift, mass, g = 1.2, 0.5, 0.004, 9.81
    model = triangle_model(device, corners, drag, lift, mass=mass, gravity=(0.0, -g, 0.0))
    sim = Simulation(model, 1e-3, 50, 21)  # 1 s
    out = rollout(sim)
    area = 0.5 * 0.3 * 0.3
    k = (drag + lift * math.asin(1 - 1e-6)) * area
    terminal = math.sqrt(3 * mass * g / k)
    t = np.arange(21) * 0.05
    expected = 2.0 - terminal ** 2 / g * np.log(np.cosh(g * t / terminal))
    assert np.ptp(out[:, :, 1], axis=1).max() < 1e-6  # stays level
    fall = 2.0 - out[:, 0, 1]
    np.testing.assert_allclose(out[:, 0, 1], expected, atol=1e-3 * fall[-1])
    assert fall[-1] < 0.5 * 0.5 * g  # well short of free fall (4.9 m)
