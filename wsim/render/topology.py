"""The edge structure the soft edge term needs (:func:`wsim.render.raster.soft_edges`): per face buffer,
its unique edges, which faces share each, and per face the ring of edges whose soft term can cover its
pixels; built on the CPU once per distinct face buffer and uploaded per device on demand.
"""

from __future__ import annotations

import numpy as np
import torch

#: how many vertex hops the ring of a face reaches for *boundary* edges (see :class:`Topology`). Inside a
#: face the coverage falls off with the distance to the nearest soft edge of its ring, so two faces
#: sharing an inner edge agree there only on the soft edges both rings hold. With the one-ring alone, a
#: sheet's boundary one cell away was in one face's ring only, and at a sigma comparable to the
#: projected cell size the image stepped there (measured: cloth-velocity at 32 px, sigma 4e-3, one
#: pixel by 0.23 and the loss by 3e-6 for a 1e-5 m/s change of the velocity: a wall that stopped the
#: BFGS polish 20-30 % off the truth). At 2 hops the first boundary edge a ring lacks is two cells away,
#: where the sigmoid is within 1e-2 of 1 at that sigma. Closed meshes have no boundary edges, so this
#: depth leaves them alone. Only a face's own edges and these boundary edges are held without condition;
#: every other edge of the ring is *gated* (:data:`GATED_RING_DEPTH`), the one-ring's included: a ring
#: reaches a closed mesh's hidden contours (a prism's back rim behind its cap), and on a non-convex mesh
#: the one-ring does too (a cross prism's reflex corner behind the side next to it: held without
#: condition, it stepped one pixel by 0.35, and the rigid-contact loss of seed 2008 by 10x, where it slid
#: under a pixel centre; see tests/test_render_continuity.py).
BOUNDARY_RING_DEPTH = 2

#: how many vertex hops the ring of a face reaches for *gated* edges. Near the edge-on outline of a
#: curved closed mesh (an icosphere, a gear prism near its rim) the contour is a zig-zag of silhouette
#: edges, and the one nearest to a pixel is often not in its face's vertex one-ring: two faces sharing
#: an inner edge then measured the distance to different silhouette edges and alpha stepped across that
#: edge (measured: by 0.32 for a 2e-5 m motion of a 320-face icosphere at 32 px, sigma 4e-3; by 0.43
#: on a gear prism), and the pixel-loss adjoint saw only 0.8-0.9 of the loss change (with 3 hops: a
#: 1.8e-4 step, the adjoint within 0.05 %; see tests/test_render_continuity.py). The edges of the faces
#: within this many hops that the one-ring (and the boundary ring) lack are stored as gated entries,
#: ``-(e + 1)`` in ``ring_edges``; the kernel uses a gated soft edge only where, at the pixel, the plane
#: of one of the edge's own faces is not behind the shaded face (``GATE_TOL`` in
#: :mod:`wsim.render.soft_ring`). That keeps out the hidden contours a wide ring reaches (above): they
#: lie behind the surface being shaded. Known limit: where faces are much smaller on screen than the
#: sigmoid's reach (a 1280-face icosphere at 32 px, sigma 4e-3) the nearest silhouette edge can lie
#: beyond 3 hops, and alpha still steps, by up to 0.06 there (0.49 with the one-ring).
GATED_RING_DEPTH = 3


class Topology:
    """Edge structure of a face buffer.

    ``index_range`` (smallest, largest vertex index), ``edge_verts [E, 2]``, ``face_edges [T, 3]`` (edge k
    of a face joins its corners k and k+1), ``edge_faces [E, 2]`` (-1 where an edge has a single face), ``edge_shared_badly [E]`` (more than two
    faces: always treated as soft), and per face the CSR list ``ring_start [T + 1]``/``ring_edges`` of
    the face's own edges and the boundary edges of the faces within :data:`BOUNDARY_RING_DEPTH` vertex
    hops, and as gated entries ``-(e + 1)`` the other edges of the faces within :data:`GATED_RING_DEPTH`
    hops (its vertex one-ring included). In
    ``"all"`` mode (SoftRas) the ring of a face is its own three edges and every edge is soft.
    """

    def __init__(self, faces_np, mode: str):
        f = faces_np.astype(np.int64)
        T = f.shape[0]
        self.index_range = (int(f.min()), int(f.max())) if T else (0, -1)
        pairs = np.stack([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], axis=1).reshape(-1, 2)  # slot 3t+k
        key = np.sort(pairs, axis=1)
        uniq, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(-1)
        E = uniq.shape[0]
        self.edge_verts = uniq.astype(np.int32)
        self.face_edges = inverse.reshape(T, 3).astype(np.int32)
        edge_faces = np.full((E, 2), -1, dtype=np.int64)
        slot_face = np.repeat(np.arange(T), 3)
        order = np.argsort(inverse, kind="stable")
        first = np.ones(order.size, dtype=bool)
        first[1:] = inverse[order][1:] != inverse[order][:-1]
        starts = np.nonzero(first)[0]
        edge_faces[inverse[order][starts], 0] = slot_face[order][starts]
        second = starts + 1
        ok = second < order.size
        ok[ok] &= inverse[order][second[ok]] == inverse[order][starts[ok]]
        edge_faces[inverse[order][starts[ok]], 1] = slot_face[order][second[ok]]
        self.edge_faces = edge_faces
        self.edge_shared_badly = counts > 2
        if mode == "all":
            self.ring_start = (np.arange(T + 1) * 3).astype(np.int32)
            self.ring_edges = self.face_edges.reshape(-1).astype(np.int32)
        else:
            self.ring_start, self.ring_edges = _rings(f, self.face_edges, edge_faces[:, 1] < 0, E)
        self.face_component, self.face_closed = _closed_components(T, edge_faces, counts, pairs, inverse)
        # the vertex of an edge's first face opposite the edge: which side of the edge the surface lies on
        # (-1 where more than two faces share the edge and no one side is the surface's)
        first = edge_faces[:, 0]
        corner = f[first]
        opposite = np.where((corner != self.edge_verts[:, :1]) & (corner != self.edge_verts[:, 1:]), corner, -1).max(1)
        self.edge_apex = np.where(self.edge_shared_badly, -1, opposite).astype(np.int32)
        self.mode = mode
        self._device_cache = {}

    def on(self, device: torch.device):
        key = str(device)
        if key not in self._device_cache:
            def t(a):
                return torch.as_tensor(a).to(device).contiguous()

            self._device_cache[key] = {
                "edge_verts": t(self.edge_verts), "face_edges": t(self.face_edges),
                "edge_faces": t(self.edge_faces), "edge_faces32": t(self.edge_faces.astype(np.int32)),
                "bad": t(self.edge_shared_badly),
                "ring_start": t(self.ring_start), "ring_edges": t(self.ring_edges),
                "face_component": t(self.face_component), "face_closed": t(self.face_closed),
                "edge_apex": t(self.edge_apex),
            }
        return self._device_cache[key]


