"""The ring search of the soft edge term (:mod:`wsim.render.kernels`): the nearest soft edge to a pixel
among a face's ring (see :class:`wsim.render.topology.Topology`), with the gate of its far entries, the
pixel boxes of the faces (and their sizes, the room for the search's results: the soft kernel searches
once per face and box pixel and its later pass reads the result back), and the screen-space edge
geometry every render kernel shares.
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


@wp.func
def face_of(tid: int, T: int, V: int, faces: wp.array(dtype=wp.vec3i), clip: wp.array(dtype=wp.vec4)):
    """Frame b, face t, its vertex indices and clip-space vertices for thread ``tid = b * T + t`` of a
    per-face kernel."""
    b = tid // T
    t = tid - b * T
    f = faces[t]
    return b, t, f, clip[b * V + f[0]], clip[b * V + f[1]], clip[b * V + f[2]]


@wp.func
def pixel_box(a0: wp.vec2, a1: wp.vec2, a2: wp.vec2, r: float, sx: float, sy: float, W: int, H: int):
    """Rows ``i0..i1`` and columns ``j0..j1`` of the pixel centres in a face's screen box (isotropic NDC
    ``a0, a1, a2``) grown by ``r``; empty (``i1 < i0`` or ``j1 < j0``) off screen."""
    xmin = wp.min(a0[0], wp.min(a1[0], a2[0])) - r
    xmax = wp.max(a0[0], wp.max(a1[0], a2[0])) + r
    ymin = wp.min(a0[1], wp.min(a1[1], a2[1])) - r
    ymax = wp.max(a0[1], wp.max(a1[1], a2[1])) + r
    # isotropic NDC -> continuous pixel coordinates: u = (x / sx + 1) W / 2, v = (1 - y / sy) H / 2
    j0 = wp.max(int(wp.ceil((xmin / sx + 1.0) * 0.5 * float(W) - 0.5)), 0)
    j1 = wp.min(int(wp.floor((xmax / sx + 1.0) * 0.5 * float(W) - 0.5)), W - 1)
    i0 = wp.max(int(wp.ceil((1.0 - ymax / sy) * 0.5 * float(H) - 0.5)), 0)
    i1 = wp.min(int(wp.floor((1.0 - ymin / sy) * 0.5 * float(H) - 0.5)), H - 1)
    return i0, i1, j0, j1


@wp.func
def face_box(c0: wp.vec4, c1: wp.vec4, c2: wp.vec4, on: int, soft_count: int, near: float, sx: float, sy: float,
             cutoff2: float, W: int, H: int):
    """A face's screen vertices (isotropic NDC), signed area and the pixel box the soft term visits for it:
    the face's box grown by the sigmoid's reach ``sqrt(cutoff2)`` where it has a soft edge; an empty box
    (``i1 < i0``) for a face that is off, crosses the near plane or is degenerate. One function for the
    soft kernel and ``soft_box_kernel``, whose box sizes place the kernel's ring codes: they must agree."""
    a0 = wp.vec2()
    a1 = wp.vec2()
    a2 = wp.vec2()
    area = float(0.0)
    i0 = int(0)
    i1 = int(-1)
    j0 = int(0)
    j1 = int(-1)
    if on != 0 and c0[3] >= near and c1[3] >= near and c2[3] >= near:
        a0 = _iso_xy(c0, sx, sy)
        a1 = _iso_xy(c1, sx, sy)
        a2 = _iso_xy(c2, sx, sy)
        area = edge(a0, a1, a2)
        if wp.abs(area) > 1.0e-12:
            r = float(0.0)
            if soft_count > 0:
                r = wp.sqrt(cutoff2)
            i0, i1, j0, j1 = pixel_box(a0, a1, a2, r, sx, sy, W, H)
    return a0, a1, a2, area, i0, i1, j0, j1


@wp.kernel
def soft_box_kernel(clip: wp.array(dtype=wp.vec4), faces: wp.array(dtype=wp.vec3i),
                    face_edges: wp.array(dtype=wp.vec3i), edge_soft: wp.array(dtype=wp.int32), E: int,
                    face_on: wp.array(dtype=wp.int32), V: int, T: int, H: int, W: int, sx: float, sy: float,
                    cutoff2: float, near: float, box_area: wp.array(dtype=wp.int32)):
    """Per frame b and face t, the pixel count of the box the soft kernel visits for the face
    (:func:`face_box`; 0 for a face it skips): the room of the face's ring codes."""
    tid = wp.tid()
    b, t, f, c0, c1, c2 = face_of(tid, T, V, faces, clip)
    fe = face_edges[t]
    soft_count = edge_soft[b * E + fe[0]] + edge_soft[b * E + fe[1]] + edge_soft[b * E + fe[2]]
    a0, a1, a2, area, i0, i1, j0, j1 = face_box(c0, c1, c2, face_on[tid], soft_count, near, sx, sy, cutoff2, W, H)
    box_area[tid] = wp.max(i1 - i0 + 1, 0) * wp.max(j1 - j0 + 1, 0)


