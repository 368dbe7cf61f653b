"""Warp kernels of the renderer's soft edge term, and the edge functions every render kernel shares
(with :mod:`wsim.render.soft_ring`, which holds the search of a face's ring for its nearest soft edge).

Buffers are flat: pixel ``(b, i, j)`` of a ``[B, H, W]`` image is element ``(b * H + i) * W + j``; row 0
is the top row. Vertices of frame ``b`` are ``clip[b * V + k]`` (clip-space ``vec4``), faces are shared by
every frame. Triangles with a vertex closer than the near plane are culled (no near-plane clipping).

The soft edge term (used by both backends) is a per-face loop over the face's screen box grown by the
sigmoid footprint, accumulating ``softplus(delta d^2 / sigma)`` (so that ``1 - exp(-sum)`` is SoftRas'
``1 - prod(1 - D)``, computed stably), and the depth-weighted soft blend of the attributes of the faces
nearer than the visible surface. It is differentiated by Warp's autodiff (dynamic loops with atomic
accumulation into the pixel buffers are replayed in the adjoint). The hard visible-surface kernels are
in :mod:`wsim.render.visibility`.

Per-face kernels split each face's rows over ``stripes`` threads (1 on the CPU, more on CUDA so that a
large face, a ground plane, is not drawn by one GPU thread).
"""

from __future__ import annotations

import warp as wp

from .soft_ring import (BIG, NO_EDGE, _gate, _iso_xy, _nearest_soft_edge, _ring_edge, _seg_dist2, edge, face_box,
                        face_of)


@wp.func
def edge_canonical(a: wp.vec2, b: wp.vec2, ia: int, ib: int, p: wp.vec2):
    """Edge function evaluated in a canonical vertex order, so that the two faces sharing an edge get
    exactly opposite values (watertight: no pixel centre falls through a shared edge by rounding)."""
    r = float(0.0)
    if ia < ib:
        r = edge(a, b, p)
    else:
        r = -edge(b, a, p)
    return r


@wp.func
def pixel_xy(v: wp.vec4, W: int, H: int):
    """Continuous pixel coordinates (u right, v down) of a clip-space vertex."""
    inv = 1.0 / v[3]
    return wp.vec2((v[0] * inv + 1.0) * 0.5 * float(W), (1.0 - v[1] * inv) * 0.5 * float(H))


# ----------------------------------------------------------------------------- soft edge term


@wp.func
def _softplus(x: float):
    return wp.max(x, 0.0) + wp.log(1.0 + wp.exp(-wp.abs(x)))


@wp.func
def _sigmoid(x: float):
    e = wp.exp(-wp.abs(x))
    r = 1.0 / (1.0 + e)
    if x < 0.0:
        r = e / (1.0 + e)
    return r


@wp.func
def _inv_depth(l0: float, l1: float, l2: float, b: int, f: wp.vec3i, clip: wp.array(dtype=wp.vec4), V: int):
    """Face f's inverse view depth at the point of screen barycentrics (l0, l1, l2)."""
    return l0 / clip[b * V + f[0]][3] + l1 / clip[b * V + f[1]][3] + l2 / clip[b * V + f[2]][3]


@wp.func
def _soft_code(p: wp.vec2, b: int, t: int, a0: wp.vec2, a1: wp.vec2, a2: wp.vec2, f: wp.vec3i, inv_area: float,
               clip: wp.array(dtype=wp.vec4), faces: wp.array(dtype=wp.vec3i), edge_verts: wp.array(dtype=wp.vec2i),
               edge_faces: wp.array(dtype=wp.vec2i), edge_apex: wp.array(dtype=wp.int32),
               ring_start: wp.array(dtype=wp.int32), near_edges: wp.array(dtype=wp.int32), ring_soft: int, V: int,
               sx: float, sy: float, inv_sigma: float):
    """The ring code of the soft edge that bounds face t's coverage at p when p is inside the face
    (:func:`_nearest_soft_edge` over the face's ``ring_soft`` entries within reach), else NO_EDGE. An
    integer, not differentiated: kept apart from :func:`_soft_x` so that the adjoint, which replays a
    function's forward before its reverse, does not search the ring again."""
    code = int(NO_EDGE)
    if ring_soft > 0:
        l0 = edge_canonical(a1, a2, f[1], f[2], p) * inv_area
        l1 = edge_canonical(a2, a0, f[2], f[0], p) * inv_area
        l2 = edge_canonical(a0, a1, f[0], f[1], p) * inv_area
        if l0 >= 0.0 and l1 >= 0.0 and l2 >= 0.0:
            code = _nearest_soft_edge(p, b, t, _inv_depth(l0, l1, l2, b, f, clip, V), clip, faces, edge_verts,
                                      edge_faces, edge_apex, near_edges,
                                      b * ring_start[ring_start.shape[0] - 1] + ring_start[t], ring_soft, V, sx, sy,
                                      inv_sigma)
    return code


