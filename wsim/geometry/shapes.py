"""The shape set of system identification: the mesh primitives plus procedurally generated non-convex
solids.

Every shape is a closed, outward-oriented triangle mesh of roughly unit size (about 1 m across) with
few vertices (a few hundred at most, as in the paper's simplified meshes). Prisms extrude a 2D
outline that is star-shaped about its kernel point (fan-triangulated caps); blobs displace a sphere
radially. :func:`shape_mesh` builds one by name; :data:`SHAPES` lists them all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .primitives import PRIMITIVES, primitive
from .surface import TriangleMesh, check_closed, outward

PRIMITIVE_SIZES = {
    "box": [0.8, 0.6, 0.5], "sphere": 0.45, "cylinder": [0.35, 0.8], "cone": [0.45, 0.9],
    "capsule": [0.3, 0.5], "torus": [0.4, 0.15],
}


def _prism(outline: np.ndarray, height: float, centre=(0.0, 0.0), name: str = "prism") -> TriangleMesh:
    """Extrude a counter-clockwise 2D ``outline`` [N, 2] (star-shaped about ``centre``) along Y."""
    outline = np.asarray(outline, dtype=np.float64)
    n = len(outline)
    half = height / 2.0
    bottom = np.column_stack([outline[:, 0], np.full(n, -half), outline[:, 1]])
    top = bottom.copy()
    top[:, 1] = half
    c = np.array([[centre[0], -half, centre[1]], [centre[0], half, centre[1]]])
    vertices = np.concatenate([bottom, top, c])
    cb, ct = 2 * n, 2 * n + 1
    faces = []
    for i in range(n):
        j = (i + 1) % n
        # (x, z) seen from +Y is a left-handed view, so the winding is settled by the signed volume
        faces.append([i, j, n + j])
        faces.append([i, n + j, n + i])
        faces.append([cb, j, i])
        faces.append([ct, n + i, n + j])
    return outward(TriangleMesh(vertices, np.array(faces, dtype=np.int64), name))


def _star(points: int, outer: float, inner: float) -> np.ndarray:
    angles = np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.column_stack([radii * np.cos(angles), radii * np.sin(angles)])


def _gear(teeth: int, outer: float, inner: float) -> np.ndarray:
    pts = []
    for k in range(teeth):
        a = 2 * np.pi * k / teeth
        w = np.pi / teeth
        for da, r in ((-0.5 * w, inner), (-0.3 * w, outer), (0.3 * w, outer), (0.5 * w, inner)):
            pts.append([r * np.cos(a + da), r * np.sin(a + da)])
    return np.array(pts)


L_OUTLINE = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, -0.1], [-0.1, -0.1], [-0.1, 0.5], [-0.5, 0.5]])
T_OUTLINE = np.array([[-0.15, -0.5], [0.15, -0.5], [0.15, 0.2], [0.5, 0.2], [0.5, 0.5], [-0.5, 0.5],
                      [-0.5, 0.2], [-0.15, 0.2]])
CROSS_OUTLINE = np.array([[-0.15, -0.5], [0.15, -0.5], [0.15, -0.15], [0.5, -0.15], [0.5, 0.15], [0.15, 0.15],
                          [0.15, 0.5], [-0.15, 0.5], [-0.15, 0.15], [-0.5, 0.15], [-0.5, -0.15], [-0.15, -0.15]])


def _blob(name: str, bumps: list[tuple], resolution: int = 8, radius: float = 0.4) -> TriangleMesh:
    """A sphere displaced radially by Gaussian bumps ``(direction, amplitude, width)``: closed, star-shaped."""
    base = primitive("sphere", 1.0, resolution)
    directions = base.vertices / np.linalg.norm(base.vertices, axis=1, keepdims=True)
    r = np.full(len(directions), radius)
    for direction, amplitude, width in bumps:
        d = np.asarray(direction, dtype=np.float64)
        d = d / np.linalg.norm(d)
        r += amplitude * np.exp(-(1.0 - directions @ d) / width)
    return outward(TriangleMesh(directions * r[:, None], base.faces, name))


def _procedural() -> dict:
    return {
        "l_prism": lambda: _prism(L_OUTLINE * 1.0, 0.35, (-0.3, -0.3), "l_prism"),
        "t_prism": lambda: _prism(T_OUTLINE, 0.35, (0.0, 0.35), "t_prism"),
        "cross_prism": lambda: _prism(CROSS_OUTLINE, 0.35, (0.0, 0.0), "cross_prism"),
        "star_prism": lambda: _prism(_star(5, 0.5, 0.2), 0.3, (0.0, 0.0), "star_prism"),
        "gear_prism": lambda: _prism(_gear(8, 0.5, 0.35), 0.3, (0.0, 0.0), "gear_prism"),
        "bunny_blob": lambda: _blob("bunny_blob", [((0.3, 1.0, 0.2), 0.3, 0.04), ((-0.3, 1.0, 0.2), 0.3, 0.04),
                                                   ((0.0, -0.3, 1.0), 0.12, 0.2), ((0.0, 0.0, -1.0), 0.1, 0.3)]),
        "peanut_blob": lambda: _blob("peanut_blob", [((1.0, 0.0, 0.0), 0.25, 0.3), ((-1.0, 0.0, 0.0), 0.25, 0.3),
                                                     ((0.0, 1.0, 0.0), -0.12, 0.2), ((0.0, -1.0, 0.0), -0.12, 0.2)]),
        "lumpy_blob": lambda: _blob("lumpy_blob", [((1, 1, 0), 0.15, 0.1), ((-1, 0.3, 1), 0.18, 0.1),
                                                   ((0.2, -1, -0.5), 0.15, 0.1), ((-0.5, 0.5, -1), 0.12, 0.08)]),
    }


SHAPES = tuple(PRIMITIVES) + tuple(_procedural())


def shape_mesh(name: str, resolution: int = 8) -> TriangleMesh:
    """The closed mesh of shape ``name`` (one of :data:`SHAPES`), about 1 m across."""
    if name in PRIMITIVES:
        mesh = primitive(name, PRIMITIVE_SIZES[name], resolution)
    else:
        makers = _procedural()
        if name not in makers:
            raise ConfigError(f"unknown shape '{name}'; allowed: {', '.join(SHAPES)}")
        mesh = makers[name]()
    check_closed(mesh)
    return mesh


def write_shape(name: str, path, resolution: int = 8):
    """Write shape ``name`` as an OBJ file (atomically) and return the path."""
    from ..export import atomic_path

    mesh = shape_mesh(name, resolution)
    path = Path(path)
    lines = [f"# wsim shape {name}"]
    lines += [f"v {x:.9g} {y:.9g} {z:.9g}" for x, y, z in mesh.vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in mesh.faces]
    with atomic_path(path, suffix=".obj") as temporary:
        Path(temporary).write_text("\n".join(lines) + "\n")
    return path
