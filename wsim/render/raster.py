"""The two rasterisation backends behind one interface, and the soft edge term they share.

``visible_surface(clip, faces, image_size, backend)`` returns nvdiffrast-style buffers with **row 0 at
the top**: ``rast [B, H, W, 4] = (u, v, z/w, id + 1)`` (``u, v`` differentiable with respect to the clip
positions at covered pixels) and the integer face-id buffer ``tri [B, H, W]`` (0 = empty).
``interpolate(attrs, rast, tri, faces, backend)`` interpolates vertex attributes on the visible surface.

- ``"nvdiffrast"`` (CUDA only): ``nvdiffrast.torch.rasterize`` / ``interpolate`` (imported lazily; the
  optional ``diffrp-nvdiffrast`` package). nvdiffrast's row 0 is the bottom image row, so its buffers are
  flipped vertically before anything else reads them.
- ``"warp"`` (CPU or CUDA): Warp kernels (:mod:`wsim.render.kernels`) produce the same buffers; the
  differentiable pass runs through :func:`wsim.bridge.run_tape_program`; interpolation is a torch gather.

``soft_edges(...)`` runs the Warp sigmoid edge kernel (both backends) through the same bridge.
"""

from __future__ import annotations

import functools
import math
from contextlib import nullcontext

import torch
import warp as wp

from ..bridge import run_tape_program
from ..device import init_warp
from ..errors import ConfigError
from . import kernels, visibility

BACKENDS = ("auto", "warp", "nvdiffrast")


def _warp_device(t: torch.Tensor) -> str:
    return "cpu" if t.device.type == "cpu" else f"cuda:{t.device.index or 0}"


def _stream_scope(t: torch.Tensor):
    if t.device.type == "cuda":
        return wp.ScopedStream(wp.stream_from_torch(torch.cuda.current_stream(t.device)))
    return nullcontext()


def _stripes(t: torch.Tensor, height: int) -> int:
    """Threads per face in the per-face kernels: 1 on the CPU (one thread anyway), several on CUDA."""
    return 1 if t.device.type == "cpu" else max(1, min(int(height), 16))


@functools.lru_cache(maxsize=None)
def nvdiffrast_available() -> bool:
    """True when nvdiffrast's torch module can be imported (it also needs CUDA to run)."""
    try:
        import nvdiffrast.torch  # noqa: F401
    except Exception:  # ImportError, or a broken JIT build environment
        return False
    return True


def resolve_backend(backend: str, device: torch.device) -> str:
    """``"auto"`` -> nvdiffrast on CUDA when it is installed, Warp otherwise; checks forced choices."""
    name = str(backend).strip().lower()
    if name not in BACKENDS:
        raise ConfigError(f"renderer backend '{backend}' is not one of {', '.join(BACKENDS)}")
    if name == "auto":
        return "nvdiffrast" if device.type == "cuda" and nvdiffrast_available() else "warp"
    if name == "nvdiffrast":
        if device.type != "cuda":
            raise ConfigError("renderer backend 'nvdiffrast' needs CUDA tensors (nvdiffrast has no CPU path); "
                              "use backend 'warp' or 'auto' on the CPU")
        if not nvdiffrast_available():
            raise ConfigError("renderer backend 'nvdiffrast' asked for, but nvdiffrast is not installed "
                              "(pip install diffrp-nvdiffrast)")
    return name


_NVDR_CONTEXTS: dict = {}


def _nvdr_context(device: torch.device):
    import nvdiffrast.torch as dr

    key = str(device)
    if key not in _NVDR_CONTEXTS:
        _NVDR_CONTEXTS[key] = dr.RasterizeCudaContext(device=device)
    return _NVDR_CONTEXTS[key]


# ----------------------------------------------------------------------------- Warp visible surface


class _BaryProgram:
    """Tape program of the differentiable third raster pass (see :mod:`wsim.render.kernels`)."""

    input_dtypes = {"clip": wp.vec4}

    def __init__(self, device, faces, tribuf, V, H, W):
        self.device = device
        self.faces, self.tribuf = faces, tribuf
        self.V, self.H, self.W = V, H, W

    def record(self, inputs):
        n = self.tribuf.shape[0]
        rast = wp.zeros(n, dtype=wp.vec4, device=self.device, requires_grad=True)
        wp.launch(visibility.raster_bary_kernel, dim=n, device=self.device,
                  inputs=[inputs["clip"], self.faces, self.tribuf, self.V, self.H, self.W, rast])
        return (rast,)


def _faces_warp(faces: torch.Tensor, device: str):
    f = faces.detach().to(torch.int32).contiguous()
    return wp.from_torch(f, dtype=wp.vec3i), f


