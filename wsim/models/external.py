"""Known external forces: a push (impulse) on a body or on particles over a time window, and
per-interval control forces.

A push delivers the linear impulse ``J`` (N s, world frame) to body b over the physics steps
``[body_push_start_step, body_push_end_step)`` as the constant force ``J / (steps * dt)`` applied at
``body_push_point`` (body frame, relative to the centre of mass), so it also delivers the angular
impulse ``r x J``. The paper's rigid experiments push the object with such a known impulse. A particle
push delivers its share of an impulse to each selected particle the same way (``particle_push_force``
over ``[particle_push_start_step, particle_push_end_step)``); for a deformable it is the known force
that tells mass apart from stiffness (without one, scaling every mass and Lame parameter together
leaves the motion under gravity unchanged).
Control forces (``control_particle_force``, ``control_body_force``, ``control_body_torque``: world
frame, one row per frame interval) are applied on every physics step of their interval.
"""

from __future__ import annotations

import warp as wp

from ..parameters import ParameterSpec, declare

PARAMETER_SPECS = declare(
    ParameterSpec("body_push_force", wp.vec3, "body", "force of the push over its window", "N"),
    ParameterSpec("particle_push_force", wp.vec3, "particle", "force of the push over its window", "N"),
    ParameterSpec("control_particle_force", wp.vec3, "interval_particle", "external force per interval", "N"),
    ParameterSpec("control_body_force", wp.vec3, "interval_body", "external force per interval", "N"),
    ParameterSpec("control_body_torque", wp.vec3, "interval_body", "external torque per interval", "N m"),
)


@wp.kernel
def body_push_kernel(
    body_r: wp.array(dtype=wp.quat),
    push_force: wp.array(dtype=wp.vec3),
    push_point: wp.array(dtype=wp.vec3),
    push_start: wp.array(dtype=wp.int32),
    push_end: wp.array(dtype=wp.int32),
    step: int,
    body_f: wp.array(dtype=wp.vec3),
    body_t: wp.array(dtype=wp.vec3),
):
    b = wp.tid()
    if step < push_start[b] or step >= push_end[b]:
        return
    force = push_force[b]
    wp.atomic_add(body_f, b, force)
    wp.atomic_add(body_t, b, wp.cross(wp.quat_rotate(body_r[b], push_point[b]), force))


@wp.kernel
def particle_push_kernel(
    push_force: wp.array(dtype=wp.vec3),
    push_start: wp.array(dtype=wp.int32),
    push_end: wp.array(dtype=wp.int32),
    step: int,
    particle_f: wp.array(dtype=wp.vec3),
):
    i = wp.tid()
    if step >= push_start[i] and step < push_end[i]:
        wp.atomic_add(particle_f, i, push_force[i])


@wp.kernel
def interval_force_kernel(
    forces: wp.array2d(dtype=wp.vec3), interval: int, accumulator: wp.array(dtype=wp.vec3)
):
    i = wp.tid()
    wp.atomic_add(accumulator, i, forces[interval, i])


def push_window(start, end) -> tuple[int, int]:
    """The physics steps ``[first, last)`` in which any of the push windows ``[start, end)`` (numpy int
    arrays) is open; ``(0, 0)`` when none is."""
    opened = end > start
    if not opened.any():
        return (0, 0)
    return int(start[opened].min()), int(end[opened].max())


def _open(window, step: int) -> bool:
    return window is None or window[0] <= step < window[1]


def apply_forces(model, state, params, step: int, interval: int) -> None:
    # a push kernel outside every push window adds nothing, forward or backward: it is not launched
    if model.body_count and _open(model.body_push_window, step):
        wp.launch(
            body_push_kernel, dim=model.body_count, device=model.device,
            inputs=[state.body_r, params["body_push_force"], model.body_push_point, model.body_push_start_step,
                    model.body_push_end_step, step],
            outputs=[state.body_f, state.body_t],
        )
    if model.particle_push_start_step is not None and _open(model.particle_push_window, step):
        wp.launch(
            particle_push_kernel, dim=model.particle_count, device=model.device,
            inputs=[params["particle_push_force"], model.particle_push_start_step, model.particle_push_end_step,
                    step],
            outputs=[state.particle_f],
        )
    for name, target, count in (
        ("control_particle_force", state.particle_f, model.particle_count),
        ("control_body_force", state.body_f, model.body_count),
        ("control_body_torque", state.body_t, model.body_count),
    ):
        if name in params and count:
            wp.launch(interval_force_kernel, dim=count, device=model.device, inputs=[params[name], interval],
                      outputs=[target])
