"""The differentiable soft renderer (paper Section 3.2): one torch module, two backends.

Image formation, per frame and pixel ``p`` (row 0 at the top, see :mod:`wsim.render.camera`):

1. **Visible surface** (DIB-R-style foreground). A hard rasteriser (nvdiffrast on CUDA, Warp kernels
   otherwise) finds the nearest face ``v`` covering ``p`` and its perspective-correct barycentrics; the
   vertex attributes (base colour or UV, and world position and normal for Phong) interpolated there
   give ``F_p``. Its gradient reaches the vertices through the barycentrics at covered pixels.
2. **Soft coverage.** Every face ``j`` whose sigmoid footprint reaches ``p`` has a coverage
   ``D_j = sigmoid(delta_j d_j^2 / sigma)`` (``d_j``: distance from ``p`` to the projected triangle in
   isotropic NDC, i.e. NDC for square images, the shorter side spanning [-1, 1] otherwise; ``delta = +1``
   inside, ``-1`` outside; faces with ``d^2 > sigma ln(1/eps - 1)`` outside are skipped).
   With ``soft_edges="silhouette"`` (default) only boundary and silhouette edges (edges whose two faces
   face opposite ways on screen) make ``D`` fall off, and inside a face ``d`` is the distance to the
   nearest such edge of its ring (its vertex one-ring, and the edges up to three vertex hops away that
   are not hidden behind it at ``p``: :mod:`wsim.render.topology`); inner edges of a surface stay
   hard, so that a surface shows no seams along its triangle edges. Outside a face, its footprint counts where a soft edge is its
   nearest feature and hands over smoothly (smoothstep) to the neighbour where an inner edge is nearer.
   The coverage is the *union* ``A_p = max_j D_j``, and back faces of closed meshes take no part: on
   the true outline ``A = 1/2`` exactly, at any sigma (outside every face all ``D_j < 1/2``, inside the
   covering face has ``D >= 1/2``), so the soft silhouette is unbiased and ``A > 1/2`` is the hard
   coverage. The gradient of ``A`` reaches the vertices of the arg-max face.
   ``soft_edges="all"`` is SoftRas exactly (every edge soft, every face, and ``A_p = 1 - prod_j (1 - D_j)``,
   computed as ``1 - exp(-sum_j softplus(delta_j d_j^2 / sigma))``); that aggregation overcounts where
   faces share an edge: both faces of a closed mesh's silhouette edge give ``D = 1/2`` there, so ``A``
   is 3/4 on the true outline and the soft outline lies about ``sqrt(0.9 sigma)`` outside it.
3. **Soft layers** (SoftRas-style depth-aware blend). Relative to the visible depth at ``p``, each face of
   the footprint is *near* (in front of it; every face where ``p`` is uncovered), *same* (the visible
   surface and faces at its depth, within ``depth_tol``) or *behind* (a linear hand-over between groups
   keeps this continuous). Each group has a coverage ``a_g`` (aggregated over its faces as in 2.) and an
   attribute blend with weights ``D_j exp(z_j / gamma)`` (``z_j = (far - depth_j) / (far - near)`` at the
   point of face ``j`` nearest to ``p``: nearer faces win as ``gamma -> 0``); the *same* group's blend
   includes ``F_p`` for the visible face. Attributes are blended, then shaded.
4. **Compositing**, front to back, over the background ``bg``: on a covered pixel
   ``RGB = a_near E_near + (1 - a_near) (a_same E_same + (1 - a_same) (a_behind E_behind + (1 - a_behind) bg))``,
   on an uncovered one ``RGB = A E_near + (1 - A) bg``; the alpha channel is ``A`` (the three group
   coverages multiply to ``1 - A``). An object's edge thus blends the same way over the background, the
   ground or another object.
5. **Pixel filter** (``supersample`` s > 1): steps 1-4 run on ``s x s`` samples per pixel, and the RGBA
   of a pixel is their mean (a box filter), as a camera sensor or a path tracer's film integrates over
   the pixel's area; with a small sigma the alpha is then the covered fraction of the pixel.

As ``sigma -> 0`` the image tends to the hard rasterisation (``A`` -> coverage; the near and behind
groups vanish), and at every sigma the image is continuous across a silhouette (``A = 1/2`` on the edge
from both sides), so pixels just outside a silhouette pass gradients to the vertices through ``A`` and
the near group. The image remains only piecewise smooth where attributes are discontinuous (e.g. a
cube with a separate colour per side, at a pixel centre crossing a crease near a corner). Known
steps: two faces sharing an inner edge can disagree on their inside coverage where the nearest soft
edge lies in one face's ring only (faces far smaller on screen than the sigmoid's reach, so that the
nearest silhouette edge is more than three hops away; see ``GATED_RING_DEPTH``); with a small
``gamma`` (1e-4) a face entering a depth group takes over that group's colour blend within a
micrometre of motion (``gamma`` of about 1e-2 avoids this for optimisation); and on the many-toothed
gear prism at 24 px single pixels' alpha still steps in 8 of 24 random views, by 0.07 or less
except in one (0.45: the hidden-contour gate decides on the plane of a nearly edge-on tooth flank, which
swings across the gate's ramp within 1e-5 of motion); see tests/test_render_continuity.py. The L and
cross prisms' steps (0.23-0.44: hidden reflex contours in the one-ring, pixels inside reflex outline
corners) and the gear prism's other large ones (0.10-0.42: gates that switched) are closed.

Frames render as one batch; several meshes compose with correct occlusion when concatenated into one
buffer (:func:`wsim.render.meshes.concat_meshes`).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import ParameterError, check_range
from . import raster
from .camera import Camera
from .composite import MAX_LIGHTS, composite_torch, composite_warp
from .shading import DirectionalLight, Material, phong, sample_texture, vertex_normals
from .topology import topology

SHADINGS = ("flat", "phong")
COMPOSITORS = ("auto", "warp", "torch")


class SoftRenderer(torch.nn.Module):
    """Differentiable soft rasteriser returning RGBA ``[F, H, W, 4]`` float32 images (row 0 at the top).

    Parameters
    ----------
    camera:
        A :class:`~wsim.render.camera.Camera` (one camera, or one per frame).
    image_size:
        ``(H, W)`` in pixels, or an int for square images.
    sigma:
        Sharpness of the sigmoid edges (squared isotropic-NDC distance units); ``-> 0`` gives the hard
        image. Defaults to 1e-4 (SoftRas); gradSim used 1e-5.
    gamma:
        Depth temperature of the soft blend between overlapping edge faces.
    eps:
        Faces whose coverage at a pixel would be below ``eps`` are skipped there.
    background:
        RGB background colour (tensor ``[3]`` or ``[F, 3]``; may require grad).
    shading:
        ``"flat"`` (base colour as is) or ``"phong"``.
    backend:
        ``"auto"`` (nvdiffrast for CUDA tensors when installed, else Warp), ``"warp"`` or ``"nvdiffrast"``.
    lights, material:
        Defaults for Phong shading (overridable per call): a list of
        :class:`~wsim.render.shading.DirectionalLight`/:class:`~wsim.render.shading.PointLight` and a
        :class:`~wsim.render.shading.Material`.
    depth_tol:
        Relative depth margin between the groups of step 3 (faces within ``depth_tol`` of the visible
        depth belong to its surface; hand-over between ``depth_tol`` and ``2 depth_tol``).
    soft_edges:
        ``"silhouette"`` (default: only boundary/silhouette edges are soft, no seams inside surfaces)
        or ``"all"`` (SoftRas: every triangle edge is soft).
    supersample:
        ``s`` >= 1: render ``s x s`` samples per pixel (an ``[F, sH, sW]`` image) and average them, the
        box filter of a camera sensor or a path tracer's film: each pixel then carries the fraction of
        its area an object covers, which a video wsim did not render shows on every outline (with
        ``sigma`` near ``0.1 (2 / (s W))^2``). Costs ``s^2`` times the pixels; ``return_buffers`` gives
        the buffers at the sample resolution.
    compositor:
        Where steps 3-4 (shading and compositing) run: ``"warp"``, one kernel that shades only the layers
        that show at a pixel (per-vertex RGB colours, at most 8 lights); ``"torch"``, torch operations on
        whole images (textures, and always with ``return_buffers``); ``"auto"`` (default) takes the kernel
        wherever it applies. Both give the same image and gradients to float round-off
        (:mod:`wsim.render.composite`).
    """

    def __init__(self, camera: Camera, image_size=(64, 64), sigma: float = 1e-4, gamma: float = 1e-4,
                 eps: float = 1e-4, background=(1.0, 1.0, 1.0), shading: str = "flat", backend: str = "auto",
                 lights: Sequence | None = None, material: Material | None = None, depth_tol: float = 1e-3,
                 soft_edges: str = "silhouette", supersample: int = 1, compositor: str = "auto"):
        super().__init__()
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        if min(self.image_size) < 1:
            raise ParameterError(f"image_size must be positive, got {self.image_size}")
        check_range("renderer sigma", sigma, low=0.0)
        check_range("renderer gamma", gamma, low=0.0)
        check_range("renderer eps", eps, low=0.0, high=0.5, high_inclusive=False)
        check_range("renderer depth_tol", depth_tol, low=0.0, high=1.0, low_inclusive=True, high_inclusive=False)
        if shading not in SHADINGS:
            raise ParameterError(f"renderer shading '{shading}' is not one of {', '.join(SHADINGS)}")
        if str(backend).lower() not in raster.BACKENDS:
            raise ParameterError(f"renderer backend '{backend}' is not one of {', '.join(raster.BACKENDS)}")
        if soft_edges not in ("silhouette", "all"):
            raise ParameterError(f"renderer soft_edges '{soft_edges}' is not one of silhouette, all")
        if int(supersample) != supersample or not 1 <= supersample <= 16:
            raise ParameterError(f"renderer supersample must be an integer in [1, 16], got {supersample}")
        if compositor not in COMPOSITORS:
            raise ParameterError(f"renderer compositor '{compositor}' is not one of {', '.join(COMPOSITORS)}")
        self.supersample = int(supersample)
        self.compositor = compositor
        self.soft_edge_mode = soft_edges
        self.camera = camera
        self.sigma, self.gamma, self.eps, self.depth_tol = float(sigma), float(gamma), float(eps), float(depth_tol)
        self.background = background
        self.shading = shading
        self.backend = str(backend).lower()
        self.lights = list(lights) if lights is not None else [DirectionalLight()]
        self.material = material if material is not None else Material()
        self._topo = None  # (faces tensor, its version, its Topology): see _topology

    def _topology(self, faces: torch.Tensor):
        """The edge structure of ``faces``, rebuilt only when another tensor, or an in-place change of
        this one, comes in: building it is O(T) Python work, too slow to repeat for every rendered batch,
        and callers render one mesh many times with the same face tensor."""
        cached = self._topo
        if cached is None or cached[0] is not faces or cached[1] != faces._version:
            self._topo = cached = (faces, faces._version, topology(faces, self.soft_edge_mode))
        return cached[2]

    def extra_repr(self) -> str:
        return (f"image_size={self.image_size}, sigma={self.sigma:g}, gamma={self.gamma:g}, "
                f"shading={self.shading!r}, backend={self.backend!r}, supersample={self.supersample}")

    # ------------------------------------------------------------------------------------------
    def forward(self, vertices: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor | None = None,
                uvs: torch.Tensor | None = None, texture: torch.Tensor | None = None,
                normals: torch.Tensor | None = None, lights: Sequence | None = None,
                material: Material | None = None, background=None, camera: Camera | None = None,
                return_buffers: bool = False):
        """Render ``vertices`` ``[F, V, 3]`` (or ``[V, 3]``) with ``faces`` ``[T, 3]`` (integer).

        The base colour comes from ``colors`` (``[V, 3]`` or ``[F, V, 3]``) or, when given, from ``uvs``
        ``[V, 2]``/``[F, V, 2]`` and ``texture`` ``[Ht, Wt, 3]``/``[F, Ht, Wt, 3]`` (bilinear). With
        Phong shading, ``normals`` (``[V, 3]``/``[F, V, 3]``) default to area-weighted vertex normals.
        Returns RGBA ``[F, H, W, 4]`` float32 on the vertices' device (and a dict of intermediate
        buffers when ``return_buffers``).
        """
        cam = camera if camera is not None else self.camera
        H, W = (n * self.supersample for n in self.image_size)
        verts = vertices if vertices.dim() == 3 else vertices.unsqueeze(0)
        if verts.shape[-1] != 3:
            raise ParameterError(f"vertices must have shape [F, V, 3] or [V, 3], got {tuple(vertices.shape)}")
        verts = verts.float()
        device = verts.device
        given_faces = faces  # the topology is kept per tensor the caller passes, before any device copy
        faces = faces.to(device)
        if faces.dim() != 2 or faces.shape[-1] != 3 or faces.dtype.is_floating_point:
            raise ParameterError(f"faces must be an integer tensor [T, 3], got {tuple(faces.shape)} {faces.dtype}")
        V = verts.shape[1]
        topo = self._topology(given_faces)
        if faces.numel() and (topo.index_range[0] < 0 or topo.index_range[1] >= V):  # read on the host, no sync
            raise ParameterError(f"face indices must lie in [0, {V - 1}]")
        backend = raster.resolve_backend(self.backend, device)
        cam = cam.to(device) if cam.view.device != device else cam
        clip = cam.world_to_clip(verts, (H, W))  # [F, V, 4]
        B = clip.shape[0]
        if verts.shape[0] != B:
            verts = verts.expand(B, -1, -1)

        # ---- vertex attributes: base colour (or uv), then world position and normal for Phong
        use_texture = texture is not None
        if use_texture:
            if uvs is None:
                raise ParameterError("a texture needs per-vertex uvs [V, 2]")
            base = uvs.to(device).float()
        else:
            base = colors.to(device).float() if colors is not None else torch.full((V, 3), 0.7, device=device)
        base = base if base.dim() == 3 else base.unsqueeze(0)
        if base.shape[1] != V:
            raise ParameterError(f"per-vertex colours/uvs must have {V} rows, got {base.shape[1]}")
        groups = [base.expand(B, -1, -1)]
        phong_mode = self.shading == "phong"
        if phong_mode:
            if normals is None:
                nrm = vertex_normals(verts, faces)
            else:
                nrm = normals.to(device).float()
                nrm = (nrm if nrm.dim() == 3 else nrm.unsqueeze(0)).expand(B, -1, -1)
            groups += [verts, nrm]
        attrs = torch.cat(groups, dim=-1)  # [B, V, C]
        nb = base.shape[-1]

        # ---- 1. visible surface
        rast, tri = raster.visible_surface(clip, faces, (H, W), backend, cam.near)
        fg_attr = raster.interpolate(attrs, rast, tri, faces, backend)
        covered = tri > 0
        n, f = cam.near, cam.far
        # view depth of the visible surface (perspective-correct barycentrics interpolate view-space
        # quantities linearly), differentiable through the barycentrics; 0 where nothing is covered
        wvis = raster.interpolate(clip[..., 3:4].contiguous(), rast, tri, faces, backend)[..., 0]
        wvis = torch.where(covered, wvis, torch.zeros_like(wvis))

        # ---- 2./3. soft coverage and soft edge layers (Warp kernel on both backends)
        soft = raster.soft_edges(clip, attrs, faces, topo, tri, wvis, (H, W), self.sigma,
                                 self.gamma, n, f, eps=self.eps, depth_tol=self.depth_tol)
        union = self.soft_edge_mode == "silhouette"
        bg = background if background is not None else self.background
        bg = torch.as_tensor(bg, dtype=torch.float32, device=device) if not isinstance(bg, torch.Tensor) else bg.to(device)
        bg = bg.reshape(-1, 3)
        lights = lights if lights is not None else self.lights
        material = material if material is not None else self.material
        eye = cam.position().to(device)
        kernel_applies = not use_texture and nb == 3 and (not phong_mode or len(lights) <= MAX_LIGHTS)
        fused = not return_buffers and (self.compositor == "warp" or (self.compositor == "auto" and kernel_applies))
        if fused:
            image = composite_warp(soft, fg_attr, covered, bg, union, phong_mode, eye, lights, material)
        else:
            def shade_attr(attr_buf):
                b = attr_buf[..., :nb]
                colour = sample_texture(texture.to(device), b, backend) if use_texture else b
                if phong_mode:
                    colour = phong(colour, attr_buf[..., nb:nb + 3], attr_buf[..., nb + 3:nb + 6], eye, lights,
                                   material)
                return colour

            image, layers = composite_torch(soft, fg_attr, covered, bg, union, shade_attr)
        if self.supersample > 1:
            image = torch.nn.functional.avg_pool2d(image.permute(0, 3, 1, 2), self.supersample).permute(0, 2, 3, 1)
        if return_buffers:
            return image, {"rast": rast, "tri": tri, "backend": backend, **layers, **soft}
        return image