def _warp_visible_surface(clip: torch.Tensor, faces: torch.Tensor, image_size, near: float):
    init_warp()
    H, W = image_size
    B, V = clip.shape[0], clip.shape[1]
    T = faces.shape[0]
    device = _warp_device(clip)
    faces_wp, faces_keep = _faces_warp(faces, device)
    clip_flat = clip.reshape(B * V, 4).float().contiguous()
    n = B * H * W
    zbuf = wp.full(n, 2.0, dtype=float, device=device)
    tribuf = wp.zeros(n, dtype=wp.int32, device=device)
    stripes = _stripes(clip, H)
    with _stream_scope(clip):
        clip_wp = wp.from_torch(clip_flat.detach(), dtype=wp.vec4)
        for kernel in (visibility.raster_depth_kernel, visibility.raster_id_kernel):
            wp.launch(kernel, dim=(B * T, stripes), device=device,
                      inputs=[clip_wp, faces_wp, V, T, H, W, float(near), stripes, zbuf, tribuf], record_tape=False)
    program = _BaryProgram(device, faces_wp, tribuf, V, H, W)
    program._keep = faces_keep
    (rast,) = run_tape_program(program, {"clip": clip_flat})
    tri = wp.to_torch(tribuf).clone().reshape(B, H, W)
    return rast.reshape(B, H, W, 4), tri


def _torch_interpolate(attrs: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor, faces: torch.Tensor):
    B, H, W = tri.shape
    if attrs.shape[0] != B:
        attrs = attrs.expand(B, -1, -1)
    V, C = attrs.shape[1], attrs.shape[2]
    flat = attrs.reshape(B * V, C)
    covered = tri > 0
    fid = (tri.long() - 1).clamp_min(0)
    corner = faces.long()[fid]  # [B, H, W, 3]
    offset = (torch.arange(B, device=tri.device) * V).view(B, 1, 1, 1)
    corner = corner + offset
    u = rast[..., 0:1]
    v = rast[..., 1:2]
    out = u * flat[corner[..., 0]] + v * flat[corner[..., 1]] + (1.0 - u - v) * flat[corner[..., 2]]
    return out * covered.unsqueeze(-1).to(out.dtype)


# ----------------------------------------------------------------------------- public buffers


def visible_surface(clip: torch.Tensor, faces: torch.Tensor, image_size, backend: str, near: float):
    """Hard visible-surface buffers ``(rast [B, H, W, 4], tri [B, H, W] int32)`` with row 0 at the top."""
    H, W = int(image_size[0]), int(image_size[1])
    if backend == "nvdiffrast":
        import nvdiffrast.torch as dr

        rast, _ = dr.rasterize(_nvdr_context(clip.device), clip.float().contiguous(),
                               faces.to(torch.int32).contiguous(), resolution=(H, W))
        rast = torch.flip(rast, dims=[1])  # nvdiffrast row 0 is the bottom row
        tri = rast[..., 3].detach().to(torch.int32)
        return rast, tri
    return _warp_visible_surface(clip, faces, (H, W), near)


def interpolate(attrs: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor, faces: torch.Tensor, backend: str):
    """Vertex attributes ``[B or 1, V, C]`` interpolated on the visible surface -> ``[B, H, W, C]``
    (zero where no face covers the pixel)."""
    if backend == "nvdiffrast":
        import nvdiffrast.torch as dr

        out, _ = dr.interpolate(attrs.float().contiguous(), rast.contiguous(), faces.to(torch.int32).contiguous())
        return out
    return _torch_interpolate(attrs, rast, tri, faces)


# ----------------------------------------------------------------------------- soft edge term


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
    """Edge structure of a face buffer, built once per distinct ``faces`` (cached by content).

    ``edge_verts [E, 2]``, ``face_edges [T, 3]`` (edge k of a face joins its corners k and k+1),
    ``edge_faces [E, 2]`` (-1 where an edge has a single face), ``edge_shared_badly [E]`` (more than two
    faces: always treated as soft), and per face the CSR list ``ring_start [T + 1]``/``ring_edges`` of
    the edges of every face sharing a vertex with it (its vertex one-ring, itself included) and the
    boundary edges of the faces within :data:`BOUNDARY_RING_DEPTH` vertex hops. In
    ``"all"`` mode (SoftRas) the ring of a face is its own three edges and every edge is soft.
    """

    def __init__(self, faces_np, mode: str):
        import numpy as np

        f = faces_np.astype(np.int64)
        T = f.shape[0]
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
    import numpy as np

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


_TOPOLOGY_CACHE: dict = {}


