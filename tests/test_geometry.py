"""wsim.geometry: mass properties against closed forms and trimesh's independent implementation;
primitive, sheet and tetrahedral meshes against their defining properties; rotations against scipy;
file round trips (trimesh, meshio), tetgen fills, and validation messages."""

import meshio
import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial.transform import Rotation

from wsim.errors import ConfigError, MeshError
from wsim.geometry import PRIMITIVES, TriangleMesh, check_closed, load_mesh, mass_properties, primitive
from wsim.geometry import box as box_surface
from wsim.geometry import icosphere
from wsim.geometry.cloth import bending_edges, grid, walker
from wsim.geometry.shapes import SHAPES, shape_mesh, write_shape
from wsim.geometry.surface import outward, signed_volume
from wsim.geometry.tetmesh import TetMesh, box, gear, load_tet_mesh, save_tet_mesh, tetrahedralize
from wsim.geometry.transforms import axis_angle_quaternion, quaternion_multiply, rotation_matrix, transform_points
from wsim.render import cube, grid_plane
from wsim.render import icosphere as icosphere_tensors


def test_box_mass_properties_match_closed_form():
    a, b, c = 0.3, 0.5, 0.7
    properties = mass_properties(primitive("box", [a, b, c]))
    volume = a * b * c
    assert properties.volume == pytest.approx(volume, rel=1e-12)
    np.testing.assert_allclose(properties.center_of_mass, 0.0, atol=1e-12)
    expected = volume / 12.0 * np.diag([b * b + c * c, a * a + c * c, a * a + b * b])
    np.testing.assert_allclose(properties.inertia, expected, rtol=1e-10, atol=1e-14)


def test_sphere_converges_to_solid_sphere():
    radius = 0.4
    properties = mass_properties(primitive("sphere", radius, resolution=48))
    volume = 4.0 / 3.0 * np.pi * radius**3
    assert properties.volume == pytest.approx(volume, rel=5e-3)
    np.testing.assert_allclose(np.diag(properties.inertia), 0.4 * volume * radius**2, rtol=1e-2)


@pytest.mark.parametrize("kind", PRIMITIVES)
def test_every_primitive_agrees_with_trimesh(kind):
    size = {"box": [0.2, 0.3, 0.4], "sphere": 0.3, "cylinder": [0.2, 0.5], "cone": [0.2, 0.5],
            "capsule": [0.15, 0.3], "torus": [0.4, 0.1]}[kind]
    mesh = primitive(kind, size)
    ours = mass_properties(mesh)
    reference = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    assert ours.volume == pytest.approx(reference.volume, rel=1e-9)
    np.testing.assert_allclose(ours.center_of_mass, reference.center_mass, atol=1e-9)
    np.testing.assert_allclose(ours.inertia, reference.moment_inertia, rtol=1e-8, atol=1e-12)
    # round solids stand along Y (the up axis)
    extent = mesh.vertices.max(0) - mesh.vertices.min(0)
    if kind in ("cylinder", "cone", "capsule"):
        assert extent[1] > extent[0]


def test_offset_mesh_centre_of_mass():
    mesh = primitive("box", 1.0)
    shifted = TriangleMesh(mesh.vertices + [1.0, 2.0, -3.0], mesh.faces)
    np.testing.assert_allclose(mass_properties(shifted).center_of_mass, [1.0, 2.0, -3.0], atol=1e-12)
    np.testing.assert_allclose(mass_properties(shifted).inertia, mass_properties(mesh).inertia, atol=1e-12)


def test_open_mesh_is_rejected_for_inertia():
    mesh = primitive("box", 1.0)
    open_mesh = TriangleMesh(mesh.vertices, mesh.faces[:-1], "lid-less")
    with pytest.raises(MeshError, match="lid-less.*not closed.*boundary edge"):
        mass_properties(open_mesh)


def test_inward_normals_are_reported():
    mesh = primitive("box", 1.0)
    with pytest.raises(MeshError, match="inward"):
        mass_properties(TriangleMesh(mesh.vertices, mesh.faces[:, ::-1].copy(), "inside-out"))


def test_inconsistent_winding_is_reported():
    mesh = primitive("box", 1.0)
    faces = mesh.faces.copy()
    faces[0] = faces[0, ::-1]
    with pytest.raises(MeshError, match="inconsistently oriented"):
        check_closed(TriangleMesh(mesh.vertices, faces))


@pytest.mark.parametrize("suffix", [".obj", ".stl", ".ply"])
def test_mesh_files_round_trip(tmp_path, suffix):
    mesh = primitive("capsule", [0.2, 0.4])
    path = tmp_path / f"capsule{suffix}"
    trimesh.Trimesh(mesh.vertices, mesh.faces).export(path)
    loaded = load_mesh(path)
    assert mass_properties(loaded).volume == pytest.approx(mass_properties(mesh).volume, rel=1e-5)