@wp.func_grad(_soft_code)
def _soft_code_grad(p: wp.vec2, b: int, t: int, a0: wp.vec2, a1: wp.vec2, a2: wp.vec2, f: wp.vec3i, inv_area: float,
                    clip: wp.array(dtype=wp.vec4), faces: wp.array(dtype=wp.vec3i),
                    edge_verts: wp.array(dtype=wp.vec2i), edge_faces: wp.array(dtype=wp.vec2i),
                    edge_apex: wp.array(dtype=wp.int32), ring_start: wp.array(dtype=wp.int32),
                    near_edges: wp.array(dtype=wp.int32), ring_soft: int, V: int, sx: float, sy: float,
                    inv_sigma: float, adj_ret: int):
    pass


@wp.func
def _soft_x(
    code: int,
    p: wp.vec2,
    b: int,
    t: int,
    a0: wp.vec2,
    a1: wp.vec2,
    a2: wp.vec2,
    f: wp.vec3i,
    inv_area: float,
    clip: wp.array(dtype=wp.vec4),
    faces: wp.array(dtype=wp.vec3i),
    edge_verts: wp.array(dtype=wp.vec2i),
    edge_faces: wp.array(dtype=wp.vec2i),
    soft0: int,
    soft1: int,
    soft2: int,
    V: int,
    sx: float,
    sy: float,
    inv_sigma: float,
):
    """``x = delta d^2 / sigma`` of pixel p for face t, the weight in [0, 1] with which p counts for the
    face, and the screen barycentrics of the point of the face nearest to p (p itself when inside).

    Only *soft* edges (boundary and silhouette edges; every edge in SoftRas mode) make coverage fall
    off. Inside, ``d`` is the distance to the nearest soft edge of the face's ring (its vertex one-ring,
    and the gated edges up to three hops away that are not hidden at p: so that the faces of a fan
    around a silhouette vertex, and the faces along a curved mesh's zig-zag contour, fall off together);
    outside, the pixel counts fully when the face's nearest edge is soft and fades out where an inner
    edge is nearer (across an inner edge the neighbour face covers it; see the hand-over below). Two
    faces sharing an inner edge can still disagree on it inside where the nearest soft edge is in one
    face's ring only (more than three hops away from the other, or gated out for one face only).
    ``code``: the nearest soft edge inside, from :func:`_soft_code`."""
    l0 = edge_canonical(a1, a2, f[1], f[2], p) * inv_area
    l1 = edge_canonical(a2, a0, f[2], f[0], p) * inv_area
    l2 = edge_canonical(a0, a1, f[0], f[1], p) * inv_area
    x = float(BIG)
    weight = float(1.0)
    bc = wp.vec3(l0, l1, l2)
    if l0 >= 0.0 and l1 >= 0.0 and l2 >= 0.0:
        if code != NO_EDGE:
            best = _ring_edge(code)
            evb = edge_verts[best]
            q0 = _iso_xy(clip[b * V + evb[0]], sx, sy)
            q1 = _iso_xy(clip[b * V + evb[1]], sx, sy)
            dsoft, sb = _seg_dist2(p, q0, q1)
            # the gate's penalty again, outside the search, so that its adjoint is carried
            penalty = float(0.0)
            if code < 0:
                penalty = _gate(p, q0 + (q1 - q0) * sb, sb, b, t, best, _inv_depth(l0, l1, l2, b, f, clip, V),
                                edge_verts, edge_faces, faces, clip, V, sx, sy)
            x = wp.min(dsoft * inv_sigma + penalty, BIG)
    else:
        d01, s01 = _seg_dist2(p, a0, a1)
        d12, s12 = _seg_dist2(p, a1, a2)
        d20, s20 = _seg_dist2(p, a2, a0)
        # the pixel counts when a soft edge is (up to rounding) the nearest feature; ties at a vertex
        # shared by a soft and an inner edge go to the soft edge
        dmin = wp.min(d01, wp.min(d12, d20))
        dsoft = float(1.0e30)
        if soft0 != 0:
            dsoft = d01
            bc = wp.vec3(1.0 - s01, s01, 0.0)
        if soft1 != 0 and d12 < dsoft:
            dsoft = d12
            bc = wp.vec3(0.0, 1.0 - s12, s12)
        if soft2 != 0 and d20 < dsoft:
            dsoft = d20
            bc = wp.vec3(s20, 0.0, 1.0 - s20)
        # Where an inner edge is nearer than every soft edge the neighbour across it covers the pixel,
        # so the face hands over: its weight falls smoothly (smoothstep) from 1 to 0 as the soft edge's
        # distance exceeds the nearest one by up to about min(sqrt(sigma), inner edge's distance) (a
        # smooth minimum, so that the weight stays C1). A hard cut-off
        # there made the image jump when a pixel centre crossed the perpendicular to an inner edge at
        # a silhouette vertex; the second bound makes the weight vanish on the inner edge itself,
        # where the neighbour's inside coverage takes over.
        if dsoft < 1.0e29:
            # floors keep the adjoint finite for a pixel centre on an edge (sqrt' is infinite at 0)
            nearest = wp.sqrt(wp.max(dmin, 1.0e-20))
            width = 1.0 / wp.sqrt(inv_sigma)
            ramp = wp.max(width * nearest / (width + nearest), 1.0e-4 * width)
            u = wp.clamp((wp.sqrt(wp.max(dsoft, 1.0e-20)) - nearest) / ramp, 0.0, 1.0)
            weight = 1.0 - u * u * (3.0 - 2.0 * u)
        else:
            weight = 0.0
        x = wp.max(-dsoft * inv_sigma, -BIG)
    return x, weight, bc


