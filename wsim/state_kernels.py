"""The kernels that set a rollout's initial State, copy saved States and write the vertex buffer of a
frame (launched by :class:`wsim.simulation.Simulation`, recorded on its tape or captured graph)."""

from __future__ import annotations

import warp as wp


@wp.kernel
def copy_vec3(source: wp.array(dtype=wp.vec3), target: wp.array(dtype=wp.vec3)):
    i = wp.tid()
    target[i] = source[i]


@wp.kernel
def copy_quat(source: wp.array(dtype=wp.quat), target: wp.array(dtype=wp.quat)):
    i = wp.tid()
    target[i] = source[i]


# typed, not one generic kernel: a captured graph (wsim.bridge.GraphedProgram) replayed the quaternion
# copy of a generic kernel wrongly on the CPU (Warp 1.19)
COPY = {wp.vec3: copy_vec3, wp.quat: copy_quat}


@wp.kernel
def initial_angular_momentum(
    body_r: wp.array(dtype=wp.quat),
    body_inertia: wp.array(dtype=wp.mat33),
    body_w: wp.array(dtype=wp.vec3),
    body_l: wp.array(dtype=wp.vec3),
):
    b = wp.tid()
    rotation = wp.quat_to_matrix(body_r[b])
    body_l[b] = rotation * (body_inertia[b] * (wp.transpose(rotation) * body_w[b]))


@wp.kernel
def body_vertices_to_world(
    body_q: wp.array(dtype=wp.vec3),
    body_r: wp.array(dtype=wp.quat),
    shape_vertices: wp.array(dtype=wp.vec3),
    shape_vertex_body: wp.array(dtype=wp.int32),
    out: wp.array(dtype=wp.vec3),
):
    i = wp.tid()
    b = shape_vertex_body[i]
    out[i] = body_q[b] + wp.quat_rotate(body_r[b], shape_vertices[i])


@wp.kernel
def particles_to_vertices(particle_q: wp.array(dtype=wp.vec3), offset: int, out: wp.array(dtype=wp.vec3)):
    i = wp.tid()
    out[offset + i] = particle_q[i]