def test_missing_and_unknown_meshes_name_the_problem(tmp_path):
    with pytest.raises(MeshError, match="does not exist"):
        load_mesh(tmp_path / "nothing.obj")
    (tmp_path / "mesh.xyz").write_text("1 2 3\n")
    with pytest.raises(MeshError, match="unsupported suffix"):
        load_mesh(tmp_path / "mesh.xyz")
    with pytest.raises(MeshError, match="allowed: box"):
        primitive("dodecahedron")
    with pytest.raises(MeshError, match="positive"):
        primitive("sphere", -1.0)


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


def _face_normals(mesh):
    v, f = mesh.vertices, mesh.faces
    return np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])


@pytest.mark.parametrize("split", [False, True])
def test_box_is_closed_outward_and_has_its_volume(split):
    mesh = box_surface([0.2, 0.3, 0.5], center=(1.0, -2.0, 0.5), split_faces=split)
    assert mesh.vertices.shape == ((24 if split else 8), 3) and mesh.faces.shape == (12, 3)
    properties = mass_properties(mesh if not split else TriangleMesh(*_merged(mesh)))
    assert properties.volume == pytest.approx(0.2 * 0.3 * 0.5, rel=1e-12)
    np.testing.assert_allclose(properties.center_of_mass, [1.0, -2.0, 0.5], atol=1e-12)
    # every face points away from the centre along one axis
    normals = _face_normals(mesh)
    centres = mesh.vertices[mesh.faces].mean(1) - [1.0, -2.0, 0.5]
    assert np.all(np.einsum("ij,ij->i", normals, centres) > 0)
    assert np.all(np.sort(np.abs(normals / np.linalg.norm(normals, axis=1, keepdims=True)), axis=1)[:, :2] < 1e-12)
    if split:  # each side carries the whole texture square, corners in counter-clockwise order
        assert mesh.uvs.shape == (24, 2)
        for side in range(6):
            np.testing.assert_array_equal(mesh.uvs[4 * side:4 * side + 4], [[0, 0], [1, 0], [1, 1], [0, 1]])


def _merged(mesh):
    """Vertices shared by position again (the split box is closed only up to duplicated corners)."""
    unique, inverse = np.unique(np.round(mesh.vertices, 12), axis=0, return_inverse=True)
    return unique, inverse.reshape(-1)[mesh.faces]


def test_box_primitive_has_trimesh_corners_and_diagonals():
    """Same corners in the same order and the same face diagonals as trimesh's box: contact points and
    the renderer's one-ring silhouette distances do not change with the generator."""
    ours = primitive("box", [0.2, 0.3, 0.4])
    reference = trimesh.creation.box(extents=[0.2, 0.3, 0.4])
    np.testing.assert_allclose(ours.vertices, reference.vertices, atol=1e-15)

    def triangles(faces):
        return {tuple(np.roll(f, -int(np.argmin(f)))) for f in np.asarray(faces)}

    assert triangles(ours.faces) == triangles(reference.faces)


@pytest.mark.parametrize("subdivisions", [0, 1, 3])
def test_icosphere_lies_on_its_sphere_and_is_a_closed_genus_zero_surface(subdivisions):
    mesh = icosphere(0.7, subdivisions, center=(0.1, 0.2, 0.3))
    assert len(mesh.faces) == 20 * 4 ** subdivisions
    np.testing.assert_allclose(np.linalg.norm(mesh.vertices - [0.1, 0.2, 0.3], axis=1), 0.7, rtol=1e-12)
    check_closed(mesh)
    edges = len(mesh.faces) * 3 // 2
    assert len(mesh.vertices) - edges + len(mesh.faces) == 2  # Euler characteristic of a sphere
    volume = mass_properties(mesh).volume
    assert volume < 4.0 / 3.0 * np.pi * 0.7 ** 3  # inscribed polyhedron
    if subdivisions == 3:
        assert volume == pytest.approx(4.0 / 3.0 * np.pi * 0.7 ** 3, rel=1e-2)


def test_render_primitives_are_the_geometry_generators_as_tensors():
    v, f = cube(0.5, center=(0.1, 0.0, 0.0))
    reference = box_surface(0.5, (0.1, 0.0, 0.0))
    assert v.dtype == torch.float32 and f.dtype == torch.int64
    np.testing.assert_allclose(v.numpy(), reference.vertices, atol=1e-7)
    np.testing.assert_array_equal(f.numpy(), reference.faces)
    sv, sf = icosphere_tensors(1.0, 1)
    np.testing.assert_allclose(sv.numpy(), icosphere(1.0, 1).vertices, atol=1e-7)
    gv, gf, uv = grid_plane(2.0, divisions=3, height=0.25, center=(1.0, -1.0))
    assert gv.shape == (16, 3) and gf.shape == (18, 3) and uv.shape == (16, 2)
    np.testing.assert_allclose(gv[:, 1].numpy(), 0.25)
    sheet = TriangleMesh(gv.double().numpy(), gf.numpy())
    assert np.all(_face_normals(sheet)[:, 1] > 0)  # faces up
    # uv (0, 0) at the -x, +z corner, (1, 1) at +x, -z: an image reads upright seen from above
    corner = lambda x, z: uv[int(np.argmin(np.abs(gv[:, 0].numpy() - x) + np.abs(gv[:, 2].numpy() - z)))].tolist()
    assert corner(0.0, 0.0) == [0.0, 0.0] and corner(2.0, -2.0) == [1.0, 1.0]
    with pytest.raises(MeshError, match="divisions must be >= 1"):
        grid_plane(1.0, divisions=0)