SKIP = NO_EDGE + 1  # in the soft kernel's ring codes: a pixel that does not count for the face


@wp.func
def _soft_x_value(code: int, p: wp.vec2, b: int, t: int, a0: wp.vec2, a1: wp.vec2, a2: wp.vec2, f: wp.vec3i,
                  inv_area: float, clip: wp.array(dtype=wp.vec4), faces: wp.array(dtype=wp.vec3i),
                  edge_verts: wp.array(dtype=wp.vec2i), edge_faces: wp.array(dtype=wp.vec2i), soft0: int, soft1: int,
                  soft2: int, V: int, sx: float, sy: float, inv_sigma: float):
    """:func:`_soft_x` without an adjoint, for the soft kernel's first pass, which decides where a pixel
    counts for the face (see ``soft_kernel``)."""
    return _soft_x(code, p, b, t, a0, a1, a2, f, inv_area, clip, faces, edge_verts, edge_faces, soft0, soft1, soft2,
                   V, sx, sy, inv_sigma)


@wp.func_grad(_soft_x_value)
def _soft_x_value_grad(code: int, p: wp.vec2, b: int, t: int, a0: wp.vec2, a1: wp.vec2, a2: wp.vec2, f: wp.vec3i,
                       inv_area: float, clip: wp.array(dtype=wp.vec4), faces: wp.array(dtype=wp.vec3i),
                       edge_verts: wp.array(dtype=wp.vec2i), edge_faces: wp.array(dtype=wp.vec2i), soft0: int,
                       soft1: int, soft2: int, V: int, sx: float, sy: float, inv_sigma: float, adj_ret0: float,
                       adj_ret1: float, adj_ret2: wp.vec3):
    pass


