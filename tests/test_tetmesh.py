"""Tetrahedral meshes: file round trips through meshio, tetgen fill of a closed surface, validation."""

import meshio
import numpy as np
import pytest

from wsim.errors import MeshError
from wsim.geometry import TriangleMesh, check_closed, mass_properties, primitive
from wsim.geometry.tetmesh import TetMesh, box, gear, load_tet_mesh, save_tet_mesh, tetrahedralize


@pytest.mark.parametrize("suffix", [".vtu", ".msh", ".mesh"])
def test_tet_mesh_file_round_trip(tmp_path, suffix):
    mesh = box((0.4, 0.2, 0.3), cells=(3, 2, 2))
    path = tmp_path / f"block{suffix}"
    save_tet_mesh(mesh, path)
    loaded = load_tet_mesh(path)
    assert len(loaded.tets) == len(mesh.tets)
    assert loaded.volume == pytest.approx(0.4 * 0.2 * 0.3, rel=1e-9)
    assert (loaded.volumes() > 0).all()


def test_file_without_tetrahedra_is_explained(tmp_path):
    path = tmp_path / "surface.vtu"
    surface = primitive("box", 1.0)
    meshio.write(path, meshio.Mesh(surface.vertices, [("triangle", surface.faces)]))
    with pytest.raises(MeshError, match="holds no tetrahedra .cell types: triangle"):
        load_tet_mesh(path)
    with pytest.raises(MeshError, match="does not exist"):
        load_tet_mesh(tmp_path / "missing.vtu")


def test_tetgen_fills_a_closed_surface_with_its_volume():
    surface = primitive("sphere", 0.3, resolution=12)
    filled = tetrahedralize(surface, max_volume=5e-4)
    assert len(filled.tets) > 50
    assert filled.volume == pytest.approx(mass_properties(surface).volume, rel=1e-6)
    boundary = TriangleMesh(filled.vertices, filled.boundary_faces())
    check_closed(boundary)  # closed and consistently oriented
    assert mass_properties(boundary).volume > 0  # outward normals


def test_tetgen_rejects_an_open_surface():
    surface = primitive("box", 1.0)
    with pytest.raises(MeshError, match="not closed"):
        tetrahedralize(TriangleMesh(surface.vertices, surface.faces[1:]))


def test_gear_prop_size_and_surface():
    prop = gear()
    assert 1000 <= len(prop.tets) <= 1200
    boundary = TriangleMesh(prop.vertices, prop.boundary_faces())
    check_closed(boundary)
    assert mass_properties(boundary).volume == pytest.approx(prop.volume, rel=1e-9)


def test_zero_volume_tetrahedron_is_named():
    flat = TetMesh(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1.0]]),
                   np.array([[0, 1, 2, 4], [0, 1, 2, 3]]))
    with pytest.raises(MeshError, match=r"tetrahedron 1 .* zero volume"):
        flat.check()