# Warp's adjoint does not carry values assigned inside a dynamic loop out of it (they keep their
# pre-loop value in the reverse pass), so the two searches below live in functions of their own: a
# function call is replayed as a whole before its result is used.

# A gated ring entry (see GATED_RING_DEPTH in wsim.render.topology) counts fully only where (1) the plane
# of one of its edge's faces is not behind the shaded face at the pixel by more than this fraction of the
# shaded face's inverse view depth, and (2) the edge itself is not in front of the shaded face's plane by
# more than that fraction. (1): the faces of a silhouette edge on the visible outline (a curved mesh's
# contour zig-zag) pass, since for a convex part the front face's plane lies in front of the surface
# everywhere, and a flat cap's rim is coplanar with the cap (the tolerance absorbs the rounding there);
# a contour hidden behind the shaded surface (a gear prism's back rim seen through its cap) lies behind.
# Measured on the gear prism of tests/test_render_raster.py: with the 3-ring ungated a pixel stepped by
# 0.062 for a 1e-5 motion (870 times the typical change), gated by 5.2e-4 (7 times). (2): an edge in front
# of the shaded face bounds a part that occludes it (a nearer tooth over a farther face), not the face;
# counted, it cut the farther face's coverage to 1/2 under the nearer part, and the pixel stepped when its
# centre crossed the edge and the side test took over (0.10 on the gear prism).
# Neither is a switch: beyond the tolerance the entry's x = d^2 / sigma gains a penalty that rises as a
# smoothstep to GATE_TOP (past the cap BIG) at twice the tolerance (``_gate``), so that an entry fades out of the
# nearest-edge minimum instead of leaving it. As switches they stepped a pixel wherever the depth gap of the
# nearest entry crossed the tolerance (by up to 0.42 on the gear prism at 24 px, in 4 of 24 random views).
GATE_TOL = 1.0e-2
NO_EDGE = 1 << 30  # no ring entry (entries are edge indices e, gated ones -(e + 1))
# Cap of |delta d^2 / sigma|. In float32 sigmoid(20) == 1 and 1 - exp(-20) == 1, so beyond the cap
# neither the union's coverage nor SoftRas' 1 - exp(-sum) changes: capping there gives the images of
# any higher cap (checked bit for bit against 60), and the ring search reaches sqrt(20 sigma) instead
# of sqrt(60 sigma), which leaves most faces of a small render with no ring edge to test.
BIG = 20.0
GATE_TOP = 60.0  # the gate's penalty at full strength (see _ramp); it shapes x below the cap


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
def _hidden_gap(p: wp.vec2, b: int, e: int, inv_depth: float, edge_faces: wp.array(dtype=wp.vec2i),
                faces: wp.array(dtype=wp.vec3i), clip: wp.array(dtype=wp.vec4), V: int, sx: float, sy: float):
    """How far (relative inverse depth) the nearer plane of edge e's faces lies behind, at p, a face whose
    inverse depth there is ``inv_depth``; 0 where it lies in front."""
    ef = edge_faces[e]
    nearest = float(-1.0e30)
    if ef[0] >= 0:
        nearest = wp.max(nearest, _plane_inv_depth(p, b, ef[0], faces, clip, V, sx, sy))
    if ef[1] >= 0:
        nearest = wp.max(nearest, _plane_inv_depth(p, b, ef[1], faces, clip, V, sx, sy))
    return wp.max(1.0 - nearest / inv_depth, 0.0)


