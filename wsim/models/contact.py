"""Compliant penalty contact with the ground plane, with relaxed Coulomb friction.

Paper Appendix A.1 "Contact" and C.2. For a point at height ``y`` above the plane ``Y = ground_height``
with gap ``C = min(y - ground_height - thickness, 0)`` and normal velocity ``v_n``:

    f_n = ke C + kd min(v_n, 0)                       (<= 0 while penetrating, else 0)
    f   = -n f_n - t min(kf |v_t|, mu |f_n|)          (t = v_t / |v_t|, the sliding direction)

The friction term is a stiff linear "stick" regime below the Coulomb cone and a capped slip regime
above it. Contact parameters are per material (``contact_ke`` ... ``contact_mu``, shape [M]); every
body and every particle refers to one material, so one global material or one per body both fit.
Contacts are generated for every body surface vertex and every particle (thickness = particle radius).
"""

from __future__ import annotations

import warp as wp

from ..parameters import ParameterSpec, register

register(
    ParameterSpec("contact_ke", wp.float32, "material", "contact elastic stiffness", "N/m", 0.0, None, True),
    ParameterSpec("contact_kd", wp.float32, "material", "contact damping", "N s/m", 0.0, None, True),
    ParameterSpec("contact_kf", wp.float32, "material", "friction stiffness (stick regime)", "N s/m", 0.0, None, True),
    ParameterSpec("contact_mu", wp.float32, "material", "Coulomb friction coefficient", "", 0.0, None, True),
)


@wp.func
def ground_contact_force(
    position: wp.vec3, velocity: wp.vec3, ground_height: float, thickness: float,
    ke: float, kd: float, kf: float, mu: float,
) -> wp.vec3:
    normal = wp.vec3(0.0, 1.0, 0.0)
    gap = wp.dot(normal, position) - ground_height - thickness
    if gap >= 0.0:
        return wp.vec3(0.0)
    normal_speed = wp.dot(normal, velocity)
    normal_force = ke * gap + kd * wp.min(normal_speed, 0.0)
    tangent_velocity = velocity - normal * normal_speed
    slip = wp.length(tangent_velocity)
    friction = tangent_velocity * kf
    cap = mu * wp.abs(normal_force)
    # Below the cone the stick force kf*v_t is used as is (no division: smooth at rest).
    if kf * slip > cap:
        friction = tangent_velocity * (cap / slip)
    return -normal * normal_force - friction


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
    particle_f: wp.array(dtype=wp.vec3),
):
    tid = wp.tid()
    if particle_pinned[tid] != 0:
        return
    m = particle_material[tid]
    force = ground_contact_force(
        particle_q[tid], particle_qd[tid], ground_height, margin + particle_radius[tid], ke[m], kd[m], kf[m], mu[m]
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
    body_f: wp.array(dtype=wp.vec3),
    body_t: wp.array(dtype=wp.vec3),
):
    tid = wp.tid()
    b = shape_vertex_body[tid]
    arm = wp.quat_rotate(body_r[b], shape_vertices[tid])
    position = body_q[b] + arm
    velocity = body_v[b] + wp.cross(body_w[b], arm)
    m = body_material[b]
    force = ground_contact_force(position, velocity, ground_height, margin, ke[m], kd[m], kf[m], mu[m])
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
                    model.particle_material, *materials, model.ground_height, model.contact_margin],
            outputs=[state.particle_f],
        )
    if model.shape_vertex_count:
        wp.launch(
            body_ground_contact_kernel, dim=model.shape_vertex_count, device=model.device,
            inputs=[state.body_q, state.body_r, state.body_v, state.body_w, model.shape_vertices,
                    model.shape_vertex_body, model.body_material, *materials, model.ground_height,
                    model.contact_margin],
            outputs=[state.body_f, state.body_t],
        )
