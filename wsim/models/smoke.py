"""2-D incompressible smoke after Stam's "Stable Fluids" (1999), written so that Warp's autodiff can
run every step backwards (gradSim App. C.4: optimise a smoke's initial velocity from video).

Grid and units. ``N x M`` square cells of side ``h`` (m), values stored at the cell centres; cell
``(i, j)`` sits at ``x = (i h, j h)``, axis 0 (rows, ``i``) first. Velocity ``u`` (m/s) is a
``wp.vec2`` per cell, component 0 along axis 0 and component 1 along axis 1, shape ``[N, M]``; density
``rho`` (dimensionless smoke concentration) and pressure ``p`` (kinematic, m^2/s, density folded in)
are scalars of shape ``[N, M]``. Time step ``dt`` (s), viscosity ``nu`` and density diffusivity
``kappa`` (m^2/s).

One step solves, by operator splitting,

    du/dt = -(u . grad) u + nu lap u - grad p + f,   div u = 0,
    drho/dt = -(u . grad) rho + kappa lap rho + s,

in Stam's order: sources (``u += dt f``, ``rho += dt s``), implicit viscosity ``(I - nu dt lap) u' = u``,
projection, self-advection of ``u``, projection, advection of ``rho`` by the projected ``u``, implicit
density diffusion. The implicit solves are a fixed number of Jacobi sweeps (5-point Laplacian, unit
diagonal dominance, so they converge for any ``nu dt / h^2``).

Advection is semi-Lagrangian: the value at a centre is the bilinear interpolation at the departure
point ``x - dt u(x)``; exact (a pure shift) when ``dt u / h`` is a whole number of cells. It is stable
for any ``dt`` but neither conservative nor monotone-preserving of totals: bilinear sampling averages.

Boundary: a closed box. Departure points are clamped to the span of the cell centres (a value outside
is the nearest boundary cell's, so smoke neither enters nor leaves by advection); diffusion uses
zero-gradient (clamped) neighbours. The projection keeps walls impermeable through ghost values
beyond the walls: the normal velocity component is mirrored with its sign flipped (zero flux through
the wall face), the pressure mirrored as is (``dp/dn = 0``). With those ghosts the central-difference
divergence ``D`` and gradient ``G`` satisfy ``G = -D^T``, and the pressure equation is
``A p = D u`` with ``A = D G`` (the wide-stencil Laplacian: diagonal ``-1/h^2``, neighbours two cells
away, symmetric negative semidefinite, null space the constants). After ``u <- u - G p`` the discrete
divergence ``D u`` equals the residual ``D u - A p`` exactly, so it is zero at convergence of the
solve. The solve is damped Jacobi (weight ``omega`` < 1: plain Jacobi does not damp the mode that
flips sign from cell to cell on this bipartite stencil) from ``p = 0``, which keeps ``mean(p) = 0``.
A fixed, small iteration count leaves the smooth part of the divergence (Stam's trade-off).

Autodiff: every launch writes into a fresh output array; nothing recorded on a ``wp.Tape`` is
overwritten (a reused buffer would hand a later launch's adjoint to an earlier one). Bilinear weights
are differentiable, the cell index is not (``floor``): the gradient is exact almost everywhere and
jumps where a departure point crosses a cell centre.
"""

from __future__ import annotations

from typing import Any

import warp as wp


@wp.func
def _sample(field: wp.array2d(dtype=Any), x: float, y: float):
    """Bilinear value of ``field`` (float or vec2) at index-space point (x, y), clamped to the cell-centre
    span."""
    n = field.shape[0]
    m = field.shape[1]
    cx = wp.clamp(x, 0.0, float(n - 1))
    cy = wp.clamp(y, 0.0, float(m - 1))
    i0 = wp.min(int(wp.floor(cx)), n - 2)
    j0 = wp.min(int(wp.floor(cy)), m - 2)
    tx = cx - float(i0)
    ty = cy - float(j0)
    a = field[i0, j0] * (1.0 - ty) + field[i0, j0 + 1] * ty
    b = field[i0 + 1, j0] * (1.0 - ty) + field[i0 + 1, j0 + 1] * ty
    return a * (1.0 - tx) + b * tx


@wp.kernel
def add_sources_kernel(
    velocity: wp.array2d(dtype=wp.vec2),  # u before the step (m/s), [N, M]
    density: wp.array2d(dtype=float),  # rho before the step, [N, M]
    force: wp.array2d(dtype=wp.vec2),  # body acceleration f (m/s^2), [N, M]
    source: wp.array2d(dtype=float),  # density source rate s (1/s), [N, M]
    dt: float,  # time step (s)
    velocity_out: wp.array2d(dtype=wp.vec2),  # u + dt f
    density_out: wp.array2d(dtype=float),  # rho + dt s
):
    i, j = wp.tid()
    velocity_out[i, j] = velocity[i, j] + dt * force[i, j]
    density_out[i, j] = density[i, j] + dt * source[i, j]


@wp.kernel
def diffuse_kernel(
    start: wp.array2d(dtype=Any),  # the field before diffusion (right-hand side): u (vec2) or rho (float), [N, M]
    guess: wp.array2d(dtype=Any),  # previous Jacobi iterate, [N, M]
    coefficient: wp.array(dtype=float),  # [1]: the viscosity nu or diffusivity kappa (m^2/s)
    dt_over_h2: float,  # dt / h^2 (s/m^2)
    out: wp.array2d(dtype=Any),  # next Jacobi iterate of (I - nu dt lap) q' = q
):
    i, j = wp.tid()
    n = start.shape[0]
    m = start.shape[1]
    a = coefficient[0] * dt_over_h2
    neighbours = (guess[wp.max(i - 1, 0), j] + guess[wp.min(i + 1, n - 1), j]
                  + guess[i, wp.max(j - 1, 0)] + guess[i, wp.min(j + 1, m - 1)])
    out[i, j] = (start[i, j] + a * neighbours) / (1.0 + 4.0 * a)


