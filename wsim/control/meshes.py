"""Meshes of the control tasks: the 2D walker (triangles in the XY plane)."""

from __future__ import annotations

import numpy as np

from ..meshes import TriangleMesh


def walker(cell: float = 0.08, body_cells: int = 12, body_rows: int = 2, leg_rows: int = 4,
           legs=((0, 2), (5, 7), (10, 12))) -> TriangleMesh:
    """A 2D walker in the plane z = 0: a body of ``body_cells`` x ``body_rows`` square cells on top of
    legs ``leg_rows`` cells high (each leg spans the cell columns ``[start, stop)``); every cell is two
    triangles (counter-clockwise seen from +z). The defaults give 75 vertices and 96 triangles, 0.96 m
    wide and 0.48 m high, with the feet at y = 0 and the left edge at x = 0."""
    cells = [(i, j) for j in range(leg_rows, leg_rows + body_rows) for i in range(body_cells)]
    for start, stop in legs:
        if not 0 <= start < stop <= body_cells:
            raise ValueError(f"walker leg columns [{start}, {stop}) outside [0, {body_cells})")
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
    return TriangleMesh(np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64))
