"""Element damping acts on the rate of strain only: rigid motion of a deformable body is not braked.

Before the change (damping of dF/dt) a free soft ball with k_d = 5 Pa s lost 98.9 % of its angular
momentum in 1 s and a spinning cloth with k_d = 0.02 N s/m lost 47 % in 0.2 s. The angular momentum
of a free body whose internal forces come from a rotation-invariant stress is conserved exactly by
the semi-implicit step (``L_{n+1} = L_n + dt sum x_n x f_n`` and the torque of such forces vanishes),
so the only loss left is float32 round-off (measured: 4e-7 for the ball, 2e-7 for the cloth; the tests
allow 1e-4).
"""

import numpy as np
import torch

from wsim.geometry import cloth as cloth_mesh
from wsim.geometry import tetmesh
from wsim.builder import ModelBuilder
from wsim.simulation import Simulation


def angular_momentum(positions, velocities, masses):
    """Total angular momentum about the centre of mass, per row of ``[frames, P, 3]`` arrays (float64)."""
    x = positions.astype(np.float64)
    v = velocities.astype(np.float64)
    centre = (masses[None, :, None] * x).sum(1) / masses.sum()
    return (masses[None, :, None] * np.cross(x - centre[:, None], v)).sum(1)


def spin_velocity(positions, omega):
    centre = positions.mean(0)
    return np.cross(np.asarray(omega, float), positions - centre)


def run_spinning(builder, omega, dt, substeps, frames, extra=None):
    model = builder.finalize("cpu")
    sim = Simulation(model, dt, substeps, frames)
    x0 = np.array([p["position"] for p in builder.particles])
    masses = np.array([p["mass"] for p in builder.particles])
    velocity = spin_velocity(x0, omega) + (0.0 if extra is None else extra(x0))
    with torch.no_grad():
        sim.rollout({"particle_velocity": torch.tensor(velocity, dtype=torch.float32), "gravity": torch.zeros(3)})
    states = sim.frame_states()
    return angular_momentum(states["particle_q"], states["particle_qd"], masses), states, masses


def soft_ball(damping):
    builder = ModelBuilder(ground=False, gravity=(0.0, 0.0, 0.0))
    builder.add_soft_mesh(tetmesh.sphere(0.1, 2), position=(0.0, 0.3, 0.0), density=1000.0, mu=2.0e4, lam=4.0e4,
                          damping=damping)
    return builder


def cloth_sheet(damping):
    builder = ModelBuilder(ground=False, gravity=(0.0, 0.0, 0.0))
    builder.add_cloth(cloth_mesh.grid((0.6, 0.6), (6, 6)), position=(0.0, 1.0, 0.0),
                      rotation=(0.0, 0.0, 0.1305, 0.9914), density=0.2, mu=20.0, lam=40.0, damping=damping)
    return builder


def relative_loss(momenta):
    return np.linalg.norm(momenta - momenta[0], axis=1).max() / np.linalg.norm(momenta[0])


def test_free_spinning_soft_ball_keeps_its_angular_momentum():
    # 1 s at dt = 0.25 ms, as in the soft-ball scene; an off-axis spin so that every component is exercised
    momenta, states, _ = run_spinning(soft_ball(5.0), (1.0, 6.0, -2.0), 2.5e-4, 400, 11)
    loss = relative_loss(momenta)
    print(f"soft ball, k_d = 5 Pa s: |L - L0| / |L0| = {loss:.2e} over 1 s")
    assert loss < 1e-4
    # the ball really spins: its particles moved by a large angle around the centre
    assert np.abs(states["particle_q"] - states["particle_q"][0]).max() > 0.1


