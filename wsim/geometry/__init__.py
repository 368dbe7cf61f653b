"""Geometry: triangle surfaces and their mass properties (:mod:`.surface`), primitive solids
(:mod:`.primitives`), the shape set of system identification (:mod:`.shapes`), tetrahedral meshes
(:mod:`.tetmesh`), cloth grids and other triangle sheets (:mod:`.cloth`) and rotations
(:mod:`.transforms`). Everything is numpy, float64, Y up, metres; nothing here touches Warp or torch.
"""

from .primitives import PRIMITIVES, box, icosphere, primitive
from .surface import MESH_FILE_SUFFIXES, MassProperties, TriangleMesh, check_closed, load_mesh, mass_properties
from .tetmesh import TetMesh
from .transforms import rotation_matrix

__all__ = [
    "PRIMITIVES", "MESH_FILE_SUFFIXES", "MassProperties", "TetMesh", "TriangleMesh", "box", "check_closed",
    "icosphere", "load_mesh", "mass_properties", "primitive", "rotation_matrix",
]