@wp.func
def _blend_attributes(num: wp.array(dtype=float), idx: int, C: int, weight: float, attrs: wp.array(dtype=float),
                      k0: int, k1: int, k2: int, q0: float, q1: float, q2: float, qsum: float):
    """Add ``weight`` times the perspective-correct interpolation of the C attributes of a face's three
    vertices (offsets k0, k1, k2 into ``attrs``) to pixel ``idx`` of the numerator buffer ``num``."""
    for c in range(C):
        value = (q0 * attrs[k0 + c] + q1 * attrs[k1 + c] + q2 * attrs[k2 + c]) / qsum
        wp.atomic_add(num, idx * C + c, weight * value)


@wp.func
def _cover_key(coverage: float, t: int, T: int):
    """A face's coverage of a pixel and the face in one int64 whose maximum is the largest coverage
    (in steps of 2^-30) and, among equal ones, the lowest face id: one atomic_max finds both, where a
    maximum and then a second pass for its face (with a margin for the rounding between the two) did."""
    return wp.int64(int(coverage * 1073741824.0)) * wp.int64(4294967296) + wp.int64(T - 1 - t)


@wp.func
def _cover_face(key: wp.int64, T: int):
    """The face of a :func:`_cover_key`: T - 1 - its low 32 bits (T, no face, for the initial -1)."""
    return T - 1 - int(key % wp.int64(4294967296))


