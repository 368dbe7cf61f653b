"""Soft rasteriser forward pass: coverage, convergence to a ray-cast reference, occlusion, batching,
textures and backend choice."""

import math

import numpy as np
import pytest
import torch

from wsim.errors import ConfigError, ParameterError
from wsim.render import Camera, Mesh, SoftRenderer, concat_meshes, cube, grid_plane, icosphere
from wsim.render.shading import sample_texture


def _pixel_centre_rays(cam: Camera, H: int, W: int):
    """World-space rays through every pixel centre (row 0 at the top), computed from the camera
    definition alone (no renderer code)."""
    k = cam.intrinsics_for((H, W))[0]
    fx, fy, cx, cy = [float(x) for x in k]
    j, i = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    d_view = np.stack([(j - cx) / fx, -(i - cy) / fy, -np.ones_like(j)], -1).reshape(-1, 3)
    view = cam.view[0].double().numpy()
    rot, t = view[:3, :3], view[:3, 3]
    origin = -rot.T @ t
    dirs = d_view @ rot  # rot.T @ d for every row
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return np.repeat(origin[None], len(dirs), 0), dirs


def _ray_cast_mask(verts: np.ndarray, faces: np.ndarray, cam: Camera, H: int, W: int) -> np.ndarray:
    """Hard silhouette by ray casting (trimesh's ray module when its rtree dependency is present,
    else a plain Moller-Trumbore test)."""
    origins, dirs = _pixel_centre_rays(cam, H, W)
    try:
        import rtree  # noqa: F401
        import trimesh
        from trimesh.ray.ray_triangle import RayMeshIntersector

        mesh = trimesh.Trimesh(verts, faces, process=False)
        hit = RayMeshIntersector(mesh).intersects_any(origins, dirs)
    except ImportError:
        tri = verts[faces]
        e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        hit = np.zeros(len(dirs), dtype=bool)
        for k in range(len(faces)):
            p = np.cross(dirs, e2[k])
            det = p @ e1[k]
            ok = np.abs(det) > 1e-12
            inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
            s = origins - tri[k, 0]
            u = (s * p).sum(1) * inv
            q = np.cross(s, e1[k])
            v = (dirs * q).sum(1) * inv
            t = (q @ e2[k]) * inv
            hit |= ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    return hit.reshape(H, W)


def _iou(a, b):
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


def test_unit_cube_head_on_covers_expected_pixels():
    H = W = 64
    d, fov = 4.0, 40.0
    cam = Camera.look_at((0.0, 0.0, d), fov_y=fov)
    v, f = cube(1.0)
    img, buf = SoftRenderer(cam, image_size=(H, W), sigma=1e-6, background=(0, 0, 0))(v, f, return_buffers=True)
    # the front face (z = 0.5) spans u in cx +- f * 0.5 / (d - 0.5) pixels
    focal = (H / 2) / math.tan(math.radians(fov) / 2)
    half = focal * 0.5 / (d - 0.5)
    lo, hi = W / 2 - half, W / 2 + half
    centres = np.arange(W) + 0.5
    n_side = int(((centres > lo) & (centres < hi)).sum())
    hard = int((buf["tri"][0] > 0).sum())
    assert hard == n_side * n_side
    soft = int((img[0, ..., 3] > 0.5).sum())
    side = 2 * half
    assert (side - 2) ** 2 <= soft <= (side + 2) ** 2  # within one pixel of the border
    assert abs(soft - side * side) <= 4 * side  # and close to the exact area