def test_spinning_cloth_keeps_its_angular_momentum():
    # spin about the sheet's normal (in-plane rotation) and about an in-plane axis (the sheet flips)
    normal = np.array([-np.sin(0.2618), np.cos(0.2618), 0.0])
    for omega in (8.0 * normal, (0.0, 0.0, 8.0)):
        momenta, _, _ = run_spinning(cloth_sheet(0.02), omega, 1e-3, 20, 11)
        loss = relative_loss(momenta)
        print(f"cloth, k_d = 0.02 N s/m, omega {np.round(omega, 2)}: |L - L0| / |L0| = {loss:.2e} over 0.2 s")
        assert loss < 1e-4


def vibration_energy(states, masses):
    """Kinetic energy left after removing the rigid motion (translation and the best-fit rotation
    ``omega = I^-1 L``), per frame (J)."""
    energies = []
    for x, v in zip(states["particle_q"].astype(np.float64), states["particle_qd"].astype(np.float64)):
        r = x - (masses[:, None] * x).sum(0) / masses.sum()
        u = v - (masses[:, None] * v).sum(0) / masses.sum()
        momentum = (masses[:, None] * np.cross(r, u)).sum(0)
        inertia = (masses[:, None, None] * ((r * r).sum(1)[:, None, None] * np.eye(3)
                                            - r[:, :, None] * r[:, None, :])).sum(0)
        omega = np.linalg.solve(inertia, momentum)
        energies.append(0.5 * (masses * (u * u).sum(1)).sum() - 0.5 * momentum @ omega)
    return np.array(energies)


def test_damping_still_dissipates_deformation():
    """A stretching mode of a free cube (plus a spin): with k_d > 0 its vibration energy decays, without
    damping it keeps oscillating; the strain-rate damping still brakes deformation."""
    mesh = tetmesh.box(0.1, (2, 2, 2))

    def stretch(x):
        return np.array([3.0, -1.5, -1.5]) * (x - x.mean(0))  # 1/s: a volume-preserving stretch rate

    energies = {}
    for damping in (0.0, 20.0):
        builder = ModelBuilder(ground=False, gravity=(0.0, 0.0, 0.0))
        builder.add_soft_mesh(mesh, density=1000.0, mu=1.0e4, lam=2.0e4, damping=damping)
        momenta, states, masses = run_spinning(builder, (0.0, 2.0, 0.0), 1e-4, 100, 21, extra=stretch)
        energies[damping] = vibration_energy(states, masses)
        assert relative_loss(momenta) < 1e-4
    undamped, damped = energies[0.0], energies[20.0]
    # Without damping the mode keeps its energy (it moves between kinetic and elastic: compare peaks).
    assert undamped[10:].max() > 0.5 * undamped[0]
    # With damping it has lost most of it after 0.2 s (a few periods).
    assert damped[10:].max() < 0.2 * damped[0]


def rayleigh_dissipation(rest, x, v, kd):
    """``R = kd/2 sum_e A_e (|dE/dt|^2 + (dJ/dt)^2)`` in float64 for tetrahedra ([E, 4] rest/x/v) or
    triangles ([E, 3]); A_e the rest volume or area, E the Green strain, J the volume or area ratio."""
    def edges(p):
        return np.stack([p[:, c] - p[:, 0] for c in range(1, p.shape[1])], axis=2)

    rest_edges, current, rate = edges(rest), edges(x), edges(v)
    if rest.shape[1] == 4:
        inverse = np.linalg.inv(rest_edges)
        size = np.abs(np.linalg.det(rest_edges)) / 6.0
        jacobian = np.linalg.det(current) / np.linalg.det(rest_edges)
        jacobian_rate = np.linalg.det(current + 1e-7 * rate) / np.linalg.det(rest_edges)
    else:  # map the rest triangle to 2D (the kernel's rest matrix is any 2D frame: E is frame-invariant)
        u = rest_edges[:, :, 0] / np.linalg.norm(rest_edges[:, :, 0], axis=1, keepdims=True)
        n = np.cross(rest_edges[:, :, 0], rest_edges[:, :, 1])
        w = np.cross(n / np.linalg.norm(n, axis=1, keepdims=True), u)
        planar = np.stack([np.einsum("ei,eij->ej", u, rest_edges), np.einsum("ei,eij->ej", w, rest_edges)], 1)
        inverse = np.linalg.inv(planar)
        size = 0.5 * np.linalg.norm(n, axis=1)
        area = 0.5 * np.linalg.norm(np.cross(current[:, :, 0], current[:, :, 1]), axis=1)
        moved = current + 1e-7 * rate
        jacobian = area / size
        jacobian_rate = 0.5 * np.linalg.norm(np.cross(moved[:, :, 0], moved[:, :, 1]), axis=1) / size
    F, Fdot = current @ inverse, rate @ inverse
    Edot = 0.5 * (np.swapaxes(F, 1, 2) @ Fdot + np.swapaxes(Fdot, 1, 2) @ F)
    Jdot = (jacobian_rate - jacobian) / 1e-7  # J is nonlinear in x only: dJ/dt is linear in v to O(1e-7)
    return 0.5 * kd * np.sum(size * (np.einsum("eij,eij->e", Edot, Edot) + Jdot ** 2))


