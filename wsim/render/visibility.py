"""Warp kernels of the hard visible-surface buffers: the CPU replacement of nvdiffrast's ``rasterize``.

A per-face depth pass (``atomic_min`` of NDC depth), a per-face id pass (the face whose depth equals
the minimum) and a per-pixel, differentiable pass that computes nvdiffrast's ``(u, v, z/w, id + 1)``
from the clip-space vertices of the winning face. Only the last is recorded on the tape. Buffer layout
and the shared edge functions: :mod:`wsim.render.kernels`.
"""

from __future__ import annotations

import warp as wp

from .kernels import edge, edge_canonical, pixel_xy
from .soft_ring import face_of

# ----------------------------------------------------------------------------- hard visible surface


def _make_raster_kernel(ID_PASS: int):
    def raster_kernel(
        clip: wp.array(dtype=wp.vec4),
        faces: wp.array(dtype=wp.vec3i),
        V: int,
        T: int,
        H: int,
        W: int,
        near: float,
        stripes: int,
        zbuf: wp.array(dtype=float),
        tribuf: wp.array(dtype=wp.int32),
    ):
        """Pass 1 (``ID_PASS == 0``): minimum NDC depth per pixel. Pass 2: id + 1 of the face at that depth
        (the largest id on exact ties, so the result does not depend on the thread order)."""
        tid, s = wp.tid()
        b, t, f, c0, c1, c2 = face_of(tid, T, V, faces, clip)
        if c0[3] < near or c1[3] < near or c2[3] < near:
            return
        p0 = pixel_xy(c0, W, H)
        p1 = pixel_xy(c1, W, H)
        p2 = pixel_xy(c2, W, H)
        area = edge(p0, p1, p2)
        if wp.abs(area) < 1.0e-12:
            return
        z0 = c0[2] / c0[3]
        z1 = c1[2] / c1[3]
        z2 = c2[2] / c2[3]
        xmin = wp.min(p0[0], wp.min(p1[0], p2[0]))
        xmax = wp.max(p0[0], wp.max(p1[0], p2[0]))
        ymin = wp.min(p0[1], wp.min(p1[1], p2[1]))
        ymax = wp.max(p0[1], wp.max(p1[1], p2[1]))
        j0 = wp.max(int(wp.ceil(xmin - 0.5)), 0)
        j1 = wp.min(int(wp.floor(xmax - 0.5)), W - 1)
        i0 = wp.max(int(wp.ceil(ymin - 0.5)), 0)
        i1 = wp.min(int(wp.floor(ymax - 0.5)), H - 1)
        inv_area = 1.0 / area
        for i in range(i0 + s, i1 + 1, stripes):
            for j in range(j0, j1 + 1):
                p = wp.vec2(float(j) + 0.5, float(i) + 0.5)
                l0 = edge_canonical(p1, p2, f[1], f[2], p) * inv_area
                l1 = edge_canonical(p2, p0, f[2], f[0], p) * inv_area
                l2 = edge_canonical(p0, p1, f[0], f[1], p) * inv_area
                if l0 >= 0.0 and l1 >= 0.0 and l2 >= 0.0:
                    z = l0 * z0 + l1 * z1 + l2 * z2
                    if z >= -1.0 and z <= 1.0:
                        idx = (b * H + i) * W + j
                        if wp.static(ID_PASS == 0):
                            wp.atomic_min(zbuf, idx, z)
                        else:
                            if z == zbuf[idx]:
                                wp.atomic_max(tribuf, idx, t + 1)

    return wp.kernel(raster_kernel, name=f"wsim_raster_pass{ID_PASS}", enable_backward=False)


# pass 1 (atomic_min of the depth) and pass 2 (id of the face at that depth) are separate kernels so
# that no kernel both reads and atomically updates one array (Warp's deterministic mode forbids it)
raster_depth_kernel = _make_raster_kernel(0)
raster_id_kernel = _make_raster_kernel(1)


@wp.kernel
def raster_bary_kernel(
    clip: wp.array(dtype=wp.vec4),
    faces: wp.array(dtype=wp.vec3i),
    tribuf: wp.array(dtype=wp.int32),
    V: int,
    H: int,
    W: int,
    rast: wp.array(dtype=wp.vec4),
):
    """Pass 3, differentiable: nvdiffrast's ``(u, v, z/w, id + 1)`` at every covered pixel centre;
    ``(u, v)`` are perspective-correct barycentrics of vertices 0 and 1 (vertex 2 gets ``1 - u - v``)."""
    idx = wp.tid()
    tri = tribuf[idx]
    if tri > 0:
        b = idx // (H * W)
        rem = idx - b * H * W
        i = rem // W
        j = rem - i * W
        f = faces[tri - 1]
        c0 = clip[b * V + f[0]]
        c1 = clip[b * V + f[1]]
        c2 = clip[b * V + f[2]]
        p0 = pixel_xy(c0, W, H)
        p1 = pixel_xy(c1, W, H)
        p2 = pixel_xy(c2, W, H)
        p = wp.vec2(float(j) + 0.5, float(i) + 0.5)
        inv_area = 1.0 / edge(p0, p1, p2)
        l0 = edge(p1, p2, p) * inv_area
        l1 = edge(p2, p0, p) * inv_area
        l2 = edge(p0, p1, p) * inv_area
        q0 = l0 / c0[3]
        q1 = l1 / c1[3]
        q2 = l2 / c2[3]
        qs = 1.0 / (q0 + q1 + q2)
        z = l0 * (c0[2] / c0[3]) + l1 * (c1[2] / c1[3]) + l2 * (c2[2] / c2[3])
        rast[idx] = wp.vec4(q0 * qs, q1 * qs, z, float(tri))


@wp.kernel
def interpolate_kernel(
    attrs: wp.array(dtype=float),
    rast: wp.array(dtype=wp.vec4),
    tribuf: wp.array(dtype=wp.int32),
    faces: wp.array(dtype=wp.vec3i),
    pixels: int,
    V: int,
    C: int,
    attr_frames: int,
    out: wp.array(dtype=float),
):
    """nvdiffrast's ``interpolate``: the ``C`` attributes ``[attr_frames, V, C]`` (one row of frames for
    all, or one per frame) of the visible face at pixel ``p`` blended with its barycentrics ``(u, v,
    1 - u - v)`` into ``out[p * C:(p + 1) * C]``; uncovered pixels keep their zeros."""
    p = wp.tid()
    t = tribuf[p]
    if t <= 0:
        return
    face = faces[t - 1]
    base = wp.min(p / pixels, attr_frames - 1) * V
    r = rast[p]
    u = r[0]
    v = r[1]
    w = 1.0 - u - v
    k0 = (base + face[0]) * C
    k1 = (base + face[1]) * C
    k2 = (base + face[2]) * C
    for c in range(C):
        out[p * C + c] = u * attrs[k0 + c] + v * attrs[k1 + c] + w * attrs[k2 + c]