def topology(faces: torch.Tensor, mode: str = "silhouette") -> Topology:
    """The (cached) :class:`Topology` of ``faces`` for soft-edge ``mode`` ``"silhouette"`` or ``"all"``."""
    import hashlib

    arr = faces.detach().to("cpu", torch.int64).contiguous().numpy()
    key = (mode, arr.shape, hashlib.sha1(arr.tobytes()).hexdigest())
    topo = _TOPOLOGY_CACHE.get(key)
    if topo is None:
        if len(_TOPOLOGY_CACHE) > 32:
            _TOPOLOGY_CACHE.clear()
        topo = _TOPOLOGY_CACHE[key] = Topology(arr, mode)
    return topo


# NDC (OpenGL) is left-handed where world and view space are right-handed: a closed outward-wound
# mesh has a negative signed volume in NDC, and its front faces run counter-clockwise on screen
_NDC_HANDEDNESS = -1.0


def soft_edge_flags(clip: torch.Tensor, faces: torch.Tensor, topo: Topology, near: float):
    """Per-frame flags of the soft edge term: ``[B, E]`` int32, 1 where an edge is *soft* in that frame
    (a boundary or non-manifold edge, or a silhouette: its two faces have opposite screen orientations,
    or one is culled at the near plane), and ``[B, T]`` int32, 1 where a face takes part.

    Inner edges between faces that face the same way stay hard, so that the sigmoid falloff does not
    open seams inside a surface. Back faces of a closed, consistently wound component (entirely in
    front of the near plane) take no part: its front faces cover everything they would, and at a
    silhouette they would only repeat their front neighbour's coverage and show the object's inside
    where the edge blends over what lies behind it. In ``"all"`` mode every edge is soft and every face
    takes part (SoftRas)."""
    B = clip.shape[0]
    dev = clip.device
    tt = topo.on(dev)
    E = topo.edge_verts.shape[0]
    T = faces.shape[0]
    if topo.mode == "all":
        return (torch.ones(B, E, dtype=torch.int32, device=dev), torch.ones(B, T, dtype=torch.int32, device=dev))
    with torch.no_grad():
        f = faces.long()
        c = clip.detach()
        w = c[..., 3]
        xy = c[..., :2] / torch.where(w.abs() > 1e-12, w, torch.full_like(w, 1e-12)).unsqueeze(-1)
        p0, p1, p2 = xy[:, f[:, 0]], xy[:, f[:, 1]], xy[:, f[:, 2]]
        e1, e2 = p1 - p0, p2 - p0
        orient = torch.sign(e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0])  # [B, T]
        culled = (w[:, f] < near).any(-1)
        orient = torch.where(culled, torch.zeros_like(orient), orient)
        ef = tt["edge_faces"]
        o0 = orient[:, ef[:, 0].clamp_min(0)]
        o1 = orient[:, ef[:, 1].clamp_min(0)]
        soft = (ef[:, 1] < 0).unsqueeze(0) | tt["bad"].unsqueeze(0) | (o0 != o1) | (o0 == 0) | (o1 == 0)
        face_on = _front_or_open(clip.detach(), xy, f, orient, culled, tt, near)
        return soft.to(torch.int32), face_on.to(torch.int32)


def _front_or_open(clip, xy, f, orient, culled, tt, near):
    """``[B, T]`` bool: False for the back faces of closed components in front of the near plane."""
    B, T = orient.shape
    comp = tt["face_component"].long()
    ncomp = int(comp.max()) + 1 if T else 0
    # signed volume of each component in NDC (its sign gives the winding; 6x volume, sign only matters)
    p = torch.cat([xy, (clip[..., 2] / clip[..., 3].clamp_min(1e-12)).unsqueeze(-1)], dim=-1)
    a, b, c = p[:, f[:, 0]], p[:, f[:, 1]], p[:, f[:, 2]]
    det = (a * torch.cross(b, c, dim=-1)).sum(-1)  # [B, T]
    volume = torch.zeros(B, ncomp, dtype=det.dtype, device=det.device).index_add_(1, comp, det)
    anyculled = torch.zeros(B, ncomp, dtype=det.dtype, device=det.device).index_add_(1, comp, culled.to(det.dtype))
    winding = torch.sign(volume * _NDC_HANDEDNESS)[:, comp]  # +1: outward
    front = orient * winding > 0
    cullable = tt["face_closed"].unsqueeze(0) & (anyculled[:, comp] == 0) & (winding != 0)
    return ~cullable | front


