"""Triangle sheets (cloth, the ground, the 2D walker), cloth mesh files, and the edges used for bending.

A cloth is an open (or closed) triangle surface :class:`~wsim.geometry.surface.TriangleMesh`, vertices
in metres. :func:`grid` builds a rectangular sheet in the XZ plane (normal +Y) with
``2 * cells_x * cells_z`` triangles (64 to 2048 for 4x8 to 32x32 cells) and texture coordinates;
:func:`walker` a 2D walker of square cells in the plane z = 0; :func:`load_cloth` reads a triangle mesh file (OBJ, PLY,
STL, OFF, glTF through trimesh, or any meshio format with triangle cells). :func:`bending_edges` lists
every interior edge shared by two consistently wound triangles as ``(o1, o2, e0, e1)``: ``o1`` is the
vertex opposite the edge in the triangle that runs ``e0 -> e1``, ``o2`` the one opposite in the
triangle that runs ``e1 -> e0`` (the convention of :mod:`wsim.models.bending`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import MeshError
from .surface import MESH_FILE_SUFFIXES, TriangleMesh, load_mesh


def grid(size=(1.0, 1.0), cells=(8, 8), center=(0.0, 0.0, 0.0), alternate: bool = True) -> TriangleMesh:
    """A ``size[0]`` x ``size[1]`` m sheet in the XZ plane centred at ``center`` with ``cells`` quads per
    side, two triangles each, wound so that the normal is +Y. ``alternate`` flips the diagonal on every
    other quad (a less anisotropic mesh). ``uvs`` map the sheet onto the unit square: u along +X, v
    along -Z (an image laid on the sheet reads upright seen from above with +Z towards the viewer)."""
    size = np.broadcast_to(np.asarray(size, dtype=np.float64), (2,))
    cells = np.broadcast_to(np.asarray(cells), (2,)).astype(int)
    if np.any(cells < 1):
        raise MeshError(f"cloth grid cells must be >= 1 per side, got {cells.tolist()}")
    if np.any(size <= 0):
        raise MeshError(f"cloth grid size must be positive, got {size.tolist()}")
    nx, nz = cells
    xs = np.linspace(-0.5 * size[0], 0.5 * size[0], nx + 1)
    zs = np.linspace(-0.5 * size[1], 0.5 * size[1], nz + 1)
    X, Z = np.meshgrid(xs, zs, indexing="ij")
    vertices = np.column_stack([X.reshape(-1), np.zeros(X.size), Z.reshape(-1)]) + np.asarray(center, dtype=np.float64)
    uvs = np.column_stack([X.reshape(-1) / size[0] + 0.5, 0.5 - Z.reshape(-1) / size[1]])
    faces = []
    for i in range(nx):
        for k in range(nz):
            a = i * (nz + 1) + k  # (i, k)
            b = (i + 1) * (nz + 1) + k  # (i+1, k)
            c = (i + 1) * (nz + 1) + k + 1  # (i+1, k+1)
            d = i * (nz + 1) + k + 1  # (i, k+1)
            # counter-clockwise seen from +Y: a -> d -> c (x right, z towards the viewer)
            if alternate and (i + k) % 2:
                faces += [(a, d, b), (b, d, c)]
            else:
                faces += [(a, d, c), (a, c, b)]
    return TriangleMesh(vertices, np.asarray(faces), "cloth", uvs)


def grid_for_triangles(triangles: int, size=(1.0, 1.0), center=(0.0, 0.0, 0.0)) -> TriangleMesh:
    """A grid with ``triangles`` triangles (an even number of the form 2 a b with a, b as square as
    possible), e.g. 64, 128, ..., 2048."""
    if triangles < 2 or triangles % 2:
        raise MeshError(f"a cloth grid needs an even number of triangles >= 2, got {triangles}")
    quads = triangles // 2
    a = int(np.sqrt(quads))
    while quads % a:
        a -= 1
    return grid(size, (quads // a, a), center)


def walker(cell: float = 0.08, body_cells: int = 12, body_rows: int = 2, leg_rows: int = 4,
           legs=((0, 2), (5, 7), (10, 12))) -> TriangleMesh:
    """A 2D walker in the plane z = 0: a body of ``body_cells`` x ``body_rows`` square cells on top of
    legs ``leg_rows`` cells high (each leg spans the cell columns ``[start, stop)``); every cell is two
    triangles (counter-clockwise seen from +z). The defaults give 75 vertices and 96 triangles, 0.96 m
    wide and 0.48 m high, with the feet at y = 0 and the left edge at x = 0."""
    if not cell > 0 or min(body_cells, body_rows, leg_rows) < 1:
        raise MeshError(f"walker needs cell > 0 and at least one body cell, body row and leg row, got cell {cell}, "
                        f"{body_cells} x {body_rows} body cells, {leg_rows} leg rows")
    cells = [(i, j) for j in range(leg_rows, leg_rows + body_rows) for i in range(body_cells)]
    for start, stop in legs:
        if not 0 <= start < stop <= body_cells:
            raise MeshError(f"walker leg columns [{start}, {stop}) lie outside [0, {body_cells})")
        cells += [(i, j) for j in range(leg_rows) for i in range(start, stop)]
    index: dict[tuple[int, int], int] = {}
    vertices, faces = [], []

    def vertex(i, j):
        if (i, j) not in index:
            index[(i, j)] = len(vertices)
            vertices.append((i * cell, j * cell, 0.0))
        return index[(i, j)]

    for i, j in sorted(cells, key=lambda c: (c[1], c[0])):
        a, b, c, d = vertex(i, j), vertex(i + 1, j), vertex(i + 1, j + 1), vertex(i, j + 1)
        if (i + j) % 2:
            faces += [(a, b, c), (a, c, d)]
        else:
            faces += [(a, b, d), (b, c, d)]
    return TriangleMesh(np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64), "walker")


def load_cloth(path: str | Path) -> TriangleMesh:
    """Read a cloth triangle mesh from a file (trimesh formats, else meshio triangle cells)."""
    path = Path(path)
    if not path.is_file():
        raise MeshError(f"cloth mesh file '{path}' does not exist")
    if path.suffix.lower() in MESH_FILE_SUFFIXES:
        return load_mesh(path)
    import meshio

    try:
        mesh = meshio.read(path)
    except Exception as error:
        raise MeshError(f"cannot read cloth mesh file '{path}': {error}") from None
    blocks = [cells.data for cells in mesh.cells if cells.type == "triangle"]
    if not blocks:
        raise MeshError(f"cloth mesh file '{path}' holds no triangles")
    return TriangleMesh(np.asarray(mesh.points, dtype=np.float64)[:, :3], np.concatenate(blocks), path.stem)


def bending_edges(faces: np.ndarray) -> np.ndarray:
    """Interior edges [E, 4] int64 ``(o1, o2, e0, e1)`` of a consistently wound triangle mesh.

    Raises :class:`MeshError` for an edge shared by more than two triangles or by two triangles with
    opposite winding (the bending angle would be meaningless there)."""
    faces = np.asarray(faces, dtype=np.int64)
    half = {}
    for face in faces:
        for corner in range(3):
            a, b, o = face[corner], face[(corner + 1) % 3], face[(corner + 2) % 3]
            if (a, b) in half:
                raise MeshError(f"cloth mesh edge ({a}, {b}) is used twice in the same direction: the triangles "
                                "are inconsistently wound or the edge is non-manifold")
            half[(int(a), int(b))] = int(o)
    edges = []
    for (a, b), o1 in half.items():
        if a < b and (b, a) in half:
            edges.append((o1, half[(b, a)], a, b))
    return np.asarray(edges, dtype=np.int64).reshape(-1, 4)
