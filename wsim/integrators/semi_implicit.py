"""Semi-implicit (symplectic) Euler integration of particles and rigid bodies (paper Eq. 4).

Particles: ``v+ = v + dt (f / m + g)``, ``x+ = x + dt v+``; pinned particles keep their position and
have zero velocity.

Rigid bodies (Newton-Euler, paper Eq. 2): ``v+ = v + dt (f / m + g)``, ``x+ = x + dt v+``. The rotational
part integrates the world angular momentum ``L = I_w w`` (``I_w = R I R^T``), which is the same ODE as
``I_w dw/dt = tau - w x (I_w w)`` written in conservation form: ``L+ = L + dt tau``; the orientation is
advanced with ``w' = I_w(R)^-1 L+`` and renormalised, and ``w+ = I_w(R+)^-1 L+``. Written this way the
gyroscopic term is exact in the absence of torque. ``L`` is carried in the State (``body_l``) rather
than re-derived as ``I_w(R) w`` every step: the round trip through the inverse inertia loses a little
in float32 each step (0.5 % over 20k steps of a tumbling box), whereas ``L+ = L + dt tau`` is exact when
``tau = 0``. ``w`` stays in the State as the derived quantity that contacts and outputs read.

Non-finite results record the first offending physics step in ``bad_step`` (atomic min, no host sync).
"""

from __future__ import annotations

import warp as wp

from ..parameters import ParameterSpec, declare

PARAMETER_SPECS = declare(
    ParameterSpec("particle_mass", wp.float32, "particle", "particle mass", "kg", 0.0, None),
    ParameterSpec("body_mass", wp.float32, "body", "rigid body mass", "kg", 0.0, None),
    ParameterSpec("body_inertia", wp.mat33, "body", "inertia about the centre of mass, body frame", "kg m^2"),
)


@wp.func
def finite_sum(total: float):
    """Whether every term of the sum ``total`` was finite: a NaN or infinite term makes ``total - total``
    NaN (so does a finite sum beyond float32's range, a runaway anyway). In a CPU kernel the sum and
    this test cost 3 us for 2197 particles where ``wp.isfinite`` on each vector costs 15 us (the whole
    integration launch: 31 against 43 us)."""
    return total - total == 0.0


@wp.func
def vec_sum(a: wp.vec3):
    return a[0] + a[1] + a[2]


@wp.kernel
def integrate_particles_kernel(
    particle_q: wp.array(dtype=wp.vec3),
    particle_qd: wp.array(dtype=wp.vec3),
    particle_f: wp.array(dtype=wp.vec3),
    particle_mass: wp.array(dtype=float),
    particle_pinned: wp.array(dtype=wp.int32),
    gravity: wp.array(dtype=wp.vec3),
    dt: float,
    step: int,
    particle_q_out: wp.array(dtype=wp.vec3),
    particle_qd_out: wp.array(dtype=wp.vec3),
    bad_step: wp.array(dtype=wp.int32),
):
    tid = wp.tid()
    x = particle_q[tid]
    if particle_pinned[tid] != 0:
        particle_q_out[tid] = x
        particle_qd_out[tid] = wp.vec3(0.0)
        return
    v = particle_qd[tid] + dt * (particle_f[tid] / particle_mass[tid] + gravity[0])
    x_new = x + dt * v
    particle_q_out[tid] = x_new
    particle_qd_out[tid] = v
    if not finite_sum(vec_sum(x_new) + vec_sum(v)):
        wp.atomic_min(bad_step, 0, step)


@wp.kernel
def integrate_bodies_kernel(
    body_q: wp.array(dtype=wp.vec3),
    body_r: wp.array(dtype=wp.quat),
    body_v: wp.array(dtype=wp.vec3),
    body_l: wp.array(dtype=wp.vec3),
    body_f: wp.array(dtype=wp.vec3),
    body_t: wp.array(dtype=wp.vec3),
    body_mass: wp.array(dtype=float),
    body_inertia: wp.array(dtype=wp.mat33),
    gravity: wp.array(dtype=wp.vec3),
    dt: float,
    step: int,
    body_q_out: wp.array(dtype=wp.vec3),
    body_r_out: wp.array(dtype=wp.quat),
    body_v_out: wp.array(dtype=wp.vec3),
    body_w_out: wp.array(dtype=wp.vec3),
    body_l_out: wp.array(dtype=wp.vec3),
    bad_step: wp.array(dtype=wp.int32),
):
    b = wp.tid()
    mass = body_mass[b]
    inertia = body_inertia[b]
    inertia_inverse = wp.inverse(inertia)
    r = body_r[b]

    v = body_v[b] + dt * (body_f[b] / mass + gravity[0])
    x = body_q[b] + dt * v

    # The world angular momentum is the state (not re-derived from omega): it changes by the torque
    # impulse only, so torque-free tumbling keeps it to round-off however long the run.
    rotation = wp.quat_to_matrix(r)
    momentum = body_l[b] + dt * body_t[b]
    w_mid = rotation * (inertia_inverse * (wp.transpose(rotation) * momentum))
    r_new = wp.normalize(r + wp.quat(w_mid, 0.0) * r * (0.5 * dt))
    rotation_new = wp.quat_to_matrix(r_new)
    w = rotation_new * (inertia_inverse * (wp.transpose(rotation_new) * momentum))

    body_q_out[b] = x
    body_r_out[b] = r_new
    body_v_out[b] = v
    body_w_out[b] = w
    body_l_out[b] = momentum
    if not finite_sum(vec_sum(x) + vec_sum(v) + vec_sum(w) + r_new[0] + r_new[1] + r_new[2] + r_new[3]):
        wp.atomic_min(bad_step, 0, step)


def integrate(model, state_in, state_out, params, dt: float, step: int, bad_step: wp.array) -> None:
    """Advance ``state_in`` by ``dt`` into ``state_out`` using the forces accumulated in ``state_in``."""
    if model.particle_count:
        wp.launch(
            integrate_particles_kernel, dim=model.particle_count, device=model.device,
            inputs=[state_in.particle_q, state_in.particle_qd, state_in.particle_f, params["particle_mass"],
                    model.particle_pinned, params["gravity"], dt, step],
            outputs=[state_out.particle_q, state_out.particle_qd, bad_step],
        )
    if model.body_count:
        wp.launch(
            integrate_bodies_kernel, dim=model.body_count, device=model.device,
            inputs=[state_in.body_q, state_in.body_r, state_in.body_v, state_in.body_l, state_in.body_f,
                    state_in.body_t, params["body_mass"], params["body_inertia"], params["gravity"], dt, step],
            outputs=[state_out.body_q, state_out.body_r, state_out.body_v, state_out.body_w, state_out.body_l,
                     bad_step],
        )
