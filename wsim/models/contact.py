"""Compliant penalty contact with the ground plane, with relaxed Coulomb friction.

Paper Appendix A.1 "Contact" and C.2. For a point at height ``y`` above the plane ``Y = ground_height``
with gap ``C = min(y - ground_height - thickness, 0)`` and normal velocity ``v_n``:

    f_n = -ke e(p) + kd r(p) min(v_n, 0)              (<= 0 while penetrating, else 0), p = -C
    f   = -n f_n - t min(kf |v_t|, mu |f_n|)          (t = v_t / |v_t|, the sliding direction)

With ``smoothing = s = 0`` this is exactly the paper's model: ``e(p) = p``, ``r(p) = 1`` and the
friction is the hinge ``min(kf |v_t|, mu |f_n|)``. Its force has a corner (and its damping a jump) where a vertex meets the plane, so in discrete time every
parameter change that moves a contact onset across a step boundary puts a kink of slope
~ ke dt t into the trajectory: a bouncing rollout is jagged at the scale of one step and its local
gradient says little about its trend. With ``s > 0`` the onset is C1 and centred on the surface:
with ``q = p + s/2``, ``e = q^2 / 2s`` for ``0 < q < s`` and ``e = p`` beyond (the paper's linear
penalty, so resting contacts sink exactly as much as without smoothing), and the damping ramps in as
the smoothstep ``r = 3 x^2 - 2 x^3``, ``x = min(q / s, 1)`` (a linear ramp would put a kink of
stiffness ~ kd v / s into the force, larger than ke itself at impact speeds), and the friction
switches smoothly between its regimes, ``|f_t| = mu |f_n| tanh(kf |v_t| / (mu |f_n|))``: the same
stick stiffness kf at rest and the same Coulomb cap when sliding, without the corner between them.
Pick ``s`` a few times the distance a vertex travels in one step at impact (default 1 cm).

Contact parameters are per material (``contact_ke`` ... ``contact_mu``, shape [M]); every
body and every particle refers to one material, so one global material or one per body both fit.
Contacts are generated for every body surface vertex and every particle (thickness = particle radius).

The law itself is :func:`plane_contact_force`, generic over the precision and the plane's normal: the
float32 kernels here call it through :func:`ground_contact_force` (normal +Y), and the float64 articulation
kernels (:mod:`wsim.models.articulation_contact`) for the contact points of articulated links.
"""

from __future__ import annotations

from typing import Any

import warp as wp

from ..parameters import ParameterSpec, declare

PARAMETER_SPECS = declare(
    ParameterSpec("contact_ke", wp.float32, "material", "contact elastic stiffness", "N/m", 0.0, None, True),
    ParameterSpec("contact_kd", wp.float32, "material", "contact damping", "N s/m", 0.0, None, True),
    ParameterSpec("contact_kf", wp.float32, "material", "friction stiffness (stick regime)", "N s/m", 0.0, None, True),
    ParameterSpec("contact_mu", wp.float32, "material", "Coulomb friction coefficient", "", 0.0, None, True),
)


@wp.func
def plane_contact_force(
    position: Any, velocity: Any, normal: Any, plane_height: Any, thickness: Any,
    ke: Any, kd: Any, kf: Any, mu: Any, smoothing: Any,
):
    """The contact force on a point against the plane ``dot(normal, x) = plane_height`` (unit ``normal``
    pointing out of the ground), generic over the precision: float32 (``wp.vec3``) for particles and
    bodies here, float64 (``wp.vec3d``) for the articulations (:mod:`wsim.models.articulation_contact`),
    so both follow one law. Literals are cast to the arguments' scalar type, which keeps the float32
    code what it was before the function became generic."""
    zero = type(smoothing)(0.0)
    one = type(smoothing)(1.0)
    half = type(smoothing)(0.5)
    two = type(smoothing)(2.0)
    tiny = type(smoothing)(1.0e-12)
    gap = wp.dot(normal, position) - plane_height - thickness
    # depth: penetration measured from where the (possibly smoothed) contact begins
    depth = half * smoothing - gap
    if depth <= zero:
        return velocity * zero
    normal_speed = wp.dot(normal, velocity)
    elastic = depth
    ramp = one
    if smoothing > zero:
        elastic = wp.where(depth < smoothing, depth * depth / (two * smoothing), depth - half * smoothing)
        fraction = wp.min(depth / smoothing, one)
        ramp = fraction * fraction * (type(smoothing)(3.0) - two * fraction)
    normal_force = -ke * elastic + kd * ramp * wp.min(normal_speed, zero)
    tangent_velocity = velocity - normal * normal_speed
    slip = wp.length(tangent_velocity)
    cap = mu * wp.abs(normal_force)
    factor = zero
    if smoothing > zero:
        # Smooth relaxed Coulomb: |f_t| = cap tanh(kf |v_t| / cap), i.e. factor = kf tanh(x) / x with
        # x = kf |v_t| / cap (series near x = 0 so that the stick stiffness kf survives at v_t = 0).
        x = kf * slip / wp.max(cap, tiny)
        factor = wp.where(x < type(smoothing)(1.0e-3), kf * (one - x * x / type(smoothing)(3.0)),
                          cap * wp.tanh(x) / wp.max(slip, tiny))
    else:
        # The paper's hinge min(kf |v_t|, mu |f_n|) / |v_t|: kf itself in the stick regime.
        factor = wp.min(kf, cap / wp.max(slip, tiny))
    friction = tangent_velocity * factor
    return -normal * normal_force - friction