def test_silhouette_converges_to_ray_cast_reference():
    H = W = 48
    cam = Camera.orbit(3.2, elevation=25.0, azimuth=30.0, fov_y=45.0)
    sv, sf = icosphere(0.6, 2, center=(0.35, 0.1, 0.0))
    cv, cf = cube(0.8, center=(-0.4, -0.1, 0.2))
    verts, faces, colors, _ = concat_meshes([Mesh(sv, sf), Mesh(cv, cf)])
    ref = _ray_cast_mask(verts[0].double().numpy(), faces.numpy(), cam, H, W)
    assert ref.sum() > 200
    errs, ious = [], []
    for sigma in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
        img, buf = SoftRenderer(cam, image_size=(H, W), sigma=sigma)(verts, faces, colors=colors, return_buffers=True)
        alpha = img[0, ..., 3].numpy()
        errs.append(float(np.abs(alpha - ref).mean()))
        ious.append(_iou(alpha > 0.5, ref))
    assert all(e1 > e2 for e1, e2 in zip(errs, errs[1:])), errs  # the soft image tends to the hard one
    assert all(i1 <= i2 for i1, i2 in zip(ious, ious[1:])), ious
    assert ious[-1] > 0.99, ious
    assert _iou(buf["tri"][0].numpy() > 0, ref) > 0.99


def test_objects_compose_with_correct_occlusion():
    H = W = 32
    cam = Camera.orbit(5.0, elevation=30.0, azimuth=20.0, target=(0.0, 0.3, 0.0), fov_y=40.0)
    cv, cf = cube(1.0, center=(0.0, 0.5, 0.0))
    gv, gf, _ = grid_plane(6.0, divisions=3)
    red = torch.tensor([1.0, 0.0, 0.0]).expand(cv.shape[0], 3)
    green = torch.tensor([0.0, 1.0, 0.0]).expand(gv.shape[0], 3)
    r = SoftRenderer(cam, image_size=(H, W), sigma=1e-6, background=(0.0, 0.0, 1.0))
    v1, f1, c1, _ = concat_meshes([Mesh(cv, cf, red), Mesh(gv, gf, green)])
    v2, f2, c2, _ = concat_meshes([Mesh(gv, gf, green), Mesh(cv, cf, red)])
    a = r(v1, f1, colors=c1)
    b = r(v2, f2, colors=c2)
    assert torch.allclose(a, b, atol=1e-5)  # order of the meshes does not matter
    centre = cam.project_to_pixels(torch.tensor([[0.0, 0.5, 0.0]]), (H, W))[0, 0]
    i, j = int(centre[1]), int(centre[0])
    assert a[0, i, j, :3].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-4)  # cube in front of ground
    corner = cam.project_to_pixels(torch.tensor([[-1.5, 0.0, -1.0]]), (H, W))[0, 0]
    assert a[0, int(corner[1]), int(corner[0]), :3].tolist() == pytest.approx([0.0, 1.0, 0.0], abs=1e-4)
    assert a[0, 0, 0, :3].tolist() == pytest.approx([0.0, 0.0, 1.0], abs=1e-4)  # sky: background


def test_frames_render_as_a_batch():
    cam = Camera.look_at((0.0, 1.0, 4.0), fov_y=45.0)
    v, f = cube(1.0)
    shifts = torch.tensor([[0.0, 0.0, 0.0], [0.3, -0.2, 0.1], [-0.5, 0.1, -0.4]])
    frames = v.unsqueeze(0) + shifts[:, None]
    colors = torch.rand(8, 3, generator=torch.Generator().manual_seed(1))
    r = SoftRenderer(cam, image_size=(24, 32), sigma=1e-4, shading="phong")
    batch = r(frames, f, colors=colors)
    assert batch.shape == (3, 24, 32, 4) and batch.dtype == torch.float32
    for k in range(3):
        assert torch.allclose(batch[k], r(frames[k], f, colors=colors)[0], atol=1e-5)
    # one camera per frame
    cams = Camera.orbit(4.0, elevation=15.0, azimuth=torch.tensor([0.0, 60.0, 120.0]))
    multi = SoftRenderer(cams, image_size=(24, 32))(v, f)
    assert multi.shape[0] == 3 and not torch.allclose(multi[0], multi[1])


