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
#: where the sigmoid is within 1e-2 of 1 at that sigma. Silhouette edges stay in the one-ring: a wider
#: ring also reaches a closed mesh's hidden contours (a prism's back rim behind its cap) and biases the
#: coverage there. Closed meshes have no boundary edges, so their images are unchanged.
BOUNDARY_RING_DEPTH = 2


class Topology:
    """Edge structure of a face buffer.

    ``index_range`` (smallest, largest vertex index), ``edge_verts [E, 2]``, ``face_edges [T, 3]`` (edge k
    of a face joins its corners k and k+1), ``edge_faces [E, 2]`` (-1 where an edge has a single face), ``edge_shared_badly [E]`` (more than two
    faces: always treated as soft), and per face the CSR list ``ring_start [T + 1]``/``ring_edges`` of
    the edges of every face sharing a vertex with it (its vertex one-ring, itself included) and the
    boundary edges of the faces within :data:`BOUNDARY_RING_DEPTH` vertex hops. In
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
            Vn = int(f.max()) + 1 if T else 0
            incident = [[] for _ in range(Vn)]
            for t in range(T):
                for v in f[t]:
                    incident[v].append(t)
            starts_l, ring = [0], []
            fe = self.face_edges
            boundary = edge_faces[:, 1] < 0
            for t in range(T):
                near = {g for v in f[t] for g in incident[v]}
                edges = set()
                for g in near:
                    edges.update(fe[g].tolist())
                for _ in range(BOUNDARY_RING_DEPTH - 1):
                    near = {g for u in near for v in f[u] for g in incident[v]}
                    edges.update(e for g in near for e in fe[g].tolist() if boundary[e])
                ring.extend(sorted(edges))
                starts_l.append(len(ring))
            self.ring_start = np.asarray(starts_l, dtype=np.int32)
            self.ring_edges = np.asarray(ring, dtype=np.int32)
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
                "edge_faces": t(self.edge_faces), "bad": t(self.edge_shared_badly),
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


def topology(faces: torch.Tensor, mode: str = "silhouette") -> Topology:
    """The :class:`Topology` of ``faces`` ``[T, 3]`` (integer) for soft-edge ``mode`` ``"silhouette"`` or
    ``"all"``. It costs O(T) Python work: build it once per mesh (the renderer keeps the last one)."""
    return Topology(faces.detach().to("cpu", torch.int64).contiguous().numpy(), mode)