def test_cloth_grid_counts_normal_and_bending_edges():
    sheet = grid((1.0, 0.6), (4, 3), center=(0.0, 1.0, 0.0))
    assert sheet.vertices.shape == (20, 3) and sheet.faces.shape == (24, 3)
    np.testing.assert_allclose(sheet.vertices[:, 1], 1.0)
    assert np.all(_face_normals(sheet)[:, 1] > 0)
    areas = 0.5 * np.linalg.norm(_face_normals(sheet), axis=1)
    assert areas.sum() == pytest.approx(0.6, rel=1e-12)
    # interior edges of an nx x nz grid: horizontal, vertical and one diagonal per quad
    assert len(bending_edges(sheet.faces)) == (4 - 1) * 3 + 4 * (3 - 1) + 4 * 3
    np.testing.assert_allclose(sheet.uvs.min(0), 0.0)
    np.testing.assert_allclose(sheet.uvs.max(0), 1.0)


def test_walker_shape_and_winding():
    mesh = walker()
    assert mesh.vertices.shape == (75, 3) and mesh.faces.shape == (96, 3)
    np.testing.assert_allclose(mesh.vertices.min(0), [0.0, 0.0, 0.0])
    np.testing.assert_allclose(mesh.vertices.max(0), [0.96, 0.48, 0.0])
    normals = _face_normals(mesh)
    assert np.all(normals[:, 2] > 0)  # counter-clockwise seen from +z
    assert 0.5 * normals[:, 2].sum() == pytest.approx(0.08 ** 2 * (12 * 2 + 3 * 2 * 4), rel=1e-12)
    bending_edges(mesh.faces)  # consistently wound: no error
    with pytest.raises(MeshError, match="leg columns"):
        walker(legs=((10, 14),))


def test_rotations_match_scipy():
    rng = np.random.default_rng(3)
    for _ in range(5):
        q = rng.normal(size=4)
        np.testing.assert_allclose(rotation_matrix(q), Rotation.from_quat(q).as_matrix(), atol=1e-12)
        axis, angle = rng.normal(size=3), rng.uniform(-3, 3)
        expected = Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle)
        q1 = axis_angle_quaternion(axis, angle)
        np.testing.assert_allclose(rotation_matrix(q1), expected.as_matrix(), atol=1e-12)
        q2 = rng.normal(size=4)
        np.testing.assert_allclose(rotation_matrix(quaternion_multiply(q1, q2)),
                                   rotation_matrix(q1) @ rotation_matrix(q2), atol=1e-12)
    points = rng.normal(size=(4, 3))
    moved = transform_points(points, [1.0, 2.0, 3.0], q1, [0.5, 0.0, -1.0])
    np.testing.assert_allclose(moved, (points * [1, 2, 3]) @ expected.as_matrix().T + [0.5, 0.0, -1.0], atol=1e-12)
    with pytest.raises(MeshError, match="non-zero quaternion"):
        rotation_matrix([0, 0, 0, 0])
    with pytest.raises(MeshError, match="axis"):
        axis_angle_quaternion([0, 0, 0], 1.0)


def test_outward_flips_only_inward_surfaces():
    mesh = primitive("box", 1.0)
    inside_out = TriangleMesh(mesh.vertices, mesh.faces[:, ::-1].copy())
    assert signed_volume(inside_out) == pytest.approx(-1.0)
    assert signed_volume(outward(inside_out)) == pytest.approx(1.0)
    assert outward(mesh) is mesh


def test_shape_set_writes_closed_meshes_that_read_back(tmp_path):
    assert len(SHAPES) == 14
    path = write_shape("star_prism", tmp_path / "shapes" / "star.obj")
    written = load_mesh(path)
    assert mass_properties(written).volume == pytest.approx(mass_properties(shape_mesh("star_prism")).volume,
                                                            rel=1e-6)
    with pytest.raises(ConfigError, match="unknown shape 'blob'"):
        shape_mesh("blob")


def test_uvs_are_validated():
    mesh = primitive("box", 1.0)
    with pytest.raises(MeshError, match=r"uvs must have shape \[8, 2\]"):
        TriangleMesh(mesh.vertices, mesh.faces, "box", np.zeros((7, 2)))