class _SoftProgram:
    """Tape program of the soft edge term: non-differentiated passes for the per-pixel depth maxima
    (softmax shifts, which cancel in the blends) and, for the union coverage, each group's arg-max
    face; then the differentiated accumulation."""

    input_dtypes = {"clip": wp.vec4, "attrs": wp.float32, "wvis": wp.float32}

    def __init__(self, device, faces, topo_arrays, tribuf, dims, params, stripes, union):
        self.device = device
        self.faces, self.topo, self.tribuf = faces, topo_arrays, tribuf
        self.dims = dims  # B, V, T, H, W, C
        self.params = params  # sx, sy, inv_sigma, cutoff2, inv_gamma, near, far, depth_tol
        self.stripes = stripes
        self.union = int(union)

    def record(self, inputs):
        B, V, T, H, W, C = self.dims
        n = B * H * W
        dev = self.device
        zmax = [wp.full(n, -1.0e30, dtype=float, device=dev) for _ in range(3)]
        cmax = wp.zeros(3 * n, dtype=float, device=dev)
        cid = wp.full(3 * n, T, dtype=wp.int32, device=dev)
        # s_near, s_same, s_behind (coverages with union, SoftRas sums otherwise), den_n, num_n, den_b,
        # num_b, den_sv, den_s, num_s
        sizes = (n, n, n, n, n * C, n, n * C, n, n, n * C)
        outs = [wp.zeros(size, dtype=float, device=dev, requires_grad=True) for size in sizes]
        common = [inputs["clip"], inputs["attrs"], self.faces, *self.topo, self.tribuf, inputs["wvis"], *zmax, cmax,
                  cid, V, T, H, W, C, *self.params, self.stripes]
        modes = (0, 2, 1) if self.union else (0, 1)
        for mode in modes:
            wp.launch(kernels.soft_kernels[(self.union, mode)], dim=(B * T, self.stripes), device=dev,
                      inputs=[*common, *outs], record_tape=(mode == 1))
        return tuple(outs)


def soft_edges(clip, attrs, faces, tri, wvis, image_size, sigma, gamma, near, far, eps=1e-4, depth_tol=1e-3,
               edges="silhouette"):
    """The sigmoid edge term (Warp kernel, both backends); see :func:`wsim.render.kernels.soft_kernel`.

    Returns a dict of ``[B, H, W]`` buffers ``a_near``, ``a_same``, ``a_behind`` (the coverages of the
    three depth groups), ``den_near``, ``den_same``, ``den_behind``, ``den_visible`` and ``[B, H, W, C]``
    buffers ``num_near``, ``num_same``, ``num_behind``: ``num / den`` are the groups' soft attribute
    blends and ``den_visible`` the blend weight of the visible face itself. With ``edges="silhouette"``
    a group's coverage is the largest face coverage in it (union: 1/2 exactly on the true outline);
    with ``"all"`` it is SoftRas' ``1 - prod(1 - D)``.
    """
    init_warp()
    H, W = int(image_size[0]), int(image_size[1])
    B, V = clip.shape[0], clip.shape[1]
    if attrs.shape[0] != B:
        attrs = attrs.expand(B, -1, -1)
    C = attrs.shape[2]
    T = faces.shape[0]
    device = _warp_device(clip)
    faces_wp, faces_keep = _faces_warp(faces, device)
    topo = topology(faces, edges)
    tt = topo.on(clip.device)
    flags, face_on = soft_edge_flags(clip, faces, topo, near)
    flags, face_on = flags.reshape(-1).contiguous(), face_on.reshape(-1).contiguous()
    E = topo.edge_verts.shape[0]
    topo_arrays = [wp.from_torch(tt["face_edges"], dtype=wp.vec3i), wp.from_torch(tt["edge_verts"], dtype=wp.vec2i),
                   wp.from_torch(tt["edge_apex"], dtype=wp.int32), wp.from_torch(flags, dtype=wp.int32), wp.from_torch(tt["ring_start"], dtype=wp.int32),
                   wp.from_torch(tt["ring_edges"], dtype=wp.int32), E, wp.from_torch(face_on, dtype=wp.int32)]
    tri_c = tri.detach().to(torch.int32).contiguous().reshape(-1)
    s = float(min(H, W))
    cutoff2 = float(sigma) * math.log(1.0 / eps - 1.0)
    params = (W / s, H / s, 1.0 / float(sigma), cutoff2, 1.0 / float(gamma), float(near), float(far),
              float(depth_tol))
    union = edges == "silhouette"
    program = _SoftProgram(device, faces_wp, topo_arrays, wp.from_torch(tri_c, dtype=wp.int32),
                           (B, V, T, H, W, C), params, _stripes(clip, H), union)
    program._keep = (faces_keep, flags, face_on, tri_c, tt)
    outs = run_tape_program(program, {"clip": clip.reshape(B * V, 4).float().contiguous(),
                                      "attrs": attrs.float().reshape(-1), "wvis": wvis.float().reshape(-1)})
    names = ("a_near", "a_same", "a_behind", "den_near", "num_near", "den_behind", "num_behind", "den_visible",
             "den_same", "num_same")
    result = {}
    for name, out in zip(names, outs):
        result[name] = out.reshape(B, H, W, C) if name.startswith("num") else out.reshape(B, H, W)
    if not union:
        for name in ("a_near", "a_same", "a_behind"):
            result[name] = -torch.expm1(-result[name])
    return result