def _make_soft_kernel(MODE: int, UNION: int):
    def soft_kernel(
        clip: wp.array(dtype=wp.vec4),
        attrs: wp.array(dtype=float),
        faces: wp.array(dtype=wp.vec3i),
        face_edges: wp.array(dtype=wp.vec3i),
        edge_verts: wp.array(dtype=wp.vec2i),
        edge_faces: wp.array(dtype=wp.vec2i),
        edge_apex: wp.array(dtype=wp.int32),
        edge_soft: wp.array(dtype=wp.int32),
        ring_start: wp.array(dtype=wp.int32),
        near_edges: wp.array(dtype=wp.int32),  # per frame, the ring entries within reach (ring_reach_kernel)
        E: int,
        face_on: wp.array(dtype=wp.int32),
        ring_near: wp.array(dtype=wp.int32),
        tribuf: wp.array(dtype=wp.int32),
        wvis: wp.array(dtype=float),
        zmax_n: wp.array(dtype=float),
        zmax_s: wp.array(dtype=float),
        zmax_b: wp.array(dtype=float),
        cover_key: wp.array(dtype=wp.int64),
        V: int,
        T: int,
        H: int,
        W: int,
        C: int,
        sx: float,
        sy: float,
        inv_sigma: float,
        cutoff2: float,
        inv_gamma: float,
        near: float,
        far: float,
        depth_tol: float,
        stripes: int,
        code_start: wp.array(dtype=wp.int32),
        codes: wp.array(dtype=wp.int32),
        s_near: wp.array(dtype=float),
        s_same: wp.array(dtype=float),
        s_behind: wp.array(dtype=float),
        den_n: wp.array(dtype=float),
        num_n: wp.array(dtype=float),
        den_b: wp.array(dtype=float),
        num_b: wp.array(dtype=float),
        den_sv: wp.array(dtype=float),
        den_s: wp.array(dtype=float),
        num_s: wp.array(dtype=float),
    ):
        """Soft edge term. ``MODE == 0``: per-pixel maxima of the normalised inverse depth of the three
        blended groups (the softmax shifts) and, with ``UNION``, of each group's face coverage together
        with the face that has it (``_cover_key``), and the ring code (``_soft_code``) of every pixel of
        the face's box into ``codes`` from ``code_start[b * T + t]`` on; not differentiated. ``MODE == 1``:
        the accumulation proper, with those codes.

        For pixel p and face j with ``x_j = delta d^2 / sigma`` (isotropic NDC, see ``_soft_x``), the face's
        coverage ``c_j = w_j sigmoid(x_j)`` (``w_j``: the hand-over weight of ``_soft_x``) enters its group's
        coverage. ``UNION == 1`` (soft edges on silhouettes): the group coverage is the largest ``c_j``
        (written by the arg-max face only, so that its gradient reaches that face), which is below 1/2
        exactly where no face covers p: the 0.5 level is the true outline at any sigma. ``UNION == 0``
        (SoftRas): ``w_j softplus(x_j)`` is summed into ``s_group``, whose ``1 - exp(-s)`` is SoftRas'
        ``1 - prod(1 - D)``; that overcounts where two faces share an edge (both faces of a silhouette
        edge of a closed mesh give 1/2 there, so alpha is 3/4 on the true outline). Each face falls in one
        group relative to the visible surface at p (view depth of its point nearest to p against the visible
        depth ``w_vis``): *near* (in front; every face when p is uncovered), *same* (the visible face and
        faces at its depth) or *behind*, with a linear hand-over between groups for relative depth
        differences between ``depth_tol`` and ``2 depth_tol`` (a face's terms are split between two
        groups there, which keeps the total coverage and the image continuous). Each group also accumulates its
        depth-weighted attribute blend ``num += w_j attr_j(p)``, ``den += w_j`` with
        ``w_j = sigmoid(x_j) exp((z_j - zmax) / gamma)``, ``z_j = (far - depth_j) / (far - near)`` and
        ``attr_j(p)`` the perspective-correct interpolation of the vertex attributes at the point of
        face j nearest to p; the visible face itself only adds its weight (to ``den_sv``): its
        attributes come from the exact visible-surface interpolation.
        """
        tid, s = wp.tid()
        b, t, f, c0, c1, c2 = face_of(tid, T, V, faces, clip)
        fe = face_edges[t]
        soft0 = edge_soft[b * E + fe[0]]
        soft1 = edge_soft[b * E + fe[1]]
        soft2 = edge_soft[b * E + fe[2]]
        a0, a1, a2, area, i0, i1, j0, j1 = face_box(c0, c1, c2, face_on[tid], soft0 + soft1 + soft2, near, sx, sy,
                                                    cutoff2, W, H)
        if i1 >= i0 and j1 >= j0:
            inv_area = 1.0 / area
            ring_soft = ring_near[tid]  # soft ring edges within the sigmoid's reach of the face
            # this face's ring codes, one per box pixel: searched in mode 0, read back by mode 1
            first = code_start[tid]
            box_w = j1 - j0 + 1
            iw0 = 1.0 / c0[3]
            iw1 = 1.0 / c1[3]
            iw2 = 1.0 / c2[3]
            min_x = -cutoff2 * inv_sigma
            for i in range(i0 + s, i1 + 1, stripes):
                py = (1.0 - (2.0 * float(i) + 1.0) / float(H)) * sy
                for j in range(j0, j1 + 1):
                    p = wp.vec2(((2.0 * float(j) + 1.0) / float(W) - 1.0) * sx, py)
                    slot = first + (i - i0) * box_w + j - j0
                    x = float(0.0)
                    weight = float(0.0)
                    bc = wp.vec3()
                    if wp.static(MODE == 0):
                        code = _soft_code(p, b, t, a0, a1, a2, f, inv_area, clip, faces, edge_verts, edge_faces,
                                          edge_apex, ring_start, near_edges, ring_soft, V, sx, sy, inv_sigma)
                        x, weight, bc = _soft_x_value(code, p, b, t, a0, a1, a2, f, inv_area, clip, faces,
                                                      edge_verts, edge_faces, soft0, soft1, soft2, V, sx, sy,
                                                      inv_sigma)
                        if weight > 0.0 and x > min_x:
                            codes[slot] = code
                        else:
                            codes[slot] = SKIP
                    else:
                        # only the pixels that count for the face, so that the adjoint differentiates
                        # _soft_x nowhere else (most of a small face's box)
                        code = codes[slot]
                        if code != SKIP:
                            x, weight, bc = _soft_x(code, p, b, t, a0, a1, a2, f, inv_area, clip, faces,
                                                    edge_verts, edge_faces, soft0, soft1, soft2, V, sx, sy,
                                                    inv_sigma)
                    if weight > 0.0 and x > min_x:
                        idx = (b * H + i) * W + j
                        # perspective-correct weights of the nearest point, and its view depth
                        q0 = bc[0] * iw0
                        q1 = bc[1] * iw1
                        q2 = bc[2] * iw2
                        qsum = q0 + q1 + q2
                        depth = 1.0 / qsum
                        vis = tribuf[idx]
                        # group fractions: a face belongs to the near / same / behind group by its
                        # depth relative to the visible surface, r = (depth - w_vis) / (tol w_vis),
                        # with linear ramps over 1 <= |r| <= 2 so that nothing jumps with depth
                        f_near = float(1.0)
                        f_behind = float(0.0)
                        if vis > 0:
                            f_near = 0.0
                            if vis != t + 1:
                                wv = wvis[idx]
                                rel = (depth - wv) / (depth_tol * wv)
                                f_near = wp.clamp(-rel - 1.0, 0.0, 1.0)
                                f_behind = wp.clamp(rel - 1.0, 0.0, 1.0)
                        f_same = 1.0 - f_near - f_behind
                        zn = (far - depth) / (far - near)
                        sg = weight * _sigmoid(x)
                        if wp.static(MODE == 0):
                            if f_near > 0.0:
                                wp.atomic_max(zmax_n, idx, zn)
                                if wp.static(UNION == 1):
                                    wp.atomic_max(cover_key, idx * 3, _cover_key(f_near * sg, t, T))
                            if f_same > 0.0:
                                wp.atomic_max(zmax_s, idx, zn)
                                if wp.static(UNION == 1):
                                    wp.atomic_max(cover_key, idx * 3 + 1, _cover_key(f_same * sg, t, T))
                            if f_behind > 0.0:
                                wp.atomic_max(zmax_b, idx, zn)
                                if wp.static(UNION == 1):
                                    wp.atomic_max(cover_key, idx * 3 + 2, _cover_key(f_behind * sg, t, T))
                        else:
                            sp = weight * _softplus(x)
                            k0 = (b * V + f[0]) * C
                            k1 = (b * V + f[1]) * C
                            k2 = (b * V + f[2]) * C
                            if wp.static(UNION == 1):
                                if f_near > 0.0 and _cover_face(cover_key[idx * 3], T) == t:
                                    s_near[idx] = f_near * sg
                                if f_same > 0.0 and _cover_face(cover_key[idx * 3 + 1], T) == t:
                                    s_same[idx] = f_same * sg
                                if f_behind > 0.0 and _cover_face(cover_key[idx * 3 + 2], T) == t:
                                    s_behind[idx] = f_behind * sg
                            if f_same > 0.0:
                                if wp.static(UNION == 0):
                                    s_same[idx] += f_same * sp
                                wgt = f_same * sg * wp.exp((zn - zmax_s[idx]) * inv_gamma)
                                if vis == t + 1:
                                    den_sv[idx] += wgt
                                else:
                                    den_s[idx] += wgt
                                    _blend_attributes(num_s, idx, C, wgt, attrs, k0, k1, k2, q0, q1, q2, qsum)
                            if f_near > 0.0:
                                if wp.static(UNION == 0):
                                    s_near[idx] += f_near * sp
                                wgt = f_near * sg * wp.exp((zn - zmax_n[idx]) * inv_gamma)
                                den_n[idx] += wgt
                                _blend_attributes(num_n, idx, C, wgt, attrs, k0, k1, k2, q0, q1, q2, qsum)
                            if f_behind > 0.0:
                                if wp.static(UNION == 0):
                                    s_behind[idx] += f_behind * sp
                                wgt = f_behind * sg * wp.exp((zn - zmax_b[idx]) * inv_gamma)
                                den_b[idx] += wgt
                                _blend_attributes(num_b, idx, C, wgt, attrs, k0, k1, k2, q0, q1, q2, qsum)

    return wp.kernel(soft_kernel, name=f"wsim_soft_mode{MODE}_union{UNION}", enable_backward=(MODE == 1))


# mode 0: softmax shifts and coverage maxima with their faces (atomic_max, not differentiated); mode 1:
# the differentiated accumulation. Index: [union][mode].
soft_kernels = {(union, mode): _make_soft_kernel(mode, union) for union in (0, 1) for mode in (0, 1)}
