"""The ring search of the soft edge term (:mod:`wsim.render.kernels`): the nearest soft edge to a pixel
among a face's ring (see :class:`wsim.render.topology.Topology`), with the gate of its far entries, and
the screen-space edge geometry every render kernel shares.
"""

from __future__ import annotations

import warp as wp


@wp.func
def edge(a: wp.vec2, b: wp.vec2, p: wp.vec2):
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


@wp.func
def _seg_dist2(p: wp.vec2, a: wp.vec2, b: wp.vec2):
    """Squared distance from p to segment ab and the segment parameter of the nearest point."""
    ab = b - a
    den = wp.dot(ab, ab)
    s = float(0.0)
    if den > 0.0:
        s = wp.clamp(wp.dot(p - a, ab) / den, 0.0, 1.0)
    q = a + ab * s
    d = p - q
    return wp.dot(d, d), s


@wp.func
def _iso_xy(v: wp.vec4, sx: float, sy: float):
    """Isotropic NDC (NDC scaled so that a pixel has the same size along x and y) of a clip vertex."""
    inv = 1.0 / v[3]
    return wp.vec2(v[0] * inv * sx, v[1] * inv * sy)


# Warp's adjoint does not carry values assigned inside a dynamic loop out of it (they keep their
# pre-loop value in the reverse pass), so the two searches below live in functions of their own: a
# function call is replayed as a whole before its result is used.

# A gated ring entry (see GATED_RING_DEPTH in wsim.render.topology) counts only where the plane of one
# of its edge's faces is not behind the shaded face at the pixel by more than this fraction of the shaded
# face's inverse view depth. The faces of a silhouette edge on the visible outline (a curved mesh's
# contour zig-zag) pass: for a convex part the front face's plane lies in front of the surface
# everywhere, and a flat cap's rim is coplanar with the cap (the tolerance absorbs the rounding there).
# A contour hidden behind the shaded surface (a gear prism's back rim seen through its cap) lies behind.
# Measured on the gear prism of tests/test_render_raster.py: with the 3-ring ungated a pixel stepped by
# 0.062 for a 1e-5 motion (870 times the typical change), gated by 5.2e-4 (7 times).
GATE_TOL = 1.0e-2


@wp.func
def _ring_edge(code: int):
    """The edge of a ring entry: ``e`` for a plain entry, ``-(e + 1)`` for a gated one."""
    e = code
    if code < 0:
        e = -code - 1
    return e


@wp.func
def _plane_inv_depth(p: wp.vec2, b: int, g: int, faces: wp.array(dtype=wp.vec3i), clip: wp.array(dtype=wp.vec4),
                     V: int, sx: float, sy: float):
    """Inverse view depth ``1 / w`` at p of the plane of face g (affine in screen space, so extrapolated
    beyond the face by its barycentrics); -1e30 for a face edge-on to the eye or behind the near side."""
    fg = faces[g]
    c0 = clip[b * V + fg[0]]
    c1 = clip[b * V + fg[1]]
    c2 = clip[b * V + fg[2]]
    r = float(-1.0e30)
    if c0[3] > 0.0 and c1[3] > 0.0 and c2[3] > 0.0:
        a0 = _iso_xy(c0, sx, sy)
        a1 = _iso_xy(c1, sx, sy)
        a2 = _iso_xy(c2, sx, sy)
        area = edge(a0, a1, a2)
        if wp.abs(area) > 1.0e-12:
            r = (edge(a1, a2, p) / c0[3] + edge(a2, a0, p) / c1[3] + edge(a0, a1, p) / c2[3]) / area
    return r


@wp.func
def _not_hidden(p: wp.vec2, b: int, e: int, inv_depth: float, edge_faces: wp.array(dtype=wp.vec2i),
                faces: wp.array(dtype=wp.vec3i), clip: wp.array(dtype=wp.vec4), V: int, sx: float, sy: float):
    """Whether a gated edge e may bound the coverage at p of a face whose inverse depth there is
    ``inv_depth``: the plane of one of e's faces is not behind it by more than GATE_TOL (relative)."""
    ef = edge_faces[e]
    nearest = float(-1.0e30)
    if ef[0] >= 0:
        nearest = wp.max(nearest, _plane_inv_depth(p, b, ef[0], faces, clip, V, sx, sy))
    if ef[1] >= 0:
        nearest = wp.max(nearest, _plane_inv_depth(p, b, ef[1], faces, clip, V, sx, sy))
    return nearest >= inv_depth * (1.0 - GATE_TOL)


