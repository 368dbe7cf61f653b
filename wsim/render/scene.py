"""Scene helpers: compose several meshes into one buffer, simple primitives.

The renderer draws one vertex/face buffer; several objects (and the ground) compose with correct
occlusion by concatenating them: :func:`concat_meshes` offsets the face indices and stacks per-vertex
colours (or UVs), broadcasting static meshes (``[V, 3]``) over the frames of moving ones (``[F, V, 3]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import MeshError


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


_CUBE_CORNERS = [
    (-1, -1, -1), (1, -1, -1), (1, 1, -1), (-1, 1, -1),
    (-1, -1, 1), (1, -1, 1), (1, 1, 1), (-1, 1, 1),
]
# each face as a quad of corner indices, counter-clockwise seen from outside
_CUBE_QUADS = [(4, 5, 6, 7), (1, 0, 3, 2), (5, 1, 2, 6), (0, 4, 7, 3), (7, 6, 2, 3), (0, 1, 5, 4)]


def cube(size: float = 1.0, center=(0.0, 0.0, 0.0), split_faces: bool = False, device=None):
    """A cube of edge ``size`` as ``(vertices [V, 3], faces [12, 3])``, outward counter-clockwise faces.

    ``split_faces=True`` gives each side its own 4 vertices (24 in all) so that vertex normals are the
    face normals (crisp Phong shading) and each side can carry its own colour/UVs (UVs are returned as a
    third element in that case: each side maps to the whole unit square)."""
    corners = torch.tensor(_CUBE_CORNERS, dtype=torch.float32, device=device) * (size / 2.0)
    corners = corners + torch.as_tensor(center, dtype=torch.float32, device=device)
    if not split_faces:
        faces = []
        for a, b, c, d in _CUBE_QUADS:
            faces += [(a, b, c), (a, c, d)]
        return corners, torch.tensor(faces, dtype=torch.long, device=device)
    verts, faces, uvs = [], [], []
    square = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    for q, quad in enumerate(_CUBE_QUADS):
        base = 4 * q
        verts += [corners[k] for k in quad]
        uvs += square
        faces += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
    return (torch.stack(verts), torch.tensor(faces, dtype=torch.long, device=device),
            torch.tensor(uvs, dtype=torch.float32, device=device))


def grid_plane(size: float = 10.0, divisions: int = 1, height: float = 0.0, center=(0.0, 0.0), device=None):
    """A horizontal square (normal +Y) at ``y = height`` as ``(vertices, faces, uvs)``, split into
    ``divisions x divisions`` quads (more divisions keep per-face work small on the GPU)."""
    n = int(divisions)
    if n < 1:
        raise MeshError(f"grid_plane divisions must be >= 1, got {divisions}")
    s = torch.linspace(-size / 2.0, size / 2.0, n + 1, device=device)
    zz, xx = torch.meshgrid(s, s, indexing="ij")
    verts = torch.stack([xx + center[0], torch.full_like(xx, float(height)), zz + center[1]], dim=-1).reshape(-1, 3)
    uvs = torch.stack([(xx + size / 2) / size, 1.0 - (zz + size / 2) / size], dim=-1).reshape(-1, 2)
    faces = []
    for r in range(n):
        for c in range(n):
            a = r * (n + 1) + c
            b, d = a + 1, a + n + 1
            e = d + 1
            faces += [(a, d, e), (a, e, b)]  # counter-clockwise seen from above (+Y)
    return verts, torch.tensor(faces, dtype=torch.long, device=device), uvs


def icosphere(radius: float = 1.0, subdivisions: int = 2, center=(0.0, 0.0, 0.0), device=None):
    """A sphere mesh (``(vertices, faces)``) from a subdivided icosahedron; 20 * 4^n faces."""
    import math

    t = (1.0 + math.sqrt(5.0)) / 2.0
    verts = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
             (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5),
             (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    verts = [tuple(x / math.sqrt(sum(c * c for c in v)) for x in v) for v in verts]
    for _ in range(int(subdivisions)):
        cache: dict = {}

        def mid(a, b):
            key = (min(a, b), max(a, b))
            if key not in cache:
                m = [(verts[a][k] + verts[b][k]) / 2.0 for k in range(3)]
                norm = math.sqrt(sum(x * x for x in m))
                verts.append(tuple(x / norm for x in m))
                cache[key] = len(verts) - 1
            return cache[key]

        new = []
        for a, b, c in faces:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new
    v = torch.tensor(verts, dtype=torch.float32, device=device) * radius
    v = v + torch.as_tensor(center, dtype=torch.float32, device=device)
    return v, torch.tensor(faces, dtype=torch.long, device=device)
