"""Mass properties against closed forms and trimesh's independent implementation; mesh validation."""

import numpy as np
import pytest
import trimesh

from wsim.errors import MeshError
from wsim.geometry import PRIMITIVES, TriangleMesh, check_closed, load_mesh, mass_properties, primitive


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