@wp.func
def _nearest_soft_edge(p: wp.vec2, b: int, inv_depth: float, clip: wp.array(dtype=wp.vec4),
                       faces: wp.array(dtype=wp.vec3i), edge_verts: wp.array(dtype=wp.vec2i),
                       edge_faces: wp.array(dtype=wp.vec2i), edge_apex: wp.array(dtype=wp.int32),
                       near_edges: wp.array(dtype=wp.int32), first: int, count: int, V: int, sx: float, sy: float):
    """The nearest soft edge of a face's ring that has p on its inner side (the side of its faces):
    an edge with p beyond it bounds another part of the surface (a fan's far rim, a nearer tooth of a
    gear), and where p is covered all the same a nearer boundary separates p from it. The side counts
    only where the point of the edge nearest to p is inside the segment: where it is an end, the
    distance is to a corner of the outline, which bounds p from every side (inside a reflex corner of
    the outline p lies beyond both edges' lines; skipping both there stepped alpha by 0.35 on a cross
    prism at 24 px, and the loss with it). A gated entry
    counts only where it is not hidden (``_not_hidden``; ``inv_depth``: the face's 1 / w at p). The
    candidates are the ``count`` entries from ``first`` on of ``near_edges`` (``ring_reach_kernel``)."""
    best = int(-1)
    bestd = float(1.0e30)
    for k in range(first, first + count):
        code = near_edges[k]
        e = _ring_edge(code)
        ev = edge_verts[e]
        a0 = _iso_xy(clip[b * V + ev[0]], sx, sy)
        a1 = _iso_xy(clip[b * V + ev[1]], sx, sy)
        dk, sk = _seg_dist2(p, a0, a1)
        inner = True
        apex = edge_apex[e]
        if apex >= 0 and sk > 0.0 and sk < 1.0:
            inner = edge(a0, a1, p) * edge(a0, a1, _iso_xy(clip[b * V + apex], sx, sy)) >= 0.0
        if inner:
            if dk < bestd:
                # the gate last: it costs two plane evaluations, and only a nearer edge needs it
                if code >= 0 or _not_hidden(p, b, e, inv_depth, edge_faces, faces, clip, V, sx, sy):
                    bestd = dk
                    best = e
    return best


@wp.kernel
def ring_reach_kernel(clip: wp.array(dtype=wp.vec4), faces: wp.array(dtype=wp.vec3i), face_on: wp.array(dtype=wp.int32),
                      edge_verts: wp.array(dtype=wp.vec2i), edge_soft: wp.array(dtype=wp.int32),
                      ring_start: wp.array(dtype=wp.int32), ring_edges: wp.array(dtype=wp.int32), V: int, T: int,
                      E: int, sx: float, sy: float, reach: float, near: float, ring_near: wp.array(dtype=wp.int32),
                      near_edges: wp.array(dtype=wp.int32)):
    """Per frame b and face t, the entries of the face's ring that may bound its coverage, in ring order:
    soft edges whose screen box meets the face's box grown by ``reach`` (where ``delta d^2 / sigma``
    reaches its cap ``BIG``). An edge farther than that from every point of the face gives ``x = BIG``
    wherever it is nearest, exactly as no soft edge does, so leaving it out changes nothing, and a face
    with none skips the search (most faces of the 3-ring, whose entries are mostly inner edges anyway).
    An edge with a vertex behind the eye, whose screen box means nothing, is always kept. Their count
    goes to ``ring_near[b * T + t]``, the entries to ``near_edges`` from ``b * R + ring_start[t]`` on
    (``R``: the ring buffer's length); done once, not in every pass of the soft term and its adjoint."""
    tid = wp.tid()
    b = tid // T
    t = tid - b * T
    f = faces[t]
    c0 = clip[b * V + f[0]]
    c1 = clip[b * V + f[1]]
    c2 = clip[b * V + f[2]]
    first = b * ring_start[T] + ring_start[t]
    n = int(0)
    if face_on[tid] != 0 and c0[3] >= near and c1[3] >= near and c2[3] >= near:
        a0 = _iso_xy(c0, sx, sy)
        a1 = _iso_xy(c1, sx, sy)
        a2 = _iso_xy(c2, sx, sy)
        lo = wp.vec2(wp.min(a0[0], wp.min(a1[0], a2[0])) - reach, wp.min(a0[1], wp.min(a1[1], a2[1])) - reach)
        hi = wp.vec2(wp.max(a0[0], wp.max(a1[0], a2[0])) + reach, wp.max(a0[1], wp.max(a1[1], a2[1])) + reach)
        for k in range(ring_start[t], ring_start[t + 1]):
            code = ring_edges[k]
            e = _ring_edge(code)
            if edge_soft[b * E + e] != 0:
                ev = edge_verts[e]
                e0 = clip[b * V + ev[0]]
                e1 = clip[b * V + ev[1]]
                keep = True
                if e0[3] > 0.0 and e1[3] > 0.0:
                    q0 = _iso_xy(e0, sx, sy)
                    q1 = _iso_xy(e1, sx, sy)
                    keep = (wp.max(q0[0], q1[0]) >= lo[0] and wp.min(q0[0], q1[0]) <= hi[0]
                            and wp.max(q0[1], q1[1]) >= lo[1] and wp.min(q0[1], q1[1]) <= hi[1])
                if keep:
                    near_edges[first + n] = code
                    n = n + 1
    ring_near[tid] = n
