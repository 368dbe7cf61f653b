"""Meshes as the renderer takes them: torch tensors, composed into one buffer.

The renderer draws one vertex/face buffer; several objects (and the ground) compose with correct
occlusion by concatenating them: :func:`concat_meshes` offsets the face indices and stacks per-vertex
colours (or UVs), broadcasting static meshes (``[V, 3]``) over the frames of moving ones (``[F, V, 3]``).
:func:`cube`, :func:`grid_plane` and :func:`icosphere` hand the generators of :mod:`wsim.geometry` to
the renderer as float32 tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import MeshError
from ..geometry import cloth, primitives


@dataclass
class Mesh:
    """One object: ``vertices`` ``[V, 3]`` or ``[F, V, 3]``, ``faces`` ``[T, 3]``, optional per-vertex
    ``colors`` ``[V, 3]``/``[F, V, 3]`` (default grey) and ``uvs`` ``[V, 2]``."""

    vertices: torch.Tensor
    faces: torch.Tensor
    colors: torch.Tensor | None = None
    uvs: torch.Tensor | None = None


def concat_meshes(meshes, default_color=(0.7, 0.7, 0.7)):
    """Concatenate meshes into ``(vertices [F, V, 3], faces [T, 3] int64, colors [F or 1, V, 3],
    uvs [V, 2] or None)``. Frame counts must agree or be 1 (a static mesh is repeated over frames).
    Differentiable with respect to every vertex and colour tensor."""
    meshes = list(meshes)
    if not meshes:
        raise MeshError("concat_meshes needs at least one mesh")
    frames = 1
    for m in meshes:
        if m.vertices.dim() == 3:
            if frames not in (1, m.vertices.shape[0]) and m.vertices.shape[0] != 1:
                raise MeshError(f"meshes have different frame counts: {frames} and {m.vertices.shape[0]}")
            frames = max(frames, m.vertices.shape[0])
    device = meshes[0].vertices.device
    verts, faces, colors, uvs = [], [], [], []
    offset = 0
    any_uv = any(m.uvs is not None for m in meshes)
    for m in meshes:
        v = m.vertices if m.vertices.dim() == 3 else m.vertices.unsqueeze(0)
        v = v.to(device=device, dtype=torch.float32).expand(frames, -1, -1)
        f = m.faces.to(device=device, dtype=torch.long)
        if f.dim() != 2 or f.shape[1] != 3:
            raise MeshError(f"faces must have shape [T, 3], got {tuple(f.shape)}")
        if f.numel() and (int(f.min()) < 0 or int(f.max()) >= v.shape[1]):
            raise MeshError(f"face index out of range for a mesh of {v.shape[1]} vertices")
        c = m.colors
        if c is None:
            c = torch.tensor(default_color, dtype=torch.float32, device=device).expand(v.shape[1], 3)
        c = c.to(device=device, dtype=torch.float32)
        c = (c if c.dim() == 3 else c.unsqueeze(0)).expand(frames, v.shape[1], 3)
        verts.append(v)
        faces.append(f + offset)
        colors.append(c)
        if any_uv:
            uv = m.uvs if m.uvs is not None else torch.zeros(v.shape[1], 2, device=device)
            uvs.append(uv.to(device=device, dtype=torch.float32))
        offset += v.shape[1]
    return (torch.cat(verts, 1), torch.cat(faces, 0), torch.cat(colors, 1), torch.cat(uvs, 0) if any_uv else None)


def _tensors(mesh, device, uvs: bool = False):
    vertices = torch.as_tensor(mesh.vertices, dtype=torch.float32, device=device)
    faces = torch.as_tensor(mesh.faces, dtype=torch.long, device=device)
    if not uvs:
        return vertices, faces
    return vertices, faces, torch.as_tensor(mesh.uvs, dtype=torch.float32, device=device)


def cube(size: float = 1.0, center=(0.0, 0.0, 0.0), split_faces: bool = False, device=None):
    """A cube of edge ``size`` as ``(vertices [V, 3], faces [12, 3])``, outward counter-clockwise faces.

    ``split_faces=True`` gives each side its own 4 vertices (24 in all) so that vertex normals are the
    face normals (crisp Phong shading) and each side can carry its own colour/UVs (UVs are returned as a
    third element in that case: each side maps to the whole unit square)."""
    return _tensors(primitives.box(size, center, split_faces), device, uvs=split_faces)


def grid_plane(size: float = 10.0, divisions: int = 1, height: float = 0.0, center=(0.0, 0.0), device=None):
    """A horizontal square (normal +Y) at ``y = height`` as ``(vertices, faces, uvs)``, split into
    ``divisions x divisions`` quads (more divisions keep per-face work small on the GPU)."""
    if int(divisions) < 1:
        raise MeshError(f"grid_plane divisions must be >= 1, got {divisions}")
    sheet = cloth.grid((size, size), (int(divisions),) * 2, (center[0], height, center[1]), alternate=False)
    return _tensors(sheet, device, uvs=True)


def icosphere(radius: float = 1.0, subdivisions: int = 2, center=(0.0, 0.0, 0.0), device=None):
    """A sphere mesh (``(vertices, faces)``) from a subdivided icosahedron; 20 * 4^n faces."""
    return _tensors(primitives.icosphere(radius, subdivisions, center), device)


class ParticleGlyphs:
    """Small icosahedra around the particles that no face uses (mass-spring chains have no surface),
    so that they show in images. Differentiable: each glyph vertex is its particle's position plus a
    fixed offset, so a pixel loss reaches the particles through the glyphs.

    ``faces`` ``[T, 3]`` of a vertex buffer of ``vertex_count`` vertices whose particles start at
    ``particle_start``; ``radius`` (m): one value, or one per particle. :attr:`faces` is the buffer's faces
    followed by the glyphs' (indices past ``vertex_count``); :meth:`vertices` and :meth:`colors` extend a
    ``[..., V, 3]`` buffer the same way. :attr:`count` is 0 when every particle is on a face."""

    def __init__(self, faces, vertex_count: int, particle_start: int, radius):
        faces = torch.as_tensor(faces, dtype=torch.int64).cpu()
        used = torch.zeros(vertex_count, dtype=torch.bool)
        used[faces.reshape(-1)] = True
        self.loose = torch.nonzero(~used[particle_start:]).reshape(-1) + particle_start
        self.count = int(self.loose.numel())
        glyph = primitives.icosphere(1.0, 0, (0.0, 0.0, 0.0))
        radius = torch.as_tensor(radius, dtype=torch.float32).reshape(-1)
        if radius.numel() > 1:
            radius = radius[self.loose - particle_start]
        #: ``[L, 12, 3]`` offsets of each glyph's vertices from its particle (m)
        self.offsets = radius.reshape(-1, 1, 1) * torch.as_tensor(glyph.vertices, dtype=torch.float32)[None]
        per = self.offsets.shape[1]
        extra = torch.as_tensor(glyph.faces, dtype=torch.int64)[None] + vertex_count + \
            per * torch.arange(self.count)[:, None, None]
        self.faces = torch.cat([faces, extra.reshape(-1, 3)])

    def vertices(self, vertices: torch.Tensor) -> torch.Tensor:
        """``[..., V, 3]`` -> ``[..., V + 12 L, 3]``: the glyph vertices appended."""
        offsets = self.offsets.to(vertices.device, vertices.dtype)
        glyphs = vertices[..., self.loose.to(vertices.device), None, :] + offsets
        return torch.cat([vertices, glyphs.flatten(-3, -2)], dim=-2)

    def colors(self, colors: torch.Tensor) -> torch.Tensor:
        """Per-vertex ``[..., V, C]`` colours extended with each glyph in its particle's colour."""
        per = self.offsets.shape[1]
        return torch.cat([colors, colors[..., self.loose.to(colors.device), :].repeat_interleave(per, dim=-2)], dim=-2)
