"""Damped springs between particle pairs (mass-spring systems, anchors).

Force on particle i of spring (i, j), with d = x_j - x_i, l = |d|, u = d / l:
``f_i = (k (l - l0) + c (v_j - v_i) . u) u`` and ``f_j = -f_i`` (Hooke's law with dashpot damping).
"""

from __future__ import annotations

import warp as wp

from ..parameters import ParameterSpec, declare

PARAMETER_SPECS = declare(
    ParameterSpec("spring_stiffness", wp.float32, "spring", "spring stiffness k", "N/m", 0.0, None, True),
    ParameterSpec("spring_damping", wp.float32, "spring", "spring damping c", "N s/m", 0.0, None, True),
    ParameterSpec("spring_rest_length", wp.float32, "spring", "spring rest length l0", "m", 0.0, None, True),
)


@wp.kernel
def spring_kernel(
    particle_q: wp.array(dtype=wp.vec3),
    particle_qd: wp.array(dtype=wp.vec3),
    spring_indices: wp.array2d(dtype=wp.int32),
    stiffness: wp.array(dtype=float),
    damping: wp.array(dtype=float),
    rest_length: wp.array(dtype=float),
    particle_f: wp.array(dtype=wp.vec3),
):
    tid = wp.tid()
    i = spring_indices[tid, 0]
    j = spring_indices[tid, 1]
    delta = particle_q[j] - particle_q[i]
    length = wp.length(delta)
    direction = delta / wp.max(length, 1.0e-9)
    relative_speed = wp.dot(particle_qd[j] - particle_qd[i], direction)
    force = direction * (stiffness[tid] * (length - rest_length[tid]) + damping[tid] * relative_speed)
    wp.atomic_add(particle_f, i, force)
    wp.atomic_sub(particle_f, j, force)


def apply_forces(model, state, params, step: int, interval: int) -> None:
    if model.spring_count:
        wp.launch(
            spring_kernel, dim=model.spring_count, device=model.device,
            inputs=[state.particle_q, state.particle_qd, model.spring_indices, params["spring_stiffness"],
                    params["spring_damping"], params["spring_rest_length"]],
            outputs=[state.particle_f],
        )
