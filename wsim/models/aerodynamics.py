"""Lift and drag of the surrounding (still) air on each cloth triangle (paper Appendix A.1).

For a triangle with mean vertex velocity ``v_m`` (m/s), unit normal ``n`` and current area ``A`` (m^2)::

    drag = k_drag * A * |n . v_m| * v_m
    lift = k_lift * A * (pi/2 - acos(n . v_m / |v_m|)) * |v_m|^2 * n

and the air pushes the triangle with ``-(drag + lift)``, shared equally by its three vertices (so the
total aerodynamic force on a triangle is ``-(drag + lift)``). The lift term does not depend on the
orientation of ``n`` (both factors flip). ``pi/2 - acos(c)`` is evaluated as ``asin(c)`` with ``c``
clamped to ``|c| <= 1 - 1e-6`` so that its derivative stays finite; a triangle at rest feels no force.

Parameters per triangle (shape [tri_count], scalars broadcast): ``drag_coefficient`` k_drag and
``lift_coefficient`` k_lift, both in kg/m^3 (an air density times a dimensionless shape factor;
air is about 1.2 kg/m^3).
"""

from __future__ import annotations

import warp as wp

from ..parameters import ParameterSpec, declare

PARAMETER_SPECS = declare(
    ParameterSpec("drag_coefficient", wp.float32, "tri", "air drag coefficient k_drag of each triangle", "kg/m^3",
                  0.0, None, True),
    ParameterSpec("lift_coefficient", wp.float32, "tri", "air lift coefficient k_lift of each triangle", "kg/m^3",
                  0.0, None, True),
)


@wp.kernel
def aerodynamic_forces_kernel(
    particle_q: wp.array(dtype=wp.vec3),
    particle_qd: wp.array(dtype=wp.vec3),
    tri_indices: wp.array2d(dtype=wp.int32),
    drag_coefficient: wp.array(dtype=float),
    lift_coefficient: wp.array(dtype=float),
    particle_f: wp.array(dtype=wp.vec3),
):
    """Lift + drag on each triangle [T], one third to each vertex, into ``particle_f`` [P] (N)."""
    t = wp.tid()
    i = tri_indices[t, 0]
    j = tri_indices[t, 1]
    k = tri_indices[t, 2]
    x0 = particle_q[i]
    normal = wp.cross(particle_q[j] - x0, particle_q[k] - x0)
    twice_area = wp.length(normal)
    v = (particle_qd[i] + particle_qd[j] + particle_qd[k]) * (1.0 / 3.0)
    speed_sq = wp.dot(v, v)
    if twice_area < 1.0e-20 or speed_sq < 1.0e-16:
        return
    n = normal / twice_area
    area = 0.5 * twice_area
    normal_speed = wp.dot(n, v)
    c = wp.clamp(normal_speed / wp.sqrt(speed_sq), -0.999999, 0.999999)
    drag = v * (drag_coefficient[t] * area * wp.abs(normal_speed))
    lift = n * (lift_coefficient[t] * area * wp.asin(c) * speed_sq)
    share = (drag + lift) * (-1.0 / 3.0)
    wp.atomic_add(particle_f, i, share)
    wp.atomic_add(particle_f, j, share)
    wp.atomic_add(particle_f, k, share)


def apply_forces(model, state, params, step: int, interval: int) -> None:
    """Accumulate the aerodynamic forces of every cloth triangle into ``state.particle_f``."""
    if not model.tri_count:
        return
    wp.launch(
        aerodynamic_forces_kernel, dim=model.tri_count, device=model.device,
        inputs=[state.particle_q, state.particle_qd, model.tri_indices, params["drag_coefficient"],
                params["lift_coefficient"]],
        outputs=[state.particle_f],
    )
