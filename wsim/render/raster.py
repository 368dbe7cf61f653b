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
from ..errors import ConfigError, ParameterError
from . import kernels, soft_ring, visibility
from .topology import Topology

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


class _InterpolateProgram:
    """Tape program of :func:`wsim.render.visibility.interpolate_kernel`."""

    input_dtypes = {"attrs": wp.float32, "rast": wp.vec4}

    def __init__(self, device, faces, tribuf, dims):
        self.device = device
        self.faces, self.tribuf = faces, tribuf
        self.dims = dims  # B, H, W, V, C, attr_frames

    def record(self, inputs):
        B, H, W, V, C, attr_frames = self.dims
        out = wp.zeros(B * H * W * C, dtype=float, device=self.device, requires_grad=True)
        wp.launch(visibility.interpolate_kernel, dim=B * H * W, device=self.device,
                  inputs=[inputs["attrs"], inputs["rast"], self.tribuf, self.faces, H * W, V, C, attr_frames, out])
        return (out,)


def _warp_interpolate(attrs: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor, faces: torch.Tensor):
    B, H, W = tri.shape
    attr_frames, V, C = attrs.shape
    if attr_frames not in (1, B):
        raise ParameterError(f"vertex attributes have {attr_frames} frames for {B} rendered frames; give one or {B}")
    device = _warp_device(rast)
    faces_wp, faces_keep = _faces_warp(faces, device)
    tri_c = tri.detach().to(torch.int32).contiguous().reshape(-1)
    program = _InterpolateProgram(device, faces_wp, wp.from_torch(tri_c, dtype=wp.int32),
                                  (B, H, W, V, C, attr_frames))
    program._keep = (faces_keep, tri_c)
    (out,) = run_tape_program(program, {"attrs": attrs.float().reshape(-1), "rast": rast.reshape(-1, 4)})
    return out.reshape(B, H, W, C)


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
    return _warp_interpolate(attrs, rast, tri, faces)


# ----------------------------------------------------------------------------- soft edge term


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
    """Tape program of the soft edge term: a non-differentiated pass for the per-pixel depth maxima
    (softmax shifts, which cancel in the blends) and, for the union coverage, each group's largest
    face coverage with its face; then the differentiated accumulation."""

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
        cover_key = wp.full(3 * n, -1, dtype=wp.int64, device=dev)  # see kernels._cover_key
        # s_near, s_same, s_behind (coverages with union, SoftRas sums otherwise), den_n, num_n, den_b,
        # num_b, den_sv, den_s, num_s
        sizes = (n, n, n, n, n * C, n, n * C, n, n, n * C)
        outs = [wp.zeros(size, dtype=float, device=dev, requires_grad=True) for size in sizes]
        # per frame and face, the soft edges of its ring within the sigmoid's reach (their count, 0: no ring
        # search, and the entries, in the ring's layout repeated per frame), in place of the whole ring
        topo = list(self.topo)
        _, edge_verts, _, _, edge_soft, ring_start, ring_edges, E, face_on = topo
        ring_near = wp.zeros(B * T, dtype=wp.int32, device=dev)
        topo[6] = near_edges = wp.zeros(max(B * ring_edges.shape[0], 1), dtype=wp.int32, device=dev)
        sx, sy, inv_sigma, _, _, near = self.params[:6]
        reach = math.sqrt(1.01 * kernels.BIG / inv_sigma)  # where delta d^2 / sigma reaches its cap
        wp.launch(soft_ring.ring_reach_kernel, dim=B * T, device=dev, record_tape=False,
                  inputs=[inputs["clip"], self.faces, face_on, edge_verts, edge_soft, ring_start, ring_edges, V, T, E,
                          sx, sy, reach, near, ring_near, near_edges])
        # room for every face's ring codes (one per pixel of its box; kernels.soft_kernel): the box sizes
        # and their running sum, whose entry past the last face (a trailing 0 summed) is the total: one
        # integer read back to the host
        box_area = wp.zeros(B * T + 1, dtype=wp.int32, device=dev)
        wp.launch(soft_ring.soft_box_kernel, dim=B * T, device=dev, record_tape=False,
                  inputs=[inputs["clip"], self.faces, topo[0], edge_soft, E, face_on, V, T, H, W, sx, sy,
                          self.params[3], near, box_area])
        code_start = wp.empty(B * T + 1, dtype=wp.int32, device=dev)
        wp.utils.array_scan(box_area, code_start, inclusive=False)
        codes = wp.empty(max(int(code_start[B * T:].numpy()[0]), 1), dtype=wp.int32, device=dev)
        common = [inputs["clip"], inputs["attrs"], self.faces, *topo, ring_near, self.tribuf, inputs["wvis"],
                  *zmax, cover_key, V, T, H, W, C, *self.params, self.stripes, code_start, codes]
        for mode in (0, 1):
            wp.launch(kernels.soft_kernels[(self.union, mode)], dim=(B * T, self.stripes), device=dev,
                      inputs=[*common, *outs], record_tape=(mode == 1))
        return tuple(outs)


def soft_edges(clip, attrs, faces, topo: Topology, tri, wvis, image_size, sigma, gamma, near, far, eps=1e-4,
               depth_tol=1e-3):
    """The sigmoid edge term (Warp kernel, both backends); see :func:`wsim.render.kernels.soft_kernel`.

    Returns a dict of ``[B, H, W]`` buffers ``a_near``, ``a_same``, ``a_behind`` (the coverages of the
    three depth groups), ``den_near``, ``den_same``, ``den_behind``, ``den_visible`` and ``[B, H, W, C]``
    buffers ``num_near``, ``num_same``, ``num_behind``: ``num / den`` are the groups' soft attribute
    blends and ``den_visible`` the blend weight of the visible face itself. ``topo``: the
    :class:`~wsim.render.topology.Topology` of ``faces``; in its mode ``"silhouette"``
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
    tt = topo.on(clip.device)
    flags, face_on = soft_edge_flags(clip, faces, topo, near)
    flags, face_on = flags.reshape(-1).contiguous(), face_on.reshape(-1).contiguous()
    E = topo.edge_verts.shape[0]
    # edge_faces: the gated ring entries are tested against the planes of their edges' faces
    topo_arrays = [wp.from_torch(tt["face_edges"], dtype=wp.vec3i), wp.from_torch(tt["edge_verts"], dtype=wp.vec2i),
                   wp.from_torch(tt["edge_faces32"], dtype=wp.vec2i), wp.from_torch(tt["edge_apex"], dtype=wp.int32),
                   wp.from_torch(flags, dtype=wp.int32), wp.from_torch(tt["ring_start"], dtype=wp.int32),
                   wp.from_torch(tt["ring_edges"], dtype=wp.int32), E, wp.from_torch(face_on, dtype=wp.int32)]
    tri_c = tri.detach().to(torch.int32).contiguous().reshape(-1)
    s = float(min(H, W))
    cutoff2 = float(sigma) * math.log(1.0 / eps - 1.0)
    params = (W / s, H / s, 1.0 / float(sigma), cutoff2, 1.0 / float(gamma), float(near), float(far),
              float(depth_tol))
    union = topo.mode == "silhouette"
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