def test_texture_lookup_conventions_and_bilinear_filtering():
    tex = torch.tensor([[[0.0], [1.0]], [[2.0], [3.0]]])  # 2x2, row 0 at the top
    # texel centres: u = (j + 0.5) / 2, v = 1 - (i + 0.5) / 2 (v grows upwards)
    uv = torch.tensor([[[[0.25, 0.75], [0.75, 0.75], [0.25, 0.25], [0.5, 0.5], [0.0, 1.0]]]])
    out = sample_texture(tex, uv, "warp")[0, 0, :, 0]
    assert out.tolist() == pytest.approx([0.0, 1.0, 2.0, 1.5, 0.0], abs=1e-6)
    # a textured square filling the image maps texel (i, j) to pixel (i, j)
    H = W = 8
    texture = torch.rand(H, W, 3, generator=torch.Generator().manual_seed(0))
    cam = Camera.look_at((0.0, 0.0, 1.0), fov_y=90.0)  # the plane z = 0 spans [-1, 1]^2 exactly
    verts = torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    img = SoftRenderer(cam, image_size=(H, W), sigma=1e-6)(verts, faces, uvs=uvs, texture=texture)
    assert torch.allclose(img[0, 1:-1, 1:-1, :3], texture[1:-1, 1:-1], atol=1e-4)


def test_backend_and_argument_checks():
    cam = Camera.look_at((0.0, 0.0, 4.0))
    v, f = cube(1.0)
    with pytest.raises(ConfigError, match="CUDA"):
        SoftRenderer(cam, backend="nvdiffrast")(v, f)
    with pytest.raises(ParameterError, match="backend"):
        SoftRenderer(cam, backend="opengl")
    with pytest.raises(ParameterError, match="shading"):
        SoftRenderer(cam, shading="toon")
    with pytest.raises(ParameterError, match="sigma"):
        SoftRenderer(cam, sigma=0.0)
    for bad in (0, 2.5, 17):
        with pytest.raises(ParameterError, match="supersample"):
            SoftRenderer(cam, supersample=bad)
    with pytest.raises(ParameterError, match="face indices"):
        SoftRenderer(cam)(v, f + 8)
    with pytest.raises(ParameterError, match="uvs"):
        SoftRenderer(cam)(v, f, texture=torch.ones(2, 2, 3))
    out, buf = SoftRenderer(cam, backend="auto", image_size=8)(v, f, return_buffers=True)
    assert buf["backend"] == "warp" and out.device.type == "cpu"


def test_inner_edges_stay_hard_in_silhouette_mode():
    """A flat square of two triangles: SoftRas (every edge soft) shows a seam along the diagonal, the
    default silhouette mode does not, and both agree on the outer boundary."""
    cam = Camera.look_at((0.0, 0.0, 3.0), fov_y=60.0)
    verts = torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    sil = SoftRenderer(cam, image_size=32, sigma=1e-3)(verts, faces)[0, ..., 3]
    every = SoftRenderer(cam, image_size=32, sigma=1e-3, soft_edges="all")(verts, faces)[0, ..., 3]
    diagonal = torch.tensor([sil[i, 31 - i] for i in range(8, 24)])  # anti-diagonal = the shared edge
    assert diagonal.min() > 0.999
    assert min(float(every[i, 31 - i]) for i in range(8, 24)) < 0.9
    assert torch.allclose(sil[:, :4], every[:, :4], atol=1e-5)  # near the outer boundary: identical


