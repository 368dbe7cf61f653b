"""Closed primitive surfaces centred at the origin, round solids with their axis along Y.

:func:`primitive` builds a rigid body's shape by name (box, sphere, cylinder, cone, capsule, torus);
:func:`box` and :func:`icosphere` are the generators behind the renderer's test and benchmark scenes
(``wsim.render.cube``/``icosphere`` convert them to tensors). Every surface is outward oriented.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..errors import MeshError
from .surface import TriangleMesh
from .transforms import axis_angle_quaternion, rotation_matrix

PRIMITIVES = ("box", "sphere", "cylinder", "cone", "capsule", "torus")

# Corner k of the box has coordinate bits (x, y, z) = k >> 2, k >> 1, k (in -1/+1 half-extents); each
# side is a quad of corners counter-clockwise seen from outside, split along its first-to-third corner
# diagonal, and the texture square maps to it in the same order. The diagonals are those of the boxes
# wsim used before (trimesh's): the soft renderer's one-ring silhouette distance makes the image of a
# box depend on them (tests/test_render_raster.py checks its continuity).
_BOX_SIDES = ((1, 5, 7, 3), (2, 6, 4, 0), (2, 3, 7, 6), (4, 5, 1, 0), (6, 7, 5, 4), (0, 1, 3, 2))
_SQUARE = ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0))


def box(extents=1.0, center=(0.0, 0.0, 0.0), split_faces: bool = False) -> TriangleMesh:
    """A box of ``extents`` (one edge length or [x, y, z], m) centred at ``center``: 8 vertices and 12
    triangles, or with ``split_faces`` 4 vertices per side (24, so that vertex normals are the side
    normals) with ``uvs`` mapping the unit square onto every side."""
    extents = np.atleast_1d(np.asarray(extents, dtype=np.float64))
    if extents.size not in (1, 3) or np.any(~np.isfinite(extents)) or np.any(extents <= 0):
        raise MeshError(f"box size must be one positive edge length or [x, y, z], got {extents.tolist()}")
    corners = np.array(list(itertools.product((-0.5, 0.5), repeat=3))) * np.broadcast_to(extents, (3,))
    corners = corners + np.asarray(center, dtype=np.float64)
    if not split_faces:
        faces = [tri for a, b, c, d in _BOX_SIDES for tri in ((a, b, c), (a, c, d))]
        return TriangleMesh(corners, np.asarray(faces), "box")
    vertices = np.concatenate([corners[list(side)] for side in _BOX_SIDES])
    faces = [tri for s in range(6) for tri in ((4 * s, 4 * s + 1, 4 * s + 2), (4 * s, 4 * s + 2, 4 * s + 3))]
    return TriangleMesh(vertices, np.asarray(faces), "box", np.tile(_SQUARE, (6, 1)))


def icosphere(radius: float = 1.0, subdivisions: int = 2, center=(0.0, 0.0, 0.0)) -> TriangleMesh:
    """A sphere from an icosahedron whose faces are split in four ``subdivisions`` times (20 * 4^n
    triangles), every vertex on the sphere of ``radius`` (m) about ``center``."""
    if not radius > 0 or int(subdivisions) < 0:
        raise MeshError(f"icosphere needs radius > 0 and subdivisions >= 0, got {radius}, {subdivisions}")
    t = (1.0 + np.sqrt(5.0)) / 2.0
    vertices = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
                (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    vertices = [np.asarray(v, dtype=np.float64) / np.linalg.norm(v) for v in vertices]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5),
             (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    for _ in range(int(subdivisions)):
        midpoints: dict[tuple[int, int], int] = {}

        def midpoint(a, b):
            key = (min(a, b), max(a, b))
            if key not in midpoints:
                m = vertices[a] + vertices[b]
                vertices.append(m / np.linalg.norm(m))
                midpoints[key] = len(vertices) - 1
            return midpoints[key]

        split = []
        for a, b, c in faces:
            ab, bc, ca = midpoint(a, b), midpoint(b, c), midpoint(c, a)
            split += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = split
    return TriangleMesh(np.asarray(vertices) * radius + np.asarray(center, dtype=np.float64), np.asarray(faces),
                        "icosphere")


def primitive(kind: str, size=None, resolution: int = 16) -> TriangleMesh:
    """A closed primitive mesh centred at the origin, with its axis along Y for round solids.

    ``kind``/``size``: box ``[x, y, z]`` edge lengths (or one edge); sphere radius; cylinder and cone
    ``[radius, height]``; capsule ``[radius, height of the cylindrical part]``; torus
    ``[major radius, minor radius]``. ``resolution`` sets the number of segments of round primitives.
    """
    if kind not in PRIMITIVES:
        raise MeshError(f"shape.type '{kind}' is unknown; allowed: {', '.join(PRIMITIVES)} or a mesh file")
    size = np.atleast_1d(np.asarray(1.0 if size is None else size, dtype=np.float64))
    if np.any(~np.isfinite(size)) or np.any(size <= 0):
        raise MeshError(f"shape.size of a {kind} must be positive and finite, got {size.tolist()}")
    if kind == "box":
        if size.size not in (1, 3):
            raise MeshError(f"shape.size of a box must be one edge length or [x, y, z], got {size.tolist()}")
        return box(size)
    import trimesh

    if kind == "sphere":
        mesh = trimesh.creation.uv_sphere(radius=size[0], count=[resolution, 2 * resolution])
    else:
        if size.size != 2:
            raise MeshError(f"shape.size of a {kind} must have 2 values, got {size.tolist()}")
        if kind == "cylinder":
            mesh = trimesh.creation.cylinder(radius=size[0], height=size[1], sections=2 * resolution)
        elif kind == "cone":
            mesh = trimesh.creation.cone(radius=size[0], height=size[1], sections=2 * resolution)
            mesh.apply_translation([0, 0, -size[1] / 4.0])  # centroid of a cone is at a quarter height
        elif kind == "capsule":
            mesh = trimesh.creation.capsule(radius=size[0], height=size[1], count=[2 * resolution, resolution])
        else:
            if size[1] >= size[0]:
                raise MeshError(f"shape.size of a torus must have minor radius < major radius, got {size.tolist()}")
            mesh = trimesh.creation.torus(major_radius=size[0], minor_radius=size[1],
                                          major_sections=2 * resolution, minor_sections=resolution)
    mesh.merge_vertices()
    vertices = np.asarray(mesh.vertices)
    if kind != "sphere":  # trimesh builds round solids along Z; a quarter turn about X puts their axis on Y
        vertices = vertices @ rotation_matrix(axis_angle_quaternion((1.0, 0.0, 0.0), -np.pi / 2)).T
    return TriangleMesh(vertices, np.asarray(mesh.faces), kind)