@wp.func
def _ghost_sign(n: int, m: int, i: int, j: int):
    """The wall ghost rule: a cell beyond a wall takes its mirror cell's value with the sign flipped."""
    if i < 0 or i > n - 1 or j < 0 or j > m - 1:
        return -1.0
    return 1.0


@wp.func
def _normal_velocity(u: wp.array2d(dtype=wp.vec2), i: int, j: int, axis: int):
    """Component ``axis`` of u at (i, j), with the wall ghosts (zero flux through the wall face)."""
    n = u.shape[0]
    m = u.shape[1]
    return _ghost_sign(n, m, i, j) * u[wp.clamp(i, 0, n - 1), wp.clamp(j, 0, m - 1)][axis]


@wp.func
def _divergence(u: wp.array2d(dtype=wp.vec2), i: int, j: int, inv_2h: float):
    return inv_2h * (_normal_velocity(u, i + 1, j, 0) - _normal_velocity(u, i - 1, j, 0)
                     + _normal_velocity(u, i, j + 1, 1) - _normal_velocity(u, i, j - 1, 1))


@wp.func
def _pressure_gradient(p: wp.array2d(dtype=float), i: int, j: int, inv_2h: float):
    """G p at cell (i, j): central differences, the pressure mirrored beyond the walls (dp/dn = 0)."""
    n = p.shape[0]
    m = p.shape[1]
    return wp.vec2(inv_2h * (p[wp.min(i + 1, n - 1), j] - p[wp.max(i - 1, 0), j]),
                   inv_2h * (p[i, wp.min(j + 1, m - 1)] - p[i, wp.max(j - 1, 0)]))


@wp.func
def _gradient_component(p: wp.array2d(dtype=float), i: int, j: int, axis: int, inv_2h: float):
    """Component ``axis`` of G p at (i, j), a cell beyond a wall taking the mirrored, sign-flipped
    value (the same ghost rule as the velocity it is subtracted from)."""
    n = p.shape[0]
    m = p.shape[1]
    return _ghost_sign(n, m, i, j) * _pressure_gradient(p, wp.clamp(i, 0, n - 1), wp.clamp(j, 0, m - 1), inv_2h)[axis]


@wp.kernel
def divergence_kernel(
    velocity: wp.array2d(dtype=wp.vec2),  # u (m/s), [N, M]
    inv_2h: float,  # 1 / (2 h) (1/m)
    divergence: wp.array2d(dtype=float),  # D u (1/s), [N, M]
):
    i, j = wp.tid()
    divergence[i, j] = _divergence(velocity, i, j, inv_2h)


@wp.kernel
def pressure_jacobi_kernel(
    pressure: wp.array2d(dtype=float),  # previous iterate p_k (m^2/s), [N, M]
    divergence: wp.array2d(dtype=float),  # right-hand side D u (1/s), [N, M]
    inv_2h: float,  # 1 / (2 h) (1/m)
    omega_h2: float,  # damping weight times h^2 (m^2): the step along the residual
    pressure_out: wp.array2d(dtype=float),  # p_{k+1} = p_k - omega h^2 (D u - A p_k)
):
    i, j = wp.tid()
    # A p = D (G p), G p taking the wall ghosts of a velocity
    a_p = inv_2h * (_gradient_component(pressure, i + 1, j, 0, inv_2h)
                    - _gradient_component(pressure, i - 1, j, 0, inv_2h)
                    + _gradient_component(pressure, i, j + 1, 1, inv_2h)
                    - _gradient_component(pressure, i, j - 1, 1, inv_2h))
    pressure_out[i, j] = pressure[i, j] - omega_h2 * (divergence[i, j] - a_p)


@wp.kernel
def subtract_gradient_kernel(
    velocity: wp.array2d(dtype=wp.vec2),  # u before projection (m/s), [N, M]
    pressure: wp.array2d(dtype=float),  # p (m^2/s), [N, M]
    inv_2h: float,  # 1 / (2 h) (1/m)
    velocity_out: wp.array2d(dtype=wp.vec2),  # u - G p
):
    i, j = wp.tid()
    velocity_out[i, j] = velocity[i, j] - _pressure_gradient(pressure, i, j, inv_2h)


@wp.kernel
def advect_kernel(
    field: wp.array2d(dtype=Any),  # the advected field q: density rho (float) or u itself (vec2), [N, M]
    velocity: wp.array2d(dtype=wp.vec2),  # the carrying velocity u (m/s), [N, M]
    dt_over_h: float,  # dt / h (s/m): converts a velocity to cells per step
    out: wp.array2d(dtype=Any),  # q at the departure points, [N, M], the dtype of field
):
    i, j = wp.tid()
    back = velocity[i, j] * dt_over_h
    out[i, j] = _sample(field, float(i) - back[0], float(j) - back[1])


@wp.kernel
def store_frame_kernel(
    density: wp.array2d(dtype=float),  # rho after a step, [N, M]
    velocity: wp.array2d(dtype=wp.vec2),  # u after a step, [N, M]
    frame: int,  # which frame slot to fill
    density_frames: wp.array3d(dtype=float),  # [F, N, M]
    velocity_frames: wp.array3d(dtype=wp.vec2),  # [F, N, M]
):
    i, j = wp.tid()
    density_frames[frame, i, j] = density[i, j]
    velocity_frames[frame, i, j] = velocity[i, j]