@pytest.mark.parametrize("shape", ["cone", "box", "l_prism", "gear_prism"])
def test_image_is_continuous_under_small_motions(shape):
    """The rendered image moves with the geometry without jumps: along a smooth path of tiny rigid
    motions (1e-5 m and 1e-5 rad a step) no pixel may change by more than a fixed multiple of the
    median per-step change of the busiest pixels. A face whose outside footprint switched off at once
    where an inner edge becomes its nearest feature made one pixel jump by 0.06 for a 5e-5 m motion
    (the rigid-contact loss then had a step in ke). A continuous but steep hand-over between depth
    groups stays below the bound. gamma = 1e-2: with a much smaller depth
    temperature a face entering the behind group takes over its colour blend within a step. The gear
    prism, whose cap's back rim projects next to a front crease, stepped by 0.43 (4000 times the typical
    change) while the nearest silhouette edge was searched in a face's vertex one-ring only; with the
    gated 3-ring (wsim.render.topology.GATED_RING_DEPTH) its largest change is 5.2e-4, 7.3 times the
    typical one."""
    from wsim.geometry.shapes import shape_mesh

    mesh = shape_mesh(shape, 6)
    v0 = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32)
    f = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.int64)
    cam = Camera.look_at((1.2, 0.8, 2.6), target=(0.0, 0.0, 0.0), fov_y=40.0)
    r = SoftRenderer(cam, image_size=24, sigma=6e-3, gamma=1e-2, shading="phong")
    colour = torch.tensor([0.2, 0.55, 0.85]).expand(v0.shape[0], 3)
    steps = torch.arange(240, dtype=torch.float32)
    h = 1e-5
    angle = (0.3 + h * steps)[:, None, None]
    c, s = torch.cos(angle), torch.sin(angle)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    rot = torch.cat([torch.cat([c, zero, s], -1), torch.cat([zero, one, zero], -1),
                     torch.cat([-s, zero, c], -1)], 1)  # [N, 3, 3] about y
    shift = torch.stack([0.05 + h * steps, 0.02 - 0.5 * h * steps, torch.zeros_like(steps)], -1)[:, None]
    with torch.no_grad():
        images = r(v0 @ rot.transpose(1, 2) + shift, f, colors=colour).double()
    change = (images[1:] - images[:-1]).abs().amax(-1)  # [N - 1, H, W]
    typical = change.amax(dim=(1, 2)).median()
    assert typical > 0
    assert change.max() < 20.0 * typical, (f"a pixel jumped by {float(change.max()):.3g} in one step "
                                         f"(typical largest change {float(typical):.3g})")


def test_the_renderer_rebuilds_the_topology_only_for_new_or_changed_faces(monkeypatch):
    """The edge structure is O(T) Python work: the renderer builds it once for a face tensor it renders
    again and again, and again when given another tensor or when the same one is changed in place
    (no content hashing per call, and no stale topology after an in-place edit)."""
    from wsim.render import renderer as renderer_module
    from wsim.render.meshes import grid_plane

    built = []
    original = renderer_module.topology
    monkeypatch.setattr(renderer_module, "topology", lambda faces, mode: built.append(1) or original(faces, mode))
    vertices, faces, _ = grid_plane(0.6, 4)
    renderer = SoftRenderer(Camera.look_at([1.6, 2.2, 1.6], [0.0, 0.0, 0.0], fov_y=40.0), image_size=16,
                            sigma=8e-3, shading="flat")
    first = renderer(vertices, faces)
    renderer(vertices + 0.01, faces)
    assert len(built) == 1
    renderer(vertices, faces.clone())
    assert len(built) == 2
    flipped = faces.clone()
    renderer(vertices, flipped)
    flipped[:] = flipped[:, [0, 2, 1]]  # the same tensor, edited in place: a new winding
    renderer(vertices, flipped)
    assert len(built) == 4
    assert torch.equal(renderer(vertices, faces), first)


def test_face_indices_outside_the_vertex_range_are_refused():
    vertices, faces, _ = grid_plane(0.6, 2)
    renderer = SoftRenderer(Camera.look_at([1.6, 2.2, 1.6], [0.0, 0.0, 0.0], fov_y=40.0), image_size=8)
    for bad in (faces + vertices.shape[0], faces - 1):
        with pytest.raises(ParameterError, match=r"face indices must lie in \[0, 8\]"):
            renderer(vertices, bad)
