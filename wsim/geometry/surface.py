"""Triangle surfaces: the :class:`TriangleMesh` container, mesh files, closedness, orientation and mass
properties.

Conventions: Y up, SI units (metres, kilograms), faces are counter-clockwise seen from outside
(outward normals), vertices ``float64 [V, 3]``, faces ``int64 [T, 3]``, optional texture coordinates
``uvs`` ``float64 [V, 2]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MeshError

MESH_FILE_SUFFIXES = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")


@dataclass(frozen=True)
class TriangleMesh:
    """A triangle surface. ``vertices`` [V, 3] in metres, ``faces`` [T, 3] vertex indices, ``uvs``
    [V, 2] texture coordinates or ``None``."""

    vertices: np.ndarray
    faces: np.ndarray
    name: str = "mesh"
    uvs: np.ndarray | None = None

    def __post_init__(self):
        vertices = np.ascontiguousarray(self.vertices, dtype=np.float64)
        faces = np.ascontiguousarray(self.faces, dtype=np.int64)
        if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
            raise MeshError(f"mesh '{self.name}': vertices must have shape [V, 3] with V > 0, got {vertices.shape}")
        if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
            raise MeshError(f"mesh '{self.name}': faces must have shape [T, 3] with T > 0, got {faces.shape}")
        if faces.min() < 0 or faces.max() >= len(vertices):
            raise MeshError(f"mesh '{self.name}': face indices must lie in [0, {len(vertices) - 1}]")
        if not np.all(np.isfinite(vertices)):
            raise MeshError(f"mesh '{self.name}': vertices must be finite")
        if self.uvs is not None:
            uvs = np.ascontiguousarray(self.uvs, dtype=np.float64)
            if uvs.shape != (len(vertices), 2):
                raise MeshError(f"mesh '{self.name}': uvs must have shape [{len(vertices)}, 2], got {uvs.shape}")
            object.__setattr__(self, "uvs", uvs)
        object.__setattr__(self, "vertices", vertices)
        object.__setattr__(self, "faces", faces)

    def scaled(self, scale) -> "TriangleMesh":
        """Return a copy scaled per axis (``scale`` scalar or [3]); a negative scale keeps faces outward."""
        scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (3,))
        if np.any(scale == 0):
            raise MeshError(f"mesh '{self.name}': scale must be non-zero on every axis, got {scale.tolist()}")
        faces = self.faces if np.prod(np.sign(scale)) > 0 else self.faces[:, ::-1]
        return TriangleMesh(self.vertices * scale, faces.copy(), self.name, self.uvs)

    def translated(self, offset) -> "TriangleMesh":
        """Return a copy moved by ``offset`` [3] (m)."""
        offset = np.broadcast_to(np.asarray(offset, dtype=np.float64), (3,))
        return TriangleMesh(self.vertices + offset, self.faces.copy(), self.name, self.uvs)


@dataclass(frozen=True)
class MassProperties:
    """Mass properties of a closed mesh at unit density (1 kg/m^3).

    ``volume`` m^3, ``center_of_mass`` [3] m, ``inertia`` [3, 3] kg m^2 about the centre of mass in the
    mesh frame. Multiply ``volume`` and ``inertia`` by the density to get mass and inertia.
    """

    volume: float
    center_of_mass: np.ndarray
    inertia: np.ndarray


def check_closed(mesh: TriangleMesh) -> None:
    """Raise :class:`MeshError` unless every edge is shared by exactly two consistently oriented faces."""
    faces = mesh.faces
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    undirected = np.sort(directed, axis=1)
    _, counts = np.unique(undirected, axis=0, return_counts=True)
    if np.any(counts != 2):
        boundary = int(np.sum(counts == 1))
        nonmanifold = int(np.sum(counts > 2))
        raise MeshError(
            f"mesh '{mesh.name}' is not closed: {boundary} boundary edge(s) and {nonmanifold} non-manifold "
            "edge(s); inertia from a density needs a watertight surface (every edge shared by exactly 2 faces)"
        )
    _, directed_counts = np.unique(directed, axis=0, return_counts=True)
    if np.any(directed_counts != 1):
        raise MeshError(f"mesh '{mesh.name}' has inconsistently oriented faces; fix its winding (outward normals)")


def signed_volume(mesh: TriangleMesh) -> float:
    """Volume enclosed by the faces (m^3): positive for outward normals, negative for inward ones."""
    v, f = mesh.vertices, mesh.faces
    return float(np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0)


def outward(mesh: TriangleMesh) -> TriangleMesh:
    """``mesh`` with its faces flipped when they enclose a negative volume (inward normals)."""
    if signed_volume(mesh) < 0:
        return TriangleMesh(mesh.vertices, mesh.faces[:, ::-1].copy(), mesh.name, mesh.uvs)
    return mesh


def mass_properties(mesh: TriangleMesh) -> MassProperties:
    """Volume, centre of mass and inertia of a closed mesh at unit density (divergence theorem).

    Each face with the origin spans a signed tetrahedron; the integrals of 1, x and x x^T over each
    tetrahedron are summed (Tonon 2004). Raises :class:`MeshError` for an open mesh or zero volume; a
    mesh with inward normals is reported rather than silently flipped.
    """
    check_closed(mesh)
    a = mesh.vertices[mesh.faces[:, 0]]
    b = mesh.vertices[mesh.faces[:, 1]]
    c = mesh.vertices[mesh.faces[:, 2]]
    det = np.einsum("ij,ij->i", a, np.cross(b, c))  # 6 x signed volume of (0, a, b, c)
    volume = det.sum() / 6.0
    scale = np.abs(mesh.vertices).max()
    if not volume > 1e-12 * max(scale, 1e-12) ** 3:
        if volume < 0:
            raise MeshError(f"mesh '{mesh.name}' has inward-facing normals (signed volume {volume:g}); flip its faces")
        raise MeshError(f"mesh '{mesh.name}' encloses zero volume")
    center = (det[:, None] * (a + b + c)).sum(axis=0) / (24.0 * volume)
    # Second moments: integral over a tetrahedron (0, a, b, c) of x_i x_j is
    # det/120 * (sum over vertex pairs with repetition), i.e. det/120 * (S S^T + sum_k v_k v_k^T).
    s = a + b + c
    second = (det[:, None, None] * (np.einsum("ni,nj->nij", s, s) + np.einsum("ni,nj->nij", a, a)
              + np.einsum("ni,nj->nij", b, b) + np.einsum("ni,nj->nij", c, c))).sum(axis=0) / 120.0
    second -= volume * np.outer(center, center)  # parallel-axis shift to the centre of mass
    inertia = np.trace(second) * np.eye(3) - second
    return MassProperties(float(volume), center, 0.5 * (inertia + inertia.T))


def load_mesh(path: str | Path) -> TriangleMesh:
    """Load a triangle mesh from OBJ/PLY/STL/OFF/glTF with trimesh (multi-part scenes are merged)."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise MeshError(f"mesh file '{path}' does not exist")
    if path.suffix.lower() not in MESH_FILE_SUFFIXES:
        raise MeshError(f"mesh file '{path}' has an unsupported suffix; allowed: {', '.join(MESH_FILE_SUFFIXES)}")
    try:
        loaded = trimesh.load(path, force="mesh", process=True)
    except Exception as error:  # trimesh raises many types for malformed files
        raise MeshError(f"mesh file '{path}' could not be read: {error}") from error
    if len(loaded.faces) == 0:
        raise MeshError(f"mesh file '{path}' holds no triangles")
    loaded.merge_vertices()
    return TriangleMesh(np.asarray(loaded.vertices), np.asarray(loaded.faces), path.stem)