def damping_forces_against_dissipation(model, elements, kernel, rest_args, x, v, kd):
    import warp as wp

    count = len(elements)
    zeros = wp.zeros(count, dtype=float)
    f = wp.zeros(len(x), dtype=wp.vec3)
    wp.launch(kernel, dim=count,
              inputs=[wp.array(x.astype(np.float32), dtype=wp.vec3), wp.array(v.astype(np.float32), dtype=wp.vec3),
                      *rest_args, zeros, zeros, wp.array(np.full(count, kd, np.float32)), zeros], outputs=[f])
    ours = f.numpy().astype(np.float64)
    rest = np.array(model["rest"])
    reference = np.zeros_like(v)
    h = 1e-4
    for i in range(len(v)):
        for c in range(3):
            plus, minus = v.copy(), v.copy()
            plus[i, c] += h
            minus[i, c] -= h
            reference[i, c] = -(rayleigh_dissipation(rest[elements], x[elements], plus[elements], kd)
                                - rayleigh_dissipation(rest[elements], x[elements], minus[elements], kd)) / (2 * h)
    return ours, reference


def test_damping_forces_are_minus_the_gradient_of_the_rayleigh_dissipation():
    """An independent float64 implementation: the damping force is ``-dR/dv`` of the dissipation function
    of the Green strain rate and the volume (area) rate, at a deformed, moving state."""
    from wsim.models import cloth, fem

    rng = np.random.default_rng(3)
    mesh = tetmesh.box(0.1, (1, 1, 1))
    builder = ModelBuilder(ground=False)
    builder.add_soft_mesh(mesh, density=1000.0, damping=1.0)
    model = builder.finalize("cpu")
    x = mesh.vertices @ (np.eye(3) + 0.2 * rng.standard_normal((3, 3))).T
    v = rng.standard_normal(x.shape)
    ours, reference = damping_forces_against_dissipation(
        {"rest": mesh.vertices}, model.tet_indices.numpy(), fem.tetrahedron_forces_kernel,
        [model.tet_indices, model.tet_rest_inverse, model.tet_rest_volume], x, v, 3.0)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=2e-4 * np.abs(reference).max())

    sheet = cloth_mesh.grid((0.3, 0.2), (2, 1))
    builder = ModelBuilder(ground=False)
    builder.add_cloth(sheet, density=0.2, damping=1.0)
    model = builder.finalize("cpu")
    rest = np.array([p["position"] for p in builder.particles])
    x = rest @ (np.eye(3) + 0.2 * rng.standard_normal((3, 3))).T
    v = rng.standard_normal(x.shape)
    ours, reference = damping_forces_against_dissipation(
        {"rest": rest}, model.tri_indices.numpy(), cloth.triangle_forces_kernel,
        [model.tri_indices, model.tri_rest_inverse, model.tri_rest_area], x, v, 0.05)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=2e-4 * np.abs(reference).max())