@wp.func
def ground_contact_force(
    position: wp.vec3, velocity: wp.vec3, ground_height: float, thickness: float,
    ke: float, kd: float, kf: float, mu: float, smoothing: float,
) -> wp.vec3:
    """:func:`plane_contact_force` against the ground plane Y = ``ground_height`` (float32)."""
    return plane_contact_force(position, velocity, wp.vec3(0.0, 1.0, 0.0), ground_height, thickness,
                               ke, kd, kf, mu, smoothing)


@wp.kernel
def particle_ground_contact_kernel(
    particle_q: wp.array(dtype=wp.vec3),
    particle_qd: wp.array(dtype=wp.vec3),
    particle_radius: wp.array(dtype=float),
    particle_pinned: wp.array(dtype=wp.int32),
    particle_material: wp.array(dtype=wp.int32),
    ke: wp.array(dtype=float),
    kd: wp.array(dtype=float),
    kf: wp.array(dtype=float),
    mu: wp.array(dtype=float),
    ground_height: float,
    margin: float,
    smoothing: float,
    particle_f: wp.array(dtype=wp.vec3),
):
    tid = wp.tid()
    if particle_pinned[tid] != 0:
        return
    m = particle_material[tid]
    force = ground_contact_force(
        particle_q[tid], particle_qd[tid], ground_height, margin + particle_radius[tid], ke[m], kd[m], kf[m], mu[m],
        smoothing,
    )
    wp.atomic_add(particle_f, tid, force)


@wp.kernel
def body_ground_contact_kernel(
    body_q: wp.array(dtype=wp.vec3),
    body_r: wp.array(dtype=wp.quat),
    body_v: wp.array(dtype=wp.vec3),
    body_w: wp.array(dtype=wp.vec3),
    shape_vertices: wp.array(dtype=wp.vec3),
    shape_vertex_body: wp.array(dtype=wp.int32),
    body_material: wp.array(dtype=wp.int32),
    ke: wp.array(dtype=float),
    kd: wp.array(dtype=float),
    kf: wp.array(dtype=float),
    mu: wp.array(dtype=float),
    ground_height: float,
    margin: float,
    smoothing: float,
    body_f: wp.array(dtype=wp.vec3),
    body_t: wp.array(dtype=wp.vec3),
):
    tid = wp.tid()
    b = shape_vertex_body[tid]
    arm = wp.quat_rotate(body_r[b], shape_vertices[tid])
    position = body_q[b] + arm
    velocity = body_v[b] + wp.cross(body_w[b], arm)
    m = body_material[b]
    force = ground_contact_force(
        position, velocity, ground_height, margin, ke[m], kd[m], kf[m], mu[m], smoothing
    )
    wp.atomic_add(body_f, b, force)
    wp.atomic_add(body_t, b, wp.cross(arm, force))


def apply_forces(model, state, params, step: int, interval: int) -> None:
    """Accumulate ground-contact forces of particles and body vertices into ``state``."""
    if not model.ground:
        return
    materials = [params["contact_ke"], params["contact_kd"], params["contact_kf"], params["contact_mu"]]
    if model.particle_count:
        wp.launch(
            particle_ground_contact_kernel, dim=model.particle_count, device=model.device,
            inputs=[state.particle_q, state.particle_qd, model.particle_radius, model.particle_pinned,
                    model.particle_material, *materials, model.ground_height, model.contact_margin,
                    model.contact_smoothing],
            outputs=[state.particle_f],
        )
    if model.shape_vertex_count:
        wp.launch(
            body_ground_contact_kernel, dim=model.shape_vertex_count, device=model.device,
            inputs=[state.body_q, state.body_r, state.body_v, state.body_w, model.shape_vertices,
                    model.shape_vertex_body, model.body_material, *materials, model.ground_height,
                    model.contact_margin, model.contact_smoothing],
            outputs=[state.body_f, state.body_t],
        )