@wp.func
def _front_gap(q: wp.vec2, s: float, b: int, t: int, e: int, edge_verts: wp.array(dtype=wp.vec2i),
               faces: wp.array(dtype=wp.vec3i), clip: wp.array(dtype=wp.vec4), V: int, sx: float, sy: float):
    """How far (relative inverse depth) the point q of edge e (segment parameter s) lies in front of the
    plane of face t there (1 where that plane is edge-on or behind the eye)."""
    ev = edge_verts[e]
    inv_q = (1.0 - s) / clip[b * V + ev[0]][3] + s / clip[b * V + ev[1]][3]
    plane = _plane_inv_depth(q, b, t, faces, clip, V, sx, sy)
    gap = float(1.0)
    if plane > 0.0:
        gap = wp.max(inv_q / plane - 1.0, 0.0)
    return gap


@wp.func
def _ramp(gap: float):
    """0 up to GATE_TOL, a smoothstep to GATE_TOP at 2 GATE_TOL."""
    u = wp.clamp((gap - GATE_TOL) / GATE_TOL, 0.0, 1.0)
    return GATE_TOP * u * u * (3.0 - 2.0 * u)


@wp.func
def _gate(p: wp.vec2, q: wp.vec2, s: float, b: int, t: int, e: int, inv_depth: float,
          edge_verts: wp.array(dtype=wp.vec2i), edge_faces: wp.array(dtype=wp.vec2i), faces: wp.array(dtype=wp.vec3i),
          clip: wp.array(dtype=wp.vec4), V: int, sx: float, sy: float):
    """The penalty added to ``x`` of gated entry e (nearest point q at segment parameter s) for face t at
    p, whose inverse depth there is ``inv_depth``: see the comment on GATE_TOL."""
    return (_ramp(_hidden_gap(p, b, e, inv_depth, edge_faces, faces, clip, V, sx, sy))
            + _ramp(_front_gap(q, s, b, t, e, edge_verts, faces, clip, V, sx, sy)))


@wp.func
def _nearest_soft_edge(p: wp.vec2, b: int, t: int, inv_depth: float, clip: wp.array(dtype=wp.vec4),
                       faces: wp.array(dtype=wp.vec3i), edge_verts: wp.array(dtype=wp.vec2i),
                       edge_faces: wp.array(dtype=wp.vec2i), edge_apex: wp.array(dtype=wp.int32),
                       near_edges: wp.array(dtype=wp.int32), first: int, count: int, V: int, sx: float, sy: float,
                       inv_sigma: float):
    """The nearest soft edge of a face's ring that has p on its inner side (the side of its faces):
    an edge with p beyond it bounds another part of the surface (a fan's far rim, a nearer tooth of a
    gear), and where p is covered all the same a nearer boundary separates p from it. The side counts
    only where the point of the edge nearest to p is inside the segment: where it is an end, the
    distance is to a corner of the outline, which bounds p from every side (inside a reflex corner of
    the outline p lies beyond both edges' lines; skipping both there stepped alpha by 0.35 on a cross
    prism at 24 px, and the loss with it). "Nearest" is by ``x = d^2 / sigma`` plus, for a gated
    entry, the penalty of ``_gate`` (``t``: the face, ``inv_depth``: its 1 / w at p). The candidates
    are the ``count`` entries from ``first`` on of ``near_edges`` (``ring_reach_kernel``). Returns the
    ring code of the nearest entry (see ``_ring_edge``), NO_EDGE where none has ``x`` below BIG."""
    best = int(NO_EDGE)
    bestx = float(BIG)
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
        xk = dk * inv_sigma
        if inner and xk < bestx:
            # the gates last: they cost plane evaluations, and only a nearer edge needs them
            if code < 0:
                xk = xk + _gate(p, a0 + (a1 - a0) * sk, sk, b, t, e, inv_depth, edge_verts, edge_faces, faces, clip,
                                V, sx, sy)
            if xk < bestx:
                bestx = xk
                best = code
    return best


@wp.func_grad(_nearest_soft_edge)
def _nearest_soft_edge_grad(p: wp.vec2, b: int, t: int, inv_depth: float, clip: wp.array(dtype=wp.vec4),
                            faces: wp.array(dtype=wp.vec3i), edge_verts: wp.array(dtype=wp.vec2i),
                            edge_faces: wp.array(dtype=wp.vec2i), edge_apex: wp.array(dtype=wp.int32),
                            near_edges: wp.array(dtype=wp.int32), first: int, count: int, V: int, sx: float,
                            sy: float, inv_sigma: float, adj_ret: int):
    """The search returns a ring entry, an integer: nothing to differentiate, and without this Warp's
    adjoint would run its loop backwards for nothing (most of the soft term's adjoint time)."""
    pass


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
    b, t, f, c0, c1, c2 = face_of(tid, T, V, faces, clip)
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
