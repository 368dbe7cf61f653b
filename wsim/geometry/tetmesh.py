"""Tetrahedral meshes for the FEM model: procedural shapes, files, tetrahedralisation, boundary surface.

A :class:`TetMesh` holds ``vertices`` [N, 3] float64 (m) and ``tets`` [T, 4] int64 vertex indices.
Every function here returns positively oriented tetrahedra: ``det(x1 - x0, x2 - x0, x3 - x0) > 0``.
:meth:`TetMesh.boundary_faces` lists the surface triangles (faces used by one tetrahedron only),
counter-clockwise seen from outside, for rendering.

Procedural shapes: :func:`box` (a grid of cubes, six tetrahedra each), :func:`beam`, :func:`sphere`
(a cube grid mapped onto a ball), :func:`gear` (a toothed disc, about 1000-1200 tetrahedra by default,
the prop of the control experiments). :func:`load_tet_mesh` reads any tetrahedral mesh meshio reads
(.msh, .vtk, .vtu, .mesh, ...); :func:`tetrahedralize` fills a closed triangle surface with tetgen.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations
from pathlib import Path

import numpy as np

from ..errors import MeshError
from .surface import TriangleMesh, check_closed
from .transforms import transform_points

def _kuhn_paths() -> list[list[tuple[int, int, int]]]:
    """The six tetrahedra of a unit cube along its main diagonal (Kuhn / Freudenthal split): one per
    order in which the path from corner (0,0,0) to (1,1,1) steps along the three axes. Every cube of a
    grid split this way shares its face diagonals with its neighbours, so the grid is conforming."""
    paths = []
    for order in permutations(range(3)):
        corner = [0, 0, 0]
        path = [tuple(corner)]
        for axis in order:
            corner[axis] = 1
            path.append(tuple(corner))
        paths.append(path)
    return paths


@dataclass
class TetMesh:
    """A tetrahedral mesh: ``vertices`` [N, 3] (m), ``tets`` [T, 4] vertex indices."""

    vertices: np.ndarray
    tets: np.ndarray

    def __post_init__(self):
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float64)
        self.tets = np.ascontiguousarray(self.tets, dtype=np.int64)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise MeshError(f"tet mesh vertices must have shape [N, 3], got {self.vertices.shape}")
        if self.tets.ndim != 2 or self.tets.shape[1] != 4 or len(self.tets) == 0:
            raise MeshError(f"tet mesh elements must have shape [T, 4] with T >= 1, got {self.tets.shape}")
        if not np.all(np.isfinite(self.vertices)):
            raise MeshError("tet mesh vertices must be finite")
        if self.tets.min() < 0 or self.tets.max() >= len(self.vertices):
            raise MeshError(f"tet mesh indices must lie in [0, {len(self.vertices) - 1}]")

    def volumes(self) -> np.ndarray:
        """Signed volumes [T] (m^3); positive for positively oriented elements."""
        x = self.vertices[self.tets]
        return np.einsum("ij,ij->i", x[:, 1] - x[:, 0], np.cross(x[:, 2] - x[:, 0], x[:, 3] - x[:, 0])) / 6.0

    def oriented(self) -> "TetMesh":
        """A copy whose negatively oriented elements have two vertices swapped."""
        tets = self.tets.copy()
        flip = self.volumes() < 0
        tets[flip, 2], tets[flip, 3] = self.tets[flip, 3], self.tets[flip, 2]
        return TetMesh(self.vertices.copy(), tets)

    def check(self, relative_tolerance: float = 1e-9) -> None:
        """Raise :class:`MeshError` naming the first element with zero or negative volume."""
        volumes = self.volumes()
        scale = max(float(np.ptp(self.vertices, axis=0).max()), 1e-30) ** 3
        bad = np.flatnonzero(volumes <= relative_tolerance * scale)
        if len(bad):
            t = int(bad[0])
            raise MeshError(f"tetrahedron {t} (vertices {self.tets[t].tolist()}) has "
                            f"{'zero' if abs(volumes[t]) <= relative_tolerance * scale else 'negative'} volume "
                            f"{volumes[t]:.3g} m^3 ({len(bad)} bad element(s)); every element needs a positive "
                            "volume (use TetMesh.oriented() to fix the orientation of inverted ones)")

    def boundary_faces(self) -> np.ndarray:
        """Surface triangles [F, 3] (faces of exactly one element), counter-clockwise seen from outside."""
        t = self.oriented().tets
        faces = np.concatenate([t[:, [0, 2, 1]], t[:, [0, 1, 3]], t[:, [0, 3, 2]], t[:, [1, 2, 3]]])
        keys = np.sort(faces, axis=1)
        _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        return faces[counts[inverse.reshape(-1)] == 1]

    def transformed(self, scale=1.0, rotation=(0.0, 0.0, 0.0, 1.0), translation=(0.0, 0.0, 0.0)) -> "TetMesh":
        """Scaled (per axis), rotated (quaternion x, y, z, w) and translated copy (orientation kept)."""
        scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (3,))
        if np.any(scale <= 0):
            raise MeshError(f"tet mesh scale must be positive, got {scale.tolist()}")
        return TetMesh(transform_points(self.vertices, scale, rotation, translation), self.tets.copy())

    @property
    def volume(self) -> float:
        return float(self.volumes().sum())


def box(size=(1.0, 1.0, 1.0), cells=(4, 4, 4), center=(0.0, 0.0, 0.0)) -> TetMesh:
    """A box of ``size`` (m, per axis) centred at ``center``, ``cells`` cubes per axis, 6 tets per cube."""
    size = np.broadcast_to(np.asarray(size, dtype=np.float64), (3,))
    cells = np.broadcast_to(np.asarray(cells), (3,)).astype(int)
    if np.any(cells < 1):
        raise MeshError(f"box cells must be >= 1 per axis, got {cells.tolist()}")
    if np.any(size <= 0):
        raise MeshError(f"box size must be positive, got {size.tolist()}")
    nx, ny, nz = cells
    axes = [np.linspace(-0.5 * s, 0.5 * s, n + 1) for s, n in zip(size, cells)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3) + np.asarray(center)

    def index(i, j, k):
        return (i * (ny + 1) + j) * (nz + 1) + k

    i, j, k = (a.reshape(-1) for a in np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij"))
    tets = []
    for path in _kuhn_paths():
        tets.append(np.stack([index(i + a, j + b, k + c) for a, b, c in path], axis=1))
    return TetMesh(grid, np.concatenate(tets)).oriented()


def beam(length: float = 1.0, width: float = 0.1, height: float = 0.1, cells=(10, 1, 1),
         origin=(0.0, 0.0, 0.0)) -> TetMesh:
    """A beam along +X from ``origin`` (its end face centre at ``origin``), ``width`` along Z, ``height``
    along Y; ``cells`` cubes per axis (x, y, z)."""
    center = np.asarray(origin, dtype=np.float64) + np.array([0.5 * length, 0.0, 0.0])
    return box((length, height, width), cells, center)


def sphere(radius: float = 0.5, resolution: int = 4, center=(0.0, 0.0, 0.0)) -> TetMesh:
    """A ball: a cube grid of ``2 * resolution`` cells per axis mapped radially onto the ball
    (``p -> p max|p_i| / |p|``), ``48 resolution^3`` tetrahedra."""
    if resolution < 1:
        raise MeshError(f"sphere resolution must be >= 1, got {resolution}")
    if radius <= 0:
        raise MeshError(f"sphere radius must be positive, got {radius}")
    cube = box(2.0, 2 * resolution)
    p = cube.vertices
    length = np.linalg.norm(p, axis=1)
    factor = np.where(length > 0, np.abs(p).max(axis=1) / np.maximum(length, 1e-30), 0.0)
    vertices = p * factor[:, None] * radius + np.asarray(center, dtype=np.float64)
    return TetMesh(vertices, cube.tets).oriented()


def gear(radius: float = 0.5, tooth_length: float = 0.15, thickness: float = 0.15, teeth: int = 10,
         rings: int = 3, layers: int = 3, center=(0.0, 0.0, 0.0)) -> TetMesh:
    """A toothed disc in the XZ plane (axis Y): a polar triangulation of the disc (``2 teeth``
    sectors, ``rings`` rings) with one tooth on every other sector, extruded over ``layers`` layers of
    ``thickness`` (m) and split into tetrahedra (3 per prism). The defaults give 1080 elements."""
    if teeth < 3 or rings < 1 or layers < 1:
        raise MeshError(f"gear needs teeth >= 3, rings >= 1 and layers >= 1, got {teeth}, {rings}, {layers}")
    if radius <= 0 or tooth_length < 0 or thickness <= 0:
        raise MeshError("gear radius and thickness must be positive and tooth_length >= 0")
    sectors = 2 * teeth
    angles = 2 * np.pi * np.arange(sectors) / sectors
    points = [np.zeros(2)]
    ring_start = []
    for r in range(1, rings + 1):
        ring_start.append(len(points))
        points.extend(radius * r / rings * np.stack([np.cos(angles), np.sin(angles)], axis=1))
    tooth_start = len(points)
    tooth_radius = radius + tooth_length
    for s in range(0, sectors, 2):
        for a in (angles[s], angles[(s + 1) % sectors] if s + 1 < sectors else 2 * np.pi):
            points.append(tooth_radius * np.array([np.cos(a), np.sin(a)]))
    points = np.asarray(points)
    triangles = []
    for s in range(sectors):
        n = (s + 1) % sectors
        triangles.append((0, ring_start[0] + s, ring_start[0] + n))
        for r in range(rings - 1):
            a, b = ring_start[r] + s, ring_start[r] + n
            c, d = ring_start[r + 1] + s, ring_start[r + 1] + n
            triangles += [(a, c, d), (a, d, b)]
    if tooth_length > 0:
        outer = ring_start[-1]
        for t, s in enumerate(range(0, sectors, 2)):
            a, b = outer + s, outer + (s + 1) % sectors
            c, d = tooth_start + 2 * t, tooth_start + 2 * t + 1
            triangles += [(a, c, d), (a, d, b)]
    else:
        points = points[:tooth_start]
    triangles = np.asarray(triangles)
    count = len(points)
    heights = np.linspace(-0.5 * thickness, 0.5 * thickness, layers + 1)
    vertices = np.concatenate([np.column_stack([points[:, 0], np.full(count, h), points[:, 1]])
                               for h in heights]) + np.asarray(center, dtype=np.float64)
    tets = []
    for layer in range(layers):
        for tri in triangles:
            a, b, c = np.sort(tri)
            lo, hi = layer * count, (layer + 1) * count
            # Prism split by the global vertex order: the diagonal of every quad face starts at its
            # lower-index bottom vertex, so neighbouring prisms split shared faces the same way.
            tets += [(a + lo, b + lo, c + lo, c + hi), (a + lo, b + lo, b + hi, c + hi),
                     (a + lo, a + hi, b + hi, c + hi)]
    return TetMesh(vertices, np.asarray(tets)).oriented()


def load_tet_mesh(path: str | Path) -> TetMesh:
    """Read the tetrahedra of a mesh file (any format meshio reads), oriented positively."""
    import meshio

    path = Path(path)
    if not path.is_file():
        raise MeshError(f"tet mesh file '{path}' does not exist")
    try:
        mesh = meshio.read(path)
    except Exception as error:  # meshio raises many types for unreadable files
        raise MeshError(f"cannot read tet mesh file '{path}': {error}") from None
    blocks = [cells.data for cells in mesh.cells if cells.type == "tetra"]
    if not blocks:
        kinds = ", ".join(sorted({cells.type for cells in mesh.cells})) or "none"
        raise MeshError(f"tet mesh file '{path}' holds no tetrahedra (cell types: {kinds})")
    used = np.concatenate(blocks)
    # keep only the vertices the tetrahedra use (files often carry surface-only nodes)
    unique, inverse = np.unique(used, return_inverse=True)
    mesh = TetMesh(np.asarray(mesh.points, dtype=np.float64)[unique, :3], inverse.reshape(-1, 4)).oriented()
    mesh.check()
    return mesh


def save_tet_mesh(mesh: TetMesh, path: str | Path) -> None:
    """Write ``mesh`` with meshio (format from the file extension)."""
    import meshio

    meshio.write(path, meshio.Mesh(mesh.vertices, [("tetra", mesh.tets)]))


def tetrahedralize(surface: TriangleMesh, max_volume: float | None = None, quality: float = 1.5) -> TetMesh:
    """Fill the closed triangle ``surface`` with tetrahedra (tetgen).

    ``max_volume`` (m^3) bounds the element volume; ``quality`` bounds the radius-edge ratio.
    Raises :class:`MeshError` for an open surface or when tetgen is not installed.
    """
    check_closed(surface)
    try:
        import tetgen
    except ImportError:
        raise MeshError("tetrahedralising a surface needs the 'tetgen' package (pip install tetgen)") from None
    generator = tetgen.TetGen(np.asarray(surface.vertices, dtype=np.float64), np.asarray(surface.faces, dtype=np.int32))
    options = dict(quality=True, minratio=float(quality), verbose=0)
    if max_volume is not None:
        if max_volume <= 0:
            raise MeshError(f"max_volume must be positive, got {max_volume}")
        options["maxvolume"] = float(max_volume)
    try:
        result = generator.tetrahedralize(**options)
    except RuntimeError as error:
        raise MeshError(f"tetgen failed on the surface: {error}") from None
    nodes, elements = result[0], result[1]
    mesh = TetMesh(np.asarray(nodes, dtype=np.float64), np.asarray(elements)[:, :4]).oriented()
    mesh.check()
    return mesh
