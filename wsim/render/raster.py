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
from . import kernels

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
        wp.launch(kernels.raster_bary_kernel, dim=n, device=self.device,
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
        for id_pass in (0, 1):
            wp.launch(kernels.raster_depth_kernel, dim=(B * T, stripes), device=device,
                      inputs=[clip_wp, faces_wp, V, T, H, W, float(near), stripes, zbuf, tribuf, id_pass],
                      record_tape=False)
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


def face_neighbours(faces: torch.Tensor) -> torch.Tensor:
    """``[T, 3]`` int64: the face across edge ``(k, k+1)`` of each face, -1 for a boundary or a
    non-manifold edge (an edge shared by more than two faces)."""
    f = faces.long()
    T = f.shape[0]
    a = f
    b = f[:, [1, 2, 0]]
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    key = (lo * (int(f.max()) + 1 if T else 1) + hi).reshape(-1)  # edge slot e = 3 * face + k
    order = torch.argsort(key, stable=True)
    ks = key[order]
    n = ks.numel()
    nb = torch.full((n,), -1, dtype=torch.long, device=f.device)
    if n >= 2:
        same_next = ks[1:] == ks[:-1]  # slot i pairs with i + 1
        prev_same = torch.cat([torch.zeros(1, dtype=torch.bool, device=f.device), same_next[:-1]])
        next_same = torch.cat([same_next[1:], torch.zeros(1, dtype=torch.bool, device=f.device)])
        pair = same_next & ~prev_same & ~next_same  # exactly two slots share the edge
        i = torch.nonzero(pair).reshape(-1)
        e0, e1 = order[i], order[i + 1]
        nb[e0] = e1 // 3
        nb[e1] = e0 // 3
    return nb.reshape(T, 3)


def soft_edge_mask(clip: torch.Tensor, faces: torch.Tensor, neighbours: torch.Tensor, near: float) -> torch.Tensor:
    """``[B, T]`` int32 bitmask: bit k set when edge ``(k, k+1)`` of the face is *soft* in that frame:
    a boundary edge, or a silhouette (the face across it has the opposite screen orientation, or is
    culled at the near plane). Inner edges between faces that face the same way stay hard, so that the
    sigmoid falloff does not open seams inside a surface."""
    with torch.no_grad():
        f = faces.long()
        c = clip.detach()
        w = c[..., 3]
        xy = c[..., :2] / torch.where(w.abs() > 1e-12, w, torch.full_like(w, 1e-12)).unsqueeze(-1)
        p0, p1, p2 = xy[:, f[:, 0]], xy[:, f[:, 1]], xy[:, f[:, 2]]
        e1, e2 = p1 - p0, p2 - p0
        orient = torch.sign(e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0])  # [B, T]
        culled = (w[:, f] < near).any(-1)  # [B, T]
        orient = torch.where(culled, torch.zeros_like(orient), orient)
        nbc = neighbours.clamp_min(0)
        mask = torch.zeros_like(orient, dtype=torch.int32)
        for k in range(3):
            other = orient[:, nbc[:, k]]
            soft = (neighbours[:, k] < 0).unsqueeze(0) | (other != orient) | (other == 0)
            mask = mask | (soft.to(torch.int32) << k)
        return mask


class _SoftProgram:
    """Tape program of the soft edge term: a non-differentiated pass for the per-pixel depth maxima
    (softmax shifts, which cancel in the blends) and the differentiated accumulation."""

    input_dtypes = {"clip": wp.vec4, "attrs": wp.float32}

    def __init__(self, device, faces, softmask, tribuf, wvis, dims, params, stripes):
        self.device = device
        self.faces, self.softmask, self.tribuf, self.wvis = faces, softmask, tribuf, wvis
        self.dims = dims  # B, V, T, H, W, C
        self.params = params  # sx, sy, inv_sigma, cutoff2, inv_gamma, near, far, depth_tol
        self.stripes = stripes

    def record(self, inputs):
        B, V, T, H, W, C = self.dims
        n = B * H * W
        dev = self.device
        zmax_n = wp.full(n, -1.0e30, dtype=float, device=dev)
        zmax_b = wp.full(n, -1.0e30, dtype=float, device=dev)
        outs = [wp.zeros(n, dtype=float, device=dev, requires_grad=True) for _ in range(3)]  # s_near, s_same, s_behind
        den_n = wp.zeros(n, dtype=float, device=dev, requires_grad=True)
        num_n = wp.zeros(n * C, dtype=float, device=dev, requires_grad=True)
        den_b = wp.zeros(n, dtype=float, device=dev, requires_grad=True)
        num_b = wp.zeros(n * C, dtype=float, device=dev, requires_grad=True)
        outs += [den_n, num_n, den_b, num_b]
        common = [inputs["clip"], inputs["attrs"], self.faces, self.softmask, self.tribuf, self.wvis, zmax_n, zmax_b,
                  V, T, H, W, C, *self.params, self.stripes]
        wp.launch(kernels.soft_kernel, dim=(B * T, self.stripes), device=dev, inputs=[*common, 0, *outs],
                  record_tape=False)
        wp.launch(kernels.soft_kernel, dim=(B * T, self.stripes), device=dev, inputs=[*common, 1, *outs])
        return tuple(outs)


def soft_edges(clip, attrs, faces, tri, wvis, image_size, sigma, gamma, near, far, eps=1e-4, depth_tol=1e-3,
               neighbours=None):
    """The sigmoid edge term (Warp kernel, both backends); see :func:`wsim.render.kernels.soft_kernel`.

    Returns a dict of ``[B, H, W]`` buffers ``s_near``, ``s_same``, ``s_behind``, ``den_near``,
    ``den_behind`` and ``[B, H, W, C]`` buffers ``num_near``, ``num_behind``: a group's coverage is
    ``1 - exp(-s_group)``, that of all faces ``1 - exp(-(s_near + s_same + s_behind))`` (SoftRas'
    ``1 - prod(1 - D)``), and ``num / den`` are the near and behind groups' soft attribute blends.
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
    if neighbours is None:
        neighbours = face_neighbours(faces)
    mask = soft_edge_mask(clip, faces, neighbours, near).reshape(-1).contiguous()
    tri_c = tri.detach().to(torch.int32).contiguous().reshape(-1)
    wvis_c = wvis.detach().float().contiguous().reshape(-1)
    s = float(min(H, W))
    cutoff2 = float(sigma) * math.log(1.0 / eps - 1.0)
    params = (W / s, H / s, 1.0 / float(sigma), cutoff2, 1.0 / float(gamma), float(near), float(far),
              float(depth_tol))
    program = _SoftProgram(device, faces_wp, wp.from_torch(mask, dtype=wp.int32),
                           wp.from_torch(tri_c, dtype=wp.int32), wp.from_torch(wvis_c, dtype=wp.float32),
                           (B, V, T, H, W, C), params, _stripes(clip, H))
    program._keep = (faces_keep, mask, tri_c, wvis_c)
    outs = run_tape_program(
        program, {"clip": clip.reshape(B * V, 4).float().contiguous(), "attrs": attrs.float().reshape(-1)}
    )
    names = ("s_near", "s_same", "s_behind", "den_near", "num_near", "den_behind", "num_behind")
    result = {}
    for name, out in zip(names, outs):
        result[name] = out.reshape(B, H, W, C) if name.startswith("num") else out.reshape(B, H, W)
    return result