def _closed_components(T, edge_faces, counts, pairs, inverse):
    """Per face: its connected component (faces joined across two-face edges) and whether that
    component is a closed surface with consistent winding (every edge has exactly two faces that run
    along it in opposite directions), whose back faces are hidden behind its front faces."""
    parent = np.arange(T)

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    two = edge_faces[:, 1] >= 0
    for a, b in edge_faces[two]:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    component = np.array([root(i) for i in range(T)], dtype=np.int64)
    # an edge spoils its component when it is open, shared by more than two faces, or run along in the
    # same direction by both faces (inconsistent winding)
    first_slot = np.full(len(counts), -1, dtype=np.int64)
    bad = counts != 2
    for slot, e in enumerate(inverse):
        if first_slot[e] < 0:
            first_slot[e] = slot
        elif pairs[slot][0] == pairs[first_slot[e]][0]:
            bad[e] = True
    spoiled = np.zeros(T, dtype=bool)
    slot_face = np.repeat(np.arange(T), 3)
    spoiled[component[slot_face[bad[inverse]]]] = True
    return component.astype(np.int32), ~spoiled[component]


def _rings(f, face_edges, boundary, E):
    """Per face the CSR ``(ring_start, ring_edges)`` of its ring (see :class:`Topology`), sorted by edge:
    sparse products of the face-vertex incidence (faces within k vertex hops: ``N^k``, ``N = A A^T``),
    so that 10k faces take a fraction of a second (no Python loop over faces)."""
    import scipy.sparse as sp

    T = f.shape[0]
    if T == 0:
        return np.zeros(1, dtype=np.int32), np.zeros(0, dtype=np.int32)
    rows = np.repeat(np.arange(T), 3)
    ones = np.ones(3 * T, dtype=np.int32)
    # shifted to start at 0: indices out of the vertex range (refused by the renderer from index_range,
    # read after this build) must not fail here
    corner = f.reshape(-1) - f.min()
    incidence = sp.csr_matrix((ones, (rows, corner)), shape=(T, int(corner.max()) + 1))
    face_edge = sp.csr_matrix((ones, (rows, face_edges.reshape(-1))), shape=(T, E))

    def binary(m):
        m = m.tocsr(copy=True)
        m.eliminate_zeros()
        m.data[:] = 1
        return m

    hop = binary(incidence @ incidence.T)  # faces sharing a vertex, the face itself included
    near = hop
    # plain: the face's own edges and the boundary edges of its one-ring; every other edge of the
    # one-ring is gated like the wider ring's (a non-convex mesh's hidden contours are one-ring edges too)
    plain = binary(face_edge + binary(hop @ face_edge).multiply(boundary.astype(np.int32)[None, :]))
    wide = binary(hop @ face_edge)
    for k in range(2, max(BOUNDARY_RING_DEPTH, GATED_RING_DEPTH) + 1):
        near = binary(near @ hop)
        edges = binary(near @ face_edge)
        if k <= BOUNDARY_RING_DEPTH:
            plain = binary(plain + edges.multiply(boundary.astype(np.int32)[None, :]))
        if k <= GATED_RING_DEPTH:
            wide = edges
    # 1: a plain entry, 2: a gated one (in the wide ring but not in the plain one)
    code = (2 * binary(wide + plain) - plain).tocsr()
    code.eliminate_zeros()
    code.sort_indices()
    ring = np.where(code.data == 1, code.indices, -(code.indices.astype(np.int64) + 1))
    return code.indptr.astype(np.int32), ring.astype(np.int32)


def topology(faces: torch.Tensor, mode: str = "silhouette") -> Topology:
    """The :class:`Topology` of ``faces`` ``[T, 3]`` (integer) for soft-edge ``mode`` ``"silhouette"`` or
    ``"all"``. It costs O(T) Python work: build it once per mesh (the renderer keeps the last one)."""
    return Topology(faces.detach().to("cpu", torch.int64).contiguous().numpy(), mode)
