"""Differentiable rendering: camera, soft rasteriser (nvdiffrast on CUDA, Warp everywhere), shading,
scene composition and video output. See :mod:`wsim.render.renderer` for the image formation model and
:mod:`wsim.render.camera` for the conventions (Y up, camera looks down -Z, image row 0 at the top)."""

from .camera import Camera, look_at_matrix, spherical_eye
from .renderer import SoftRenderer
from .meshes import Mesh, ParticleGlyphs, concat_meshes, cube, grid_plane, icosphere
from .shading import DirectionalLight, Material, PointLight, vertex_normals

__all__ = [
    "Camera",
    "DirectionalLight",
    "Material",
    "Mesh",
    "ParticleGlyphs",
    "PointLight",
    "SoftRenderer",
    "concat_meshes",
    "cube",
    "grid_plane",
    "icosphere",
    "look_at_matrix",
    "spherical_eye",
    "vertex_normals",
]

from .video import render_rollout_video, write_frames, write_png, write_video  # noqa: E402

__all__ += ["render_rollout_video", "write_frames", "write_png", "write_video"]

# Mitsuba itself is imported only when render_mitsuba runs (pip install wsim[mitsuba])
from .appearance import Appearance, sample_appearance  # noqa: E402
from .mitsuba import render_mitsuba  # noqa: E402

__all__ += ["Appearance", "render_mitsuba", "sample_appearance"]
